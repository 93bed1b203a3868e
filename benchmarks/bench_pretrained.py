"""Head-to-head from a trained model: sss against Torch-Pruning's pruners (run by Torch-Pruning),
GAL and the uniform/random controls, at equal MACs and equal epochs (methods: peer_methods.py).

One dense ResNet-20 is trained with the demo's recipe (8 cosine epochs, 25k/5k Fashion-MNIST
split) and shared; every run starts from it and gets the same 3 epochs at lr 0.01 on a 10k/2k
split drawn by its seed (the seeds vary the fine-tune). The test set is read only at the end.

    .venv/bin/python benchmarks/bench_pretrained.py [--targets 0.3 0.5 0.7] [--seeds 0 1 2 3 4]
        [--methods ...] [--out runs/bench_pretrained] [--train-only | --report-only] [--quick]

Writes results/pretrained.json (a list of records: method, target, seed, accuracy,
macs_fraction, accuracy_after_cut, params, b1_ms, b64_ms, seconds, commit), results/pretrained.md
and results/pretrained_accuracy_vs_{macs,latency}.png. Resumable run by run.
"""

from head_to_head import main

if __name__ == "__main__":
    main("trained", __doc__)
