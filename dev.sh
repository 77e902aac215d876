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
    .venv/bin/python -m pip install --quiet -e ".[dev]"
    .venv/bin/python -c "import torch, models, service" && touch "$stamp"
fi

# --- headless Chromium for tests/test_viewer.py (issue 7) ----------------------------------------
# Debian's chromium + chromedriver, installed for `./dev.sh test` where apt can; without them the
# viewer test skips. No browser is downloaded by Python packages.
browser_packages="chromium chromium-driver fonts-dejavu-core"
if [ "${1:-demo}" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! { command -v chromium && command -v chromedriver; } >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # the package list is meant to split
    apt-get install -y -qq --no-install-recommends $browser_packages >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $browser_packages >/dev/null; } \
        || echo "dev.sh: could not install chromium; tests/test_viewer.py will skip" >&2
fi
# --- end of the Chromium block ------------------------------------------------------------------

# --- redis-server and Prometheus for the scale-out and deployment tests (issue 6) ----------------
# Debian's redis-server and prometheus (with promtool), installed for `./dev.sh test` where apt
# can; without them tests/test_scale_out.py and the promtool checks skip.
scale_out_packages="redis-server prometheus"
if [ "${1:-demo}" = test ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null \
    && ! { command -v redis-server && command -v prometheus && command -v promtool; } >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # the package list is meant to split
    apt-get install -y -qq --no-install-recommends $scale_out_packages >/dev/null 2>&1 \
        || { apt-get update -qq && apt-get install -y -qq --no-install-recommends $scale_out_packages >/dev/null; } \
        || echo "dev.sh: could not install redis-server/prometheus; the scale-out tests will skip" >&2
fi
# --- end of the scale-out block -------------------------------------------------------------------

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
