// Named-argument input checks shared by every rdnas kernel.
//
// Every message starts with the op's qualified name and names the argument, so a user sees e.g.
//   rdnas::margin_rank_loss: input1 and target must be on the same device, got cpu and cuda:0
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <string>

namespace rdnas {

inline std::string describe_shape(c10::IntArrayRef shape) {
  std::string out = "[";
  for (size_t d = 0; d < shape.size(); ++d) {
    if (d) out += ", ";
    out += std::to_string(shape[d]);
  }
  return out + "]";
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "rdnas::", op, ": ", name,
              " must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              t.scalar_type());
}

inline void check_integral(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK(at::isIntegralType(t.scalar_type(), /*includeBool=*/false), "rdnas::", op, ": ", name,
              " must be an integer tensor of group ids, got ", t.scalar_type());
}

inline void check_same_dtype(const char* op, const char* name_a, const at::Tensor& a, const char* name_b,
                             const at::Tensor& b) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "rdnas::", op, ": ", name_a, " and ", name_b,
              " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
}

inline void check_same_device(const char* op, const char* name_a, const at::Tensor& a, const char* name_b,
                              const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), "rdnas::", op, ": ", name_a, " and ", name_b,
              " must be on the same device, got ", a.device(), " and ", b.device());
}

inline void check_same_shape(const char* op, const char* name_a, const at::Tensor& a, const char* name_b,
                             const at::Tensor& b) {
  TORCH_CHECK(a.sizes() == b.sizes(), "rdnas::", op, ": ", name_a, " and ", name_b,
              " must have the same shape, got ", describe_shape(a.sizes()), " and ", describe_shape(b.sizes()));
}

// at::Reduction values: None = 0, Mean = 1, Sum = 2.
inline void check_reduction(const char* op, int64_t reduction) {
  TORCH_CHECK(reduction >= 0 && reduction <= 2, "rdnas::", op,
              ": reduction must be 0 (none), 1 (mean) or 2 (sum), got ", reduction);
}

}  // namespace rdnas
