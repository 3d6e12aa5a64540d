// Fused filtered_lrelu for CPU tensors (OpenMP), forward and backward.
//
// One work item is a band of output rows of one (n, c) plane. It sweeps down the band and keeps
// only the intermediate (upsampled, activated) rows that the downsampling filter still needs in a
// ring buffer of taps_y rows, so the large intermediate image never exists in memory.
//
// Separable filters run as a vertical pass (a weighted sum of whole rows) followed by a horizontal
// polyphase pass; 2-D filters as one weighted sum over every (row, tap) pair. Passes are laid out
// so that every filter tap reads a contiguous run of a row, and each block of outputs is summed
// over all its taps in registers (weighted_sum): one load per multiply-add, one store per output.
//
// The module also exposes `emulate_*` entry points that run the per-sample code of the CUDA
// kernels (resample.h) on the CPU, so the tests can check that code without a GPU.
#include <torch/extension.h>

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "params.h"
#include "resample.h"

namespace videdit {
namespace {

// A block of lanes that GCC/Clang keep in registers (64 bytes: one AVX-512 register, two AVX2 ones).
template <typename Acc>
struct Lanes {
  static constexpr int kCount = 64 / sizeof(Acc);
  typedef Acc Vec __attribute__((vector_size(64)));
  static Vec load(const Acc* p) {
    Vec v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  static void store(Acc* p, const Vec& v) { __builtin_memcpy(p, &v, sizeof(v)); }
  static Vec splat(Acc a) { return Vec{} + a; }
};

// out[o] = sum_k w[k] * (src[k][o] + bias), o < n: every block of 4 registers summed over all k. kBias false:
// sum_k w[k] * src[k][o], without the add per tap (the bias-free sums are most of the work).
template <typename Acc, bool kBias>
void weighted_sum_of(const Acc* const* src, const Acc* w, int m, int n, Acc* __restrict__ out, Acc bias) {
  using L = Lanes<Acc>;
  using Vec = typename L::Vec;
  constexpr int V = L::kCount;
  int o = 0;
  const Vec vb = L::splat(bias);
  auto term = [&](const Acc* s) {
    if constexpr (kBias) return L::load(s) + vb;
    else return L::load(s);
  };
  for (; o + 4 * V <= n; o += 4 * V) {
    Vec a0{}, a1{}, a2{}, a3{};
    for (int k = 0; k < m; ++k) {
      const Vec g = L::splat(w[k]);
      const Acc* s = src[k] + o;
      a0 += g * term(s);
      a1 += g * term(s + V);
      a2 += g * term(s + 2 * V);
      a3 += g * term(s + 3 * V);
    }
    L::store(out + o, a0);
    L::store(out + o + V, a1);
    L::store(out + o + 2 * V, a2);
    L::store(out + o + 3 * V, a3);
  }
  for (; o + V <= n; o += V) {
    Vec a{};
    for (int k = 0; k < m; ++k) a += L::splat(w[k]) * term(src[k] + o);
    L::store(out + o, a);
  }
  if (o < n && n >= V) {  // the last register ends at n: it recomputes a few outputs, to the same values
    o = n - V;
    Vec a{};
    for (int k = 0; k < m; ++k) a += L::splat(w[k]) * term(src[k] + o);
    L::store(out + o, a);
    o = n;
  }
  for (; o < n; ++o) {
    Acc a = 0;
    for (int k = 0; k < m; ++k) {
      if constexpr (kBias) a += w[k] * (src[k][o] + bias);
      else a += w[k] * src[k][o];
    }
    out[o] = a;
  }
}

template <typename Acc>
void weighted_sum(const Acc* const* src, const Acc* w, int m, int n, Acc* __restrict__ out, Acc bias) {
  weighted_sum_of<Acc, true>(src, w, m, n, out, bias);
}

template <typename Acc>
void weighted_sum_nobias(const Acc* const* src, const Acc* w, int m, int n, Acc* __restrict__ out) {
  weighted_sum_of<Acc, false>(src, w, m, n, out, Acc(0));
}

// p[i] = act.value(p[i]), a register at a time (the scalar form's branches do not vectorise).
template <typename Acc>
void activate_row(const Lrelu<Acc>& act, Acc* p, int n) {
  using L = Lanes<Acc>;
  using Vec = typename L::Vec;
  constexpr int V = L::kCount;
  const Vec slope = L::splat(act.slope), gain = L::splat(act.gain), zero = L::splat(Acc(0));
  const Vec hi = L::splat(act.clamp), lo = L::splat(-act.clamp);
  const bool clamp = act.clamp >= 0;
  int i = 0;
  for (; i + V <= n; i += V) {
    const Vec u = L::load(p + i);
    Vec v = (u > zero ? u : u * slope) * gain;
    if (clamp) {
      v = v > hi ? hi : v;
      v = v < lo ? lo : v;
    }
    L::store(p + i, v);
  }
  for (; i < n; ++i) p[i] = act.value(p[i]);
}

// m[i] *= d value / d u at u[i], a register at a time (the backward's pointwise step).
template <typename Acc>
void multiply_derivative(const Lrelu<Acc>& act, const Acc* u, Acc* m, int n) {
  using L = Lanes<Acc>;
  using Vec = typename L::Vec;
  constexpr int V = L::kCount;
  const Vec slope_gain = L::splat(act.gain * act.slope), gain = L::splat(act.gain), zero = L::splat(Acc(0));
  const Vec hi = L::splat(act.clamp), lo = L::splat(-act.clamp), slope = L::splat(act.slope);
  const bool clamp = act.clamp >= 0;
  int i = 0;
  for (; i + V <= n; i += V) {
    const Vec x = L::load(u + i);
    const auto positive = x > zero;
    Vec d = positive ? gain : slope_gain;
    if (clamp) {
      const Vec v = (positive ? x : x * slope) * gain;
      d = (v > hi) | (v < lo) ? zero : d;
    }
    L::store(m + i, L::load(m + i) * d);
  }
  for (; i < n; ++i) m[i] *= act.derivative(u[i]);
}

// A stage as the row engine sees it: up and down apply to both axes, filters are correlation taps.
template <typename Acc>
struct Stage {
  int up, down, padx0, pady0, taps_x, taps_y;
  bool separable;
  const Acc* fx;  // separable: taps along x and along y (the same 1-D filter)
  const Acc* fy;
  const Acc* f2;  // 2-D: [taps_y][taps_x]

