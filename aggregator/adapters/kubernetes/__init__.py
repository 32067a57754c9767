"""The Lease and pod-status ports on a real Kubernetes API server, through the
official client.

This package is the only place in the project that imports ``kubernetes``.
"""

from aggregator.adapters.kubernetes.environment import from_environment, own_container, pods_of
from aggregator.adapters.kubernetes.lease import KubernetesLease
from aggregator.adapters.kubernetes.pods import KubernetesPods

__all__ = ["KubernetesLease", "KubernetesPods", "from_environment", "own_container", "pods_of"]
