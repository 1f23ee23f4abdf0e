"""``kubectl kustomize``: deploy/'s overlays rendered exactly as ``kubectl apply -k`` will.

The tests read the manifests this way (the RBAC the fake API server enforces, the config the
live test runs, every check of tests/test_deploy.py), never through a renderer of their own.
A failing render is a failed test, not a skip: it is what an operator would hit.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import yaml

from .tools import find

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

# The shipped config's target and Lease (deploy/base/configmap.yaml): the only objects the
# shipped RBAC lets the daemon touch. tests/test_deploy.py checks they are still those.
TARGET_NS, TARGET_DEPLOYMENT = "llm", "vllm-llama3-8b"
LEASE_NS, LEASE_NAME = "aiops", "aiops-leader"


class RenderError(Exception):
    """``kubectl kustomize`` refused the directory."""


def kubectl() -> str:
    return find("kubectl", env="AIOPS_KUBECTL_BIN",
                install="scripts/kubectl.sh check (kubectl with kustomize v5)")


@functools.lru_cache(maxsize=16)
def _render(directory: str, tool: str) -> tuple[str, ...]:
    out = subprocess.run([tool, "kustomize", directory], capture_output=True, text=True,
                         timeout=120, check=False)
    if out.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed ({out.returncode}): "
                          f"{out.stderr.strip()[:2000]}")
    return tuple(yaml.safe_dump(d) for d in yaml.safe_load_all(out.stdout) if d)


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects of ``kubectl kustomize directory`` (a fresh copy each call)."""
    return [yaml.safe_load(d) for d in _render(str(directory), kubectl())]


def overlay(name: str) -> list[dict[str, Any]]:
    """``deploy/overlays/<name>``: ``dry-run`` or ``enforce``."""
    return render(DEPLOY / "overlays" / name)


def daemon_config(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    """The daemon's config from rendered objects: the ConfigMap's ``config.yaml`` as a dict,
    and the ``AIOPS_*`` variables the Deployment sets (the enforce overlay's switch)."""
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"
             and o["metadata"]["name"] == "aiops-config"]
    (dep,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "aiops"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", [])
           if e["name"].startswith("AIOPS_") and "value" in e}
    config: dict[str, Any] = yaml.safe_load(cm["data"]["config.yaml"])
    return config, env