  const Acc* row_taps(int ty) const { return separable ? fx : f2 + static_cast<long long>(ty) * taps_x; }
};

template <typename Acc>
Stage<Acc> make_stage(const torch::Tensor& f, int up, int down, int padx0, int pady0) {
  Stage<Acc> s;
  s.up = up;
  s.down = down;
  s.padx0 = padx0;
  s.pady0 = pady0;
  s.separable = f.dim() == 1;
  s.taps_x = filter_taps_x(f);
  s.taps_y = filter_taps_y(f);
  s.fx = s.fy = s.f2 = f.data_ptr<Acc>();
  return s;
}

// Horizontal upsampling of a row in polyphase form. The outputs of phase r (columns r, r + up, ...)
// use the same taps and read consecutive input samples, so each tap is one contiguous
// multiply-add over the row (which the compiler vectorises). The input row is stored with zero
// margins so no sample needs a bounds check.
struct UpPhase {
  int first_tap, first_input, taps, outputs;
};

struct UpRowPlan {
  int up, in_w, out_w;
  int margin;    // zero samples stored before input sample 0
  int padded_w;  // margin + in_w + zero samples after
  std::vector<UpPhase> phases;
};

UpRowPlan make_up_row_plan(int up, int pad0, int taps, int in_w, int out_w) {
  UpRowPlan p{up, in_w, out_w, 0, in_w, {}};
  int lo = 0, hi = in_w - 1;
  for (int r = 0; r < std::min(up, out_w); ++r) {
    const int base = r - pad0;
    UpPhase ph;
    ph.first_tap = floor_mod(-base, up);
    ph.first_input = (base + ph.first_tap) / up;
    ph.taps = ph.first_tap < taps ? (taps - 1 - ph.first_tap) / up + 1 : 0;
    ph.outputs = (out_w - r + up - 1) / up;
    if (ph.taps > 0) {
      lo = std::min(lo, ph.first_input);
      hi = std::max(hi, ph.first_input + ph.outputs - 1 + ph.taps - 1);
    }
    p.phases.push_back(ph);
  }
  p.margin = -lo;
  p.padded_w = p.margin + hi + 1;
  return p;
}

// out[c] += sum_t taps[t] * s[c + t - pad0] (s: input with up - 1 zeros after each sample).
template <typename Acc>
void upsample_row(const UpRowPlan& p, const Acc* __restrict__ padded, const Acc* taps, Acc* __restrict__ out,
                  Acc* __restrict__ tmp) {
  const Acc* in = padded + p.margin;
  for (size_t r = 0; r < p.phases.size(); ++r) {
    const UpPhase& ph = p.phases[r];
    if (ph.taps == 0) continue;
    constexpr int kMaxTaps = 64;
    if (ph.taps <= kMaxTaps) {
      const Acc* src[kMaxTaps];
      Acc w[kMaxTaps];
      for (int k = 0; k < ph.taps; ++k) {
        src[k] = in + ph.first_input + k;
        w[k] = taps[ph.first_tap + p.up * k];
      }
      weighted_sum_nobias<Acc>(src, w, ph.taps, ph.outputs, tmp);
    } else {
      std::fill(tmp, tmp + ph.outputs, Acc(0));
      for (int k = 0; k < ph.taps; ++k) {
        const Acc g = taps[ph.first_tap + p.up * k];
        const Acc* __restrict__ src = in + ph.first_input + k;
        for (int j = 0; j < ph.outputs; ++j) tmp[j] += g * src[j];
      }
    }
    Acc* dst = out + r;
    for (int j = 0; j < ph.outputs; ++j) dst[p.up * j] += tmp[j];
  }
}

// Horizontal downsampling of a row: out[o] = sum_t taps[t] * row[o * down + t - pad0]. The row is
// stored split into its `down` phases (with zero margins), so tap t reads phase `phase[t]` at
// o + offset[t]: again one contiguous multiply-add per tap.
struct DownRowPlan {
  int down, in_w, out_w;
  int margin;     // zero samples before sample 0, a multiple of down
  int phase_len;  // samples per phase
  std::vector<int> phase, offset;

