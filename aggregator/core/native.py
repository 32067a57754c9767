"""The C extension (``_native.c``), or None where it was not built.

It holds the map stage's fold and roll-up loops (``MapFolder.fold_many`` and
``combos.add_combos`` use it when it is here).  ``hatch_build.py`` compiles it
when the package is installed and a C compiler is there; without one, the same
loops run in Python, slower.  Read ``NATIVE`` at call time: tests switch it off
to compare the two.
"""

from __future__ import annotations

from types import ModuleType


def _load() -> ModuleType | None:
    try:
        from aggregator.core import _native
    except ImportError:  # not built: no compiler where the package was installed
        return None
    return _native


NATIVE: ModuleType | None = _load()
