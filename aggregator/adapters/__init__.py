"""Adapters: the ports implemented on real systems (kafka, hazelcast, kubernetes)
and in memory.  Adapters never import each other."""