  int row_size() const { return down * phase_len; }
};

DownRowPlan make_down_row_plan(int down, int pad0, int taps, int in_w, int out_w) {
  DownRowPlan p{down, in_w, out_w, down * ((std::max(0, pad0) + down - 1) / down), 0, {}, {}};
  int longest = 0;
  for (int t = 0; t < taps; ++t) {
    const int s = t - pad0 + p.margin;
    p.phase.push_back(s % down);
    p.offset.push_back(s / down);
    longest = std::max(longest, s / down + out_w);
  }
  p.phase_len = std::max(longest, (p.margin + in_w + down - 1) / down);
  return p;
}

// Splits a row into the phases of `p` (everything outside the row is zero).
template <typename Acc>
void split_phases(const DownRowPlan& p, const Acc* row, Acc* dst) {
  std::fill(dst, dst + p.row_size(), Acc(0));
  // Sample c lands in phase (margin + c) % down at index (margin + c) / down; margin is a multiple of down.
  const int base = p.margin / p.down;
  if (p.down == 2) {
    Acc* __restrict__ even = dst + base;
    Acc* __restrict__ odd = dst + p.phase_len + base;
    const int pairs = p.in_w / 2;
    for (int i = 0; i < pairs; ++i) {
      even[i] = row[2 * i];
      odd[i] = row[2 * i + 1];
    }
    if (p.in_w % 2) even[pairs] = row[p.in_w - 1];
    return;
  }
  for (int phase = 0; phase < p.down; ++phase) {
    Acc* __restrict__ out = dst + phase * p.phase_len + base;
    for (int c = phase, i = 0; c < p.in_w; c += p.down, ++i) out[i] = row[c];
  }
}


// Stage A (up, down = 1) applied to one plane plus a constant bias, one output row at a time.
template <typename T, typename Acc>
struct UpRows {
  const Stage<Acc>& s;
  const UpRowPlan& plan;
  int in_h, in_w;
  std::vector<Acc> padded, tmp;

  UpRows(const Stage<Acc>& stage, const UpRowPlan& row_plan, int h, int w)
      : s(stage), plan(row_plan), in_h(h), in_w(w), padded(row_plan.padded_w), tmp(row_plan.out_w) {}

