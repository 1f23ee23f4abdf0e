"""Fit a profile's iteration model from measured timings: ``aiops profile fit``.

Two kinds of measurement go in:

* **Vidur's per-operation profiles** (microsoft/vidur ``data/profiling``): per-layer GPU times
  of the linear operations against the tokens in an iteration (``mlp.csv``), decode and
  prefill attention rows (``kv,b,decode_ms`` and ``chunk,kv,prefill_ms,save_ms``), and for
  tensor parallelism the all-reduce profile. Summed over the layers they give the GPU time of
  an iteration. Vidur leaves out what the server adds on the CPU and after the last layer
  (scheduling, sampling, the LM head); :class:`ServerOverheads` adds estimates of those, so a
  fitted profile is never faster than Vidur.
* **A plain CSV** ``batch,kv_tokens,prefill_tokens,iteration_s`` timed on one's own server:
  decoding sequences, the KV tokens they hold, prompt tokens in the iteration, and the
  iteration's wall time (e.g. from vLLM's per-step logs or a profiler). Everything the server
  does is in those times already, so no overhead is added.

The fit is deterministic least squares (non-negative, relative error for the attention rows,
so small and large rows count alike), which anyone can rerun with the command the profile
records in its ``fit`` section.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from aiops.errors import InputError
from aiops.sim.profiles import IterationModel

# Token counts where the linear layers' table is kept: dense where the curve bends (the
# memory-bound floor turning compute-bound), sparse where it is a straight line.
KNOTS = (1, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
         6144, 8192, 12288, 16384)

LINEAR_OPS = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
              "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
"""Vidur's per-layer operations outside attention, summed per layer as Vidur sums them."""

A100_HBM_BYTES_PER_S = 1.6e12
"""Achieved HBM bandwidth of an A100 80GB (2.0 TB/s peak, ~80% reached by large reads)."""

A100_BF16_FLOPS = 2.2e14
"""Achieved dense bf16 rate of an A100 (312 TFLOP/s peak, ~70% on large GEMMs)."""


@dataclass(frozen=True)
class ServerOverheads:
    """What a real vLLM server adds to the GPU time Vidur profiles, per iteration.

    * the LM head (hidden x vocab GEMM after the last layer): reading its weights once per
      iteration and computing logits per emitted token; from the model's dimensions;
    * sampling (softmax, top-p/top-k over the vocabulary): ``sampling_per_sequence_s``;
    * the engine's CPU work per step (scheduling, input preparation, output processing,
      detokenisation): ``cpu_s`` plus ``cpu_per_sequence_s``. vLLM's V1 engine overlaps part
      of it with the GPU; these defaults are the part that is not overlapped, of the order
      published V1 step profiles show (about a millisecond per step at a few dozen sequences).
    """

    cpu_s: float = 0.001
    cpu_per_sequence_s: float = 5e-6
    sampling_per_sequence_s: float = 4e-6

    def lm_head(self, hidden: float, vocab: float, tensor_parallel: int) -> tuple[float, float]:
        """(seconds per iteration, seconds per emitted token) of the LM head."""
        weights = 2.0 * hidden * vocab / tensor_parallel  # bf16 bytes on each GPU
        per_token = 2.0 * hidden * vocab / tensor_parallel / A100_BF16_FLOPS
        return weights / A100_HBM_BYTES_PER_S, per_token


@dataclass(frozen=True)
class FitReport:
    """How well the model reproduces its inputs (relative errors), for the YAML and the CLI."""

    rows: dict[str, int]
    max_rel_error: dict[str, float]
    median_rel_error: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return {"rows": self.rows,
                "max_rel_error": {k: round(v, 4) for k, v in self.max_rel_error.items()},
                "median_rel_error": {k: round(v, 4) for k, v in self.median_rel_error.items()}}


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- reading


def _read_csv(path: Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """A CSV with the ``required`` numeric columns, every value finite and >= 0."""
    if not path.exists():
        raise InputError(f"no such file (the {what})", path=str(path))
    if path.is_dir():
        raise InputError(f"is a directory, expected the {what} CSV", path=str(path))
    try:
        df = pd.read_csv(path)
    except UnicodeDecodeError:
        raise InputError(f"not a text CSV (the {what})", path=str(path)) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"not a readable CSV: {exc}", path=str(path)) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; the {what} needs {', '.join(required)}",
            path=str(path))
    for col in required:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(f"column {col}: not a finite number: {df[col].iloc[row]!r}",
                             path=str(path), line=row + 2)
        neg = values.to_numpy() < 0
        if neg.any():
            row = int(np.flatnonzero(neg)[0])
            raise InputError(f"column {col}: negative value {values.iloc[row]:g}; times and "
                             "token counts are >= 0", path=str(path), line=row + 2)
        df[col] = values.astype(np.float64)
    return df


