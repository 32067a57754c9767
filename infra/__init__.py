"""Real servers for tests and local runs, installed from package registries.

Downloads and builds are cached in ``cache_dir()`` (outside the work tree, so a
fresh clone on the same machine reuses them); runtime state (logs, pid files,
data directories) lives in ``.infra/`` of the work tree, which git ignores.
"""
