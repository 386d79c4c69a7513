// Device code of rdnas::pairwise_margin_rank_loss and rdnas::pairwise_margin_rank_loss_backward: the kernels, their
// argument struct, the grid and the host-side launch functions. pairwise_margin_rank_loss_kernel.cu (the extension)
// includes it; so does the CPU test program of tests/cudasim (see tools/cudasim_check.sh). No c10/cuda include
// here: launches go through launch.cuh.
//
// As on the CPU (csrc/cpu/pairwise_margin_rank_loss_kernel.cpp), every row i (item i of batch row b) sums its
// pairs (i, j), j != i, so each unordered pair is seen from both sides: no races, and d(sum)/d(s_i) comes out of
// the forward pass. Extra memory is O(B * N) at most; no N x N buffer exists.
//
// Layout: blockIdx.y walks the batch rows (a loop when B > 65535); blockIdx.x picks a tile of kRowsPerBlock rows
// i: each of the kWarps warps owns kRowsPerWarp consecutive rows (4 independent accumulator sets per lane). The
// block stages columns j in tiles of kTile (scores, teacher, groups; backward also grad) converted to the opmath
// type in shared memory; lane l of a warp takes columns l, l + 32, ... of the tile. A lane sums its pairs of one
// tile in the opmath type and adds that to float64 row totals (as the CPU sweeps sum blocks of columns); a
// fixed-order warp butterfly combines the lanes.
//
// Forward outputs per row: dsum[r] (the gradient of the summed loss w.r.t. s_r, opmath type) when requested,
// and for reduction "none" the item's share 0.5 * row_loss. Each block adds its rows' loss (float64) and pair
// count (int64) in row order into one partial per block; a single-block kernel then adds the partials in a fixed
// order, halves them (every pair was seen twice), writes num_pairs and, for mean / sum, the loss. No
// floating-point atomics: results are deterministic.
//
// The pair maths are pair_terms of the CPU kernel, element for element: sign = teacher_sign(t_i - t_j) (0 for a
// tie or NaN), counted when sign != 0 and (groups) g_i != g_j, m = margin * |g_i - g_j| (groups) or margin,
// z = m - sign * (s_i - s_j). Group ids are converted to the opmath type, as the CPU kernel converts them.
#pragma once

#include "../margin_rank_loss.h"
#include "launch.cuh"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

