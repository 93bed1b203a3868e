"""Head-to-head at equal MACs: SSS against network slimming and L1-norm filter pruning.

    .venv/bin/python benchmarks/bench_peers.py [--targets 0.3 0.5 0.7] [--seeds 0] [--out runs/bench_peers]

Every method gets the demo's data split, model (ResNet-20), seed and 8-epoch schedule, and the
same shape of run: one selection epoch, a cut to the MAC target, then the compact model rewound
to its initial weights and trained for the other 7 epochs. Only the selection differs:

- ``sss``: block + channel factors, APG steered to the target (the demo's recipe);
- ``slimming`` (Liu et al. 2017): sparsity training with an L1 subgradient of 1e-4 on every BN
  γ, then the channels with the smallest |γ| (mean over the BNs a coupled channel has) cut
  globally until the target is met;
- ``l1`` (Li et al. 2017): dense training, then the filters with the smallest L1 norm (summed
  over a coupled channel's convs, normalised by its layer's mean, as Torch-Pruning's
  ``MagnitudeImportance(p=1)`` with a mean normaliser) cut globally until the target is met.

The peers' criteria are computed on sss's channel groups, so that the cut, the rewind and the
training are the same code for every method (Torch-Pruning's ``BNScalePruner`` and
``MagnitudePruner`` apply the same criteria, but their prune loop cannot rewind). Writes
results/peers.json and results/peers.md: test accuracy, accuracy right after the cut, MACs,
params, batch-1 and batch-64 latency and wall time per run, plus a dense model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn

import sss
from sss.cli.demo import DEMO_CONFIG
from sss.data import load_dataset
from sss.structures.gate import ChannelGated
from sss.train import Trainer

RESULTS = Path(__file__).parent / "results"
SLIM_REG = 1e-4


class PeerTrainer(Trainer):
    """The demo's run with a peer's selection: λ stays 1 (no factor optimizer) until the cut."""

    criterion = "l1"

    def build_optimizers(self):
        return super().build_optimizers()[0], None

    def optimizer_step(self, loss: torch.Tensor) -> None:
        self.weights_opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.criterion == "slimming" and not self.frozen:  # Liu et al.'s sparsity term on BN γ
            for m in self.model.modules():
                if isinstance(m, nn.BatchNorm2d) and m.weight.grad is not None:
                    m.weight.grad.add_(torch.sign(m.weight.detach()), alpha=SLIM_REG)
        self.weights_opt.step()

    def _land_budget(self) -> None:
        if not self.frozen:
            cut = cut_to_target(self.model, self.example, self.cfg.target_macs, scores(self.model, self.criterion))
            self.log(f"{self.criterion}: cut to {cut:.1%} of the dense MACs")


@torch.no_grad()
def scores(model: nn.Module, criterion: str) -> dict[str, torch.Tensor]:
    """Per channel of each channel gate: mean BN |γ| (slimming) or normalised filter L1 (l1)."""
    out = {}
    for name, wrapper in model.named_modules():
        if not isinstance(wrapper, ChannelGated) or wrapper.group is None:
            continue
        group, per_channel = wrapper.group, []
        for c in range(group.channels):
            values = []
            for s in group.slices:
                layer = model.get_submodule(s.path)
                layer = layer.inner if isinstance(layer, ChannelGated) else layer
                if s.role != "out":
                    continue
                if criterion == "slimming" and isinstance(layer, nn.BatchNorm2d):
                    values.append(float(layer.weight[list(s.index[c])].abs().mean()))
                elif criterion == "l1" and isinstance(layer, nn.Conv2d):
                    values.append(float(layer.weight[list(s.index[c])].abs().sum()))
            per_channel.append(sum(values) / max(1, len(values)) if criterion == "slimming" else sum(values))
        score = torch.tensor(per_channel)
        out[f"{name}.gate"] = score / score.mean() if criterion == "l1" else score
    return out


@torch.no_grad()
def cut_to_target(model: nn.Module, example: torch.Tensor, target: float, score: dict[str, torch.Tensor]) -> float:
    """Zeroes the lowest-scored channels globally (each gate keeps one) until the exact MACs of
    the pruned model are at most ``target`` of dense; returns the fraction reached."""
    refs = {r.name: r for r in sss.gates(model) if r.name in score}
    dense = sss.count(model, example)[0]
    order = sorted((float(v), name, i) for name, s in score.items() for i, v in enumerate(s.tolist()))
    kept = {name: r.weight.numel() for name, r in refs.items()}
    eligible = []
    for _, name, i in order:
        if kept[name] > 1:
            kept[name] -= 1
            eligible.append((name, i))

    def apply(k: int) -> float:
        for r in refs.values():
            r.weight.fill_(1.0)
        for name, i in eligible[:k]:
            refs[name].weight.view(-1)[i] = 0.0
        return sss.count(sss.prune(model), example)[0] / dense

    lo, hi = 0, len(eligible)
    while lo < hi:  # the fewest cut channels that meet the target
        mid = (lo + hi) // 2
        if apply(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return apply(lo)


def run(method: str, target: float, seed: int, out: Path, train, test) -> dict:
    folder = str(out / f"{method}_{target}_{seed}")
    base = dataclasses.replace(DEMO_CONFIG, seed=seed, target_macs=target, out_dir=folder)
    start = time.perf_counter()
    if method == "sss":
        result = Trainer(base, train_data=train, progress=False).fit(overwrite=True)
    else:
        cfg = dataclasses.replace(base, structures=["channel"], gamma=0.0)
        trainer = type("Peer", (PeerTrainer,), {"criterion": method})(cfg, train_data=train, progress=False)
        result = trainer.fit(overwrite=True)
    seconds = time.perf_counter() - start
    example = torch.zeros(1, *test.shape)
    macs, params = sss.count(result.compact, example)
    return {"method": method, "target": target, "seed": seed, "accuracy": sss.evaluate(result.compact, test)[0],
            "accuracy_after_cut": sss.evaluate(sss.prune(result.selected), test)[0], "macs": macs,
            "params": params, "seconds": seconds, "model": result.compact}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--methods", nargs="+", default=["sss", "slimming", "l1"])
    parser.add_argument("--out", default="runs/bench_peers")
    parser.add_argument("--dense", help="a dense model trained on the same schedule and seed (bench_demo.py's "
                                        "runs/bench_demo/seed0/dense/model), instead of training one here")  # fmt: skip
    args = parser.parse_args()
    out = Path(args.out)
    train, test = load_dataset("fashion-mnist", True), load_dataset("fashion-mnist", False)
    if args.dense:
        dense = sss.load(args.dense)
    else:
        dense_cfg = dataclasses.replace(DEMO_CONFIG, sparsity="none", freeze_epoch=None, target_macs=None,
                                        out_dir=str(out / "dense"))  # fmt: skip
        dense = Trainer(dense_cfg, train_data=train, progress=False).fit(overwrite=True).compact
    rows = [run(m, t, s, out, train, test) for t in args.targets for s in args.seeds for m in args.methods]
    models = {"dense": dense, **{f"{r['method']} {r['target']} s{r['seed']}": r.pop("model") for r in rows}}
    latency = sss.compare_latency(models, test.shape, (1, 64), rounds=5)
    for r in rows:
        r["latency_ms"] = {str(b): v for b, v in latency[f"{r['method']} {r['target']} s{r['seed']}"].items()}
    example = torch.zeros(1, *test.shape)
    report = {"dense": {"accuracy": sss.evaluate(dense, test)[0], "macs": sss.count(dense, example)[0],
                        "latency_ms": {str(b): v for b, v in latency["dense"].items()}},
              "device": sss.measure.device_name("cpu"), "runs": rows}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "peers.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = ["| method | target | accuracy | after cut | MACs | params | b1 ms | b64 ms | s |", "|---" * 9 + "|"]
    lines += [f"| {r['method']} | {r['target']} | {r['accuracy']:.2f}% | {r['accuracy_after_cut']:.2f}% | "
              f"{r['macs'] / 1e6:.2f}M | {r['params'] / 1e3:.1f}k | {r['latency_ms']['1']:.2f} | "
              f"{r['latency_ms']['64']:.2f} | {r['seconds']:.0f} |" for r in rows]  # fmt: skip
    d = report["dense"]
    lines.append(f"| dense | 1.0 | {d['accuracy']:.2f}% | | {d['macs'] / 1e6:.2f}M | | {d['latency_ms']['1']:.2f} | "
                 f"{d['latency_ms']['64']:.2f} | |")  # fmt: skip
    (RESULTS / "peers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
