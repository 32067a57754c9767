"""The peers of ``bench.suite`` (parent side): Quix Streams, Pathway and
Bytewax, each in a virtual environment of its own that ``make bench`` builds
from ``bench/<venv>-requirements.txt``, each run as one process over a topic
that holds the first N events of the workload, its window counts checked
against the brute force (``bench.peer_truth``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.kafka_load import delete_topics
from bench.peer_io import WINDOWS_FILE
from bench.peer_truth import WindowCounts, reported, verdict
from bench.proc import REPO, Child, python_module
from bench.throughput import Rate
from harness.pods import clean_environment


@dataclass(frozen=True)
class Peer:
    name: str
    short: str
    """For the figure's labels."""
    module: str
    venv: str
    """Its environment's folder in the checkout (``make bench`` builds it)."""
    python_variable: str
    """The environment variable that may point at its interpreter instead."""
    emits_open_windows: bool = True
    """False: it emits a window only once later events close it (the workload
    has none), so its counts cannot be checked; its record count is."""

    @property
    def python(self) -> Path:
        default = REPO / self.venv / "bin" / "python"
        return Path(os.environ.get(self.python_variable, default))

    def available(self) -> bool:
        return self.python.exists()

    def missing(self) -> str:
        return (
            f"{self.name} skipped: {self.python} is missing (`make bench` creates "
            f"{self.venv} from bench/{self.venv.removeprefix('.venv-')}-requirements.txt)"
        )


PEERS = (
    Peer("Quix Streams", "Quix", "bench.quix_peer", ".venv-peer", "BENCH_PEER_PYTHON", False),
    Peer("Pathway", "Pathway", "bench.pathway_peer", ".venv-pathway", "BENCH_PATHWAY_PYTHON"),
    Peer("Bytewax", "Bytewax", "bench.bytewax_peer", ".venv-bytewax", "BENCH_BYTEWAX_PYTHON"),
)


def window_kind(window_ms: int, step_ms: int) -> tuple[str, str]:
    """The computation's name in the table, and in the figure."""
    if step_ms >= window_ms:
        return f"{window_ms / 1000:g} s tumbling window", f"{window_ms / 1000:g} s\ntumbling"
    return (
        f"{window_ms / 60_000:g} min hopping window, {step_ms / 1000:g} s step",
        f"{window_ms / 60_000:g} min\nhopping, {step_ms / 1000:g} s step",
    )


async def run_peer(
    peer: Peer,
    bootstrap: str,
    topic: str,
    truth: WindowCounts,
    records: int,
    window_ms: int,
    step_ms: int,
    prefix: str,
    logs: Path,
) -> Rate:
    """``peer`` over ``topic`` (``records`` events whose counts are ``truth``),
    one process, fresh state; a tumbling window when ``step_ms >= window_ms``."""
    group = f"{prefix}-{peer.short.lower()}{window_ms}-{step_ms}"
    state = Path(tempfile.mkdtemp(prefix=f"bench-{peer.short.lower()}-state-"))
    try:
        child = await Child.start(
            python_module(
                peer.module, "--bootstrap", bootstrap, "--topic", topic, "--group", group,
                "--state-dir", str(state), "--count", str(records), "--window-ms", str(window_ms),
                "--step-ms", str(step_ms),
                python=str(peer.python),
            ),
            logs / f"{group}.log",
            env=clean_environment() | {"PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        result = await child.finish(180 + records / 100)
        windows = json.loads((state / WINDOWS_FILE).read_text())
    finally:
        shutil.rmtree(state, ignore_errors=True)
        await delete_topics(bootstrap, group)  # its changelog topics, if any
    kind, label = window_kind(window_ms, step_ms)
    processed = int(result["processed"])
    if processed != records:
        checked = f"processed {processed:,} of {records:,} records"
    elif peer.emits_open_windows:
        checked = f"counts {verdict(truth, reported(windows))}"
    else:
        checked = "counts not checked: it emits none before a window closes"
    seconds = result["committed_at"] - result["first_record_at"]
    if "idle_run_s" in result:  # Pathway: its whole run, less one that read nothing
        whole = result["committed_at"] - result["run_started_at"]
        seconds = whole - result["idle_run_s"]
        checked += f"; run {whole:.2f} s less {result['idle_run_s']:.2f} s idle"
    return Rate(
        f"{peer.name}, {kind}",
        processed,
        seconds,
        int(result["max_rss_kib"]),
        f"{peer.short}, {label}",
        checked,
    )
