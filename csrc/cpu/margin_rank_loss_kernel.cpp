// CPU kernels of rdnas::margin_rank_loss and rdnas::margin_rank_loss_backward.
//
// One pass over memory: the loss (and, for mean / sum, its reduction) or both input gradients are produced in a
// single parallel loop over fixed-size chunks. Reductions add per-chunk partial sums (opmath type) in chunk
// order in float64, so results do not depend on the number of threads.
#include "../checks.h"
#include "../margin_rank_loss.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <vector>

namespace rdnas {
namespace {

constexpr int64_t kChunk = 2048;

// Values [begin, begin + len) of an operand as acc_t: a pointer into the tensor when it is flat and already of
// type acc_t, otherwise converted (or, for a single-element operand, repeated) into `buffer`.
template <typename scalar_t, typename acc_t>
const acc_t* chunk_values(const at::Tensor& operand, int64_t begin, int64_t len, acc_t* buffer) {
  const scalar_t* base = operand.const_data_ptr<scalar_t>();
  if (operand.numel() == 1) {
    std::fill(buffer, buffer + len, static_cast<acc_t>(base[0]));
    return buffer;
  }
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    return base + begin;
  } else {
    for (int64_t k = 0; k < len; ++k) buffer[k] = static_cast<acc_t>(base[begin + k]);
    return buffer;
  }
}

// A value broadcast to every element, indexed like the pointers of per-element operands, so that a scalar margin or
// the single incoming gradient of a reduced loss is a register rather than a buffer refilled for every chunk.
template <typename acc_t>
struct Broadcast {
  acc_t value;
  acc_t operator[](int64_t) const { return value; }
};

// Pragmas cannot sit inside the AT_DISPATCH macro's argument, so the vector loops live here.
template <typename acc_t, typename Margin>
acc_t chunk_loss_sum(const acc_t* x1, const acc_t* x2, const acc_t* y, Margin m, int64_t len) {
  acc_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < len; ++k) sum += hinge(margin_rank_z(x1[k], x2[k], y[k], m[k]));
  return sum;
}

template <typename scalar_t, typename acc_t, typename Margin>
void chunk_loss(const acc_t* x1, const acc_t* x2, const acc_t* y, Margin m, int64_t len, scalar_t* out) {
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) out[k] = static_cast<scalar_t>(hinge(margin_rank_z(x1[k], x2[k], y[k], m[k])));
}

// grad_input1 = where(z >= 0, g, 0) * -y and grad_input2 = -grad_input1, where g is the incoming gradient (for
// "mean" already divided by the element count, as mean's backward does), rounded in torch's order.
template <typename scalar_t, typename acc_t, typename Margin, typename Grad>
void chunk_grad(const acc_t* __restrict x1, const acc_t* __restrict x2, const acc_t* __restrict y, Margin m, Grad g,
                int64_t len, scalar_t* __restrict g1, scalar_t* __restrict g2) {
#pragma omp simd
  for (int64_t k = 0; k < len; ++k) {
    const acc_t incoming = g[k];  // loaded unconditionally: a load under the select would block vectorisation
    const acc_t gz = hinge_active(margin_rank_z(x1[k], x2[k], y[k], m[k])) ? incoming : acc_t(0);
    const acc_t d1 = gz * -y[k];
    g1[k] = static_cast<scalar_t>(d1);
    g2[k] = static_cast<scalar_t>(-d1);
  }
}

// Calls f(margin accessor) for the chunk [begin, begin + len): per element for a margin tensor of several
// elements, broadcast for the scalar margin or a single-element margin tensor.
template <typename scalar_t, typename acc_t, typename F>
void with_margin(const MarginRankLossOperands& ops, double margin, int64_t begin, int64_t len, acc_t* buffer,
                 const F& f) {
  if (!ops.margin.defined()) return f(Broadcast<acc_t>{static_cast<acc_t>(margin)});
  if (ops.margin.numel() == 1) return f(Broadcast<acc_t>{static_cast<acc_t>(ops.margin.const_data_ptr<scalar_t>()[0])});
  f(chunk_values<scalar_t, acc_t>(ops.margin, begin, len, buffer));
}

