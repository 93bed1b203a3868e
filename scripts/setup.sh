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
# transformers: the dev extra). torch 2.13.0 is installed first, so that nothing pulls another
# torch: where this machine's disk holds its CPU wheel (pip's find-links), that wheel (0.9 GB
# installed, against 5.5 GB for the CUDA build with its NVIDIA libraries: a CI machine ran out
# of disk on those). PyPI's torchvision 0.28.0 links its C++ ops against the CUDA build; beside
# the CPU one it imports only with scripts/torchvision_without_ops.py (its docstring says why),
# which is installed where, and only where, the plain import fails.
# Reinstall when pyproject.toml or this script changed since the last install.
stamp=.venv/.sss-setup.sha256
if ! .venv/bin/python -c "import torch, torchvision, sss" 2>/dev/null || ! sha256sum -c --status "$stamp" 2>/dev/null; then
    PIP=(.venv/bin/python -m pip install -q --no-cache-dir)
    "${PIP[@]}" --upgrade pip
    "${PIP[@]}" torch==2.13.0 torchvision==0.28.0
    site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    rm -f "$site/sss_torchvision_without_ops.py" "$site/sss_torchvision_without_ops.pth"
    if ! .venv/bin/python -c "import torchvision" 2>/dev/null; then
        cp scripts/torchvision_without_ops.py "$site/sss_torchvision_without_ops.py"
        echo "import sss_torchvision_without_ops" > "$site/sss_torchvision_without_ops.pth"
        .venv/bin/python -c "import torchvision"  # fails loudly if the hook does not cover it
    fi
    "${PIP[@]}" -e ".[dev]"
    sha256sum pyproject.toml scripts/setup.sh scripts/torchvision_without_ops.py > "$stamp"
fi