  void row(const T* plane, Acc bias, int r, Acc* out) {
    const TapRange ry = tap_range(r, s.up, 1, s.pady0, s.taps_y, in_h);
    std::fill(out, out + plan.out_w, Acc(0));
    Acc* data = padded.data() + plan.margin;  // the margins stay zero
    if (s.separable) {
      if (ry.count == 0) return;
      constexpr int kMaxRows = 64;
      if (std::is_same<T, Acc>::value && ry.count <= kMaxRows) {
        const Acc* src[kMaxRows];
        Acc w[kMaxRows];
        for (int k = 0; k < ry.count; ++k) {
          src[k] = reinterpret_cast<const Acc*>(plane) + static_cast<long long>(ry.i0 + k) * in_w;
          w[k] = s.fy[ry.t0 + s.up * k];
        }
        weighted_sum<Acc>(src, w, ry.count, in_w, data, bias);
      } else {
        std::fill(data, data + in_w, Acc(0));
        for (int k = 0; k < ry.count; ++k) {
          const Acc g = s.fy[ry.t0 + s.up * k];
          const T* __restrict__ src = plane + static_cast<long long>(ry.i0 + k) * in_w;
          for (int ix = 0; ix < in_w; ++ix) data[ix] += g * (static_cast<Acc>(src[ix]) + bias);
        }
      }
      upsample_row(plan, padded.data(), s.fx, out, tmp.data());
      return;
    }
    for (int k = 0; k < ry.count; ++k) {
      const T* src = plane + static_cast<long long>(ry.i0 + k) * in_w;
      for (int ix = 0; ix < in_w; ++ix) data[ix] = static_cast<Acc>(src[ix]) + bias;
      upsample_row(plan, padded.data(), s.row_taps(ry.t0 + s.up * k), out, tmp.data());
    }
  }
};

struct PlaneShape {
  int in_h, in_w, mid_h, mid_w, out_h, out_w;
};

// Runs stage A -> pointwise -> stage B over output rows [row_begin, row_end) of one plane.
// `pointwise(mid_row_index, row)` transforms each intermediate row in place.
template <typename T, typename Acc, typename Pointwise>
void run_band(const Stage<Acc>& a, const Stage<Acc>& b, const PlaneShape& shape, const UpRowPlan& up_plan,
              const DownRowPlan& down_plan, const T* in_plane, Acc in_bias, int row_begin, int row_end, T* out_plane,
              Pointwise pointwise) {
  const int ring_rows = std::max(b.taps_y, 1);
  const size_t row_size = down_plan.row_size();
  std::vector<Acc> ring(ring_rows * row_size), vertical(row_size), mid_row(shape.mid_w), out_row(shape.out_w);
  std::vector<const Acc*> src(static_cast<size_t>(b.taps_y) * b.taps_x + 1);
  std::vector<Acc> w(src.size());
  UpRows<T, Acc> up_rows(a, up_plan, shape.in_h, shape.in_w);
  int next_row = -1;  // first intermediate row not computed yet

  for (int oy = row_begin; oy < row_end; ++oy) {
    const TapRange ry = tap_range(oy, 1, b.down, b.pady0, b.taps_y, shape.mid_h);
    if (next_row < ry.i0) next_row = ry.i0;  // rows before the window are never needed again
    for (; next_row < ry.i0 + ry.count; ++next_row) {
      up_rows.row(in_plane, in_bias, next_row, mid_row.data());
      pointwise(next_row, mid_row.data());
      split_phases(down_plan, mid_row.data(), ring.data() + (next_row % ring_rows) * row_size);
    }
    int m = 0;
    if (ry.count == 0) {
      std::fill(out_row.begin(), out_row.end(), Acc(0));
    } else if (b.separable) {
      for (int k = 0; k < ry.count; ++k) {
        src[k] = ring.data() + ((ry.i0 + k) % ring_rows) * row_size;
        w[k] = b.fy[ry.t0 + k];
      }
      weighted_sum_nobias<Acc>(src.data(), w.data(), ry.count, static_cast<int>(row_size), vertical.data());
      for (int t = 0; t < b.taps_x; ++t, ++m) {
        src[m] = vertical.data() + down_plan.phase[t] * down_plan.phase_len + down_plan.offset[t];
        w[m] = b.fx[t];
      }
      weighted_sum_nobias<Acc>(src.data(), w.data(), m, shape.out_w, out_row.data());
    } else {
      for (int k = 0; k < ry.count; ++k) {
        const Acc* row = ring.data() + ((ry.i0 + k) % ring_rows) * row_size;
        const Acc* taps = b.row_taps(ry.t0 + k);
        for (int t = 0; t < b.taps_x; ++t, ++m) {
          src[m] = row + down_plan.phase[t] * down_plan.phase_len + down_plan.offset[t];
          w[m] = taps[t];
        }
      }
      weighted_sum_nobias<Acc>(src.data(), w.data(), m, shape.out_w, out_row.data());
    }
    T* dst = out_plane + static_cast<long long>(oy) * shape.out_w;
    for (int ox = 0; ox < shape.out_w; ++ox) dst[ox] = static_cast<T>(out_row[ox]);
  }
}

// ---- Forward fast path: register-blocked sums, activation on the fly, no full-row scatter ----
//
// The row loops above accumulate one tap at a time into a row in memory (a load and a store per
// multiply-add). Here every output block is summed over all its taps in registers (one load per
// multiply-add), the upsampled phases are written straight into the downsampling phases with the
// activation applied, and a filter symmetric top to bottom (StyleGAN3's radial filters) adds its row
// pairs first, halving the 2-D filter's multiplies.

// Whether the 2-D taps are the same read bottom to top (each row equals its mirror row), exactly.
template <typename Acc>
bool rows_symmetric(const Stage<Acc>& s) {
  if (s.separable) return false;
  for (int k = 0; k < s.taps_y / 2; ++k)
    for (int t = 0; t < s.taps_x; ++t)
      if (s.f2[k * s.taps_x + t] != s.f2[(s.taps_y - 1 - k) * s.taps_x + t]) return false;
  return true;
}

// Forward of one band with a separable upsampling filter and up a multiple of down (every
// StyleGAN3 layer): up phase r of an intermediate row lands in down phase r % down, every
// (up / down)-th sample from (r / down) on, so it is written there directly.
template <typename T, typename Acc>
void run_band_forward(const Stage<Acc>& a, const Stage<Acc>& b, bool fold, const PlaneShape& shape,
                      const UpRowPlan& up_plan, const DownRowPlan& down_plan, const Lrelu<Acc>& act,
                      const T* in_plane, Acc in_bias, int row_begin, int row_end, T* out_plane) {
  const int ring_rows = std::max(b.taps_y, 1);
  const size_t row_size = down_plan.row_size();
  const int step = a.up / b.down;  // samples of one up phase are `step` apart in a down phase
  // Zeroed once: only the samples of the row are ever written, so the margins stay zero.
  const size_t phase_stride = static_cast<size_t>(shape.mid_w / std::max(a.up, 1) + 16);
  std::vector<Acc> ring(ring_rows * row_size, Acc(0)), padded(up_plan.padded_w, Acc(0)),
      phase_buf(phase_stride * up_plan.phases.size());
  std::vector<Acc> folded(static_cast<size_t>((b.taps_y + 1) / 2) * row_size), vertical(row_size), out_row(shape.out_w);
  std::vector<const Acc*> src(static_cast<size_t>(std::max(b.taps_y, a.taps_y)) * std::max(b.taps_x, a.taps_x) + 1);
  std::vector<Acc> w(src.size());
  Acc* data = padded.data() + up_plan.margin;
  int next_row = -1;

  auto make_mid_row = [&](int r, Acc* ring_row) {
    const TapRange ry = tap_range(r, a.up, 1, a.pady0, a.taps_y, shape.in_h);
    if (ry.count == 0) {
      std::fill(data, data + shape.in_w, Acc(0));
    } else if constexpr (std::is_same<T, Acc>::value) {
      for (int k = 0; k < ry.count; ++k) {
        src[k] = in_plane + static_cast<long long>(ry.i0 + k) * shape.in_w;
        w[k] = a.fy[ry.t0 + a.up * k];
      }
      weighted_sum<Acc>(src.data(), w.data(), ry.count, shape.in_w, data, in_bias);
    } else {
      std::fill(data, data + shape.in_w, Acc(0));
      for (int k = 0; k < ry.count; ++k) {
        const Acc g = a.fy[ry.t0 + a.up * k];
        const T* s = in_plane + static_cast<long long>(ry.i0 + k) * shape.in_w;
        for (int ix = 0; ix < shape.in_w; ++ix) data[ix] += g * (static_cast<Acc>(s[ix]) + in_bias);
      }
    }
    // Each up phase into its own buffer, activated; then the phases of one down phase interleaved into it.
    const int phases = static_cast<int>(up_plan.phases.size());
    for (int r = 0; r < phases; ++r) {
      const UpPhase& ph = up_plan.phases[r];
      Acc* vals = phase_buf.data() + static_cast<size_t>(r) * phase_stride;
      if (ph.taps == 0) {
        std::fill(vals, vals + ph.outputs, Acc(0));
      } else {
        for (int k = 0; k < ph.taps; ++k) {
          src[k] = padded.data() + up_plan.margin + ph.first_input + k;
          w[k] = a.fx[ph.first_tap + a.up * k];
        }
        weighted_sum_nobias<Acc>(src.data(), w.data(), ph.taps, ph.outputs, vals);
      }
      activate_row<Acc>(act, vals, ph.outputs);
    }
    for (int d = 0; d < std::min(b.down, phases); ++d) {
      Acc* __restrict__ dst = ring_row + d * down_plan.phase_len + 0;
      // Down phase d holds up phases d, d + down, ...: sample j of the q-th of them at step * j + q.
      if (step == 1) {
        const Acc* src0 = phase_buf.data() + static_cast<size_t>(d) * phase_stride;
        std::copy(src0, src0 + up_plan.phases[d].outputs, dst);
      } else if (step == 2 && d + b.down < phases) {
        const Acc* __restrict__ s0 = phase_buf.data() + static_cast<size_t>(d) * phase_stride;
        const Acc* __restrict__ s1 = phase_buf.data() + static_cast<size_t>(d + b.down) * phase_stride;
        const int n0 = up_plan.phases[d].outputs, n1 = up_plan.phases[d + b.down].outputs;
        const int n = std::min(n0, n1);
        for (int j = 0; j < n; ++j) {
          dst[2 * j] = s0[j];
          dst[2 * j + 1] = s1[j];
        }
        for (int j = n; j < n0; ++j) dst[2 * j] = s0[j];
        for (int j = n; j < n1; ++j) dst[2 * j + 1] = s1[j];
      } else {
        for (int q = 0; d + q * b.down < phases; ++q) {
          const int r = d + q * b.down;
          const Acc* sq = phase_buf.data() + static_cast<size_t>(r) * phase_stride;
          for (int j = 0; j < up_plan.phases[r].outputs; ++j) dst[step * j + q] = sq[j];
        }
      }
    }
  };

  for (int oy = row_begin; oy < row_end; ++oy) {
    const TapRange ry = tap_range(oy, 1, b.down, b.pady0, b.taps_y, shape.mid_h);
    if (next_row < ry.i0) next_row = ry.i0;
    for (; next_row < ry.i0 + ry.count; ++next_row) make_mid_row(next_row, ring.data() + (next_row % ring_rows) * row_size);
    auto ring_row = [&](int k) { return ring.data() + ((ry.i0 + k) % ring_rows) * row_size; };
    T* dst_row = out_plane + static_cast<long long>(oy) * shape.out_w;
    Acc* out = std::is_same<T, Acc>::value ? reinterpret_cast<Acc*>(dst_row) : out_row.data();
    int m = 0;
    if (ry.count == 0) {
      std::fill(out, out + shape.out_w, Acc(0));
    } else if (b.separable) {
      for (int k = 0; k < ry.count; ++k) {
        src[k] = ring_row(k);
        w[k] = b.fy[ry.t0 + k];
      }
      weighted_sum_nobias<Acc>(src.data(), w.data(), ry.count, static_cast<int>(row_size), vertical.data());
      for (int t = 0; t < b.taps_x; ++t, ++m) {
        src[m] = vertical.data() + down_plan.phase[t] * down_plan.phase_len + down_plan.offset[t];
        w[m] = b.fx[t];
      }
      weighted_sum_nobias<Acc>(src.data(), w.data(), m, shape.out_w, out);
    } else {
      const bool pairs = fold && ry.count == b.taps_y && ry.t0 == 0;
      const int rows = pairs ? (b.taps_y + 1) / 2 : ry.count;
      for (int k = 0; k < rows; ++k) {
        const Acc* row = ring_row(k);
        if (pairs && k != b.taps_y - 1 - k) {
          const Acc* __restrict__ lo = row;
          const Acc* __restrict__ hi = ring_row(b.taps_y - 1 - k);
          Acc* __restrict__ sum = folded.data() + k * row_size;
          for (size_t c = 0; c < row_size; ++c) sum[c] = lo[c] + hi[c];
          row = sum;
        }
        const Acc* taps = b.row_taps(ry.t0 + k);
        for (int t = 0; t < b.taps_x; ++t, ++m) {
          src[m] = row + down_plan.phase[t] * down_plan.phase_len + down_plan.offset[t];
          w[m] = taps[t];
        }
      }
      weighted_sum_nobias<Acc>(src.data(), w.data(), m, shape.out_w, out);
    }
    if (!std::is_same<T, Acc>::value)
      for (int ox = 0; ox < shape.out_w; ++ox) dst_row[ox] = static_cast<T>(out_row[ox]);
  }
}

// Splits planes x output rows into work items so every thread gets several. Small calls run on
// the calling thread: waking an OpenMP team costs more than they do (and much more on a busy machine).
template <typename Body>
void for_each_band(long long planes, int out_h, long long samples_per_plane, Body body) {
  constexpr long long kMinParallelSamples = 1 << 16;
  const bool parallel = planes * samples_per_plane >= kMinParallelSamples;
  const int threads = parallel ? std::max(1, at::get_num_threads()) : 1;
  long long bands = (4LL * threads + planes - 1) / planes;
  bands = std::max(1LL, std::min<long long>(bands, std::max(1, out_h / 8)));
  const long long items = planes * bands;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (parallel && items > 1)
  for (long long item = 0; item < items; ++item) {
    const long long plane = item / bands;
    const int band = static_cast<int>(item % bands);
    const int begin = static_cast<int>(out_h * band / bands);
    const int end = static_cast<int>(out_h * (band + 1) / bands);
    if (begin < end) body(plane, begin, end);
  }
}

void check_inputs(const torch::Tensor& x, const torch::Tensor& b, const torch::Tensor& fu, const torch::Tensor& fd) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 4 && x.is_contiguous(), "x must be a contiguous CPU NCHW tensor");
  TORCH_CHECK(b.dim() == 1 && b.size(0) == x.size(1) && b.scalar_type() == x.scalar_type() && b.is_contiguous(),
              "b must be [C] with x's dtype");
  for (const auto* f : {&fu, &fd}) {
    TORCH_CHECK((f->dim() == 1 || f->dim() == 2) && f->scalar_type() == x.scalar_type() && f->is_contiguous(),
                "filters must be contiguous 1-D or 2-D tensors with x's dtype");
  }
}

// y = filtered_lrelu(x); fu, fd: correlation taps with gains applied; mid = intermediate size.
torch::Tensor forward(torch::Tensor x, torch::Tensor b, torch::Tensor fu, torch::Tensor fd, int up, int down,
                      int padx0, int pady0, int mid_h, int mid_w, int out_h, int out_w, double gain, double slope,
                      double clamp) {
  check_inputs(x, b, fu, fd);
  auto y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "filtered_lrelu_cpu_forward", [&] {
    using Acc = scalar_t;
    const Stage<Acc> a = make_stage<Acc>(fu, up, 1, padx0, pady0);
    const Stage<Acc> s_b = make_stage<Acc>(fd, 1, down, 0, 0);
    const PlaneShape shape{static_cast<int>(x.size(2)), static_cast<int>(x.size(3)), mid_h, mid_w, out_h, out_w};
    const auto up_plan = make_up_row_plan(up, padx0, a.taps_x, shape.in_w, mid_w);
    const auto down_plan = make_down_row_plan(down, 0, s_b.taps_x, mid_w, out_w);
    const Lrelu<Acc> act{static_cast<Acc>(gain), static_cast<Acc>(slope), static_cast<Acc>(clamp)};
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    const long long channels = x.size(1);
    const long long in_plane = static_cast<long long>(shape.in_h) * shape.in_w;
    const long long out_plane = static_cast<long long>(out_h) * out_w;
    const long long mid_plane = static_cast<long long>(mid_h) * mid_w;
    if (a.separable && up % down == 0 && down_plan.margin == 0) {
      const bool fold = rows_symmetric(s_b);
      for_each_band(x.size(0) * channels, out_h, mid_plane, [&](long long p, int begin, int end) {
        run_band_forward<scalar_t, Acc>(a, s_b, fold, shape, up_plan, down_plan, act, xp + p * in_plane,
                                        bp[p % channels], begin, end, yp + p * out_plane);
      });
      return;
    }
    for_each_band(x.size(0) * channels, out_h, mid_plane, [&](long long p, int begin, int end) {
      auto activate = [&](int, Acc* row) {
        for (int c = 0; c < mid_w; ++c) row[c] = act.value(row[c]);
      };
      run_band<scalar_t, Acc>(a, s_b, shape, up_plan, down_plan, xp + p * in_plane, bp[p % channels], begin, end,
                              yp + p * out_plane, activate);
    });
  });
  return y;
}

