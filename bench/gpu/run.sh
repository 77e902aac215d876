#!/usr/bin/env bash
# Every GPU measurement of issue #8 in one run of the device tool (the steps' limits add up to
# under its 10 minutes per command; a session has 15 minutes of device time, start included):
#   1. here:    bench/gpu/prepare.sh       wheels + data into .device/ (git-ignored)
#   2. device:  run(command="bench/gpu/run.sh", carry=[".device"], timeout_s=600)
#   3. here:    bench/gpu/collect.sh <files_at>   results into docs/results, docs refreshed
# Steps: the GPU tests; model throughput (fp32/fp16/bf16 eager; fp16/bf16 CUDA graphs and
# channels_last); STD2Net cached streaming; the service at 640x512: saturation and the capacity
# search (25-fps streams with p99 < 50 ms, nothing lost) for SD2Net and STD2Net, embedded queue
# (the device machine has no redis-server); with the time left, SD2Net's again unpipelined.
# Each step has its own time limit, so one slow step
# costs its own results only, and results are packed after every step. Everything lands in
# $OUT/gpu-results.tar.gz and $OUT/run.log.
# SMOKE=1 bench/gpu/run.sh runs the same steps at toy sizes on this machine's CPU: a check of
# the script itself, for before a device run.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-/tmp/irtrack-gpu-out}
results=$(mktemp -d)
mkdir -p "$out"
log=$out/run.log
: >"$log"

if [ -d .device/whl ] && [ "${SMOKE:-0}" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/irtrack-site \
        .device/whl/*.whl >>"$log" 2>&1 || { echo "wheels did not install" | tee -a "$log"; exit 1; }
    export PYTHONPATH=/tmp/irtrack-site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
[ -d .device/shared ] && export IRTRACK_SHARED=$PWD/.device/shared

if [ "${SMOKE:-0}" = 1 ]; then
    # fp32 streaming: bf16 is emulated (slow) on a CPU without native bf16 (AVX2 only)
    py=.venv/bin/python device=cpu half=bfloat16 bench_half=fp32
    sizes=(--frame-size 32x32) service_size=32x32 batches=(--batch 1 --batch 2)
    dtypes=(--dtype fp32 --dtype bf16) fast=(--dtype bf16 --mode channels-last)
    service=(--seconds 1.5 --warmup 0.5 -n 2 --fps 0 --capacity-fps 5 --p99-limit 5000
             --max-capacity-streams 2 --max-batch 2 --threads 1 --client-processes 2)
else
    py=python3 device=cuda half=float16 bench_half=fp16
    sizes=(--frame-size 256x256 --frame-size 512x512 --frame-size 640x512) service_size=640x512
    batches=(--batch 1 --batch 8 --batch 32)
    dtypes=(--dtype fp32 --dtype fp16 --dtype bf16) fast=(--dtype fp16 --dtype bf16
            --mode cuda-graph --mode channels-last)
    service=(--seconds 3 --warmup 2 -n 16 --fps 0 --capacity-fps 25 --p99-limit 50 --client-processes 6
             --max-capacity-streams 256 --max-batch 32)
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv >>"$log" 2>&1
fi
irtrack=("$py" -c "from cli.app import main; main()")

step() {  # step NAME SECONDS COMMAND...: run with a time limit, its output in the log, then
    # pack every result so far: if the device tool stops the command, what finished comes back
    local name=$1 seconds=$2
    shift 2
    echo "=== $name (limit ${seconds}s) $(date -u +%T)" | tee -a "$log"
    timeout "$seconds" "$@" >>"$log" 2>&1
    echo "=== $name: exit $? $(date -u +%T)" | tee -a "$log"
    tar -czf "$out/gpu-results.tar.gz" -C "$results" .
}

# Most needed first (the GPU figures, then the stream capacity); limits add up to 575 s.
step tests 75 "$py" -m pytest -q -p no:cacheprovider tests/test_gpu_fast_path.py \
    tests/test_worker_pipeline.py tests/test_models_common.py -k "not bf16_detections_agree"
step speed 110 "${irtrack[@]}" bench models --device "$device" "${sizes[@]}" "${batches[@]}" \
    "${dtypes[@]}" --mode eager --repeats 20 --warmup 3 --row-budget 0.5 --max-window-mpx 60 \
    --json "$results/speed-gpu.json" --markdown "$results/speed-gpu.md"
for model in sd2net std2net; do
    step "service-$model" 150 "${irtrack[@]}" bench service --device "$device" --dtype "$half" \
        --model "$model" --frame-size "$service_size" "${service[@]}" \
        --json "$results/service-gpu-$model.json" --markdown "$results/service-gpu-$model.md"
done
step speed-fast-path 60 "${irtrack[@]}" bench models --device "$device" -m sd2net -m lrrnet -m std2net \
    "${sizes[@]}" "${batches[@]}" "${fast[@]}" --repeats 20 --warmup 3 --row-budget 0.5 \
    --max-window-mpx 60 --json "$results/speed-gpu-fast-path.json" \
    --markdown "$results/speed-gpu-fast-path.md"
step streaming 30 "${irtrack[@]}" bench streaming --device "$device" --dtype "$bench_half" \
    "${sizes[@]}" "${batches[@]}" --steps 20 --warmup 3 --max-window-mpx 60 \
    --json "$results/streaming-gpu.json" --markdown "$results/streaming-gpu.md"

# With the time the steps above left (they often end before their limits): SD2Net's capacity
# again with the worker's pipeline off, to show what overlapping post-processing with the next
# batch gains. Skipped when under a minute is left of the device tool's 600 s.
left=$((580 - SECONDS))
if [ "$left" -ge 60 ]; then
    step service-sd2net-serial "$left" env IRTRACK_PIPELINE=false "${irtrack[@]}" bench service \
        --device "$device" --dtype "$half" --model sd2net --frame-size "$service_size" "${service[@]}" \
        --json "$results/service-gpu-sd2net-serial.json" \
        --markdown "$results/service-gpu-sd2net-serial.md"
else
    echo "=== service-sd2net-serial: skipped, ${left}s left" | tee -a "$log"
fi

echo "results: $(ls "$results" | tr '\n' ' ')" | tee -a "$log"