# ---------------------------------------------------------------------------- Vidur


def _ops_time(mlp: pd.DataFrame, path: Path) -> pd.Series:
    cols = [f"time_stats.{op}.median" for op in LINEAR_OPS]
    missing = [c for c in cols if c not in mlp.columns]
    if missing:
        raise InputError(f"missing column(s) {', '.join(missing)} of Vidur's mlp.csv format",
                         path=str(path))
    total = mlp[cols].apply(pd.to_numeric, errors="coerce").sum(axis=1, min_count=len(cols))
    return pd.Series(total.to_numpy(), index=mlp["num_tokens"].to_numpy())


def _kv_write(tokens: float, save: pd.Series) -> float:
    """Per-layer time of writing ``tokens`` tokens' keys and values to the cache: the profiled
    curve, and below its smallest chunk proportional to the tokens (the write is per token;
    a decode step of a few sequences writes a few tokens)."""
    xs = save.index.to_numpy(dtype=np.float64)
    ys = save.to_numpy(dtype=np.float64)
    if tokens < xs[0]:
        return float(ys[0] * tokens / xs[0])
    return float(np.interp(tokens, xs, ys))


def _rel_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error (rows weighted by 1/y)."""
    w = 1.0 / np.maximum(y, 1e-12)
    coef, _ = nnls(x * w[:, None], y * w)
    return np.asarray(coef, dtype=np.float64)


def _errors(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    rel = np.abs(pred / np.maximum(y, 1e-12) - 1.0)
    return float(rel.max()), float(np.median(rel))


def fit_vidur(
    mlp_csv: Path,
    decode_rows_csv: Path,
    prefill_rows_csv: Path,
    *,
    layers: int,
    tensor_parallel: int = 1,
    allreduce_csv: Path | None = None,
    attention_kv_scale: float = 1.0,
    attention_query_scale: float = 1.0,
    overheads: ServerOverheads | None = None,
) -> tuple[IterationModel, FitReport]:
    """The iteration model of a model on Vidur's profiled GPU.

    ``layers`` is the model's transformer layers (Vidur's files are per layer).
    ``tensor_parallel`` picks the rows of that degree in the MLP file and, with
    ``allreduce_csv``, adds two all-reduces of the hidden state per layer (after attention and
    after the MLP), as Megatron-style tensor parallelism does. ``attention_*_scale`` reuse
    attention rows measured on another model of the same family: the KV-bound decode terms
    scale with the KV heads per GPU, the compute-bound prefill terms with the query heads per
    GPU (e.g. 70B on 4 GPUs against 8B on one: 2/8 and 16/32).
    """
    if layers < 1:
        raise InputError(f"--layers must be >= 1, got {layers}")
    if tensor_parallel < 1:
        raise InputError(f"--tensor-parallel must be >= 1, got {tensor_parallel}")
    over = overheads or ServerOverheads()
    mlp = _read_csv(mlp_csv, ("num_tokens", "num_tensor_parallel_workers", "n_embd",
                              "vocab_size"), "Vidur MLP profile")
    mlp = mlp[mlp["num_tensor_parallel_workers"] == tensor_parallel]
    if len(mlp) < 8:
        raise InputError(f"only {len(mlp)} rows with num_tensor_parallel_workers == "
                         f"{tensor_parallel}; at least 8 token counts are needed to fit",
                         path=str(mlp_csv))
    ops = _ops_time(mlp, mlp_csv).groupby(level=0).median().sort_index()
    if not np.isfinite(ops.to_numpy()).all():
        raise InputError("an operation time is not a number", path=str(mlp_csv))
    hidden = float(mlp["n_embd"].iloc[0])
    vocab = float(mlp["vocab_size"].iloc[0])

    dec = _read_csv(decode_rows_csv, ("kv", "b", "decode_ms"), "Vidur decode attention rows")
    pre = _read_csv(prefill_rows_csv, ("chunk", "kv", "prefill_ms", "save_ms"),
                    "Vidur prefill attention rows")
    if len(dec) < 6:
        raise InputError(f"only {len(dec)} rows; at least 6 are needed to fit 3 terms",
                         path=str(decode_rows_csv))
    if len(pre) < 8:
        raise InputError(f"only {len(pre)} rows; at least 8 are needed to fit 4 terms",
                         path=str(prefill_rows_csv))

    # Decode attention per layer: fixed + per sequence + per KV token (b * kv of each).
    xd = np.c_[np.ones(len(dec)), dec["b"], dec["b"] * dec["kv"]]
    cd = _rel_nnls(xd, dec["decode_ms"].to_numpy())
    # Prefill attention per layer: fixed + per token + per token x earlier KV + per token^2.
    xp = np.c_[np.ones(len(pre)), pre["chunk"], pre["chunk"] * pre["kv"], pre["chunk"] ** 2]
    cp = _rel_nnls(xp, pre["prefill_ms"].to_numpy())
    # KV-cache writes scale with the tokens written (any phase): a per-token curve.
    save = pre[pre["kv"] == 0].groupby("chunk")["save_ms"].median().sort_index()

    # All-reduce of the hidden state (bf16) on ``tensor_parallel`` GPUs, against bytes.
    if tensor_parallel > 1:
        if allreduce_csv is None:
            raise InputError("--tensor-parallel above 1 needs --vidur-allreduce (the all-reduce "
                             "profile): tensor parallelism adds two all-reduces per layer")
        ar = _read_csv(allreduce_csv, ("num_workers", "size", "time_stats.all_reduce.median"),
                       "Vidur all-reduce profile")
        ar = ar[ar["num_workers"] == tensor_parallel]
        if len(ar) < 4:
            raise InputError(f"no all-reduce rows for {tensor_parallel} workers",
                             path=str(allreduce_csv))
        ar_curve = ar.groupby("size")["time_stats.all_reduce.median"].median().sort_index()
    knots = [k for k in KNOTS if ops.index.min() <= k <= ops.index.max()]
    if len(knots) < 4:
        raise InputError("the MLP profile covers too few token counts to fit (need rows from "
                         "1 to at least 64 tokens)", path=str(mlp_csv))
    table: list[tuple[float, float]] = []
    ms = 1e-3
    for k in knots:
        lin = float(np.interp(k, ops.index.to_numpy(dtype=np.float64), ops.to_numpy()))
        kv_write = _kv_write(k, save)
        comm = 0.0
        if tensor_parallel > 1:
            size = k * hidden * 2.0
            comm = 2.0 * float(np.interp(size, ar_curve.index.to_numpy(dtype=np.float64),
                                         ar_curve.to_numpy()))
        table.append((float(k), (lin + kv_write + comm) * layers * ms))
    # Monotone in tokens (the measured medians wiggle by a few microseconds at the floor).
    mono = np.maximum.accumulate(np.array([t for _, t in table]))
    table = [(k, float(v)) for (k, _), v in zip(table, mono, strict=True)]
    lm_fixed, lm_token = over.lm_head(hidden, vocab, tensor_parallel)
    model = IterationModel(
        linear_tokens=tuple(table),
        overhead_s=over.cpu_s + lm_fixed,
        per_sequence_s=over.cpu_per_sequence_s + over.sampling_per_sequence_s + lm_token,
        decode_fixed_s=cd[0] * layers * attention_kv_scale * ms,
        decode_per_sequence_s=cd[1] * layers * attention_kv_scale * ms,
        decode_per_kv_token_s=cd[2] * layers * attention_kv_scale * ms,
        prefill_fixed_s=cp[0] * layers * attention_query_scale * ms,
        prefill_per_token_s=cp[1] * layers * attention_query_scale * ms,
        prefill_per_token_kv_s=cp[2] * layers * attention_query_scale * ms,
        prefill_per_token_sq_s=cp[3] * layers * attention_query_scale * ms,
    )
    lin_pred = model.linear(ops.index.to_numpy(dtype=np.float64)) / (layers * ms)
    lin_true = ops.to_numpy() + np.array([_kv_write(float(k), save) for k in ops.index])
    if tensor_parallel > 1:
        sizes = ops.index.to_numpy(dtype=np.float64) * hidden * 2.0
        lin_true = lin_true + 2.0 * np.interp(sizes, ar_curve.index.to_numpy(dtype=np.float64),
                                              ar_curve.to_numpy())
    errs = {"linear": _errors(lin_pred, lin_true),
            "decode_attention": _errors(xd @ cd, dec["decode_ms"].to_numpy()),
            "prefill_attention": _errors(xp @ cp, pre["prefill_ms"].to_numpy())}
    report = FitReport(rows={"linear": len(ops), "decode_attention": len(dec),
                             "prefill_attention": len(pre)},
                       max_rel_error={k: v[0] for k, v in errs.items()},
                       median_rel_error={k: v[1] for k, v in errs.items()})
    return model, report


# ---------------------------------------------------------------------------- plain CSV

TIMING_COLUMNS = ("batch", "kv_tokens", "prefill_tokens", "iteration_s")
MIN_TIMING_ROWS = 20


def fit_timings(csv: Path) -> tuple[IterationModel, FitReport]:
    """The iteration model from a CSV of measured iterations (see the module docstring).

    The model is the same as for Vidur's files, with the terms a per-iteration measurement can
    tell apart: the linear layers' table over all tokens in the iteration (piecewise linear
    in ``batch + prefill_tokens``, knots where the data has support), per decoding sequence,
    per KV token, and the prompt's quadratic attention. Fixed costs land in the table.
    """
    df = _read_csv(csv, TIMING_COLUMNS, "iteration timings")
    if len(df) < MIN_TIMING_ROWS:
        raise InputError(f"only {len(df)} rows; at least {MIN_TIMING_ROWS} measured iterations "
                         "are needed to fit (vary the batch, the context and the prompt tokens)",
                         path=str(csv))
    if (df["iteration_s"] <= 0).any():
        row = int(np.flatnonzero((df["iteration_s"] <= 0).to_numpy())[0])
        raise InputError("column iteration_s: a measured iteration takes > 0 seconds",
                         path=str(csv), line=row + 2)
    tokens = (df["batch"] + df["prefill_tokens"]).to_numpy()
    if (tokens <= 0).any():
        row = int(np.flatnonzero(tokens <= 0)[0])
        raise InputError("an iteration must carry a decoding sequence or prompt tokens "
                         "(batch + prefill_tokens > 0)", path=str(csv), line=row + 2)
    lo, hi = float(tokens.min()), float(tokens.max())
    knots = [float(k) for k in KNOTS if lo <= k <= hi]
    knots = sorted({lo, *knots, hi})
    if len(knots) < 2:
        knots = [lo, lo + 1.0]
    # Hat functions on the knots: the table's values are the coefficients.
    k_arr = np.array(knots)
    hats = np.zeros((len(df), len(knots)))
    idx = np.clip(np.searchsorted(k_arr, tokens, side="right") - 1, 0, len(knots) - 2)
    w = (tokens - k_arr[idx]) / (k_arr[idx + 1] - k_arr[idx])
    hats[np.arange(len(df)), idx] = 1.0 - w
    hats[np.arange(len(df)), idx + 1] = w
    pre = df["prefill_tokens"].to_numpy()
    x = np.c_[hats, df["batch"].to_numpy(), df["kv_tokens"].to_numpy(), pre * pre]
    y = df["iteration_s"].to_numpy()
    rank = np.linalg.matrix_rank(x[:, :len(knots)])
    if rank < len(knots):
        raise InputError("too few distinct token counts to fit the iteration time's shape; "
                         "measure iterations over a range of batch sizes and prompt lengths",
                         path=str(csv))
    coef = _rel_nnls(x, y)
    values = np.maximum.accumulate(np.maximum(coef[: len(knots)], 1e-9))
    model = IterationModel(
        linear_tokens=tuple((float(k), float(v)) for k, v in zip(knots, values, strict=True)),
        decode_per_sequence_s=float(coef[len(knots)]),
        decode_per_kv_token_s=float(coef[len(knots) + 1]),
        prefill_per_token_sq_s=float(coef[len(knots) + 2]),
    )
    pred = (model.linear(tokens) + model.decode_per_sequence_s * df["batch"].to_numpy()
            + model.decode_per_kv_token_s * df["kv_tokens"].to_numpy()
            + model.prefill_per_token_sq_s * pre * pre)
    mx, med = _errors(pred, y)
    report = FitReport(rows={"iterations": len(df)}, max_rel_error={"iteration": mx},
                       median_rel_error={"iteration": med})
    if not math.isfinite(mx):
        raise InputError("the fit did not converge", path=str(csv))
    return model, report


def decode_summary(model: IterationModel, *, max_batch: int = 64,
                   contexts: tuple[float, ...] = (256.0, 1024.0, 2048.0, 4096.0)
                   ) -> dict[str, float]:
    """A decode iteration summarised as ``fixed + per sequence * n + per KV token * kv`` by
    least squares over batches 1..``max_batch`` and the given contexts per sequence: the
    figures people quote (and the calibration reference states) for a profile."""
    rows = []
    ys = []
    for n in range(1, max_batch + 1):
        for c in contexts:
            rows.append((1.0, float(n), n * c))
            ys.append(float(model.decode_step(n, n * c)))
    coef, *_ = np.linalg.lstsq(np.array(rows), np.array(ys), rcond=None)
    return {"fixed_s": float(coef[0]), "per_sequence_s": float(coef[1]),
            "per_kv_token_s": float(coef[2])}
