"""The images the node runs, all built on this machine (no registry is reachable).

- ``pause``: :file:`images/pause.c`, compiled ``-static``; the sandbox image.
- ``python``: Debian bookworm with Python 3.11 from mmdebstrap, the stand-in for
  ``python:3.11-slim-bookworm`` that the project's Dockerfile starts from
  (docs/infrastructure.md lists how it differs from the official image).
- ``hazelcast``: Debian bookworm with the OpenJDK 17 JRE, the member jars that
  ``infra install hazelcast`` fetched from Maven Central, and
  :file:`images/hz-start`, which reads HAZELCAST_CONFIG and JAVA_OPTS as the
  official image does.
- ``coredns`` and ``metrics-server``: their static Go binaries, nothing else.

Each is an OCI layout under ``<cache>/node/images/<name>``, rebuilt only when its
recipe key (what it is made of) changes.  The project's own image is not here:
BuildKit builds it from the Dockerfile (infra/node/buildkit.py).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.node import gobuild, oci
from infra.paths import cache_dir
from infra.process import InfraError, run_checked

RECIPES = Path(__file__).resolve().parent / "images"
SUITE = "bookworm"
DEBIAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
# Like the slim images: no documentation, manual pages or translations.
_SLIM = [
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-exclude=/usr/share/info/*",
]
PYTHON_PACKAGES = (
    "python3",
    "python3-venv",
    "python-is-python3",
    "libpython3.11-dev",
    "ca-certificates",
)
# What makes the Debian Python behave like the official image's: no PEP 668
# marker (the official image has none), and pip and setuptools installed by pip
# into /usr/local, so that pip can uninstall them again (the Dockerfile's
# runtime stage does).  Debian disables ensurepip for its system Python, so pip
# installs itself from the wheels that python3-venv brings (python3-pip-whl).
PYTHON_HOOKS = (
    'rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED',
    'chroot "$1" sh -c \'set -- /usr/share/python-wheels/pip-*.whl; '
    'python3 "$1/pip" install --quiet --no-index --no-cache-dir --disable-pip-version-check '
    '"$1" /usr/share/python-wheels/setuptools-*.whl\'',
    'rm -rf "$1"/root/.cache',
)
JRE_PACKAGES = ("openjdk-17-jre-headless",)


@dataclass(frozen=True)
class Image:
    """A locally built image: the reference containerd knows it by, and its recipe."""

    key: str
    name: str
    #: what the image is made of; a change rebuilds it
    recipe: Callable[[], str]
    build: Callable[[Path, str], None]

    @property
    def layout(self) -> Path:
        return cache_dir() / "node" / "images" / self.key

    def digest(self) -> str:
        return oci.manifest_digest(self.layout)


def _created() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _work(image: Image) -> Path:
    work = image.layout.with_name(image.layout.name + ".work")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def _mmdebstrap(target: Path, packages: tuple[str, ...], hooks: tuple[str, ...], log: Path) -> Path:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise InfraError("mmdebstrap is missing (Debian: apt-get install mmdebstrap)")
    argv = [
        mmdebstrap, "--variant=minbase", f"--include={','.join(packages)}",
        # device nodes come from the runtime, not from an image layer
        "--skip=output/dev", *_SLIM,
        # with man pages excluded, openjdk's postinst still links into man1
        '--essential-hook=mkdir -p "$1/usr/share/man/man1"',
        *(f"--customize-hook={hook}" for hook in hooks),
        SUITE, str(target),
    ]  # fmt: skip
    run_checked(argv, what="mmdebstrap", log=log)
    return target


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- pause -----------------------------------------------------------------


def _pause_recipe() -> str:
    return _file_digest(RECIPES / "pause.c")


def _build_pause(work: Path, name: str) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise InfraError("gcc is missing; the pause image is compiled here (apt-get install gcc)")
    binary = work / "pause"
    run_checked(
        [gcc, "-Os", "-static", "-Wall", "-o", str(binary), str(RECIPES / "pause.c")],
        what="gcc pause",
        log=work / "build.log",
    )
    layer = oci.files_layer(
        work / "layer.tar", [oci.FileEntry("pause", binary.read_bytes(), 0o755)]
    )
    config = oci.ImageConfig(entrypoint=("/pause",), user="65535:65535")
    oci.write_layout(PAUSE.layout, name=name, layers=[layer], config=config, created=_created())


# --- python ----------------------------------------------------------------


def _python_recipe() -> str:
    return json.dumps([SUITE, PYTHON_PACKAGES, PYTHON_HOOKS, _SLIM])


def _build_python(work: Path, name: str) -> None:
    rootfs = _mmdebstrap(work / "rootfs.tar", PYTHON_PACKAGES, PYTHON_HOOKS, work / "build.log")
    config = oci.ImageConfig(cmd=("python3",), env=DEBIAN_ENV)
    oci.write_layout(PYTHON.layout, name=name, layers=[rootfs], config=config, created=_created())


# --- hazelcast -------------------------------------------------------------


def _hazelcast_jars() -> list[Path]:
    from infra.hazelcast import JARS

    jars = sorted(JARS.lib.glob("*.jar")) if JARS.lib.is_dir() else []
    if not jars:
        raise InfraError(
            f"the Hazelcast jars are not in {JARS.lib}; run: python -m infra install hazelcast"
        )
    return jars


def _hazelcast_recipe() -> str:
    jars = [(jar.name, jar.stat().st_size) for jar in _hazelcast_jars()]
    return json.dumps([SUITE, JRE_PACKAGES, _SLIM, jars, _file_digest(RECIPES / "hz-start")])


def _build_hazelcast(work: Path, name: str) -> None:
    rootfs = _mmdebstrap(work / "rootfs.tar", JRE_PACKAGES, (), work / "build.log")
    entries = [
        oci.FileEntry(f"opt/hazelcast/lib/{jar.name}", jar.read_bytes())
        for jar in _hazelcast_jars()
    ]
    entries.append(
        oci.FileEntry("opt/hazelcast/bin/hz-start", (RECIPES / "hz-start").read_bytes(), 0o755)
    )
    jars = oci.files_layer(work / "hazelcast.tar", entries)
    config = oci.ImageConfig(
        entrypoint=("/opt/hazelcast/bin/hz-start",),
        env=DEBIAN_ENV,
        user="65534:65534",
        workdir="/opt/hazelcast",
    )
    oci.write_layout(
        HAZELCAST.layout, name=name, layers=[rootfs, jars], config=config, created=_created()
    )


# --- static Go programs ----------------------------------------------------


def _static(
    program: gobuild.GoProgram, binary: str, user: str
) -> tuple[Callable[[], str], Callable[[Path, str], None]]:
    def recipe() -> str:
        return _file_digest(gobuild.ensure_built(program).binary(binary))

    def build(work: Path, name: str) -> None:
        path = gobuild.ensure_built(program).binary(binary)
        layer = oci.files_layer(
            work / "layer.tar", [oci.FileEntry(binary, path.read_bytes(), 0o755)]
        )
        config = oci.ImageConfig(entrypoint=(f"/{binary}",), user=user)
        target = next(image for image in ALL if image.name == name)
        oci.write_layout(
            target.layout, name=name, layers=[layer], config=config, created=_created()
        )

    return recipe, build


PAUSE = Image("pause", "agg.local/pause:1", _pause_recipe, _build_pause)
PYTHON = Image("python", "agg.local/python:3.11-bookworm", _python_recipe, _build_python)
HAZELCAST = Image("hazelcast", "agg.local/hazelcast:5.6.0", _hazelcast_recipe, _build_hazelcast)
COREDNS = Image(
    "coredns",
    f"agg.local/coredns:{gobuild.COREDNS.version}",
    *_static(gobuild.COREDNS, "coredns", "65532:65532"),
)
METRICS_SERVER = Image(
    "metrics-server",
    f"agg.local/metrics-server:{gobuild.METRICS_SERVER.version}",
    *_static(gobuild.METRICS_SERVER, "metrics-server", "65534:65534"),
)
ALL = (PAUSE, PYTHON, HAZELCAST, COREDNS, METRICS_SERVER)


def ensure_built(image: Image) -> Image:
    """Build the image's layout unless one made from the same recipe exists."""
    key = hashlib.sha256(f"{image.name}\n{image.recipe()}".encode()).hexdigest()
    stamp = image.layout / ".recipe"
    if stamp.is_file() and stamp.read_text() == key:
        return image
    started = time.monotonic()
    print(f"infra: building image {image.name}", file=sys.stderr, flush=True)
    work = _work(image)
    try:
        image.build(work, image.name)
    except InfraError as error:
        raise InfraError(f"image {image.name}: {error}") from error
    (image.layout / ".recipe").write_text(key)
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"infra: built image {image.name} in {time.monotonic() - started:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return image


def import_layout(ctr: list[str], layout: Path) -> None:
    """Stream an OCI layout into the node's containerd (``ctr images import -``)."""
    tar = subprocess.Popen(
        ["tar", "-C", str(layout), "--exclude=./.recipe", "-cf", "-", "."],
        stdout=subprocess.PIPE,
    )
    try:
        result = subprocess.run(
            [*ctr, "images", "import", "-"],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        if tar.stdout:
            tar.stdout.close()
        tar.wait()
    if result.returncode != 0:
        raise InfraError(f"ctr images import of {layout} failed: {result.stderr.strip()}")
