"""Configuration: defaults, parsing, and one clear line per mistake."""

from __future__ import annotations

import pytest

from aggregator.wiring.settings import ConfigError, load_settings


def test_defaults_are_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("AGG_"):
            monkeypatch.delenv(name)
    settings = load_settings()
    assert settings.dimensions == ("app", "platform", "crash_type")
    assert (settings.window_seconds, settings.bucket_seconds) == (300, 1)
    assert (settings.reduce_tick_seconds, settings.flush_interval_seconds) == (1.0, 0.5)
    assert (settings.reduce_tick_delay_seconds, settings.align_flushes) == (0.1, True)
    assert settings.top_n == 10
    assert (
        settings.lease_duration_seconds,
        settings.renew_deadline_seconds,
        settings.retry_period_seconds,
    ) == (15.0, 10.0, 2.0)


def test_comma_separated_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGG_DIMENSIONS", " region , tier ")
    monkeypatch.setenv("AGG_HAZELCAST_MEMBERS", "10.0.0.1:5701,10.0.0.2:5701")
    settings = load_settings()
    assert settings.dimensions == ("region", "tier")
    assert settings.hazelcast_members == ("10.0.0.1:5701", "10.0.0.2:5701")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AGG_WINDOW_SECONDS": "abc"}, "AGG_WINDOW_SECONDS"),
        ({"AGG_WINDOW_SECONDS": "0"}, "AGG_WINDOW_SECONDS"),
        ({"AGG_WINDOW_SECONDS": "300", "AGG_BUCKET_SECONDS": "7"}, "AGG_BUCKET_SECONDS"),
        ({"AGG_LEASE_DURATION_SECONDS": "5"}, "AGG_RENEW_DEADLINE_SECONDS"),
        ({"AGG_RETRY_PERIOD_SECONDS": "9"}, "AGG_RETRY_PERIOD_SECONDS"),
        ({"AGG_DIMENSIONS": " , "}, "AGG_DIMENSIONS"),
        ({"AGG_DIMENSIONS": "ts"}, "AGG_TIME_FIELD"),
        ({"AGG_LOG_LEVEL": "loud"}, "AGG_LOG_LEVEL"),
        ({"AGG_HTTP_PORT": "70000"}, "AGG_HTTP_PORT"),
        ({"AGG_HAZELCAST_SCOPE": "a b"}, "AGG_HAZELCAST_SCOPE"),
        ({"AGG_REDUCE_TICK_DELAY_SECONDS": "1"}, "AGG_REDUCE_TICK_DELAY_SECONDS"),
        ({"AGG_REDUCE_TICK_DELAY_SECONDS": "-0.1"}, "AGG_REDUCE_TICK_DELAY_SECONDS"),
    ],
)
def test_invalid_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    text = str(raised.value)
    assert named in text
    assert "\n" not in text