namespace rdnas {
namespace pairwise_cuda {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = 4;
constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;  // 32
constexpr int kTile = 512;                            // columns staged per shared-memory tile
constexpr int64_t kMaxGridY = 65535;                  // batch rows beyond it: the blocks loop
constexpr int kFinalizeThreads = 512;

C10_HOST_DEVICE inline float abs_value(float x) { return ::fabsf(x); }
C10_HOST_DEVICE inline double abs_value(double x) { return ::fabs(x); }

// Pair (i, j) seen from item i: pair_terms of the CPU kernel.
template <typename acc_t, bool kGroups>
struct Pair {
  acc_t sign;
  acc_t z;
  bool valid;
};

template <typename acc_t, bool kGroups>
__device__ __forceinline__ Pair<acc_t, kGroups> pair_terms(acc_t ti, acc_t tj, acc_t si, acc_t sj, acc_t gi,
                                                           acc_t gj, acc_t margin) {
  const acc_t sign = teacher_sign(ti - tj);
  bool valid = sign != acc_t(0);
  acc_t m = margin;
  if constexpr (kGroups) {
    valid = valid && gi != gj;
    m = margin * abs_value(gi - gj);
  }
  return {sign, m - sign * (si - sj), valid};
}

// Column of row i inside the tile [j0, j0 + len), or -1: the pair (i, i) is skipped. (Its teacher difference is
// 0 or NaN, so its sign is 0 and it would not count anyway; the check keeps that explicit and costs one compare.)
__device__ __forceinline__ int tile_diagonal(int64_t i, int64_t j0, int len) {
  const int64_t d = i - j0;
  return d >= 0 && d < len ? static_cast<int>(d) : -1;
}

// The problem as the kernels read it: scores [B, N]; teacher and groups with batch stride 0 or N.
template <typename scalar_t>
struct PairwiseArgs {
  const scalar_t* scores;
  const scalar_t* teacher;
  const int64_t* groups;  // nullptr without groups
  int64_t batch, n, teacher_stride, groups_stride;
};

// Stages columns [j0, j0 + len) of batch row b into shared memory as acc_t. The caller synchronises.
template <typename scalar_t, typename acc_t, bool kGroups>
__device__ __forceinline__ void stage_columns(const PairwiseArgs<scalar_t>& args, int64_t b, int64_t j0, int len,
                                              acc_t* s_scores, acc_t* s_teacher, acc_t* s_groups) {
  const scalar_t* scores = args.scores + b * args.n + j0;
  const scalar_t* teacher = args.teacher + b * args.teacher_stride + j0;
  for (int c = threadIdx.x; c < len; c += kThreads) {
    s_scores[c] = static_cast<acc_t>(scores[c]);
    s_teacher[c] = static_cast<acc_t>(teacher[c]);
    if constexpr (kGroups) s_groups[c] = static_cast<acc_t>(args.groups[b * args.groups_stride + j0 + c]);
  }
}

// Forward. Per row r = b * N + i: loss_none[r] = 0.5 * row loss (reduction "none"; nullptr otherwise) and
// dsum[r] (kGrad). Per block (b, blockIdx.x): partial_loss / partial_count[b * gridDim.x + blockIdx.x], the sums
// over its rows of the row losses and row pair counts (each pair counted from both sides).
template <typename scalar_t, typename acc_t, bool kGroups, int64_t kLossKind, bool kGrad>
__global__ void __launch_bounds__(kThreads)
    pairwise_forward_kernel(PairwiseArgs<scalar_t> args, acc_t margin, scalar_t* __restrict__ loss_none,
                            acc_t* __restrict__ dsum, double* __restrict__ partial_loss,
                            int64_t* __restrict__ partial_count) {
  __shared__ acc_t s_scores[kTile];
  __shared__ acc_t s_teacher[kTile];
  __shared__ acc_t s_groups[kGroups ? kTile : 1];
  __shared__ double s_row_loss[kRowsPerBlock];
  __shared__ long long s_row_count[kRowsPerBlock];

  const int64_t n = args.n;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp * kRowsPerWarp;
  const bool warp_active = row0 < n;

  for (int64_t b = blockIdx.y; b < args.batch; b += gridDim.y) {
    // This warp's rows; a row past the end is computed on row n - 1 and discarded.
    acc_t si[kRowsPerWarp], ti[kRowsPerWarp], gi[kRowsPerWarp];
    int64_t row[kRowsPerWarp];
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      row[k] = row0 + k;
      const int64_t i = row[k] < n ? row[k] : n - 1;
      si[k] = static_cast<acc_t>(args.scores[b * n + i]);
      ti[k] = static_cast<acc_t>(args.teacher[b * args.teacher_stride + i]);
      gi[k] = kGroups ? static_cast<acc_t>(args.groups[b * args.groups_stride + i]) : acc_t(0);
    }
    double loss_total[kRowsPerWarp], dsum_total[kRowsPerWarp];
    long long count[kRowsPerWarp];
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) loss_total[k] = 0.0, dsum_total[k] = 0.0, count[k] = 0;

    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int len = static_cast<int>(std::min<int64_t>(kTile, n - j0));
      __syncthreads();  // every warp is done with the previous tile
      stage_columns<scalar_t, acc_t, kGroups>(args, b, j0, len, s_scores, s_teacher, s_groups);
      __syncthreads();
      if (!warp_active) continue;
      int diagonal[kRowsPerWarp];
      acc_t loss[kRowsPerWarp], ds[kRowsPerWarp];
      int cnt[kRowsPerWarp];
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) {
        diagonal[k] = tile_diagonal(row[k], j0, len);
        loss[k] = acc_t(0), ds[k] = acc_t(0), cnt[k] = 0;
      }
      for (int c = lane; c < len; c += 32) {
        const acc_t sj = s_scores[c], tj = s_teacher[c];
        const acc_t gj = kGroups ? s_groups[c] : acc_t(0);
#pragma unroll
        for (int k = 0; k < kRowsPerWarp; ++k) {
          const Pair<acc_t, kGroups> p = pair_terms<acc_t, kGroups>(ti[k], tj, si[k], sj, gi[k], gj, margin);
          const bool valid = p.valid && c != diagonal[k];
          if constexpr (kLossKind == kPairHinge) {
            loss[k] += valid ? hinge(p.z) : acc_t(0);
            if constexpr (kGrad) ds[k] += (valid && hinge_active(p.z)) ? -p.sign : acc_t(0);
          } else {
            if (valid) {
              loss[k] += softplus(p.z);
              if constexpr (kGrad) ds[k] += -p.sign * sigmoid(p.z);
            }
          }
          cnt[k] += valid ? 1 : 0;
        }
      }
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) {
        loss_total[k] += static_cast<double>(loss[k]);
        if constexpr (kGrad) dsum_total[k] += static_cast<double>(ds[k]);
        count[k] += cnt[k];
      }
    }

    // Lane sums, combined in a fixed butterfly: every lane ends with the row totals.
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) {
        loss_total[k] += __shfl_xor_sync(0xffffffffu, loss_total[k], offset);
        if constexpr (kGrad) dsum_total[k] += __shfl_xor_sync(0xffffffffu, dsum_total[k], offset);
        count[k] += __shfl_xor_sync(0xffffffffu, count[k], offset);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) {
        const bool in_range = row[k] < n;
        if (in_range) {
          const int64_t r = b * n + row[k];
          if (loss_none != nullptr) loss_none[r] = static_cast<scalar_t>(0.5 * loss_total[k]);
          if constexpr (kGrad) dsum[r] = static_cast<acc_t>(dsum_total[k]);
        }
        s_row_loss[warp * kRowsPerWarp + k] = in_range ? loss_total[k] : 0.0;
        s_row_count[warp * kRowsPerWarp + k] = in_range ? count[k] : 0;
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      double block_loss = 0.0;
      long long block_count = 0;
      for (int k = 0; k < kRowsPerBlock; ++k) block_loss += s_row_loss[k], block_count += s_row_count[k];
      const int64_t p = b * gridDim.x + blockIdx.x;
      partial_loss[p] = block_loss;
      partial_count[p] = block_count;
    }
    __syncthreads();  // s_row_* are rewritten for the next batch row
  }
}

