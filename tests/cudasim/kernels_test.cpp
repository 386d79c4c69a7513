// Runs the device code of csrc/cuda on the CPU under the execution model of cudasim.h and compares every kernel with
// a float64 reference computed here. Built and run by tools/cudasim_check.sh; see that script for the build line.
//
//   kernels_test [--mode fibers|threads] [--schedule forward|reverse|random|warps] [--seed N] [--size small|full]
//                [--only SUBSTRING] [--list] [--verbose]
//
// Every case calls the host-side launch function of a *_device.cuh header (grid size, workspace, counter zeroing,
// the launches), as the extension does, with device buffers in host memory: workspaces are filled with garbage
// first and outputs with a sentinel, so an unzeroed counter or an unwritten output shows. Cases cover every kernel
// and the four dtypes the CUDA build registers (float64, float32, float16, bfloat16); empty inputs; one block; many
// blocks; grids capped below the work (the grid-stride loops iterate); several pairwise tiles and row tiles;
// groups; shared and per-row teachers; every reduction and loss. Inputs are multiples of 1/32 in [-4, 4), exact in
// every dtype, with ties (and NaN in a few cases), so the only differences from the reference are accumulation
// rounding (tolerances below).
#include "cudasim.h"  // first: the CUDA language for the headers below

#include "margin_rank_loss_device.cuh"
#include "multi_tensor_device.cuh"
#include "pairwise_margin_rank_loss_device.cuh"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace {

using rdnas::kPairHinge;
using rdnas::kPairLogistic;
using rdnas::kReduceMean;
using rdnas::kReduceNone;
using rdnas::kReduceSum;
using rdnas::kSumAbsProduct;
using rdnas::kSumProduct;
using rdnas::kSumSquares;

// ---------------------------------------------------------------------------------------------------------------
// Data, dtypes, tolerances.

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  double grid_value() { return static_cast<double>(below(256) - 128) / 32.0; }  // exact in every dtype
  double sign() { return below(2) == 0 ? -1.0 : 1.0; }
};

template <typename T> const char* dtype_name();
template <> const char* dtype_name<double>() { return "float64"; }
template <> const char* dtype_name<float>() { return "float32"; }
template <> const char* dtype_name<c10::Half>() { return "float16"; }
template <> const char* dtype_name<c10::BFloat16>() { return "bfloat16"; }

// Unit roundoff of the storage type (an output's rounding) and the tolerance of an opmath accumulation, relative to
// the sum of the terms' magnitudes.
template <typename T> double output_eps();
template <> double output_eps<double>() { return 0x1p-53; }
template <> double output_eps<float>() { return 0x1p-24; }
template <> double output_eps<c10::Half>() { return 0x1p-11; }
template <> double output_eps<c10::BFloat16>() { return 0x1p-8; }
// Half the spacing of the storage type's subnormals: the absolute rounding error of a tiny output.
template <typename T>
double output_tiny() {
  return std::is_same_v<T, c10::Half> ? 0x1p-25 : 0.0;
}
template <typename T>
double accumulation_tol() {
  return std::is_same_v<T, double> ? 1e-13 : 1e-5;
}

template <typename T>
double to_double(T v) {
  return static_cast<double>(static_cast<float>(v));
}
template <>
double to_double<double>(double v) {
  return v;
}

// A reference value as the storage type holds it where it overflows that type (a float16 sum past 65504 is inf).
template <typename T>
double overflowed(double ref) {
  const double rounded = to_double(static_cast<T>(ref));
  return std::isinf(rounded) ? rounded : ref;
}

template <typename T>
std::vector<T> grid_values(Rng& rng, int64_t n) {
  std::vector<T> v(static_cast<size_t>(n));
  for (auto& x : v) x = static_cast<T>(rng.grid_value());
  return v;
}

template <typename T>
void fill_garbage(std::vector<T>& v) {
  if (!v.empty()) std::memset(static_cast<void*>(v.data()), 0xA5, v.size() * sizeof(T));
}

// One comparison: |got - ref| <= 2 * eps_out * |ref| + tol_acc * scale + 2 * tiny (scale: the sum of the terms'
// magnitudes; tiny: output_tiny of the storage type); NaN must meet NaN and an infinity the same infinity.
struct Checker {
  std::string name;
  int mismatches = 0;
  bool verbose = false;

