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
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

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
        return all(
            p.is_file() and p.stat().st_size > 0
            for p in (
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
    directory.parent.mkdir(parents=True, exist_ok=True)
    # Build in a scratch directory and move it into place, so an interrupted run
    # never leaves a half-made set that later looks complete.
    scratch = Path(tempfile.mkdtemp(prefix="pki.", dir=directory.parent))
    try:
        _generate(scratch)
        shutil.rmtree(directory, ignore_errors=True)
        scratch.rename(directory)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return pki


def _generate(d: Path) -> None:
    ssl = _openssl()
    log = d / "openssl.log"

    def run(*argv: str) -> None:
        run_checked([ssl, *argv], what="openssl", cwd=d, log=log)

    def ec_key(name: str) -> None:
        run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", name)

    ec_key("ca.key")
    run(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", DAYS,
        "-subj", "/CN=stream-aggregator-test-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", "ca.crt",
    )  # fmt: skip

    def leaf(name: str, subject: str, extensions: str) -> None:
        ec_key(f"{name}.key")
        run("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr")
        (d / f"{name}.ext").write_text(extensions)
        run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-sha256", "-days", DAYS,
            "-extfile", f"{name}.ext", "-out", f"{name}.crt",
        )  # fmt: skip

    leaf(
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={','.join(_SERVING_NAMES)}\n",
    )
    leaf(
        "admin",
        f"/O={ADMIN_GROUP}/CN={ADMIN_USER}",
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )
    ec_key("sa.key")
    run("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
    for path in d.iterdir():
        if path.suffix == ".key":
            path.chmod(0o600)
