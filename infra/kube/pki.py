"""Certificates and keys for the local API server, made with the openssl CLI.

Everything is ECDSA P-256 (fast to generate, accepted by kube-apiserver and by
kubectl/the Python client):

- ``ca.crt``/``ca.key``: one test CA; it signs the serving certificate and the
  admin client certificate, and kube-apiserver trusts it as ``--client-ca-file``.
- ``apiserver.crt``/``.key``: serving certificate for 127.0.0.1 and localhost
  (plus the in-cluster names, so a token's audience and TLS names line up).
- ``admin.crt``/``.key``: client certificate CN=stream-aggregator-admin,
  O=system:masters, the identity tests use (full access, independent of RBAC).
- ``sa.key``/``sa.pub``: the ServiceAccount token signing key pair.

The set is created once per state directory and reused across restarts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from infra.process import InfraError, run_checked

ADMIN_USER = "stream-aggregator-admin"
ADMIN_GROUP = "system:masters"
DAYS = "3650"

_SERVING_NAMES = (
    "IP:127.0.0.1",
    "DNS:localhost",
    "IP:10.96.0.1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class CertificateFolder:
    """Certificates and keys made together in one folder, with their CA's ``ca.crt``."""

    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")


@dataclass(frozen=True)
class Pki(CertificateFolder):
    @property
    def serving_cert(self) -> Path:
        return self.path("apiserver.crt")

    @property
    def serving_key(self) -> Path:
        return self.path("apiserver.key")

    @property
    def admin_cert(self) -> Path:
        return self.path("admin.crt")

    @property
    def admin_key(self) -> Path:
        return self.path("admin.key")

    @property
    def sa_private(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_public(self) -> Path:
        return self.path("sa.pub")

    def complete(self) -> bool:
        return all_present(
            (
                self.ca_cert,
                self.path("ca.key"),
                self.serving_cert,
                self.serving_key,
                self.admin_cert,
                self.admin_key,
                self.sa_private,
                self.sa_public,
            )
        )


def all_present(paths: Iterable[Path]) -> bool:
    """Every file exists and is not empty: a set made by ``build_in_place`` is whole."""
    return all(path.is_file() and path.stat().st_size > 0 for path in paths)


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise InfraError("the openssl command is missing (Debian: apt-get install openssl)")
    return found


def ensure_pki(directory: Path) -> Pki:
    """Create the certificates and keys unless a complete set already exists."""
    pki = Pki(directory)
    if pki.complete():
        return pki
    build_in_place(directory, _generate)
    return pki


class Openssl:
    """The openssl steps that make a CA and the certificates it signs, in one folder."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._openssl = _openssl()
        self._log = directory / "openssl.log"

    def run(self, *argv: str) -> None:
        run_checked([self._openssl, *argv], what="openssl", cwd=self.directory, log=self._log)

    def ec_key(self, name: str) -> None:
        self.run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)

    def ca(self, name: str, common_name: str) -> None:
        """``<name>.key`` and the self-signed ``<name>.crt``."""
        self.ec_key(f"{name}.key")
        self.run(
            "req", "-x509", "-new", "-key", f"{name}.key", "-sha256", "-days", DAYS,
            "-subj", f"/CN={common_name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-out", f"{name}.crt",
        )  # fmt: skip

    def leaf(
        self,
        name: str,
        subject: str,
        *,
        usage: str,
        names: tuple[str, ...] = (),
        ca: str = "ca",
        days: str = DAYS,
    ) -> None:
        """``<name>.key`` and ``<name>.crt`` signed by ``<ca>``; usage: serverAuth or clientAuth.

        ``days`` below zero makes a certificate that has already expired (for tests)."""
        self.ec_key(f"{name}.key")
        self.run("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
        extensions = (
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage={usage}\n"
        )
        if names:
            extensions += f"subjectAltName={','.join(names)}\n"
        (self.directory / f"{name}.ext").write_text(extensions)
        self.run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-sha256", "-days", days,
            "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip

    def signing_pair(self, name: str) -> None:
        """``<name>.key`` and its public half ``<name>.pub`` (ServiceAccount tokens)."""
        self.ec_key(f"{name}.key")
        self.run("pkey", "-in", f"{name}.key", "-pubout", "-out", f"{name}.pub")

    def protect_keys(self) -> None:
        for path in self.directory.iterdir():
            if path.suffix == ".key":
                path.chmod(0o600)


def build_in_place(directory: Path, generate: Callable[[Openssl], None]) -> None:
    """Run ``generate`` in a scratch folder and move the result to ``directory``.

    An interrupted run never leaves a half-made set that later looks complete.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="pki.", dir=directory.parent))
    try:
        openssl = Openssl(scratch)
        generate(openssl)
        openssl.protect_keys()
        shutil.rmtree(directory, ignore_errors=True)
        scratch.rename(directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _generate(openssl: Openssl) -> None:
    openssl.ca("ca", "stream-aggregator-test-ca")
    openssl.leaf("apiserver", "/CN=kube-apiserver", usage="serverAuth", names=_SERVING_NAMES)
    openssl.leaf("admin", f"/O={ADMIN_GROUP}/CN={ADMIN_USER}", usage="clientAuth")
    openssl.signing_pair("sa")
