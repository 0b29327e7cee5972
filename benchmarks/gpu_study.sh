#!/usr/bin/env bash
# Issue 8's study on a lent GPU machine (one H200 here), in one prepared run of a few minutes:
#   the fp16 training test (issue 11), the trainings of benchmarks/placement_study.py side by side, their DDIM-50
#   samples (MNIST scored there; the emoji scored back on the CPU, where the Inception weights are), and the
#   results, grids, emoji samples, the best MNIST pipeline and the emoji pipelines of the improved backbone packed
#   into $OUT (at most 8 files of 16 MiB come back from that machine).
# The machine's setup (wheels, caches) is benchmarks/gpu_env.sh.
# Usage (from the repository root): OUT=/some/folder bash benchmarks/gpu_study.sh [placement_study.py flags]
set -o pipefail
WORK=${WORK:-/tmp/study}
DEADLINE=${DEADLINE:-4.5}
JOBS=${JOBS:-10}
source benchmarks/gpu_env.sh
mkdir -p "$WORK"

echo "== fp16 training test"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_training.py -k fp16 -rs 2>&1 | tail -4 | tee "$WORK/fp16_test.txt"

echo "== train"
python3 benchmarks/placement_study.py --stage train --jobs "$JOBS" --deadline-minutes "$DEADLINE" --work-dir "$WORK" \
  --results "$OUT/placement_study.json" "$@" 2>&1 | grep -E "started|finished|Error|error" | tail -40
echo "== sample"
timeout "${SAMPLE_TIMEOUT:-150}" python3 benchmarks/placement_study.py --stage sample --defer-scoring emoji \
  --work-dir "$WORK" --results "$OUT/placement_study.json" --grids "$WORK/grids" "$@" 2>&1 \
  | grep -vE "Generating|Preparing|Loading|^\s*$" | tail -60

tar czf "$OUT/grids_logs.tgz" -C "$WORK" grids logs fp16_test.txt
(cd "$WORK" && tar czf "$OUT/samples.tgz" samples/emoji-*)  # the MNIST rows are scored already
# The best MNIST row among those small enough to ship (the improved backbone), by FID.
best=$(python3 benchmarks/gpu_pack.py best "$OUT/placement_study.json")
echo "best shippable MNIST row: $best"
if [ -n "$best" ]; then
  rm -rf "$WORK/mnist/$best"/checkpoint-* "$WORK/mnist/$best"/logs
  tar czf "$OUT/mnist_best.tgz" -C "$WORK/mnist" "$best"
fi
# The emoji rows of the improved backbone, whose winner is known only once the CPU has scored them: each unet in
# fp16 (half the bytes), two pipelines a file.
rows=$(cd "$WORK/emoji" 2>/dev/null && ls -d improved-* 2>/dev/null)
python3 benchmarks/gpu_pack.py fp16 $(for r in $rows; do echo "$WORK/emoji/$r"; done)
set -- $rows
index=0
while [ $# -gt 0 ]; do
  index=$((index + 1))
  tar czf "$OUT/emoji_improved_$index.tgz" -C "$WORK/emoji" "$1" ${2:+"$2"}
  shift
  [ $# -gt 0 ] && shift
done
ls -la "$OUT"
