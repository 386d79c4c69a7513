// CUDA kernels of rdnas::margin_rank_loss and rdnas::margin_rank_loss_backward: the host side (argument checks,
// outputs, workspace, dtype dispatch) and the registration. The kernels, their grid sizes and launch functions are
// in margin_rank_loss_device.cuh, which the CPU test harness of tests/cudasim runs as well.
#include "../checks.h"
#include "../margin_rank_loss.h"
#include "margin_rank_loss_device.cuh"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/fill.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace rdnas {
namespace {

using margin_cuda::ElementArgs;

template <typename scalar_t, typename acc_t>
ElementArgs<scalar_t, acc_t> element_args(const MarginRankLossOperands& ops, double margin) {
  ElementArgs<scalar_t, acc_t> args{};
  args.input1 = ops.input1.const_data_ptr<scalar_t>();
  args.input2 = ops.input2.const_data_ptr<scalar_t>();
  args.target = ops.target.const_data_ptr<scalar_t>();
  args.margin = ops.margin.defined() ? ops.margin.const_data_ptr<scalar_t>() : nullptr;
  args.grad = ops.grad.defined() ? ops.grad.const_data_ptr<scalar_t>() : nullptr;
  args.step1 = operand_step(ops.input1);
  args.step2 = operand_step(ops.input2);
  args.step_target = operand_step(ops.target);
  args.step_margin = ops.margin.defined() ? operand_step(ops.margin) : 0;
  args.step_grad = ops.grad.defined() ? operand_step(ops.grad) : 0;
  args.margin_value = static_cast<acc_t>(margin);
  args.numel = ops.numel;
  return args;
}

template <typename scalar_t>
void launch_forward(const MarginRankLossOperands& ops, double margin, int64_t reduction, at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  const ElementArgs<scalar_t, acc_t> args = element_args<scalar_t, acc_t>(ops, margin);
  const int64_t workspace_doubles = margin_cuda::forward_workspace_doubles(ops.numel, reduction);
  at::Tensor workspace;
  if (workspace_doubles > 0) workspace = at::empty({workspace_doubles}, out.options().dtype(at::kDouble));
  margin_cuda::launch_forward<scalar_t>(args, reduction, out.data_ptr<scalar_t>(),
                                        workspace.defined() ? workspace.data_ptr<double>() : nullptr,
                                        c10::cuda::getCurrentCUDAStream());
}

template <typename scalar_t>
void launch_backward(const MarginRankLossOperands& ops, double margin, int64_t reduction, at::Tensor& grad_input1,
                     at::Tensor& grad_input2) {
  using acc_t = at::opmath_type<scalar_t>;
  const ElementArgs<scalar_t, acc_t> args = element_args<scalar_t, acc_t>(ops, margin);
  margin_cuda::launch_backward<scalar_t>(args, reduction, grad_input1.data_ptr<scalar_t>(),
                                         grad_input2.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream());
}

at::Tensor margin_rank_loss_cuda(const at::Tensor& input1, const at::Tensor& input2, const at::Tensor& target,
                                 const c10::optional<at::Tensor>& margin_tensor, double margin, int64_t reduction) {
  const MarginRankLossOperands ops =
      prepare_margin_rank_loss("margin_rank_loss", input1, input2, target, margin_tensor, reduction, at::Tensor());
  c10::cuda::CUDAGuard device_guard(input1.device());
  const bool reduce = reduction != kReduceNone;
  at::Tensor out = at::empty(reduce ? std::vector<int64_t>{} : ops.shape, input1.options());
  if (ops.numel == 0) {
    // The mean of no elements is NaN (as torch's mean), their sum 0; "none" gives an empty tensor.
    if (reduce) at::fill_(out, reduction == kReduceMean ? std::numeric_limits<double>::quiet_NaN() : 0.0);
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input1.scalar_type(), "rdnas::margin_rank_loss", [&] {
    launch_forward<scalar_t>(ops, margin, reduction, out);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> margin_rank_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& input1,
                                                                  const at::Tensor& input2, const at::Tensor& target,
                                                                  const c10::optional<at::Tensor>& margin_tensor,
                                                                  double margin, int64_t reduction) {
  TORCH_CHECK(grad.defined(), "rdnas::margin_rank_loss_backward: grad must be a tensor");
  const MarginRankLossOperands ops =
      prepare_margin_rank_loss("margin_rank_loss_backward", input1, input2, target, margin_tensor, reduction, grad);
  c10::cuda::CUDAGuard device_guard(input1.device());
  at::Tensor grad_input1 = at::empty(ops.shape, input1.options());
  at::Tensor grad_input2 = at::empty(ops.shape, input1.options());
  if (ops.numel == 0) return {grad_input1, grad_input2};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input1.scalar_type(), "rdnas::margin_rank_loss_backward",
                                  [&] { launch_backward<scalar_t>(ops, margin, reduction, grad_input1, grad_input2); });
  return {grad_input1, grad_input2};
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CUDA, m) {
  m.impl("margin_rank_loss", &margin_rank_loss_cuda);
  m.impl("margin_rank_loss_backward", &margin_rank_loss_backward_cuda);
}

}  // namespace rdnas
