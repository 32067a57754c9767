"""The registry of local servers.

Each component module exposes a module-level ``COMPONENT`` with install / up /
down / status; modules are imported lazily so one broken toolchain does not stop
the others.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast


class Component(Protocol):
    def install(self) -> None: ...
    def up(self) -> None: ...
    def down(self) -> None: ...
    def status(self) -> None: ...


MODULES: dict[str, str] = {
    "kafka": "infra.kafka",
    "hazelcast": "infra.hazelcast",
    "kube": "infra.kube",
    "node": "infra.node",
}


def component(name: str) -> Component:
    return cast(Component, importlib.import_module(MODULES[name]).COMPONENT)
