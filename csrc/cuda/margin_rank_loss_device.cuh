// Device code of rdnas::margin_rank_loss and rdnas::margin_rank_loss_backward: the kernels, their argument structs,
// the grid size and the host-side launch functions. margin_rank_loss_kernel.cu (the extension) includes it; so does
// the CPU test program of tests/cudasim, which runs these kernels under an execution model of CUDA (see
// tools/cudasim_check.sh). No c10/cuda include here: launches go through launch.cuh.
//
// One kernel per op and one pass over memory. Every operand is flat (contiguous, numel elements) or a single
// element (step 0), as prepare_margin_rank_loss leaves it, and is read as ptr[i * step]. Threads walk the
// elements in a grid-stride loop, kUnroll elements per step (all loads of a step are issued before the maths,
// so each thread keeps kUnroll * 3 or 4 loads in flight); the element maths are the shared helpers of
// margin_rank_loss.h, in the same order as the CPU kernels (csrc/cpu/margin_rank_loss_kernel.cpp).
//
// Forward, reduction "none": elementwise writes. Mean / sum: each thread sums its elements in the opmath type,
// the block adds its threads' sums in float64 with a fixed tree, and writes one partial per block; the last block
// to finish (atomic ticket on an integer counter after a __threadfence) adds the partials in a fixed order and
// writes the scalar. The grid size depends on numel only, so results are deterministic and the same on every
// GPU. No floating-point atomics.
//
// Backward: one kernel writes grad_input1 = where(z >= 0, g, 0) * -y and grad_input2 = -grad_input1, with g
// divided by numel for "mean", exactly as chunk_grad in the CPU kernel.
#pragma once

#include "../margin_rank_loss.h"
#include "block_reduce.cuh"
#include "launch.cuh"

#include <ATen/OpMathType.h>

#include <algorithm>
#include <cstdint>
#include <limits>

namespace rdnas {
namespace margin_cuda {

constexpr int kThreads = 256;   // threads per block (a multiple of 32)
constexpr int kUnroll = 4;      // elements per thread and grid-stride step
constexpr int64_t kMaxBlocks = 2048;  // grid cap: a fixed constant, so the summation order depends on numel only

// The operands of one call, as the kernels read them.
template <typename scalar_t, typename acc_t>
struct ElementArgs {
  const scalar_t* input1;
  const scalar_t* input2;
  const scalar_t* target;
  const scalar_t* margin;  // nullptr: margin_value is used
  const scalar_t* grad;    // backward only
  int64_t step1, step2, step_target, step_margin, step_grad;  // 1 (flat) or 0 (single element)
  acc_t margin_value;
  int64_t numel;
};

// Element base + u * kThreads of every operand (u < kUnroll), read as acc_t: the operand pointers are advanced
// to element `base` once per grid-stride step, so each load adds a small 32-bit offset (0 for step-0 operands)
// instead of a 64-bit product.
template <typename scalar_t, typename acc_t>
struct ElementLoader {
  const scalar_t* input1;
  const scalar_t* input2;
  const scalar_t* target;
  const scalar_t* margin;
  const scalar_t* grad_ptr;
  int off1, off2, off_target, off_margin, off_grad;  // kThreads * step
  acc_t margin_value;

  __device__ __forceinline__ ElementLoader(const ElementArgs<scalar_t, acc_t>& args, int64_t base)
      : input1(args.input1 + base * args.step1),
        input2(args.input2 + base * args.step2),
        target(args.target + base * args.step_target),
        margin(args.margin != nullptr ? args.margin + base * args.step_margin : nullptr),
        grad_ptr(args.grad != nullptr ? args.grad + base * args.step_grad : nullptr),
        off1(kThreads * static_cast<int>(args.step1)),
        off2(kThreads * static_cast<int>(args.step2)),
        off_target(kThreads * static_cast<int>(args.step_target)),
        off_margin(kThreads * static_cast<int>(args.step_margin)),
        off_grad(kThreads * static_cast<int>(args.step_grad)),
        margin_value(args.margin_value) {}

