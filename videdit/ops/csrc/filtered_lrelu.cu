// Fused filtered_lrelu on CUDA, forward and backward.
//
// One block per output tile of one plane: its threads first fill the tile's intermediate samples
// (upsampled + activated, or in the backward pass the transposed-downsampled gradient times the
// activation's derivative) in shared memory, then compute the tile's outputs from it. The
// per-sample code is resample.h's, which the CPU extension also runs in the tests.
#include "cuda_common.cuh"
#include "resample.h"

namespace videdit {
namespace {

constexpr int kMaxTile = 32;
constexpr size_t kSharedBytes = 40 * 1024;

template <typename T, typename Acc>
__global__ void fused_tiles_kernel(FusedTiles<Acc> p, const T* __restrict__ in, const Acc* __restrict__ in_bias,
                                   const T* __restrict__ x, const Acc* __restrict__ x_bias, T* __restrict__ out,
                                   long long planes, int channels, long long in_plane, long long x_plane) {
  extern __shared__ __align__(sizeof(double)) unsigned char shared_bytes[];
  Acc* mid = reinterpret_cast<Acc*>(shared_bytes);
  const int oy0 = blockIdx.y * p.tile_h;
  const int ox0 = blockIdx.x * p.tile_w;
  const int span = p.span_h * p.span_w;
  const long long out_plane = static_cast<long long>(p.out_h) * p.out_w;
  for (long long plane = blockIdx.z; plane < planes; plane += gridDim.z) {
    const Acc ib = in_bias ? in_bias[plane % channels] : Acc(0);
    const Acc xb = x_bias ? x_bias[plane % channels] : Acc(0);
    const T* x_plane_ptr = x ? x + plane * x_plane : nullptr;
    for (int i = threadIdx.x; i < span; i += blockDim.x) {
      mid[i] = fused_tile_mid<T, Acc>(p, in + plane * in_plane, ib, x_plane_ptr, xb, oy0, ox0, i);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < p.tile_h * p.tile_w; i += blockDim.x) {
      const int ly = i / p.tile_w;
      const int lx = i % p.tile_w;
      if (oy0 + ly < p.out_h && ox0 + lx < p.out_w) {
        out[plane * out_plane + static_cast<long long>(oy0 + ly) * p.out_w + ox0 + lx] =
            static_cast<T>(fused_tile_out<Acc>(p, mid, ly, lx));
      }
    }
    __syncthreads();  // the next plane reuses the shared tile
  }
}

// Largest square tile (<= kMaxTile) whose intermediate samples fit in shared memory.
template <typename Acc>
int pick_tile(const Upfirdn<Acc>& b) {
  for (int tile = kMaxTile; tile > 1; tile /= 2) {
    const size_t span_h = static_cast<size_t>((tile - 1) * b.downy + b.taps_y);
    const size_t span_w = static_cast<size_t>((tile - 1) * b.downx + b.taps_x);
    if (span_h * span_w * sizeof(Acc) <= kSharedBytes) return tile;
  }
  return 1;
}

template <typename T, typename Acc>
void launch(const FusedTiles<Acc>& p, const T* in, const Acc* in_bias, const T* x, const Acc* x_bias, T* out,
            long long planes, int channels, long long in_plane, long long x_plane) {
  const size_t shared = static_cast<size_t>(p.span_h) * p.span_w * sizeof(Acc);
  TORCH_CHECK(shared <= 48 * 1024, "filtered_lrelu_cuda: the filters are too large for one tile");
  const dim3 grid((p.out_w + p.tile_w - 1) / p.tile_w, (p.out_h + p.tile_h - 1) / p.tile_h,
                  static_cast<unsigned int>(std::min<long long>(planes, 65535)));
  TORCH_CHECK(grid.y <= 65535, "filtered_lrelu_cuda: image too tall");
  fused_tiles_kernel<T, Acc><<<grid, kThreads, shared, current_stream()>>>(
      p, in, in_bias, x, x_bias, out, planes, channels, in_plane, x_plane);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_fused_inputs(const at::Tensor& x, const at::Tensor& b) {
  TORCH_CHECK(x.is_cuda() && x.dim() == 4 && x.is_contiguous(), "x must be a contiguous CUDA NCHW tensor");
  TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(1), "b must be [C]");
}

}  // namespace

at::Tensor filtered_lrelu_cuda(at::Tensor x, at::Tensor b, at::Tensor fu, at::Tensor fd, int up,
                                  int down, int padx0, int pady0, int mid_h, int mid_w, int out_h, int out_w,
                                  double gain, double slope, double clamp) {
  check_fused_inputs(x, b);
  const c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  if (y.numel() == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "filtered_lrelu_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    check_acc_tensor<Acc>(b, "b");
    check_acc_tensor<Acc>(fu, "fu");
    check_acc_tensor<Acc>(fd, "fd");
    const int in_h = static_cast<int>(x.size(2)), in_w = static_cast<int>(x.size(3));
    const auto a = make_upfirdn<Acc>(fu, up, up, 1, 1, padx0, pady0, in_h, in_w);
    const auto s_b = make_upfirdn<Acc>(fd, 1, 1, down, down, 0, 0, mid_h, mid_w);
    const Lrelu<Acc> act{static_cast<Acc>(gain), static_cast<Acc>(slope), static_cast<Acc>(clamp)};
    const int tile = pick_tile(s_b);
    const auto p = make_fused_tiles<Acc>(a, s_b, a, act, false, mid_h, mid_w, out_h, out_w, tile, tile);
    launch<scalar_t, Acc>(p, x.data_ptr<scalar_t>(), b.data_ptr<Acc>(), nullptr, nullptr, y.data_ptr<scalar_t>(),
                          x.size(0) * x.size(1), static_cast<int>(x.size(1)), static_cast<long long>(in_h) * in_w, 0);
  });
  return y;
}

