// Multi-tensor ops for the zero-cost proxies: one pass over every parameter tensor of a network.
//
//   multi_tensor_reduce(first, second, kind) -> float64 [T]: per tensor pair, sum |a*b| (kind 0, snip),
//     sum a*b (kind 1, synflow), or sum a*a (kind 2, grad_norm / l2_norm; second must be empty).
//   multi_tensor_abs_(tensors, signs): takes |w| in place and writes sign(w) into the int8 tensors `signs`
//     (synflow's linearisation);
//   multi_tensor_mul_signs_(tensors, signs): w *= sign, restoring the weights.
//
// The work is split into fixed-size chunks over all tensors (the chunk table), one parallel region / launch over
// the table, per-chunk partial sums in float64, then per-tensor sums in chunk order: results do not depend on the
// number of threads.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

namespace rdnas {

enum MultiTensorReduction : int64_t { kSumAbsProduct = 0, kSumProduct = 1, kSumSquares = 2 };

constexpr int64_t kMultiTensorChunk = 1 << 16;

struct MultiTensorChunks {
  std::vector<int64_t> tensor;  // which tensor each chunk belongs to
  std::vector<int64_t> start;   // first element of the chunk in its tensor
  std::vector<int64_t> length;
};

// Checks the lists (same length, floating, one dtype and device, matching shapes) and returns them contiguous.
void check_multi_tensor_lists(const char* op, at::TensorList first, at::TensorList second, bool second_required);

MultiTensorChunks multi_tensor_chunks(at::TensorList tensors);

// Checks the arguments of multi_tensor_abs_ / multi_tensor_mul_signs_: contiguous tensors (they are modified in
// place) and, for each, a contiguous int8 sign tensor of its shape on its device.
void check_tensors_and_signs(const char* op, at::TensorList tensors, at::TensorList signs);

}  // namespace rdnas