// dx of filtered_lrelu given dy. fd_t / fu_t: the flipped (transposed) filters; the forward
// stage A is recomputed from x and b to get the activation's derivative.
torch::Tensor backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, torch::Tensor fu, torch::Tensor fd,
                       torch::Tensor fu_t, torch::Tensor fd_t, int up, int down, int padx0, int pady0, int mid_h,
                       int mid_w, double gain, double slope, double clamp) {
  check_inputs(x, b, fu, fd);
  TORCH_CHECK(dy.is_contiguous() && dy.scalar_type() == x.scalar_type(), "dy must be contiguous with x's dtype");
  auto dx = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "filtered_lrelu_cpu_backward", [&] {
    using Acc = scalar_t;
    const int in_h = x.size(2), in_w = x.size(3), out_h = dy.size(2), out_w = dy.size(3);
    const Stage<Acc> a_fwd = make_stage<Acc>(fu, up, 1, padx0, pady0);
    const int fd_taps_x = filter_taps_x(fd), fd_taps_y = filter_taps_y(fd);
    const int fu_taps_x = filter_taps_x(fu), fu_taps_y = filter_taps_y(fu);
    // Transposed stages: (up U, down D, pad P, taps T) -> (up D, down U, pad T - 1 - P, flipped taps).
    const Stage<Acc> a_t = make_stage<Acc>(fd_t, down, 1, fd_taps_x - 1, fd_taps_y - 1);
    const Stage<Acc> b_t = make_stage<Acc>(fu_t, 1, up, fu_taps_x - 1 - padx0, fu_taps_y - 1 - pady0);
    const PlaneShape shape{out_h, out_w, mid_h, mid_w, in_h, in_w};
    const auto fwd_plan = make_up_row_plan(up, padx0, a_fwd.taps_x, in_w, mid_w);
    const auto up_plan = make_up_row_plan(down, a_t.padx0, a_t.taps_x, out_w, mid_w);
    const auto down_plan = make_down_row_plan(up, b_t.padx0, b_t.taps_x, mid_w, in_w);
    const Lrelu<Acc> act{static_cast<Acc>(gain), static_cast<Acc>(slope), static_cast<Acc>(clamp)};
    const scalar_t* xp = x.data_ptr<scalar_t>();
    const scalar_t* bp = b.data_ptr<scalar_t>();
    const scalar_t* dyp = dy.data_ptr<scalar_t>();
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    const long long channels = x.size(1);
    const long long x_plane = static_cast<long long>(in_h) * in_w;
    const long long y_plane = static_cast<long long>(out_h) * out_w;
    const long long mid_plane = static_cast<long long>(mid_h) * mid_w;
    for_each_band(x.size(0) * channels, in_h, mid_plane, [&](long long p, int begin, int end) {
      UpRows<scalar_t, Acc> forward_rows(a_fwd, fwd_plan, in_h, in_w);
      std::vector<Acc> u(mid_w);
      auto times_derivative = [&](int row, Acc* m) {
        forward_rows.row(xp + p * x_plane, bp[p % channels], row, u.data());
        multiply_derivative(act, u.data(), m, mid_w);
      };
      run_band<scalar_t, Acc>(a_t, b_t, shape, up_plan, down_plan, dyp + p * y_plane, Acc(0), begin, end,
                              dxp + p * x_plane, times_derivative);
    });
  });
  return dx;
}

