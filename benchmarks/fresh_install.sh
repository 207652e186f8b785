#!/usr/bin/env bash
# `make test` on a fresh machine, simulated (issue 14): a clean clone of this repository's HEAD with
# ../shared copied beside it, and empty pip, model and Hugging Face caches; then `make test` again
# with the venv in place. Prints both wall times and writes the logs under the scratch folder.
#
#   bash benchmarks/fresh_install.sh [SCRATCH]      # default /tmp/pretty-align-fresh
#
# Targets: fresh <= 6 min, with the venv <= 3.5 min. Run it on an otherwise idle machine.
set -u
root="$(cd "$(dirname "$0")/.." && pwd)"
scratch="${1:-/tmp/pretty-align-fresh}"
rm -rf "$scratch" && mkdir -p "$scratch"
git clone -q "$root" "$scratch/repo"
cp -r "$root/../shared" "$scratch/shared"
cd "$scratch/repo"
export PIP_CACHE_DIR="$scratch/pip" PRETTY_ALIGN_CACHE="$scratch/cache" HF_HOME="$scratch/hf" CI=true
# the logs end with the slowest tests and fixtures (setup includes a fixture's conversion or download)
export PYTEST_ADDOPTS="--durations=25"
t0=$(date +%s)
make venv > "$scratch/venv.log" 2>&1; echo "make venv: rc=$? ($scratch/venv.log)"
t1=$(date +%s)
make test > "$scratch/test-fresh.log" 2>&1; echo "make test (fresh caches): rc=$? ($scratch/test-fresh.log)"
t2=$(date +%s)
make test > "$scratch/test-again.log" 2>&1; echo "make test (venv in place): rc=$? ($scratch/test-again.log)"
t3=$(date +%s)
echo "fresh make test: $((t2 - t0)) s (venv $((t1 - t0)) s, tests $((t2 - t1)) s) (target <= 360 s)"
echo "make test with the venv: $((t3 - t2)) s (target <= 210 s)"
