"""The pod-status port's contract: the same cases on the memory pods and on real
Pod objects (the local kube-apiserver), where the test writes the status through
the status subresource as kubelet would.

The API server here runs no kubelet and no scheduler: the pods are only objects,
which is all ``follow`` reads.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import Protocol

import pytest
from kubernetes import client

from aggregator.adapters.kubernetes import KubernetesPods
from aggregator.adapters.memory.pods import MemoryPods
from aggregator.ports.pods import ContainerReport, PodReport, PodStatuses
from tests.fixtures.kube import KubeApi

CID = "a" * 64
NEXT = "b" * 64
WAIT_S = 10.0


class Kubelet(Protocol):
    """What the test does to a pod: create it, report its container, delete it."""

    def create(self, name: str) -> str: ...

    def status(self, name: str, container: ContainerReport) -> None: ...

    def delete(self, name: str) -> None: ...


@dataclass
class Backend:
    pods: PodStatuses
    kubelet: Kubelet


class MemoryKubelet:
    def __init__(self, pods: MemoryPods) -> None:
        self._pods = pods
        self._uids: dict[str, str] = {}

    def create(self, name: str) -> str:
        uid = str(uuid.uuid4())
        self._uids[name] = uid
        self._pods.report(PodReport(name, uid))
        return uid

    def status(self, name: str, container: ContainerReport) -> None:
        self._pods.report(PodReport(name, self._uids[name], (container,)))

    def delete(self, name: str) -> None:
        self._pods.delete(name)


class ApiKubelet:
    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self._core = core
        self._namespace = namespace
        # no controller manager here makes the namespace's default ServiceAccount,
        # which the admission of every pod looks up
        core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
        )

    def create(self, name: str) -> str:
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                containers=[client.V1Container(name="aggregator", image="stream-aggregator")],
                automount_service_account_token=False,
                node_name="nowhere",  # never scheduled: only the object matters
            ),
        )
        created = self._core.create_namespaced_pod(self._namespace, pod)
        assert created.metadata is not None
        return str(created.metadata.uid)

    def status(self, name: str, container: ContainerReport) -> None:
        def terminated(cid: str | None) -> dict[str, object] | None:
            if cid is None:
                return None
            return {"terminated": {"exitCode": 137, "containerID": f"containerd://{cid}"}}

        state = terminated(container.terminated_id) or {
            "running": {"startedAt": "2026-12-07T00:00:00Z"}
        }
        body = {
            "status": {
                "containerStatuses": [
                    {
                        "name": container.name,
                        "containerID": f"containerd://{container.container_id}",
                        "image": "stream-aggregator",
                        "imageID": "",
                        "ready": container.terminated_id is None,
                        "restartCount": container.restart_count,
                        "state": state,
                        "lastState": terminated(container.last_terminated_id) or {},
                    }
                ]
            }
        }
        self._core.patch_namespaced_pod_status(name, self._namespace, body)

    def delete(self, name: str) -> None:
        self._core.delete_namespaced_pod(name, self._namespace, grace_period_seconds=0)


@pytest.fixture(params=["memory", pytest.param("kubernetes", marks=pytest.mark.kube)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        pods = MemoryPods()
        yield Backend(pods, MemoryKubelet(pods))
        return
    kube_api: KubeApi = request.getfixturevalue("kube_api")
    namespace: str = request.getfixturevalue("kube_namespace")
    with kube_api.api_client() as api:
        yield Backend(
            KubernetesPods(api, namespace, request_timeout_s=2.0),
            ApiKubelet(client.CoreV1Api(api), namespace),
        )


async def next_report(reports: AsyncGenerator[PodReport | None, None]) -> PodReport | None:
    return await asyncio.wait_for(anext(reports), WAIT_S)


async def report_where(
    reports: AsyncGenerator[PodReport | None, None], wanted: object
) -> PodReport | None:
    """Skip reports until one satisfies ``wanted`` (the server may send more, e.g.
    while a pod is being deleted)."""
    while True:
        report = await next_report(reports)
        if wanted(report):  # type: ignore[operator]
            return report


async def test_follow_reports_the_pod_its_containers_and_its_end(backend: Backend) -> None:
    name = f"agg-{uuid.uuid4().hex[:8]}"
    reports = backend.pods.follow(name)
    try:
        assert await next_report(reports) is None  # not there yet
        uid = await asyncio.to_thread(backend.kubelet.create, name)
        created = await report_where(reports, lambda r: r is not None)
        assert created == PodReport(name, uid, ())

        running = ContainerReport("aggregator", CID, 0)
        await asyncio.to_thread(backend.kubelet.status, name, running)
        assert await report_where(reports, lambda r: r is not None and r.containers) == (
            PodReport(name, uid, (running,))
        )

        dead = ContainerReport("aggregator", CID, 0, terminated_id=CID)
        await asyncio.to_thread(backend.kubelet.status, name, dead)
        seen = await report_where(
            reports, lambda r: r is not None and r.containers[0].terminated_id
        )
        assert seen == PodReport(name, uid, (dead,))

        restarted = ContainerReport("aggregator", NEXT, 1, last_terminated_id=CID)
        await asyncio.to_thread(backend.kubelet.status, name, restarted)
        seen = await report_where(
            reports, lambda r: r is not None and r.containers[0].container_id == NEXT
        )
        assert seen == PodReport(name, uid, (restarted,))

        await asyncio.to_thread(backend.kubelet.delete, name)
        assert await report_where(reports, lambda r: r is None) is None
    finally:
        await reports.aclose()


async def test_following_a_pod_that_others_change_sees_only_that_pod(backend: Backend) -> None:
    name, other = f"agg-{uuid.uuid4().hex[:8]}", f"agg-{uuid.uuid4().hex[:8]}"
    uid = await asyncio.to_thread(backend.kubelet.create, name)
    reports = backend.pods.follow(name)
    try:
        assert await next_report(reports) == PodReport(name, uid, ())
        await asyncio.to_thread(backend.kubelet.create, other)
        await asyncio.to_thread(
            backend.kubelet.status, other, ContainerReport("aggregator", NEXT, 0)
        )
        mine = ContainerReport("aggregator", CID, 0)
        await asyncio.to_thread(backend.kubelet.status, name, mine)
        seen = await report_where(reports, lambda r: r is not None and r.containers)
        assert seen == PodReport(name, uid, (mine,))
    finally:
        await reports.aclose()
