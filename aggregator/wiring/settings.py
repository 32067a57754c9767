"""Configuration from ``AGG_*`` environment variables (the README's table).

``load_settings`` turns any invalid value into one ``ConfigError`` line that names
the variable; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aggregator.core.election import JITTER_FACTOR as JITTER_FACTOR
from aggregator.core.election import check_lease_timings
from aggregator.core.events import EventSchema

PREFIX = "AGG_"


class ConfigError(ValueError):
    """Invalid configuration; the message is one line naming the variable."""


def _default_pod_name() -> str:
    return os.environ.get("POD_NAME") or socket.gethostname()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    # What the events look like.
    dimensions: Annotated[tuple[str, ...], NoDecode] = ("app", "platform", "crash_type")
    value_field: str = "duration_ms"
    distinct_field: str = "device_id"
    time_field: str = "ts"

    # The window and its cadence.
    window_seconds: int = Field(300, gt=0)
    bucket_seconds: int = Field(1, gt=0)
    reduce_tick_seconds: float = Field(1.0, gt=0)
    reduce_tick_delay_seconds: float = Field(0.1, ge=0)
    """How long after each multiple of the tick the leader ticks: time for the
    flushes that close the second to land."""
    reduce_stall_seconds: float = Field(5.0, gt=0)
    """The leader gives the lease up after this long without publishing a snapshot."""
    flush_interval_seconds: float = Field(0.5, gt=0)
    align_flushes: bool = True
    """Flush on whole multiples of the interval on the wall clock (the tick's
    beats) rather than every interval from the pod's start."""
    top_n: int = Field(10, gt=0, le=1000)
    grace_seconds: float = Field(30.0, ge=0)
    future_seconds: float = Field(60.0, ge=0)
    max_message_bytes: int = Field(65536, gt=0)

    # Leader election (client-go's defaults).
    lease_name: str = "stream-aggregator"
    lease_namespace: str | None = None
    lease_duration_seconds: float = Field(15.0, gt=0)
    renew_deadline_seconds: float = Field(10.0, gt=0)
    retry_period_seconds: float = Field(2.0, gt=0)
    pod_name: str = Field(default_factory=_default_pod_name)
    lease_takeover_on_proof: bool = True
    """In a cluster: take the lease as soon as kubelet reports its holder's container
    exited, instead of waiting for it to expire (docs/architecture.md)."""

    # Kafka.
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "crash-events"
    kafka_group: str = "stream-aggregator"
    kafka_client_id: str = "stream-aggregator"
    kafka_dlq_topic: str | None = "crash-events.dlq"
    kafka_security_protocol: str = "PLAINTEXT"
    kafka_sasl_mechanism: str = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(None, repr=False)
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_session_timeout_seconds: float = Field(10.0, gt=0)

    # Hazelcast.
    hazelcast_members: Annotated[tuple[str, ...], NoDecode] = ("127.0.0.1:5701",)
    hazelcast_cluster_name: str = "dev"
    hazelcast_scope: str = Field("default", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """Suffix of every map and topic name (``partials.<scope>``...): deployments
    that share one Hazelcast cluster must each have their own."""

    # Kubernetes (outside a cluster; in a pod the in-cluster config is used).
    kubeconfig: str | None = None

    # HTTP.
    http_host: str = "0.0.0.0"
    http_port: int = Field(8000, gt=0, lt=65536)
    ws_max_clients: int = Field(1000, gt=0)
    """Websocket clients per pod; the next is closed with 1013 (Try Again Later)."""
    log_level: str = "INFO"

    @field_validator("dimensions", "hazelcast_members", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            items = tuple(item.strip() for item in value.split(",") if item.strip())
            if not items:
                raise ValueError("must list at least one name, comma separated")
            return items
        return value

    @field_validator("kafka_dlq_topic", "lease_namespace", "kubeconfig", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.window_seconds % self.bucket_seconds:
            raise ValueError(
                f"{PREFIX}WINDOW_SECONDS ({self.window_seconds}) must be a multiple of "
                f"{PREFIX}BUCKET_SECONDS ({self.bucket_seconds})"
            )
        if self.reduce_tick_delay_seconds >= self.reduce_tick_seconds:
            raise ValueError(
                f"{PREFIX}REDUCE_TICK_DELAY_SECONDS ({self.reduce_tick_delay_seconds:g}) must "
                f"be shorter than {PREFIX}REDUCE_TICK_SECONDS ({self.reduce_tick_seconds:g})"
            )
        fields = [*self.dimensions, self.value_field, self.distinct_field, self.time_field]
        if len(set(fields)) != len(fields):
            raise ValueError(
                f"{PREFIX}DIMENSIONS, {PREFIX}VALUE_FIELD, {PREFIX}DISTINCT_FIELD and "
                f"{PREFIX}TIME_FIELD must name different fields (got {', '.join(fields)})"
            )
        check_lease_timings(
            self.lease_duration_seconds,
            self.renew_deadline_seconds,
            self.retry_period_seconds,
            names=(
                f"{PREFIX}LEASE_DURATION_SECONDS",
                f"{PREFIX}RENEW_DEADLINE_SECONDS",
                f"{PREFIX}RETRY_PERIOD_SECONDS",
            ),
        )
        return self

    @property
    def event_schema(self) -> EventSchema:
        return EventSchema(
            dimensions=self.dimensions,
            value_field=self.value_field,
            distinct_field=self.distinct_field,
            time_field=self.time_field,
        )


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None


def _one_line(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        location = [str(part) for part in item["loc"]]
        message = str(item["msg"]).removeprefix("Value error, ")
        if location:
            variable = PREFIX + location[0].upper()
            got = item.get("input")
            shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
            problems.append(f"{variable}: {message}{shown}")
        else:
            problems.append(message)
    return "invalid configuration: " + "; ".join(problems)
