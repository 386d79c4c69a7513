// CPU kernels of rdnas::pairwise_margin_rank_loss and rdnas::pairwise_margin_rank_loss_backward.
//
// Every row i (item i of batch b) is one task: a vectorised sweep over j != i accumulates its share of the loss,
// its number of counted pairs and the gradient of the summed loss w.r.t. s_i. Each unordered pair is therefore
// seen twice, once from each side, which buys race-free parallelism and the whole gradient in the forward pass;
// the loss and pair count are halved at the end. Extra memory is O(B * N); no N x N tensor exists. Rows are
// combined in row order in float64, so results do not depend on the number of threads.
#include "../checks.h"
#include "../margin_rank_loss.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace rdnas {
namespace {

constexpr int64_t kColumnBlock = 4096;  // inner sweeps are summed in acc_t over at most this many columns

// Inputs of one batch row, converted to acc_t.
template <typename acc_t>
struct PairRow {
  const acc_t* scores;
  const acc_t* teacher;
  const acc_t* groups;  // nullptr without groups
  int64_t n;
  bool finite;  // every score of the row is finite: the vector sweeps may run
};

struct RowSums {
  double loss = 0, dsum = 0, count = 0;
};

// One pair (i, j) seen from item i, in the form the vector sweeps below use lane by lane.
template <typename acc_t>
struct PairTerms {
  acc_t sign;  // teacher_sign(t_i - t_j): +1, -1, or 0 (tie or NaN)
  acc_t z;     // m_ij - sign * (s_i - s_j)
  bool valid;  // the pair is counted: sign != 0 and, with groups, g_i != g_j
};

template <typename acc_t, bool kGroups>
inline PairTerms<acc_t> pair_terms(acc_t ti, acc_t tj, acc_t si, acc_t sj, acc_t gi, acc_t gj, acc_t margin) {
  const acc_t sign = teacher_sign(ti - tj);
  bool valid = sign != acc_t(0);
  acc_t m = margin;
  if constexpr (kGroups) {
    valid = valid && gi != gj;
    m = margin * std::abs(gi - gj);
  }
  return {sign, m - sign * (si - sj), valid};
}

// The column sweeps. The hinge ones are written with GCC/Clang vector extensions, because compilers turn the
// scalar form's selects into branches. kBytes is the register width of the instruction set the sweep is built for
// (16: SSE2 baseline, 32: AVX2); GCC lowers comparisons of vectors wider than the target's registers lane by lane.
// Vector lanes run only on rows whose scores are all finite (their masked sums would drop a NaN z); the scalar
// pair_terms path handles the rest and every tail, so NaN and inf behave exactly as in the reference.
// (GCC ignores vector_size on a dependent alias template, hence the member typedef.)
template <typename acc_t, int kBytes>
struct VecOf {
  typedef acc_t type __attribute__((vector_size(kBytes)));
};

template <typename acc_t, int kBytes>
struct Lanes {
  using V = typename VecOf<acc_t, kBytes>::type;
  using M = decltype(V{} > V{});  // lane masks: all bits set where true
  static constexpr int64_t kCount = kBytes / static_cast<int>(sizeof(acc_t));

  __attribute__((always_inline)) static V load(const acc_t* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  // v where mask, +0 elsewhere, as a bitwise and.
  __attribute__((always_inline)) static V where(M mask, V v) { return (V)(mask & (M)v); }
  __attribute__((always_inline)) static double sum(V v) {
    double total = 0;
    for (int64_t k = 0; k < kCount; ++k) total += static_cast<double>(v[k]);
    return total;
  }
};

// pair_terms for columns [j, j + lanes) of a finite row.
template <typename acc_t, int kBytes, bool kGroups>
struct PairLanes {
  using L = Lanes<acc_t, kBytes>;
  typename L::V sign, z;
  typename L::M valid;

