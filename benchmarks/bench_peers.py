"""Head-to-head from scratch: sss against Torch-Pruning's pruners (run by Torch-Pruning) and the
uniform/random controls, at equal MACs and equal epochs (methods: peer_methods.py).

Every method of a seed starts from the same initialisation and gets 6 epochs on a 10k/2k
Fashion-MNIST split: 2 before the cut (dense, or sparse for SSS, slimming and group sparse
learning), 4 after it on the compact model. A dense ResNet-20 per seed is the reference.

    .venv/bin/python benchmarks/bench_peers.py [--targets 0.3 0.5 0.7] [--seeds 0 1 2 3 4]
        [--methods ...] [--out runs/bench_peers] [--train-only | --report-only] [--quick]

Writes results/peers.json (a list of records: method, target, seed, accuracy, macs_fraction,
accuracy_after_cut, params, b1_ms, b64_ms, seconds, commit), results/peers.md and
results/peers_accuracy_vs_{macs,latency}.png. Resumable run by run.
"""

from head_to_head import main

if __name__ == "__main__":
    main("scratch", __doc__)
