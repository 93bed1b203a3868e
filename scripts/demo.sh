#!/usr/bin/env bash
# Set up (if needed) and run the main job: SSS on Fashion-MNIST, end to end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/sss demo "$@"