at::Tensor margin_rank_loss_cpu(const at::Tensor& input1, const at::Tensor& input2, const at::Tensor& target,
                                const c10::optional<at::Tensor>& margin_tensor, double margin, int64_t reduction) {
  const MarginRankLossOperands ops =
      prepare_margin_rank_loss("margin_rank_loss", input1, input2, target, margin_tensor, reduction, at::Tensor());
  const bool reduce = reduction != kReduceNone;
  at::Tensor out = at::empty(reduce ? std::vector<int64_t>{} : ops.shape, input1.options());
  const int64_t numel = ops.numel;
  const int64_t num_chunks = (numel + kChunk - 1) / kChunk;
  std::vector<double> partial(reduce ? num_chunks : 0, 0.0);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input1.scalar_type(), "rdnas::margin_rank_loss", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* out_ptr = out.data_ptr<scalar_t>();
    auto load = [](const at::Tensor& t, int64_t b, int64_t l, acc_t* buf) {
      return chunk_values<scalar_t, acc_t>(t, b, l, buf);
    };
    at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
      std::unique_ptr<acc_t[]> buffers(new acc_t[4 * kChunk]);
      for (int64_t c = chunk_begin; c < chunk_end; ++c) {
        const int64_t begin = c * kChunk, len = std::min(kChunk, numel - begin);
        const acc_t* x1 = load(ops.input1, begin, len, buffers.get());
        const acc_t* x2 = load(ops.input2, begin, len, buffers.get() + kChunk);
        const acc_t* y = load(ops.target, begin, len, buffers.get() + 2 * kChunk);
        with_margin<scalar_t>(ops, margin, begin, len, buffers.get() + 3 * kChunk, [&](auto m) {
          if (reduce) {
            partial[c] = static_cast<double>(chunk_loss_sum(x1, x2, y, m, len));
          } else {
            chunk_loss(x1, x2, y, m, len, out_ptr + begin);
          }
        });
      }
    });
    if (reduce) {
      double total = 0.0;
      for (double p : partial) total += p;
      if (reduction == kReduceMean) {
        total = numel == 0 ? std::numeric_limits<double>::quiet_NaN() : total / static_cast<double>(numel);
      }
      out_ptr[0] = static_cast<scalar_t>(total);
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> margin_rank_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& input1,
                                                                 const at::Tensor& input2, const at::Tensor& target,
                                                                 const c10::optional<at::Tensor>& margin_tensor,
                                                                 double margin, int64_t reduction) {
  TORCH_CHECK(grad.defined(), "rdnas::margin_rank_loss_backward: grad must be a tensor");
  const MarginRankLossOperands ops =
      prepare_margin_rank_loss("margin_rank_loss_backward", input1, input2, target, margin_tensor, reduction, grad);
  at::Tensor grad_input1 = at::empty(ops.shape, input1.options());
  at::Tensor grad_input2 = at::empty(ops.shape, input1.options());
  const int64_t numel = ops.numel;
  if (numel == 0) return {grad_input1, grad_input2};
  const int64_t num_chunks = (numel + kChunk - 1) / kChunk;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input1.scalar_type(), "rdnas::margin_rank_loss_backward",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    scalar_t* g1_ptr = grad_input1.data_ptr<scalar_t>();
    scalar_t* g2_ptr = grad_input2.data_ptr<scalar_t>();
    // A reduced loss has one incoming gradient: each element's share, divided by the count for "mean" as mean's
    // backward divides it, is computed once.
    const bool reduced_grad = reduction != kReduceNone;
    acc_t grad_element = 0;
    if (reduced_grad) {
      grad_element = static_cast<acc_t>(ops.grad.const_data_ptr<scalar_t>()[0]);
      if (reduction == kReduceMean) grad_element = grad_element / static_cast<acc_t>(numel);
    }
    auto load = [](const at::Tensor& t, int64_t b, int64_t l, acc_t* buf) {
      return chunk_values<scalar_t, acc_t>(t, b, l, buf);
    };
    at::parallel_for(0, num_chunks, 1, [&](int64_t chunk_begin, int64_t chunk_end) {
      std::unique_ptr<acc_t[]> buffers(new acc_t[5 * kChunk]);
      for (int64_t c = chunk_begin; c < chunk_end; ++c) {
        const int64_t begin = c * kChunk, len = std::min(kChunk, numel - begin);
        const acc_t* x1 = load(ops.input1, begin, len, buffers.get());
        const acc_t* x2 = load(ops.input2, begin, len, buffers.get() + kChunk);
        const acc_t* y = load(ops.target, begin, len, buffers.get() + 2 * kChunk);
        with_margin<scalar_t>(ops, margin, begin, len, buffers.get() + 3 * kChunk, [&](auto m) {
          if (reduced_grad) {
            chunk_grad(x1, x2, y, m, Broadcast<acc_t>{grad_element}, len, g1_ptr + begin, g2_ptr + begin);
          } else {
            const acc_t* g = load(ops.grad, begin, len, buffers.get() + 4 * kChunk);
            chunk_grad(x1, x2, y, m, g, len, g1_ptr + begin, g2_ptr + begin);
          }
        });
      }
    });
  });
  return {grad_input1, grad_input2};
}

}  // namespace

TORCH_LIBRARY_IMPL(rdnas, CPU, m) {
  m.impl("margin_rank_loss", &margin_rank_loss_cpu);
  m.impl("margin_rank_loss_backward", &margin_rank_loss_backward_cpu);
}

}  // namespace rdnas
