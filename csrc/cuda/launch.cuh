// The launch layer of csrc/cuda: every kernel launch and every device memset of the CUDA kernels goes through
// rdnas::cuda_launch::launch / memset_async, called by the host-side launch functions of the *_device.cuh headers.
//
// Built by nvcc (the extension), these are the plain `<<<grid, block, 0, stream>>>` launch followed by
// C10_CUDA_KERNEL_LAUNCH_CHECK, and cudaMemsetAsync on the stream. Built by g++ with RDNAS_CUDASIM defined (the test
// program of tests/cudasim, see tools/cudasim_check.sh), tests/cudasim/cudasim.h provides the same two calls on
// top of a CPU execution model that runs the kernel's blocks and threads; the launch functions, grid sizes,
// workspace layout and counter zeroing of the headers are then the ones the extension runs.
//
// This header is the only one of csrc/cuda/*.cuh that includes c10/cuda (and only when nvcc builds it).
#pragma once

#include <cstddef>
#include <utility>

#ifdef RDNAS_CUDASIM
#include "cudasim.h"  // on the include path of the test program only
#else
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace rdnas {
namespace cuda_launch {

using Stream = cudaStream_t;

// kernel<<<grid, block, 0, stream>>>(args...), then the launch check (a bad configuration raises).
template <typename... Params, typename... Args>
inline void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Stream stream, Args&&... args) {
  kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// cudaMemsetAsync(ptr, value, bytes, stream), checked.
inline void memset_async(void* ptr, int value, size_t bytes, Stream stream) {
  C10_CUDA_CHECK(cudaMemsetAsync(ptr, value, bytes, stream));
}

}  // namespace cuda_launch
}  // namespace rdnas
#endif