// Adds the num_partials block partials in a fixed order; writes num_pairs and, when reduce, the loss
// (mean: total / max(pairs, 1), sum: total).
template <typename scalar_t>
__global__ void __launch_bounds__(kFinalizeThreads)
    pairwise_finalize_kernel(const double* __restrict__ partial_loss, const int64_t* __restrict__ partial_count,
                             int64_t num_partials, bool reduce, bool mean, scalar_t* __restrict__ loss,
                             int64_t* __restrict__ num_pairs) {
  __shared__ double s_loss[kFinalizeThreads];
  __shared__ long long s_count[kFinalizeThreads];
  double loss_sum = 0.0;
  long long count_sum = 0;
  for (int64_t p = threadIdx.x; p < num_partials; p += kFinalizeThreads) {
    loss_sum += partial_loss[p];
    count_sum += partial_count[p];
  }
  s_loss[threadIdx.x] = loss_sum;
  s_count[threadIdx.x] = count_sum;
  __syncthreads();
  for (int width = kFinalizeThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) {
      s_loss[threadIdx.x] += s_loss[threadIdx.x + width];
      s_count[threadIdx.x] += s_count[threadIdx.x + width];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const double total_loss = 0.5 * s_loss[0];  // every pair was seen from both of its items
    const long long total_count = s_count[0] / 2;
    num_pairs[0] = total_count;
    if (reduce) {
      const double denominator = total_count > 0 ? static_cast<double>(total_count) : 1.0;  // max(count, 1)
      loss[0] = static_cast<scalar_t>(mean ? total_loss / denominator : total_loss);
    }
  }
}

