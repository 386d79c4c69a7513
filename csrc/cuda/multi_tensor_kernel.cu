// CUDA kernels of the multi-tensor ops (see ../multi_tensor.h): rdnas::multi_tensor_reduce,
// rdnas::multi_tensor_abs_ and rdnas::multi_tensor_mul_signs_, in the style of NVIDIA apex's multi_tensor_apply.
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
#include "../checks.h"
#include "block_reduce.cuh"
#include "../multi_tensor.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace rdnas {
namespace {

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

unsigned int grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((items + per_block - 1) / per_block,
                                                                          kMaxBlocks)));
}

int64_t address_of(const void* p) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(p)); }

// The chunk table on the device; `storage` keeps it alive until the function that launched on it returns (the
// caching allocator orders its reuse after the launches on the same stream).
struct DeviceChunkTable {
  at::Tensor storage;
  int64_t num_chunks = 0;
  const ChunkEntry* entries = nullptr;
  const int64_t* offsets = nullptr;  // num_tensors + 1 row offsets per tensor, or nullptr
};

// first[t] / second[t]: the addresses of element 0 of tensor t in the two lists (second may be empty).
// chunks must hold at least one chunk.
DeviceChunkTable upload_chunk_table(const MultiTensorChunks& chunks, const std::vector<int64_t>& first,
                                    const std::vector<int64_t>& second, bool with_offsets, at::Device device) {
  const int64_t num_chunks = static_cast<int64_t>(chunks.tensor.size());
  const int64_t num_tensors = static_cast<int64_t>(first.size());
  const int64_t words = num_chunks * kEntryWords + (with_offsets ? num_tensors + 1 : 0);
  at::Tensor host = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* h = host.data_ptr<int64_t>();
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
  DeviceChunkTable table;
  table.storage = host.to(device, at::kLong, /*non_blocking=*/true);
  table.num_chunks = num_chunks;
  const int64_t* d = table.storage.const_data_ptr<int64_t>();
  table.entries = reinterpret_cast<const ChunkEntry*>(d);
  table.offsets = with_offsets ? d + num_chunks * kEntryWords : nullptr;
  return table;
}

std::vector<at::Tensor> contiguous_list(at::TensorList tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.contiguous());
  return out;
}

std::vector<int64_t> const_addresses(at::TensorList tensors) {
  std::vector<int64_t> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.numel() > 0 ? address_of(t.const_data_ptr()) : 0);
  return out;
}

std::vector<int64_t> mutable_addresses(at::TensorList tensors) {
  std::vector<int64_t> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.numel() > 0 ? address_of(t.mutable_data_ptr()) : 0);
  return out;
}

