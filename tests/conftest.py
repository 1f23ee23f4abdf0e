"""What many test modules share: the Hypothesis profile, the fake API server, one trained policy.

* Hypothesis: the ``ci`` profile (derandomized, no deadline, no example database) is loaded
  wherever a skip is not allowed (``CI``, ``AIOPS_REQUIRE_TOOLS``; see fakes/tools.py), so a
  CI run tries the same examples every time and a failure there reproduces; elsewhere the
  ``dev`` profile explores new examples on every run.
* ``apiserver``: the loopback Kubernetes API server over HTTPS with a test CA, bearer tokens
  and, deny by default, the RBAC that ``kubectl kustomize deploy/overlays/enforce`` renders,
  with the namespaces the shipped config names. ``make_apiserver("dry-run")`` gives one with
  the dry-run overlay's RBAC.
* ``tiny_policy``: one short PPO training, run once per session through ``aiops train``,
  shared by every test that needs a trained policy directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.apiserver import FakeApiServer
from fakes.kustomize import LEASE_NS, TARGET_NS, overlay
from fakes.rbac import Rbac
from fakes.tls import TestCA, make_test_ca
from fakes.tools import required
from fakes.training import TrainedPolicy, run_train_cli, train_command, write_rate_series
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, database=None,
                          print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if required() else "dev"))

NAMESPACES = ("default", "kube-system", LEASE_NS, TARGET_NS)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ starts real servers: mark it so."""
    for item in items:
        if "integration" in Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- API server
@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def shipped_rbac() -> dict[str, Rbac]:
    """The RBAC of each overlay, as ``kubectl kustomize`` renders it."""
    return {name: Rbac.from_objects(overlay(name)) for name in ("dry-run", "enforce")}


@pytest.fixture
def make_apiserver(test_ca: TestCA, shipped_rbac: dict[str, Rbac]
                   ) -> Iterator[Callable[..., FakeApiServer]]:
    """Factory: ``make_apiserver(rbac="enforce"|"dry-run"|Rbac, **kw)``, started, stopped
    at the end of the test."""
    servers: list[FakeApiServer] = []

    def make(rbac: str | Rbac = "enforce", **kw: Any) -> FakeApiServer:
        kw.setdefault("namespaces", NAMESPACES)
        server = FakeApiServer(tls=test_ca,
                               rbac=shipped_rbac[rbac] if isinstance(rbac, str) else rbac,
                               **kw)
        servers.append(server.start())
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def apiserver(make_apiserver: Callable[..., FakeApiServer]) -> FakeApiServer:
    return make_apiserver()


# --------------------------------------------------------------------------- PPO
@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory: pytest.TempPathFactory) -> TrainedPolicy:
    import torch

    root = tmp_path_factory.mktemp("tiny-policy")
    csv = write_rate_series(root / "eval.csv")
    argv = train_command(root / "policy", csv)
    # A thread count no default gives, so that "training put it back" cannot pass by chance.
    original = torch.get_num_threads()
    before = original + 2
    torch.set_num_threads(before)
    try:
        summary = run_train_cli(argv)
        after = torch.get_num_threads()
    finally:
        torch.set_num_threads(original)
    meta = json.loads((root / "policy" / "meta.json").read_text())
    return TrainedPolicy(root / "policy", meta, tuple(argv[1:]), summary, csv,
                         (before, after))
