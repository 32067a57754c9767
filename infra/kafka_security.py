"""The broker's secured listeners: certificates, users, and the settings a client needs.

Three listeners next to the plain one (infra/kafka.py), all on loopback:

- ``SCRAM`` 127.0.0.1:19095: SASL_SSL with SCRAM-SHA-512;
- ``PLAIN`` 127.0.0.1:19096: SASL_SSL with PLAIN;
- ``MTLS``  127.0.0.1:19097: SSL with a client certificate required.

``ensure_material`` makes, in ``<state>/kafka/security/`` and with the openssl
CLI (the same steps as infra/kube/pki.py): a test CA; the broker's key and
certificate for 127.0.0.1/localhost, in one PEM file the broker reads as its key
store (KIP-651, ``ssl.keystore.type=PEM``); a client certificate; and, for the
tests that must fail, a client certificate that has expired and a second CA that
signed nothing the broker uses.  The SASL users get random passwords, kept in
``users.json``: the PLAIN user is written into the listener's JAAS line at each
start, the SCRAM user is added when the storage is formatted (or, for a storage
formatted before the file existed, through the admin API once the broker runs).
A missing file makes the whole set again; ``down`` deletes it with the data.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from infra.kube.pki import CertificateFolder, Openssl, all_present, build_in_place

HOST = "127.0.0.1"
SCRAM_PORT = 19095
PLAIN_PORT = 19096
MTLS_PORT = 19097
SCRAM_MECHANISM = "SCRAM-SHA-512"
SCRAM_USER = "aggregator-scram"
PLAIN_USER = "aggregator-plain"
CLIENT_SUBJECT = "/O=stream-aggregator/CN=aggregator-mtls"

_BROKER_NAMES = ("IP:127.0.0.1", "DNS:localhost")
_FILES = (
    "ca.crt",
    "broker.pem",
    "client.crt",
    "client.key",
    "expired.crt",
    "expired.key",
    "unknown-ca.crt",
    "users.json",
)


@dataclass(frozen=True)
class SecurityMaterial(CertificateFolder):
    """Where the files are, and the users' passwords."""

    @property
    def broker_keystore(self) -> Path:
        """The broker's private key followed by its certificate (PEM key store)."""
        return self.path("broker.pem")

    def complete(self) -> bool:
        return all_present(self.path(name) for name in _FILES)

    def password(self, user: str) -> str:
        users: dict[str, str] = json.loads(self.path("users.json").read_text())
        return users[user]


def material_dir(kafka_state: Path) -> Path:
    return kafka_state / "security"


def ensure_material(kafka_state: Path) -> SecurityMaterial:
    """The files, made now unless a complete set exists."""
    material = SecurityMaterial(material_dir(kafka_state))
    if not material.complete():
        build_in_place(material.directory, _generate)
    return material


def _generate(openssl: Openssl) -> None:
    openssl.ca("ca", "stream-aggregator-kafka-test-ca")
    openssl.leaf("broker", "/CN=kafka-broker", usage="serverAuth", names=_BROKER_NAMES)
    # Key first, then certificate: the PEM key store's layout.
    broker = openssl.directory / "broker"
    (openssl.directory / "broker.pem").write_text(
        broker.with_suffix(".key").read_text() + broker.with_suffix(".crt").read_text()
    )
    openssl.leaf("client", CLIENT_SUBJECT, usage="clientAuth")
    # Valid until a day before it was made: a certificate that has expired.
    openssl.leaf("expired", CLIENT_SUBJECT, usage="clientAuth", days="-1")
    openssl.ca("unknown-ca", "a CA nobody trusts")
    users = {SCRAM_USER: secrets.token_urlsafe(18), PLAIN_USER: secrets.token_urlsafe(18)}
    (openssl.directory / "users.json").write_text(json.dumps(users, indent=2) + "\n")
    (openssl.directory / "users.json").chmod(0o600)


# --- what the broker is told --------------------------------------------------


def listeners() -> list[str]:
    """Their protocols are in infra/config/kafka-server.properties."""
    return [
        f"SCRAM://{HOST}:{SCRAM_PORT}",
        f"PLAIN://{HOST}:{PLAIN_PORT}",
        f"MTLS://{HOST}:{MTLS_PORT}",
    ]


def server_properties(material: SecurityMaterial) -> list[str]:
    """Lines for server.properties: key and trust stores, and each listener's login."""
    plain_jaas = (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'user_{PLAIN_USER}="{material.password(PLAIN_USER)}";'
    )
    return [
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={material.broker_keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={material.ca_cert}",
        "listener.name.scram.sasl.enabled.mechanisms=" + SCRAM_MECHANISM,
        "listener.name.scram.scram-sha-512.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "listener.name.plain.sasl.enabled.mechanisms=PLAIN",
        f"listener.name.plain.plain.sasl.jaas.config={plain_jaas}",
        "listener.name.mtls.ssl.client.auth=required",
    ]


def scram_credential(material: SecurityMaterial) -> str:
    """The ``--add-scram`` argument of the storage tool (and ``--add-config`` of
    the config command, which spells it without the name)."""
    return f"{SCRAM_MECHANISM}=[name={SCRAM_USER},password={material.password(SCRAM_USER)}]"


def scram_config(material: SecurityMaterial) -> str:
    return f"{SCRAM_MECHANISM}=[password={material.password(SCRAM_USER)}]"


# --- what a client is told ------------------------------------------------------


def client_settings(material: SecurityMaterial) -> dict[str, dict[str, str]]:
    """Per listener kind, the aggregator's ``AGG_*`` variables that connect to it."""
    ca = str(material.ca_cert)
    return {
        "sasl-scram": {
            "AGG_KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{SCRAM_PORT}",
            "AGG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "AGG_KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "AGG_KAFKA_SASL_USERNAME": SCRAM_USER,
            "AGG_KAFKA_SASL_PASSWORD": material.password(SCRAM_USER),
            "AGG_KAFKA_SSL_CAFILE": ca,
        },
        "sasl-plain": {
            "AGG_KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{PLAIN_PORT}",
            "AGG_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "AGG_KAFKA_SASL_MECHANISM": "PLAIN",
            "AGG_KAFKA_SASL_USERNAME": PLAIN_USER,
            "AGG_KAFKA_SASL_PASSWORD": material.password(PLAIN_USER),
            "AGG_KAFKA_SSL_CAFILE": ca,
        },
        "mtls": {
            "AGG_KAFKA_BOOTSTRAP_SERVERS": f"{HOST}:{MTLS_PORT}",
            "AGG_KAFKA_SECURITY_PROTOCOL": "SSL",
            "AGG_KAFKA_SSL_CAFILE": ca,
            "AGG_KAFKA_SSL_CERTFILE": str(material.path("client.crt")),
            "AGG_KAFKA_SSL_KEYFILE": str(material.path("client.key")),
        },
    }
