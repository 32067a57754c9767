"""Settings to the services' own configuration objects."""

from __future__ import annotations

from aggregator.core.accumulate import FoldSettings
from aggregator.core.election import ElectionTimings
from aggregator.services.pod import PodSettings
from aggregator.services.reduce_stage import ReduceSettings
from aggregator.wiring.settings import Settings


def pod_settings(settings: Settings) -> PodSettings:
    return PodSettings(
        fold=FoldSettings(
            schema=settings.event_schema,
            bucket_seconds=settings.bucket_seconds,
            window_seconds=settings.window_seconds,
            grace_seconds=settings.grace_seconds,
            future_seconds=settings.future_seconds,
            max_message_bytes=settings.max_message_bytes,
        ),
        reduce=ReduceSettings(
            dimension_names=settings.dimensions,
            window_seconds=settings.window_seconds,
            bucket_seconds=settings.bucket_seconds,
            tick_s=settings.reduce_tick_seconds,
            top_n=settings.top_n,
            tick_delay_s=settings.reduce_tick_delay_seconds,
            stall_s=settings.reduce_stall_seconds,
        ),
        flush_interval_s=settings.flush_interval_seconds,
        align_flushes=settings.align_flushes,
        timings=ElectionTimings(
            lease_duration_s=settings.lease_duration_seconds,
            renew_deadline_s=settings.renew_deadline_seconds,
            retry_period_s=settings.retry_period_seconds,
        ),
    )
