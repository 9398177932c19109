// The CPU window attention's shared pieces (forward: window_attention_cpu.cpp,
// backward: window_attention_cpu_backward.cpp): one op call's plan, and one task's
// window: where its tokens live, their q, k, v rows and the padded tiles that
// attention_tiles.h computes on.
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "attention_tiles.h"
#include "window_index.h"

namespace fastswin {

constexpr double kMaskValue = -100.0;  // what Swin's shift mask adds between regions
constexpr double kLogitScaleMax = 4.605170185988092;  // log(100), Swin v2's clamp
constexpr double kNormalizeEps = 1e-12;                // F.normalize's

// Strides, in elements, of a (B, [T,] H, W, channels) map: batch, t (0 for 2D maps), h, w,
// and channels.
struct MapStrides {
  int64_t b, t, h, w, channel;

  explicit MapStrides(const at::Tensor& x = at::Tensor())
      : b(x.defined() ? x.stride(0) : 0), t(x.defined() && x.dim() == 5 ? x.stride(1) : 0),
        h(x.defined() ? x.stride(x.dim() - 3) : 0), w(x.defined() ? x.stride(x.dim() - 2) : 0),
        channel(x.defined() ? x.stride(-1) : 0) {}

  int64_t pixel(int64_t batch, int64_t t_, int64_t h_, int64_t w_) const {
    return batch * b + t_ * t + h_ * h + w_ * w;
  }
};

// n elements `stride` apart from src, converted into dst (a loop the compiler vectorizes
// in the usual, contiguous case).
template <typename scalar_t, typename acc_t>
void convert_row(const scalar_t* src, int64_t stride, int64_t n, acc_t* dst) {
  if (stride == 1) {
    for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<acc_t>(src[e]);
  } else {
    for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<acc_t>(src[e * stride]);
  }
}

// One call's sizes and the small tensors, in the accumulation type, contiguous.
struct AttentionCall {
  WindowGeometry geom;
  int64_t shift_d, shift_h, shift_w;  // as given (the geometry's wrap to the padded map)
  bool timm_order;
  int64_t heads, head_dim, channels, tokens;
  MapStrides qkv_strides;
  at::Tensor qkv, bias, qkv_fill, logit_mul;
};

// Where the tokens of one window live: their rows in the (B, [T,] H, W) map (-1: a
// padding token), their element offsets in qkv, and their regions.
template <bool kVideo>
void token_sources(const AttentionCall& c, int64_t b, int64_t window, int64_t* pixels, int64_t* offsets,
                   int64_t* regions) {
  const WindowGeometry& g = c.geom;
  for (int64_t n = 0; n < c.tokens; ++n) {
    int64_t t, h, w;
    const bool real = attention_token_source<kVideo, int64_t>(g, c.shift_d, c.shift_h, c.shift_w, c.timm_order,
                                                              window, n, t, h, w, regions[n]);
    pixels[n] = real ? b * reverse_rows_per_image(g) + (t * g.height + h) * g.width + w : -1;
    offsets[n] = c.qkv_strides.pixel(b, t, h, w);
  }
}

template <typename acc_t>
acc_t dot(const acc_t* a, const acc_t* b, int64_t d) {
  acc_t sum = 0;
  for (int64_t e = 0; e < d; ++e) sum += a[e] * b[e];
  return sum;
}

// Row n of the task's 3C-wide buffer: its pixel's qkv row, or the fill for padding.
template <typename scalar_t, typename acc_t>
void gather_row(const AttentionCall& c, const scalar_t* qkv, const acc_t* fill, bool real, int64_t offset,
                acc_t* row) {
  const int64_t width = 3 * c.channels;
  if (real) {
    convert_row(qkv + offset, c.qkv_strides.channel, width, row);
  } else {
    std::copy(fill, fill + width, row);
  }
}

inline int64_t round_up(int64_t x, int64_t m) { return ceil_div(x, m) * m; }

// One task's buffers, as attention_tiles.h lays them out: N tokens padded to NR rows
// (a multiple of kRows) and NC columns (of kLanes); head_dim d padded to dv. q, k and
// v hold one head at a time: q (NR, dv) times its scale, k transposed (d, NC), v
// (NC, dv); for a backward also k (NC, dv) and v transposed (dv, NC), and v2's norms.
template <typename acc_t>
struct Tiles {
  int64_t N, NR, NC, d, dv;
  std::vector<acc_t> rows, q, kt, v, k, vt, q_norm, k_norm, s, o, max, sum, mask;
  std::vector<int64_t> pixels, offsets, regions;

