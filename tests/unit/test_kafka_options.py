"""KafkaOptions: security settings reach every aiokafka client, bad ones fail early."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from aggregator.adapters.kafka.options import KafkaOptions


def test_plaintext_passes_only_the_protocol() -> None:
    assert KafkaOptions().client_kwargs() == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_passes_credentials_and_an_ssl_context() -> None:
    options = KafkaOptions(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="aggregator",
        sasl_plain_password="s3cret",
    )
    kwargs = options.client_kwargs()
    assert isinstance(kwargs.pop("ssl_context"), ssl.SSLContext)
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "aggregator",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(options)


def test_sasl_plaintext_has_no_ssl_context() -> None:
    options = KafkaOptions(
        security_protocol="SASL_PLAINTEXT", sasl_plain_username="u", sasl_plain_password="p"
    )
    assert "ssl_context" not in options.client_kwargs()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security_protocol": "TLS"}, "security protocol must be one of"),
        ({"security_protocol": "SASL_SSL", "sasl_plain_username": "u"}, "username and password"),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "GSSAPI",
                "sasl_plain_username": "u",
                "sasl_plain_password": "p",
            },
            "SASL mechanism must be one of",
        ),
        ({"security_protocol": "SSL", "ssl_certfile": "/c.pem"}, "certfile and keyfile"),
    ],
)
def test_invalid_options_fail_with_a_clear_message(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        KafkaOptions(**options)


def test_a_missing_ca_file_names_the_problem_when_the_client_is_built() -> None:
    options = KafkaOptions(security_protocol="SSL", ssl_cafile="/nonexistent/ca.pem")
    with pytest.raises(ValueError, match="cannot load the Kafka SSL files"):
        options.client_kwargs()


def test_an_encrypted_key_without_its_password_fails_instead_of_prompting(tmp_path: Path) -> None:
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=c",
         "-passout", "pass:secret"],
        cwd=tmp_path, check=True, capture_output=True,
    )  # fmt: skip
    options = KafkaOptions(
        security_protocol="SSL",
        ssl_certfile=str(tmp_path / "cert.pem"),
        ssl_keyfile=str(tmp_path / "key.pem"),
    )
    with pytest.raises(ValueError, match="cannot load the Kafka SSL files"):
        options.client_kwargs()
    with_password = KafkaOptions(
        security_protocol="SSL",
        ssl_certfile=str(tmp_path / "cert.pem"),
        ssl_keyfile=str(tmp_path / "key.pem"),
        ssl_keyfile_password="secret",
    )
    assert isinstance(with_password.client_kwargs()["ssl_context"], ssl.SSLContext)