  void close(const std::string& what, double got, double ref, double scale, double eps_out, double tol_acc,
             double tiny = 0.0) {
    bool ok;
    if (std::isnan(ref)) {
      ok = std::isnan(got);
    } else if (std::isinf(ref)) {
      ok = got == ref;
    } else {
      ok = std::fabs(got - ref) <= 2.0 * eps_out * std::fabs(ref) + tol_acc * scale + 2.0 * tiny + 1e-300;
    }
    if (!ok && mismatches++ < 5) {
      std::printf("  MISMATCH %s: %s = %.17g, reference %.17g (scale %.3g)\n", name.c_str(), what.c_str(), got, ref,
                  scale);
    }
  }
  void equal(const std::string& what, int64_t got, int64_t ref) {
    if (got != ref && mismatches++ < 5) {
      std::printf("  MISMATCH %s: %s = %lld, reference %lld\n", name.c_str(), what.c_str(),
                  static_cast<long long>(got), static_cast<long long>(ref));
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// margin_rank_loss.

// Which operands are a single element (step 0).
enum Broadcast : unsigned { kInput2One = 1, kTargetOne = 2, kMarginTensor = 4, kMarginOne = 8, kGradOne = 16 };
// Not a broadcast: every 7th element of input1 is NaN (the loss and its sums propagate it, the gradient is 0 there).
constexpr unsigned kNaNInputs = 32;

template <typename T>
struct MarginData {
  using acc_t = at::opmath_type<T>;
  std::vector<T> x1, x2, y, m, g;
  rdnas::margin_cuda::ElementArgs<T, acc_t> args{};
  double margin_value = 0.25;

  MarginData(int64_t numel, unsigned broadcast, bool with_grad, uint64_t seed) {
    Rng rng(seed);
    x1 = grid_values<T>(rng, numel);
    if (broadcast & kNaNInputs) {
      for (size_t i = 3; i < x1.size(); i += 7) x1[i] = static_cast<T>(std::nan(""));
    }
    x2 = grid_values<T>(rng, broadcast & kInput2One ? 1 : numel);
    y.resize(broadcast & kTargetOne ? 1 : static_cast<size_t>(numel));
    for (auto& v : y) v = static_cast<T>(rng.sign());
    if (broadcast & kMarginTensor) m = grid_values<T>(rng, broadcast & kMarginOne ? 1 : numel);
    if (with_grad) g = grid_values<T>(rng, broadcast & kGradOne ? 1 : numel);
    args.input1 = x1.data();
    args.input2 = x2.data();
    args.target = y.data();
    args.margin = m.empty() ? nullptr : m.data();
    args.grad = g.empty() ? nullptr : g.data();
    args.step1 = 1;
    args.step2 = x2.size() == 1 && numel != 1 ? 0 : 1;
    args.step_target = y.size() == 1 && numel != 1 ? 0 : 1;
    args.step_margin = m.size() == 1 && numel != 1 ? 0 : 1;
    args.step_grad = g.size() == 1 && numel != 1 ? 0 : 1;
    args.margin_value = static_cast<acc_t>(margin_value);
    args.numel = numel;
  }
  double at(const std::vector<T>& v, int64_t i) const { return to_double(v[v.size() == 1 ? 0 : static_cast<size_t>(i)]); }
  double z(int64_t i) const {
    const double mv = m.empty() ? margin_value : at(m, i);
    return -at(y, i) * (at(x1, i) - at(x2, i)) + mv;
  }
};

template <typename T>
int margin_forward_case(Checker& check, int64_t numel, int64_t reduction, unsigned broadcast, int64_t max_blocks,
                        uint64_t seed) {
  MarginData<T> data(numel, broadcast, false, seed);
  const bool reduce = reduction != kReduceNone;
  std::vector<T> out(reduce ? 1 : static_cast<size_t>(numel), static_cast<T>(std::nan("")));
  std::vector<double> workspace(
      static_cast<size_t>(rdnas::margin_cuda::forward_workspace_doubles(numel, reduction, max_blocks)));
  fill_garbage(workspace);
  rdnas::margin_cuda::launch_forward<T>(data.args, reduction, out.data(), workspace.empty() ? nullptr : workspace.data(),
                                        {}, max_blocks);
  double total = 0.0, scale = 0.0;
  for (int64_t i = 0; i < numel; ++i) {
    const double z = data.z(i);
    const double loss = z <= 0 ? 0.0 : z;
    total += loss;
    scale += std::fabs(loss);
    if (!reduce) check.close("out[" + std::to_string(i) + "]", to_double(out[i]), loss, 0.0, output_eps<T>(), 0.0);
  }
  if (reduce) {
    const double ref = reduction == kReduceMean ? (numel == 0 ? std::nan("") : total / numel) : total;
    const double ref_scale = reduction == kReduceMean && numel > 0 ? scale / numel : scale;
    check.close("loss", to_double(out[0]), overflowed<T>(ref), ref_scale, output_eps<T>(), accumulation_tol<T>(), output_tiny<T>());
  }
  return check.mismatches;
}

template <typename T>
int margin_backward_case(Checker& check, int64_t numel, int64_t reduction, unsigned broadcast, int64_t max_blocks,
                         uint64_t seed) {
  MarginData<T> data(numel, broadcast, true, seed);
  std::vector<T> grad1(static_cast<size_t>(numel), static_cast<T>(std::nan(""))), grad2 = grad1;
  rdnas::margin_cuda::launch_backward<T>(data.args, reduction, grad1.data(), grad2.data(), {}, max_blocks);
  for (int64_t i = 0; i < numel; ++i) {
    const double g = data.at(data.g, i) / (reduction == kReduceMean ? static_cast<double>(numel) : 1.0);
    const double d1 = (data.z(i) >= 0 ? g : 0.0) * -data.at(data.y, i);
    // g / numel is rounded in the opmath type before the product: one more rounding of it.
    const double eps = output_eps<T>() + (std::is_same_v<T, double> ? 0x1p-53 : 0x1p-24);
    check.close("grad_input1[" + std::to_string(i) + "]", to_double(grad1[i]), d1, 0.0, eps, 0.0, output_tiny<T>());
    check.close("grad_input2[" + std::to_string(i) + "]", to_double(grad2[i]), -d1, 0.0, eps, 0.0, output_tiny<T>());
  }
  return check.mismatches;
}

// ---------------------------------------------------------------------------------------------------------------
// pairwise_margin_rank_loss.

template <typename T>
struct PairwiseData {
  std::vector<T> scores, teacher, grad;
  std::vector<int64_t> groups;
  int64_t batch, n, teacher_stride, groups_stride;
  double margin;
  rdnas::pairwise_cuda::PairwiseArgs<T> args{};

  // with_nan: a NaN teacher value (its pairs do not count) and, in the last batch row, a NaN score (its pairs'
  // losses are NaN, their hinge gradients 0).
  PairwiseData(int64_t batch_, int64_t n_, bool shared_teacher, int with_groups, bool with_grad, double margin_,
               uint64_t seed, bool with_nan = false)
      : batch(batch_), n(n_), margin(margin_) {
    Rng rng(seed);
    scores = grid_values<T>(rng, batch * n);
    teacher_stride = shared_teacher ? 0 : n;
    teacher.resize(static_cast<size_t>(shared_teacher ? n : batch * n));
    for (auto& t : teacher) t = static_cast<T>(static_cast<double>(rng.below(9)) / 4.0);  // many ties
    if (with_nan && n > 3) {
      teacher[1] = static_cast<T>(std::nan(""));
      scores[(batch - 1) * n + 2] = static_cast<T>(std::nan(""));
    }
    groups_stride = with_groups == 2 ? 0 : n;  // 1: per-row groups, 2: one row of groups for every batch row
    if (with_groups) {
      groups.resize(static_cast<size_t>(with_groups == 2 ? n : batch * n));
      for (auto& g : groups) g = rng.below(4);
    }
    if (with_grad) grad = grid_values<T>(rng, batch * n);
    args = {scores.data(), teacher.data(), groups.empty() ? nullptr : groups.data(), batch, n, teacher_stride,
            groups_stride};
  }

  // Pair (i, j) of batch row b seen from i: counted, sign and z as the kernels define them (margin_rank_loss.h).
  bool pair(int64_t b, int64_t i, int64_t j, double& sign, double& z) const {
    if (i == j) return false;
    const double dt = to_double(teacher[b * teacher_stride + i]) - to_double(teacher[b * teacher_stride + j]);
    sign = dt > 0 ? 1.0 : (dt < 0 ? -1.0 : 0.0);
    double m = margin;
    bool valid = sign != 0;
    if (!groups.empty()) {
      const int64_t gi = groups[b * groups_stride + i], gj = groups[b * groups_stride + j];
      valid = valid && gi != gj;
      m = margin * std::fabs(static_cast<double>(gi - gj));
    }
    z = m - sign * (to_double(scores[b * n + i]) - to_double(scores[b * n + j]));
    return valid;
  }
};

double softplus_ref(double z) { return z > 0 ? z + std::log1p(std::exp(-z)) : std::log1p(std::exp(z)); }
double sigmoid_ref(double z) { return 1.0 / (1.0 + std::exp(-z)); }

template <typename T>
int pairwise_forward_case(Checker& check, int64_t batch, int64_t n, bool shared_teacher, int groups, int64_t kind,
                          int64_t reduction, bool want_grad, int64_t max_grid_y, uint64_t seed, bool with_nan) {
  using acc_t = at::opmath_type<T>;
  PairwiseData<T> data(batch, n, shared_teacher, groups, false, kind == kPairHinge ? 0.25 : 0.5, seed, with_nan);
  const bool reduce = reduction != kReduceNone;
  want_grad = want_grad && reduce;
  const int64_t rows = batch * n;
  std::vector<T> loss(reduce ? 1 : static_cast<size_t>(rows), static_cast<T>(std::nan("")));
  std::vector<int64_t> num_pairs(1, -7);
  std::vector<acc_t> dsum(want_grad ? static_cast<size_t>(rows) : 0, static_cast<acc_t>(std::nan("")));
  const int64_t partials = rdnas::pairwise_cuda::forward_num_partials(batch, n, max_grid_y);
  std::vector<double> partial_loss(static_cast<size_t>(partials));
  std::vector<int64_t> partial_count(static_cast<size_t>(partials));
  fill_garbage(partial_loss);
  fill_garbage(partial_count);
  rdnas::pairwise_cuda::launch_forward<T>(data.args, data.margin, reduction, kind, want_grad, loss.data(),
                                          num_pairs.data(), want_grad ? dsum.data() : nullptr, partial_loss.data(),
                                          partial_count.data(), {}, max_grid_y);
  double total = 0.0;
  int64_t count = 0;
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < n; ++i) {
      double row_loss = 0.0, row_dsum = 0.0, row_dsum_scale = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        double sign, z;
        if (!data.pair(b, i, j, sign, z)) continue;
        ++count;
        if (kind == kPairHinge) {
          row_loss += z <= 0 ? 0.0 : z;
          row_dsum += z >= 0 ? -sign : 0.0;
        } else {
          row_loss += softplus_ref(z);
          row_dsum += -sign * sigmoid_ref(z);
        }
        row_dsum_scale += 1.0;
      }
      total += row_loss;
      const int64_t r = b * n + i;
      if (!reduce) {
        check.close("loss[" + std::to_string(r) + "]", to_double(loss[r]), 0.5 * row_loss, 0.5 * row_loss,
                    output_eps<T>(), accumulation_tol<T>());
      }
      if (want_grad) {
        check.close("dsum[" + std::to_string(r) + "]", static_cast<double>(dsum[r]), row_dsum, row_dsum_scale,
                    output_eps<acc_t>(), accumulation_tol<T>());
      }
    }
  }
  check.equal("num_pairs", num_pairs[0], count / 2);
  if (reduce) {
    const double sum = 0.5 * total;
    const double denominator = count / 2 > 0 ? static_cast<double>(count / 2) : 1.0;
    const double ref = reduction == kReduceMean ? sum / denominator : sum;
    check.close("loss", to_double(loss[0]), overflowed<T>(ref), std::fabs(ref), output_eps<T>(), accumulation_tol<T>());
  }
  return check.mismatches;
}

