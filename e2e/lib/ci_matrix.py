"""CI's kind matrix from fixtures/platform.yaml: every backend on every node image, and which cells gate.

    python -m e2e.lib.ci_matrix              # prints `matrix=<json>` for $GITHUB_OUTPUT
    python -m e2e.lib.ci_matrix --sysctl     # the inotify settings kind needs, for `sudo sysctl`

A cell gates a release when its backend is in `ci.gatingBackends` (a backend whose
cells have all passed once, see fixtures/platform.yaml); the release gate runs the
other cells too, with continue-on-error, so that they report without gating.
"""

from __future__ import annotations

import json
import sys

from testkit.platform import Platform, platform


def matrix(of: Platform) -> dict:
    unknown = set(of.gating_backends) - set(of.blueprint.profiles)
    if unknown:
        raise ValueError(f"ci.gatingBackends names backends without a profile: {sorted(unknown)}")
    return {
        "include": [
            {"backend": backend, "kubernetes": node, "gating": backend in of.gating_backends}
            for backend in sorted(of.blueprint.profiles)
            for node in sorted(of.node_images)
        ]
    }


def sysctl(of: Platform) -> str:
    return (
        f"fs.inotify.max_user_watches={of.host.max_user_watches} "
        f"fs.inotify.max_user_instances={of.host.max_user_instances}"
    )


if __name__ == "__main__":
    if "--sysctl" in sys.argv[1:]:
        print(sysctl(platform()))
    else:
        print(f"matrix={json.dumps(matrix(platform()), separators=(',', ':'))}")
