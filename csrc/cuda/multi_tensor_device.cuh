// Device code of the multi-tensor ops (see ../multi_tensor.h): rdnas::multi_tensor_reduce, rdnas::multi_tensor_abs_
// and rdnas::multi_tensor_mul_signs_, in the style of NVIDIA apex's multi_tensor_apply: the kernels, the chunk table
// rows, grid sizes and host-side launch functions. multi_tensor_kernel.cu (the extension) includes it; so does the
// CPU test program of tests/cudasim (see tools/cudasim_check.sh). No c10/cuda include here: launches go through
// launch.cuh.
//
// Chunk table. The host builds the chunk table of the CPU kernels (multi_tensor_chunks: chunks of at most
// kMultiTensorChunk elements, tensor after tensor, chunk after chunk) as rows of four int64 (ChunkEntry): the
// address of element 0 of the chunk's tensor in the first list (first / weights), the same in the second list
// (second / signs; 0 when there is none), the chunk's first element in its tensor, and its length. multi_tensor_reduce
// appends num_tensors + 1 offsets: tensor t owns the rows [offsets[t], offsets[t + 1]) (the rows of one tensor are
// consecutive; a tensor without elements owns none). The table is written into a pinned int64 CPU tensor and
// reaches the device with one non-blocking copy on the current stream (the caching host allocator keeps the
// pinned block until that copy is done); the kernels read their row straight from global memory.
//
// multi_tensor_reduce: ONE launch over the whole table, one block (kThreads threads) per chunk, blocks grid-striding
// over the chunks past kMaxBlocks. A thread sums its elements of the chunk (i = threadIdx.x + k * kThreads, kUnroll
// loads issued before the maths) in the opmath type, exactly the CPU terms: |a*b| (kind 0), a*b (kind 1), a*a
// (kind 2); the block adds its threads' sums in float64 with a fixed tree (warp butterflies, then warp 0 over the
// warp sums) and writes one float64 partial per chunk. A second small kernel, one thread per tensor, adds the
// partials of its tensor in chunk order starting from 0.0 (as the CPU adds them into its zeroed output) and writes
// out[t]. No floating-point atomics, and nothing depends on the grid size: results are deterministic and the same
// on every GPU. Inputs are made contiguous first, as on the CPU.
//
// multi_tensor_abs_ / multi_tensor_mul_signs_: one launch over the table, one block per chunk, elementwise, the
// CPU's element maths: sign = (w > 0) - (w < 0) (0 for zeros and NaN), w = sign < 0 ? -w : w; and
// w = w * sign, rounded once to the tensor's dtype.
//
// Empty lists and lists whose tensors have no elements launch nothing (tensors without elements sum to 0).
#pragma once

#include "../multi_tensor.h"
#include "block_reduce.cuh"
#include "launch.cuh"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace rdnas {
namespace multi_tensor_cuda {

constexpr int kThreads = 256;          // threads per block (a multiple of 32); one block per chunk
constexpr int kUnroll = 4;             // loads in flight per thread
constexpr int kFinalizeThreads = 128;  // threads per block of the per-tensor sum kernel
constexpr int64_t kMaxBlocks = 65535;  // grid cap; blocks grid-stride over chunks (or tensors) beyond it

// Element offsets inside a chunk are int: a chunk plus one unrolled step past its end must fit.
static_assert(kMultiTensorChunk <= std::numeric_limits<int>::max() - kThreads * kUnroll,
              "chunk offsets must fit in int");
static_assert(kThreads % 32 == 0, "kThreads must be a multiple of the warp size");

// One row of the chunk table, as the kernels read it.
struct ChunkEntry {
  int64_t first;   // address of element 0 of the chunk's tensor (first list / weights)
  int64_t second;  // address of element 0 of the matching tensor of the second list / signs; 0 when none
  int64_t start;   // first element of the chunk in its tensor
  int64_t length;  // elements in the chunk, 1 .. kMultiTensorChunk
};
static_assert(sizeof(ChunkEntry) == 4 * sizeof(int64_t), "ChunkEntry must be four packed int64");
constexpr int64_t kEntryWords = sizeof(ChunkEntry) / sizeof(int64_t);

__device__ __forceinline__ float abs_value(float x) { return ::fabsf(x); }
__device__ __forceinline__ double abs_value(double x) { return ::fabs(x); }

// One float64 partial per chunk: partials[c] = sum over chunk c of the kKind term. The chunk loop is uniform
// across the block (it depends on blockIdx only), so every thread reaches block_sum's barriers.
template <typename scalar_t, int64_t kKind>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_reduce_kernel(const ChunkEntry* __restrict__ table, int64_t num_chunks,
                               double* __restrict__ partials) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ double scratch[kThreads / 32];
#pragma unroll 1
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const ChunkEntry entry = table[c];
    const scalar_t* __restrict__ a = reinterpret_cast<const scalar_t*>(entry.first) + entry.start;
    const scalar_t* __restrict__ b =
        kKind == kSumSquares ? nullptr : reinterpret_cast<const scalar_t*>(entry.second) + entry.start;
    const int length = static_cast<int>(entry.length);
    acc_t sum = acc_t(0);
#pragma unroll 1  // the kUnroll loads of a step give the ILP; unrolling steps only costs registers
    for (int base = threadIdx.x; base < length; base += kThreads * kUnroll) {
      acc_t x[kUnroll];
      [[maybe_unused]] acc_t y[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < length) {
          x[u] = static_cast<acc_t>(a[i]);
          if constexpr (kKind != kSumSquares) y[u] = static_cast<acc_t>(b[i]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (base + u * kThreads < length) {
          if constexpr (kKind == kSumAbsProduct) {
            sum += abs_value(x[u] * y[u]);
          } else if constexpr (kKind == kSumProduct) {
            sum += x[u] * y[u];
          } else {
            sum += x[u] * x[u];
          }
        }
      }
    }
    const double total = block_sum<kThreads>(static_cast<double>(sum), scratch);
    if (threadIdx.x == 0) partials[c] = total;
  }
}

