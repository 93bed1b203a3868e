"""Vision transformers from a trained model: sss (heads, MLP neurons and both residual branches
of every block) against Torch-Pruning's ViT pruning (heads and channels, run by Torch-Pruning),
at equal MACs and equal epochs, with and without distillation (methods: peer_methods.py).

One dense ``vit_fmnist`` (28×28, patch 4, width 64, depth 4, 4 heads) is trained with the demo's
recipe (8 cosine epochs, 25k/5k Fashion-MNIST split) and shared; every run starts from it and
gets the trained-model track's 3 epochs at lr 0.01 on a 10k/2k split drawn by its seed. The test
set is read only at the end.

    .venv/bin/python benchmarks/bench_vit.py [--targets 0.5 0.7] [--seeds 0 1 2]
        [--methods ...] [--out runs/bench_vit] [--train-only | --report-only] [--quick]

Writes results/vit.json (a list of records: method, target, seed, accuracy, macs_fraction,
accuracy_after_cut, params, b1_ms, b64_ms, seconds, commit), results/vit.md and
results/vit_accuracy_vs_{macs,latency}.png. Resumable run by run.
"""

from head_to_head import main

if __name__ == "__main__":
    main("vit", __doc__, targets=(0.5, 0.7), seeds=(0, 1, 2))