at::Tensor filtered_lrelu_backward_cuda(at::Tensor dy, at::Tensor x, at::Tensor b, at::Tensor fu,
                                           at::Tensor fd, at::Tensor fu_t, at::Tensor fd_t, int up, int down,
                                           int padx0, int pady0, int mid_h, int mid_w, double gain, double slope,
                                           double clamp) {
  check_fused_inputs(x, b);
  TORCH_CHECK(dy.is_cuda() && dy.is_contiguous() && dy.scalar_type() == x.scalar_type(),
              "dy must be contiguous with x's dtype");
  const c10::cuda::CUDAGuard guard(x.device());
  auto dx = at::empty_like(x);
  if (dx.numel() == 0) return dx;
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "filtered_lrelu_backward_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    for (const auto* t : {&b, &fu, &fd, &fu_t, &fd_t}) check_acc_tensor<Acc>(*t, "b and filters");
    const int in_h = static_cast<int>(x.size(2)), in_w = static_cast<int>(x.size(3));
    const int out_h = static_cast<int>(dy.size(2)), out_w = static_cast<int>(dy.size(3));
    const auto a_fwd = make_upfirdn<Acc>(fu, up, up, 1, 1, padx0, pady0, in_h, in_w);
    // Transposed stages: (up U, down D, pad P, taps T) -> (up D, down U, pad T - 1 - P, flipped taps).
    const auto a_t = make_upfirdn<Acc>(fd_t, down, down, 1, 1, filter_taps_x(fd) - 1, filter_taps_y(fd) - 1,
                                       out_h, out_w);
    const auto b_t = make_upfirdn<Acc>(fu_t, 1, 1, up, up, filter_taps_x(fu) - 1 - padx0,
                                       filter_taps_y(fu) - 1 - pady0, mid_h, mid_w);
    const Lrelu<Acc> act{static_cast<Acc>(gain), static_cast<Acc>(slope), static_cast<Acc>(clamp)};
    const int tile = pick_tile(b_t);
    const auto p = make_fused_tiles<Acc>(a_t, b_t, a_fwd, act, true, mid_h, mid_w, in_h, in_w, tile, tile);
    launch<scalar_t, Acc>(p, dy.data_ptr<scalar_t>(), nullptr, x.data_ptr<scalar_t>(), b.data_ptr<Acc>(),
                          dx.data_ptr<scalar_t>(), x.size(0) * x.size(1), static_cast<int>(x.size(1)),
                          static_cast<long long>(out_h) * out_w, static_cast<long long>(in_h) * in_w);
  });
  return dx;
}

}  // namespace videdit
