#!/usr/bin/env bash
# After a device run of bench/gpu/train.sh: each job's run folder into ${RUNS:-runs/gpu}/<job> (git-ignored),
# the SIRST-v2 run's snapshots scored on its val split here (irtrack select), and what to do next.
# Usage: bench/gpu/collect_training.sh DIR   (DIR: the device tool's files_at)
set -euo pipefail
cd "$(dirname "$0")/../.."
from=${1:?usage: bench/gpu/collect_training.sh FILES_AT}
mkdir -p ${RUNS:-runs/gpu}
cp "$from/train.log" ${RUNS:-runs/gpu}/train.log
for archive in "$from"/*.tar; do
    tar -xf "$archive" -C ${RUNS:-runs/gpu}
done
[ -d ${RUNS:-runs/gpu}/sd2net-sirst-v2/snapshots ] && .venv/bin/irtrack select ${RUNS:-runs/gpu}/sd2net-sirst-v2 --device cpu
cat ${RUNS:-runs/gpu}/train.log
echo "next: irtrack eval each ${RUNS:-runs/gpu}/*/best.safetensors on its test split (docs/accuracy.md, 'Shipping weights')"
