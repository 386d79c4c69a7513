// Module init and the single TORCH_LIBRARY(rdnas, m) holding every op schema.
// Kernels are attached per backend in cpu/*_kernel.cpp and cuda/*_kernel.cu; autograd and fake (meta) kernels
// are registered from Python (rdnas/ops/).
#include <Python.h>
#include <torch/library.h>

extern "C" {
PyObject* rdnas_shared_memory_sum(PyObject* self, PyObject* args);  // shared_memory_sum.cpp

// `import rdnas._C` loads this library, which runs the static registrations below. The module itself holds
// build information and one function that is not a tensor op: the summing step of rdnas.shared_memory_sum, which
// works on the addresses of a shared memory arena. Every op is reached through torch.ops.rdnas.
PyObject* PyInit__C(void) {
  static PyMethodDef methods[] = {
      {"shared_memory_sum", rdnas_shared_memory_sum, METH_VARARGS,
       "shared_memory_sum(arena, size, rank, seq, stride, payload, count, itemsize, timeout_s): sums `count` "
       "float32 (itemsize 4) or float64 (8) values at address `payload` over the `size` ranks of a shared memory "
       "arena in place (see rdnas/shared_memory_sum.py)"},
      {nullptr, nullptr, 0, nullptr}};
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "rdnas native kernels", -1, methods};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef RDNAS_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "built_with_cuda", with_cuda) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

TORCH_LIBRARY(rdnas, m) {
  // Elementwise margin ranking loss, a drop-in for torch.nn.functional.margin_ranking_loss with an optional
  // per-element margin tensor. reduction: 0 none, 1 mean, 2 sum (at::Reduction).
  m.def("margin_rank_loss(Tensor input1, Tensor input2, Tensor target, Tensor? margin_tensor, float margin, "
        "int reduction) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Gradients of margin_rank_loss w.r.t. input1 and input2, both in the broadcast shape of the inputs.
  m.def("margin_rank_loss_backward(Tensor grad, Tensor input1, Tensor input2, Tensor target, Tensor? margin_tensor, "
        "float margin, int reduction) -> (Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // All-pairs margin ranking loss over scores [N] or [B, N]. Returns (loss, num_pairs, dsum_dscores): loss is a
  // scalar (mean / sum) or the per-item shares [.., N] (none); num_pairs the number of counted pairs (int64);
  // dsum_dscores the gradient of the summed loss w.r.t. scores (shape [.., N], float32 for half inputs), computed
  // in the same pass when compute_grad is true and the reduction is mean or sum, otherwise an empty tensor.
  // loss_kind: 0 hinge max(0, z), 1 logistic softplus(z).
  m.def("pairwise_margin_rank_loss(Tensor scores, Tensor teacher, Tensor? groups, float margin, int reduction, "
        "int loss_kind, bool compute_grad) -> (Tensor, Tensor, Tensor)",
        {at::Tag::pt2_compliant_tag});
  // Gradient w.r.t. scores of sum_k grad[k] * loss_share[k] (the reduction="none" output).
  m.def("pairwise_margin_rank_loss_backward(Tensor grad, Tensor scores, Tensor teacher, Tensor? groups, "
        "float margin, int loss_kind) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // Zero-cost proxy reductions over every parameter tensor in one pass: per tensor pair, sum |a*b| (kind 0),
  // sum a*b (kind 1) or sum a*a (kind 2, second list empty); float64 [T].
  m.def("multi_tensor_reduce(Tensor[] first, Tensor[] second, int kind) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Synflow's linearisation: w = |w| in place, writing sign(w) into the int8 tensors `signs`; and its inverse,
  // w *= sign.
  m.def("multi_tensor_abs_(Tensor(a!)[] tensors, Tensor(b!)[] signs) -> ()", {at::Tag::pt2_compliant_tag});
  m.def("multi_tensor_mul_signs_(Tensor(a!)[] tensors, Tensor[] signs) -> ()", {at::Tag::pt2_compliant_tag});
}
