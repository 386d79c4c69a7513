// Argument checks and operand preparation shared by the CPU and CUDA margin ranking loss kernels.
#include "margin_rank_loss.h"

#include "checks.h"

#include <ATen/core/Tensor.h>

#include <algorithm>

namespace rdnas {
namespace {

// Broadcasts `shape` with `other` in place, naming both arguments when they do not broadcast.
void broadcast_into(const char* op, std::vector<int64_t>& shape, const char* shape_name, const char* other_name,
                    c10::IntArrayRef other) {
  const size_t ndim = std::max(shape.size(), other.size());
  std::vector<int64_t> result(ndim, 1);
  for (size_t k = 0; k < ndim; ++k) {
    const int64_t a = k < ndim - shape.size() ? 1 : shape[k - (ndim - shape.size())];
    const int64_t b = k < ndim - other.size() ? 1 : other[k - (ndim - other.size())];
    TORCH_CHECK(a == b || a == 1 || b == 1, "rdnas::", op, ": ", shape_name, " ", describe_shape(shape), " and ",
                other_name, " ", describe_shape(other), " cannot be broadcast together (size ", a, " vs ", b,
                " at dimension ", k, ")");
    result[k] = a == 1 ? b : a;
  }
  shape = std::move(result);
}

// An operand the kernels can read: contiguous with the broadcast shape, or a single element (step 0).
at::Tensor as_kernel_operand(const at::Tensor& t, const std::vector<int64_t>& shape) {
  if (t.numel() == 1) return t.reshape({1});
  if (t.sizes().vec() == shape && t.is_contiguous()) return t;
  return t.expand(shape).contiguous();
}

}  // namespace

MarginRankLossOperands prepare_margin_rank_loss(const char* op, const at::Tensor& input1, const at::Tensor& input2,
                                                const at::Tensor& target, const c10::optional<at::Tensor>& margin,
                                                int64_t reduction, const at::Tensor& grad) {
  check_reduction(op, reduction);
  check_floating(op, "input1", input1);
  check_same_dtype(op, "input1", input1, "input2", input2);
  check_same_dtype(op, "input1", input1, "target", target);
  check_same_device(op, "input1", input1, "input2", input2);
  check_same_device(op, "input1", input1, "target", target);

  MarginRankLossOperands ops;
  ops.shape = input1.sizes().vec();
  broadcast_into(op, ops.shape, "input1", "input2", input2.sizes());
  broadcast_into(op, ops.shape, "input1 and input2", "target", target.sizes());
  if (margin.has_value()) {
    check_same_dtype(op, "input1", input1, "margin", *margin);
    check_same_device(op, "input1", input1, "margin", *margin);
    broadcast_into(op, ops.shape, "the inputs", "margin", margin->sizes());
  }
  ops.numel = 1;
  for (int64_t s : ops.shape) ops.numel *= s;

  if (grad.defined()) {
    check_same_dtype(op, "input1", input1, "grad", grad);
    check_same_device(op, "input1", input1, "grad", grad);
    if (reduction == kReduceNone) {
      TORCH_CHECK(grad.sizes().vec() == ops.shape, "rdnas::", op, ": grad must have the broadcast shape ",
                  describe_shape(ops.shape), " of the inputs, got ", describe_shape(grad.sizes()));
    } else {
      TORCH_CHECK(grad.numel() == 1, "rdnas::", op, ": grad of a reduced loss must have one element, got shape ",
                  describe_shape(grad.sizes()));
    }
  }
  if (ops.numel == 0) {
    ops.input1 = input1, ops.input2 = input2, ops.target = target;
    if (margin.has_value()) ops.margin = *margin;
    ops.grad = grad;
    return ops;
  }
  ops.input1 = as_kernel_operand(input1, ops.shape);
  ops.input2 = as_kernel_operand(input2, ops.shape);
  ops.target = as_kernel_operand(target, ops.shape);
  if (margin.has_value()) ops.margin = as_kernel_operand(*margin, ops.shape);
  if (grad.defined()) ops.grad = reduction == kReduceNone ? as_kernel_operand(grad, ops.shape) : grad.reshape({1});
  return ops;
}

PairwiseOperands prepare_pairwise_margin_rank_loss(const char* op, const at::Tensor& scores,
                                                   const at::Tensor& teacher, const c10::optional<at::Tensor>& groups,
                                                   int64_t reduction, int64_t loss_kind) {
  check_reduction(op, reduction);
  TORCH_CHECK(loss_kind == kPairHinge || loss_kind == kPairLogistic, "rdnas::", op,
              ": loss_kind must be 0 (hinge) or 1 (logistic), got ", loss_kind);
  check_floating(op, "scores", scores);
  TORCH_CHECK(scores.dim() == 1 || scores.dim() == 2, "rdnas::", op, ": scores must have shape [N] or [B, N], got ",
              describe_shape(scores.sizes()));
  TORCH_CHECK(at::isFloatingType(teacher.scalar_type()), "rdnas::", op,
              ": teacher (the target ranking) must be a floating-point tensor, got ", teacher.scalar_type(),
              "; convert integer ranks with .to(scores.dtype)");
  check_same_dtype(op, "scores", scores, "teacher", teacher);
  check_same_device(op, "scores", scores, "teacher", teacher);

  PairwiseOperands ops;
  ops.input_was_1d = scores.dim() == 1;
  ops.batch = ops.input_was_1d ? 1 : scores.size(0);
  ops.n = scores.size(-1);
  auto fits = [&](const at::Tensor& t) {
    return t.sizes() == scores.sizes() || (t.dim() == 1 && t.size(0) == ops.n);
  };
  TORCH_CHECK(fits(teacher), "rdnas::", op, ": teacher must have the shape of scores ",
              describe_shape(scores.sizes()), " or [", ops.n, "], got ", describe_shape(teacher.sizes()));
  ops.scores = scores.reshape({ops.batch, ops.n}).contiguous();
  ops.teacher = teacher.contiguous();
  ops.teacher_batch_stride = teacher.dim() == 2 ? ops.n : 0;
  if (groups.has_value()) {
    check_integral(op, "groups", *groups);
    check_same_device(op, "scores", scores, "groups", *groups);
    TORCH_CHECK(fits(*groups), "rdnas::", op, ": groups must have the shape of scores ",
                describe_shape(scores.sizes()), " or [", ops.n, "], got ", describe_shape(groups->sizes()));
    ops.groups = groups->to(at::kLong).contiguous();
    ops.groups_batch_stride = groups->dim() == 2 ? ops.n : 0;
  }
  return ops;
}

PairwiseOperands prepare_pairwise_margin_rank_loss_backward(const char* op, const at::Tensor& grad,
                                                            const at::Tensor& scores, const at::Tensor& teacher,
                                                            const c10::optional<at::Tensor>& groups,
                                                            int64_t loss_kind) {
  PairwiseOperands ops = prepare_pairwise_margin_rank_loss(op, scores, teacher, groups, kReduceNone, loss_kind);
  check_same_device(op, "scores", scores, "grad", grad);
  check_same_dtype(op, "scores", scores, "grad", grad);
  check_same_shape(op, "scores", scores, "grad", grad);
  return ops;
}

}  // namespace rdnas
