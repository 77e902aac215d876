#!/usr/bin/env bash
# Prepares, on a development machine, what bench/gpu/train.sh needs on the device machine: the
# training splits of NUDT-SIRST and SIRST-v2 (bench/gpu/pack_data.py) in .device/shared/data,
# git-ignored, named in the device tool's carry. The device image has every package training
# imports (torch, numpy, OpenCV, safetensors, tqdm, typer): no wheels. Then, on the device:
#   run(command="bench/gpu/train.sh", carry=[".device"], timeout_s=600)
# and back here: bench/gpu/collect_training.sh <files_at>.
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${IRTRACK_SHARED:-../shared}
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
rm -rf .device
mkdir -p .device/shared/data
.venv/bin/python -m bench.gpu.pack_data "$shared/data" .device/shared/data
du -sh .device
