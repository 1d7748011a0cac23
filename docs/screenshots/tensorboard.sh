#!/usr/bin/env bash
# Screenshot of TensorBoard's scalars page for a run folder, by headless Chromium (Debian: apt-get install chromium).
#   docs/screenshots/tensorboard.sh runs/quickstart-pretrain docs/screenshots/tensorboard-quickstart.png
# Optional: a third argument WIDTHxHEIGHT (default 1600x790), and TAGS, a regular expression of the scalars shown.
# Starts `tensorboard --logdir RUN` on a free local port, waits until it answers, lets Chromium render the
# scalars page into PNG, and stops TensorBoard again.
set -euo pipefail
run=${1:?usage: $0 RUN_DIR OUT.png [WIDTHxHEIGHT]}
out=${2:?usage: $0 RUN_DIR OUT.png [WIDTHxHEIGHT]}
size=${3:-1600x790}
tags=${TAGS:-'^(train/loss|val/loss|val/ppl|lr-AdamW/pg1|train/device/items_per_sec|zeroshot/polarity)$'}
filter=$(python -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tags")
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "error: no Chromium found; install it (Debian: apt-get install chromium)" >&2; exit 2; }
[ -d "$run/tensorboard" ] || { echo "error: $run has no tensorboard/ folder; is it a gptkit run folder?" >&2; exit 2; }
port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
tensorboard --logdir "$run/tensorboard" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
tb=$!
trap 'kill "$tb" 2>/dev/null || true' EXIT
url="http://127.0.0.1:$port"
for _ in $(seq 60); do  # TensorBoard takes a few seconds to start and read the event files
  if python -c "import urllib.request, sys; urllib.request.urlopen('$url/data/plugins_listing', timeout=1)" 2>/dev/null; then
    break
  fi
  sleep 1
done
sleep 3  # let it finish loading the scalars
profile=$(mktemp -d)
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --user-data-dir="$profile" \
  --window-size="${size/x/,}" --virtual-time-budget=20000 --run-all-compositor-stages-before-draw \
  --screenshot="$(realpath -m "$out")" "$url/?darkMode=false#scalars&_smoothingWeight=0&tagFilter=$filter" 2>/dev/null
rm -rf "$profile"
echo "$out"