// Backward (of the "none" output): grad_scores[r] = -0.5 * sum_{j != i, counted} w_ij * sign_ij * (grad_i +
// grad_j), w = [z >= 0] (hinge) or sigmoid(z) (logistic); grad is [B, N] contiguous.
template <typename scalar_t, typename acc_t, bool kGroups, int64_t kLossKind>
__global__ void __launch_bounds__(kThreads)
    pairwise_backward_kernel(PairwiseArgs<scalar_t> args, const scalar_t* __restrict__ grad, acc_t margin,
                             scalar_t* __restrict__ grad_scores) {
  __shared__ acc_t s_scores[kTile];
  __shared__ acc_t s_teacher[kTile];
  __shared__ acc_t s_groups[kGroups ? kTile : 1];
  __shared__ acc_t s_grad[kTile];

  const int64_t n = args.n;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + warp * kRowsPerWarp;
  const bool warp_active = row0 < n;

  for (int64_t b = blockIdx.y; b < args.batch; b += gridDim.y) {
    acc_t si[kRowsPerWarp], ti[kRowsPerWarp], gi[kRowsPerWarp], grad_i[kRowsPerWarp];
    int64_t row[kRowsPerWarp];
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
      row[k] = row0 + k;
      const int64_t i = row[k] < n ? row[k] : n - 1;
      si[k] = static_cast<acc_t>(args.scores[b * n + i]);
      ti[k] = static_cast<acc_t>(args.teacher[b * args.teacher_stride + i]);
      gi[k] = kGroups ? static_cast<acc_t>(args.groups[b * args.groups_stride + i]) : acc_t(0);
      grad_i[k] = static_cast<acc_t>(grad[b * n + i]);
    }
    double total[kRowsPerWarp];
#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) total[k] = 0.0;

    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int len = static_cast<int>(std::min<int64_t>(kTile, n - j0));
      __syncthreads();  // every warp is done with the previous tile
      stage_columns<scalar_t, acc_t, kGroups>(args, b, j0, len, s_scores, s_teacher, s_groups);
      for (int c = threadIdx.x; c < len; c += kThreads) s_grad[c] = static_cast<acc_t>(grad[b * n + j0 + c]);
      __syncthreads();
      if (!warp_active) continue;
      int diagonal[kRowsPerWarp];
      acc_t acc[kRowsPerWarp];
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) diagonal[k] = tile_diagonal(row[k], j0, len), acc[k] = acc_t(0);
      for (int c = lane; c < len; c += 32) {
        const acc_t sj = s_scores[c], tj = s_teacher[c], grad_j = s_grad[c];
        const acc_t gj = kGroups ? s_groups[c] : acc_t(0);
#pragma unroll
        for (int k = 0; k < kRowsPerWarp; ++k) {
          const Pair<acc_t, kGroups> p = pair_terms<acc_t, kGroups>(ti[k], tj, si[k], sj, gi[k], gj, margin);
          const bool valid = p.valid && c != diagonal[k];
          if constexpr (kLossKind == kPairHinge) {
            // A select, not a multiplication by [z >= 0]: a NaN z or grad of an inactive pair adds nothing.
            acc[k] += (valid && hinge_active(p.z)) ? p.sign * (grad_i[k] + grad_j) : acc_t(0);
          } else {
            if (valid) acc[k] += sigmoid(p.z) * p.sign * (grad_i[k] + grad_j);
          }
        }
      }
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) total[k] += static_cast<double>(acc[k]);
    }

#pragma unroll
    for (int k = 0; k < kRowsPerWarp; ++k) {
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) total[k] += __shfl_xor_sync(0xffffffffu, total[k], offset);
    }
    if (lane == 0) {
#pragma unroll
      for (int k = 0; k < kRowsPerWarp; ++k) {
        if (row[k] < n) grad_scores[b * n + row[k]] = static_cast<scalar_t>(-0.5 * total[k]);
      }
    }
  }
}

// Calls f(groups_tag, kind_tag) with std::integral_constant tags for the runtime choice.
template <typename F>
inline void dispatch_pair_variant(bool groups, int64_t loss_kind, const F& f) {
  if (groups) {
    if (loss_kind == kPairHinge) f(std::integral_constant<bool, true>{}, std::integral_constant<int64_t, kPairHinge>{});
    else f(std::integral_constant<bool, true>{}, std::integral_constant<int64_t, kPairLogistic>{});
  } else {
    if (loss_kind == kPairHinge) f(std::integral_constant<bool, false>{}, std::integral_constant<int64_t, kPairHinge>{});
    else f(std::integral_constant<bool, false>{}, std::integral_constant<int64_t, kPairLogistic>{});
  }
}

