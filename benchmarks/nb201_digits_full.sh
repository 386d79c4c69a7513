#!/usr/bin/env bash
# Builds (or resumes) NB201 on digits over the whole space: every connected isomorphism class (6461 cells, listed in
# benchmarks/results/nb201_digits_full/archs.txt) x 6 seeds with the shipped digits recipe (C = 8, N = 1, 3 epochs),
# as two single-thread shards side by side. Resumable: run it again after a stop; a killed shard loses at most the
# stack of 64 networks in progress. Runs land in benchmarks/results/nb201_digits_full/runs.<i>of2.csv.
#   bash benchmarks/nb201_digits_full.sh            # both shards in the background (nice 19), logs in that folder
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/nb201_digits_full
for i in 0 1; do
  OMP_NUM_THREADS=1 nohup nice -n 19 rdnas bench build --space nb201 --dataset digits --archs-file "$out/archs.txt" \
    --seeds 6 --shard "$i/2" --quiet --out "$out" --table "$out/table.${i}of2.csv" > "$out/build.${i}of2.log" 2>&1 &
  echo "shard $i/2: pid $!"
done
