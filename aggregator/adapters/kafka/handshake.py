"""One connection made the way every client will connect, to tell a refusal apart.

aiokafka reports a wrong password, an untrusted broker certificate or a client
certificate the broker rejects the same way as a broker that is down: "Unable to
bootstrap from [...]", with the cause only in a log line of its own at every
attempt.  ``check_access`` opens one connection to a bootstrap broker with the
same TLS context and SASL login as the real clients (TLS handshake, API versions,
SASL authentication), closes it, and turns a refusal into ``SourceRefused`` with
one line that says what was refused and what to check.  Clients call it before
they start, so a refused pod never starts aiokafka's own retry loop and its logs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from aggregator.adapters.kafka.errors import describe
from aggregator.adapters.kafka.options import KafkaOptions
from aggregator.ports.source import SourceRefused, SourceUnavailable


async def check_access(bootstrap: str, options: KafkaOptions, *, timeout_s: float) -> None:
    """Return once one bootstrap broker accepts our TLS and SASL credentials.

    Raises ``SourceRefused`` when a broker refuses them (or we refuse its
    certificate), ``SourceUnavailable`` when no broker answers.  Plaintext
    without SASL has nothing to refuse: no connection is made.
    """
    if not (options.uses_ssl or options.uses_sasl):
        return
    kwargs = options.client_kwargs()
    problems = []
    for host, port, _ in collect_hosts(bootstrap, randomize=False):
        try:
            async with asyncio.timeout(timeout_s):
                connection = await create_conn(
                    host,
                    port,
                    client_id="stream-aggregator-handshake",
                    request_timeout_ms=int(timeout_s * 1000),
                    ssl_context=kwargs.get("ssl_context"),
                    security_protocol=options.security_protocol,
                    sasl_mechanism=options.sasl_mechanism,
                    sasl_plain_username=options.sasl_plain_username,
                    sasl_plain_password=options.sasl_plain_password,
                )
        except (KafkaError, OSError, TimeoutError) as error:
            refusal = refused_because(error, options)
            if refusal is not None:
                raise SourceRefused(f"Kafka at {host}:{port}: {refusal}") from error
            problems.append(f"{host}:{port}: {describe(error)}")
            continue
        connection.close()
        return
    raise SourceUnavailable(f"Kafka at {bootstrap}: no broker answers ({'; '.join(problems)})")


def refused_because(error: BaseException, options: KafkaOptions) -> str | None:
    """What was refused and what to check, or None when ``error`` is no refusal."""
    if isinstance(error, SaslAuthenticationFailed):
        return (
            f"the broker refused the {options.sasl_mechanism} login of user "
            f"{options.sasl_plain_username!r} (check the username and password): {error}"
        )
    if isinstance(error, UnsupportedSaslMechanismError | IllegalSaslStateError):
        return f"the broker does not accept SASL mechanism {options.sasl_mechanism}: {error}"
    tls = _tls_error(error)
    if isinstance(tls, ssl.SSLCertVerificationError):
        trusted = options.ssl_cafile or "the system's CA certificates"
        return (
            f"the broker's certificate is not trusted by {trusted} "
            f"({tls.verify_message}; check the CA file)"
        )
    if tls is not None and "ALERT" in (tls.reason or "").upper():
        return _client_certificate_refused(tls, options)
    if tls is not None:
        return f"the TLS handshake failed ({tls}; is this a TLS listener?)"
    return None


def _tls_error(error: BaseException | None) -> ssl.SSLError | None:
    """The TLS error behind ``error`` (aiokafka wraps a failed read in its own)."""
    seen = 0
    while error is not None and seen < 5:
        if isinstance(error, ssl.SSLError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def _client_certificate_refused(tls: ssl.SSLError, options: KafkaOptions) -> str:
    """The broker ended the handshake with an alert: it did not accept our certificate."""
    alert = (tls.reason or str(tls)).lower().replace("_", " ")
    if options.ssl_certfile is None:
        return (
            f"the broker requires a client certificate ({alert}); set the certificate and key files"
        )
    expiry = _expired_on(options.ssl_certfile)
    if expiry is not None:
        return (
            f"the broker refused client certificate {options.ssl_certfile} ({alert}): "
            f"it expired on {expiry}"
        )
    return (
        f"the broker refused client certificate {options.ssl_certfile} ({alert}): "
        "check that the broker trusts its CA and that it is valid now"
    )


def _expired_on(certfile: str) -> str | None:
    """The certificate's end of validity if that has passed (None if unknown or valid).

    The standard library decodes a PEM certificate only through this private
    helper; without it the message just does not name the date."""
    decode: Any = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        not_after = str(decode(certfile)["notAfter"])
        ends = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), dt.UTC)
    except (OSError, ValueError, KeyError, ssl.SSLError):
        return None
    return not_after if ends < dt.datetime.now(dt.UTC) else None
