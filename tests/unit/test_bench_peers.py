"""The peers' side of bench.suite, without servers: the brute-force window
counts a peer is checked against, the verdict, their rows in the table, and
what the suite says when a peer's environment is missing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench import peer_io
from bench.peer_truth import reported, verdict, window_counts
from bench.peers import PEERS, Peer
from bench.suite import Plan, Results, body, table
from bench.throughput import MapRun, Rate
from bench.workload import Event, EventPool


def _naive(events: list[Event], window_ms: int, step_ms: int) -> dict[str, dict[int, int]]:
    counts: Counter[tuple[str, int]] = Counter()
    for event in events:
        start = event.ts_ms // step_ms * step_ms
        while start > event.ts_ms - window_ms:
            counts[(event.key.decode(), start)] += 1
            start -= step_ms
    result: dict[str, dict[int, int]] = {}
    for (key, start), count in counts.items():
        result.setdefault(key, {})[start] = count
    return result


@pytest.mark.parametrize(("window_ms", "step_ms"), [(1_000, 1_000), (300_000, 1_000), (10, 5)])
def test_window_counts_equal_a_count_event_by_event(window_ms: int, step_ms: int) -> None:
    events = list(EventPool(size=50).events(600, 1_700_000_000_000, 2_000))
    assert window_counts(events, window_ms, step_ms) == _naive(events, window_ms, step_ms)


def test_every_event_is_in_as_many_windows_as_steps_fit_in_the_window() -> None:
    events = list(EventPool(size=50).events(600, 1_700_000_000_000, 2_000))
    hopping = window_counts(events, 300_000, 1_000)
    assert sum(sum(starts.values()) for starts in hopping.values()) == 600 * 300
    tumbling = window_counts(events, 1_000, 1_000)
    assert {s for starts in tumbling.values() for s in starts} == {
        1_700_000_000_000,
        1_700_000_001_000,
    }


def test_a_window_that_is_no_multiple_of_the_step_is_refused() -> None:
    with pytest.raises(ValueError, match="multiple of the step"):
        window_counts([], 1_500, 1_000)


def test_the_verdict_names_how_many_windows_differ_and_one_of_them() -> None:
    truth = {"app-1": {0: 3, 1_000: 2}, "app-2": {0: 1}}
    assert verdict(truth, reported({"app-1": {"0": 3, "1000": 2}, "app-2": {"0": 1}})) == "exact"
    wrong = verdict(truth, {"app-1": {0: 3, 1_000: 1}, "app-3": {0: 4}})
    assert wrong.startswith("3 of 4 windows wrong (e.g. app-1 at 1000: 1, not 2)"), wrong


def test_a_peer_reports_its_records_and_times_in_one_line_and_its_windows_in_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    args = peer_io.arguments("peer", ["--bootstrap", "b", "--topic", "t", "--group", "g",
                                      "--state-dir", str(tmp_path), "--count", "2"])  # fmt: skip
    assert (args.window_ms, args.step_ms, args.grace_ms) == (300_000, 1_000, 30_000)
    tally = peer_io.Tally(args.count)
    assert not tally.seen()
    assert tally.seen()
    tally.window("app-1", 1_000, 2)
    peer_io.report(tally, args.state_dir, ended_at=tally.last_at + 1)
    result = json.loads(capsys.readouterr().out)["result"]
    assert result["processed"] == 2
    assert result["first_record_at"] <= result["last_record_at"] < result["committed_at"]
    windows = json.loads((tmp_path / peer_io.WINDOWS_FILE).read_text())
    assert reported(windows) == {"app-1": {1_000: 2}}


def test_a_missing_environment_is_named_with_what_builds_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pathway = next(peer for peer in PEERS if peer.name == "Pathway")
    monkeypatch.setenv(pathway.python_variable, str(tmp_path / "nothing"))
    assert not pathway.available()
    assert pathway.missing() == (
        f"Pathway skipped: {tmp_path / 'nothing'} is missing (`make bench` creates "
        ".venv-pathway from bench/pathway-requirements.txt)"
    )
    for peer in PEERS:
        requirements = Path("bench") / f"{peer.venv.removeprefix('.venv-')}-requirements.txt"
        assert requirements.exists(), peer
    monkeypatch.setenv(pathway.python_variable, str(tmp_path))
    assert Peer("X", "X", "m", ".venv-x", pathway.python_variable).available()


def test_each_peer_row_carries_its_check() -> None:
    results = Results(
        maps=[MapRun(1, 300_000, 1.0, 10, 2, 20)],
        peers=[
            Rate("Pathway, 1 s tumbling window", 30_000, 0.5, checked="counts exact"),
            Rate("Bytewax, 1 s tumbling window", 30_000, 1.0, checked="counts 1 of 2 wrong"),
        ],
    )
    rows = [line for line in table(Plan.quick(), results) if "vs a peer" in line]
    assert rows[0] == (
        "| map stage vs a peer, events/s per process | 300,000 | Pathway, 1 s tumbling "
        "window: 60,000 (30,000 events; counts exact) | 5.0x | >= 2x | yes |"
    )
    assert "(30,000 events; counts 1 of 2 wrong) | 10.0x |" in rows[1]


def test_the_doc_block_says_what_the_peers_read_and_the_machine_load() -> None:
    results = Results(produce_s=1.0, load=(3.96, 7.04), peers=[Rate("Bytewax", 10, 1.0)])
    text = body(Plan.full(), results, "python -m bench.suite", figure=False)
    assert "`python -m bench.suite`. Load average (1 min) 4.0 at the start, 7.0 at the end." in text
    assert "the peers a topic of its first 300,000 or 10,000 events." in text
    assert "the peers" not in body(Plan.full(), Results(produce_s=1.0), "c", figure=False)
