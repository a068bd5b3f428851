#!/usr/bin/env bash
# `make ui-check` (not part of CI): show in a real browser that the MLflow UI lists a run's
# retained checkpoints.
#
# 1. installs Debian's chromium (apt-get) unless it is there;
# 2. trains a short run of the mammal closure into a throwaway SQLite store;
# 3. starts `python cli.py ui` on that store (its own process group, stopped on exit);
# 4. opens a deep link to a checkpoint with headless chromium and checks the rendered DOM
#    (--dump-dom) for every retained checkpoint name;
# 5. with playwright-core (npm, into the scratch folder) clicks the collapsed folders open,
#    checks that the checkpoints, the final model and the picture are visible, and saves a
#    screenshot to docs/ui-artifacts.png.
#
# Environment: PORT (default: a free one), KEEP_TMP=1 keeps the scratch folder,
# CHROMIUM (default: /usr/bin/chromium).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
PLAYWRIGHT_CORE=1.65.1  # npm; drives the system chromium (it downloads no browser)
SHOT=$ROOT/docs/ui-artifacts.png
TMP=$(mktemp -d -t hype-ui-check.XXXXXX)
UI_PID=""

cleanup() {
    if [[ -n $UI_PID ]]; then
        kill -TERM -- "-$UI_PID" 2>/dev/null || true  # the ui command's group
        for _ in $(seq 50); do kill -0 -- "-$UI_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL -- "-$UI_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then echo "scratch folder kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

if [[ ! -x $CHROMIUM ]]; then
    echo "== installing chromium (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$CHROMIUM" --version

echo "== training a short run into $TMP"
URI="sqlite:///$TMP/mlflow.db"
"$PY" cli.py train --epochs 50 --burnin 10 --eval-every 10 --keep-checkpoints 3 --tracking-uri "$URI" \
    --checkpoint-dir "$TMP/ckpt" --experiment ui-check --quiet | tee "$TMP/train.log"
read -r RUN EXP < <(sed -n 's/^Run: \([0-9a-f]*\) (experiment \([0-9]*\)).*/\1 \2/p' "$TMP/train.log")
[[ -n $RUN && -n $EXP ]] || { echo "could not read the run id from the training output"; exit 1; }
mapfile -t CHECKPOINTS < <("$PY" - "$URI" "$RUN" <<'EOF'
import sys
from mlflow.tracking import MlflowClient
for a in MlflowClient(sys.argv[1]).list_artifacts(sys.argv[2], "hype_checkpoints"):
    print(a.path.rsplit("/", 1)[-1])
EOF
)
MODEL=$(sed -n 's|^Final model file: .*/\(.*\)\.pth$|\1|p' "$TMP/train.log")
echo "retained checkpoints: ${CHECKPOINTS[*]}; final model: $MODEL.pth"

PORT=${PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
echo "== starting the UI on 127.0.0.1:$PORT"
setsid "$PY" cli.py ui --port "$PORT" --tracking-uri "$URI" >"$TMP/ui.log" 2>&1 &
UI_PID=$!  # setsid: it leads its own process group
for _ in $(seq 150); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break
    kill -0 "$UI_PID" 2>/dev/null || { cat "$TMP/ui.log"; exit 1; }
    sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/health" >/dev/null || { echo "the UI did not start"; cat "$TMP/ui.log"; exit 1; }

NEWEST=${CHECKPOINTS[-1]}
BASE="http://127.0.0.1:$PORT"
# 1. Chromium alone: a deep link to a file inside the folder. MLflow 3.17 renders the folder's
#    entries from it but keeps the folder collapsed (display: none), so this proves the names
#    are in the page, not that a person sees them.
URL="$BASE/#/experiments/$EXP/runs/$RUN/artifacts/hype_checkpoints/$NEWEST?workflowType=machine_learning"
echo "== chromium --dump-dom $URL"
FLAGS=(--headless --no-sandbox --disable-gpu --disable-background-networking --disable-component-update
       --disable-sync --no-first-run --hide-scrollbars --window-size=1400,900 --virtual-time-budget=20000)
"$CHROMIUM" "${FLAGS[@]}" --user-data-dir="$TMP/profile-dom" --dump-dom "$URL" >"$TMP/dom.html" 2>"$TMP/chromium.log" || {
    cat "$TMP/chromium.log"; exit 1; }
missing=0
for name in "${CHECKPOINTS[@]}"; do
    if grep -qF "artifact-name=\"$name\"" "$TMP/dom.html"; then echo "in the page: $name"; else echo "MISSING: $name"; missing=1; fi
done
[[ $missing == 0 ]] || { echo "the rendered page lacks some names; see $TMP/dom.html (KEEP_TMP=1)"; exit 1; }

# 2. playwright-core drives the same chromium: click the folders open, wait for the animation,
#    check each name is visible, take the screenshot.
echo "== playwright-core (npm) into $TMP"
npm install --prefix "$TMP" --no-save --no-audit --no-fund --silent "playwright-core@$PLAYWRIGHT_CORE"
CHROMIUM=$CHROMIUM NODE_PATH="$TMP/node_modules" node scripts/ui_check.cjs "$BASE" "$EXP" "$RUN" "$SHOT" \
    "${CHECKPOINTS[@]}" "$MODEL.pth" poincare_disk.png
echo "OK: screenshot saved to ${SHOT#"$ROOT"/}"
