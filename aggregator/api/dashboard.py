"""Where the dashboard's files are: inside the wheel, or in the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent


def dashboard_dir() -> Path:
    for candidate in (_PACKAGE / "_dashboard", _PACKAGE.parent / "dashboard"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError(
        "dashboard files not found (expected aggregator/_dashboard in the wheel "
        "or dashboard/ in the source tree)"
    )
