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

#include "resample.h"

namespace videdit {

constexpr int kThreads = 256;

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Blocks for a grid-stride loop over n elements.
inline unsigned int grid_for(long long n) {
  const long long blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<long long>(1, std::min<long long>(blocks, 1 << 20)));
}

// The CUDA twin of params.h's make_upfirdn (params.h includes torch/extension.h).
template <typename Acc>
Upfirdn<Acc> make_upfirdn(const at::Tensor& f, int upx, int upy, int downx, int downy, int padx0, int pady0,
                          int in_h, int in_w) {
  TORCH_CHECK((f.dim() == 1 || f.dim() == 2) && f.is_contiguous(), "filter must be a contiguous 1-D or 2-D tensor");
  Upfirdn<Acc> s;
  s.upx = upx;
  s.upy = upy;
  s.downx = downx;
  s.downy = downy;
  s.padx0 = padx0;
  s.pady0 = pady0;
  s.separable = f.dim() == 1;
  s.taps_x = static_cast<int>(s.separable ? f.size(0) : f.size(1));
  s.taps_y = static_cast<int>(f.size(0));
  s.in_h = in_h;
  s.in_w = in_w;
  s.fx = s.fy = s.f2 = f.data_ptr<Acc>();
  return s;
}

inline int filter_taps_x(const at::Tensor& f) { return static_cast<int>(f.dim() == 1 ? f.size(0) : f.size(1)); }
inline int filter_taps_y(const at::Tensor& f) { return static_cast<int>(f.size(0)); }

template <typename Acc>
inline void check_acc_tensor(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous(), what, " must be a contiguous CUDA tensor");
  TORCH_CHECK(t.scalar_type() == c10::CppTypeToScalarType<Acc>::value, what,
              " must be float32 (float64 for float64 inputs)");
}

}  // namespace videdit