  __attribute__((always_inline)) PairLanes(const PairRow<acc_t>& row, int64_t j, acc_t si, acc_t ti, acc_t gi,
                                           acc_t margin) {
    using V = typename L::V;
    using M = typename L::M;
    const V zero = V{} * acc_t(0), one = zero + acc_t(1);
    const V dt = ti - L::load(row.teacher + j);
    const M greater = dt > zero, less = dt < zero;
    sign = L::where(greater, one) - L::where(less, one);
    valid = greater | less;
    V m = zero + margin;
    if constexpr (kGroups) {
      const V gd = gi - L::load(row.groups + j);
      const M sign_bit = (M)(zero * acc_t(-1));  // -0.0: the sign bit alone
      valid = valid & (gd != zero);
      m = margin * (V)((M)gd & ~sign_bit);
    }
    z = m - sign * (si - L::load(row.scores + j));
  }
};

// Hinge loss, d loss / d s_i and the counted-pair count of row item (s_i, t_i, g_i) over columns [j0, j1).
template <typename acc_t, int kBytes, bool kGroups, bool kGrad>
__attribute__((always_inline)) inline void hinge_sweep(const PairRow<acc_t>& row, int64_t j0, int64_t j1, acc_t si,
                                                       acc_t ti, acc_t gi, acc_t margin, RowSums& sums) {
  using L = Lanes<acc_t, kBytes>;
  using V = typename L::V;
  const V zero = V{} * acc_t(0), one = zero + acc_t(1);
  for (int64_t b0 = j0; b0 < j1; b0 += kColumnBlock) {
    const int64_t b1 = std::min(j1, b0 + kColumnBlock);
    V loss = zero, dsum = zero, count = zero;
    int64_t j = b0;
    for (; row.finite && j + L::kCount <= b1; j += L::kCount) {
      const PairLanes<acc_t, kBytes, kGroups> p(row, j, si, ti, gi, margin);
      loss += L::where(p.valid & (p.z > zero), p.z);
      if constexpr (kGrad) dsum -= L::where(p.valid & (p.z >= zero), p.sign);
      count += L::where(p.valid, one);
    }
    double loss_total = L::sum(loss), dsum_total = kGrad ? L::sum(dsum) : 0.0, count_total = L::sum(count);
    for (; j < b1; ++j) {
      const PairTerms<acc_t> p = pair_terms<acc_t, kGroups>(ti, row.teacher[j], si, row.scores[j], gi,
                                                            kGroups ? row.groups[j] : acc_t(0), margin);
      loss_total += p.valid ? static_cast<double>(hinge(p.z)) : 0.0;
      if constexpr (kGrad) dsum_total += (p.valid && hinge_active(p.z)) ? static_cast<double>(-p.sign) : 0.0;
      count_total += p.valid ? 1.0 : 0.0;
    }
    sums.loss += loss_total;
    sums.dsum += dsum_total;
    sums.count += count_total;
  }
}

// The same for the logistic loss (scalar: it needs exp per pair, which the vector extensions do not provide).
template <typename acc_t, bool kGroups, bool kGrad>
__attribute__((always_inline)) inline void logistic_sweep(const PairRow<acc_t>& row, int64_t j0, int64_t j1,
                                                          acc_t si, acc_t ti, acc_t gi, acc_t margin, RowSums& sums) {
  for (int64_t j = j0; j < j1; ++j) {
    const PairTerms<acc_t> p = pair_terms<acc_t, kGroups>(ti, row.teacher[j], si, row.scores[j], gi,
                                                          kGroups ? row.groups[j] : acc_t(0), margin);
    if (!p.valid) continue;
    sums.loss += static_cast<double>(softplus(p.z));
    if constexpr (kGrad) sums.dsum += static_cast<double>(-p.sign * sigmoid(p.z));
    sums.count += 1.0;
  }
}

// d/ds_i of sum_k grad_k * share_k, where share_k = 1/2 sum_j loss_kj: -1/2 sum_j w_ij sign_ij (grad_i + grad_j),
// w = d loss / d z (hinge: z >= 0; logistic: sigmoid(z)); over columns [j0, j1).
template <typename acc_t, int kBytes, bool kGroups, int64_t kLossKind>
__attribute__((always_inline)) inline double backward_sweep(const PairRow<acc_t>& row, const acc_t* grad, int64_t j0,
                                                            int64_t j1, acc_t si, acc_t ti, acc_t gi, acc_t grad_i,
                                                            acc_t margin) {
  using L = Lanes<acc_t, kBytes>;
  using V = typename L::V;
  const V zero = V{} * acc_t(0);
  double total = 0;
  for (int64_t b0 = j0; b0 < j1; b0 += kColumnBlock) {
    const int64_t b1 = std::min(j1, b0 + kColumnBlock);
    int64_t j = b0;
    if constexpr (kLossKind == kPairHinge) {
      V acc = zero;
      for (; row.finite && j + L::kCount <= b1; j += L::kCount) {
        const PairLanes<acc_t, kBytes, kGroups> p(row, j, si, ti, gi, margin);
        acc += L::where(p.valid & (p.z >= zero), p.sign * (grad_i + L::load(grad + j)));
      }
      total += L::sum(acc);
    }
    for (; j < b1; ++j) {
      const PairTerms<acc_t> p = pair_terms<acc_t, kGroups>(ti, row.teacher[j], si, row.scores[j], gi,
                                                            kGroups ? row.groups[j] : acc_t(0), margin);
      if (!p.valid) continue;
      if constexpr (kLossKind == kPairHinge) {
        if (hinge_active(p.z)) total += static_cast<double>(p.sign * (grad_i + grad[j]));
      } else {
        total += static_cast<double>(sigmoid(p.z) * p.sign * (grad_i + grad[j]));
      }
    }
  }
  return -0.5 * total;
}

// Forward work of one row: both column spans around the diagonal.
template <typename acc_t, int kBytes, bool kGroups, int64_t kLossKind, bool kGrad>
__attribute__((always_inline)) inline RowSums forward_row(const PairRow<acc_t>& row, int64_t i, acc_t margin) {
  RowSums sums;
  const acc_t gi = kGroups ? row.groups[i] : acc_t(0);
  if constexpr (kLossKind == kPairHinge) {
    hinge_sweep<acc_t, kBytes, kGroups, kGrad>(row, 0, i, row.scores[i], row.teacher[i], gi, margin, sums);
    hinge_sweep<acc_t, kBytes, kGroups, kGrad>(row, i + 1, row.n, row.scores[i], row.teacher[i], gi, margin, sums);
  } else {
    logistic_sweep<acc_t, kGroups, kGrad>(row, 0, i, row.scores[i], row.teacher[i], gi, margin, sums);
    logistic_sweep<acc_t, kGroups, kGrad>(row, i + 1, row.n, row.scores[i], row.teacher[i], gi, margin, sums);
  }
  return sums;
}

template <typename acc_t, int kBytes, bool kGroups, int64_t kLossKind>
__attribute__((always_inline)) inline double backward_row(const PairRow<acc_t>& row, const acc_t* grad, int64_t i,
                                                          acc_t margin) {
  const acc_t gi = kGroups ? row.groups[i] : acc_t(0);
  return backward_sweep<acc_t, kBytes, kGroups, kLossKind>(row, grad, 0, i, row.scores[i], row.teacher[i], gi,
                                                           grad[i], margin) +
         backward_sweep<acc_t, kBytes, kGroups, kLossKind>(row, grad, i + 1, row.n, row.scores[i], row.teacher[i],
                                                           gi, grad[i], margin);
}

// Rows [r0, r1) of a [B, N] problem, per instruction set.
#define RDNAS_PAIRWISE_ROW_LOOPS(SUFFIX, TARGET, BYTES)                                                              \
  template <typename acc_t, bool kGroups, int64_t kLossKind, bool kGrad, typename Rows>                              \
  TARGET void forward_rows_##SUFFIX(const Rows& rows, int64_t r0, int64_t r1, acc_t margin, RowSums* out,            \
                                    acc_t* dsum) {                                                                   \
    for (int64_t r = r0; r < r1; ++r) {                                                                              \
      out[r] = forward_row<acc_t, BYTES, kGroups, kLossKind, kGrad>(rows.row(r / rows.n), r % rows.n, margin);       \
      if constexpr (kGrad) dsum[r] = static_cast<acc_t>(out[r].dsum);                                                \
    }                                                                                                                \
  }                                                                                                                  \
  template <typename acc_t, bool kGroups, int64_t kLossKind, typename Rows>                                          \
  TARGET void backward_rows_##SUFFIX(const Rows& rows, const acc_t* grad, int64_t r0, int64_t r1, acc_t margin,      \
                                     double* out) {                                                                  \
    for (int64_t r = r0; r < r1; ++r) {                                                                              \
      const int64_t b = r / rows.n;                                                                                  \
      out[r] = backward_row<acc_t, BYTES, kGroups, kLossKind>(rows.row(b), grad + b * rows.n, r % rows.n, margin);   \
    }                                                                                                                \
  }

