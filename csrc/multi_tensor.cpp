// Argument checks and the chunk table shared by the CPU and CUDA multi-tensor kernels.
#include "multi_tensor.h"

#include "checks.h"

#include <string>

namespace rdnas {

void check_multi_tensor_lists(const char* op, at::TensorList first, at::TensorList second, bool second_required) {
  if (second_required) {
    TORCH_CHECK(first.size() == second.size(), "rdnas::", op, ": the two tensor lists must have the same length, got ",
                first.size(), " and ", second.size());
  } else {
    TORCH_CHECK(second.empty(), "rdnas::", op, ": this reduction takes one tensor list; the second must be empty, got ",
                second.size(), " tensors");
  }
  for (size_t k = 0; k < first.size(); ++k) {
    const std::string name = "tensors[" + std::to_string(k) + "]";
    check_floating(op, name.c_str(), first[k]);
    check_same_dtype(op, "tensors[0]", first[0], name.c_str(), first[k]);
    check_same_device(op, "tensors[0]", first[0], name.c_str(), first[k]);
    if (second_required) {
      const std::string other = "second[" + std::to_string(k) + "]";
      check_same_dtype(op, name.c_str(), first[k], other.c_str(), second[k]);
      check_same_device(op, name.c_str(), first[k], other.c_str(), second[k]);
      check_same_shape(op, name.c_str(), first[k], other.c_str(), second[k]);
    }
  }
}

void check_tensors_and_signs(const char* op, at::TensorList tensors, at::TensorList signs) {
  check_multi_tensor_lists(op, tensors, {}, false);
  TORCH_CHECK(tensors.size() == signs.size(), "rdnas::", op, ": tensors and signs must have the same length, got ",
              tensors.size(), " and ", signs.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    TORCH_CHECK(tensors[k].is_contiguous(), "rdnas::", op, ": tensors are modified in place and must be contiguous");
    TORCH_CHECK(signs[k].scalar_type() == at::kChar && signs[k].sizes() == tensors[k].sizes() &&
                    signs[k].is_contiguous() && signs[k].device() == tensors[k].device(),
                "rdnas::", op, ": signs[", k, "] must be a contiguous int8 tensor of the shape and device of tensors[", k,
                "]");
  }
}

MultiTensorChunks multi_tensor_chunks(at::TensorList tensors) {
  MultiTensorChunks chunks;
  for (size_t k = 0; k < tensors.size(); ++k) {
    const int64_t numel = tensors[k].numel();
    for (int64_t start = 0; start < numel; start += kMultiTensorChunk) {
      chunks.tensor.push_back(static_cast<int64_t>(k));
      chunks.start.push_back(start);
      chunks.length.push_back(std::min(kMultiTensorChunk, numel - start));
    }
  }
  return chunks;
}

}  // namespace rdnas