template <typename T>
int pairwise_backward_case(Checker& check, int64_t batch, int64_t n, bool shared_teacher, int groups, int64_t kind,
                           int64_t max_grid_y, uint64_t seed, bool with_nan) {
  PairwiseData<T> data(batch, n, shared_teacher, groups, true, kind == kPairHinge ? 0.25 : 0.5, seed, with_nan);
  std::vector<T> out(static_cast<size_t>(batch * n), static_cast<T>(std::nan("")));
  rdnas::pairwise_cuda::launch_backward<T>(data.args, data.grad.data(), data.margin, kind, out.data(), {}, max_grid_y);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < n; ++i) {
      double total = 0.0, scale = 0.0;
      for (int64_t j = 0; j < n; ++j) {
        double sign, z;
        if (!data.pair(b, i, j, sign, z)) continue;
        const double w = kind == kPairHinge ? (z >= 0 ? 1.0 : 0.0) : sigmoid_ref(z);
        // The hinge's is a select: an inactive pair (z < 0 or NaN) adds nothing.
        const double term = kind == kPairHinge && w == 0.0
                                 ? 0.0
                                 : w * sign * (to_double(data.grad[b * n + i]) + to_double(data.grad[b * n + j]));
        total += term;
        scale += std::fabs(term);
      }
      const int64_t r = b * n + i;
      check.close("grad_scores[" + std::to_string(r) + "]", to_double(out[r]), -0.5 * total, 0.5 * scale,
                  output_eps<T>(), accumulation_tol<T>(), output_tiny<T>());
    }
  }
  return check.mismatches;
}

