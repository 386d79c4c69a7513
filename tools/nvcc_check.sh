#!/usr/bin/env bash
# Compile-only check of the CUDA kernels: builds every csrc/cuda/*.cu into a throwaway object for sm_80 and sm_90
# with the flags setup.py / torch.utils.cpp_extension use, against the headers of the installed torch. Needs nvcc
# but no GPU, and works with a CPU-only torch wheel: that wheel lacks the generated header
# c10/cuda/impl/cuda_cmake_macros.h, so a stub of it is put in a temporary directory (never in torch or the repo)
# placed last on the include path, where a CUDA torch's own copy takes precedence.
#
# Usage: bash tools/nvcc_check.sh [file.cu ...]   (default: every csrc/cuda/*.cu)
# Environment: NVCC (default nvcc), PYTHON (default python), JOBS (parallel compiles, default 2).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NVCC="${NVCC:-nvcc}"
PYTHON="${PYTHON:-python}"
JOBS="${JOBS:-2}"

if ! command -v "$NVCC" >/dev/null 2>&1; then
  echo "nvcc_check: $NVCC not found (set NVCC)" >&2
  exit 2
fi

if [ "$#" -gt 0 ]; then
  FILES=("$@")
else
  shopt -s nullglob
  FILES=("$ROOT"/csrc/cuda/*.cu)
  shopt -u nullglob
fi
if [ "${#FILES[@]}" -eq 0 ]; then
  echo "nvcc_check: no .cu files found under $ROOT/csrc/cuda" >&2
  exit 2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/rdnas-nvcc-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

mapfile -t TORCH_INCLUDES < <("$PYTHON" -c '
import torch.utils.cpp_extension as c
for p in c.include_paths():
    print(p)
')
if [ "${#TORCH_INCLUDES[@]}" -eq 0 ]; then  # (a failing process substitution does not trip set -e)
  echo "nvcc_check: could not get torch's include paths from $PYTHON (is torch installed?)" >&2
  exit 2
fi
PY_INCLUDE="$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
CXX11_ABI="$("$PYTHON" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"

STUB="$WORK/stub"
mkdir -p "$STUB/c10/cuda/impl"
echo '#define C10_CUDA_BUILD_SHARED_LIBS' > "$STUB/c10/cuda/impl/cuda_cmake_macros.h"

INCLUDES=()
for p in "${TORCH_INCLUDES[@]}"; do INCLUDES+=("-I$p"); done
INCLUDES+=("-I$PY_INCLUDE" "-I$STUB")

# torch.utils.cpp_extension's COMMON_NVCC_FLAGS and standard, plus setup.py's nvcc flags and macros.
FLAGS=(
  -c -std=c++20 -O3 -DNDEBUG --fmad=false -lineinfo
  --expt-relaxed-constexpr
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__
  -DRDNAS_WITH_CUDA -DPy_LIMITED_API=0x030A0000 -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
  "-D_GLIBCXX_USE_CXX11_ABI=$CXX11_ABI"
  --compiler-options -fPIC
  -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90
)

echo "nvcc_check: $("$NVCC" --version | tail -n 1)"
echo "nvcc_check: compiling ${#FILES[@]} file(s), $JOBS at a time: $NVCC ${FLAGS[*]} ${INCLUDES[*]}"

compile() {  # compile <index> <file>: writes $WORK/<index>.log and $WORK/<index>.status
  local index="$1" file="$2" start end rc
  start=$(date +%s)
  rc=0
  "$NVCC" "${FLAGS[@]}" "${INCLUDES[@]}" "$file" -o "$WORK/$index.o" >"$WORK/$index.log" 2>&1 || rc=$?
  end=$(date +%s)
  echo "$rc $((end - start))" >"$WORK/$index.status"
}

# Run the compiles JOBS at a time.
pids=()
for index in "${!FILES[@]}"; do
  compile "$index" "${FILES[$index]}" &
  pids+=("$!")
  if [ "${#pids[@]}" -ge "$JOBS" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
for pid in "${pids[@]}"; do wait "$pid"; done

failed=0
for index in "${!FILES[@]}"; do
  file="${FILES[$index]}"
  name="${file#"$ROOT"/}"
  read -r rc seconds <"$WORK/$index.status"
  if [ -s "$WORK/$index.log" ]; then
    echo "---- $name: compiler output"
    cat "$WORK/$index.log"
  fi
  if [ "$rc" -eq 0 ]; then
    echo "nvcc_check: OK     $name (${seconds}s)"
  else
    echo "nvcc_check: FAILED $name (${seconds}s, exit $rc)"
    failed=1
  fi
done
if [ "$failed" -ne 0 ]; then
  echo "nvcc_check: compilation failed" >&2
  exit 1
fi
echo "nvcc_check: all ${#FILES[@]} file(s) compiled for sm_80 and sm_90"
