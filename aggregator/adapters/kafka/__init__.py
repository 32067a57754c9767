"""Kafka adapters on aiokafka: the event source (a consumer group), the dead-letter
topic, and the synthetic load generator behind ``aggregator produce``.

aiokafka types stay inside this package: records leave as ``SourceRecord`` (a
``KafkaRecord`` that also carries the key and headers), failures as
``SourceUnavailable``.
"""
