# Sourced by the scripts that run on a lent GPU machine (gpu_study.sh, gpu_bench.sh), from the repository root.
# That machine has torch with CUDA but no network: the wheels it lacks and the built-in datasets' cache travel in
# .gpu/ (not committed; `bash benchmarks/gpu_prepare.sh` builds it here; name it in the device call's `carry`):
#   .gpu/whl/    diffusers, datasets, dill, multiprocess, fsspec, importlib_metadata wheels for Python 3.12
#   .gpu/cache/  the built-in datasets the scripts train on, as ~/.cache/ddpm_kiit/datasets/ holds them
: "${OUT:?set OUT to the folder that receives the results}"
ROOT=$(pwd)
WHEELS=${WHEELS:-.gpu/whl}
export PYTHONUNBUFFERED=1 DDPM_KIIT_CACHE=$ROOT/.gpu/cache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
if [ -d "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$ROOT/src
fi
nvidia-smi -L 2>/dev/null
python3 -c "import torch, diffusers, datasets, accelerate; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__, 'cuda', torch.cuda.is_available())" || exit 1
