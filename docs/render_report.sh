#!/usr/bin/env bash
# Render the scan report of the shipped model and screenshot it in headless Chromium.
#   docs/render_report.sh [OUT_DIR]      (needs: .venv with interp, Debian's `chromium`)
# Writes OUT_DIR (default /tmp/interp-report-demo) with the scan + report.html (SKIP_SCAN=1 reuses it), docs/report.png,
# and checks the page rendered: Chromium's console must show no errors and the DOM must contain
# the plotly heatmaps and the circuitsvis attention views.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/interp-report-demo}
PY=${PYTHON:-.venv/bin/python}
CHROMIUM=${CHROMIUM:-chromium}
# The default scan (every analysis, 256 tokens: a few minutes on CPU), as `make demo` runs it.
# SCAN_ARGS adds options, e.g. SCAN_ARGS="--analyses sink,entropy,previous_token,induction -c 64" for a quick look.
SCAN_ARGS=${SCAN_ARGS:-}
if [ -z "${SKIP_SCAN:-}" ]; then
    # shellcheck disable=SC2086
    "$PY" -m interp.cli scan smollm2-135m --out "$OUT" --overwrite $SCAN_ARGS
fi

PROFILE=$(mktemp -d)
trap 'rm -rf "$PROFILE"' EXIT
FLAGS=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --no-first-run --user-data-dir="$PROFILE" --virtual-time-budget=15000)
"$CHROMIUM" "${FLAGS[@]}" --window-size=1400,2400 --screenshot="$PWD/docs/report.png" \
    --enable-logging=stderr --v=0 "file://$OUT/report.html" 2> "$OUT/chromium.log" || true
"$CHROMIUM" "${FLAGS[@]}" --dump-dom "file://$OUT/report.html" > "$OUT/dom.html" 2>/dev/null

heatmaps=$(grep -o 'class="main-svg"' "$OUT/dom.html" | wc -l)
attention=$(grep -o 'id="attention-\(natural\|repeated\)"><div' "$OUT/dom.html" | wc -l)
errors=$(grep -ci 'CONSOLE.*error\|Uncaught' "$OUT/chromium.log" || true)
echo "plotly svgs: $heatmaps, rendered attention views: $attention, console errors: $errors"
echo "screenshot: docs/report.png"
[ "$heatmaps" -gt 0 ] && [ "$attention" -eq 2 ] && [ "$errors" -eq 0 ]
