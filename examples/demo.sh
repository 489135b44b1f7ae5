#!/usr/bin/env bash
# The five verbs end to end on a synthetic data set, offline, in a few minutes on a CPU.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf tiny-screws demo-out
python make_tiny_screws.py tiny-screws
anomaly inspect tiny-screws
anomaly split tiny-screws --out demo-out/split.csv
anomaly train tiny-screws --method patchcore --run-dir demo-out/patchcore
anomaly eval demo-out/patchcore/model.safetensors tiny-screws --json demo-out/metrics.json
anomaly predict demo-out/patchcore/model.safetensors tiny-screws/test/not-good --heatmaps demo-out/heatmaps --output demo-out/predictions.csv
