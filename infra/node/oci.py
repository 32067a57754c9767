"""OCI image layouts written by hand: the images that need no Dockerfile.

An image here is a config, a manifest and uncompressed tar layers, stored as an
OCI image layout directory (``oci-layout``, ``index.json``, ``blobs/sha256``).
BuildKit reads such a directory as a named build context (the Python base of the
project's Dockerfile), and ``ctr images import`` reads it as a tar stream.
Uncompressed layers are valid OCI and skip minutes of gzip for images that never
leave the machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass(frozen=True)
class ImageConfig:
    """The runtime part of an image config (what ``docker inspect`` shows as Config)."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    user: str = ""
    workdir: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        config: dict[str, object] = {"Env": [f"{key}={value}" for key, value in self.env.items()]}
        if self.entrypoint:
            config["Entrypoint"] = list(self.entrypoint)
        if self.cmd:
            config["Cmd"] = list(self.cmd)
        if self.user:
            config["User"] = self.user
        if self.workdir:
            config["WorkingDir"] = self.workdir
        if self.labels:
            config["Labels"] = dict(self.labels)
        return config


@dataclass(frozen=True)
class FileEntry:
    """One file of a layer made from files: its path in the image, content and mode."""

    path: str
    data: bytes
    mode: int = 0o644


def files_layer(target: Path, entries: Iterable[FileEntry]) -> Path:
    """A tar layer holding ``entries`` (owned by root, parents created 0755)."""
    directories: set[str] = set()
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            parts = entry.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(entry.data)
            info.mode = entry.mode
            tar.addfile(info, io.BytesIO(entry.data))
    return target


def _digest_of(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _put_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_layout(
    layout: Path, *, name: str, layers: list[Path], config: ImageConfig, created: str
) -> str:
    """Write an OCI layout at ``layout`` (replacing it); the layers are moved in.

    ``name`` is the full reference (``docker.io/library/x:tag``) that containerd
    gives the image on import.  Returns the manifest digest.
    """
    partial = layout.with_name(layout.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    blobs = partial / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    descriptors = []
    for layer in layers:
        digest, size = _digest_of(layer)
        shutil.move(layer, blobs / digest.removeprefix("sha256:"))
        descriptors.append({"mediaType": LAYER, "digest": digest, "size": size})
    image_config = {
        "created": created,
        "architecture": "amd64",
        "os": "linux",
        "config": config.as_json(),
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
        "history": [{"created": created, "created_by": "infra/node/images.py"} for _ in layers],
    }
    config_blob = _put_blob(partial, json.dumps(image_config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, **config_blob},
        "layers": descriptors,
    }
    manifest_blob = _put_blob(partial, json.dumps(manifest, sort_keys=True).encode())
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [
            {
                "mediaType": MANIFEST,
                **manifest_blob,
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }
        ],
    }
    (partial / "index.json").write_text(json.dumps(index, sort_keys=True))
    (partial / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    shutil.rmtree(layout, ignore_errors=True)
    partial.rename(layout)
    return str(manifest_blob["digest"])


def manifest_digest(layout: Path) -> str:
    """The digest of the one manifest in a layout that :func:`write_layout` made."""
    index = json.loads((layout / "index.json").read_text())
    return str(index["manifests"][0]["digest"])
