"""Cost of an SSS training step against a plain SGD step, and of `sss.prune`.

    .venv/bin/python benchmarks/bench_step.py

SSS step: the gated model, Nesterov SGD on the weights and APG on the block factors.
Plain step: the same architecture without gates and the same SGD. Both on a batch of 128
Fashion-MNIST-shaped inputs, timed in interleaved rounds (median). Target: SSS <= 1.05x.
Also times `sss.prune` on a gated ResNet-56, blocks and blocks + channels (target < 0.5 s). Writes results/step.json.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import sss

RESULTS = Path(__file__).parent / "results"


def _step_fn(model, weights, factors, x, y):
    def step():
        loss = F.cross_entropy(model(x), y)
        weights.zero_grad(set_to_none=True)
        if factors:
            factors.zero_grad(set_to_none=True)
        loss.backward()
        weights.step()
        if factors:
            factors.step()

    return step


def time_steps(name: str, rounds: int = 15, steps: int = 4) -> dict:
    torch.manual_seed(0)
    x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (128,))
    fns = {}
    for kind in ("plain", "sss"):
        model = sss.models.create(name, num_classes=10, in_channels=1)
        if kind == "sss":
            model = sss.attach(model, inplace=True)
        model = model.to(memory_format=torch.channels_last).train()
        weights, factors = sss.build_optimizers(model, lr=0.01, gamma=0.01)
        fns[kind] = _step_fn(model, weights, factors, x, y)
        fns[kind]()  # warm-up
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for kind, fn in fns.items():
            start = time.perf_counter()
            for _ in range(steps):
                fn()
            samples[kind].append((time.perf_counter() - start) / steps)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {
        "model": name,
        "plain_ms": 1e3 * med["plain"],
        "sss_ms": 1e3 * med["sss"],
        "ratio": med["sss"] / med["plain"],
    }


def time_prune(name: str = "resnet56", structures=("block",), repeats: int = 5) -> float:
    gated = sss.attach(sss.models.create(name), torch.zeros(1, 3, 32, 32), structures)
    with torch.no_grad():
        for i, g in enumerate(sss.gates(gated)):
            g.weight.fill_(0.0 if i % 3 == 0 else 0.7)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sss.prune(gated)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    steps = [time_steps("resnet20"), time_steps("resnet56", rounds=7)]
    prune_s = time_prune()
    joint_s = time_prune(structures=("block", "channel"))  # 57 gates, 1/3 zero
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "step.json").write_text(
        json.dumps({"steps": steps, "prune_resnet56_s": prune_s, "prune_resnet56_blocks_channels_s": joint_s}, indent=2)
        + "\n"
    )
    ok = True
    for s in steps:
        passed = s["ratio"] <= 1.05
        ok &= passed
        print(f"{'PASS' if passed else 'FAIL'}  {s['model']}: SSS step {s['sss_ms']:.1f} ms vs plain "
              f"{s['plain_ms']:.1f} ms = {s['ratio']:.3f}x (target <= 1.05x)")  # fmt: skip
    for label, secs in (("blocks", prune_s), ("blocks + channels", joint_s)):
        verdict = "PASS" if secs < 0.5 else "FAIL"
        print(f"{verdict}  sss.prune(resnet56, {label}): {1e3 * secs:.0f} ms (target < 500 ms)")
    return 0 if ok and max(prune_s, joint_s) < 0.5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
