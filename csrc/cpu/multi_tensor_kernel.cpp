// CPU kernels of the multi-tensor ops (see ../multi_tensor.h): one parallel region over the chunk table of every
// tensor; each chunk sums in the opmath type over blocks of 2048 elements and in float64 across blocks.
#include "../checks.h"
#include "../multi_tensor.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace rdnas {
namespace {

constexpr int64_t kBlock = 2048;

template <typename scalar_t, int64_t kKind>
double chunk_sum(const scalar_t* a, const scalar_t* b, int64_t length) {
  using acc_t = at::opmath_type<scalar_t>;
  double total = 0;
  for (int64_t b0 = 0; b0 < length; b0 += kBlock) {
    const int64_t b1 = std::min(length, b0 + kBlock);
    acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t k = b0; k < b1; ++k) {
      const acc_t x = static_cast<acc_t>(a[k]);
      if constexpr (kKind == kSumAbsProduct) {
        sum += std::abs(x * static_cast<acc_t>(b[k]));
      } else if constexpr (kKind == kSumProduct) {
        sum += x * static_cast<acc_t>(b[k]);
      } else {
        sum += x * x;
      }
    }
    total += static_cast<double>(sum);
  }
  return total;
}

// Pragmas cannot sit inside the AT_DISPATCH macro's argument, so the elementwise loops live here; the sign and the
// absolute value are separate loops so that each vectorises.
template <typename scalar_t>
void chunk_abs(scalar_t* __restrict w, int8_t* __restrict s, int64_t length) {
#pragma omp simd
  for (int64_t k = 0; k < length; ++k) s[k] = static_cast<int8_t>((w[k] > scalar_t(0)) - (w[k] < scalar_t(0)));
#pragma omp simd
  for (int64_t k = 0; k < length; ++k) w[k] = s[k] < 0 ? static_cast<scalar_t>(-w[k]) : w[k];
}

template <typename scalar_t>
void chunk_mul_signs(scalar_t* __restrict w, const int8_t* __restrict s, int64_t length) {
#pragma omp simd
  for (int64_t k = 0; k < length; ++k) w[k] = static_cast<scalar_t>(w[k] * static_cast<scalar_t>(s[k]));
}

std::vector<at::Tensor> contiguous_list(at::TensorList tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.contiguous());
  return out;
}

at::Tensor multi_tensor_reduce_cpu(at::TensorList first, at::TensorList second, int64_t kind) {
  const char* op = "multi_tensor_reduce";
  TORCH_CHECK(kind >= 0 && kind <= 2, "rdnas::", op, ": kind must be 0 (sum |a*b|), 1 (sum a*b) or 2 (sum a*a), got ",
              kind);
  check_multi_tensor_lists(op, first, second, kind != kSumSquares);
  at::Tensor out = at::zeros({static_cast<int64_t>(first.size())}, at::TensorOptions().dtype(at::kDouble));
  if (first.empty()) return out;
  const std::vector<at::Tensor> a = contiguous_list(first), b = contiguous_list(second);
  const MultiTensorChunks chunks = multi_tensor_chunks(a);
  std::vector<double> partial(chunks.tensor.size());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a[0].scalar_type(), "rdnas::multi_tensor_reduce", [&] {
    at::parallel_for(0, static_cast<int64_t>(partial.size()), 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t t = chunks.tensor[c];
        const scalar_t* pa = a[t].const_data_ptr<scalar_t>() + chunks.start[c];
        const scalar_t* pb = kind == kSumSquares ? nullptr : b[t].const_data_ptr<scalar_t>() + chunks.start[c];
        if (kind == kSumAbsProduct) partial[c] = chunk_sum<scalar_t, kSumAbsProduct>(pa, pb, chunks.length[c]);
        else if (kind == kSumProduct) partial[c] = chunk_sum<scalar_t, kSumProduct>(pa, pb, chunks.length[c]);
        else partial[c] = chunk_sum<scalar_t, kSumSquares>(pa, pb, chunks.length[c]);
      }
    });
  });
  double* result = out.data_ptr<double>();
  for (size_t c = 0; c < partial.size(); ++c) result[chunks.tensor[c]] += partial[c];
  return out;
}

void multi_tensor_abs_cpu(at::TensorList tensors, at::TensorList signs) {
  check_tensors_and_signs("multi_tensor_abs_", tensors, signs);
  if (tensors.empty()) return;
  const MultiTensorChunks chunks = multi_tensor_chunks(tensors);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "rdnas::multi_tensor_abs_", [&] {
    at::parallel_for(0, static_cast<int64_t>(chunks.tensor.size()), 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t t = chunks.tensor[c];
        chunk_abs(tensors[t].data_ptr<scalar_t>() + chunks.start[c], signs[t].data_ptr<int8_t>() + chunks.start[c],
                  chunks.length[c]);
      }
    });
  });
}

void multi_tensor_mul_signs_cpu(at::TensorList tensors, at::TensorList signs) {
  check_tensors_and_signs("multi_tensor_mul_signs_", tensors, signs);
  if (tensors.empty()) return;
  const MultiTensorChunks chunks = multi_tensor_chunks(tensors);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, tensors[0].scalar_type(), "rdnas::multi_tensor_mul_signs_",
                                  [&] {
    at::parallel_for(0, static_cast<int64_t>(chunks.tensor.size()), 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t t = chunks.tensor[c];
        chunk_mul_signs(tensors[t].data_ptr<scalar_t>() + chunks.start[c],
                        signs[t].const_data_ptr<int8_t>() + chunks.start[c], chunks.length[c]);
      }
    });
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CPU, m) {
  m.impl("multi_tensor_reduce", &multi_tensor_reduce_cpu);
  m.impl("multi_tensor_abs_", &multi_tensor_abs_cpu);
  m.impl("multi_tensor_mul_signs_", &multi_tensor_mul_signs_cpu);
}

}  // namespace rdnas