// out[t] = sum of the partials of tensor t (rows [offsets[t], offsets[t + 1])), in chunk order from 0.0.
__global__ void __launch_bounds__(kFinalizeThreads)
    multi_tensor_reduce_finish_kernel(const double* __restrict__ partials, const int64_t* __restrict__ offsets,
                                      int64_t num_tensors, double* __restrict__ out) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
#pragma unroll 1
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < num_tensors; t += stride) {
    const int64_t end = offsets[t + 1];
    double sum = 0.0;
#pragma unroll 1
    for (int64_t c = offsets[t]; c < end; ++c) sum += partials[c];
    out[t] = sum;
  }
}

// w = |w| in place and s = sign(w), chunk by chunk (entry.first: weights, entry.second: signs).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_abs_kernel(const ChunkEntry* __restrict__ table, int64_t num_chunks) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma unroll 1
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const ChunkEntry entry = table[c];
    scalar_t* __restrict__ w = reinterpret_cast<scalar_t*>(entry.first) + entry.start;
    int8_t* __restrict__ s = reinterpret_cast<int8_t*>(entry.second) + entry.start;
    const int length = static_cast<int>(entry.length);
#pragma unroll 1
    for (int base = threadIdx.x; base < length; base += kThreads * kUnroll) {
      scalar_t x[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < length) x[u] = w[i];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < length) {
          // The CPU's (w > 0) - (w < 0) and s < 0 ? -w : w. Compared and negated in acc_t (exact); values that are
          // not negated are written back bit for bit, as on the CPU (NaN payloads and -0 included).
          const acc_t v = static_cast<acc_t>(x[u]);
          const int sign = static_cast<int>(v > acc_t(0)) - static_cast<int>(v < acc_t(0));
          s[i] = static_cast<int8_t>(sign);
          w[i] = sign < 0 ? static_cast<scalar_t>(-v) : x[u];
        }
      }
    }
  }
}

