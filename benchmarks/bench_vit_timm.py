"""A real timm ViT from a trained model: timm's ViT-Tiny (``vit_tiny_patch16_224``'s widths,
timm's own ``Attention`` and ``Mlp``) on 28×28 Fashion-MNIST with 7×7 patches (timm_vit.py),
sss (heads, MLP neurons, the embedding width and both residual branches of every block, factors
from importance per MAC) against Torch-Pruning's ViT pruning and the uniform-width control, at
equal MACs and equal epochs (methods: peer_methods.py).

The dense model is trained once with AdamW (10 epochs on a 25k/5k split, timm_vit.train_adamw)
and shared; every run starts from it and gets the trained-model track's 3 epochs of SGD at lr
0.01 on a 10k/2k split drawn by its seed. The test set is read only at the end.

    .venv/bin/python benchmarks/bench_vit_timm.py [--targets 0.5 0.7] [--seeds 0 1 2]
        [--methods ...] [--out runs/bench_vit_timm] [--train-only | --report-only]

Writes results/vit_timm.json, results/vit_timm.md and results/vit_timm_accuracy_vs_{macs,latency}.png.
Resumable run by run. Needs timm (``pip install -e .[zoo]``).
"""

from head_to_head import main

if __name__ == "__main__":
    main("vit-timm", __doc__, targets=(0.3, 0.5, 0.7), seeds=(0, 1, 2, 3, 4))
