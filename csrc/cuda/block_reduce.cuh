// Block-wide reductions shared by the CUDA kernels.
#pragma once

namespace rdnas {

// Sum of `value` over a block of kThreads threads, in a fixed order (warp butterflies, then the first warp over
// the warp sums), so results are deterministic. The result is valid in thread 0. Every thread of the block must
// call it; `scratch` holds kThreads / 32 doubles in shared memory.
template <int kThreads>
__device__ __forceinline__ double block_sum(double value, double* scratch) {
  constexpr int kWarps = kThreads / 32;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // scratch may still be read by an earlier call (the previous chunk of a grid-stride loop)
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < kWarps ? scratch[lane] : 0.0;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  }
  return value;
}

}  // namespace rdnas