  Tiles(int64_t tokens, int64_t head_dim, int64_t width, bool backward)
      : N(tokens), NR(round_up(tokens, kRows)), NC(round_up(tokens, kLanes)), d(head_dim),
        dv(round_up(head_dim, kLanes)), rows(tokens * width), q(NR * dv), kt(d * NC), v(NC * dv),
        k(backward ? NC * dv : 0), vt(backward ? dv * NC : 0), q_norm(tokens), k_norm(tokens), s(NR * NC),
        o(NR * dv), max(NR), sum(NR), mask(tokens * tokens), pixels(tokens), offsets(tokens), regions(tokens) {}
};

// Task `task` (window task % nW of image task / nW): its tokens' sources and regions,
// and their qkv rows.
template <bool kVideo, typename scalar_t, typename acc_t>
void load_window(const AttentionCall& c, const scalar_t* qkv, const acc_t* fill, int64_t task, Tiles<acc_t>& t) {
  const int64_t per_image = windows_per_image(c.geom), width = 3 * c.channels;
  token_sources<kVideo>(c, task / per_image, task % per_image, t.pixels.data(), t.offsets.data(), t.regions.data());
  for (int64_t n = 0; n < t.N; ++n) {
    gather_row(c, qkv, fill, t.pixels[n] >= 0, t.offsets[n], t.rows.data() + n * width);
  }
}

// v2's normalization: F.normalize divides by max(norm, eps).
template <typename acc_t>
acc_t clamped_norm(const acc_t* x, int64_t d) {
  return std::max<acc_t>(std::sqrt(dot(x, x, d)), static_cast<acc_t>(kNormalizeEps));
}

// One head's q (times q_scale), k and v from the task's rows into the padded tiles
// (padding stays zero); v2 divides q and k by their norms.
template <typename acc_t>
void load_head(Tiles<acc_t>& t, const acc_t* q, int64_t channels, int64_t width, acc_t q_scale, bool cosine) {
  const int64_t d = t.d;
  const bool backward = !t.k.empty();
  for (int64_t n = 0; n < t.N; ++n) {
    const acc_t *qn = q + n * width, *kn = qn + channels, *vn = qn + 2 * channels;
    t.q_norm[n] = cosine ? clamped_norm(qn, d) : 1;
    t.k_norm[n] = cosine ? clamped_norm(kn, d) : 1;
    const acc_t fq = q_scale / t.q_norm[n], fk = 1 / t.k_norm[n];
    for (int64_t e = 0; e < d; ++e) {
      t.q[n * t.dv + e] = qn[e] * fq;
      t.kt[e * t.NC + n] = kn[e] * fk;
      t.v[n * t.dv + e] = vn[e];
    }
    if (backward) {
      for (int64_t e = 0; e < d; ++e) {
        t.k[n * t.dv + e] = kn[e] * fk;
        t.vt[e * t.NC + n] = vn[e];
      }
    }
  }
}

// The logits of one head: bias + mask + q k^T, -inf in padding columns (weight 0), q k^T
// (zero) in padding rows (never read).
template <typename acc_t>
void head_logits(Tiles<acc_t>& t, const acc_t* bias, const acc_t* mask) {
  std::fill(t.s.begin(), t.s.end(), static_cast<acc_t>(0));
  for (int64_t i = 0; i < t.N; ++i) {
    acc_t* row = t.s.data() + i * t.NC;
    for (int64_t j = 0; j < t.N; ++j) row[j] = (bias ? bias[i * t.N + j] : 0) + (mask ? mask[i * t.N + j] : 0);
    std::fill(row + t.N, row + t.NC, -std::numeric_limits<acc_t>::infinity());
  }
  add_product(t.q.data(), t.dv, t.kt.data(), t.s.data(), t.NR, t.NC, t.d);
}

// The additive shift mask of one window, (N, N), or nullptr where all its tokens share
// a region (every window but those along the map's last row, column or plane).
template <typename acc_t>
const acc_t* window_mask(Tiles<acc_t>& t) {
  const int64_t* regions = t.regions.data();
  if (std::all_of(regions, regions + t.N, [&](int64_t r) { return r == regions[0]; })) return nullptr;
  for (int64_t i = 0; i < t.N; ++i) {
    for (int64_t j = 0; j < t.N; ++j) {
      t.mask[i * t.N + j] = regions[i] == regions[j] ? 0 : static_cast<acc_t>(kMaskValue);
    }
  }
  return t.mask.data();
}

// Checks the arguments and plans a call: geometry, strides, the small tensors in the
// accumulation type.
AttentionCall plan_attention(const at::Tensor& qkv, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& logit_scale, const std::optional<at::Tensor>& qkv_bias,
                             int64_t num_heads, at::IntArrayRef window_size, at::IntArrayRef shift_size,
                             bool timm_order);

// The (B, [T,] H, W, C) attention output's sizes for a (B, [T,] H, W, 3C) qkv map.
std::vector<int64_t> output_sizes(const at::Tensor& qkv);

}  // namespace fastswin
