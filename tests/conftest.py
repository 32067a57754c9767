"""Session-wide fixtures; server fixtures live in tests/fixtures/ and are plugged in here."""

pytest_plugins = [
    "tests.fixtures.kafka_hazelcast",
    "tests.fixtures.kube",
    "tests.fixtures.node",
]
