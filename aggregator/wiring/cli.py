"""The ``aggregator`` command: demo, replay (and, with the real adapters, run)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from aggregator.core.decode import parse_timestamp
from aggregator.core.replay import replay
from aggregator.wiring.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI

USAGE_ERROR = 2
DEMO_LEASE = {
    "lease_duration_seconds": 6.0,
    "renew_deadline_seconds": 4.0,
    "retry_period_seconds": 1.0,
}


class UsageError(Exception):
    """Bad command line or configuration: one line on stderr, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (UsageError, ConfigError) as error:
        print(f"aggregator: {error}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (piped into head): exit quietly, and keep the
        # interpreter's final flush from raising again on the dead pipe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="Rolling statistics over a stream of events: live dashboard, "
        "map/reduce across pods, one reducer elected by a Kubernetes Lease.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        help="N simulated pods in one process, no servers needed",
        description="Run N simulated pods on in-memory adapters with a synthetic "
        "event producer; serve the dashboard and the API.",
    )
    demo.add_argument("--pods", type=_positive_int, default=3)
    demo.add_argument(
        "--rate", type=_non_negative_float, default=2000.0, help="events per second (default 2000)"
    )
    demo.add_argument("--port", type=_port, default=8000)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--partitions", type=_positive_int, default=6)
    demo.add_argument(
        "--bad-fraction",
        type=_fraction,
        default=0.01,
        help="share of malformed messages (default 0.01)",
    )
    demo.add_argument("--seed", type=int, default=None)
    demo.set_defaults(handler=_demo)

    run = commands.add_parser(
        "run",
        help="a production pod: Kafka, Hazelcast, the Kubernetes Lease",
        description="Run one aggregator pod configured by AGG_* environment variables "
        "(see the README's table): map stage, leader election, reduce stage when "
        "leading, websocket hub and the HTTP API.",
    )
    run.set_defaults(handler=_run)

    produce = commands.add_parser(
        "produce",
        help="load a Kafka topic with synthetic crash events",
        description="Send synthetic crash events (skewed keys, a share of malformed "
        "messages) to AGG_KAFKA_TOPIC at AGG_KAFKA_BOOTSTRAP_SERVERS.",
    )
    produce.add_argument("--rate", type=_positive_float, required=True, help="events per second")
    produce.add_argument("--duration", type=_positive_float, required=True, help="seconds")
    produce.add_argument("--bad-fraction", type=_fraction, default=0.01)
    produce.add_argument(
        "--partitions",
        type=_positive_int,
        default=6,
        help="partitions when the topic has to be created (default 6)",
    )
    produce.add_argument("--topic", default=None, help="default: AGG_KAFKA_TOPIC")
    produce.add_argument("--seed", type=int, default=None)
    produce.set_defaults(handler=_produce)

    rep = commands.add_parser(
        "replay",
        help="print the snapshot of a JSON-lines file at a given time",
        description="Read one message per line (blank lines skipped; '-' is stdin), "
        "count every event whatever its order, and print the snapshot at time T.",
    )
    rep.add_argument("file", help="JSON-lines file, or - for stdin")
    rep.add_argument("--at", required=True, help="epoch seconds or RFC 3339 time")
    rep.add_argument("--window-seconds", type=_positive_int, default=None)
    rep.add_argument("--bucket-seconds", type=_positive_int, default=None)
    rep.add_argument("--top", type=_positive_int, default=None)
    rep.set_defaults(handler=_replay)
    return parser


