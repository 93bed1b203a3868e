"""The prunability sweep: which of the models people have sss gates and prunes exactly, which it
refuses (and why), and what Torch-Pruning does with the same model.

Per model (`zoo_models.py`: timm, torchvision, Hugging Face; random weights, random BN
statistics): ``sss.attach`` with every kind, ~30% of the factors zeroed at random (the others
random in [0.5, 1.5], so folding is checked too), ``sss.prune``, the outputs compared (every
tensor of the output, to 1e-4 relative), the MACs before and after, the compact model saved and
loaded on a fresh build; then Torch-Pruning's ``MetaPruner`` (L1, 30% of the channels, the
classifier kept) on its own fresh build. Each check runs in its own process with a timeout, so
one that hangs or kills Python is a result, not the end of the sweep (nor of the other's check).

    python benchmarks/prunability.py                      # every model, results appended
    python benchmarks/prunability.py --only timm:resnet18,hf:llama
    python benchmarks/prunability.py --report             # the markdown table from the results
    python benchmarks/prunability.py --timm tresnet_m,caformer_s18 --results benchmarks/results/held_out.jsonl

Results: ``benchmarks/results/prunability.jsonl`` (one record per model; a rerun skips the
models already there unless ``--redo``) and ``prunability.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import sss
from sss.structures.tracing import output_tensors
from zoo_models import NUM_CLASSES, VOCAB, ZooModel, zoo_models

RESULTS = Path(__file__).parent / "results" / "prunability.jsonl"
KINDS = ("block", "group", "channel", "head")
TOLERANCE = 1e-4


def same_outputs(a, b) -> float:
    """The largest difference between two outputs relative to the largest value (inf: they differ in shape)."""
    ta, tb = output_tensors(a), output_tensors(b)
    if len(ta) != len(tb) or any(x.shape != y.shape for x, y in zip(ta, tb, strict=True)) or not ta:
        return float("inf")
    return max(float((x - y).abs().max()) / (float(y.abs().max()) or 1.0) for x, y in zip(ta, tb, strict=True))


def randomise_statistics(model: nn.Module, gen: torch.Generator) -> None:
    """BN running statistics as training leaves them (not 0 and 1), so removal is checked against them."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)


def zero_factors(model: nn.Module, fraction: float, gen: torch.Generator) -> None:
    with torch.no_grad():
        for ref in sss.gates(model):
            w = ref.weight.view(-1)
            w.copy_(0.5 + torch.rand(w.shape, generator=gen))
            w[torch.rand(w.shape, generator=gen) < fraction] = 0.0


def _where(e: BaseException) -> str:
    frames = traceback.extract_tb(e.__traceback__)[-2:]
    return ", ".join(f"{Path(f.filename).name}:{f.lineno}" for f in frames)


def check_sss(spec: ZooModel, fraction: float = 0.3) -> dict:
    """sss on one model: the record's ``status`` is ``exact``, ``inexact``, ``refused`` (an sss
    error: ``reason``) or ``crash`` (any other exception: ``reason`` and ``where``)."""
    model, x = spec.build()
    randomise_statistics(model, torch.Generator().manual_seed(0))
    rec: dict = {"input": list(x.shape)}
    stage = "count"
    try:
        rec["macs"], rec["params"] = sss.count(model, x)
        stage = "attach"
        gated = sss.attach(model, x, structures=KINDS)
        rec["kinds"] = {k: sum(r.weight.numel() for r in sss.gates(gated) if r.kind == k) for k in KINDS}
        rec["kinds"] = {k: n for k, n in rec["kinds"].items() if n}
        zero_factors(gated, fraction, torch.Generator().manual_seed(1))
        gated.eval()
        stage = "prune"
        with torch.no_grad():
            expected = gated(x)
            compact = sss.prune(gated)
            rec["difference"] = same_outputs(compact(x), expected)
        rec["status"] = "exact" if rec["difference"] <= TOLERANCE else "inexact"
        rec["macs_after"], rec["params_after"] = sss.count(compact, x)
        stage = "save/load"
        with tempfile.TemporaryDirectory() as d:
            sss.save(compact, Path(d) / "m")
            loaded = sss.load(Path(d) / "m", base=spec.build()[0])
            with torch.no_grad():
                rec["save_load"] = same_outputs(loaded(x), compact(x)) <= TOLERANCE
    except sss.SSSError as e:
        rec.update(status="refused" if stage == "attach" else "crash", stage=stage, reason=str(e).splitlines()[0])
    except Exception as e:  # the sweep records what a user would see
        rec.update(status="crash", stage=stage, reason=f"{type(e).__name__}: {str(e).splitlines()[0][:300]}",
                   where=_where(e))  # fmt: skip
    return rec


def _keep(model: nn.Module) -> list[nn.Module]:
    """The classifier (its output is the classes or the vocabulary): Torch-Pruning must not cut it."""
    outs = (NUM_CLASSES, VOCAB, 3)
    return [m for m in model.modules() if (isinstance(m, nn.Linear) and m.out_features in outs)
            or (isinstance(m, nn.Conv2d) and m.out_channels in outs)]  # fmt: skip


