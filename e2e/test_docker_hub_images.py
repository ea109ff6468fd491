"""The Docker Hub pulls the prerequisite check counts are the ones the cluster made (e2e/lib/docker_hub.py)."""

from __future__ import annotations

import pytest

from e2e.lib.docker_hub import unrecorded_pulls

pytestmark = pytest.mark.kind_only


def test_every_docker_hub_image_running_on_the_cluster_is_counted(target, platform_config, request):
    pods = target.kubectl.json("get", "pods", "--all-namespaces")["items"]
    problems = unrecorded_pulls(pods, platform_config, request.config.getoption("--backend"))
    assert not problems, "the prerequisite check undercounts Docker Hub pulls:\n" + "\n".join(problems)
