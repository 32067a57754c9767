"""The project's image, built by BuildKit from the project's Dockerfile.

The build is the one a user runs (``docker build -t stream-aggregator:dev .``)
with two differences that this machine needs and the Dockerfile does not know
about:

- ``python:3.11-slim-bookworm`` cannot be pulled (no registry), so the
  Dockerfile's ``FROM`` of that name is served by the local stand-in image
  (infra/node/images.py) as a named build context;
- the CA bundle that pip must trust here (``$PIP_CERT``) is passed as the
  ``pip-cert`` build secret, which the Dockerfile uses if present; it never
  lands in a layer.

The first line of the Dockerfile (``# syntax=docker/dockerfile:1``) would make
BuildKit fetch the Dockerfile frontend from Docker Hub; ``cmdline`` keeps the
frontend built into buildkitd (the same Dockerfile syntax).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.node import images, servers
from infra.paths import REPO_ROOT
from infra.process import InfraError

PROJECT_IMAGE = "docker.io/library/stream-aggregator:dev"
BASE_NAME = "python:3.11-slim-bookworm"


def build_argv(context: Path, output: Path, tag: str) -> list[str]:
    base = images.ensure_built(images.PYTHON)
    argv = [
        *servers.buildctl(), "build",
        "--frontend", "dockerfile.v0",
        "--local", f"context={context}",
        "--local", f"dockerfile={context}",
        "--opt", "cmdline=builtin",
        "--oci-layout", f"agg-python={base.layout}",
        "--opt", f"context:{BASE_NAME}=oci-layout://agg-python@{base.digest()}",
        "--output", f"type=oci,dest={output},name={tag}",
        "--progress", "plain",
    ]  # fmt: skip
    cert = os.environ.get("PIP_CERT")
    if cert and Path(cert).is_file():
        argv += ["--secret", f"id=pip-cert,src={cert}"]
    return argv


def build_project_image(*, context: Path = REPO_ROOT, tag: str = PROJECT_IMAGE) -> float:
    """Build the image and load it into the node's containerd; return the seconds it took."""
    started = time.monotonic()
    log = servers.BUILDKITD.log_file.with_name("node-image-build.log")
    with tempfile.TemporaryDirectory(prefix="agg-image.") as scratch:
        output = Path(scratch) / "image.tar"
        print(
            f"infra: building {tag} from {context / 'Dockerfile'}; log: {log}",
            file=sys.stderr,
            flush=True,
        )
        with log.open("ab") as out:
            result = subprocess.run(
                build_argv(context, output, tag),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        if result.returncode != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            raise InfraError(
                f"buildctl build of {tag} failed (exit {result.returncode}); see {log}:\n{tail}"
            )
        with output.open("rb") as archive:
            imported = subprocess.run(
                [*servers.ctr(), "images", "import", "-"],
                stdin=archive,
                capture_output=True,
                text=True,
                check=False,
            )
        if imported.returncode != 0:
            raise InfraError(f"ctr images import of {tag} failed: {imported.stderr.strip()}")
    return time.monotonic() - started
