"""Build hook: compile ``aggregator/core/_native.c`` (the map stage's fold and
roll-up loops) into the wheel, or next to the source for an editable install.

It needs only a C compiler and Python's headers, which sysconfig names.  Without
them the package still builds and works (the same loops in Python, slower),
and says so on stderr; ``AGG_NATIVE=required`` makes that an error instead.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("aggregator/core/_native.c")


def compile_native(root: Path, into: Path) -> Path | None:
    """The built extension in ``into``, or None (with the reason on stderr)."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = into / f"_native{suffix}"
    compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
    command = [
        *compiler,
        "-O2",
        "-fPIC",
        "-shared",
        "-Wall",
        f"-I{sysconfig.get_paths()['include']}",
        str(root / SOURCE),
        "-o",
        str(target),
        "-lm",
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        return _without(f"{compiler[0]}: {error}")
    if done.returncode != 0:
        return _without(f"{shlex.join(command)} failed:\n{done.stderr.strip()}")
    return target


def _without(reason: str) -> None:
    message = f"stream-aggregator: C extension not built, the Python fold is used: {reason}"
    if os.environ.get("AGG_NATIVE") == "required":
        raise RuntimeError(message)
    print(message, file=sys.stderr)
    return None


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        if version == "editable":
            compile_native(root, root / SOURCE.parent)  # imported from the source tree
            return
        into = Path(tempfile.mkdtemp(prefix="agg-native-"))
        built = compile_native(root, into)
        if built is None:
            return
        build_data["force_include"][str(built)] = str(SOURCE.parent / built.name)
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