// ---- CPU emulation of the CUDA kernels' per-sample code (tests only) ----

torch::Tensor emulate_upfirdn2d(torch::Tensor x, torch::Tensor f, int upx, int upy, int downx, int downy, int padx0,
                                int pady0, int out_h, int out_w) {
  TORCH_CHECK(x.is_contiguous() && f.is_contiguous() && f.scalar_type() == x.scalar_type(), "bad inputs");
  auto y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "emulate_upfirdn2d", [&] {
    const auto s = make_upfirdn<scalar_t>(f, upx, upy, downx, downy, padx0, pady0, x.size(2), x.size(3));
    const long long planes = x.size(0) * x.size(1);
    for (long long p = 0; p < planes; ++p) {
      const scalar_t* plane = x.data_ptr<scalar_t>() + p * x.size(2) * x.size(3);
      scalar_t* out = y.data_ptr<scalar_t>() + p * out_h * out_w;
      for (int oy = 0; oy < out_h; ++oy)
        for (int ox = 0; ox < out_w; ++ox)
          out[oy * out_w + ox] = upfirdn_sample<scalar_t, scalar_t>(s, plane, 0, oy, ox);
    }
  });
  return y;
}

// Runs the tile kernel's two phases tile by tile, as the CUDA blocks would.
template <typename Acc>
void emulate_tiles(const FusedTiles<Acc>& p, const Acc* in, const Acc* in_bias, const Acc* x, const Acc* x_bias,
                   long long planes, long long channels, long long in_plane, long long x_plane, Acc* out) {
  std::vector<Acc> mid(static_cast<size_t>(p.span_h) * p.span_w);
  for (long long plane = 0; plane < planes; ++plane) {
    const Acc ib = in_bias ? in_bias[plane % channels] : Acc(0);
    const Acc xb = x_bias ? x_bias[plane % channels] : Acc(0);
    for (int oy0 = 0; oy0 < p.out_h; oy0 += p.tile_h) {
      for (int ox0 = 0; ox0 < p.out_w; ox0 += p.tile_w) {
        for (int i = 0; i < p.span_h * p.span_w; ++i)
          mid[i] = fused_tile_mid<Acc, Acc>(p, in + plane * in_plane, ib, x ? x + plane * x_plane : nullptr, xb, oy0,
                                            ox0, i);
        for (int ly = 0; ly < p.tile_h && oy0 + ly < p.out_h; ++ly)
          for (int lx = 0; lx < p.tile_w && ox0 + lx < p.out_w; ++lx)
            out[plane * p.out_h * p.out_w + (oy0 + ly) * p.out_w + ox0 + lx] =
                fused_tile_out<Acc>(p, mid.data(), ly, lx);
      }
    }
  }
}

