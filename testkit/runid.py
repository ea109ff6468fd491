"""Run ids: one per suite run, naming its artifacts folder, namespaces and data.

A run id is lowercase letters and digits only, so it fits everywhere it is used:
a Kubernetes namespace (RFC 1123 label), a meter slug (`^[a-z0-9]+(?:_[a-z0-9]+)*$`),
a CloudEvents subject prefix and a folder name. Everything a run creates on a
cluster carries the label `RUN_LABEL=<run id>`, so diagnostics and clean-up find it.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from dataclasses import dataclass

_VALID = re.compile(r"^[a-z][a-z0-9]{3,23}$")
RUN_LABEL = "bp-openmeter.e2e/run"


@dataclass(frozen=True)
class RunId:
    value: str

    def __post_init__(self) -> None:
        if not _VALID.match(self.value):
            raise ValueError(f"run id {self.value!r}: use 4-24 lowercase letters and digits, starting with a letter")

    @classmethod
    def new(cls, now: float | None = None) -> "RunId":
        stamp = time.strftime("%m%d%H%M%S", time.gmtime(now if now is not None else time.time()))
        return cls(f"r{stamp}{secrets.token_hex(2)}")

    @classmethod
    def from_env_or_new(cls) -> "RunId":
        given = os.environ.get("BPOM_RUN_ID")
        return cls(given) if given else cls.new()

    def namespace(self, purpose: str) -> str:
        """A namespace for one purpose of this run, e.g. 'bpom-obs-r1126231500ab12'."""
        name = f"bpom-{purpose}-{self.value}"
        if len(name) > 63 or not re.match(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", name):
            raise ValueError(f"{name!r} is not a valid namespace name")
        return name

    def labels(self) -> dict[str, str]:
        """The label every object of this run carries."""
        return run_labels(self.value)

    def selector(self) -> str:
        """A label selector for every object of this run."""
        return f"{RUN_LABEL}={self.value}"

    def slug(self, base: str) -> str:
        """A meter slug unique to this run."""
        slug = f"{base}_{self.value}"
        if len(slug) > 64:
            raise ValueError(f"slug {slug!r} is longer than 64 characters")
        return slug

    def __str__(self) -> str:
        return self.value


def run_labels(run_id: str) -> dict[str, str]:
    return {RUN_LABEL: run_id}
