"""refused_because: which connection failures are refusals, and the line each gives
(the real broker's refusals: tests/integration/test_kafka_security.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

from aggregator.adapters.kafka.handshake import refused_because
from aggregator.adapters.kafka.options import KafkaOptions
from infra.kube.pki import Openssl

SCRAM = KafkaOptions(
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_plain_username="aggregator",
    sasl_plain_password="s3cret",
    ssl_cafile="/etc/kafka/ca.crt",
)


def alert(reason: str) -> KafkaConnectionError:
    """What aiokafka raises when the broker ends the handshake with a TLS alert."""
    tls = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    tls.reason = reason
    error = KafkaConnectionError("Connection at 127.0.0.1:19097 closed")
    error.__cause__ = tls
    return error


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    openssl = Openssl(folder)
    openssl.ca("ca", "test-ca")
    openssl.leaf("valid", "/CN=client", usage="clientAuth")
    openssl.leaf("expired", "/CN=client", usage="clientAuth", days="-1")
    return folder


def mtls(certificates: Path, name: str) -> KafkaOptions:
    return KafkaOptions(
        security_protocol="SSL",
        ssl_certfile=str(certificates / f"{name}.crt"),
        ssl_keyfile=str(certificates / f"{name}.key"),
    )


def test_a_refused_login_names_the_mechanism_and_the_user() -> None:
    said = refused_because(SaslAuthenticationFailed("invalid credentials"), SCRAM)
    assert said is not None
    assert said.startswith("the broker refused the SCRAM-SHA-512 login of user 'aggregator'")
    assert "s3cret" not in said


def test_an_untrusted_broker_certificate_names_the_ca_file() -> None:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "unable to get local issuer certificate"
    assert refused_because(error, SCRAM) == (
        "the broker's certificate is not trusted by /etc/kafka/ca.crt "
        "(unable to get local issuer certificate; check the CA file)"
    )


def test_a_refused_expired_client_certificate_says_when_it_expired(certificates: Path) -> None:
    said = refused_because(alert("SSLV3_ALERT_CERTIFICATE_UNKNOWN"), mtls(certificates, "expired"))
    assert said is not None
    assert "refused client certificate" in said
    assert ": it expired on " in said


def test_a_refused_valid_client_certificate_points_at_the_broker_trust(certificates: Path) -> None:
    said = refused_because(alert("SSLV3_ALERT_CERTIFICATE_UNKNOWN"), mtls(certificates, "valid"))
    assert said is not None
    assert said.endswith("check that the broker trusts its CA and that it is valid now")


def test_a_missing_client_certificate_says_to_set_one() -> None:
    said = refused_because(alert("SSLV3_ALERT_BAD_CERTIFICATE"), KafkaOptions("SSL"))
    assert said is not None
    assert said.startswith("the broker requires a client certificate")


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        KafkaConnectionError("Connection at 127.0.0.1:9092 closed"),
    ],
)
def test_a_broker_that_does_not_answer_is_no_refusal(error: BaseException) -> None:
    assert refused_because(error, SCRAM) is None
