// CUDA kernels of the multi-tensor ops (see ../multi_tensor.h): the host side (argument checks, the chunk table's
// upload, outputs, dtype dispatch) and the registration. The kernels, the table layout and the launch functions are
// in multi_tensor_device.cuh, which the CPU test harness of tests/cudasim runs as well.
#include "../checks.h"
#include "../multi_tensor.h"
#include "multi_tensor_device.cuh"

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

namespace rdnas {
namespace {

int64_t address_of(const void* p) { return static_cast<int64_t>(reinterpret_cast<intptr_t>(p)); }

// The chunk table on the device; `storage` keeps it alive until the function that launched on it returns (the
// caching allocator orders its reuse after the launches on the same stream).
struct DeviceChunkTable {
  at::Tensor storage;
  int64_t num_chunks = 0;
  const int64_t* words = nullptr;  // the table as multi_tensor_cuda::fill_chunk_table wrote it
};

// first[t] / second[t]: the addresses of element 0 of tensor t in the two lists (second may be empty).
// chunks must hold at least one chunk. The table is written into a pinned int64 CPU tensor and reaches the device
// with one non-blocking copy on the current stream.
DeviceChunkTable upload_chunk_table(const MultiTensorChunks& chunks, const std::vector<int64_t>& first,
                                    const std::vector<int64_t>& second, bool with_offsets, at::Device device) {
  const int64_t num_chunks = static_cast<int64_t>(chunks.tensor.size());
  const int64_t words =
      multi_tensor_cuda::chunk_table_words(num_chunks, static_cast<int64_t>(first.size()), with_offsets);
  at::Tensor host = at::empty({words}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  multi_tensor_cuda::fill_chunk_table(host.data_ptr<int64_t>(), chunks, first, second, with_offsets);
  DeviceChunkTable table;
  table.storage = host.to(device, at::kLong, /*non_blocking=*/true);
  table.num_chunks = num_chunks;
  table.words = table.storage.const_data_ptr<int64_t>();
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
  double* out_ptr = out.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a[0].scalar_type(), "rdnas::multi_tensor_reduce", [&] {
    multi_tensor_cuda::launch_reduce<scalar_t>(table.words, num_chunks, num_tensors, kind, partials_ptr, out_ptr,
                                               stream);
  });
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "rdnas::multi_tensor_abs_", [&] {
    multi_tensor_cuda::launch_abs<scalar_t>(table.words, table.num_chunks, stream);
  });
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
                                  "rdnas::multi_tensor_mul_signs_", [&] {
    multi_tensor_cuda::launch_mul_signs<scalar_t>(table.words, table.num_chunks, stream);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CUDA, m) {
  m.impl("multi_tensor_reduce", &multi_tensor_reduce_cuda);
  m.impl("multi_tensor_abs_", &multi_tensor_abs_cuda);
  m.impl("multi_tensor_mul_signs_", &multi_tensor_mul_signs_cuda);
}

}  // namespace rdnas
