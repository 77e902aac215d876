#!/usr/bin/env bash
# The GPU training run (bench/gpu/train.py) as one device command, after
# bench/gpu/prepare_training.sh:   run(command="bench/gpu/train.sh", carry=[".device"], timeout_s=600)
# Everything lands in $OUT: one tar per job (its best weights or snapshots, log, checkpoint
# sidecar) as each finishes, and train.log. SMOKE=1 bench/gpu/train.sh runs the same jobs at toy
# sizes on this machine's CPU: a check of the script before a device run.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/irtrack-gpu-train-out}
mkdir -p "$out"
log=$out/train.log
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
[ -d .device/shared ] && export IRTRACK_SHARED=$PWD/.device/shared
if [ "${SMOKE:-0}" = 1 ]; then
    .venv/bin/python -m bench.gpu.train --out "$out" --smoke 2>&1 | tee "$log"
else
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$log" 2>&1
    timeout 560 python3 -m bench.gpu.train --out "$out" 2>&1 | tee -a "$log"
fi
echo "results: $(ls "$out" | tr '\n' ' ')" | tee -a "$log"
