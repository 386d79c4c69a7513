#!/usr/bin/env bash
# Runs (or resumes) the teacher-quality experiment of issue 27 (benchmarks/teacher_curve_experiment.py) as two
# single-thread shards side by side (nice 19), in this order: the 30-epoch budget for seeds 0-4 (SPOS and every
# teacher), the README's main comparison's extra seeds 5 and 6 (SPOS and synflow, 30 epochs), the 10-epoch budget
# for seeds 0-4, then the dose arm (the tau-0.9 oracle with the ranking loss weighted 4x and 16x, synflow at
# 4x; 30 epochs).
# Finished runs (one JSON each in benchmarks/results/teacher_curve/) are never rerun; a stopped shard loses at most
# the run in progress. Logs, one per shard, appended to across resumes:
# benchmarks/results/teacher_curve.<i>of2.log.
#   bash benchmarks/teacher_curve.sh         # in the background; then: python benchmarks/teacher_curve_experiment.py report
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
script=benchmarks/teacher_curve_experiment.py
python -c "import rdnas, torch" 2>/dev/null \
  || { echo "teacher_curve.sh: python cannot import rdnas and torch; activate the environment rdnas is installed in" >&2; exit 1; }
for i in 0 1; do
  nohup nice -n 19 bash -c "python $script run --epochs 30 --seeds 0,1,2,3,4 --shard $i/2 && \
    python $script run --epochs 30 --seeds 5,6 --teachers synflow --shard $i/2 && \
    python $script run --epochs 10 --seeds 0,1,2,3,4 --shard $i/2 && \
    python $script run --epochs 30 --seeds 0,1,2,3,4 --teachers oracle-0.9-w4,oracle-0.9-w16,synflow-w4 --shard $i/2" >> "benchmarks/results/teacher_curve.${i}of2.log" 2>&1 &
  echo "shard $i/2: pid $!"
done
