"""replay: the offline oracle path, through the function and through the CLI."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from aggregator.core.events import EventSchema
from aggregator.core.replay import replay
from aggregator.wiring.cli import main


def snap(lines: list[bytes], at: float, window: int = 10, bucket: int = 1) -> dict[str, Any]:
    return replay(
        lines, at=at, schema=EventSchema(), window_seconds=window, bucket_seconds=bucket, top_n=3
    )


def line(ts: object, **fields: object) -> bytes:
    return orjson.dumps({"ts": ts, **fields})


def test_window_edges_start_in_end_out() -> None:
    # at=110.7 -> end=110, window [100, 110)
    result = snap([line(100), line(109.999), line(110), line(99.999)], at=110.7)
    assert result["window"] == {"start": 100, "end": 110, "seconds": 10, "bucket_seconds": 1}
    assert result["total"]["count"] == 2
    assert result["series"][0] == {"start": 100, "count": 1}
    assert result["series"][-1] == {"start": 109, "count": 1}
    assert len(result["series"]) == 10


def test_every_rejection_reason_is_counted() -> None:
    lines = [
        b"{broken",
        b"[1]",
        b'{"app": "a"}',
        b'{"ts": "soon"}',
        b'{"ts": 105, "app": 3}',
        line(105, app="ok"),
    ]
    result = snap(lines, at=110)
    assert result["rejected"] == {
        "count": 5,
        "by_reason": {
            "invalid_json": 1,
            "not_object": 1,
            "missing_ts": 1,
            "invalid_ts": 1,
            "invalid_field": 1,
            "too_large": 0,
        },
    }
    assert result["total"]["count"] == 1


def test_order_does_not_matter() -> None:
    lines = [
        line(100 + (i * 7) % 10, app=f"a{i % 3}", duration_ms=i, device_id=f"d{i % 4}")
        for i in range(50)
    ]
    forward = snap(lines, at=110)
    backward = snap(list(reversed(lines)), at=110)
    assert forward == backward
    assert forward["total"]["count"] == 50
    assert forward["total"]["distinct"] == 4
    assert forward["total"]["value"]["min"] == 0
    assert forward["total"]["value"]["max"] == 49
    assert forward["total"]["value"]["mean"] == pytest.approx(24.5)


def test_top_keys_sorted_by_count_then_key_and_cut() -> None:
    lines = [line(105, app=app) for app in ["b", "a", "c", "c", "d", "d", "e"]]
    rows = snap(lines, at=110)["by"]["app"]
    assert [(r["key"], r["count"]) for r in rows] == [("c", 2), ("d", 2), ("a", 1)]


def test_no_values_gives_null_value_block_and_null_p99() -> None:
    result = snap([line(105, app="x")], at=110)
    assert result["total"]["value"] is None
    assert result["by"]["app"][0]["p99"] is None


def test_percentiles_are_nearest_rank_within_one_percent() -> None:
    lines = [line(105, duration_ms=v) for v in range(1, 101)]
    value = snap(lines, at=110)["total"]["value"]
    assert value["p50"] == pytest.approx(50, rel=0.01)
    assert value["p90"] == pytest.approx(90, rel=0.01)
    assert value["p99"] == pytest.approx(99, rel=0.01)


# -- through the command line ------------------------------------------------------


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "aggregator.wiring.cli", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=60,
    )


def test_cli_reads_a_file_and_skips_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(line(105, app="a") + b"\n\n   \n" + line(106, app="b") + b"\r\n")
    done = run_cli("replay", str(path), "--at", "110", "--window-seconds", "10")
    assert done.returncode == 0, done.stderr
    result = orjson.loads(done.stdout)
    assert result["total"]["count"] == 2
    assert result["rejected"]["count"] == 0


def test_cli_reads_stdin_and_rfc3339_time() -> None:
    done = run_cli(
        "replay",
        "-",
        "--at",
        "1970-01-01T00:01:50Z",
        "--window-seconds",
        "10",
        stdin=line(105) + b"\n" + line(109) + b"\n",
    )
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["total"]["count"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "/nonexistent/file.jsonl", "--at", "1"], "no such file"),
        (["replay", "-", "--at", "tomorrow"], "--at"),
        (
            ["replay", "-", "--at", "1", "--window-seconds", "10", "--bucket-seconds", "3"],
            "multiple",
        ),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_invalid_configuration_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGG_WINDOW_SECONDS", "five")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    assert main(["replay", "-", "--at", "1"]) == 2
    err = capsys.readouterr().err
    assert "AGG_WINDOW_SECONDS" in err
    assert "Traceback" not in err
