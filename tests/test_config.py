"""Config: typed, strict, errors that name the field and the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aiops.cli import app
from aiops.config import load_config, parse_config
from aiops.errors import InputError

MINIMAL = "targets:\n  - {name: chat, deployment: vllm}\n"


def test_minimal_config_has_safe_defaults() -> None:
    cfg = parse_config(MINIMAL, environ={})
    assert cfg.dry_run is True  # dry-run unless told otherwise
    assert cfg.backend == "kubernetes"
    t = cfg.targets[0]
    assert (t.namespace, t.key, t.policy) == ("default", "default/vllm", "predictive")
    assert cfg.guardrails.fallback == "hold"


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ("targets:\n  - name: a\n    deployment: d\n    max_replica: 4\n",
         "targets.0.max_replica", 4),
        ("targets:\n  - name: a\n    deployment: d\n    min_replicas: 5\n    max_replicas: 2\n",
         "targets.0", 2),
        ("targets:\n  - {name: a, deployment: d}\nguardrails:\n  fallback: fixed\n",
         "guardrails", 3),
        ("targets:\n  - {name: a, deployment: d}\nprometheus:\n  timeout_s: -1\n",
         "prometheus.timeout_s", 4),
        ("targets:\n  - {name: a, deployment: d}\n  - {name: a, deployment: e}\n",
         "targets", 1),
        ("targets: []\n", "targets", 1),
        ("targets:\n  - {name: a, deployment: d}\nleader_election:\n  renew_deadline_s: 30\n",
         "leader_election", 3),
        ("targets:\n  - {name: a, deployment: d}\nkubernetes:\n  kubeconfig: /x\n",
         "kubernetes", 3),
        ("targets:\n  - {name: a, deployment: d, batch_size_via: {arg: x, env: Y}}\n",
         "targets.0.batch_size_via", 2),
    ],
)
def test_errors_name_the_field_and_the_line(text: str, field: str, line: int) -> None:
    with pytest.raises(InputError) as err:
        parse_config(text, source="aiops.yaml", environ={})
    msg = str(err.value)
    assert msg.startswith("aiops.yaml")
    assert field in msg
    assert f"line {line}" in msg


def test_bad_yaml_names_the_line() -> None:
    with pytest.raises(InputError, match=r"x.yaml, line 3: not valid YAML"):
        parse_config("targets:\n  - {name: a\n", source="x.yaml", environ={})


def test_environment_overrides_nested_fields() -> None:
    env = {"AIOPS_DRY_RUN": "false", "AIOPS_PROMETHEUS__URL": "http://prom:9090",
           "AIOPS_GUARDRAILS__MAX_STEP_UP": "2", "OTHER": "x",
           "AIOPS_REQUIRE_PROMETHEUS": "1"}
    cfg = parse_config(MINIMAL, environ=env)
    assert cfg.dry_run is False
    assert cfg.prometheus.url == "http://prom:9090"
    assert cfg.guardrails.max_step_up == 2


def test_masked_hides_credentials_in_urls() -> None:
    cfg = parse_config(MINIMAL + "prometheus:\n  url: https://bob:s3cret@prom:9090/x\n",
                       environ={})
    text = str(cfg.masked())
    assert "s3cret" not in text and "bob" not in text
    assert "https://***@prom:9090/x" in text


def test_validate_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(MINIMAL)
    res = CliRunner().invoke(app, ["validate-config", str(good)])
    assert res.exit_code == 0, res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets:\n  - name: a\n    deployment: d\n    queries: {nope: 'up'}\n")
    res = CliRunner().invoke(app, ["validate-config", str(bad)])
    assert res.exit_code == 2
    assert "nope" in res.output
    res = CliRunner().invoke(app, ["validate-config", str(tmp_path / "missing.yaml")])
    assert res.exit_code == 2 and "missing.yaml" in res.output


def test_example_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    for path in sorted((root / "examples").glob("*.yaml")):
        load_config(path, environ={})


CONFIGMAP = """# the daemon's config
apiVersion: v1
kind: ConfigMap
metadata:
  name: aiops-config
data:
  config.yaml: |
    dry_run: true
    targets:
      - name: a
        deployment: d
        max_replicas: {max_replicas}
"""


def test_a_configmap_manifest_is_checked_as_the_config_it_holds() -> None:
    cfg = parse_config(CONFIGMAP.format(max_replicas=4), source="cm.yaml", environ={})
    assert cfg.targets[0].max_replicas == 4 and cfg.dry_run is True
    # Lines are the manifest's: max_replicas sits on its line 12.
    with pytest.raises(InputError, match=r"cm.yaml, line 12: .*max_replicas.*whole number"):
        parse_config(CONFIGMAP.format(max_replicas="many"), source="cm.yaml", environ={})


def test_a_configmap_without_one_yaml_key_says_what_it_needs() -> None:
    two = CONFIGMAP.format(max_replicas=4) + "  other.yaml: |\n    x: 1\n"
    with pytest.raises(InputError, match=r"ConfigMap.*one \*\.yaml data key.*config.yaml, "
                                         r"other.yaml"):
        parse_config(two, source="cm.yaml", environ={})


def test_the_shipped_configmap_validates_with_its_own_lines() -> None:
    path = Path(__file__).resolve().parents[1] / "deploy" / "base" / "configmap.yaml"
    bad = path.read_text().replace("policy: predictive", "policy: 7", 1)
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if "policy: 7" in text)
    with pytest.raises(InputError, match=rf"line {line}: .*policy"):
        parse_config(bad, source=str(path), environ={})
