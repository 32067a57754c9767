"""Test-support code, imported by the tests and by nothing else.

* ``oracle``: brute force, the snapshot numbers computed the obvious way.
* The exactness scenarios against the real servers (test_map_exactness.py,
  test_chaos.py), one concern a module: ``stream`` (the seeded messages and the
  outcome each must have), ``producer`` (sending them), ``readback`` (what
  Kafka and Hazelcast finally hold), ``truth`` (the brute-force answer over what
  was read back) and ``comparisons`` (the differences, and ``check_everything``).
* ``cluster``: the pytest fixture over the pod harness (harness/).
"""
