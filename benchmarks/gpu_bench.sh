#!/usr/bin/env bash
# Issue 10's benchmarks on a lent GPU machine, in one prepared run of at most eight minutes plus the setup (each
# script has its time limit): each script with `--device cuda` (CUDA, bf16 autocast, channels_last and torch.compile
# where the script tries them), plus the fp16 training test of issue 11. Figures go to benchmarks/results/*_cuda.json
# (the CPU's files stay as they are), which are copied into $OUT with the log.
# The machine's setup (wheels, caches) is benchmarks/gpu_env.sh.
# Usage (from the repository root): OUT=/some/folder bash benchmarks/gpu_bench.sh
set -o pipefail
source benchmarks/gpu_env.sh
LOG="$OUT/gpu_bench.log"

run() {  # run SECONDS SCRIPT FLAGS...: one benchmark, stopped at its time limit; the next one runs regardless
  local limit=$1 script=$2
  shift 2
  echo "== $script $*" | tee -a "$LOG"
  timeout "$limit" python3 "benchmarks/$script" "$@" 2>&1 | grep -vE "Generating|Preparing|Steps:" | tee -a "$LOG"
  echo "exit status ${PIPESTATUS[0]}" | tee -a "$LOG"
}

echo "== fp16 training test (issue 11)" | tee -a "$LOG"
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k fp16 -rs 2>&1 | tail -4 | tee -a "$LOG"
run 30 scheduler_step.py --device cuda
run 30 pipeline_overhead.py --device cuda
run 60 machine_limit.py --device cuda
run 90 train_throughput.py
run 120 inference_speed.py --device cuda --steps 300
run 90 steps_vs_quality.py --device cuda --num-samples 1000
cp benchmarks/results/*_cuda.json "$OUT"/ 2>/dev/null
ls -la "$OUT"
