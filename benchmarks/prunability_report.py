"""The prunability sweep's report: a table by family (sss exact vs Torch-Pruning pruned), the
bar's figures, and one line per model (`python benchmarks/prunability.py --report`)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def load_records(path: Path) -> list[dict]:
    """The sweep's records, the last one of each model (a rerun replaces an earlier line)."""
    latest: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            latest[rec["model"]] = rec
    return list(latest.values())


def exact_with_a_kind(rec: dict) -> bool:
    return rec.get("status") == "exact" and bool(rec.get("kinds")) and rec.get("save_load", False)


def summary(records: list[dict]) -> dict[str, float]:
    """The bar's figures: crashes, the share exact with at least one kind, heads on attention models."""
    attention = [r for r in records if r.get("attention")]
    return {
        "models": len(records),
        "exact": sum(exact_with_a_kind(r) for r in records),
        "refused": sum(r.get("status") == "refused" for r in records),
        "crash": sum(r.get("status") == "crash" for r in records),
        "timeout": sum(r.get("status") == "timeout" for r in records),
        "inexact": sum(r.get("status") == "inexact" for r in records),
        "attention": len(attention),
        "heads": sum("head" in r.get("kinds", {}) for r in attention),
        "blocks": sum(exact_with_a_kind(r) and "block" in r["kinds"] for r in records),
        "tp_pruned": sum(r.get("torch_pruning", {}).get("status") == "pruned" for r in records),
    }


def _kinds(rec: dict) -> str:
    return ", ".join(f"{n} {k}" for k, n in rec.get("kinds", {}).items()) or "-"


#: The default results' title and rerun command; a held-out probe's file names its own.
_SWEEP = ("Prunability sweep", "python benchmarks/prunability.py && python benchmarks/prunability.py --report")


def markdown(records: list[dict], title: str = _SWEEP[0], rerun: str = _SWEEP[1]) -> str:
    s = summary(records)
    n = max(s["models"], 1)
    lines = [
        f"# {title}",
        "",
        "Every model built as its users build it (random weights, random BN statistics), gated with every kind, "
        "~30% of the factors zeroed, pruned, the outputs compared (1e-4 relative), saved and loaded; "
        "Torch-Pruning's `MetaPruner` (L1, 30%, classifier kept) on the same model. "
        f"Rerun: `{rerun}`.",
        "",
        f"- models: **{s['models']}**; sss exact with at least one kind (and the save/load round trip): "
        f"**{s['exact']}** ({s['exact'] / n:.0%}); refused with a reason: {s['refused']}; inexact: {s['inexact']}; "
        f"crashes: **{s['crash']}**; over the time limit: {s['timeout']}",
        f"- models with attention: {s['attention']}, of which sss finds heads in **{s['heads']}**",
        f"- models exact with residual blocks (or branches of them) removed: **{s['blocks']}**",
        f"- Torch-Pruning prunes (no exactness check): **{s['tp_pruned']}**",
        "",
        "| family | models | sss exact | sss heads / attention | Torch-Pruning pruned |",
        "|---|---:|---:|---:|---:|",
    ]
    by_family: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_family[r.get("family", "?")].append(r)
    for family in sorted(by_family):
        group = by_family[family]
        att = [r for r in group if r.get("attention")]
        heads = f"{sum('head' in r.get('kinds', {}) for r in att)} / {len(att)}" if att else "-"
        tp = sum(r.get("torch_pruning", {}).get("status") == "pruned" for r in group)
        lines.append(f"| {family} | {len(group)} | {sum(exact_with_a_kind(r) for r in group)} | {heads} | {tp} |")
    lines += ["", "## Per model", "", "| model | sss | kinds | MACs after / before | s | Torch-Pruning |",
              "|---|---|---|---:|---:|---|"]  # fmt: skip
    for r in sorted(records, key=lambda r: (r.get("family", ""), r["model"])):
        status = r.get("status", "?")
        if status not in ("exact",):
            status += f": {r.get('reason', '')[:160]}".replace("|", "/")
        ratio = f"{r['macs_after'] / r['macs']:.2f}" if r.get("macs") and r.get("macs_after") else "-"
        tp = r.get("torch_pruning", {})
        tp_text = tp.get("status", "-") + (f" ({tp['reason'][:60]})" if tp.get("reason") else "")
        lines.append(f"| {r['model']} | {status} | {_kinds(r)} | {ratio} | {r.get('seconds', '-')} | "
                     f"{tp_text.replace('|', '/')} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(results: Path, out: Path) -> None:
    records = load_records(results)
    if results.stem == "prunability":
        out.write_text(markdown(records))
    else:  # a probe of models outside the list (--timm, --hf): its own title and command
        names = {src: ",".join(r["model"].partition(":")[2] for r in records if r["model"].startswith(f"{src}:"))
                 for src in ("timm", "hf")}  # fmt: skip
        flags = " ".join(f"--{src} {listed}" for src, listed in names.items() if listed)
        rerun = (f"python benchmarks/prunability.py {flags} --results {results.as_posix()} && "
                 f"python benchmarks/prunability.py --report --results {results.as_posix()}")  # fmt: skip
        out.write_text(markdown(records, f"Models outside the sweep's list ({results.stem})", rerun))
    print(f"wrote {out}")
