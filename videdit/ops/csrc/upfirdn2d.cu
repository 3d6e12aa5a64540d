// upfirdn2d on CUDA: one thread per output sample, using the per-sample code of resample.h.
#include "cuda_common.cuh"
#include "resample.h"

namespace videdit {
namespace {

template <typename T, typename Acc>
__global__ void upfirdn2d_kernel(Upfirdn<Acc> s, const T* __restrict__ x, T* __restrict__ y, long long total,
                                 int out_h, int out_w) {
  const long long out_plane = static_cast<long long>(out_h) * out_w;
  const long long in_plane = static_cast<long long>(s.in_h) * s.in_w;
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long plane = i / out_plane;
    const int rest = static_cast<int>(i - plane * out_plane);
    y[i] = static_cast<T>(upfirdn_sample<T, Acc>(s, x + plane * in_plane, Acc(0), rest / out_w, rest % out_w));
  }
}

}  // namespace

at::Tensor upfirdn2d_cuda(at::Tensor x, at::Tensor f, int upx, int upy, int downx, int downy, int padx0,
                             int pady0, int out_h, int out_w) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), "x must be a contiguous CUDA NCHW tensor");
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    check_acc_tensor<Acc>(f, "filter");
    const auto s = make_upfirdn<Acc>(f, upx, upy, downx, downy, padx0, pady0, static_cast<int>(x.size(2)),
                                     static_cast<int>(x.size(3)));
    upfirdn2d_kernel<scalar_t, Acc><<<grid_for(y.numel()), kThreads, 0, current_stream()>>>(
        s, x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), y.numel(), out_h, out_w);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

}  // namespace videdit