RDNAS_PAIRWISE_ROW_LOOPS(baseline, , 16)
#if defined(__x86_64__) && defined(__GNUC__)
#define RDNAS_X86_DISPATCH 1
RDNAS_PAIRWISE_ROW_LOOPS(avx2, __attribute__((target("avx2"))), 32)
#endif
#undef RDNAS_PAIRWISE_ROW_LOOPS

enum class Isa { kBaseline, kAvx2 };

// The widest instruction set this CPU runs, capped by the environment variable RDNAS_CPU_ISA (baseline or avx2)
// so that tests can exercise every build. Read once.
Isa detect_isa() {
  static const Isa isa = [] {
    Isa best = Isa::kBaseline;
#ifdef RDNAS_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2")) best = Isa::kAvx2;
#endif
    const char* cap = std::getenv("RDNAS_CPU_ISA");
    if (cap != nullptr && std::string(cap) == "baseline") best = Isa::kBaseline;
    return best;
  }();
  return isa;
}

template <typename acc_t, bool kGroups, int64_t kLossKind, bool kGrad, typename Rows>
void forward_rows(const Rows& rows, int64_t r0, int64_t r1, acc_t margin, RowSums* out, acc_t* dsum) {
#ifdef RDNAS_X86_DISPATCH
  if (detect_isa() == Isa::kAvx2) {
    return forward_rows_avx2<acc_t, kGroups, kLossKind, kGrad>(rows, r0, r1, margin, out, dsum);
  }
#endif
  forward_rows_baseline<acc_t, kGroups, kLossKind, kGrad>(rows, r0, r1, margin, out, dsum);
}

