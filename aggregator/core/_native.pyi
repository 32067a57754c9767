from collections.abc import Callable
from typing import Any

def fold_run(
    run: list[Any],
    start: int,
    read: Callable[[bytes], Any],
    fields: tuple[str, ...],
    unknown: str,
    epoch_seconds: Callable[[Any], float | None],
    oldest: float,
    newest: float,
    bucket_seconds: int,
    max_bytes: int,
    partials: dict[int, Any],
    buffer: dict[int, dict[tuple[str, ...], list[Any]]],
    offsets: dict[int, int],
    buffered: int,
    limit: int,
    /,
) -> tuple[int, int, int, int]: ...
def add_combos(
    partial: Any,
    combos: dict[tuple[str, ...], list[Any]],
    agg_type: type,
    register_and_rank: Callable[[str], tuple[int, int]],
    zero_bin: int,
    min_indexable: float,
    inv_log_gamma: float,
    /,
) -> bool: ...
def bucket_of(ts: float, bucket_seconds: int, /) -> int | None: ...
