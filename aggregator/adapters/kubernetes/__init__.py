"""The Lease port on a real Kubernetes API server, through the official client.

This package is the only place in the project that imports ``kubernetes``.
"""

from aggregator.adapters.kubernetes.environment import from_environment
from aggregator.adapters.kubernetes.lease import KubernetesLease

__all__ = ["KubernetesLease", "from_environment"]
