"""Forecasting: series preparation, every model's contract, backtests, artifacts, auto.

All data is generated here (a fresh clone has no ../shared). Models are made small (tiny
LSTM, few epochs, short series) so the file runs in seconds; quality floors use a
synthetic series with a clear daily cycle, where every real model must beat ``naive``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.forecasters import Offset, registered
from importcheck import heavy_imports

from aiops.errors import DataQualityError, InputError
from aiops.forecast.auto import AutoForecaster
from aiops.forecast.backtest import make_origins, mase_scale, rolling_origin
from aiops.forecast.base import (
    QUANTILES,
    BaseForecaster,
    load_forecaster,
    make_forecaster,
    make_from_spec,
    parse_model_spec,
)
from aiops.forecast.season import detect_season
from aiops.forecast.series import (
    RegularSeries,
    aggregate_requests,
    load_series,
    parse_interval,
    regularize,
)
from aiops.types import FloatArray

HOUR = 3600.0
T0 = 1_700_000_000.0 - (1_700_000_000.0 % 86400)  # a UTC midnight

# Small, fast settings for the heavy models (the contract is the same as the defaults').
TINY_LSTM: dict[str, Any] = {"window": 24, "hidden": 8, "horizon": 6, "epochs": 8,
                             "max_samples": 400, "batch_size": 64, "patience": 3}
FAST_AUTO: dict[str, Any] = {"candidates": "naive+seasonal_naive+lstm", "horizon": 6,
                             "folds": 10, "params": {"lstm": TINY_LSTM}}


def seasonal(n: int = 24 * 21, *, noise: float = 4.0, seed: int = 0) -> RegularSeries:
    """Hourly load with a strong daily cycle and a little noise (three weeks by default)."""
    rng = np.random.default_rng(seed)
    t = T0 + HOUR * np.arange(n, dtype=np.float64)
    hour = (t % 86400) / HOUR
    y = 100 + 40 * np.sin(2 * np.pi * hour / 24) + rng.normal(0, noise, n)
    return RegularSeries("seasonal", t, y, HOUR)


def random_walk(n: int = 400, seed: int = 1) -> RegularSeries:
    rng = np.random.default_rng(seed)
    t = T0 + HOUR * np.arange(n, dtype=np.float64)
    return RegularSeries("walk", t, 500 + np.cumsum(rng.normal(0, 5, n)), HOUR)


SMALL_STATS: dict[str, Any] = {"max_train": 150}


def build(name: str) -> BaseForecaster:
    params: Mapping[str, Any] = {"lstm": TINY_LSTM, "auto": FAST_AUTO, "ets": SMALL_STATS,
                                 "theta": SMALL_STATS, "mstl": SMALL_STATS}.get(name, {})
    return make_forecaster(name, **params)


def same_forecast(a: Any, b: Any) -> bool:
    return bool(
        a.start == b.start and a.step == b.step and np.array_equal(a.mean, b.mean)
        and all(np.array_equal(a.quantile(q), b.quantile(q)) for q in QUANTILES))


# ------------------------------------------------------------------------------ series
class TestSeries:
    def test_small_gap_is_filled_and_said(self) -> None:
        t = T0 + 300.0 * np.arange(50)
        y = np.arange(50, dtype=float)
        keep = np.ones(50, bool)
        keep[[10, 11, 30]] = False
        s = regularize(t[keep], y[keep], name="x")
        assert len(s) == 50 and s.filled == 3
        np.testing.assert_allclose(s.values, y)  # linear data: interpolation is exact
        assert any("filled 3" in note for note in s.notes)

    def test_large_gap_is_an_error_naming_it(self) -> None:
        t = T0 + 300.0 * np.arange(60)
        keep = np.ones(60, bool)
        keep[20:30] = False
        with pytest.raises(DataQualityError, match="gap of 10 steps"):
            regularize(t[keep], np.ones(keep.sum()), max_gap_steps=6)

    def test_nan_runs(self) -> None:
        t = T0 + 60.0 * np.arange(40)
        y = np.linspace(1, 40, 40)
        y[5:7] = np.nan
        s = regularize(t, y)
        assert np.isfinite(s.values).all() and s.filled == 2
        y[10:20] = np.nan
        with pytest.raises(DataQualityError, match="gap"):
            regularize(t, y)

    def test_trailing_nan_dropped_not_invented(self) -> None:
        t = T0 + 60.0 * np.arange(20)
        y = np.ones(20)
        y[-2:] = np.nan
        s = regularize(t, y)
        assert len(s) == 18 and "trailing" in s.notes[0]

    @pytest.mark.parametrize(("ts", "ys", "match"), [
        (np.arange(5.0), np.ones(5), "at least"),
        (np.array([0.0, 60, 60, 120, 180, 240, 300, 360, 420]), np.ones(9), "duplicate"),
        (np.arange(10) * 60.0, np.r_[np.ones(9), np.inf], "infinite"),
    ])
    def test_bad_series(self, ts: FloatArray, ys: FloatArray, match: str) -> None:
        with pytest.raises(DataQualityError, match=match):
            regularize(ts, ys)

    def test_fit_refuses_irregular_or_nan(self) -> None:
        t = T0 + HOUR * np.arange(30)
        with pytest.raises(DataQualityError):
            make_forecaster("naive").fit(np.r_[t[:10], t[11:]], np.ones(29))
        y = np.ones(30)
        y[4] = np.nan
        with pytest.raises(DataQualityError):
            make_forecaster("naive").fit(t, y)

    def test_aggregate_requests_to_rate(self) -> None:
        arrivals = np.r_[np.full(120, 0.5), np.full(60, 70.0), [125.0]] + T0
        s = aggregate_requests(arrivals, interval=60.0, min_length=2)
        # bins start at the first request (0.5 s); the partial bin holding 125 s is dropped
        assert len(s) == 2
        np.testing.assert_allclose(s.values, [120 / 60, 60 / 60])

    def test_load_csvs(self, tmp_path: Path) -> None:
        p = tmp_path / "s.csv"
        rows = [f"2024-01-01 00:{m:02d}:00,{m}" for m in range(0, 60, 5) if m != 25]
        p.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
        s = load_series(str(p))
        assert s.interval == 300 and len(s) == 12 and s.filled == 1
        tr = tmp_path / "t.csv"
        lines = [f"2024-01-01 00:{i // 6:02d}:{(i % 6) * 10:02d}.5,10,5" for i in range(60)]
        tr.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(lines) + "\n")
        with pytest.raises(InputError, match="interval"):
            load_series(str(tr))
        s2 = load_series(str(tr), interval=60.0)
        np.testing.assert_allclose(s2.values, 0.1)  # 6 requests per minute

    def test_parse_interval(self) -> None:
        assert parse_interval("60s") == 60 and parse_interval("5m") == 300
        assert parse_interval("1h") == 3600 and parse_interval("90") == 90
        with pytest.raises(InputError):
            parse_interval("soon")


# ------------------------------------------------------------------------------ models
ALL_MODELS = ["naive", "seasonal_naive", "ets", "theta", "mstl", "prophet", "lstm", "auto"]


@pytest.fixture(scope="module")
def series() -> RegularSeries:
    return seasonal()


@pytest.fixture(scope="module")
def fitted(series: RegularSeries) -> dict[str, BaseForecaster]:
    n = len(series) - 48
    return {m: build(m).fit(series.timestamps[:n], series.values[:n]) for m in ALL_MODELS}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forecast_contract(name: str, fitted: dict[str, BaseForecaster],
                           series: RegularSeries) -> None:
    m = fitted[name]
    n = len(series) - 48
    fc = m.predict(9)
    assert fc.horizon == 9 and fc.start == series.timestamps[n] and fc.step == HOUR
    lo, med, hi = (fc.quantile(q) for q in QUANTILES)
    assert np.isfinite(fc.mean).all()
    assert (lo <= med).all() and (med <= hi).all()
    assert (hi > lo).any()  # a real band, not a point
    assert fc.model.startswith(name)


def test_hyperparameters_checked_in_init() -> None:
    with pytest.raises(InputError, match="window"):
        make_forecaster("lstm", window=1)
    with pytest.raises(InputError, match="season"):
        make_forecaster("seasonal_naive", season=0)
    with pytest.raises(InputError, match="unknown forecaster"):
        make_forecaster("crystal_ball")
    with pytest.raises(InputError):
        make_forecaster("naive", colour="blue")
    assert parse_model_spec("lstm:window=96,lr=0.01,conformal=false") == (
        "lstm", {"window": 96, "lr": 0.01, "conformal": False})


def test_update_equals_fit_for_baselines(series: RegularSeries) -> None:
    """update is the cheap path; for parameter-free models it must equal a refit."""
    n = len(series) - 30
    for name in ("naive", "seasonal_naive"):
        a = build(name).fit(series.timestamps[:n], series.values[:n])
        a.update(series.timestamps[n:], series.values[n:])
        b = build(name).fit(series.timestamps, series.values)
        assert same_forecast(a.predict(6), b.predict(6))


def test_update_must_continue_the_series(fitted: dict[str, BaseForecaster],
                                         series: RegularSeries) -> None:
    m = build("naive").fit(series.timestamps[:100], series.values[:100])
    with pytest.raises(DataQualityError, match="continue"):
        m.update(series.timestamps[101:103], series.values[101:103])


def test_season_detection(series: RegularSeries) -> None:
    assert detect_season(series.values, HOUR).season == 24
    assert detect_season(random_walk().values, HOUR).season == 1


# ----------------------------------------------------------------------- no look-ahead
@pytest.mark.parametrize("name", ["naive", "seasonal_naive", "theta", "lstm", "auto"])
def test_no_look_ahead(name: str) -> None:
    """Changing values after index j changes no forecast made at an origin <= j."""
    a = seasonal(24 * 14)
    j = len(a) - 20
    changed = a.values.copy()
    changed[j:] = changed[j:] * 3 + 50
    b = RegularSeries("changed", a.timestamps, changed, a.interval)
    kw: dict[str, Any] = {"folds": 8, "test_fraction": 0.25, "keep_forecasts": True}
    ra = rolling_origin(lambda: build(name), a, [6], **kw)
    rb = rolling_origin(lambda: build(name), b, [6], **kw)
    assert ra.error is None and len(ra.forecasts) == len(rb.forecasts) == 8
    before = [i for i, f in enumerate(ra.forecasts) if f.start <= a.timestamps[j]]
    after = [i for i, f in enumerate(ra.forecasts) if f.start > a.timestamps[j]]
    assert before and after
    for i in before:
        assert same_forecast(ra.forecasts[i], rb.forecasts[i])
    # ... and the test can see a difference when there is one.
    assert not all(same_forecast(ra.forecasts[i], rb.forecasts[i]) for i in after)


# ---------------------------------------------------------------------------- artifacts
@pytest.mark.parametrize("name", ALL_MODELS)
def test_save_load_round_trip(name: str, fitted: dict[str, BaseForecaster],
                              series: RegularSeries, tmp_path: Path) -> None:
    m = fitted[name]
    meta_path = m.save(tmp_path / name, backtest={"mase": 0.5})
    meta = json.loads(meta_path.read_text())
    assert meta["model"] == name and meta["backtest"] == {"mase": 0.5}
    assert meta["training"]["interval_s"] == HOUR and meta["versions"]["numpy"]
    loaded = load_forecaster(tmp_path / name)
    assert type(loaded) is type(m)
    assert same_forecast(m.predict(8), loaded.predict(8))
    # and they stay identical after the same update
    n = len(series) - 48
    ts, ys = series.timestamps[n:n + 5], series.values[n:n + 5]
    assert same_forecast(build_copy(m, tmp_path / name).update(ts, ys).predict(8),
                         loaded.update(ts, ys).predict(8))


def build_copy(m: BaseForecaster, path: Path) -> BaseForecaster:
    """A second, independent copy of a fitted model (via its artifact)."""
    return load_forecaster(path)


def test_incompatible_or_tampered_artifact(fitted: dict[str, BaseForecaster],
                                           tmp_path: Path) -> None:
    d = tmp_path / "lstm"
    fitted["lstm"].save(d)
    meta = json.loads((d / "meta.json").read_text())
    meta["versions"]["torch"] = "1.0.0"
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match="torch"):
        load_forecaster(d)
    d2 = tmp_path / "naive"
    fitted["naive"].save(d2)
    np.save(d2 / "history.npy", np.zeros(3))
    with pytest.raises(InputError, match="sha256"):
        load_forecaster(d2)
    meta2 = json.loads((d2 / "meta.json").read_text())
    meta2["format"] = 99
    (d2 / "meta.json").write_text(json.dumps(meta2))
    with pytest.raises(InputError, match="format"):
        load_forecaster(d2)
    with pytest.raises(InputError, match=r"meta\.json"):
        load_forecaster(tmp_path / "nothing-here")


# ------------------------------------------------------------------ edge-case series
@pytest.mark.parametrize("name", ["naive", "seasonal_naive", "lstm", "auto", "ets", "prophet"])
def test_constant_series(name: str) -> None:
    t = T0 + HOUR * np.arange(24 * 10)
    m = build(name).fit(t, np.full(len(t), 7.0))
    fc = m.predict(6)
    for q in QUANTILES:
        np.testing.assert_allclose(fc.quantile(q), 7.0, atol=0.5)


def test_constant_series_backtest_reports_no_mase() -> None:
    t = T0 + HOUR * np.arange(100, dtype=np.float64)
    r = rolling_origin(lambda: build("naive"), RegularSeries("c", t, np.full(100, 3.0), HOUR),
                       [1, 6], folds=5)
    assert math.isnan(r.horizons[1].mase) and r.horizons[1].coverage_80 == 1.0
    assert r.as_dict(1)["mase"] is None  # JSON has null, not NaN


def test_short_series() -> None:
    s = seasonal(30)
    with pytest.raises(DataQualityError, match="at least"):
        build("lstm").fit(s.timestamps, s.values)
    with pytest.raises(DataQualityError, match="at least"):
        build("naive").fit(s.timestamps[:5], s.values[:5])
    auto = AutoForecaster(horizon=12).fit(s.timestamps[:20], s.values[:20])
    assert list(auto.members_) == ["naive"] and "fell back to naive" in auto.reason_
    assert auto.predict(3).horizon == 3
    # A model that cannot run is skipped with its reason, not fatal.
    auto2 = AutoForecaster(**{**FAST_AUTO, "params": {"lstm": {**TINY_LSTM, "window": 200}}})
    auto2.fit(s.timestamps, s.values)
    assert "lstm" in auto2.excluded_ and "at least" in auto2.excluded_["lstm"]


# ------------------------------------------------------------------------ quality floor
@pytest.mark.parametrize("name", ["seasonal_naive", "ets", "theta", "mstl", "prophet", "lstm",
                                  "auto"])
def test_quality_floor_beats_naive_on_seasonal_series(name: str) -> None:
    s = seasonal(24 * 21, noise=3.0, seed=5)
    kw: dict[str, Any] = {"folds": 12, "test_fraction": 0.25}
    naive = rolling_origin(lambda: build("naive"), s, [6], **kw).horizons[6].mase
    model = rolling_origin(lambda: build(name), s, [6], **kw)
    assert model.error is None
    assert model.horizons[6].mase < 0.8 * naive, (name, model.horizons[6].mase, naive)


# ------------------------------------------------------------------------------- auto


@pytest.fixture
def offset_model(monkeypatch: pytest.MonkeyPatch) -> None:
    registered(monkeypatch, Offset)


def test_test_models_are_registered_only_inside_their_tests() -> None:
    from aiops.forecast.base import available_forecasters

    # every test module is imported by now, those defining test models included
    assert [n for n in available_forecasters() if "test" in n] == []


@pytest.mark.usefixtures("offset_model")
@pytest.mark.parametrize("make_series", [seasonal, random_walk])
def test_auto_never_uses_a_model_that_lost(make_series: Any) -> None:
    s = make_series()
    auto = AutoForecaster(candidates=["naive", "seasonal_naive", "theta", Offset.name],
                          horizon=6, folds=20).fit(s.timestamps, s.values)
    base = auto.baseline_
    assert Offset.name not in auto.members_
    assert auto.scores_[Offset.name] > auto.scores_[base]
    for m in auto.members_:
        assert m == base or auto.scores_[m] < auto.scores_[base], auto.selection()


@pytest.mark.usefixtures("offset_model")
def test_auto_falls_back_with_reason_when_nothing_wins() -> None:
    s = random_walk()
    auto = AutoForecaster(candidates=["naive", "seasonal_naive", Offset.name], horizon=6,
                          folds=10).fit(s.timestamps, s.values)
    assert list(auto.members_) == [auto.baseline_]
    assert auto.reason_.startswith(f"fell back to {auto.baseline_}: no candidate beat")
    assert auto.predict(2).model == f"auto({auto.baseline_})"


def test_auto_too_short_to_backtest_picks_the_baseline_by_in_sample_error() -> None:
    t = T0 + 60.0 * np.arange(25, dtype=np.float64)
    y = np.tile([1.0, 5.0, 2.0, 8.0, 3.0], 5)
    auto = AutoForecaster(horizon=6).fit(t, y)
    assert list(auto.members_) == ["seasonal_naive"]
    assert "too few" in auto.reason_ and "in-sample MAE" in auto.reason_
    np.testing.assert_allclose(auto.predict(5).mean, [1.0, 5.0, 2.0, 8.0, 3.0])


def test_auto_on_seasonal_series_uses_a_seasonal_model(series: RegularSeries) -> None:
    auto = AutoForecaster(**FAST_AUTO).fit(series.timestamps, series.values)
    assert "naive" not in auto.members_
    assert set(auto.members_) & {"seasonal_naive", "lstm"}


# -------------------------------------------------------------------------- backtest
def test_backtest_metrics_on_a_known_case() -> None:
    """naive on a line with slope 1: every h-step error is h, MASE = mean(1..H)/1."""
    t = T0 + HOUR * np.arange(200, dtype=np.float64)
    s = RegularSeries("line", t, np.arange(200.0), HOUR)
    r = rolling_origin(lambda: build("naive"), s, [1, 4], folds=10, season=1)
    assert r.horizons[1].mase == pytest.approx(1.0)
    assert r.horizons[4].mase == pytest.approx(2.5)
    # naive's residual band learns the drift exactly: a zero-width band on the truth
    assert r.horizons[4].coverage_80 == 1.0 and r.horizons[4].pinball == 0.0
    assert mase_scale(np.arange(10.0), 1) == 1.0
    assert make_origins(100, 5, folds=4, test_fraction=0.2) == [80, 85, 90, 95]


# ------------------------------------------------------------------------------- CLI
def _cli_app() -> Any:
    import typer

    from aiops.forecast.cli import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, so "forecast" is a subcommand
        pass

    register(app)
    return app


def test_cli_backtest_fit_predict(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    s = seasonal(24 * 10)
    csv = tmp_path / "load.csv"
    stamps = np.datetime_as_string(s.timestamps.astype("int64").astype("datetime64[s]"))
    csv.write_text("timestamp,value\n" + "\n".join(
        f"{a.replace('T', ' ')},{v:.3f}" for a, v in zip(stamps, s.values, strict=True)))
    runner, app = CliRunner(), _cli_app()
    out = tmp_path / "bt.json"
    res = runner.invoke(app, ["forecast", "backtest", "--input", str(csv), "--model",
                              "naive,seasonal_naive", "--horizon", "3", "--folds", "5",
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    payload = json.loads(out.read_text())
    assert payload["series"] == "load" and payload["horizon"] == 3
    assert set(payload["results"]["naive"]) >= {"mase", "smape", "coverage_80", "pinball",
                                                "fit_seconds", "predict_seconds"}
    res = runner.invoke(app, ["forecast", "fit", "--input", str(csv), "--model",
                              "seasonal_naive", "--output", str(tmp_path / "m"),
                              "--folds", "4", "--horizon", "3"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "m" / "meta.json").read_text())["backtest"]["mase"] > 0
    res = runner.invoke(app, ["forecast", "predict", "--model-dir", str(tmp_path / "m"),
                              "--input", str(csv), "--horizon", "4", "--json",
                              str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    assert len(json.loads((tmp_path / "p.json").read_text())["forecast"]) == 4


@pytest.mark.parametrize(("args", "says"), [
    (["backtest", "--input", "/nonexistent.csv"], "error: /nonexistent.csv: no such file"),
    (["backtest", "--input", "{csv}", "--model", "crystal_ball"],
     "error: unknown forecaster 'crystal_ball'; known: auto, ets"),
    (["backtest", "--input", "{gappy}"], "gappy.csv: series 'gappy': gap of 16 steps"),
    (["predict", "--model-dir", "/nonexistent", "--input", "{csv}"],
     "error: /nonexistent: not a forecaster artifact: no meta.json"),
])
def test_cli_bad_input_exits_2(args: list[str], says: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    csv = tmp_path / "ok.csv"
    csv.write_text("timestamp,value\n" + "\n".join(
        f"2024-01-01 {h:02d}:00:00,{h}" for h in range(24)))
    gappy = tmp_path / "gappy.csv"
    gappy.write_text("timestamp,value\n" + "\n".join(
        f"2024-01-{d:02d} 00:00:00,1" for d in (1, 2, 3, 20, 21, 22, 23, 24, 25, 26)))
    argv = ["forecast", *(a.format(csv=csv, gappy=gappy) for a in args)]
    res = CliRunner().invoke(_cli_app(), argv)
    assert res.exit_code == 2, res.output
    (line,) = res.output.strip().splitlines()  # one line naming the file or option
    assert line.startswith("error: ") and says in line, line


def test_cli_module_imports_nothing_heavy() -> None:
    assert heavy_imports("import aiops.forecast.cli",
                         ("torch", "prophet", "pandas", "numpy", "statsforecast")) == []


def test_make_from_spec() -> None:
    m = make_from_spec("seasonal_naive:season=24")
    assert m.get_params()["season"] == 24


def test_prophet_without_plotly_logs_no_false_error() -> None:
    """Prophet logs "Importing plotly failed" at ERROR on import; aiops never plots with
    plotly, so that record is dropped (in a fresh interpreter, where the import happens)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("plotly") is not None:
        pytest.skip("plotly is installed: prophet logs nothing to drop")
    script = ("import logging; logging.basicConfig(); "
              "logging.getLogger('prophet.plot').error('another problem'); "
              "from aiops.forecast.prophet import _before_import; _before_import(); "
              "import prophet")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert "Importing plotly failed" not in out.stderr
    assert "another problem" in out.stderr  # the logger's other records still get through
    bare = subprocess.run([sys.executable, "-c", "import logging; logging.basicConfig(); "
                           "import prophet"], capture_output=True, text=True, check=True)
    assert "Importing plotly failed" in bare.stderr  # what the filter is for