torch::Tensor emulate_filtered_lrelu(torch::Tensor x, torch::Tensor b, torch::Tensor fu, torch::Tensor fd, int up,
                                     int down, int padx0, int pady0, int mid_h, int mid_w, int out_h, int out_w,
                                     double gain, double slope, double clamp, int tile) {
  check_inputs(x, b, fu, fd);
  auto y = torch::empty({x.size(0), x.size(1), out_h, out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "emulate_filtered_lrelu", [&] {
    using Acc = scalar_t;
    const auto a = make_upfirdn<Acc>(fu, up, up, 1, 1, padx0, pady0, x.size(2), x.size(3));
    const auto sb = make_upfirdn<Acc>(fd, 1, 1, down, down, 0, 0, mid_h, mid_w);
    const Lrelu<Acc> act{static_cast<Acc>(gain), static_cast<Acc>(slope), static_cast<Acc>(clamp)};
    const auto p = make_fused_tiles<Acc>(a, sb, a, act, false, mid_h, mid_w, out_h, out_w, tile, tile);
    emulate_tiles<Acc>(p, x.data_ptr<Acc>(), b.data_ptr<Acc>(), nullptr, nullptr, x.size(0) * x.size(1), x.size(1),
                       x.size(2) * x.size(3), 0, y.data_ptr<Acc>());
  });
  return y;
}

torch::Tensor emulate_filtered_lrelu_backward(torch::Tensor dy, torch::Tensor x, torch::Tensor b, torch::Tensor fu,
                                              torch::Tensor fd, torch::Tensor fu_t, torch::Tensor fd_t, int up,
                                              int down, int padx0, int pady0, int mid_h, int mid_w, double gain,
                                              double slope, double clamp, int tile) {
  check_inputs(x, b, fu, fd);
  auto dx = torch::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "emulate_filtered_lrelu_backward", [&] {
    using Acc = scalar_t;
    const int in_h = x.size(2), in_w = x.size(3);
    const int fd_tx = filter_taps_x(fd), fd_ty = filter_taps_y(fd);
    const int fu_tx = filter_taps_x(fu), fu_ty = filter_taps_y(fu);
    const auto a_fwd = make_upfirdn<Acc>(fu, up, up, 1, 1, padx0, pady0, in_h, in_w);
    const auto a_t = make_upfirdn<Acc>(fd_t, down, down, 1, 1, fd_tx - 1, fd_ty - 1, dy.size(2), dy.size(3));
    const auto b_t = make_upfirdn<Acc>(fu_t, 1, 1, up, up, fu_tx - 1 - padx0, fu_ty - 1 - pady0, mid_h, mid_w);
    const Lrelu<Acc> act{static_cast<Acc>(gain), static_cast<Acc>(slope), static_cast<Acc>(clamp)};
    const auto p = make_fused_tiles<Acc>(a_t, b_t, a_fwd, act, true, mid_h, mid_w, in_h, in_w, tile, tile);
    emulate_tiles<Acc>(p, dy.data_ptr<Acc>(), nullptr, x.data_ptr<Acc>(), b.data_ptr<Acc>(), x.size(0) * x.size(1),
                       x.size(1), dy.size(2) * dy.size(3), in_h * in_w, dx.data_ptr<Acc>());
  });
  return dx;
}

