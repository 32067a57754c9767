"""Connection options shared by every Kafka client we build (security pass-through)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """How to reach and authenticate to the brokers.

    SSL files are read when a client is built (``client_kwargs``), so a missing
    certificate fails at start with the path in the message.
    """

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_keyfile_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.security_protocol not in SECURITY_PROTOCOLS:
            raise ValueError(
                f"Kafka security protocol must be one of {', '.join(SECURITY_PROTOCOLS)} "
                f"(got {self.security_protocol!r})"
            )
        if self.uses_sasl:
            if self.sasl_mechanism not in SASL_MECHANISMS:
                raise ValueError(
                    f"Kafka SASL mechanism must be one of {', '.join(SASL_MECHANISMS)} "
                    f"(got {self.sasl_mechanism!r})"
                )
            if not self.sasl_plain_username or self.sasl_plain_password is None:
                raise ValueError(
                    f"Kafka security protocol {self.security_protocol} needs a SASL "
                    "username and password"
                )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("a Kafka client certificate needs both its certfile and keyfile")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client (consumer, producer, admin) accepts."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.uses_ssl:
            try:
                kwargs["ssl_context"] = self.ssl_context()
            except OSError as error:
                raise ValueError(f"cannot load the Kafka SSL files: {error}") from error
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_plain_username
            kwargs["sasl_plain_password"] = self.sasl_plain_password
        return kwargs

    def ssl_context(self) -> ssl.SSLContext:
        """Verify the broker (its name too) against the CA file, or the system's CAs
        without one; present the client certificate when there is one.  Built with
        the standard library rather than aiokafka's helper, which logs a line each
        time: every client and every retry builds one."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ssl_cafile)
        if self.ssl_certfile is not None:
            # A key that needs a password we lack fails here; OpenSSL would prompt.
            password = self.ssl_keyfile_password
            context.load_cert_chain(
                self.ssl_certfile, self.ssl_keyfile, password=password if password else str
            )
        return context
