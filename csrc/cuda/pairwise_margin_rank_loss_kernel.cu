// CUDA kernels of rdnas::pairwise_margin_rank_loss and rdnas::pairwise_margin_rank_loss_backward: the host side
// (argument checks, outputs, workspace, dtype dispatch) and the registration. The kernels, grid and launch
// functions are in pairwise_margin_rank_loss_device.cuh, which the CPU test harness of tests/cudasim runs as well.
#include "../checks.h"
#include "../margin_rank_loss.h"
#include "pairwise_margin_rank_loss_device.cuh"

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

using pairwise_cuda::PairwiseArgs;

template <typename scalar_t>
PairwiseArgs<scalar_t> pairwise_args(const PairwiseOperands& ops) {
  const int64_t row_tiles = (ops.n + pairwise_cuda::kRowsPerBlock - 1) / pairwise_cuda::kRowsPerBlock;
  TORCH_CHECK(row_tiles <= std::numeric_limits<int32_t>::max(), "rdnas: too many items per row (", ops.n, ")");
  return {ops.scores.const_data_ptr<scalar_t>(), ops.teacher.const_data_ptr<scalar_t>(),
          ops.groups.defined() ? ops.groups.const_data_ptr<int64_t>() : nullptr,
          ops.batch, ops.n, ops.teacher_batch_stride, ops.groups_batch_stride};
}

template <typename scalar_t>
void launch_pairwise_forward(const PairwiseOperands& ops, double margin, int64_t reduction, int64_t loss_kind,
                             bool want_grad, at::Tensor& loss, at::Tensor& num_pairs, at::Tensor& dsum) {
  using acc_t = at::opmath_type<scalar_t>;
  const PairwiseArgs<scalar_t> args = pairwise_args<scalar_t>(ops);
  const int64_t num_partials = pairwise_cuda::forward_num_partials(ops.batch, ops.n);
  at::Tensor partial_loss = at::empty({num_partials}, ops.scores.options().dtype(at::kDouble));
  at::Tensor partial_count = at::empty({num_partials}, ops.scores.options().dtype(at::kLong));
  pairwise_cuda::launch_forward<scalar_t>(args, margin, reduction, loss_kind, want_grad, loss.data_ptr<scalar_t>(),
                                          num_pairs.data_ptr<int64_t>(), want_grad ? dsum.data_ptr<acc_t>() : nullptr,
                                          partial_loss.data_ptr<double>(), partial_count.data_ptr<int64_t>(),
                                          c10::cuda::getCurrentCUDAStream());
}

template <typename scalar_t>
void launch_pairwise_backward(const PairwiseOperands& ops, const at::Tensor& grad, double margin, int64_t loss_kind,
                              at::Tensor& grad_scores) {
  const PairwiseArgs<scalar_t> args = pairwise_args<scalar_t>(ops);
  pairwise_cuda::launch_backward<scalar_t>(args, grad.const_data_ptr<scalar_t>(), margin, loss_kind,
                                           grad_scores.data_ptr<scalar_t>(), c10::cuda::getCurrentCUDAStream());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_margin_rank_loss_cuda(
    const at::Tensor& scores, const at::Tensor& teacher, const c10::optional<at::Tensor>& groups, double margin,
    int64_t reduction, int64_t loss_kind, bool compute_grad) {
  const char* op = "pairwise_margin_rank_loss";
  const PairwiseOperands ops = prepare_pairwise_margin_rank_loss(op, scores, teacher, groups, reduction, loss_kind);
  c10::cuda::CUDAGuard device_guard(scores.device());
  const bool reduce = reduction != kReduceNone;
  const bool want_grad = compute_grad && reduce;
  const int64_t rows_total = ops.batch * ops.n;
  const std::vector<int64_t> no_dims, empty_dims{0};
  at::Tensor loss = at::empty(reduce ? c10::IntArrayRef(no_dims) : scores.sizes(), scores.options());
  at::Tensor num_pairs = at::empty(no_dims, scores.options().dtype(at::kLong));
  at::Tensor dsum = at::empty(want_grad ? scores.sizes() : c10::IntArrayRef(empty_dims),
                              scores.options().dtype(pairwise_coef_dtype(scores.scalar_type())));
  if (rows_total == 0) {
    // No pairs: num_pairs 0, mean and sum 0 (mean divides by max(0, 1)); "none" and dsum are empty.
    at::fill_(num_pairs, 0);
    if (reduce) at::fill_(loss, 0.0);
    return {loss, num_pairs, dsum};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "rdnas::pairwise_margin_rank_loss",
                                  [&] {
    launch_pairwise_forward<scalar_t>(ops, margin, reduction, loss_kind, want_grad, loss, num_pairs, dsum);
  });
  return {loss, num_pairs, dsum};
}

at::Tensor pairwise_margin_rank_loss_backward_cuda(const at::Tensor& grad, const at::Tensor& scores,
                                                   const at::Tensor& teacher, const c10::optional<at::Tensor>& groups,
                                                   double margin, int64_t loss_kind) {
  const char* op = "pairwise_margin_rank_loss_backward";
  const PairwiseOperands ops = prepare_pairwise_margin_rank_loss_backward(op, grad, scores, teacher, groups, loss_kind);
  c10::cuda::CUDAGuard device_guard(scores.device());
  at::Tensor grad_scores = at::empty(scores.sizes(), scores.options());
  if (ops.batch * ops.n == 0) return grad_scores;
  const at::Tensor grad_rows = grad.reshape({ops.batch, ops.n}).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(),
                                  "rdnas::pairwise_margin_rank_loss_backward", [&] {
    launch_pairwise_backward<scalar_t>(ops, grad_rows, margin, loss_kind, grad_scores);
  });
  return grad_scores;
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CUDA, m) {
  m.impl("pairwise_margin_rank_loss", &pairwise_margin_rank_loss_cuda);
  m.impl("pairwise_margin_rank_loss_backward", &pairwise_margin_rank_loss_backward_cuda);
}

}  // namespace rdnas
