"""The Lease as kubectl shows it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any


def lease_spec(kubectl: Callable[..., subprocess.CompletedProcess[str]], namespace: str,
               name: str) -> dict[str, Any] | None:  # fmt: skip
    shown = kubectl("get", "lease", name, "-n", namespace, "-o", "json")
    if shown.returncode != 0:
        if "NotFound" in shown.stderr:
            return None
        raise AssertionError(f"kubectl get lease failed: {shown.stderr.strip()}")
    spec: dict[str, Any] = json.loads(shown.stdout)["spec"]
    return spec


async def wait_for_holder(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    namespace: str,
    name: str,
    accept: Callable[[str], bool],
    timeout_s: float,
) -> str:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        last = await asyncio.to_thread(lease_spec, kubectl, namespace, name)
        holder = (last or {}).get("holderIdentity") or ""
        if holder and accept(holder):
            return str(holder)
        if time.monotonic() > deadline:
            raise AssertionError(f"lease {namespace}/{name} holder not as expected: {last}")
        await asyncio.sleep(0.2)
