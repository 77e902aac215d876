#!/usr/bin/env bash
# Prepares, on a development machine, what bench/gpu/run.sh needs on the device machine, which
# has PyTorch, numpy and OpenCV (Python 3.12) but not the service's packages, no network and no
# ../shared: into .device/ (git-ignored through .git/info/exclude, named in the device tool's carry)
#   .device/whl/     wheels of the packages the device image lacks, at this venv's versions
#   .device/shared/  the NUDT-SIRST test split (images + split files) and the first thermal clip
set -euo pipefail
cd "$(dirname "$0")/../.."
shared=${IRTRACK_SHARED:-../shared}
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
rm -rf .device
mkdir -p .device/whl .device/shared/data/nudt-sirst/images .device/shared/data/videos

# Packages the device image does not hold (its list: /work/.library/device/KINDS.md), pinned to
# the versions of this checkout's .venv so both machines run the same service code paths.
missing="fastapi starlette uvicorn pydantic pydantic-core pydantic-settings python-dotenv
annotated-types typing-inspection websockets redis filterpy motmetrics xmltodict
opentelemetry-api"
pins=$(.venv/bin/python -m pip freeze | grep -iE "^($(echo $missing | tr ' ' '|' | sed 's/-/[-_]/g'))==" || true)
for pin in $pins; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .device/whl "$pin" 2>/dev/null \
        || .venv/bin/python -m pip wheel -q --no-deps -w .device/whl "$pin"  # pure-Python sdists
done
test "$(ls .device/whl | wc -l)" -ge "$(echo $missing | wc -w)" \
    || { echo "prepare.sh: wheels missing: $(ls .device/whl)" >&2; exit 1; }

dataset=$shared/data/nudt-sirst
cp -r "$dataset/splits" .device/shared/data/nudt-sirst/
while read -r name; do
    [ -n "$name" ] && cp "$dataset/images/${name%.png}.png" .device/shared/data/nudt-sirst/images/
done <"$dataset/splits/test.txt"
clip=$(ls "$shared"/data/videos/*.mp4 | head -n 1)
cp "$clip" .device/shared/data/videos/
du -sh .device
