#!/usr/bin/env bash
# The measurement of issue 26 on a finished KD benchmark build (benchmarks/dass_build.sh), in the foreground:
#   1. `rdnas dass bench ... --ship`: the table and embeddings over every shard's runs, shipped as package data
#      (refused while runs are missing: finish the build first);
#   2. benchmarks/dass_experiment.py run as two single-thread shards side by side (nice 19), then its report
#      (benchmarks/results/dass_report.{json,md});
#   3. benchmarks/dass_search_study.py run as two shards (the DaSS model is fitted once), then its report
#      (benchmarks/results/dass_search/summary.{json,md}).
# Every step resumes: finished jobs and searches are never rerun, so after a stop run it again. Logs:
# benchmarks/results/dass_experiment.<i>of2.log and dass_search/study.<i>of2.log. After the build, in one go:
#   setsid nohup bash -c "bash benchmarks/dass_build.sh && bash benchmarks/dass_measure.sh" > /tmp/dass.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
tasks=${TASKS:-benchmarks/dass_tasks/tasks.json}
out=${OUT:-benchmarks/results/dass_kdbench}
results=benchmarks/results
python -c "import rdnas, torch" 2>/dev/null \
  || { echo "dass_measure.sh: python cannot import rdnas and torch; activate the environment rdnas is installed in" >&2; exit 1; }

python -m rdnas dass bench --tasks "$tasks" --archs "${ARCHS:-48}" --seeds "${SEEDS:-2}" \
  --train-seeds "${TRAIN_SEEDS:-1}" --regimes "${REGIMES:-kd,ce}" --quiet --out "$out" --ship

# Runs SCRIPT run --bench OUT as two single-thread shards side by side (nice 19), logs LOG.<i>of2.log; waits for both.
two_shards() {
  local script=$1 log=$2 pids=() i pid
  for i in 0 1; do
    nice -n 19 python "$script" run --bench "$out" --shard "$i/2" > "$log.${i}of2.log" 2>&1 &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

two_shards benchmarks/dass_experiment.py "$results/dass_experiment"
python benchmarks/dass_experiment.py report --bench "$out"

mkdir -p "$results/dass_search"
two_shards benchmarks/dass_search_study.py "$results/dass_search/study"
python benchmarks/dass_search_study.py report
