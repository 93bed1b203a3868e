"""The demo's bar: run `sss demo` in full for several seeds and check the issues' targets.

    .venv/bin/python benchmarks/bench_demo.py [--seeds 0 1 2] [--out runs/bench_demo] [--reuse-dense]

Runs the demo (ResNet-20, blocks + channels, aimed at 70% of the dense MACs) with its dense
baseline (same model, seed and schedule, no factors) once per seed; ``--reuse-dense`` keeps a
dense run an earlier call left in the seed's folder when its config matches. Writes
benchmarks/results/demo.json (every seed's figures and checks, mean ± std), one full report per
seed (results/demo_seedN.json and .md; seed 0's table is the README's), and prints one PASS/FAIL
line per target, per seed:
- the compact model has >= 25% fewer MACs than the dense one, and is within ±2% of the target;
- its test accuracy is within 1 point of the dense model of the same seed;
- removal changes test accuracy by 0.00 points;
- latency speedup at batch 64 >= 0.9 x the MAC reduction (dense MACs / compact MACs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics

from demo_checks import RESULTS, check_and_save
from sss.recipes.demo import DEMO_CONFIG, run_demo


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench_demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--reuse-dense", action="store_true", help="keep a matching dense run already in the folder")
    args = parser.parse_args()
    runs, codes = [], []
    for seed in args.seeds:
        out = f"{args.out}/seed{seed}"
        report = run_demo(out, config=dataclasses.replace(DEMO_CONFIG, seed=seed), baseline=True,
                          reuse_dense=args.reuse_dense, progress=False)  # fmt: skip
        print(f"-- seed {seed}")
        codes.append(check_and_save(report, name=f"demo_seed{seed}", out_dir=out, min_mac_reduction=0.25,
                                    latency_factor=0.9))  # fmt: skip
        final, dense, target = report["models"]["SSS final"], report["models"]["dense"], DEMO_CONFIG.target_macs
        fraction = final["macs"] / dense["macs"]
        runs.append({"seed": seed, "accuracy": final["accuracy"], "dense_accuracy": dense["accuracy"],
                     "gap_vs_dense": report["accuracy_gap_vs_dense"], "macs_fraction": fraction,
                     "within_2pct_of_target": abs(fraction - target) <= 0.02 * target,
                     "speedup_b64": report["speedup"]["64"], "train_seconds": report["train_seconds"],
                     "checks": report["checks"]})  # fmt: skip

    def spread(key: str) -> dict:
        values = [r[key] for r in runs]
        return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}

    summary = {"target_macs": DEMO_CONFIG.target_macs, "seeds": runs,
               **{k: spread(k) for k in ("accuracy", "dense_accuracy", "gap_vs_dense", "macs_fraction")},
               "all_within_1_point": all(r["gap_vs_dense"] <= 1.0 for r in runs),
               "all_within_2pct_of_target": all(r["within_2pct_of_target"] for r in runs)}  # fmt: skip
    (RESULTS / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "seeds"}, indent=2))
    return max([*codes, 0 if summary["all_within_1_point"] and summary["all_within_2pct_of_target"] else 1])


if __name__ == "__main__":
    raise SystemExit(main())