// ---------------------------------------------------------------------------------------------------------------
// Multi-tensor ops.

// The chunks of multi_tensor_chunks (csrc/multi_tensor.cpp), from the tensors' sizes.
rdnas::MultiTensorChunks chunks_of(const std::vector<int64_t>& sizes) {
  rdnas::MultiTensorChunks chunks;
  for (size_t k = 0; k < sizes.size(); ++k) {
    for (int64_t start = 0; start < sizes[k]; start += rdnas::kMultiTensorChunk) {
      chunks.tensor.push_back(static_cast<int64_t>(k));
      chunks.start.push_back(start);
      chunks.length.push_back(std::min(rdnas::kMultiTensorChunk, sizes[k] - start));
    }
  }
  return chunks;
}

template <typename V>
std::vector<int64_t> addresses(std::vector<std::vector<V>>& tensors) {
  std::vector<int64_t> out;
  for (auto& t : tensors) out.push_back(t.empty() ? 0 : static_cast<int64_t>(reinterpret_cast<intptr_t>(t.data())));
  return out;
}

template <typename T>
int multi_reduce_case(Checker& check, const std::vector<int64_t>& sizes, int64_t kind, int64_t max_blocks,
                      uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<T>> a, b;  // one allocation per tensor: AddressSanitizer sees a read past its end
  for (int64_t size : sizes) {
    a.push_back(grid_values<T>(rng, size));
    if (kind != kSumSquares) b.push_back(grid_values<T>(rng, size));
  }
  const rdnas::MultiTensorChunks chunks = chunks_of(sizes);
  const int64_t num_chunks = static_cast<int64_t>(chunks.tensor.size());
  const int64_t num_tensors = static_cast<int64_t>(sizes.size());
  std::vector<double> out(static_cast<size_t>(num_tensors), std::nan(""));
  if (num_chunks == 0) {
    // The extension launches nothing and returns zeros (multi_tensor_reduce_cuda); nothing to run here.
    check.equal("chunks of tensors without elements", num_chunks, 0);
    return check.mismatches;
  }
  std::vector<int64_t> table(
      static_cast<size_t>(rdnas::multi_tensor_cuda::chunk_table_words(num_chunks, num_tensors, true)));
  rdnas::multi_tensor_cuda::fill_chunk_table(table.data(), chunks, addresses(a), addresses(b), true);
  std::vector<double> partials(static_cast<size_t>(num_chunks));
  fill_garbage(partials);
  rdnas::multi_tensor_cuda::launch_reduce<T>(table.data(), num_chunks, num_tensors, kind, partials.data(), out.data(),
                                             {}, max_blocks);
  for (int64_t t = 0; t < num_tensors; ++t) {
    double total = 0.0, scale = 0.0;
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const double x = to_double(a[t][i]);
      const double y = kind == kSumSquares ? x : to_double(b[t][i]);
      const double term = kind == kSumAbsProduct ? std::fabs(x * y) : x * y;
      total += term;
      scale += std::fabs(term);
    }
    check.close("out[" + std::to_string(t) + "]", out[t], total, scale, 0.0, accumulation_tol<T>());
  }
  return check.mismatches;
}

