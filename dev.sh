#!/usr/bin/env bash
# One entry point for a fresh Linux machine: creates .venv (Python 3.11), installs irtrack with its
# pinned dependencies (torch==2.13.0), then runs the requested job.
#   ./dev.sh demo   the main job: the service on the embedded queue with real IR frames streamed through it
#   ./dev.sh test   lint, type checks and the test suite (what CI runs)
#   ./dev.sh <irtrack subcommand> [args...]
set -euo pipefail
cd "$(dirname "$0")"

python_bin=$(command -v python3.11 || command -v python3)
if ! "$python_bin" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null; then
    echo "irtrack needs Python 3.11 ($python_bin is $("$python_bin" --version 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$python_bin" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    .venv/bin/python -m pip install --quiet -e ".[train,dev]"
    .venv/bin/python -c "import torch, models, service" && touch "$stamp"
fi

# --- system packages the test suite drives for real ------------------------------------------------
# Debian's chromium + chromedriver (tests/test_viewer.py), redis-server (scale-out tests),
# prometheus with promtool (monitoring tests), and podman, runc and debootstrap (the images
# built and docker-compose.yml run in tests/test_containers.py, with podman-compose from .venv),
# installed for `./dev.sh test` where apt can (root); without them those tests skip with a reason.
# No browser is downloaded by Python packages.
test_packages="chromium chromium-driver fonts-dejavu-core redis-server prometheus podman runc debootstrap"
if [ "${1:-demo}" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! { command -v chromium && command -v chromedriver && command -v redis-server \
           && command -v prometheus && command -v promtool && command -v podman \
           && command -v runc && command -v debootstrap; } >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # the package list is meant to split
    apt-get install -y -qq --no-install-recommends $test_packages >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $test_packages >/dev/null; } \
        || echo "dev.sh: could not install $test_packages; the tests that need them will skip" >&2
fi


job=${1:-demo}
shift || true
case "$job" in
    demo)
        exec .venv/bin/irtrack demo "$@" ;;
    test)
        .venv/bin/ruff check .
        .venv/bin/ruff format --check .
        .venv/bin/mypy
        exec .venv/bin/python -m pytest "$@" ;;
    *)
        exec .venv/bin/irtrack "$job" "$@" ;;
esac
