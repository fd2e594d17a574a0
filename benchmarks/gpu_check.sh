#!/usr/bin/env bash
# The GPU checks of issue 35 in one run, each part bounded in time, most important first:
#   1. the CUDA tests (tests/test_gpu.py: FSDP, fp16 with a GradScaler, host syncs, ...)
#   2. a fast ResNet-50 run with and without every callback, and the host-sync fit
#   3. the drawing worker off and on, on the ImageNet-shaped workload (background_drawing.py)
#   4. the digits suite with the worker off and on (suite_cost.py --worker-off)
#   5. the fast run under torch.compile, with what time is left
# Usage: benchmarks/gpu_check.sh OUTPUT_DIR [SECONDS]   (SECONDS: the whole run's limit, 540)
# Writes env.txt, pytest.log, fast_run.md, compile.md, benchmarks.md (the sections the
# benchmark scripts wrote) and run.log (everything they printed) under OUTPUT_DIR.
set -u
out=${1:?output directory}
limit=${2:-540}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PY:-python3}
start=$SECONDS
left() { echo $((limit - (SECONDS - start))); }
part() {  # part NAME SECONDS COMMAND...: run COMMAND for at most SECONDS (or what is left)
    local name=$1 seconds=$2
    shift 2
    local remaining
    remaining=$(left)
    ((seconds > remaining)) && seconds=$remaining
    if ((seconds < 20)); then
        echo "== $name: skipped, ${remaining} s left" | tee -a "$out/run.log"
        return
    fi
    echo "== $name (at most ${seconds} s; $(left) s left)" | tee -a "$out/run.log"
    timeout "$seconds" "$@" >>"$out/run.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s" | tee -a "$out/run.log"
}
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    "$py" -c "import torch, pytorch_lightning as pl, torchvision, sys; print(sys.version); \
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__, \
'torchvision', torchvision.__version__)"
    nproc
} >"$out/env.txt" 2>&1
part "CUDA tests" 150 "$py" -m pytest tests/test_gpu.py -v -rA -p no:cacheprovider \
    --junitxml="$out/pytest.xml"
cp "$out/run.log" "$out/pytest.log"
part "fast run" 240 "$py" benchmarks/gpu_fast_run.py --sync-check --out "$out/fast_run.md"
part "drawing worker, ImageNet-shaped" 80 "$py" benchmarks/background_drawing.py \
    --accelerator cuda
part "digits suite, worker off and on" 70 "$py" benchmarks/suite_cost.py --worker-off --rounds 2
part "fast run, torch.compile" 600 "$py" benchmarks/gpu_fast_run.py --compile --steps 250 \
    --epochs 2 --out "$out/compile.md"
cp docs/benchmarks.md "$out/benchmarks.md"
echo "== done after $((SECONDS - start)) s" | tee -a "$out/run.log"
