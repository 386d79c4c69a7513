// Shared pieces of the margin ranking loss ops: the per-element maths (host and device), and the host-side
// argument checking / operand preparation used by both the CPU and the CUDA kernels.
//
// Conventions (documented for users in rdnas/ops/margin_rank_loss.py and pairwise_margin_rank_loss.py):
//  * z = -y * (x1 - x2) + m, loss = max(z, 0) with NaN propagated (as clamp_min does), and the hinge's
//    derivative is taken where z >= 0 (as clamp_min's backward does), so results and gradients match
//    torch.nn.functional.margin_ranking_loss.
//  * Pairwise: for a pair (i, j), sigma = sign(t_i - t_j), 0 for a tie and, as torch.sign gives, for a NaN
//    difference; z_ij = m_ij - sigma * (s_i - s_j); the pair is counted when sigma != 0 and (with groups)
//    g_i != g_j; m_ij = margin * |g_i - g_j| with groups, margin otherwise. NaN scores propagate into the loss.
//    The hinge loss is max(z, 0); the logistic (RankNet) loss is softplus(z) = log(1 + exp(z)).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Optional.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace rdnas {

// at::Reduction values.
enum ReductionKind : int64_t { kReduceNone = 0, kReduceMean = 1, kReduceSum = 2 };
// Per-pair loss of pairwise_margin_rank_loss.
enum PairLossKind : int64_t { kPairHinge = 0, kPairLogistic = 1 };

// ---------------------------------------------------------------------------------------------------------------
// Element maths. acc_t is float for float16 / bfloat16 / float32 inputs and double for float64 ones.

C10_HOST_DEVICE inline float math_exp(float x) { return ::expf(x); }
C10_HOST_DEVICE inline double math_exp(double x) { return ::exp(x); }
C10_HOST_DEVICE inline float math_log1p(float x) { return ::log1pf(x); }
C10_HOST_DEVICE inline double math_log1p(double x) { return ::log1p(x); }

// The same operation order as torch's composite (-target * (input1 - input2) + margin), so float32 and float64
// results are bitwise equal to it where no fused multiply-add is contracted.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t margin_rank_z(acc_t x1, acc_t x2, acc_t y, acc_t m) {
  const acc_t scaled = -y * (x1 - x2);
  return scaled + m;
}

// max(z, 0) that propagates NaN (z <= 0 is false for NaN).
template <typename acc_t>
C10_HOST_DEVICE inline acc_t hinge(acc_t z) {
  return z <= acc_t(0) ? acc_t(0) : z;
}

// Where max(z, 0) passes its gradient, as clamp_min's backward defines it: z >= 0 (false for NaN).
template <typename acc_t>
C10_HOST_DEVICE inline bool hinge_active(acc_t z) {
  return z >= acc_t(0);
}

// softplus(z) = log(1 + exp(z)) without overflow; NaN propagates.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t softplus(acc_t z) {
  return z > acc_t(0) ? z + math_log1p(math_exp(-z)) : math_log1p(math_exp(z));
}

// sigmoid(z) = d softplus(z) / dz without overflow; NaN propagates.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t sigmoid(acc_t z) {
  if (z >= acc_t(0)) return acc_t(1) / (acc_t(1) + math_exp(-z));
  const acc_t e = math_exp(z);
  return e / (acc_t(1) + e);
}

// sign(dt) as torch.sign computes it: +1, -1, or 0 for zero and for NaN.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t teacher_sign(acc_t dt) {
  return (dt > acc_t(0) ? acc_t(1) : acc_t(0)) - (dt < acc_t(0) ? acc_t(1) : acc_t(0));
}

// ---------------------------------------------------------------------------------------------------------------
// margin_rank_loss operands. Every operand is either "flat" (contiguous with the broadcast shape) or a single
// element broadcast to every position (step 0); anything else is materialised by prepare_margin_rank_loss.

struct MarginRankLossOperands {
  at::Tensor input1, input2, target;
  at::Tensor margin;        // undefined: the scalar margin is used
  at::Tensor grad;          // backward only; undefined in the forward
  std::vector<int64_t> shape;  // broadcast shape
  int64_t numel = 0;
};

inline int64_t operand_step(const at::Tensor& t) { return t.numel() == 1 ? 0 : 1; }

// Checks the arguments of rdnas::margin_rank_loss / margin_rank_loss_backward (op names the caller) and returns
// the operands broadcast to one shape, each flat or single-element. `grad` may be undefined.
MarginRankLossOperands prepare_margin_rank_loss(const char* op, const at::Tensor& input1, const at::Tensor& input2,
                                                const at::Tensor& target, const c10::optional<at::Tensor>& margin,
                                                int64_t reduction, const at::Tensor& grad);

// ---------------------------------------------------------------------------------------------------------------
// pairwise_margin_rank_loss operands: scores [B, N] contiguous; teacher and groups contiguous [B, N] or [N]
// (batch stride 0 = one teacher for every row).

struct PairwiseOperands {
  at::Tensor scores, teacher, groups;  // groups undefined when absent
  int64_t batch = 0, n = 0;
  int64_t teacher_batch_stride = 0, groups_batch_stride = 0;
  bool input_was_1d = false;
};

PairwiseOperands prepare_pairwise_margin_rank_loss(const char* op, const at::Tensor& scores,
                                                   const at::Tensor& teacher, const c10::optional<at::Tensor>& groups,
                                                   int64_t reduction, int64_t loss_kind);

// The same for rdnas::pairwise_margin_rank_loss_backward, which also checks grad (the shape of scores).
PairwiseOperands prepare_pairwise_margin_rank_loss_backward(const char* op, const at::Tensor& grad,
                                                            const at::Tensor& scores, const at::Tensor& teacher,
                                                            const c10::optional<at::Tensor>& groups,
                                                            int64_t loss_kind);

// Dtype of the gradient coefficients returned by the forward: the accumulation type (float32 for half types).
inline at::ScalarType pairwise_coef_dtype(at::ScalarType scores_dtype) {
  return scores_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace rdnas
