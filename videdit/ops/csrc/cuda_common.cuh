// Launch helpers and tensor-to-struct helpers shared by the CUDA kernels.
//
// Deliberately light includes: torch/extension.h (the whole C++ frontend and pybind11) would make
// every nvcc pass parse it, and ATen/cuda/CUDAContext.h pulls in cuBLAS / cuSPARSE headers that a
// minimal CUDA toolkit (nvcc + runtime) does not have. The Python bindings live in cuda_ops.cpp.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "params.h"
#include "resample.h"

namespace videdit {

constexpr int kThreads = 256;

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Blocks for a grid-stride loop over n elements.
inline unsigned int grid_for(long long n) {
  const long long blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<long long>(1, std::min<long long>(blocks, 1 << 20)));
}

template <typename Acc>
inline void check_acc_tensor(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous(), what, " must be a contiguous CUDA tensor");
  TORCH_CHECK(t.scalar_type() == c10::CppTypeToScalarType<Acc>::value, what,
              " must be float32 (float64 for float64 inputs)");
}

}  // namespace videdit