template <typename T>
bool same_bits_or_nan(T a, T b) {
  if (std::isnan(to_double(a)) && std::isnan(to_double(b))) return true;
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

// multi_tensor_abs_ then multi_tensor_mul_signs_ (synflow's linearise / restore) against the CPU's element maths,
// bit for bit, with zeros of both signs, infinities and NaN among the values.
template <typename T>
int multi_abs_signs_case(Checker& check, const std::vector<int64_t>& sizes, int64_t max_blocks, uint64_t seed) {
  using acc_t = at::opmath_type<T>;
  Rng rng(seed);
  const double specials[] = {0.0, -0.0, std::numeric_limits<double>::infinity(),
                             -std::numeric_limits<double>::infinity(), std::nan("")};
  std::vector<std::vector<T>> w, original;
  std::vector<std::vector<int8_t>> s;
  for (int64_t size : sizes) {
    std::vector<T> v = grid_values<T>(rng, size);
    for (auto& x : v) {
      if (rng.below(16) == 0) x = static_cast<T>(specials[rng.below(5)]);
    }
    w.push_back(v);
    original.push_back(v);
    s.emplace_back(static_cast<size_t>(size), static_cast<int8_t>(0x55));
  }
  const rdnas::MultiTensorChunks chunks = chunks_of(sizes);
  const int64_t num_chunks = static_cast<int64_t>(chunks.tensor.size());
  if (num_chunks == 0) return check.mismatches;  // the extension launches nothing
  const int64_t words = rdnas::multi_tensor_cuda::chunk_table_words(num_chunks, static_cast<int64_t>(sizes.size()), false);
  std::vector<int64_t> table(static_cast<size_t>(words));
  rdnas::multi_tensor_cuda::fill_chunk_table(table.data(), chunks, addresses(w), addresses(s), false);
  rdnas::multi_tensor_cuda::launch_abs<T>(table.data(), num_chunks, {}, max_blocks);
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const acc_t v = static_cast<acc_t>(original[t][i]);
      const int sign = static_cast<int>(v > acc_t(0)) - static_cast<int>(v < acc_t(0));
      const T expected = sign < 0 ? static_cast<T>(-v) : original[t][i];
      check.equal("sign[" + std::to_string(t) + "][" + std::to_string(i) + "]", s[t][i], sign);
      if (!same_bits_or_nan(w[t][i], expected)) check.equal("|w| bits [" + std::to_string(t) + "][" + std::to_string(i) + "]", 0, 1);
    }
  }
  rdnas::multi_tensor_cuda::launch_mul_signs<T>(table.data(), num_chunks, {}, max_blocks);
  for (size_t t = 0; t < sizes.size(); ++t) {
    for (int64_t i = 0; i < sizes[t]; ++i) {
      const acc_t v = static_cast<acc_t>(original[t][i]);
      const int sign = static_cast<int>(v > acc_t(0)) - static_cast<int>(v < acc_t(0));
      const T abs_value = sign < 0 ? static_cast<T>(-v) : original[t][i];
      const T expected = static_cast<T>(static_cast<acc_t>(abs_value) * static_cast<acc_t>(sign));
      if (!same_bits_or_nan(w[t][i], expected)) {
        check.equal("restored w bits [" + std::to_string(t) + "][" + std::to_string(i) + "]", 0, 1);
      }
    }
  }
  return check.mismatches;
}

