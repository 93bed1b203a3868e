#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: the Fashion-MNIST Debian package (the embedded
# default dataset), a virtual environment in .venv, and this package with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
# pyproject.toml takes torch>=2.3. The tests run the model zoos users have (timm, torchvision,
# transformers: the dev extra), and PyPI's torchvision loads only beside its own torch build:
# torch 2.14.1 + torchvision 0.29.1 (a CUDA build, ~5.5 GB, that runs on the CPU) are installed
# first, together, so that nothing pulls another torch.
# Reinstall when pyproject.toml changed since the last install (a new dependency).
stamp=.venv/.sss-pyproject.sha256
if ! .venv/bin/python -c "import torch, sss" 2>/dev/null || ! sha256sum -c --status "$stamp" 2>/dev/null; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
    .venv/bin/python -m pip install -q -e ".[dev]"
    sha256sum pyproject.toml > "$stamp"
fi
