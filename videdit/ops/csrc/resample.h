// Index arithmetic and per-sample math shared by the CPU and the CUDA kernels.
//
// Everything here is plain C++ that compiles both with g++ (CPU extension) and with nvcc (device
// code), so the CPU extension can run the exact per-sample code of the CUDA kernels in tests.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define VIDEDIT_HD __host__ __device__ __forceinline__
#else
#define VIDEDIT_HD inline
#endif

namespace videdit {

// upfirdn along one axis: out[o] = sum_t g[t] * s[o * down + t - pad0], where s is the input with
// up - 1 zeros inserted after every sample (s[up * i] = in[i]) and g are correlation taps.
// Only taps t0, t0 + up, t0 + 2 up, ... land on real samples; they read in[i0], in[i0 + 1], ...
struct TapRange {
  int t0;     // first filter tap that lands on a real input sample
  int i0;     // input sample read by that tap
  int count;  // number of (tap, sample) pairs, already clipped to the input
};

VIDEDIT_HD int floor_mod(int a, int m) {
  int r = a % m;
  return r < 0 ? r + m : r;
}

VIDEDIT_HD TapRange tap_range(int o, int up, int down, int pad0, int taps, int n_in) {
  const int base = o * down - pad0;  // stuffed position read by tap 0
  TapRange r;
  r.t0 = floor_mod(-base, up);
  r.i0 = (base + r.t0) / up;  // exact: base + t0 is a multiple of up
  r.count = r.t0 < taps ? (taps - 1 - r.t0) / up + 1 : 0;
  if (r.i0 < 0) {  // leading taps fall into the zero padding
    const int skip = -r.i0;
    r.t0 += skip * up;
    r.i0 = 0;
    r.count -= skip;
  }
  if (r.i0 + r.count > n_in) r.count = n_in - r.i0;
  if (r.count < 0) r.count = 0;
  return r;
}

// One 2-D upfirdn: per-axis factors, leading padding, and either separable taps (fx, fy) or a
// full [taps_y, taps_x] filter f2. Filters are correlation taps with the gain already applied.
template <typename Acc>
struct Upfirdn {
  int upx, upy, downx, downy;
  int padx0, pady0;
  int taps_x, taps_y;
  int in_h, in_w;
  bool separable;
  const Acc* fx;
  const Acc* fy;
  const Acc* f2;
};

// Output sample (oy, ox) of an upfirdn of one plane; `bias` is added to every real input sample
// (never to the zero padding or the inserted zeros).
template <typename T, typename Acc>
VIDEDIT_HD Acc upfirdn_sample(const Upfirdn<Acc>& s, const T* plane, Acc bias, int oy, int ox) {
  const TapRange ry = tap_range(oy, s.upy, s.downy, s.pady0, s.taps_y, s.in_h);
  const TapRange rx = tap_range(ox, s.upx, s.downx, s.padx0, s.taps_x, s.in_w);
  Acc acc = 0;
  for (int ky = 0; ky < ry.count; ++ky) {
    const int ty = ry.t0 + s.upy * ky;
    const T* row = plane + static_cast<long long>(ry.i0 + ky) * s.in_w + rx.i0;
    const Acc* taps = s.separable ? s.fx : s.f2 + static_cast<long long>(ty) * s.taps_x;
    Acc row_acc = 0;
    for (int kx = 0; kx < rx.count; ++kx) {
      row_acc += taps[rx.t0 + s.upx * kx] * (static_cast<Acc>(row[kx]) + bias);
    }
    acc += s.separable ? s.fy[ty] * row_acc : row_acc;
  }
  return acc;
}

// Leaky ReLU of filtered_lrelu: lrelu(u, slope) * gain, clamped to +-clamp when clamp >= 0.
template <typename Acc>
struct Lrelu {
  Acc gain;
  Acc slope;
  Acc clamp;