// ---------------------------------------------------------------------------------------------------------------
// The cases.

struct Case {
  std::string name;
  std::function<int(Checker&)> run;
};

const char* reduction_name(int64_t r) { return r == kReduceNone ? "none" : (r == kReduceMean ? "mean" : "sum"); }
const char* kind_name(int64_t k) { return k == kPairHinge ? "hinge" : "logistic"; }
const char* multi_kind_name(int64_t k) {
  return k == kSumAbsProduct ? "sum|ab|" : (k == kSumProduct ? "sum(ab)" : "sum(aa)");
}

std::string join_sizes(const std::vector<int64_t>& sizes) {
  std::string out = "[";
  for (size_t k = 0; k < sizes.size(); ++k) out += (k ? "," : "") + std::to_string(sizes[k]);
  if (out.size() > 40) out = out.substr(0, 37) + "...";
  return out + "]";
}

template <typename T>
void add_cases(std::vector<Case>& cases, bool full) {
  const std::string dt = dtype_name<T>();
  uint64_t seed = 1000 * sizeof(T) + (std::is_same_v<T, c10::BFloat16> ? 7 : 0);
  constexpr int64_t kMargin = rdnas::margin_cuda::kMaxBlocks;
  constexpr int64_t kPairY = rdnas::pairwise_cuda::kMaxGridY;
  constexpr int64_t kMulti = rdnas::multi_tensor_cuda::kMaxBlocks;

  // margin_rank_loss: numel, broadcast operands, grid cap. 1024 elements per block at most: 5000 elements are 5
  // blocks, and a cap of 2 makes each block take 3 grid-stride steps.
  struct MarginShape { int64_t numel; unsigned broadcast; int64_t max_blocks; };
  std::vector<MarginShape> margin_shapes = {
      {0, 0, kMargin}, {1, 0, kMargin}, {1000, kMarginTensor, kMargin}, {5000, 0, kMargin}, {5000, kMarginTensor, 2},
      {3001, kInput2One | kTargetOne | kMarginTensor | kMarginOne | kGradOne, 2}, {2500, kTargetOne, 1},
      {300, kNaNInputs, kMargin}};
  if (full) margin_shapes.push_back({70001, kMarginTensor, kMargin});
  for (const MarginShape& s : margin_shapes) {
    for (int64_t reduction : {kReduceNone, kReduceMean, kReduceSum}) {
      const std::string shape = "numel=" + std::to_string(s.numel) + " broadcast=" + std::to_string(s.broadcast) +
                                " max_blocks=" + std::to_string(s.max_blocks);
      const uint64_t sd = ++seed;
      cases.push_back({"margin_rank_loss forward " + dt + " " + reduction_name(reduction) + " " + shape,
                       [=](Checker& c) { return margin_forward_case<T>(c, s.numel, reduction, s.broadcast, s.max_blocks, sd); }});
      cases.push_back({"margin_rank_loss backward " + dt + " " + reduction_name(reduction) + " " + shape,
                       [=](Checker& c) { return margin_backward_case<T>(c, s.numel, reduction, s.broadcast, s.max_blocks, sd); }});
    }
  }
  if (full && std::is_same_v<T, float>) {
    // Past the fixed cap: 2048 blocks, and the grid-stride loop runs twice for the first blocks.
    const int64_t numel = 2048 * 1024 + 5000;
    const uint64_t sd = ++seed;
    cases.push_back({"margin_rank_loss forward " + dt + " sum numel=" + std::to_string(numel) + " (the 2048-block cap)",
                     [=](Checker& c) { return margin_forward_case<T>(c, numel, kReduceSum, 0, kMargin, sd); }});
  }

  // pairwise_margin_rank_loss: batch, n, shared teacher, groups (0 none, 1 per row, 2 shared), grid-y cap.
  struct PairShape { int64_t batch, n; bool shared_teacher; int groups; int64_t max_grid_y; bool nan = false; };
  std::vector<PairShape> pair_shapes = {
      {1, 1, false, 0, kPairY}, {1, 2, false, 1, kPairY}, {3, 37, true, 2, kPairY}, {5, 40, false, 1, 2},
      {2, 70, true, 0, 1}, {2, 45, false, 0, kPairY, true}};
  if (full) {
    pair_shapes.push_back({2, 600, false, 1, kPairY});  // 2 column tiles, 19 row tiles
    pair_shapes.push_back({1, 1100, true, 0, kPairY});  // 3 column tiles, the last one partial
  }
  for (const PairShape& s : pair_shapes) {
    const bool large = s.n > 100;
    const std::string shape = "B=" + std::to_string(s.batch) + " N=" + std::to_string(s.n) +
                              (s.shared_teacher ? " shared-teacher" : "") +
                              (s.groups == 1 ? " groups" : (s.groups == 2 ? " shared-groups" : "")) +
                              " max_grid_y=" + std::to_string(s.max_grid_y) + (s.nan ? " NaN" : "");
    for (int64_t kind : {kPairHinge, kPairLogistic}) {
      for (int64_t reduction : {kReduceNone, kReduceMean, kReduceSum}) {
        for (bool want_grad : {false, true}) {
          if (reduction == kReduceNone && want_grad) continue;  // the op computes dsum for mean / sum only
          if (large && (want_grad ? reduction != kReduceMean : reduction != kReduceNone)) continue;
          const uint64_t sd = ++seed;
          cases.push_back({"pairwise forward " + dt + " " + kind_name(kind) + " " + reduction_name(reduction) +
                               (want_grad ? " +dsum " : " ") + shape,
                           [=](Checker& c) {
                             return pairwise_forward_case<T>(c, s.batch, s.n, s.shared_teacher, s.groups, kind,
                                                             reduction, want_grad, s.max_grid_y, sd, s.nan);
                           }});
        }
      }
      const uint64_t sd = ++seed;
      cases.push_back({"pairwise backward " + dt + " " + kind_name(kind) + " " + shape, [=](Checker& c) {
                         return pairwise_backward_case<T>(c, s.batch, s.n, s.shared_teacher, s.groups, kind,
                                                          s.max_grid_y, sd, s.nan);
                       }});
    }
  }

  // Multi-tensor ops: tensor sizes (chunks of 65536), grid cap.
  struct MultiShape { std::vector<int64_t> sizes; int64_t max_blocks; };
  const int64_t chunk = rdnas::kMultiTensorChunk;
  std::vector<MultiShape> multi_shapes = {
      {{}, kMulti}, {{0, 0}, kMulti}, {{1}, kMulti}, {{1, 0, 255, 1000, 1025}, kMulti}, {{chunk + 7, 3, 0, 700}, 2}};
  if (full) {
    multi_shapes.push_back({{3 * chunk + 1, 5}, kMulti});
    multi_shapes.push_back({{2 * chunk, chunk - 1, 33}, 1});
    multi_shapes.push_back({std::vector<int64_t>(300, 5), 1});  // the per-tensor sum loops over 300 tensors
  }
  for (const MultiShape& s : multi_shapes) {
    const std::string shape = "sizes=" + join_sizes(s.sizes) + " max_blocks=" + std::to_string(s.max_blocks);
    for (int64_t kind : {kSumAbsProduct, kSumProduct, kSumSquares}) {
      const uint64_t sd = ++seed;
      cases.push_back({"multi_tensor_reduce " + dt + " " + multi_kind_name(kind) + " " + shape,
                       [=](Checker& c) { return multi_reduce_case<T>(c, s.sizes, kind, s.max_blocks, sd); }});
    }
    const uint64_t sd = ++seed;
    cases.push_back({"multi_tensor_abs_ + mul_signs_ " + dt + " " + shape,
                     [=](Checker& c) { return multi_abs_signs_case<T>(c, s.sizes, s.max_blocks, sd); }});
  }
}