template <typename acc_t, bool kGroups, int64_t kLossKind, typename Rows>
void backward_rows(const Rows& rows, const acc_t* grad, int64_t r0, int64_t r1, acc_t margin, double* out) {
#ifdef RDNAS_X86_DISPATCH
  if (detect_isa() == Isa::kAvx2) {
    return backward_rows_avx2<acc_t, kGroups, kLossKind>(rows, grad, r0, r1, margin, out);
  }
#endif
  backward_rows_baseline<acc_t, kGroups, kLossKind>(rows, grad, r0, r1, margin, out);
}

// A [rows, n] tensor as a contiguous acc_t buffer (no copy when it already is one).
template <typename acc_t>
at::Tensor as_acc(const at::Tensor& t) {
  const auto acc_dtype = std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat;
  return t.to(acc_dtype).contiguous();
}

// Group ids as acc_t values; they must be exactly representable for |g_i - g_j| to be exact.
template <typename acc_t>
at::Tensor groups_as_acc(const char* op, const at::Tensor& groups) {
  const double limit = std::is_same_v<acc_t, double> ? 9007199254740992.0 : 16777216.0;
  const int64_t* src = groups.const_data_ptr<int64_t>();
  at::Tensor out = at::empty(groups.sizes(), groups.options().dtype(std::is_same_v<acc_t, double> ? at::kDouble : at::kFloat));
  acc_t* dst = out.data_ptr<acc_t>();
  for (int64_t k = 0; k < groups.numel(); ++k) {
    TORCH_CHECK(std::abs(static_cast<double>(src[k])) <= limit, "rdnas::", op, ": groups must lie in [-", limit, ", ",
                limit, "] for this scores dtype, got ", src[k]);
    dst[k] = static_cast<acc_t>(src[k]);
  }
  return out;
}

