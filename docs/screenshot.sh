#!/usr/bin/env bash
# Screenshot of TensorBoard showing lightning_convviz's images (not run in CI).
#
# Needs Debian's Chromium (apt-get install chromium) and the project's .venv (make install).
# Trains the digits demo for a few epochs into a temporary log directory, serves it with
# TensorBoard on a free local port, and lets headless Chromium photograph the images tab.
#
# Usage: docs/screenshot.sh [output.png] [tag filter] [tab]
#   docs/screenshot.sh docs/images/tensorboard_custom_scalars.png "" custom_scalars
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/images/tensorboard.png}
filter=${2-attribution}
tab=${3:-images}
height=$([ "$tab" = images ] && echo 1100 || echo 1300)
logdir=$(mktemp -d)
profile=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$logdir" "$profile"' EXIT

.venv/bin/python -m lightning_convviz.demo --epochs 6 --logdir "$logdir" > /dev/null 2>&1
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
.venv/bin/tensorboard --logdir "$logdir" --host 127.0.0.1 --port "$port" > /dev/null 2>&1 &
server=$!
for _ in $(seq 60); do
  curl -sf "http://127.0.0.1:$port/data/plugin/images/tags" > /dev/null && break
  sleep 1
done
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1400,"$height" \
  --virtual-time-budget=20000 --screenshot="$out" \
  "http://127.0.0.1:$port/?darkMode=false#$tab&tagFilter=$filter" 2> /dev/null
echo "wrote $out"
