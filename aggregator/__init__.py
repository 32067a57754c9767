"""stream-aggregator: Kafka events to live rolling statistics, map/reduce over a shared store."""

__version__ = "0.1.0"
