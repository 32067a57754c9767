"""``python -m bench.failover --runs N --timings 15,10,2 --timings 4,3,1 [--no-write]``

Leader failover of real ``aggregator run`` processes (3 pods on the local
kube-apiserver, Kafka and Hazelcast; start them with ``make infra-up``).  Each
run signals the publishing leader and times, from the signal, the first
snapshot of a new leader (higher epoch) pushed to a websocket client of a
surviving pod.  A run is one SIGTERM (graceful: the lease is released) and one
SIGKILL (the followers wait for the lease to expire); the signalled pod is
replaced before the next run.  Prints a table and rewrites the ``## Failover``
section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.pods import running_pods
from harness.failover import Failover, fail_leader
from harness.pods import Cluster, Timings
from harness.snapshots import SnapshotRecorder, fencing_violations

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Failover"
PODS = 3
GRACEFUL_BOUND_S = 3.0


def crash_bound(timings: Timings) -> float:
    return timings.lease_s + 2 * timings.retry_s


def servers(*, kube: bool = True) -> tuple[Path, str, list[str], str]:
    """The running local servers (the kube-apiserver only if ``kube``), or
    SystemExit(2) saying how to start them."""
    from infra import hazelcast as hz_infra
    from infra import kafka as kafka_infra
    from infra.kube import control_plane

    members = [hz_infra.address(i) for i in range(hz_infra.MEMBER_COUNT)]
    deadline = time.monotonic() + 60  # tests of other sessions may be restarting one
    waited = False
    while True:
        problems = []
        if kube and not control_plane.apiserver_ready():
            problems.append("kube-apiserver")
        if not kafka_infra.COMPONENT.running():
            problems.append("Kafka")
        if hz_infra.COMPONENT.running_members() != members:
            problems.append("Hazelcast")
        if not problems or time.monotonic() > deadline:
            break
        if not waited:
            print(f"bench: waiting up to 60 s for {', '.join(problems)}", file=sys.stderr)
            waited = True
        time.sleep(1)
    if problems:
        print(f"bench: not running: {', '.join(problems)}; start them with "
              "`python -m infra up` (or `make infra-up`)", file=sys.stderr)  # fmt: skip
        raise SystemExit(2)
    return control_plane.kubeconfig_path(), kafka_infra.BOOTSTRAP, members, hz_infra.CLUSTER_NAME


async def replace(cluster: Cluster, recorder: SnapshotRecorder) -> None:
    pod = cluster.start()
    await pod.wait_up()
    recorder.watch(pod)


async def measure(timings: Timings, runs: int, logs: Path) -> list[Failover]:
    kubeconfig, bootstrap, members, cluster_name = servers()
    prefix = f"bench{secrets.token_hex(3)}"
    recorder = SnapshotRecorder()
    results: list[Failover] = []
    async with running_pods(
        prefix, PODS, recorder, kubeconfig=kubeconfig, bootstrap=bootstrap, members=members,
        cluster_name=cluster_name, logs=logs, timings=timings,
    ) as cluster:  # fmt: skip
        for run in range(runs):
            for sig, bound in (
                (signal.SIGTERM, GRACEFUL_BOUND_S),
                (signal.SIGKILL, crash_bound(timings)),
            ):
                outcome = await fail_leader(cluster, recorder, sig, timeout_s=bound + 30)
                results.append(outcome)
                print(
                    f"  {timings.label()} run {run + 1}/{runs} {sig.name}: "
                    f"{outcome.seconds:.2f} s (epoch {outcome.old_epoch} -> "
                    f"{outcome.new_epoch}, exit {outcome.exit_status})",
                    flush=True,
                )
                await replace(cluster, recorder)
        problems = fencing_violations(recorder.mine(prefix))
        if problems:
            print("  FENCING VIOLATIONS:\n  " + "\n  ".join(problems), file=sys.stderr)
    return results


def table(measured: dict[Timings, list[Failover]]) -> list[str]:
    lines = [
        "| lease/renew/retry (s) | signal | runs | min (s) | median (s) | max (s) "
        "| bound (s) | all within |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for timings, outcomes in measured.items():
        for how, bound in (
            ("SIGTERM", GRACEFUL_BOUND_S),
            ("SIGKILL", crash_bound(timings)),
        ):
            seconds = [o.seconds for o in outcomes if o.how == how]
            if not seconds:
                continue
            lines.append(
                f"| {timings.label()} | {how} | {len(seconds)} | {min(seconds):.2f} "
                f"| {statistics.median(seconds):.2f} | {max(seconds):.2f} | {bound:g} "
                f"| {'yes' if max(seconds) <= bound else 'NO'} |"
            )
    return lines


def write_section(body: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    section = f"{SECTION}\n\n{body}\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(SECTION))
        rest = text[following + 1 :] if following >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover")
    parser.add_argument("--runs", type=int, default=3, help="runs per timing (default 3)")
    parser.add_argument(
        "--timings",
        action="append",
        type=Timings.parse,
        help="lease,renew-deadline,retry in seconds; repeat it (default 15,10,2 and 4,3,1)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # so the pods are stopped on the way out
    chosen: list[Timings] = args.timings or [Timings(15, 10, 2), Timings(4, 3, 1)]
    logs = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    print(f"pod logs under {logs}")
    measured: dict[Timings, list[Failover]] = {}
    for timings in chosen:
        measured[timings] = asyncio.run(measure(timings, args.runs, logs))
    lines = table(measured)
    print("\n".join(lines))
    statuses = sorted({o.exit_status for m in measured.values() for o in m if o.how == "SIGTERM"},
                      key=str)  # fmt: skip
    command = "python -m bench.failover --runs {} {}".format(
        args.runs, " ".join(f"--timings {t.lease_s:g},{t.renew_deadline_s:g},{t.retry_s:g}"
                            for t in chosen),
    )  # fmt: skip
    body = "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}; "
            f"command: `{command}`.",
            "",
            f"{PODS} `aggregator run` processes on the local kube-apiserver, Kafka and "
            "Hazelcast (reduce tick 0.5 s). Time from the signal to the leader to the "
            "first snapshot of the new leader (higher epoch) received by a websocket "
            "client of a surviving pod. Bounds: SIGTERM 3 s (the lease is released); "
            "SIGKILL lease + 2 x retry (the followers wait for the lease to expire, "
            "judged from when they last saw it change).",
            "",
            *lines,
            "",
            f"SIGTERMed leaders exited with status {', '.join(map(str, statuses))}.",
        ]
    )
    if not args.no_write:
        write_section(body)
        print(f"\nwritten to {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
