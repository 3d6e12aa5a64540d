// bias_act on CUDA: elementwise forward and backward over x viewed as [outer, C, inner].
#include "cuda_common.cuh"
#include "resample.h"

namespace videdit {
namespace {

struct BiasActArgs {
  int act;
  int channels;  // 0: no bias
  long long inner;
  long long total;
};

template <typename T, typename Acc>
__global__ void bias_act_forward_kernel(BiasActArgs a, const T* __restrict__ x, const Acc* __restrict__ b,
                                        T* __restrict__ y, Acc alpha, Acc gain, Acc clamp) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < a.total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    Acc z = static_cast<Acc>(x[i]);
    if (a.channels > 0) z += b[(i / a.inner) % a.channels];
    y[i] = static_cast<T>(bias_act_value<Acc>(a.act, z, alpha, gain, clamp));
  }
}

template <typename T, typename Acc>
__global__ void bias_act_backward_kernel(BiasActArgs a, const T* __restrict__ dy, const T* __restrict__ x,
                                         const Acc* __restrict__ b, T* __restrict__ dx, Acc alpha, Acc gain,
                                         Acc clamp) {
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < a.total;
       i += static_cast<long long>(gridDim.x) * blockDim.x) {
    Acc z = static_cast<Acc>(x[i]);
    if (a.channels > 0) z += b[(i / a.inner) % a.channels];
    dx[i] = static_cast<T>(static_cast<Acc>(dy[i]) * bias_act_grad_factor<Acc>(a.act, z, alpha, gain, clamp));
  }
}

BiasActArgs make_args(const at::Tensor& x, const at::Tensor& b, int act, long long inner) {
  TORCH_CHECK(x.is_cuda() && x.is_contiguous(), "x must be a contiguous CUDA tensor");
  TORCH_CHECK(inner > 0, "inner size must be positive");
  return BiasActArgs{act, static_cast<int>(b.numel()), inner, x.numel()};
}

}  // namespace

at::Tensor bias_act_cuda(at::Tensor x, at::Tensor b, int act, double alpha, double gain, double clamp,
                            long long inner) {
  const c10::cuda::CUDAGuard guard(x.device());
  const BiasActArgs args = make_args(x, b, act, inner);
  auto y = at::empty_like(x);
  if (x.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    check_acc_tensor<Acc>(b, "b");
    bias_act_forward_kernel<scalar_t, Acc><<<grid_for(x.numel()), kThreads, 0, current_stream()>>>(
        args, x.data_ptr<scalar_t>(), b.data_ptr<Acc>(), y.data_ptr<scalar_t>(), static_cast<Acc>(alpha),
        static_cast<Acc>(gain), static_cast<Acc>(clamp));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor bias_act_backward_cuda(at::Tensor dy, at::Tensor x, at::Tensor b, int act, double alpha,
                                     double gain, double clamp, long long inner) {
  const c10::cuda::CUDAGuard guard(x.device());
  const BiasActArgs args = make_args(x, b, act, inner);
  TORCH_CHECK(dy.is_contiguous() && dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(),
              "dy must be contiguous and match x");
  auto dx = at::empty_like(x);
  if (x.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_backward_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    check_acc_tensor<Acc>(b, "b");
    bias_act_backward_kernel<scalar_t, Acc><<<grid_for(x.numel()), kThreads, 0, current_stream()>>>(
        args, dy.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), b.data_ptr<Acc>(), dx.data_ptr<scalar_t>(),
        static_cast<Acc>(alpha), static_cast<Acc>(gain), static_cast<Acc>(clamp));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace videdit
