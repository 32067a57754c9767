"""Where the infrastructure keeps its cache and its runtime state."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Downloads and builds, kept across clones: ``$AGG_INFRA_CACHE`` or ~/.cache."""
    configured = os.environ.get("AGG_INFRA_CACHE")
    base = (
        Path(configured)
        if configured
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stream-aggregator"
    )
    base.mkdir(parents=True, exist_ok=True)
    return base


def state_dir() -> Path:
    """Logs, pid files and data directories of running servers: ``$AGG_INFRA_STATE`` or .infra/."""
    configured = os.environ.get("AGG_INFRA_STATE")
    base = Path(configured) if configured else REPO_ROOT / ".infra"
    base.mkdir(parents=True, exist_ok=True)
    return base
