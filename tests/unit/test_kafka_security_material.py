"""The local broker's certificates and users (infra/kafka_security.py): made once,
kept while complete, made again when a file is missing."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra import kafka_security


def expired(certificate: Path) -> bool:
    """``openssl x509 -checkend 0`` fails for a certificate that is no longer valid."""
    check = subprocess.run(
        ["openssl", "x509", "-checkend", "0", "-noout", "-in", str(certificate)],
        capture_output=True, check=False,
    )  # fmt: skip
    return check.returncode != 0


def test_the_set_is_made_once_and_again_when_a_file_is_missing(tmp_path: Path) -> None:
    material = kafka_security.ensure_material(tmp_path)
    assert material.complete()
    keystore = material.broker_keystore.read_text()
    assert keystore.index("PRIVATE KEY") < keystore.index("CERTIFICATE")  # the PEM key store
    assert expired(material.path("expired.crt"))
    assert not expired(material.path("client.crt"))
    password = material.password(kafka_security.SCRAM_USER)

    assert kafka_security.ensure_material(tmp_path).password(kafka_security.SCRAM_USER) == password

    material.path("client.key").unlink()
    again = kafka_security.ensure_material(tmp_path)
    assert again.complete()
    assert again.password(kafka_security.SCRAM_USER) != password


def test_every_listener_kind_names_files_that_exist(tmp_path: Path) -> None:
    material = kafka_security.ensure_material(tmp_path)
    settings = kafka_security.client_settings(material)
    assert set(settings) == {"sasl-scram", "sasl-plain", "mtls"}
    for env in settings.values():
        for name, value in env.items():
            if name.endswith("FILE"):
                assert Path(value).is_file(), name
    assert f"user_{kafka_security.PLAIN_USER}=" in "\n".join(
        kafka_security.server_properties(material)
    )