template <typename scalar_t>
void launch_reduce(const DeviceChunkTable& table, int64_t kind, double* partials, cudaStream_t stream) {
  const unsigned int blocks = grid_for(table.num_chunks, 1);
  if (kind == kSumAbsProduct) {
    multi_tensor_reduce_kernel<scalar_t, kSumAbsProduct>
        <<<blocks, kThreads, 0, stream>>>(table.entries, table.num_chunks, partials);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else if (kind == kSumProduct) {
    multi_tensor_reduce_kernel<scalar_t, kSumProduct>
        <<<blocks, kThreads, 0, stream>>>(table.entries, table.num_chunks, partials);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  } else {
    multi_tensor_reduce_kernel<scalar_t, kSumSquares>
        <<<blocks, kThreads, 0, stream>>>(table.entries, table.num_chunks, partials);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

template <typename scalar_t>
void launch_abs(const DeviceChunkTable& table, cudaStream_t stream) {
  multi_tensor_abs_kernel<scalar_t>
      <<<grid_for(table.num_chunks, 1), kThreads, 0, stream>>>(table.entries, table.num_chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_mul_signs(const DeviceChunkTable& table, cudaStream_t stream) {
  multi_tensor_mul_signs_kernel<scalar_t>
      <<<grid_for(table.num_chunks, 1), kThreads, 0, stream>>>(table.entries, table.num_chunks);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor multi_tensor_reduce_cuda(at::TensorList first, at::TensorList second, int64_t kind) {
  const char* op = "multi_tensor_reduce";
  TORCH_CHECK(kind >= 0 && kind <= 2, "rdnas::", op, ": kind must be 0 (sum |a*b|), 1 (sum a*b) or 2 (sum a*a), got ",
              kind);
  check_multi_tensor_lists(op, first, second, kind != kSumSquares);
  // No tensors, so no device: as the CPU kernel, an empty float64 tensor.
  if (first.empty()) return at::zeros({0}, at::TensorOptions().dtype(at::kDouble));
  c10::cuda::CUDAGuard device_guard(first[0].device());
  const int64_t num_tensors = static_cast<int64_t>(first.size());
  const at::TensorOptions out_options = first[0].options().dtype(at::kDouble);
  const std::vector<at::Tensor> a = contiguous_list(first), b = contiguous_list(second);
  const MultiTensorChunks chunks = multi_tensor_chunks(a);
  const int64_t num_chunks = static_cast<int64_t>(chunks.tensor.size());
  if (num_chunks == 0) return at::zeros({num_tensors}, out_options);  // every tensor is empty: all sums are 0
  const DeviceChunkTable table = upload_chunk_table(chunks, const_addresses(a), const_addresses(b),
                                                    /*with_offsets=*/true, first[0].device());
  at::Tensor partials = at::empty({num_chunks}, out_options);
  at::Tensor out = at::empty({num_tensors}, out_options);  // every element is written by the finish kernel
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  double* partials_ptr = partials.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a[0].scalar_type(), "rdnas::multi_tensor_reduce", [&] {
    launch_reduce<scalar_t>(table, kind, partials_ptr, stream);
  });
  multi_tensor_reduce_finish_kernel<<<grid_for(num_tensors, kFinalizeThreads), kFinalizeThreads, 0, stream>>>(
      partials_ptr, table.offsets, num_tensors, out.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

void multi_tensor_abs_cuda(at::TensorList tensors, at::TensorList signs) {
  check_tensors_and_signs("multi_tensor_abs_", tensors, signs);
  if (tensors.empty()) return;
  c10::cuda::CUDAGuard device_guard(tensors[0].device());
  const MultiTensorChunks chunks = multi_tensor_chunks(tensors);
  if (chunks.tensor.empty()) return;  // no elements
  const DeviceChunkTable table = upload_chunk_table(chunks, mutable_addresses(tensors), mutable_addresses(signs),
                                                    /*with_offsets=*/false, tensors[0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "rdnas::multi_tensor_abs_",
                                  [&] { launch_abs<scalar_t>(table, stream); });
}

void multi_tensor_mul_signs_cuda(at::TensorList tensors, at::TensorList signs) {
  check_tensors_and_signs("multi_tensor_mul_signs_", tensors, signs);
  if (tensors.empty()) return;
  c10::cuda::CUDAGuard device_guard(tensors[0].device());
  const MultiTensorChunks chunks = multi_tensor_chunks(tensors);
  if (chunks.tensor.empty()) return;  // no elements
  const DeviceChunkTable table = upload_chunk_table(chunks, mutable_addresses(tensors), const_addresses(signs),
                                                    /*with_offsets=*/false, tensors[0].device());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(),
                                  "rdnas::multi_tensor_mul_signs_", [&] { launch_mul_signs<scalar_t>(table, stream); });
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CUDA, m) {
  m.impl("multi_tensor_reduce", &multi_tensor_reduce_cuda);
  m.impl("multi_tensor_abs_", &multi_tensor_abs_cuda);
  m.impl("multi_tensor_mul_signs_", &multi_tensor_mul_signs_cuda);
}

}  // namespace rdnas
