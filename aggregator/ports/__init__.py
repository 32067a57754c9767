"""Ports: the Protocols services depend on.  Adapters implement them; memory
adapters stand in for the real ones in the demo and unit tests, and the contract
suite runs the same cases on both."""
