"""The C extension under AddressSanitizer: the native, fold, key-count, wire and
window-drain tests run against a build of ``_native.c`` with
``-fsanitize=address``, so a read or write past a buffer, a use after free or
a double free fails the suite instead of corrupting a pod's counts in
production.

The sanitized build (``hatch_build.py``, the standard one, with the
sanitizer's flags in ``CFLAGS`` and ``LDFLAGS``) goes into a copy of the package
in a temporary directory;
the tests run in a child interpreter with libasan preloaded and that copy first
on its path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.fixtures.requirements import in_ci

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TESTS = [
    "tests/unit/test_native.py",
    "tests/unit/test_fold_many.py",
    "tests/unit/test_fold.py",
    "tests/unit/test_key_counts.py",
    "tests/unit/test_partial_wire.py",
    "tests/unit/test_window_drain.py",
]


def libasan() -> str:
    found = subprocess.run(
        ["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if not os.path.isabs(found):  # gcc echoes the bare name when it has none
        message = "gcc has no libasan (Debian: apt-get install libasan8)"
        if in_ci():
            pytest.fail(f"CI requires it: {message}", pytrace=False)
        pytest.skip(message)
    return found


def test_the_extension_is_clean_under_address_sanitizer(tmp_path: Path) -> None:
    preload = libasan()
    package = tmp_path / "aggregator"
    shutil.copytree(REPO / "aggregator", package, ignore=shutil.ignore_patterns("*.so"))
    built = package / "core" / f"_native{sysconfig.get_config_var('EXT_SUFFIX')}"
    # The standard build (hatch_build.py: setuptools' build_ext, this Python's
    # flags), with the sanitizer's flags added as for any extension.
    sanitizer = "-fsanitize=address -fno-omit-frame-pointer"
    subprocess.run(
        [sys.executable, str(REPO / "hatch_build.py"), "--into", str(package / "core")],
        env={**os.environ, "CFLAGS": f"-O1 -g {sanitizer}", "LDFLAGS": sanitizer},
        check=True,
    )
    assert built.exists()
    env = {
        **os.environ,
        "LD_PRELOAD": preload,
        "ASAN_OPTIONS": "detect_leaks=0",  # CPython keeps some memory for good
        "PYTHONMALLOC": "malloc",  # every allocation where the sanitizer sees it
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
    }
    # -P: not the working directory first; append: pytest must not put the repo
    # first; capture=sys: the sanitizer's report goes to the real stderr (it ends
    # the process before pytest could show what it captured).
    which = subprocess.run(
        [sys.executable, "-P", "-c", "import aggregator.core._native as n; print(n.__file__)"],
        env=env, cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert which.stdout.strip() == str(built), which.stderr
    run = subprocess.run(
        [
            sys.executable, "-P", "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "--import-mode=append", "--capture=sys", *TESTS,
        ],
        env=env, cwd=REPO, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert "AddressSanitizer" not in output, output[-4000:]
    assert run.returncode == 0, output[-4000:]
    assert " passed" in run.stdout
