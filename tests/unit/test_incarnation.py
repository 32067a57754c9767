"""Election identities that name a container, and the rules that prove one dead."""

from __future__ import annotations

import pytest

from aggregator.core.incarnation import (
    Incarnation,
    container_id_from_cgroup,
    parse_identity,
    short_identity,
)
from aggregator.core.proof_of_death import ContainerReport, DeathEvidence, PodReport

UID = "6976e233-c5e8-430c-bde2-cfea1e95f452"
CID = "8ebb06d0d475fbc4925bb039646aa03c160d39a9ae636ebda8e482c93a40984a"
OTHER = "1" * 64
HOLDER = Incarnation("stream-aggregator-547bd78cff-9qdv7", "x1y2z", UID, CID)


def test_an_identity_round_trips_and_keeps_the_pod_name_first() -> None:
    identity = HOLDER.identity
    assert identity.startswith("stream-aggregator-547bd78cff-9qdv7_x1y2z_")
    assert parse_identity(identity) == HOLDER
    assert short_identity(identity) == "stream-aggregator-547bd78cff-9qdv7_x1y2z"
    plain = Incarnation("demo-pod-1", "abcde")
    assert plain.identity == "demo-pod-1_abcde"  # outside a cluster: as before
    assert parse_identity(plain.identity) == plain
    assert not plain.provable


@pytest.mark.parametrize(
    "identity",
    [None, "", "no-suffix", "a_b_c", f"pod_s_{UID}_short", f"pod_s_not-a-uid_{CID}", "_abc"],
)
def test_anything_else_is_no_incarnation(identity: str | None) -> None:
    assert parse_identity(identity) is None
    if identity:
        assert short_identity(identity) == identity


def test_an_incarnation_refuses_parts_that_would_not_parse_back() -> None:
    with pytest.raises(ValueError, match="pod name"):
        Incarnation("a_b", "s")
    with pytest.raises(ValueError, match="go together"):
        Incarnation("pod", "s", UID, None)
    with pytest.raises(ValueError, match="container ID"):
        Incarnation("pod", "s", UID, "containerd://" + CID)


def test_the_container_id_comes_from_the_cgroup_of_either_driver() -> None:
    cgroupfs = "\n".join(
        f"{n}:{c}:/kubepods/burstable/pod{UID}/{CID}"
        for n, c in ((4, "memory"), (1, "cpu"), (0, ""))
    )
    assert container_id_from_cgroup(cgroupfs) == CID
    systemd = f"0::/kubepods.slice/kubepods-pod.slice/cri-containerd-{CID}.scope\n"
    assert container_id_from_cgroup(systemd) == CID
    assert container_id_from_cgroup("0::/\n") is None  # a private cgroup namespace
    assert container_id_from_cgroup("0::/user.slice/session-1.scope\n") is None  # no container
    mixed = f"4:memory:/kubepods/pod{UID}/{CID}\n1:cpu:/kubepods/pod{UID}/{OTHER}\n"
    assert container_id_from_cgroup(mixed) is None  # hierarchies disagree: not sure


def report(*containers: ContainerReport, uid: str = UID) -> PodReport:
    return PodReport(HOLDER.pod, uid, containers)


def test_kubelet_reporting_the_container_terminated_is_proof() -> None:
    evidence = DeathEvidence(HOLDER)
    assert evidence.observe(report(ContainerReport("aggregator", CID, 0))) is None
    proof = evidence.observe(report(ContainerReport("aggregator", CID, 0, terminated_id=CID)))
    assert proof is not None
    assert "terminated" in proof


def test_a_restart_past_the_container_is_proof() -> None:
    last = DeathEvidence(HOLDER)
    assert last.observe(report(ContainerReport("aggregator", OTHER, 1, last_terminated_id=CID)))
    counted = DeathEvidence(HOLDER)
    assert counted.observe(report(ContainerReport("aggregator", CID, 3))) is None
    assert counted.observe(report(ContainerReport("aggregator", OTHER, 3))) is None  # stale?
    assert counted.observe(report(ContainerReport("aggregator", OTHER, 4)))


def test_an_older_container_of_the_same_name_proves_nothing() -> None:
    """A report that still shows the container before the holder's is stale, not proof."""
    evidence = DeathEvidence(HOLDER)
    assert evidence.observe(report(ContainerReport("aggregator", OTHER, 0, OTHER))) is None
    assert evidence.observe(report(ContainerReport("aggregator", OTHER, 0))) is None


def test_another_pod_an_absent_pod_or_an_unprovable_holder_prove_nothing() -> None:
    evidence = DeathEvidence(HOLDER)
    other_uid = "00000000-0000-0000-0000-000000000001"
    dead = ContainerReport("aggregator", CID, 0, terminated_id=CID)
    assert evidence.observe(report(dead, uid=other_uid)) is None
    assert evidence.observe(None) is None
    assert DeathEvidence(Incarnation(HOLDER.pod, "abcde")).observe(report(dead)) is None
