#!/usr/bin/env bash
# The evaluation report on the screws development set, looked at in a real browser: trains the
# default patchcore on 70 % of DATA, evaluates the held-out 30 % with --report, and screenshots
# the page with headless Chromium. Not part of CI (it needs the data and chromium:
# apt install chromium). About 2 minutes on 2 cores.
#
#   bash examples/report_screenshot.sh [DATA] [OUT]     # defaults: ../shared/data/screws, /tmp/anomalycli-report
set -euo pipefail
data=$(realpath "${1:-../shared/data/screws}")
out=$(realpath -m "${2:-/tmp/anomalycli-report}")
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "error: no chromium found; install it (apt install chromium)" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out" && cd "$out"
anomaly split "$data" --val-ratio 0.3 --out split.csv
sed -i "s/,val\(\r\?\)$/,test\1/" split.csv   # the held-out part becomes the test split train never sees
anomaly train "$data" --manifest split.csv
anomaly eval "$data" --manifest split.csv --report report --json metrics.json
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,5000 \
  --screenshot="$out/report.png" "file://$out/report/index.html" 2>/dev/null
echo "report: $out/report/index.html; screenshot: $out/report.png"
