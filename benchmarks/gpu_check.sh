#!/usr/bin/env bash
# On the GPU machine (torch with CUDA, nvcc, ninja, pytest-benchmark installed; no internet), from anywhere:
#   bash benchmarks/gpu_check.sh            # results in benchmarks/results/, or in $OUT when set
#
# A lent GPU machine gives 15 minutes of device time per issue and 10 per call, a cold start included, so the
# script is sized for about 8 minutes (GPU_CHECK_BUDGET_S, default 480) and runs the most important steps first:
#   1. build rdnas with its CUDA kernels;  2. the cuda-marked tests;  3. the margin and pairwise loss benchmarks
#   on cuda;  4. synflow over the whole NB201 space on cuda;  then, while the budget lasts: the rest of the tests,
#   the other benchmarks on cuda, whole-space synflow/snip against the references, the mini-benchmark build, the demo.
# Each step writes $OUT/gpu_check/<NN>-<step>.log as it runs (a killed call keeps what finished) and appends one
# line (status, seconds) to $OUT/gpu_check/summary.txt when it ends. A step that would start past the budget is
# skipped and says so; each step also has its own time limit. Exit status: 1 if the build or a test step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
LOG_DIR="$OUT/gpu_check"
BUDGET_S="${GPU_CHECK_BUDGET_S:-480}"
mkdir -p "$LOG_DIR"
: >"$LOG_DIR/summary.txt"
# Import the installed rdnas (with the CUDA extension), not ./rdnas, which `python -m` would put first on sys.path.
export PYTHONSAFEPATH=1
# Shorter timing budgets than the CPU runs: the GPU calls are fast and the device time is not.
export RDNAS_BENCH_SECONDS="${RDNAS_BENCH_SECONDS:-0.5}"
started=$SECONDS
step_number=0
hard_failure=0

# step <name> <time limit s> <essential 0|1> <command...>: runs the command with its output in the step's log.
step() {
  local name="$1" limit="$2" essential="$3"
  shift 3
  step_number=$((step_number + 1))
  local log
  log="$LOG_DIR/$(printf '%02d' "$step_number")-$name.log"
  local elapsed=$((SECONDS - started))
  if [ "$elapsed" -ge "$BUDGET_S" ] && [ "$essential" -eq 0 ]; then
    echo "skipped (budget of ${BUDGET_S} s spent at ${elapsed} s)" >"$log"
    printf '%-28s skipped   (budget spent at %d s)\n' "$name" "$elapsed" | tee -a "$LOG_DIR/summary.txt"
    return 0
  fi
  printf '\n=== [%4ds] %s: %s\n' "$elapsed" "$name" "$*"
  local t0=$SECONDS rc
  timeout --signal=INT --kill-after=15 "$limit" bash -c "$*" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  local status=ok
  [ "$rc" -ne 0 ] && status="FAILED($rc)"
  [ "$rc" -eq 124 ] && status="TIMEOUT"
  printf '%-28s %-9s %4d s  (at %d s)\n' "$name" "$status" "$((SECONDS - t0))" "$((SECONDS - started))" |
    tee -a "$LOG_DIR/summary.txt"
  return "$rc"
}

# 1. Build (a build failure ends the run: nothing else means anything without it).
if ! step build 300 1 "RDNAS_FORCE_CUDA=1 pip install --no-build-isolation --no-deps . && python -c '
import rdnas, torch
print(rdnas.__file__, \"CUDA kernels:\", rdnas.built_with_cuda(), torch.cuda.get_device_name(), torch.__version__)
assert rdnas.built_with_cuda()'"; then
  echo "gpu_check: the CUDA build failed; see $LOG_DIR" >&2
  exit 1
fi

# 2. The cuda-marked tests (every op on the GPU against the references, opcheck, compile, the GPU paths).
step tests-cuda 180 1 "python -m pytest tests -q -m cuda -p no:cacheprovider" || hard_failure=1

# 3. The loss benchmarks on cuda (margin_rank_loss and pairwise_margin_rank_loss against torch's and the naive ops).
step bench-losses-cuda 150 1 "python -m pytest benchmarks/bench_margin_rank_loss.py \
  benchmarks/bench_pairwise_margin_rank_loss.py -q -k cuda -p no:cacheprovider \
  --benchmark-json='$OUT/bench_losses_gpu.json' && python benchmarks/render_results.py '$OUT/bench_losses_gpu.json' \
  -o '$OUT/bench_losses_gpu.md' && (grep -A 6 -E '^### (pairwise-cuda-N4096-fwdbwd|margin-cuda-N1M-mean-fwdbwd)' \
  '$OUT/bench_losses_gpu.md' || cat '$OUT/bench_losses_gpu.md')"

# 4. The whole NB201 space with synflow on the GPU (issue target: under 60 s on an H100), timed end to end by the CLI.
rm -f "$OUT/nb201_synflow_cuda.csv" "$OUT/nb201_synflow_cuda.csv.meta.json"
step synflow-whole-space 120 1 "python -m rdnas proxies --proxy synflow --device cuda --init kaiming_normal \
  --archs-per-chunk 512 --out '$OUT/nb201_synflow_cuda.csv' --quiet"

# The rest, while the budget lasts.
step tests-rest 300 0 "python -m pytest tests -q -m 'not cuda' -x -p no:cacheprovider" || hard_failure=1
step bench-other-cuda 240 0 "python -m pytest benchmarks -q -k 'cuda and not margin_rank_loss' \
  -p no:cacheprovider --benchmark-json='$OUT/bench_gpu.json' && python benchmarks/render_results.py \
  '$OUT/bench_gpu.json' -o '$OUT/bench_gpu.md'"
# rdnas scoring all 15,625 cells on the GPU with synflow and snip, once each, beside the public-style references on
# their samples (issue target: >= 20x).
step proxies-whole-space 300 0 "RDNAS_BENCH_WHOLE_SPACE=1 python -m pytest benchmarks/bench_proxies.py -q \
  -k 'test_score_architectures and cuda' -p no:cacheprovider \
  --benchmark-json='$OUT/bench_proxies_whole_space_gpu.json' && python benchmarks/render_results.py \
  '$OUT/bench_proxies_whole_space_gpu.json' -o '$OUT/bench_proxies_whole_space_gpu.md' && \
  grep -A 7 '^### score-' '$OUT/bench_proxies_whole_space_gpu.md'"
# The mini-benchmark build (stacks of stand-alone networks) and the demo pipeline on the GPU, timed end to end.
step bench-build-cuda 300 0 "python -m rdnas bench build --archs 240 --seeds 10 --device cuda \
  --networks-per-stack 480 --out '$OUT/bench_digits_cuda' --quiet"
step demo-cuda 300 0 "python -m rdnas demo --device cuda --out '$OUT/demo_cuda'"

printf '\n=== gpu_check: %d s in all; summary (%s):\n' "$((SECONDS - started))" "$LOG_DIR/summary.txt"
cat "$LOG_DIR/summary.txt"
exit "$hard_failure"