[[noreturn]] void usage(const char* message) {
  std::fprintf(stderr,
               "kernels_test: %s\nusage: kernels_test [--mode fibers|threads] [--schedule forward|reverse|random|warps] "
               "[--seed N] [--size small|full] [--only SUBSTRING] [--list] [--verbose]\n",
               message);
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  cudasim::Options& options = cudasim::options();
  bool full = true, list = false, verbose = false;
  std::vector<std::string> only;
  for (int k = 1; k < argc; ++k) {
    const std::string arg = argv[k];
    auto value = [&]() -> std::string {
      if (k + 1 >= argc) usage(("missing value after " + arg).c_str());
      return argv[++k];
    };
    if (arg == "--mode") {
      const std::string v = value();
      if (v == "fibers") options.mode = cudasim::Mode::kFibers;
      else if (v == "threads") options.mode = cudasim::Mode::kThreads;
      else usage("--mode takes fibers or threads");
    } else if (arg == "--schedule") {
      const std::string v = value();
      if (v == "forward") options.schedule = cudasim::Schedule::kForward;
      else if (v == "reverse") options.schedule = cudasim::Schedule::kReverse;
      else if (v == "random") options.schedule = cudasim::Schedule::kRandom;
      else if (v == "warps") options.schedule = cudasim::Schedule::kWarps;
      else usage("--schedule takes forward, reverse, random or warps");
    } else if (arg == "--seed") {
      options.seed = std::stoull(value());
    } else if (arg == "--size") {
      const std::string v = value();
      if (v != "small" && v != "full") usage("--size takes small or full");
      full = v == "full";
    } else if (arg == "--only") {
      only.push_back(value());
    } else if (arg == "--list") {
      list = true;
    } else if (arg == "--verbose") {
      verbose = true;
    } else {
      usage(("unknown argument " + arg).c_str());
    }
  }

  std::vector<Case> all;
  add_cases<double>(all, full);
  add_cases<float>(all, full);
  add_cases<c10::Half>(all, full);
  add_cases<c10::BFloat16>(all, full);

  const char* mode = options.mode == cudasim::Mode::kFibers ? "fibers" : "threads";
  const char* schedules[] = {"forward", "reverse", "random", "warps"};
  const char* schedule = schedules[static_cast<int>(options.schedule)];
  const auto start = std::chrono::steady_clock::now();
  int run = 0, failed = 0;
  for (const Case& c : all) {
    bool selected = only.empty();
    for (const std::string& s : only) selected = selected || c.name.find(s) != std::string::npos;
    if (!selected) continue;
    if (list) {
      std::printf("%s\n", c.name.c_str());
      continue;
    }
    Checker check{c.name, 0, verbose};
    const auto case_start = std::chrono::steady_clock::now();
    const int mismatches = c.run(check);
    ++run;
    if (mismatches > 0) {
      ++failed;
      std::printf("FAIL %s (%d mismatches)\n", c.name.c_str(), mismatches);
    } else if (verbose) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - case_start).count();
      std::printf("ok   %s (%.2f s)\n", c.name.c_str(), seconds);
    }
    std::fflush(stdout);
  }
  if (list) return 0;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const cudasim::Stats& st = cudasim::stats();
  std::printf("kernels_test: mode=%s schedule=%s seed=%llu size=%s: %d cases, %d failed; %llu launches, %llu blocks, "
              "%llu CUDA threads, %llu memsets, %llu switches; %.1f s\n",
              mode, schedule, static_cast<unsigned long long>(options.seed), full ? "full" : "small", run, failed,
              static_cast<unsigned long long>(st.launches), static_cast<unsigned long long>(st.blocks),
              static_cast<unsigned long long>(st.threads), static_cast<unsigned long long>(st.memsets),
              static_cast<unsigned long long>(st.switches), seconds);
  if (run == 0) {
    std::printf("kernels_test: no case matched\n");
    return 1;
  }
  return failed == 0 ? 0 : 1;
}
