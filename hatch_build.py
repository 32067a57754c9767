"""Build hook: compile ``aggregator/core/_native.c`` (the map stage's fold and
roll-up loops) into the wheel, or next to the source for an editable install.

The compiling goes through setuptools' ``build_ext``, the standard path for a C
extension: the compiler, flags, include directories and file name are those of
the Python it is built for (sysconfig: ``CC``, ``CFLAGS``, ``CCSHARED``,
``LDSHARED``, ``EXT_SUFFIX``), with ``CFLAGS`` / ``LDFLAGS`` from the
environment added, as for any extension.  Without a C compiler or Python's
headers the package still builds and works (the same loops in Python, slower),
and says so on stderr; ``AGG_NATIVE=required`` makes that an error instead.

Run as a script it builds the extension without hatchling (the AddressSanitizer
test does, with the sanitizer's flags in ``CFLAGS`` and ``LDFLAGS``):

    python hatch_build.py [--into DIR]    # default: next to the source
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

NAME = "aggregator.core._native"
SOURCE = Path("aggregator/core/_native.c")


class NativeBuildFailed(Exception):
    """No C compiler, no Python headers, or the source did not compile."""


def build_native(root: Path, into: Path) -> Path:
    """Build ``root``'s extension into the directory ``into``; return its path.

    The new file replaces an old one in one rename, so a process that has the
    old one loaded keeps it intact."""
    from setuptools import Distribution, Extension
    from setuptools.command.build_ext import build_ext
    from setuptools.errors import BaseError, CCompilerError

    with tempfile.TemporaryDirectory(prefix="agg-native-") as scratch:
        extension = Extension(NAME, sources=[str(root / SOURCE)], libraries=["m"])
        distribution = Distribution({"name": "stream-aggregator", "ext_modules": [extension]})
        command = build_ext(distribution)
        command.build_lib = str(Path(scratch) / "lib")
        command.build_temp = str(Path(scratch) / "temp")
        command.ensure_finalized()
        try:
            command.run()
        except (BaseError, CCompilerError, OSError) as error:
            raise NativeBuildFailed(str(error) or type(error).__name__) from error
        built = Path(command.get_ext_fullpath(NAME))
        into.mkdir(parents=True, exist_ok=True)
        target = into / built.name
        staged = into / f".{built.name}.new"
        shutil.copyfile(built, staged)
        staged.chmod(0o755)
        os.replace(staged, target)
    return target


def compile_native(root: Path, into: Path) -> Path | None:
    """The built extension in ``into``, or None (with the reason on stderr)."""
    try:
        return build_native(root, into)
    except NativeBuildFailed as error:
        message = f"stream-aggregator: C extension not built, the Python fold is used: {error}"
        if os.environ.get("AGG_NATIVE") == "required":
            raise RuntimeError(message) from error
        print(message, file=sys.stderr)
        return None


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(prog="python hatch_build.py")
    parser.add_argument("--into", type=Path, default=root / SOURCE.parent)
    args = parser.parse_args(argv)
    try:
        print(build_native(root, args.into))
    except NativeBuildFailed as error:
        print(f"hatch_build.py: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:  # loaded by hatchling as the build hook
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface

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
