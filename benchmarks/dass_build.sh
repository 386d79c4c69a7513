#!/usr/bin/env bash
# Builds (or resumes) the DaSS KD mini-benchmark of benchmarks/dass_tasks/tasks.json: 15 tasks (8 meta-train and
# 2 meta-valid Fashion-MNIST class subsets with teachers at widths / 8 and / 4; 5 meta-test tasks on digits and
# synthetic glyphs, two of them with an unseen / 2 teacher), the same 48 students (ResNet48, small stem, widths / 8)
# in every task, regimes kd (remapped + KD) and ce (fresh + cross-entropy), 2 seeds on the meta-test tasks (their
# seed ceiling) and 1 on the meta-train and meta-valid tasks (TRAIN_SEEDS; DaSS's meta-training labels are single
# runs too): 960 + 960 = 1,920 student runs.
# Resumable: run it again after a stop (a killed shard loses at most the run in progress; finished runs are never
# retrained). Single-thread shards side by side (nice 19), one per core:
#   bash benchmarks/dass_build.sh                 # SHARDS=2 OUT=benchmarks/results/dass_kdbench by default
#   SHARDS=1 MAX_RUNS=100 bash benchmarks/dass_build.sh   # a time-boxed slice in the foreground of one core
# Phase 1 trains the 15 teachers (each shard every n-th task's), phase 2 the students, phase 3 writes
# OUT/kdbench.csv and OUT/embeddings.pt over every shard's runs. Logs: OUT/*.log.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${TASKS:-benchmarks/dass_tasks/tasks.json}
out=${OUT:-benchmarks/results/dass_kdbench}
shards=${SHARDS:-2}
archs=${ARCHS:-48}
seeds=${SEEDS:-2}
train_seeds=${TRAIN_SEEDS:-1}
regimes=${REGIMES:-kd,ce}
max_runs=${MAX_RUNS:+--max-runs $MAX_RUNS}
export OMP_NUM_THREADS=1
rdnas_cmd=(python -m rdnas)
mkdir -p "$out"
pids=()
for ((i = 0; i < shards; i++)); do
  nice -n 19 "${rdnas_cmd[@]}" dass bench --tasks "$tasks" --teachers-only --shard "$i/$shards" --quiet \
    --out "$out" > "$out/teachers.${i}of${shards}.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "teachers: $(ls "$out/teachers" | wc -l) in $out/teachers"
pids=()
for ((i = 0; i < shards; i++)); do
  # shellcheck disable=SC2086
  nice -n 19 "${rdnas_cmd[@]}" dass bench --tasks "$tasks" --archs "$archs" --seeds "$seeds" --train-seeds "$train_seeds" \
    --regimes "$regimes" --shard "$i/$shards" $max_runs --quiet --out "$out" > "$out/build.${i}of${shards}.log" 2>&1 &
  pids+=($!)
  echo "shard $i/$shards: pid $!"
done
for pid in "${pids[@]}"; do wait "$pid"; done
# every shard's runs are in; with MAX_RUNS some may remain (this pass trains none: --max-runs 0 is not allowed, so
# the table pass runs unsharded only when the shards left nothing to do)
if [ -z "${MAX_RUNS:-}" ]; then
  "${rdnas_cmd[@]}" dass bench --tasks "$tasks" --archs "$archs" --seeds "$seeds" --train-seeds "$train_seeds" \
    --regimes "$regimes" --quiet --out "$out" | tee "$out/table.log"
fi
