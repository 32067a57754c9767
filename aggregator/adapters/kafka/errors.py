"""aiokafka failures become the port's ``SourceUnavailable``, with what we were doing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from aiokafka.errors import KafkaError

from aggregator.ports.source import SourceUnavailable


@contextlib.contextmanager
def unavailable(bootstrap: str, action: str) -> Iterator[None]:
    """Turn Kafka errors (connection refused, node not ready, timeouts, a commit the
    group no longer accepts, authentication) into ``SourceUnavailable``: the caller
    logs the one-line message and retries."""
    try:
        yield
    except SourceUnavailable:
        raise
    except (KafkaError, OSError, TimeoutError) as error:
        raise SourceUnavailable(
            f"Kafka at {bootstrap}: cannot {action}: {describe(error)}"
        ) from error


def describe(error: BaseException) -> str:
    """The error's type and message, once (aiokafka's messages already start with it)."""
    kind = type(error).__name__
    detail = str(error)
    if detail.startswith(kind):
        return detail
    return f"{kind}: {detail}" if detail else kind