def check_torch_pruning(spec: ZooModel, fraction: float = 0.3) -> dict:
    """Torch-Pruning's ``MetaPruner`` (L1 magnitude, ``fraction`` of the channels, classifier kept):
    ``pruned`` when its step runs, the model then runs, and its MACs fell."""
    try:
        import torch_pruning as tp
    except ImportError:
        return {"status": "not installed"}
    model, x = spec.build()
    try:
        macs = sss.count(model, x)[0]
        pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=fraction, ignored_layers=_keep(model))  # fmt: skip
        pruner.step()
        with torch.no_grad():
            model(x)
        after = sss.count(model, x)[0]
        return {"status": "pruned" if after < macs else "unchanged", "macs_after": after}
    except Exception as e:  # Torch-Pruning failing is a result
        return {"status": "failed", "reason": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}


def has_attention(spec: ZooModel) -> bool:
    """Whether the model holds an attention module (its class name says so and it has weights)."""
    model, _ = spec.build()
    return any("attention" in type(m).__name__.lower() and any(True for _ in m.parameters()) for m in model.modules())


def _spec(key: str) -> ZooModel:
    """The sweep's model of that key, or a timm model or Hugging Face ``model_type`` outside the
    list (family "held out")."""
    listed = next((s for s in zoo_models() if s.key == key), None)
    source, _, name = key.partition(":")
    return listed or ZooModel(source if source == "hf" else "timm", name if source == "hf" else key.removeprefix(
        "timm:"), "held out")  # fmt: skip


def run_one(key: str, part: str) -> dict:
    """One model's sss record (``part="sss"``) or Torch-Pruning record (``"tp"``)."""
    spec = _spec(key)
    if part == "tp":
        return check_torch_pruning(spec)
    start = time.perf_counter()
    rec = {"model": key, "family": spec.family, "attention": has_attention(spec), **check_sss(spec)}
    rec["seconds"] = round(time.perf_counter() - start, 1)
    return rec


def _in_process(key: str, part: str, timeout: float) -> dict:
    """``run_one`` in a fresh single-threaded process: one that hangs or dies is a result."""
    try:
        cmd = [sys.executable, __file__, "--one", key, "--part", part]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "reason": f"over {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    died = f"the process died (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
    return json.loads(lines[-1]) if lines else {"status": "crash", "reason": died}


def sweep(specs: list[ZooModel], results: Path, timeout: float, redo: bool, jobs: int, keep_tp: bool = False,
          tp_timeout: float | None = None) -> None:  # fmt: skip
    """Runs each model's sss and Torch-Pruning checks in processes of their own (``timeout`` each;
    ``tp_timeout`` for Torch-Pruning if given), ``jobs`` models at a time, appending to ``results``.
    ``keep_tp``: a model's Torch-Pruning record is taken from its last record, where it has one
    (sss changed, not it)."""
    records = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    done = {r["model"] for r in records}
    earlier_tp = {r["model"]: r["torch_pruning"] for r in records if "torch_pruning" in r} if keep_tp else {}
    results.parent.mkdir(parents=True, exist_ok=True)
    todo = [s for s in specs if redo or s.key not in done]
    lock = threading.Lock()

    def one(k: int, spec: ZooModel) -> None:
        rec = {"model": spec.key, "family": spec.family, **_in_process(spec.key, "sss", timeout)}
        rec["torch_pruning"] = earlier_tp.get(spec.key) or _in_process(spec.key, "tp", tp_timeout or timeout)
        with lock, results.open("a") as f:
            f.write(json.dumps(rec) + "\n")
            print(f"[{k + 1}/{len(todo)}] {spec.key}: {rec['status']} {rec.get('kinds', '')} "
                  f"{rec.get('reason', '')[:120]} tp={rec['torch_pruning']['status']}", flush=True)  # fmt: skip

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, range(len(todo)), todo))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sources", default="timm,torchvision,hf")
    parser.add_argument("--only", default="", help="comma-separated source:name keys")
    parser.add_argument(
        "--timm",
        default="",
        help="comma-separated timm models outside the list (a held-out probe; give them a --results file of their own)",
    )
    parser.add_argument("--hf", default="", help="comma-separated Hugging Face model types outside the list")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--jobs", type=int, default=2, help="models at a time (each single-threaded)")
    parser.add_argument("--redo", action="store_true", help="rerun models already in the results")
    parser.add_argument("--tp-timeout", type=float, default=None, help="Torch-Pruning's own limit (default: --timeout)")
    parser.add_argument("--keep-tp", action="store_true", help="reuse each model's last Torch-Pruning record")
    parser.add_argument("--report", action="store_true", help="write the markdown report from the results")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--part", choices=("sss", "tp"), default="sss", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        torch.set_num_threads(1)
        print(json.dumps(run_one(args.one, args.part)))
        return
    if args.report:
        from prunability_report import write_report

        write_report(args.results, args.results.with_suffix(".md"))
        return
    specs = zoo_models(tuple(args.sources.split(",")))
    if args.only:
        keys = set(args.only.split(","))
        specs = [s for s in specs if s.key in keys]
    if args.timm or args.hf:
        specs = [_spec(f"timm:{name}") for name in args.timm.split(",") if name]
        specs += [_spec(f"hf:{name}") for name in args.hf.split(",") if name]
    sweep(specs, args.results, args.timeout, args.redo, args.jobs, args.keep_tp, args.tp_timeout)


if __name__ == "__main__":
    main()
