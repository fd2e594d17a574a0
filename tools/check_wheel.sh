#!/usr/bin/env bash
# The release check (`make wheel-check`): build the sdist and the wheel, check them, install the
# wheel alone (no dev extras, no source tree) into a fresh venv, run its demo outside the source
# tree and read the logs back. Usage: tools/check_wheel.sh PYTHON (the dev venv's python).
set -euo pipefail
dev_python=${1:-.venv/bin/python}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/convviz-wheel-XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$root"
rm -rf dist
"$dev_python" -m build --sdist --wheel --outdir dist . > "$work/build.log" 2>&1 || {
    tail -30 "$work/build.log"; exit 1; }
"$dev_python" -m twine check --strict dist/*
"$dev_python" tools/wheel_contents.py dist/*.whl
python3 -m venv "$work/venv"
# torch first, pinned, so pip takes it from this machine's disk (as `make install` does)
"$work/venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
"$work/venv/bin/pip" install -q dist/*.whl
mkdir "$work/elsewhere"
cd "$work/elsewhere"
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
import lightning_convviz
assert lightning_convviz.__file__.startswith(sys.argv[1]), lightning_convviz.__file__
print("installed:", lightning_convviz.__version__, lightning_convviz.__file__)
PY
"$work/venv/bin/convviz-demo" --epochs 2 --logdir logs > "$work/demo.log" 2>&1 || {
    tail -30 "$work/demo.log"; exit 1; }
"$work/venv/bin/python" "$root/tools/read_demo_logs.py" logs
# without the demo extra, the photographs demo says what to install (and trains nothing)
if "$work/venv/bin/convviz-demo" --data photos --logdir logs > "$work/photos.log" 2>&1; then
    echo "convviz-demo --data photos ran without scikit-image"; exit 1
fi
grep -q "lightning_convviz\[demo\]" "$work/photos.log" || { tail -5 "$work/photos.log"; exit 1; }
echo "wheel check passed: $(ls "$root"/dist)"