# -- replay ---------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    settings = load_settings()
    at = parse_timestamp(_number_or_text(args.at))
    if at is None:
        raise UsageError(f"--at: not epoch seconds or an RFC 3339 time with a zone: {args.at!r}")
    window = args.window_seconds or settings.window_seconds
    bucket = args.bucket_seconds or settings.bucket_seconds
    if window % bucket:
        raise UsageError(
            f"--window-seconds ({window}) must be a multiple of --bucket-seconds ({bucket})"
        )
    with _open_input(args.file) as stream:
        snapshot = replay(
            _messages(stream),
            at=at,
            schema=settings.event_schema,
            window_seconds=window,
            bucket_seconds=bucket,
            top_n=args.top or settings.top_n,
        )
    sys.stdout.buffer.write(orjson.dumps(snapshot, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


@contextlib.contextmanager
def _open_input(name: str) -> Iterator[IO[bytes]]:
    if name == "-":
        yield sys.stdin.buffer
        return
    path = Path(name)
    try:
        stream = path.open("rb")
    except FileNotFoundError:
        raise UsageError(f"no such file: {name}") from None
    except IsADirectoryError:
        raise UsageError(f"is a directory, not a file: {name}") from None
    except PermissionError:
        raise UsageError(f"permission denied: {name}") from None
    with stream:
        yield stream


def _messages(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        message = line.strip()
        if message:
            yield message


def _number_or_text(raw: str) -> float | str:
    try:
        return float(raw)
    except ValueError:
        return raw


# -- demo -----------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:

    from aggregator.api.app import create_app
    from aggregator.wiring.compose import pod_settings
    from aggregator.wiring.demo import DemoCluster

    overrides = {k: v for k, v in DEMO_LEASE.items() if f"AGG_{k.upper()}" not in os.environ}
    settings = load_settings(**overrides)
    _configure_logging(settings)
    cluster = DemoCluster(
        pod_settings(settings),
        pods=args.pods,
        rate=args.rate,
        partitions=args.partitions,
        bad_fraction=args.bad_fraction,
        topic=settings.kafka_topic,
        lease_name=settings.lease_name,
        seed=args.seed,
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await cluster.start()
        print(
            f"stream-aggregator demo: {args.pods} pods, {args.rate:g} events/s; "
            f"dashboard at http://{args.host}:{args.port}/",
            flush=True,
        )
        try:
            yield
        finally:
            await cluster.close()

    app = create_app(cluster, demo=cluster, lifespan=lifespan)
    return _serve(app, args.host, args.port, settings)


def _serve(app: FastAPI, host: str, port: int, settings: Settings) -> int:
    import uvicorn

    from aggregator.wiring.serving import server_config

    config = server_config(app, host=host, port=port, log_level=settings.log_level)
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve())
    except OSError as error:
        raise UsageError(f"cannot serve on {host}:{port}: {error.strerror or error}") from None
    return 0 if server.started else 1


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # SIGPIPE stays ignored (Python's default): a peer closing a socket under
    # a running pod must raise an error the code handles, never kill it.


# -- run and produce --------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = load_settings()
    _configure_logging(settings)
    from aggregator.wiring.production import StartupError, run

    try:
        return run(settings)
    except StartupError as error:
        raise UsageError(str(error)) from None


def _produce(args: argparse.Namespace) -> int:
    settings = load_settings()
    _configure_logging(settings)
    from aggregator.adapters.kafka.producer import produce_synthetic
    from aggregator.ports.source import SourceUnavailable
    from aggregator.wiring.production import StartupError, kafka_options

    try:
        report = asyncio.run(
            produce_synthetic(
                settings.kafka_bootstrap_servers,
                args.topic or settings.kafka_topic,
                args.rate,
                args.duration,
                args.bad_fraction,
                args.seed,
                partitions=args.partitions,
                schema=settings.event_schema,
                options=kafka_options(settings),
            )
        )
    except StartupError as error:
        raise UsageError(str(error)) from None
    except SourceUnavailable as error:
        print(f"aggregator: {error}", file=sys.stderr)
        return 1
    summary = {
        "topic": report.topic,
        "partitions": report.partitions,
        "created_topic": report.created_topic,
        "valid": report.valid,
        "malformed": report.malformed,
        "elapsed_s": round(report.elapsed_s, 3),
    }
    sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
    return 0


# -- argument types -------------------------------------------------------------


def _positive_float(raw: str) -> float:
    value = _non_negative_float(raw)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {raw!r}")
    return value


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {raw!r}")
    return value


def _non_negative_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0: {raw!r}")
    return value


def _fraction(raw: str) -> float:
    value = _non_negative_float(raw)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {raw!r}")
    return value


def _port(raw: str) -> int:
    value = _positive_int(raw)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {raw!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
