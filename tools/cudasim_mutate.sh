#!/usr/bin/env bash
# Mutation check of the CPU harness of the CUDA kernels (tools/cudasim_check.sh): plants one classic GPU bug at a
# time in a copy of csrc/ and tests/cudasim/, and runs the check's stages on that copy (plain fiber runs under the
# three schedules, then ASan + UBSan, then TSan in threads mode) until one fails. A mutant that no stage catches
# is a hole in the harness. Prints one line per mutant and a summary; exits 1 if any mutant survives.
#
# Usage: bash tools/cudasim_mutate.sh [NAME...]      (default: every mutant; logs kept in $CUDASIM_MUTATE_LOGS,
#                                                     default build/cudasim/mutants)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${CUDASIM_MUTATE_LOGS:-$ROOT/build/cudasim/mutants}"
mkdir -p "$LOGS"
work="$(mktemp -d "${TMPDIR:-/tmp}/rdnas-cudasim-mutate.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# name | file (under csrc/cuda) | what the bug is | exact text | replacement (\n for newlines)
MUTANTS="$work/mutants.txt"
cat >"$MUTANTS" <<'EOF'
barrier-after-scratch-write|block_reduce.cuh|block_sum: warp 0 reads the warp sums without the barrier after they are written|  if (lane == 0) scratch[warp] = value;\n  __syncthreads();\n|  if (lane == 0) scratch[warp] = value;\n
first-barrier-of-block-sum|block_reduce.cuh|block_sum: the barrier that protects scratch from the previous call's readers is dropped|  __syncthreads();  // scratch may still be read by an earlier call (the previous chunk of a grid-stride loop)\n|
shuffle-under-lane-condition|pairwise_margin_rank_loss_device.cuh|pairwise forward: the loss butterfly's full-mask shuffle runs in lanes 0-15 only|        loss_total[k] += __shfl_xor_sync(0xffffffffu, loss_total[k], offset);|        if (lane < 16) loss_total[k] += __shfl_xor_sync(0xffffffffu, loss_total[k], offset);
barrier-in-divergent-branch|pairwise_margin_rank_loss_device.cuh|pairwise forward: warps without rows skip the tile loop's barriers|      const int len = static_cast<int>(std::min<int64_t>(kTile, n - j0));\n      __syncthreads();  // every warp is done with the previous tile\n      stage_columns<scalar_t, acc_t, kGroups>(args, b, j0, len, s_scores, s_teacher, s_groups);\n      __syncthreads();\n      if (!warp_active) continue;\n      int diagonal[kRowsPerWarp];\n      acc_t loss[kRowsPerWarp]|      if (!warp_active) continue;\n      const int len = static_cast<int>(std::min<int64_t>(kTile, n - j0));\n      __syncthreads();  // every warp is done with the previous tile\n      stage_columns<scalar_t, acc_t, kGroups>(args, b, j0, len, s_scores, s_teacher, s_groups);\n      __syncthreads();\n      int diagonal[kRowsPerWarp];\n      acc_t loss[kRowsPerWarp]
tile-barrier-dropped|pairwise_margin_rank_loss_device.cuh|pairwise forward: the next tile is staged while other warps still read the previous one|      __syncthreads();  // every warp is done with the previous tile\n      stage_columns<scalar_t, acc_t, kGroups>(args, b, j0, len, s_scores, s_teacher, s_groups);\n      __syncthreads();\n      if (!warp_active) continue;\n      int diagonal[kRowsPerWarp];\n      acc_t loss[kRowsPerWarp]|      stage_columns<scalar_t, acc_t, kGroups>(args, b, j0, len, s_scores, s_teacher, s_groups);\n      __syncthreads();\n      if (!warp_active) continue;\n      int diagonal[kRowsPerWarp];\n      acc_t loss[kRowsPerWarp]
finalize-skips-last-partial|margin_rank_loss_device.cuh|margin forward: the last block's finalisation stops one partial short (off by one)|for (int64_t p = threadIdx.x; p < gridDim.x; p += kThreads)|for (int64_t p = threadIdx.x; p + 1 < gridDim.x; p += kThreads)
pairwise-finalize-tree-short|pairwise_margin_rank_loss_device.cuh|pairwise finalisation: the tree over the block partials stops one level early (off by one)|for (int width = kFinalizeThreads / 2; width > 0; width /= 2)|for (int width = kFinalizeThreads / 2; width > 1; width /= 2)
ticket-off-by-one|margin_rank_loss_device.cuh|margin forward: the next-to-last block to finish takes the finalisation|is_last = ticket == gridDim.x - 1;|is_last = ticket == gridDim.x - 2;
counter-not-zeroed|margin_rank_loss_device.cuh|margin launch: the ticket counter is not zeroed before the launch|    cuda_launch::memset_async(counter, 0, sizeof(unsigned int), stream);\n|
grid-stride-step-short|margin_rank_loss_device.cuh|margin forward: the grid-stride step forgets the unroll factor (elements counted twice)|  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * kUnroll;\n  acc_t thread_sum|  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads;\n  acc_t thread_sum
read-past-chunk-end|multi_tensor_device.cuh|multi_tensor_reduce: each thread loads one element past the chunk's end (unused)|        if (i < length) {\n          x[u] = static_cast<acc_t>(a[i]);|        if (i <= length) {\n          x[u] = static_cast<acc_t>(a[i]);
chunk-loop-grid-stride|multi_tensor_device.cuh|multi_tensor_abs_: blocks step over the chunks by 1 instead of the grid size|  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {\n    const ChunkEntry entry = table[c];\n    scalar_t* __restrict__ w = reinterpret_cast<scalar_t*>(entry.first) + entry.start;\n    int8_t*|  for (int64_t c = blockIdx.x; c < num_chunks; c += 1) {\n    const ChunkEntry entry = table[c];\n    scalar_t* __restrict__ w = reinterpret_cast<scalar_t*>(entry.first) + entry.start;\n    int8_t*
EOF

selected=("$@")
caught=0
total=0
printf '%-30s %-10s %s\n' "mutant" "caught by" "first report"
while IFS='|' read -r name file what old new; do
  if [ "${#selected[@]}" -gt 0 ] && [[ " ${selected[*]} " != *" $name "* ]]; then continue; fi
  total=$((total + 1))
  copy="$work/$name"
  mkdir -p "$copy/tests"
  cp -r "$ROOT/csrc" "$copy/csrc"
  cp -r "$ROOT/tests/cudasim" "$copy/tests/cudasim"
  python3 - "$copy/csrc/cuda/$file" "$old" "$new" <<'PY'
import sys
path, old, new = sys.argv[1], sys.argv[2].replace("\\n", "\n"), sys.argv[3].replace("\\n", "\n")
text = open(path).read()
if text.count(old) != 1:
    sys.exit(f"cudasim_mutate: the text to mutate occurs {text.count(old)} times in {path}: {old!r}")
open(path, "w").write(text.replace(old, new))
PY
  by="NOT CAUGHT"
  report=""
  for stage in plain asan tsan; do
    log="$LOGS/$name.$stage.log"
    if ! CUDASIM_SRC="$copy" CUDASIM_BUILD="$work/build-$name" bash "$ROOT/tools/cudasim_check.sh" --stage "$stage" \
      >"$log" 2>&1; then
      by="$stage"
      # the plain stage stops at its first failing run: the last schedule it started
      [ "$stage" = plain ] && by="plain/$(grep -o -- '--schedule [a-z]*' "$log" | tail -1 | sed 's/--schedule //')"
      report="$(grep -m1 -E 'cudasim: error|FAIL |ERROR: AddressSanitizer|WARNING: ThreadSanitizer|runtime error' "$log" \
        | sed "s|$copy/||g" | cut -c1-160 || true)"
      break
    fi
  done
  [ "$by" != "NOT CAUGHT" ] && caught=$((caught + 1))
  printf '%-30s %-14s %s\n' "$name" "$by" "$what"
  [ -n "$report" ] && printf '%-30s %-14s   %s\n' "" "" "$report"
  rm -rf "$copy" "$work/build-$name"
done <"$MUTANTS"
echo "cudasim_mutate: $caught of $total mutants caught (logs in $LOGS)"
[ "$caught" -eq "$total" ]
