#!/usr/bin/env bash
# After a device run of bench/gpu/run.sh: its results into docs/results, the papers-vs-ours
# table rebuilt and the generated blocks of README.md and docs/ refreshed. Usage: bench/gpu/collect.sh DIR
# (DIR: the device tool's files_at, holding gpu-results.tar.gz and run.log).
set -euo pipefail
cd "$(dirname "$0")/../.."
from=${1:?usage: bench/gpu/collect.sh FILES_AT}
tar -xzf "$from/gpu-results.tar.gz" -C docs/results
cp "$from/run.log" docs/results/gpu-run.log
.venv/bin/python -m bench.papers >/dev/null
.venv/bin/python -m bench.readme
