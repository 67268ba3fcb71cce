"""What `deploykit doctor` reports: the machine (deploykit.environment) and every backend's availability here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploykit.backends.base import Availability, availabilities
from deploykit.environment import Environment, probe


@dataclass(frozen=True)
class Machine:
    environment: Environment
    backends: dict[str, Availability]  # BACKENDS name -> availability

    def to_dict(self) -> dict[str, Any]:
        return {**self.environment.to_dict(), "backends": {n: a.to_dict() for n, a in self.backends.items()}}

    def describe(self) -> str:
        env = self.environment
        return "\n".join([
            f"python          {env.python} on {env.platform}",
            f"cpu             {env.cpu}, {env.cores} cores; flags: {', '.join(env.cpu_flags) or 'none of note'}",
            *(f"{name:<15} {version}" for name, version in env.versions.items() if name not in self.backends),
            f"ort providers   {', '.join(env.onnxruntime_providers)}",
            *(f"{name:<15} {state.describe()}" for name, state in self.backends.items()),
            f"cuda devices    {', '.join(env.cuda_devices) or 'none'}",
        ])


def probe_machine() -> Machine:
    return Machine(probe(), availabilities())