// w = w * s in place, chunk by chunk (entry.first: weights, entry.second: signs).
template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    multi_tensor_mul_signs_kernel(const ChunkEntry* __restrict__ table, int64_t num_chunks) {
  using acc_t = at::opmath_type<scalar_t>;
#pragma unroll 1
  for (int64_t c = blockIdx.x; c < num_chunks; c += gridDim.x) {
    const ChunkEntry entry = table[c];
    scalar_t* __restrict__ w = reinterpret_cast<scalar_t*>(entry.first) + entry.start;
    const int8_t* __restrict__ s = reinterpret_cast<const int8_t*>(entry.second) + entry.start;
    const int length = static_cast<int>(entry.length);
#pragma unroll 1
    for (int base = threadIdx.x; base < length; base += kThreads * kUnroll) {
      acc_t x[kUnroll], y[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        if (i < length) {
          x[u] = static_cast<acc_t>(w[i]);
          y[u] = static_cast<acc_t>(s[i]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int i = base + u * kThreads;
        // The CPU's static_cast<scalar_t>(w * static_cast<scalar_t>(s)): one product in the opmath type (exact
        // for a sign), rounded once to scalar_t.
        if (i < length) w[i] = static_cast<scalar_t>(x[u] * y[u]);
      }
    }
  }
}


// Blocks for `items` work items, per_block per block: at least 1, at most max_blocks (the extension always uses
// kMaxBlocks; tests pass a smaller cap so that the grid-stride loops over chunks and tensors iterate).
inline unsigned int grid_for(int64_t items, int64_t per_block, int64_t max_blocks = kMaxBlocks) {
  return static_cast<unsigned int>(
      std::max<int64_t>(1, std::min<int64_t>((items + per_block - 1) / per_block, max_blocks)));
}

// int64 words of the chunk table: kEntryWords per chunk, then num_tensors + 1 offsets when with_offsets.
inline int64_t chunk_table_words(int64_t num_chunks, int64_t num_tensors, bool with_offsets) {
  return num_chunks * kEntryWords + (with_offsets ? num_tensors + 1 : 0);
}

// Writes the chunk table into h (chunk_table_words(...) int64, host memory). first[t] / second[t]: the addresses of
// element 0 of tensor t in the two lists (second may be empty: its column is 0).
inline void fill_chunk_table(int64_t* h, const MultiTensorChunks& chunks, const std::vector<int64_t>& first,
                             const std::vector<int64_t>& second, bool with_offsets) {
  const int64_t num_chunks = static_cast<int64_t>(chunks.tensor.size());
  const int64_t num_tensors = static_cast<int64_t>(first.size());
  for (int64_t c = 0; c < num_chunks; ++c) {
    const int64_t t = chunks.tensor[c];
    int64_t* row = h + c * kEntryWords;
    row[0] = first[t];
    row[1] = second.empty() ? 0 : second[t];
    row[2] = chunks.start[c];
    row[3] = chunks.length[c];
  }
  if (with_offsets) {
    int64_t* offsets = h + num_chunks * kEntryWords;
    std::fill(offsets, offsets + num_tensors + 1, int64_t(0));
    for (int64_t c = 0; c < num_chunks; ++c) ++offsets[chunks.tensor[c] + 1];
    for (int64_t t = 0; t < num_tensors; ++t) offsets[t + 1] += offsets[t];
  }
}

// The chunk table as the kernels read it, in device memory: `table` points at the words fill_chunk_table wrote.
inline const ChunkEntry* chunk_entries(const int64_t* table) { return reinterpret_cast<const ChunkEntry*>(table); }
inline const int64_t* chunk_offsets(const int64_t* table, int64_t num_chunks) {
  return table + num_chunks * kEntryWords;
}

// multi_tensor_reduce on `stream`: one launch over the num_chunks >= 1 chunks writing partials[num_chunks], then the
// per-tensor sums out[num_tensors] from the table's offsets.
template <typename scalar_t>
void launch_reduce(const int64_t* table, int64_t num_chunks, int64_t num_tensors, int64_t kind, double* partials,
                   double* out, cuda_launch::Stream stream, int64_t max_blocks = kMaxBlocks) {
  const ChunkEntry* entries = chunk_entries(table);
  const dim3 grid(grid_for(num_chunks, 1, max_blocks)), block(kThreads);
  if (kind == kSumAbsProduct) {
    cuda_launch::launch(&multi_tensor_reduce_kernel<scalar_t, kSumAbsProduct>, grid, block, stream, entries,
                        num_chunks, partials);
  } else if (kind == kSumProduct) {
    cuda_launch::launch(&multi_tensor_reduce_kernel<scalar_t, kSumProduct>, grid, block, stream, entries,
                        num_chunks, partials);
  } else {
    cuda_launch::launch(&multi_tensor_reduce_kernel<scalar_t, kSumSquares>, grid, block, stream, entries,
                        num_chunks, partials);
  }
  cuda_launch::launch(&multi_tensor_reduce_finish_kernel, dim3(grid_for(num_tensors, kFinalizeThreads, max_blocks)),
                      dim3(kFinalizeThreads), stream, partials, chunk_offsets(table, num_chunks), num_tensors, out);
}

// multi_tensor_abs_ on `stream` over the num_chunks >= 1 chunks of the table (weights first, signs second).
template <typename scalar_t>
void launch_abs(const int64_t* table, int64_t num_chunks, cuda_launch::Stream stream,
                int64_t max_blocks = kMaxBlocks) {
  cuda_launch::launch(&multi_tensor_abs_kernel<scalar_t>, dim3(grid_for(num_chunks, 1, max_blocks)), dim3(kThreads),
                      stream, chunk_entries(table), num_chunks);
}

// multi_tensor_mul_signs_ on `stream` over the num_chunks >= 1 chunks of the table (weights first, signs second).
template <typename scalar_t>
void launch_mul_signs(const int64_t* table, int64_t num_chunks, cuda_launch::Stream stream,
                      int64_t max_blocks = kMaxBlocks) {
  cuda_launch::launch(&multi_tensor_mul_signs_kernel<scalar_t>, dim3(grid_for(num_chunks, 1, max_blocks)),
                      dim3(kThreads), stream, chunk_entries(table), num_chunks);
}

}  // namespace multi_tensor_cuda
}  // namespace rdnas
