"""A new user's first pass over every command: each bad input is one `error:` line, exit 2.

Every case a first-use review found (a traceback, a hang, a silent acceptance) has a row
here: the command, the exit code and the key words of the message. The files a user gets
wrong most (empty, header only, wrong columns, unsorted, binary, a folder) are checked for
every command that reads one, so the cases that already worked keep working.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aiops.cli import app

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000

SIM_CONFIG = """\
backend: sim
dry_run: false
sim: {workload: "synthetic:steady", seed: 0}
daemon: {interval_s: 15, http_port: 0, log_format: text}
leader_election: {enabled: false}
forecast: {model: naive}
targets:
  - name: chat
    deployment: vllm
    profile: llama3-8b-a100
    max_replicas: 8
    policy: predictive
"""

# The shipped ConfigMap's essentials: a config written for a pod.
POD_CONFIG = """\
backend: kubernetes
prometheus: {url: "http://prometheus-operated.monitoring.svc:9090"}
kubernetes: {in_cluster: true}
grafana:
  url: http://grafana.monitoring.svc:80
  token_file: /var/run/secrets/aiops/grafana/token
daemon: {http_port: 0}
targets:
  - {name: llama, namespace: llm, deployment: vllm-llama3-8b}
"""


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_input_error(code: int, output: str, *words: str) -> None:
    """Exit 2, exactly one `error:` line holding every key word, no traceback."""
    assert code == 2, output
    errors = error_lines(output)
    assert len(errors) == 1, output
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "Traceback" not in output


@pytest.fixture(autouse=True)
def _outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)


# --------------------------------------------------------------------------- tracebacks
@pytest.mark.parametrize(("interval", "words"), [
    ("0", ("--interval", "must be > 0")),
    ("-15", ("--interval", "not a duration")),
    ("soon", ("--interval", "not a duration", "15m")),
])
def test_simulate_interval_must_be_a_positive_duration(interval: str,
                                                       words: tuple[str, ...]) -> None:
    code, out = invoke("simulate", "--workload", "synthetic:steady", "--duration", "10m",
                       "--interval", interval)
    assert_input_error(code, out, *words)


def test_simulate_checks_the_json_path_before_the_replay(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    from aiops.sim import runner

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the replay started before the output path was checked")

    monkeypatch.setattr(runner, "compare_policies", never)
    code, out = invoke("simulate", "--workload", "synthetic:steady", "--duration", "10m",
                       "--json", str(tmp_path / "no" / "such" / "x.json"))
    assert_input_error(code, out, "--json", "does not exist")
    code, out = invoke("simulate", "--workload", "synthetic:steady", "--duration", "10m",
                       "--json", str(tmp_path))
    assert_input_error(code, out, "--json", "is a folder")


def test_train_output_that_is_a_file_is_refused_before_training(tmp_path: Path) -> None:
    existing = write(tmp_path / "existing", "x")
    code, out = invoke("train", "--timesteps", "1000", "--output", str(existing))
    assert_input_error(code, out, "--output", "a file of that name exists")


@pytest.mark.parametrize("command", [["validate-config"], ["run", "--config"]])
def test_a_binary_config_is_not_text(tmp_path: Path, command: list[str]) -> None:
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"targets:\n\xc4\x9f\xff\xfe\x00garbage")
    code, out = invoke(*command, str(binary))
    assert_input_error(code, out, "bin.yaml", "line 2", "not a text file", "UTF-8")


def test_run_outside_a_cluster_says_to_use_a_kubeconfig(tmp_path: Path) -> None:
    cfg = write(tmp_path / "pod.yaml", POD_CONFIG)
    code, out = invoke("run", "--config", str(cfg))
    assert_input_error(code, out, "kubernetes.in_cluster (line 3)", "not in a Kubernetes pod",
                       "in_cluster: false", "kubernetes.kubeconfig")
    assert "starting" not in out  # nothing started


# --------------------------------------------------------------------------- a hang
@pytest.mark.parametrize("every", ["0", "-1"])
def test_train_eval_every_below_one_is_refused(tmp_path: Path, every: str) -> None:
    code, out = invoke("train", "--timesteps", "1000", "--output", str(tmp_path / "x"),
                       "--eval-every", every)
    assert_input_error(code, out, "--eval-every", ">= 1")
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- silent acceptance
def test_run_log_format_must_be_json_or_text(tmp_path: Path) -> None:
    cfg = write(tmp_path / "sim.yaml", SIM_CONFIG)
    code, out = invoke("run", "--config", str(cfg), "--duration", "1m", "--log-format", "xml")
    assert_input_error(code, out, "--log-format", "'xml'", "json or text")


def test_dry_run_and_enforce_together_are_an_error(tmp_path: Path) -> None:
    cfg = write(tmp_path / "sim.yaml", SIM_CONFIG)
    for order in (["--dry-run", "--enforce"], ["--enforce", "--dry-run"]):
        code, out = invoke("run", "--config", str(cfg), "--duration", "1m", *order)
        assert_input_error(code, out, "--dry-run", "--enforce", "contradict")


def test_recommend_refuses_an_unknown_forecaster_before_the_replay(tmp_path: Path) -> None:
    out_html = tmp_path / "r.html"
    code, out = invoke("recommend", "--workload", "synthetic:steady", "--forecast-model",
                       "bogus", "--output", str(out_html))
    assert_input_error(code, out, "--forecast-model", "'bogus'", "unknown forecaster", "auto")
    assert not out_html.exists()
    cfg = write(tmp_path / "sim.yaml", SIM_CONFIG)
    code, out = invoke("recommend", "--config", str(cfg), "--forecast-model", "bogus",
                       "--output", str(out_html))
    assert_input_error(code, out, "forecast.model", "unknown forecaster")


def test_recommend_honours_the_sim_backend(tmp_path: Path) -> None:
    cfg = write(tmp_path / "sim.yaml", SIM_CONFIG)
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    code, out = invoke("recommend", "--config", str(cfg), "--since", "20m", "--output",
                       str(html), "--json", str(js), "--jobs", "1")
    assert code == 0, out
    assert "localhost:9090" not in out and "urllib3" not in out
    data = json.loads(js.read_text())
    assert data["mode"] == "sim"
    (target,) = data["targets"]
    assert target["status"] == "ok" and target["span_s"] == pytest.approx(1200, abs=60)
    assert any("synthetic:steady" in n and "seed 0" in n for n in target["notes"])
    assert data["summary"]["text"] == target["recommendation"]["text"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


def test_recommend_never_exits_0_when_nothing_was_evaluated(tmp_path: Path) -> None:
    cfg = write(tmp_path / "prom.yaml", POD_CONFIG.replace(
        "http://prometheus-operated.monitoring.svc:9090", f"http://127.0.0.1:{free_port()}")
        + "forecast: {model: naive}\n")
    cfg.write_text(cfg.read_text().replace("{url: ", "{retries: 0, timeout_s: 2, url: ", 1))
    html = tmp_path / "r.html"
    code, out = invoke("recommend", "--config", str(cfg), "--since", "1h", "--output",
                       str(html))
    assert code == 1, out
    assert "no target could be evaluated" in error_lines(out)[-1]
    assert html.exists()  # the report says why
    assert out.count("warning: target llama") == 1
    assert "query_range" not in out and "HTTPConnectionPool" not in out


@pytest.mark.parametrize(("edit", "words"), [
    (("policy: predictive", "policy: magic"),
     ("targets[0].policy (line 12)", "unknown policy 'magic'", "predictive")),
    (("policy: predictive", "policy: 'hpa:target=lots'"),
     ("targets[0].policy (line 12)", "target='lots'")),
    (("profile: llama3-8b-a100", "profile: nosuch"),
     ("targets[0].profile (line 10)", "unknown profile 'nosuch'")),
    (('workload: "synthetic:steady"', "workload: /no/such/trace.csv"),
     ("sim.workload (line 3)", "no such file")),
    (("policy: predictive", "policy: 'ppo:path=/no/such/policy'"),
     ("targets[0].policy (line 12)", "/no/such/policy", "fall back to predictive")),
    (("model: naive", "model: nosuch"), ("forecast.model (line 6)", "unknown forecaster")),
])
def test_validate_config_runs_the_checks_run_runs(tmp_path: Path, edit: tuple[str, str],
                                                  words: tuple[str, ...]) -> None:
    assert edit[0] in SIM_CONFIG
    cfg = write(tmp_path / "c.yaml", SIM_CONFIG.replace(edit[0], edit[1]))
    code, out = invoke("validate-config", str(cfg))
    assert_input_error(code, out, "c.yaml", *words)


@pytest.mark.parametrize(("edit", "words"), [
    (("policy: predictive", "policy: magic"), ("unknown policy 'magic'",)),
    (("profile: llama3-8b-a100", "profile: nosuch"), ("unknown profile 'nosuch'",)),
    (('workload: "synthetic:steady"', "workload: /no/such/trace.csv"),
     ("sim.workload (line 3)", "no such file")),
])
def test_run_refuses_what_validate_config_refuses(tmp_path: Path, edit: tuple[str, str],
                                                  words: tuple[str, ...]) -> None:
    """A typo never changes which policy drives a fleet: run stops before starting."""
    cfg = write(tmp_path / "c.yaml", SIM_CONFIG.replace(edit[0], edit[1]))
    code, out = invoke("run", "--config", str(cfg), "--duration", "1m", "--enforce")
    assert_input_error(code, out, *words)
    assert "starting" not in out and "ENFORCE" not in out


def test_a_missing_ppo_model_still_falls_back_at_run_time(tmp_path: Path) -> None:
    """As designed: a model file lost after validation must not stop the daemon."""
    cfg = write(tmp_path / "c.yaml", SIM_CONFIG.replace(
        "policy: predictive", "policy: 'ppo:path=/no/such/policy'"))
    code, out = invoke("run", "--config", str(cfg), "--duration", "1m")
    assert code == 0, out
    assert "policy fallback to predictive" in out


def test_validate_config_notes_what_only_the_pod_can_check(tmp_path: Path) -> None:
    cfg = write(tmp_path / "pod.yaml", POD_CONFIG)
    code, out = invoke("validate-config", str(cfg))
    assert code == 0, out
    notes = [line for line in out.splitlines() if line.startswith("note: not checked here")]
    assert len(notes) == 2
    assert any("in_cluster" in n for n in notes) and any("token_file" in n for n in notes)
    # Outside a pod, the same config for a workstation is checked here, and fails.
    local = write(tmp_path / "local.yaml", POD_CONFIG.replace(
        "{in_cluster: true}", f"{{in_cluster: false, kubeconfig: {tmp_path / 'none'}}}"))
    code, out = invoke("validate-config", str(local))
    assert_input_error(code, out, "kubernetes.kubeconfig", "grafana.token_file")


def test_forecast_backtest_resamples_an_irregular_series(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    t = T0 + np.cumsum(300 + rng.integers(-40, 41, 600))
    rows = "\n".join(f"{int(ti)},{10 + np.sin(i / 20):.3f}" for i, ti in enumerate(t))
    csv = write(tmp_path / "irregular.csv", "timestamp,value\n" + rows + "\n")
    code, out = invoke("forecast", "backtest", "--input", str(csv), "--model", "naive")
    assert_input_error(code, out, "off the", "give --interval")
    code, out = invoke("forecast", "backtest", "--input", str(csv), "--model", "naive",
                       "--interval", "5m", "--folds", "3")
    assert code == 0, out
    assert "resampled to the 300 s grid" in out


# --------------------------------------------------------------------------- smaller points
def test_a_stray_quote_names_its_own_line(tmp_path: Path) -> None:
    rows = [f"{T0 + 60 * i},{i}" for i in range(60)]
    rows[49] = f'{T0 + 60 * 49},"5'  # line 51 of the file (the header is line 1)
    csv = write(tmp_path / "quote.csv", "timestamp,value\n" + "\n".join(rows) + "\n")
    for cmd in (["simulate", "--policy", "hpa", "--workload"],
                ["forecast", "backtest", "--model", "naive", "--input"]):
        code, out = invoke(*cmd, str(csv))
        assert_input_error(code, out, "quote.csv, line 51", "quote", "never closed")


def test_config_errors_are_one_problem_in_plain_words(tmp_path: Path) -> None:
    cfg = write(tmp_path / "c.yaml", "targets:\n  - name: a\n    deployment: d\n"
                "    max_replicas: many\n")
    code, out = invoke("validate-config", str(cfg))
    assert_input_error(code, out, "targets.0.max_replicas (line 4)",
                       "expected a whole number, got 'many'")
    assert "Tuple should" not in out and "Input should" not in out
    assert out.count("(line") == 1  # no second, spurious error about the list
    cfg = write(tmp_path / "c.yaml", "targets:\n  - {name: a, deployment: d, min_replicas: 5,"
                " max_replicas: 2}\n")
    code, out = invoke("validate-config", str(cfg))
    assert_input_error(code, out, "min_replicas (5) > max_replicas (2)")
    assert "Value error" not in out


def test_usage_errors_are_one_line_too() -> None:
    code, out = invoke("simulate", "--seed", "x")
    assert_input_error(code, out, "--seed", "expected a whole number", "aiops simulate --help")
    assert "╭" not in out
    code, out = invoke("simulate", "--no-such-option")
    assert_input_error(code, out, "No such option: --no-such-option")


def test_version() -> None:
    code, out = invoke("--version")
    assert code == 0
    assert re.fullmatch(r"aiops (\d+\.\d+\S*|unknown)\n", out), out


def all_commands() -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(app)
    out = []
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        if name == "detect":  # the anomaly-detection command documents itself separately
            continue
        subs = getattr(cmd, "commands", None)
        if subs:
            out.extend([name, sub] for sub in subs if sub != "models")
        else:
            out.append([name])
    return out


@pytest.mark.parametrize("command", all_commands(), ids=" ".join)
def test_every_command_shows_examples(command: list[str]) -> None:
    code, out = invoke(*command, "--help")
    assert code == 0, out
    assert "Examples:" in out
    assert f"aiops {' '.join(command)} " in out.split("Examples:", 1)[1]


def test_one_vocabulary_for_time_spans(tmp_path: Path) -> None:
    """Durations wherever a time span is meant: the same "30s" works in every command."""
    code, out = invoke("simulate", "--workload", "synthetic:steady", "--duration", "5m",
                       "--interval", "30s", "--policy", "hpa")
    assert code == 0, out
    html = tmp_path / "r.html"
    code, out = invoke("recommend", "--workload", "synthetic:steady", "--interval", "30s",
                       "--forecast-model", "naive", "--max-replicas", "8", "--jobs", "1",
                       "--output", str(html), "--policy", "hpa")
    assert code == 0, out
    for cmd in (["simulate"], ["recommend"], ["train"]):
        code, text = invoke(*cmd, "--help")
        assert "Multiply the load by this factor" in " ".join(text.replace("│", " ").split())


def test_docs_name_no_issue_and_no_path_outside_the_repository() -> None:
    texts = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    for path, text in texts.items():
        assert not re.search(r"\bissue[- ]\d", text, flags=re.I), path
        assert "../shared" not in text and "/work/" not in text, path
    assert "docs/architecture.md" in texts[ROOT / "README.md"]


# --------------------------------------------------------------------------- bad data files
def _series(n: int, bad_at: int | None = None) -> bytes:
    rows = [f"{T0 + 60 * i},{'nan' if i == bad_at else 1}" for i in range(n)]
    return ("timestamp,value\n" + "\n".join(rows) + "\n").encode()


BAD_FILES: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "empty.csv": (b"", ("line 1", "empty file")),
    "header.csv": (b"timestamp,value\n", ("line 2", "header but no data rows")),
    "columns.csv": (b"a,b\n1,2\n", ("line 1", "unrecognised header")),
    "unsorted.csv": (f"timestamp,value\n{T0 + 60},1\n{T0},2\n{T0 + 120},3\n".encode(),
                     ("line 3", "out of order")),
    "nan.csv": (_series(5, bad_at=2), ("line 4", "not finite")),
    "binary.csv": (bytes(range(200, 256)) * 4, ("not UTF-8",)),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
@pytest.mark.parametrize("command", [
    ["simulate", "--policy", "hpa", "--workload"],
    ["recommend", "--output", "{tmp}/r.html", "--workload"],
    ["forecast", "backtest", "--model", "naive", "--input"],
], ids=lambda c: c[0] if c[0] != "forecast" else "forecast-backtest")
def test_bad_data_files_are_named_with_their_line(tmp_path: Path, name: str,
                                                  command: list[str]) -> None:
    data, words = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, out = invoke(*args, str(path))
    assert_input_error(code, out, name, *words)


@pytest.mark.parametrize("command", [
    ["simulate", "--workload"], ["recommend", "--output", "{tmp}/r.html", "--workload"],
    ["forecast", "backtest", "--input"],
], ids=lambda c: c[0])
def test_a_folder_is_not_a_data_file(tmp_path: Path, command: list[str]) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    code, out = invoke(*args, str(tmp_path))
    assert_input_error(code, out, str(tmp_path), "directory")
