#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one run (its parts' time limits add up to 9 min 40 s):
#   bash benchmarks/gpu_check.sh [BF16_PEAK_TFLOPS]      # default 989: an H100/H200 SXM's dense bfloat16 peak
# 1. the training step at batch 32, bfloat16 and float32, with the fraction of the bfloat16 peak;
# 2. G, F and the training step at batch 2 (F and G in float32 ask for float32 products);
# 3. the deblurring search step at batch 1 and 8 (reference objective, full priors).
# Each part has its own time limit, so one that hangs does not take the others' time.
set -uo pipefail
cd "$(dirname "$0")/.."
peak="${1:-989}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 150 python benchmarks/train.py --dtype bfloat16 --batch 32 --repeats 10 --peak-tflops "$peak"
timeout 120 python benchmarks/train.py --dtype float32 --batch 32 --repeats 10 --peak-tflops "$peak"
timeout 90 python benchmarks/models.py --skip-counts --quick
timeout 220 python benchmarks/deblur.py --batches 1,8
