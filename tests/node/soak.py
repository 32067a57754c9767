"""The soak's samples, and what they say: slopes after warm-up, a table, a figure.

Samples are taken every few seconds from outside the pods: each aggregator
container's RSS and open descriptors from the host's /proc (its host PID), its
asyncio tasks and role from its own /metrics, the Hazelcast entries of the
partials map, and the consumer group's lag.  A container is one series from its
start until it dies (a SIGKILLed leader's successor container is a new series);
a series is judged only on its samples after the warm-up, while it kept one role
(a follower taking over the window is a step, not a leak).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1024 * 1024


@dataclass(frozen=True)
class PodSample:
    at: float
    """Seconds since the soak began."""
    pod: str
    container: str
    rss_bytes: int
    fds: int
    tasks: int
    leader: bool


@dataclass(frozen=True)
class ClusterSample:
    at: float
    entries: int
    lag: int
    epoch: int
    """The Lease's leaseTransitions."""


@dataclass(frozen=True)
class Slope:
    """One container's series in one role, after its warm-up."""

    pod: str
    container: str
    leader: bool
    minutes: float
    rss_mib: tuple[float, float]
    """(first, last) RSS after the warm-up."""
    rss_mib_per_min: float
    fds: tuple[int, int]
    tasks: tuple[int, int]


@dataclass
class SoakRecord:
    minutes: float
    rate: int
    pods: list[PodSample] = field(default_factory=list)
    cluster: list[ClusterSample] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    """(seconds since the start, what happened): leader kills, the Hazelcast restart."""

    def note(self, at: float, what: str) -> None:
        self.events.append((at, what))
        print(f"{at:7.1f} s: {what}", flush=True)

    def slopes(
        self,
        warm_up_s: float,
        role_warm_up_s: float,
        min_span_s: float,
        rebalances: list[float],
    ) -> list[Slope]:
        """Every series that has at least ``min_span_s`` of samples after its warm-up:
        ``warm_up_s`` from the container's first sample and from the last rebalance
        before the end of the series (a pod given partitions fills their retention
        again), and ``role_warm_up_s`` from a change of role."""
        series: dict[tuple[str, str], list[PodSample]] = {}
        for sample in self.pods:
            series.setdefault((sample.pod, sample.container), []).append(sample)
        found = []
        for (pod, container), samples in series.items():
            born = samples[0].at
            for run in _runs_of_one_role(samples):
                moved = [at for at in rebalances if at < run[-1].at]
                since = max(
                    born + warm_up_s,
                    run[0].at + role_warm_up_s,
                    max(moved, default=born) + warm_up_s,
                )
                warm = [s for s in run if s.at >= since]
                if len(warm) < 3 or warm[-1].at - warm[0].at < min_span_s:
                    continue
                times = [s.at / 60 for s in warm]
                rss = [s.rss_bytes / MIB for s in warm]
                found.append(
                    Slope(
                        pod,
                        container,
                        warm[0].leader,
                        (warm[-1].at - warm[0].at) / 60,
                        (rss[0], rss[-1]),
                        statistics.linear_regression(times, rss).slope,
                        (min(s.fds for s in warm), max(s.fds for s in warm)),
                        (min(s.tasks for s in warm), max(s.tasks for s in warm)),
                    )
                )
        return found

    def table(self, slopes: list[Slope], limit_mib_per_min: float) -> str:
        peak_entries = max((c.entries for c in self.cluster), default=0)
        peak_lag = max((c.lag for c in self.cluster), default=0)
        lines = [
            f"{self.minutes:g} minutes at {self.rate:,} events/s; "
            f"{sum('killed' in e for _, e in self.events)} leader kills and "
            f"{sum('Hazelcast' in e for _, e in self.events)} Hazelcast member restart; "
            f"Hazelcast entries at most {peak_entries:,}; consumer lag at most {peak_lag:,}.",
            "",
            "| pod | container | role | judged over | RSS (MiB) | RSS slope | "
            "open fds | asyncio tasks |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in slopes:
            verdict = "flat" if abs(s.rss_mib_per_min) <= limit_mib_per_min else "**grows**"
            lines.append(
                f"| {s.pod.rsplit('-', 1)[-1]} | {s.container[:8]} | "
                f"{'leader' if s.leader else 'follower'} | {s.minutes:.1f} min | "
                f"{s.rss_mib[0]:.0f} → {s.rss_mib[1]:.0f} | "
                f"{s.rss_mib_per_min:+.2f} MiB/min ({verdict}) | "
                f"{s.fds[0]} to {s.fds[1]} | {s.tasks[0]} to {s.tasks[1]} |"
            )
        if not slopes:
            lines.append("| (no series ran long enough after its warm-up to judge) |||||||| ")
        lines += ["", "Events:", ""]
        lines += [f"- {at / 60:5.1f} min: {what}" for at, what in self.events]
        return "\n".join(lines)

    def figure(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
        series: dict[tuple[str, str], list[PodSample]] = {}
        for sample in self.pods:
            series.setdefault((sample.pod, sample.container), []).append(sample)
        for (pod, container), samples in series.items():
            label = f"{pod.rsplit('-', 1)[-1]}/{container[:5]}"
            minutes = [s.at / 60 for s in samples]
            axes[0].plot(minutes, [s.rss_bytes / MIB for s in samples], label=label)
            axes[1].plot(minutes, [s.fds for s in samples])
            axes[2].plot(minutes, [s.tasks for s in samples])
        minutes = [c.at / 60 for c in self.cluster]
        axes[3].plot(minutes, [c.entries for c in self.cluster], label="Hazelcast entries")
        axes[3].plot(minutes, [c.lag for c in self.cluster], label="consumer lag (events)")
        for ax, title in zip(
            axes,
            ("RSS per container (MiB)", "open file descriptors", "asyncio tasks", "cluster"),
            strict=True,
        ):
            ax.set_title(title, fontsize=10)
            for at, _ in self.events:
                ax.axvline(at / 60, color="grey", linewidth=0.6, linestyle=":")
        axes[0].legend(fontsize=7, ncol=3)
        axes[3].legend(fontsize=8)
        axes[3].set_xlabel("minutes (dotted: a leader kill or the Hazelcast restart)")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)


def _runs_of_one_role(samples: list[PodSample]) -> list[list[PodSample]]:
    runs: list[list[PodSample]] = []
    for sample in samples:
        if runs and runs[-1][-1].leader == sample.leader:
            runs[-1].append(sample)
        else:
            runs.append([sample])
    return runs
