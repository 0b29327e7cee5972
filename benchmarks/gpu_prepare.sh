#!/usr/bin/env bash
# Builds, on this machine, the .gpu/ folder that benchmarks/gpu_env.sh installs from on a lent GPU machine (which has
# torch with CUDA, accelerate and transformers, but no network): Python 3.12 wheels of the packages it lacks, pinned to
# the versions of this venv, and the built-in datasets' cache. Name `.gpu` in the device call's `carry`.
# Usage (from the repository root, with the venv built): bash benchmarks/gpu_prepare.sh [DATASET ...]
#   DATASET: the built-in datasets the GPU scripts train on (default: emoji; mnist-full needs its source wheel in
#   ~/.cache/ddpm_kiit/sources, see docs). Keep what travels under the device's 64 MiB carry limit.
set -eo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
datasets=${*:-emoji}
rm -rf .gpu/whl && mkdir -p .gpu/whl .gpu/cache
pins=$("$PYTHON" -c "
from importlib.metadata import version
print(' '.join(f'{p}=={version(p)}' for p in ('diffusers', 'datasets', 'dill', 'multiprocess', 'fsspec', 'importlib_metadata')))")
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
  --implementation cp -d .gpu/whl $pins
[ -d ~/.cache/ddpm_kiit/sources ] && cp -r ~/.cache/ddpm_kiit/sources .gpu/cache/
for name in $datasets; do
  DDPM_KIIT_CACHE=$PWD/.gpu/cache "$PYTHON" -c "from ddpm_kiit.data import build_builtin_dataset; build_builtin_dataset('$name')"
done
rm -rf .gpu/cache/sources
du -sh .gpu/whl .gpu/cache