template <typename acc_t>
struct PreparedRows {
  at::Tensor scores, teacher, groups;  // acc_t copies or views
  int64_t n, teacher_stride, groups_stride;
  std::vector<char> finite;  // per batch row

  PairRow<acc_t> row(int64_t b) const {
    return {scores.const_data_ptr<acc_t>() + b * n, teacher.const_data_ptr<acc_t>() + b * teacher_stride,
            groups.defined() ? groups.const_data_ptr<acc_t>() + b * groups_stride : nullptr, n, finite[b] != 0};
  }
};

template <typename acc_t>
PreparedRows<acc_t> prepare_rows(const char* op, const PairwiseOperands& ops) {
  PreparedRows<acc_t> rows;
  rows.scores = as_acc<acc_t>(ops.scores);
  rows.teacher = as_acc<acc_t>(ops.teacher);
  if (ops.groups.defined()) rows.groups = groups_as_acc<acc_t>(op, ops.groups);
  rows.n = ops.n;
  rows.teacher_stride = ops.teacher_batch_stride;
  rows.groups_stride = ops.groups_batch_stride;
  rows.finite.resize(ops.batch);
  for (int64_t b = 0; b < ops.batch; ++b) {
    const acc_t* s = rows.scores.template const_data_ptr<acc_t>() + b * rows.n;
    bool finite = true;
    for (int64_t k = 0; k < rows.n; ++k) finite = finite && std::isfinite(s[k]);
    rows.finite[b] = finite;
  }
  return rows;
}

// Calls f.template operator()<kGroups, kLossKind>() for the runtime choice.
template <typename F>
void dispatch_pair_variant(bool groups, int64_t loss_kind, const F& f) {
  if (groups) {
    if (loss_kind == kPairHinge) f(std::integral_constant<bool, true>{}, std::integral_constant<int64_t, kPairHinge>{});
    else f(std::integral_constant<bool, true>{}, std::integral_constant<int64_t, kPairLogistic>{});
  } else {
    if (loss_kind == kPairHinge) f(std::integral_constant<bool, false>{}, std::integral_constant<int64_t, kPairHinge>{});
    else f(std::integral_constant<bool, false>{}, std::integral_constant<int64_t, kPairLogistic>{});
  }
}

