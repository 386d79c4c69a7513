#!/usr/bin/env bash
# Runs the device code of csrc/cuda on the CPU: builds tests/cudasim/kernels_test.cpp (the kernels' headers
# csrc/cuda/*_device.cuh under the execution model tests/cudasim/cudasim.h) with g++ against the installed torch's
# headers, three ways, and runs it:
#   plain: -O2, fiber mode, every case (size full) under the forward, reverse, a seeded random and the warps
#          schedule (one warp runs ahead of the others as far as the barriers let it);
#   asan:  AddressSanitizer + UndefinedBehaviorSanitizer, fiber mode, random schedule, size small;
#   tsan:  ThreadSanitizer, threads mode (one OS thread per CUDA thread), random block order, the cases of
#          tests/cudasim/tsan_cases.txt (every kernel and variant once, grids capped so that loops iterate).
# Exits non-zero on any failure: a mismatch against the float64 references, a barrier or warp operation that
# cannot complete, an invalid launch, or a sanitizer report. No GPU and no nvcc needed. All three stages run by
# default, the sanitizer builds compiling on one core while the plain runs use another.
#
# Usage: bash tools/cudasim_check.sh [--stage plain|asan|tsan] [--quick]
#   --stage S: build and run that stage only, stopping at its first failing run (tools/cudasim_mutate.sh);
#   --quick:   the plain build under the forward schedule only (an edit-compile loop).
# Environment: CXX (default g++), PYTHON (default python), CUDASIM_BUILD (build folder, default build/cudasim),
#   CUDASIM_SRC (folder holding csrc/ and tests/cudasim/, default the repository), CUDASIM_SEED (default 1).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="${CUDASIM_SRC:-$ROOT}"
CXX="${CXX:-g++}"
PYTHON="${PYTHON:-python}"
BUILD="${CUDASIM_BUILD:-$ROOT/build/cudasim}"
SEED="${CUDASIM_SEED:-1}"
STAGE=all
QUICK=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --stage) STAGE="${2:?--stage takes plain, asan or tsan}"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "cudasim_check: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$STAGE" in all|plain|asan|tsan) ;; *) echo "cudasim_check: unknown stage $STAGE" >&2; exit 2 ;; esac
mkdir -p "$BUILD"
started=$SECONDS
note() { printf 'cudasim_check [%4ds] %s\n' "$((SECONDS - started))" "$*"; }

mapfile -t TORCH_INCLUDES < <("$PYTHON" -c '
import torch.utils.cpp_extension as c
for p in c.include_paths():
    print(p)
')
if [ "${#TORCH_INCLUDES[@]}" -eq 0 ]; then
  echo "cudasim_check: could not get torch's include paths from $PYTHON (is torch installed?)" >&2
  exit 2
fi
INCLUDES=(-I"$SRC/tests/cudasim" -I"$SRC/csrc/cuda")
for p in "${TORCH_INCLUDES[@]}"; do INCLUDES+=("-isystem" "$p"); done
# -ffp-contract=off: no fused multiply-adds, as nvcc's --fmad=false in setup.py.
COMMON=(-std=c++20 -g -ffp-contract=off -DRDNAS_CUDASIM -Wall -Wno-sign-compare -Wno-unknown-pragmas -pthread)
declare -A FLAGS=(
  [plain]="-O2"
  # ASan + UBSan at -O0: half the compile time of -O1, which costs more than it saves on the run.
  [asan]="-O0 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"
  [tsan]="-O1 -fsanitize=thread"
)

build() {  # build <variant>
  local t0=$SECONDS
  # shellcheck disable=SC2086  # the flags are words
  "$CXX" "${COMMON[@]}" ${FLAGS[$1]} "${INCLUDES[@]}" "$SRC/tests/cudasim/kernels_test.cpp" \
    -o "$BUILD/kernels_test_$1"
  note "built $1 ($((SECONDS - t0)) s)"
}

failed=0
run() {  # run [NAME=VALUE...] -- <binary> <args...>; in a single stage, the first failure ends the script
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local t0=$SECONDS rc=0
  note "run: ${envs[*]} $(basename "$1") ${*:2}"
  env "${envs[@]}" OMP_NUM_THREADS=1 "$@" || rc=$?
  note "  ($((SECONDS - t0)) s)"
  if [ "$rc" -ne 0 ]; then
    note "FAILED (exit $rc): $(basename "$1") ${*:2}"
    failed=1
    if [ "$STAGE" != all ]; then exit 1; fi
  fi
}

run_plain() {
  run -- "$BUILD/kernels_test_plain" --mode fibers --schedule forward --size full
  [ "$QUICK" -eq 1 ] && return
  run -- "$BUILD/kernels_test_plain" --mode fibers --schedule reverse --size full
  run -- "$BUILD/kernels_test_plain" --mode fibers --schedule random --seed "$SEED" --size full
  run -- "$BUILD/kernels_test_plain" --mode fibers --schedule warps --size full
}

run_asan() {
  run ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    -- "$BUILD/kernels_test_asan" --mode fibers --schedule random --seed "$((SEED + 1))" --size small
}

run_tsan() {
  local cases=() line
  while IFS= read -r line; do [ -n "$line" ] && cases+=(--only "$line"); done <"$SRC/tests/cudasim/tsan_cases.txt"
  run TSAN_OPTIONS=halt_on_error=1:exitcode=66 \
    -- "$BUILD/kernels_test_tsan" --mode threads --schedule random --seed "$SEED" --size small "${cases[@]}"
}

case "$STAGE" in
  plain | asan | tsan)
    build "$STAGE"
    "run_$STAGE"
    ;;
  all)
    build plain
    if [ "$QUICK" -eq 0 ]; then
      # The sanitizer builds compile on one core while the plain runs use another.
      (build asan && build tsan) >"$BUILD/sanitizer_builds.log" 2>&1 &
      builds=$!
    fi
    run_plain
    if [ "$QUICK" -eq 0 ]; then
      if ! wait "$builds"; then
        cat "$BUILD/sanitizer_builds.log"
        note "FAILED: a sanitizer build"
        exit 1
      fi
      cat "$BUILD/sanitizer_builds.log"
      run_asan
      run_tsan
    fi
    ;;
esac

if [ "$failed" -ne 0 ]; then
  note "FAILED"
  exit 1
fi
note "all runs passed"
