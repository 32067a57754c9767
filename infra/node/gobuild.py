"""Build Go programs from their own module source, pinned by version.

``go install module/cmd/x@version`` is refused for some of them (BuildKit's
go.mod has ``exclude`` directives), and where it works it would resolve the
dependencies again.  So each program is built the way its project builds it:
``go mod download`` the module at the pinned version, then ``go build`` in
that module's own directory against its own go.mod and go.sum.  The module
cache is read-only, which suits a build that must not change them.

Binaries land in ``<cache>/node/<name>/<version>/bin`` and are reused while they
exist; ``build.log`` and ``builds.jsonl`` (one record per build, with its
seconds) sit beside them.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from infra.kube.build import build_lock, go_binary, go_mod_download, record_build
from infra.paths import cache_dir
from infra.process import InfraError, run_checked


@dataclass(frozen=True)
class GoProgram:
    """One Go module at one version and the commands built from it."""

    name: str
    module: str
    version: str
    #: package paths relative to the module root -> the binary each one makes
    commands: dict[str, str]
    tags: tuple[str, ...] = ()
    #: the variables that the project's own Makefile stamps with the version (``-X``)
    stamps: tuple[str, ...] = ()
    why: str = field(default="", compare=False)

    @property
    def root(self) -> Path:
        return cache_dir() / "node" / self.name / self.version

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def binary(self, command: str) -> Path:
        return self.bin_dir / command

    def present(self) -> bool:
        return all(os.access(self.binary(name), os.X_OK) for name in self.commands.values())


CONTAINERD = GoProgram(
    name="containerd",
    module="github.com/containerd/containerd/v2",
    version="v2.4.2",
    commands={
        "cmd/containerd": "containerd",
        "cmd/containerd-shim-runc-v2": "containerd-shim-runc-v2",
        "cmd/ctr": "ctr",
    },
    # btrfs needs cgo and its headers; the node uses overlayfs.
    tags=("no_btrfs",),
    stamps=("github.com/containerd/containerd/v2/version.Version",),
)
BUILDKIT = GoProgram(
    name="buildkit",
    module="github.com/moby/buildkit",
    version="v0.35.0",
    commands={"cmd/buildkitd": "buildkitd", "cmd/buildctl": "buildctl"},
    stamps=("github.com/moby/buildkit/version.Version",),
)
COREDNS = GoProgram(
    name="coredns",
    module="github.com/coredns/coredns",
    version="v1.15.0",
    commands={".": "coredns"},
)
METRICS_SERVER = GoProgram(
    name="metrics-server",
    module="sigs.k8s.io/metrics-server",
    version="v0.8.0",
    commands={"cmd/metrics-server": "metrics-server"},
    stamps=("sigs.k8s.io/metrics-server/pkg/version.gitVersion",),
)
CRICTL = GoProgram(
    name="cri-tools",
    module="sigs.k8s.io/cri-tools",
    version="v1.37.0",
    commands={"cmd/crictl": "crictl"},
    stamps=("sigs.k8s.io/cri-tools/pkg/version.Version",),
)
PROGRAMS = (CONTAINERD, BUILDKIT, COREDNS, METRICS_SERVER, CRICTL)


def _env() -> dict[str, str]:
    # Static binaries (two of them go into scratch images), never another toolchain.
    return {"GOTOOLCHAIN": "local", "GOFLAGS": "-mod=readonly -buildvcs=false", "CGO_ENABLED": "0"}


def ensure_built(program: GoProgram) -> GoProgram:
    """Return the program with its binaries built (once per machine and version)."""
    if program.present():
        return program
    with build_lock(program.root):
        if not program.present():
            _build(program)
    return program


def _build(program: GoProgram) -> None:
    log = program.root / "build.log"
    log.write_text("")
    started = time.monotonic()
    print(
        f"infra: building {program.name} {program.version} from {program.module}; log: {log}",
        file=sys.stderr,
        flush=True,
    )
    source = go_mod_download(program.module, program.version, cwd=program.root, env=_env(), log=log)
    partial = program.root / "bin.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    ldflags = " ".join(["-s", "-w", *(f"-X {var}={program.version}" for var in program.stamps)])
    for package, binary in program.commands.items():
        argv = [
            "nice", "-n", "10", go_binary(), "build", "-trimpath",
            f"-ldflags={ldflags}", "-o", str(partial / binary),
        ]  # fmt: skip
        if program.tags:
            argv.append(f"-tags={','.join(program.tags)}")
        argv.append(f"./{package}" if package != "." else ".")
        try:
            run_checked(argv, what=f"go build {program.name}", cwd=source, env=_env(), log=log)
        except InfraError as error:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise InfraError(f"{error}; last lines:\n{tail}") from error
    shutil.rmtree(program.bin_dir, ignore_errors=True)
    partial.rename(program.bin_dir)
    seconds = time.monotonic() - started
    record_build(
        program.root / "builds.jsonl",
        {"version": program.version, "build_seconds": round(seconds, 1)},
    )
    print(f"infra: built {program.name} {program.version} in {seconds:.0f} s", file=sys.stderr)