int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1)); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> pairwise_margin_rank_loss_cpu(
    const at::Tensor& scores, const at::Tensor& teacher, const c10::optional<at::Tensor>& groups, double margin,
    int64_t reduction, int64_t loss_kind, bool compute_grad) {
  const char* op = "pairwise_margin_rank_loss";
  const PairwiseOperands ops = prepare_pairwise_margin_rank_loss(op, scores, teacher, groups, reduction, loss_kind);
  const bool reduce = reduction != kReduceNone;
  const bool want_grad = compute_grad && reduce;
  const int64_t rows_total = ops.batch * ops.n;
  const std::vector<int64_t> no_dims, empty_dims{0};
  at::Tensor loss = at::empty(reduce ? c10::IntArrayRef(no_dims) : scores.sizes(), scores.options());
  at::Tensor num_pairs = at::empty(no_dims, scores.options().dtype(at::kLong));
  at::Tensor dsum = at::empty(want_grad ? scores.sizes() : c10::IntArrayRef(empty_dims),
                              scores.options().dtype(pairwise_coef_dtype(scores.scalar_type())));
  std::vector<RowSums> row_sums(rows_total);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(), "rdnas::pairwise_margin_rank_loss",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const PreparedRows<acc_t> rows = prepare_rows<acc_t>(op, ops);
    const acc_t m = static_cast<acc_t>(margin);
    acc_t* dsum_ptr = want_grad ? dsum.data_ptr<acc_t>() : nullptr;
    dispatch_pair_variant(ops.groups.defined(), loss_kind, [&](auto groups_tag, auto kind_tag) {
      constexpr bool kGroups = decltype(groups_tag)::value;
      constexpr int64_t kKind = decltype(kind_tag)::value;
      at::parallel_for(0, rows_total, row_grain(ops.n), [&](int64_t r0, int64_t r1) {
        if (want_grad) {
          forward_rows<acc_t, kGroups, kKind, true>(rows, r0, r1, m, row_sums.data(), dsum_ptr);
        } else {
          forward_rows<acc_t, kGroups, kKind, false>(rows, r0, r1, m, row_sums.data(), dsum_ptr);
        }
      });
    });
    double total_loss = 0, total_count = 0;
    for (const RowSums& sums : row_sums) {
      total_loss += sums.loss;
      total_count += sums.count;
    }
    total_loss *= 0.5;  // every pair was seen from both of its items
    total_count *= 0.5;
    num_pairs.data_ptr<int64_t>()[0] = static_cast<int64_t>(total_count);
    scalar_t* loss_ptr = loss.data_ptr<scalar_t>();
    if (!reduce) {
      for (int64_t r = 0; r < rows_total; ++r) loss_ptr[r] = static_cast<scalar_t>(0.5 * row_sums[r].loss);
    } else {
      loss_ptr[0] = static_cast<scalar_t>(reduction == kReduceMean ? total_loss / std::max(total_count, 1.0)
                                                                   : total_loss);
    }
  });
  return {loss, num_pairs, dsum};
}

at::Tensor pairwise_margin_rank_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& scores,
                                                  const at::Tensor& teacher, const c10::optional<at::Tensor>& groups,
                                                  double margin, int64_t loss_kind) {
  const char* op = "pairwise_margin_rank_loss_backward";
  const PairwiseOperands ops = prepare_pairwise_margin_rank_loss_backward(op, grad, scores, teacher, groups, loss_kind);
  at::Tensor grad_scores = at::empty(scores.sizes(), scores.options());
  const int64_t rows_total = ops.batch * ops.n;
  std::vector<double> row_grads(rows_total);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, scores.scalar_type(),
                                  "rdnas::pairwise_margin_rank_loss_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const PreparedRows<acc_t> rows = prepare_rows<acc_t>(op, ops);
    const at::Tensor grad_acc = as_acc<acc_t>(grad.reshape({ops.batch, ops.n}));
    const acc_t* grad_ptr = grad_acc.const_data_ptr<acc_t>();
    scalar_t* out = grad_scores.data_ptr<scalar_t>();
    const acc_t m = static_cast<acc_t>(margin);
    dispatch_pair_variant(ops.groups.defined(), loss_kind, [&](auto groups_tag, auto kind_tag) {
      constexpr bool kGroups = decltype(groups_tag)::value;
      constexpr int64_t kKind = decltype(kind_tag)::value;
      at::parallel_for(0, rows_total, row_grain(ops.n), [&](int64_t r0, int64_t r1) {
        backward_rows<acc_t, kGroups, kKind>(rows, grad_ptr, r0, r1, m, row_grads.data());
      });
    });
    for (int64_t r = 0; r < rows_total; ++r) out[r] = static_cast<scalar_t>(row_grads[r]);
  });
  return grad_scores;
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CPU, m) {
  m.impl("pairwise_margin_rank_loss", &pairwise_margin_rank_loss_cpu);
  m.impl("pairwise_margin_rank_loss_backward", &pairwise_margin_rank_loss_backward_cpu);
}

}  // namespace rdnas
