#!/usr/bin/env bash
# The five verbs end to end on a synthetic data set, offline, in a few minutes on a CPU,
# typed as a user would in a project folder that holds data/ (runs go to runs/train-N).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf demo-project
mkdir demo-project
cd demo-project
python ../make_tiny_screws.py data
anomaly inspect
anomaly split --out split.csv
anomaly train
anomaly eval --json metrics.json
anomaly predict data/test --heatmaps heatmaps --output predictions.csv
