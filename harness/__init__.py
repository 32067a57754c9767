"""Several ``aggregator run`` processes on the real Kafka, Hazelcast and API server.

Shared by the integration tests (tests/integration/, through tests/support/cluster.py
for the pytest fixture) and the benchmarks (bench/); it imports neither, nor pytest.

* ``pods``: every process gets its own pod name, loopback HTTP port and log file.
  Each scenario runs in its own ``AGG_HAZELCAST_SCOPE`` (its prefix), so its maps
  and topic are its own even when other sessions share the Hazelcast cluster.
* ``snapshots``: a ``SnapshotRecorder`` keeps one websocket client per pod and
  writes down every snapshot each pod pushed.
* ``lease``: the Lease as kubectl shows it.
* ``failover``: a leader signalled, and the time until another one publishes.
"""