  VIDEDIT_HD Acc value(Acc u) const {
    Acc v = (u > 0 ? u : u * slope) * gain;
    if (clamp >= 0) v = v > clamp ? clamp : (v < -clamp ? -clamp : v);
    return v;
  }
  // d value / d u; zero where the clamp is active (same convention as torch.clamp's gradient).
  VIDEDIT_HD Acc derivative(Acc u) const {
    const Acc d = u > 0 ? gain : gain * slope;
    if (clamp >= 0) {
      const Acc v = (u > 0 ? u : u * slope) * gain;
      if (v > clamp || v < -clamp) return 0;
    }
    return d;
  }
};

// Fused filtered_lrelu as tiles: stage A (upsampling, down = 1) fills a tile of the intermediate
// image, a pointwise step runs on it, stage B (downsampling, up = 1) reads the tile.
//   forward:  in = x, bias = b, pointwise = Lrelu::value, A = fu, B = fd
//   backward: in = dy, bias = 0, A = transposed fd, B = transposed fu,
//             pointwise = multiply by Lrelu::derivative(forward stage A of x + b, recomputed)
template <typename Acc>
struct FusedTiles {
  Upfirdn<Acc> a;
  Upfirdn<Acc> b;
  Upfirdn<Acc> a_forward;  // backward only
  Lrelu<Acc> act;
  bool backward;
  int mid_h, mid_w;
  int out_h, out_w;
  int tile_h, tile_w;  // output samples per tile
  int span_h, span_w;  // intermediate samples per tile: (tile - 1) * down + taps
};

template <typename Acc>
VIDEDIT_HD FusedTiles<Acc> make_fused_tiles(const Upfirdn<Acc>& a, const Upfirdn<Acc>& b,
                                            const Upfirdn<Acc>& a_forward, const Lrelu<Acc>& act,
                                            bool backward, int mid_h, int mid_w, int out_h, int out_w,
                                            int tile_h, int tile_w) {
  FusedTiles<Acc> p;
  p.a = a;
  p.b = b;
  p.a_forward = a_forward;
  p.act = act;
  p.backward = backward;
  p.mid_h = mid_h;
  p.mid_w = mid_w;
  p.out_h = out_h;
  p.out_w = out_w;
  p.tile_h = tile_h;
  p.tile_w = tile_w;
  p.span_h = (tile_h - 1) * b.downy + b.taps_y;
  p.span_w = (tile_w - 1) * b.downx + b.taps_x;
  return p;
}

// Intermediate value number `i` (row-major in span_h x span_w) of the tile whose first output is
// (oy0, ox0). Positions outside the intermediate image are zero (stage B's padding).
template <typename T, typename Acc>
VIDEDIT_HD Acc fused_tile_mid(const FusedTiles<Acc>& p, const T* in_plane, Acc in_bias, const T* x_plane,
                              Acc x_bias, int oy0, int ox0, int i) {
  const int my = oy0 * p.b.downy - p.b.pady0 + i / p.span_w;
  const int mx = ox0 * p.b.downx - p.b.padx0 + i % p.span_w;
  if (my < 0 || my >= p.mid_h || mx < 0 || mx >= p.mid_w) return 0;
  const Acc m = upfirdn_sample<T, Acc>(p.a, in_plane, in_bias, my, mx);
  if (!p.backward) return p.act.value(m);
  const Acc u = upfirdn_sample<T, Acc>(p.a_forward, x_plane, x_bias, my, mx);
  return m * p.act.derivative(u);
}

// Output value at (ly, lx) inside the tile, read from the tile's intermediate values.
template <typename Acc>
VIDEDIT_HD Acc fused_tile_out(const FusedTiles<Acc>& p, const Acc* mid, int ly, int lx) {
  const Upfirdn<Acc>& s = p.b;
  const Acc* base = mid + static_cast<long long>(ly * s.downy) * p.span_w + lx * s.downx;
  Acc acc = 0;
  for (int ty = 0; ty < s.taps_y; ++ty) {
    const Acc* row = base + static_cast<long long>(ty) * p.span_w;
    const Acc* taps = s.separable ? s.fx : s.f2 + static_cast<long long>(ty) * s.taps_x;
    Acc row_acc = 0;
    for (int tx = 0; tx < s.taps_x; ++tx) row_acc += taps[tx] * row[tx];
    acc += s.separable ? s.fy[ty] * row_acc : row_acc;
  }
  return acc;
}

// bias_act activations, numbered as in native.py's ACTIVATION_IDS.
enum Activation { kLinear = 0, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

template <typename Acc>
VIDEDIT_HD Acc activation_value(int act, Acc z, Acc alpha) {
  switch (act) {
    case kRelu: return z > 0 ? z : Acc(0);
    case kLrelu: return z > 0 ? z : z * alpha;
    case kTanh: return tanh(z);
    case kSigmoid: return Acc(1) / (Acc(1) + exp(-z));
    case kElu: return z > 0 ? z : exp(z) - Acc(1);
    case kSelu: {
      const Acc scale = Acc(1.0507009873554804934193349852946);
      const Acc selu_alpha = Acc(1.6732632423543772848170429916717);
      return z > 0 ? scale * z : scale * selu_alpha * (exp(z) - Acc(1));
    }
    case kSoftplus: return z > Acc(20) ? z : log1p(exp(z));  // torch's threshold 20
    case kSwish: return z / (Acc(1) + exp(-z));
    default: return z;
  }
}

template <typename Acc>
VIDEDIT_HD Acc activation_derivative(int act, Acc z, Acc alpha) {
  switch (act) {
    case kRelu: return z > 0 ? Acc(1) : Acc(0);
    case kLrelu: return z > 0 ? Acc(1) : alpha;
    case kTanh: {
      const Acc t = tanh(z);
      return Acc(1) - t * t;
    }
    case kSigmoid: {
      const Acc s = Acc(1) / (Acc(1) + exp(-z));
      return s * (Acc(1) - s);
    }
    case kElu: return z > 0 ? Acc(1) : exp(z);
    case kSelu: {
      const Acc scale = Acc(1.0507009873554804934193349852946);
      const Acc selu_alpha = Acc(1.6732632423543772848170429916717);
      return z > 0 ? scale : scale * selu_alpha * exp(z);
    }
    case kSoftplus: return z > Acc(20) ? Acc(1) : Acc(1) / (Acc(1) + exp(-z));
    case kSwish: {
      const Acc s = Acc(1) / (Acc(1) + exp(-z));
      return s + z * s * (Acc(1) - s);
    }
    default: return Acc(1);
  }
}

// bias_act on one element: act(z) * gain, clamped when clamp >= 0; and its gradient factor.
template <typename Acc>
VIDEDIT_HD Acc bias_act_value(int act, Acc z, Acc alpha, Acc gain, Acc clamp) {
  Acc y = activation_value<Acc>(act, z, alpha) * gain;
  if (clamp >= 0) y = y > clamp ? clamp : (y < -clamp ? -clamp : y);
  return y;
}

template <typename Acc>
VIDEDIT_HD Acc bias_act_grad_factor(int act, Acc z, Acc alpha, Acc gain, Acc clamp) {
  if (clamp >= 0) {
    const Acc y = activation_value<Acc>(act, z, alpha) * gain;
    if (y > clamp || y < -clamp) return 0;
  }
  return activation_derivative<Acc>(act, z, alpha) * gain;
}

}  // namespace videdit