// The grid of both kernels: x = row tiles of kRowsPerBlock items, y = batch rows, at most max_grid_y (the extension
// always uses kMaxGridY; tests pass a smaller cap so that the batch loop iterates). The caller checks that the row
// tiles fit in 32 bits; batch * n must be positive.
inline dim3 pairwise_grid(int64_t batch, int64_t n, int64_t max_grid_y = kMaxGridY) {
  const int64_t row_tiles = (n + kRowsPerBlock - 1) / kRowsPerBlock;
  return dim3(static_cast<unsigned int>(row_tiles), static_cast<unsigned int>(std::min(batch, max_grid_y)), 1);
}

// Block partials of a forward launch (one double and one int64 of each per block and batch row).
inline int64_t forward_num_partials(int64_t batch, int64_t n, int64_t max_grid_y = kMaxGridY) {
  return batch * static_cast<int64_t>(pairwise_grid(batch, n, max_grid_y).x);
}

// Launches the forward and the finalisation on `stream`. loss: the scalar (mean / sum) or [B, N] ("none");
// num_pairs: one int64; dsum: [B, N] of acc_t when want_grad (mean / sum only), else unused; partial_loss /
// partial_count: forward_num_partials(...) elements of device memory each (need not be initialised).
template <typename scalar_t>
void launch_forward(const PairwiseArgs<scalar_t>& args, double margin, int64_t reduction, int64_t loss_kind,
                    bool want_grad, scalar_t* loss, int64_t* num_pairs, at::opmath_type<scalar_t>* dsum,
                    double* partial_loss, int64_t* partial_count, cuda_launch::Stream stream,
                    int64_t max_grid_y = kMaxGridY) {
  using acc_t = at::opmath_type<scalar_t>;
  const dim3 grid = pairwise_grid(args.batch, args.n, max_grid_y);
  const int64_t num_partials = args.batch * static_cast<int64_t>(grid.x);
  const bool reduce = reduction != kReduceNone;
  scalar_t* loss_none = reduce ? nullptr : loss;
  acc_t* dsum_ptr = want_grad ? dsum : nullptr;
  const acc_t m = static_cast<acc_t>(margin);
  dispatch_pair_variant(args.groups != nullptr, loss_kind, [&](auto groups_tag, auto kind_tag) {
    constexpr bool kGroups = decltype(groups_tag)::value;
    constexpr int64_t kKind = decltype(kind_tag)::value;
    if (want_grad) {
      cuda_launch::launch(&pairwise_forward_kernel<scalar_t, acc_t, kGroups, kKind, true>, grid, dim3(kThreads),
                          stream, args, m, loss_none, dsum_ptr, partial_loss, partial_count);
    } else {
      cuda_launch::launch(&pairwise_forward_kernel<scalar_t, acc_t, kGroups, kKind, false>, grid, dim3(kThreads),
                          stream, args, m, loss_none, dsum_ptr, partial_loss, partial_count);
    }
  });
  cuda_launch::launch(&pairwise_finalize_kernel<scalar_t>, dim3(1), dim3(kFinalizeThreads), stream, partial_loss,
                      partial_count, num_partials, reduce, reduction == kReduceMean, loss, num_pairs);
}

// Launches the backward on `stream`: grad is [B, N] contiguous, grad_scores [B, N].
template <typename scalar_t>
void launch_backward(const PairwiseArgs<scalar_t>& args, const scalar_t* grad, double margin, int64_t loss_kind,
                     scalar_t* grad_scores, cuda_launch::Stream stream, int64_t max_grid_y = kMaxGridY) {
  using acc_t = at::opmath_type<scalar_t>;
  const dim3 grid = pairwise_grid(args.batch, args.n, max_grid_y);
  const acc_t m = static_cast<acc_t>(margin);
  dispatch_pair_variant(args.groups != nullptr, loss_kind, [&](auto groups_tag, auto kind_tag) {
    constexpr bool kGroups = decltype(groups_tag)::value;
    constexpr int64_t kKind = decltype(kind_tag)::value;
    cuda_launch::launch(&pairwise_backward_kernel<scalar_t, acc_t, kGroups, kKind>, grid, dim3(kThreads), stream,
                        args, grad, m, grad_scores);
  });
}

}  // namespace pairwise_cuda
}  // namespace rdnas
