"""``aggregator run`` names its pod and container in the Lease only where kubelet's
reports can prove its death, and follows pods only in a cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aggregator.adapters.kubernetes import environment
from aggregator.core.incarnation import parse_identity
from aggregator.wiring import production
from aggregator.wiring.settings import load_settings

UID = "6976e233-c5e8-430c-bde2-cfea1e95f452"
CID = "8ebb06d0d475fbc4925bb039646aa03c160d39a9ae636ebda8e482c93a40984a"


@pytest.fixture
def in_a_pod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """This process, as the init of a container of pod UID."""
    cgroup = tmp_path / "cgroup"
    cgroup.write_text(f"4:memory:/kubepods/burstable/pod{UID}/{CID}\n")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("POD_UID", UID)
    monkeypatch.setattr(environment, "OWN_CGROUP", cgroup)
    monkeypatch.setattr(os, "getpid", lambda: 1)  # as a container's init


@pytest.mark.usefixtures("in_a_pod")
def test_in_a_pod_the_lease_names_the_pod_uid_and_the_container() -> None:
    identity, takeover = production._lease_identity(load_settings(), "agg-1_abcde")
    assert takeover
    named = parse_identity(identity)
    assert named is not None
    assert (named.pod, named.suffix, named.pod_uid, named.container_id) == (
        "agg-1",
        "abcde",
        UID,
        CID,
    )


@pytest.mark.usefixtures("in_a_pod")
def test_turned_off_or_through_a_kubeconfig_nothing_changes() -> None:
    off = load_settings(lease_takeover_on_proof=False)
    assert production._lease_identity(off, "agg-1_abcde") == ("agg-1_abcde", False)
    outside = load_settings(kubeconfig="/tmp/kubeconfig")
    assert production._lease_identity(outside, "agg-1_abcde") == ("agg-1_abcde", False)


def test_outside_a_cluster_the_identity_and_the_election_are_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert production._lease_identity(load_settings(), "laptop_abcde") == ("laptop_abcde", False)
