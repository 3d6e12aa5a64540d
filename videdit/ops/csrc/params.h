// Host-side helpers that turn tensors and arguments into the plain structs of resample.h, shared by
// the C++ (CPU) and CUDA extensions. Light includes only: nvcc parses this through cuda_common.cuh,
// and torch/extension.h (the whole C++ frontend and pybind11) would slow every CUDA pass.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "resample.h"

namespace videdit {

// f: 1-D (separable, the same taps along x and y) or 2-D [taps_y, taps_x] correlation taps in Acc.
template <typename Acc>
Upfirdn<Acc> make_upfirdn(const at::Tensor& f, int upx, int upy, int downx, int downy, int padx0, int pady0,
                          int in_h, int in_w) {
  TORCH_CHECK(f.dim() == 1 || f.dim() == 2, "filter must be 1-D or 2-D");
  TORCH_CHECK(f.is_contiguous(), "filter must be contiguous");
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

}  // namespace videdit