  __device__ __forceinline__ void operator()(int u, acc_t& x1, acc_t& x2, acc_t& y, acc_t& m) const {
    x1 = static_cast<acc_t>(input1[u * off1]);
    x2 = static_cast<acc_t>(input2[u * off2]);
    y = static_cast<acc_t>(target[u * off_target]);
    m = margin != nullptr ? static_cast<acc_t>(margin[u * off_margin]) : margin_value;
  }
  __device__ __forceinline__ acc_t grad(int u) const { return static_cast<acc_t>(grad_ptr[u * off_grad]); }
};

// Blocks of a launch over numel elements: one per kThreads * kUnroll elements, at least 1, at most max_blocks (the
// extension always uses kMaxBlocks; tests pass a smaller cap so that the grid-stride loops iterate).
inline int64_t grid_size(int64_t numel, int64_t max_blocks = kMaxBlocks) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * kUnroll;
  return std::max<int64_t>(1, std::min<int64_t>((numel + per_block - 1) / per_block, max_blocks));
}

// Forward. kReduce false: out has numel elements. kReduce true: out is the scalar; partials has gridDim.x
// doubles and counter is a zeroed unsigned int (both unused when gridDim.x == 1).
// At most 64 registers (4 blocks per SM): enough for the kUnroll loads in flight, without spills (ptxas, sm_80 and
// sm_90, every dtype).
template <typename scalar_t, typename acc_t, bool kReduce>
__global__ void __launch_bounds__(kThreads, 4)
    margin_rank_loss_kernel(ElementArgs<scalar_t, acc_t> args, bool mean, scalar_t* __restrict__ out,
                            double* __restrict__ partials, unsigned int* __restrict__ counter) {
  const int64_t numel = args.numel;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * kUnroll;
  acc_t thread_sum = acc_t(0);
#pragma unroll 1  // the kUnroll elements of a step give the ILP; unrolling steps only costs registers
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < numel;
       base += stride) {
    const ElementLoader<scalar_t, acc_t> load(args, base);
    acc_t x1[kUnroll], x2[kUnroll], y[kUnroll], m[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + static_cast<int64_t>(u) * kThreads < numel) load(u, x1[u], x2[u], y[u], m[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * kThreads;
      if (i < numel) {
        const acc_t loss = hinge(margin_rank_z(x1[u], x2[u], y[u], m[u]));
        if constexpr (kReduce) {
          thread_sum += loss;
        } else {
          out[i] = static_cast<scalar_t>(loss);
        }
      }
    }
  }
  if constexpr (kReduce) {
    __shared__ double scratch[kThreads / 32];
    __shared__ bool is_last;
    double total = block_sum<kThreads>(static_cast<double>(thread_sum), scratch);
    if (gridDim.x > 1) {
      if (threadIdx.x == 0) {
        partials[blockIdx.x] = total;
        __threadfence();  // the partial is visible device-wide before the ticket is taken
        const unsigned int ticket = atomicAdd(counter, 1u);
        is_last = ticket == gridDim.x - 1;
      }
      __syncthreads();
      if (!is_last) return;
      __threadfence();
      double sum = 0.0;
#pragma unroll 1
      for (int64_t p = threadIdx.x; p < gridDim.x; p += kThreads) sum += __ldcg(partials + p);
      total = block_sum<kThreads>(sum, scratch);
    }
    if (threadIdx.x == 0) {
      if (mean) {
        total = numel == 0 ? std::numeric_limits<double>::quiet_NaN() : total / static_cast<double>(numel);
      }
      out[0] = static_cast<scalar_t>(total);
    }
  }
}

// Backward: both gradients, numel elements each.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
    margin_rank_loss_backward_kernel(ElementArgs<scalar_t, acc_t> args, bool mean, scalar_t* __restrict__ grad1,
                                     scalar_t* __restrict__ grad2) {
  const int64_t numel = args.numel;
  const acc_t count = static_cast<acc_t>(numel);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * kThreads * kUnroll;
#pragma unroll 1  // the kUnroll elements of a step give the ILP; unrolling steps only costs registers
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * kThreads * kUnroll + threadIdx.x; base < numel;
       base += stride) {
    const ElementLoader<scalar_t, acc_t> load(args, base);
    acc_t x1[kUnroll], x2[kUnroll], y[kUnroll], m[kUnroll], g[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + static_cast<int64_t>(u) * kThreads < numel) {
        load(u, x1[u], x2[u], y[u], m[u]);
        g[u] = load.grad(u);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * kThreads;
      if (i < numel) {
        const acc_t g_element = mean ? g[u] / count : g[u];
        const acc_t gz = hinge_active(margin_rank_z(x1[u], x2[u], y[u], m[u])) ? g_element : acc_t(0);
        const acc_t d1 = gz * -y[u];
        grad1[i] = static_cast<scalar_t>(d1);
        grad2[i] = static_cast<scalar_t>(-d1);
      }
    }
  }
}

// Workspace of a forward launch, in doubles: the block partials followed by the ticket counter (one more double's
// worth of space), or 0 when the launch needs none (reduction "none", or a single block).
inline int64_t forward_workspace_doubles(int64_t numel, int64_t reduction, int64_t max_blocks = kMaxBlocks) {
  const int64_t blocks = grid_size(numel, max_blocks);
  return reduction == kReduceNone || blocks == 1 ? 0 : blocks + 1;
}

// Launches the forward on `stream`. out: numel elements (reduction "none") or the scalar; workspace:
// forward_workspace_doubles(...) doubles of device memory (its contents need not be initialised: the counter is
// zeroed here).
template <typename scalar_t>
void launch_forward(const ElementArgs<scalar_t, at::opmath_type<scalar_t>>& args, int64_t reduction, scalar_t* out,
                    double* workspace, cuda_launch::Stream stream, int64_t max_blocks = kMaxBlocks) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t blocks = grid_size(args.numel, max_blocks);
  const dim3 grid(static_cast<unsigned int>(blocks)), block(kThreads);
  if (reduction == kReduceNone) {
    cuda_launch::launch(&margin_rank_loss_kernel<scalar_t, acc_t, false>, grid, block, stream, args, false, out,
                        nullptr, nullptr);
    return;
  }
  double* partials = nullptr;
  unsigned int* counter = nullptr;
  if (blocks > 1) {
    partials = workspace;
    counter = reinterpret_cast<unsigned int*>(partials + blocks);
    cuda_launch::memset_async(counter, 0, sizeof(unsigned int), stream);
  }
  cuda_launch::launch(&margin_rank_loss_kernel<scalar_t, acc_t, true>, grid, block, stream, args,
                      reduction == kReduceMean, out, partials, counter);
}

// Launches the backward on `stream`: grad1 and grad2 hold numel elements each.
template <typename scalar_t>
void launch_backward(const ElementArgs<scalar_t, at::opmath_type<scalar_t>>& args, int64_t reduction,
                     scalar_t* grad1, scalar_t* grad2, cuda_launch::Stream stream, int64_t max_blocks = kMaxBlocks) {
  using acc_t = at::opmath_type<scalar_t>;
  const dim3 grid(static_cast<unsigned int>(grid_size(args.numel, max_blocks))), block(kThreads);
  cuda_launch::launch(&margin_rank_loss_backward_kernel<scalar_t, acc_t>, grid, block, stream, args,
                      reduction == kReduceMean, grad1, grad2);
}

}  // namespace margin_cuda
}  // namespace rdnas
