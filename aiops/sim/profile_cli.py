"""``aiops profile fit``: a simulator profile from measured iteration timings."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

profile_app = typer.Typer(
    name="profile",
    help="Simulator profiles: fit one from measured iteration timings.",
    no_args_is_help=True,
)

FIT_EXAMPLES = """
Examples:

  # the shipped llama3-8b-a100 profile, from Vidur's A100 measurements
  aiops profile fit --base llama3-8b-a100 --layers 32
      --vidur-mlp data/calibration/vidur-a100-llama3-8b-mlp-tp1.csv
      --vidur-decode-attention data/calibration/vidur-a100-llama3-8b-attention-decode-rows.csv
      --vidur-prefill-attention data/calibration/vidur-a100-llama3-8b-attention-prefill-rows.csv
      --output aiops/profiles/llama3-8b-a100.yaml

  # your own server: a CSV of batch,kv_tokens,prefill_tokens,iteration_s
  aiops profile fit --base llama3-8b-a100 --timings my-iterations.csv --name my-8b-h100
      --output my-8b-h100.yaml
"""


def register(app: typer.Typer) -> None:
    app.add_typer(profile_app)


@profile_app.command(name="fit", epilog=FIT_EXAMPLES)
def fit(
    output: Annotated[Path, typer.Option(help="The profile YAML to write.")],
    base: Annotated[str, typer.Option(
        help="Profile whose non-timing fields (KV cache, cold start, batch sizes, price) the "
             "new one keeps: a shipped name or a YAML path.")] = "llama3-8b-a100",
    timings: Annotated[Path | None, typer.Option(
        help="CSV of measured iterations: batch,kv_tokens,prefill_tokens,iteration_s.")] = None,
    vidur_mlp: Annotated[Path | None, typer.Option(
        help="Vidur's mlp.csv (per-layer linear operations against tokens).")] = None,
    vidur_decode_attention: Annotated[Path | None, typer.Option(
        help="Vidur decode attention rows: kv,b,decode_ms.")] = None,
    vidur_prefill_attention: Annotated[Path | None, typer.Option(
        help="Vidur prefill attention rows: chunk,kv,prefill_ms,save_ms.")] = None,
    vidur_allreduce: Annotated[Path | None, typer.Option(
        help="Vidur's all-reduce profile (needed with --tensor-parallel above 1).")] = None,
    layers: Annotated[int, typer.Option(help="Transformer layers of the model (Vidur).")] = 0,
    tensor_parallel: Annotated[int, typer.Option(help="GPUs per replica (Vidur).")] = 1,
    attention_kv_scale: Annotated[float, typer.Option(
        help="Scale of the decode attention rows (KV heads per GPU, this model over the "
             "profiled one).")] = 1.0,
    attention_query_scale: Annotated[float, typer.Option(
        help="Scale of the prefill attention rows (query heads per GPU, this model over the "
             "profiled one).")] = 1.0,
    name: Annotated[str | None, typer.Option(help="Name of the new profile.")] = None,
    cold_start: Annotated[str | None, typer.Option(
        help="Cold start of a replica: seconds or 90s, 5m.")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output if it exists.")] = False,
) -> None:
    """Fit a profile's iteration model from measured timings and write it as YAML.

    Give either --timings (your own server's iterations) or the Vidur files. The written
    profile records this command, its inputs' sha256 and the fit's errors.
    """
    from aiops.cli import fail_input
    from aiops.errors import InputError

    try:
        _fit(output=output, base=base, timings=timings, vidur_mlp=vidur_mlp,
             vidur_decode_attention=vidur_decode_attention,
             vidur_prefill_attention=vidur_prefill_attention, vidur_allreduce=vidur_allreduce,
             layers=layers, tensor_parallel=tensor_parallel,
             attention_kv_scale=attention_kv_scale,
             attention_query_scale=attention_query_scale, name=name, cold_start=cold_start,
             force=force)
    except InputError as err:
        fail_input(err)


def _flow_dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        """Lists of numbers on one line ([1, 0.0097]), everything else in block style."""

    def represent_list(dumper: yaml.SafeDumper, data: list[object]) -> yaml.Node:
        flow = all(isinstance(x, int | float) for x in data) or all(
            isinstance(x, list) for x in data)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)

    Dumper.add_representer(list, represent_list)
    return Dumper


def _fit(*, output: Path, base: str, timings: Path | None, vidur_mlp: Path | None,
         vidur_decode_attention: Path | None, vidur_prefill_attention: Path | None,
         vidur_allreduce: Path | None, layers: int, tensor_parallel: int,
         attention_kv_scale: float, attention_query_scale: float, name: str | None,
         cold_start: str | None, force: bool) -> None:
    import yaml

    from aiops.errors import InputError
    from aiops.sim.profile_fit import (
        decode_summary,
        fit_timings,
        fit_vidur,
        sha256_of,
    )
    from aiops.sim.profiles import load_profile
    from aiops.units import parse_duration

    vidur = [vidur_mlp, vidur_decode_attention, vidur_prefill_attention]
    if timings is not None and any(v is not None for v in vidur):
        raise InputError("give either --timings or the --vidur-* files, not both")
    if timings is None and any(v is None for v in vidur):
        raise InputError("give --timings CSV, or all of --vidur-mlp, --vidur-decode-attention "
                         "and --vidur-prefill-attention")
    if output.exists() and not force:
        raise InputError("exists; pass --force to overwrite it", path=str(output))
    if output.exists() and output.is_dir():
        raise InputError("is a directory; --output is the YAML file to write", path=str(output))
    if not output.parent.exists():
        raise InputError("no such directory for --output", path=str(output.parent))
    for key, value in (("--attention-kv-scale", attention_kv_scale),
                       ("--attention-query-scale", attention_query_scale)):
        if not value > 0:
            raise InputError(f"{key} must be > 0, got {value:g}")
    prof = load_profile(base)
    inputs: list[Path]
    if timings is not None:
        model, report = fit_timings(timings)
        inputs = [timings]
        source = f"iteration timings measured on the server: {timings.name}"
    else:
        assert vidur_mlp and vidur_decode_attention and vidur_prefill_attention
        if layers < 1:
            raise InputError("--layers is required with the Vidur files (Vidur's times are per "
                             "layer): e.g. 32 for Llama 3 8B, 80 for 70B")
        model, report = fit_vidur(
            vidur_mlp, vidur_decode_attention, vidur_prefill_attention, layers=layers,
            tensor_parallel=tensor_parallel, allreduce_csv=vidur_allreduce,
            attention_kv_scale=attention_kv_scale, attention_query_scale=attention_query_scale)
        inputs = [p for p in (vidur_mlp, vidur_decode_attention, vidur_prefill_attention,
                              vidur_allreduce) if p is not None]
        source = ("Vidur's A100 profiles (microsoft/vidur, MIT; Agrawal et al., MLSys 2024), "
                  f"summed over {layers} layers, tensor parallel {tensor_parallel}, plus "
                  "estimated server overheads (CPU step, sampling, LM head)")
    changes: dict[str, object] = {"iteration": model}
    if name:
        changes["name"] = name
    if cold_start:
        changes["cold_start_s"] = parse_duration(cold_start)
    summary = decode_summary(model)
    args = [("--base", base), ("--name", name), ("--cold-start", cold_start),
            ("--timings", timings), ("--layers", layers or None),
            ("--tensor-parallel", tensor_parallel if tensor_parallel != 1 else None),
            ("--vidur-mlp", vidur_mlp), ("--vidur-decode-attention", vidur_decode_attention),
            ("--vidur-prefill-attention", vidur_prefill_attention),
            ("--vidur-allreduce", vidur_allreduce),
            ("--attention-kv-scale", attention_kv_scale if attention_kv_scale != 1 else None),
            ("--attention-query-scale",
             attention_query_scale if attention_query_scale != 1 else None),
            ("--output", output)]
    command = "aiops profile fit " + " ".join(
        f"{k} {shlex.quote(str(v))}" for k, v in args if v is not None) + " --force"
    fit_info = {
        "command": command,
        "inputs": {str(p): sha256_of(p) for p in inputs},
        **report.as_dict(),
        "decode_step_summary": {
            "fixed_ms": round(summary["fixed_s"] * 1e3, 3),
            "per_sequence_us": round(summary["per_sequence_s"] * 1e6, 3),
            "per_kv_token_ns": round(summary["per_kv_token_s"] * 1e9, 3)},
    }
    kept = [s for s in prof.sources if not s.startswith("timing: ")]
    new = prof.with_changes(**changes, fit=fit_info, sources=(*kept, "timing: " + source))
    new = new.with_changes(fit={**fit_info, "prefill_tokens_per_s": round(
        new.prefill_tokens_per_s())})
    header = (f"# {new.name}: {new.model} on {new.gpus_per_replica} x {new.gpu}, written by "
              "`aiops profile fit` (see fit.command to reproduce it).\n"
              "# iteration: seconds of one forward pass from what it carries (docs/profiles.md);"
              " the other fields\n# come from the base profile, edit them by hand.\n")
    output.write_text(header + yaml.dump(new.as_yaml(), Dumper=_flow_dumper(), sort_keys=False,
                                         width=100))
    typer.echo(f"wrote {output}: decode step {summary['fixed_s'] * 1e3:.2f} ms + "
               f"{summary['per_sequence_s'] * 1e6:.1f} us/sequence + "
               f"{summary['per_kv_token_s'] * 1e9:.1f} ns/KV token; prefill "
               f"{new.prefill_tokens_per_s():,.0f} tokens/s; fit error median "
               + ", ".join(f"{k} {v:.1%}" for k, v in report.median_rel_error.items()))
