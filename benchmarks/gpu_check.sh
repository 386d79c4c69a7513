#!/usr/bin/env bash
# On the GPU machine (torch with CUDA, nvcc, ninja, pytest-benchmark installed; no internet), from anywhere:
#   bash benchmarks/gpu_check.sh            # results in benchmarks/results/, or in $OUT when set
# Builds rdnas with its CUDA kernels, runs the tests, runs the benchmarks on cpu + cuda, prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
# Import the installed rdnas (with the CUDA extension), not ./rdnas, which `python -m` would put first on sys.path.
export PYTHONSAFEPATH=1

RDNAS_FORCE_CUDA=1 pip install --no-build-isolation --no-deps .
python -c 'import rdnas, torch; print(rdnas.__file__, "CUDA kernels:", rdnas.built_with_cuda(), torch.cuda.get_device_name()); assert rdnas.built_with_cuda()'
python -m pytest tests -q -x
python -m pytest benchmarks/ -q --benchmark-json="$OUT/bench_gpu.json"
python benchmarks/render_results.py "$OUT/bench_gpu.json" -o "$OUT/bench_gpu.md"
grep -A 6 -E '^### (pairwise-cuda-N4096-fwdbwd|margin-cuda-N1M-mean-fwdbwd)' "$OUT/bench_gpu.md" || cat "$OUT/bench_gpu.md"

# The whole NB201 space with synflow on the GPU (issue target: under 60 s on an H100), timed end to end by the CLI.
rm -f "$OUT/nb201_synflow_cuda.csv" "$OUT/nb201_synflow_cuda.csv.meta.json"
python -m rdnas proxies --proxy synflow --device cuda --init kaiming_normal --archs-per-chunk 512 \
  --out "$OUT/nb201_synflow_cuda.csv" --quiet | tee "$OUT/nb201_synflow_cuda.txt"

# rdnas scoring all 15,625 cells on the GPU with synflow and snip, once each, beside the public-style references
# on their samples (issue target: >= 20x).
RDNAS_BENCH_WHOLE_SPACE=1 python -m pytest benchmarks/bench_proxies.py -q -k "test_score_architectures and cuda" \
  --benchmark-json="$OUT/bench_proxies_whole_space_gpu.json"
python benchmarks/render_results.py "$OUT/bench_proxies_whole_space_gpu.json" -o "$OUT/bench_proxies_whole_space_gpu.md"
grep -A 7 '^### score-' "$OUT/bench_proxies_whole_space_gpu.md"

# The mini-benchmark build (stacks of stand-alone networks) and the demo pipeline on the GPU, timed end to end.
start=$SECONDS
python -m rdnas bench build --archs 240 --seeds 10 --device cuda --networks-per-stack 480 \
  --out "$OUT/bench_digits_cuda" --quiet 2>&1 | tee "$OUT/bench_build_cuda.txt"
echo "bench build: $((SECONDS - start)) s wall" | tee -a "$OUT/bench_build_cuda.txt"
start=$SECONDS
python -m rdnas demo --device cuda --out "$OUT/demo_cuda" 2>&1 | tee "$OUT/demo_cuda.txt"
echo "demo: $((SECONDS - start)) s wall" | tee -a "$OUT/demo_cuda.txt"