std::vector<torch::Tensor> emulate_bias_act(torch::Tensor z, torch::Tensor dy, int act, double alpha, double gain,
                                            double clamp) {
  TORCH_CHECK(z.is_contiguous() && dy.is_contiguous() && z.sizes() == dy.sizes(), "bad inputs");
  auto y = torch::empty_like(z);
  auto dz = torch::empty_like(z);
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "emulate_bias_act", [&] {
    using Acc = scalar_t;
    const Acc* zp = z.data_ptr<Acc>();
    const Acc* dyp = dy.data_ptr<Acc>();
    for (long long i = 0; i < z.numel(); ++i) {
      y.data_ptr<Acc>()[i] = bias_act_value<Acc>(act, zp[i], Acc(alpha), Acc(gain), Acc(clamp));
      dz.data_ptr<Acc>()[i] = dyp[i] * bias_act_grad_factor<Acc>(act, zp[i], Acc(alpha), Acc(gain), Acc(clamp));
    }
  });
  return {y, dz};
}

}  // namespace
}  // namespace videdit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("filtered_lrelu_forward", &videdit::forward, "fused filtered_lrelu forward (CPU)");
  m.def("filtered_lrelu_backward", &videdit::backward, "fused filtered_lrelu backward (CPU)");
  m.def("emulate_upfirdn2d", &videdit::emulate_upfirdn2d, "CUDA upfirdn2d per-sample code run on the CPU");
  m.def("emulate_filtered_lrelu", &videdit::emulate_filtered_lrelu, "CUDA filtered_lrelu tiles run on the CPU");
  m.def("emulate_filtered_lrelu_backward", &videdit::emulate_filtered_lrelu_backward,
        "CUDA filtered_lrelu backward tiles run on the CPU");
  m.def("emulate_bias_act", &videdit::emulate_bias_act, "CUDA bias_act per-element code run on the CPU");
}
