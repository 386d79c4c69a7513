// CUDA kernels of rdnas::margin_rank_loss and rdnas::margin_rank_loss_backward.
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
#include "../checks.h"
#include "block_reduce.cuh"
#include "../margin_rank_loss.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/fill.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace rdnas {
namespace {

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

int64_t grid_size(int64_t numel) {
  const int64_t per_block = static_cast<int64_t>(kThreads) * kUnroll;
  return std::max<int64_t>(1, std::min<int64_t>((numel + per_block - 1) / per_block, kMaxBlocks));
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
  const int64_t blocks = grid_size(ops.numel);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  scalar_t* out_ptr = out.data_ptr<scalar_t>();
  if (reduction == kReduceNone) {
    margin_rank_loss_kernel<scalar_t, acc_t, false>
        <<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(args, false, out_ptr, nullptr, nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  double* partials = nullptr;
  unsigned int* counter = nullptr;
  at::Tensor workspace;
  if (blocks > 1) {
    // blocks partial sums followed by the ticket counter (one more double's worth of space, zeroed).
    workspace = at::empty({blocks + 1}, out.options().dtype(at::kDouble));
    partials = workspace.data_ptr<double>();
    counter = reinterpret_cast<unsigned int*>(partials + blocks);
    C10_CUDA_CHECK(cudaMemsetAsync(counter, 0, sizeof(unsigned int), stream));
  }
  margin_rank_loss_kernel<scalar_t, acc_t, true><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
      args, reduction == kReduceMean, out_ptr, partials, counter);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t>
void launch_backward(const MarginRankLossOperands& ops, double margin, int64_t reduction, at::Tensor& grad_input1,
                     at::Tensor& grad_input2) {
  using acc_t = at::opmath_type<scalar_t>;
  const ElementArgs<scalar_t, acc_t> args = element_args<scalar_t, acc_t>(ops, margin);
  const int64_t blocks = grid_size(ops.numel);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  margin_rank_loss_backward_kernel<scalar_t, acc_t><<<static_cast<unsigned int>(blocks), kThreads, 0, stream>>>(
      args, reduction == kReduceMean, grad_input1.data_ptr<scalar_t>(), grad_input2.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
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
