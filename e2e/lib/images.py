"""Builds the engine image from the repository's Dockerfile and loads it into kind.

The image is tagged by content (`<repository>:e2e-<image id>`), so that a rebuilt
image is a new tag and `helm upgrade` really rolls the pods onto it.
"""

from __future__ import annotations

from pathlib import Path

from e2e.lib.progress import step
from testkit.command import run_command
from testkit.paths import REPO_ROOT

BUILD_TIMEOUT = 1800.0


class ImageError(RuntimeError):
    pass


def build_argv(repository: str, tag: str, context: Path = REPO_ROOT) -> list[str]:
    return ["docker", "build", "--tag", f"{repository}:{tag}", "--file", str(context / "Dockerfile"), str(context)]


def inspect_id_argv(image: str) -> list[str]:
    return ["docker", "image", "inspect", "--format", "{{.Id}}", image]


def tag_argv(source: str, target: str) -> list[str]:
    return ["docker", "tag", source, target]


def content_tag(image_id: str) -> str:
    digest = image_id.split(":", 1)[-1].strip()
    if len(digest) < 12:
        raise ImageError(f"unexpected image id {image_id!r}")
    return f"e2e-{digest[:12]}"


def _run(argv: list[str], timeout: float) -> str:
    return run_command(argv, timeout, error=ImageError).stdout


def build(repository: str, base_tag: str, context: Path = REPO_ROOT) -> str:
    """Build, then tag by content; returns the content tag."""
    with step(
        f"building the engine image {repository}:{base_tag} from {context / 'Dockerfile'}",
        waiting_for="docker build",
        timeout=BUILD_TIMEOUT,
    ):
        _run(build_argv(repository, base_tag, context), timeout=BUILD_TIMEOUT - 10)
    tag = content_tag(_run(inspect_id_argv(f"{repository}:{base_tag}"), timeout=60))
    _run(tag_argv(f"{repository}:{base_tag}", f"{repository}:{tag}"), timeout=60)
    return tag


def existing_tag(repository: str, base_tag: str) -> str:
    """The content tag of an image built earlier (for --skip-build)."""
    return content_tag(_run(inspect_id_argv(f"{repository}:{base_tag}"), timeout=60))
