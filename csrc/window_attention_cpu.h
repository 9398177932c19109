// The CPU window attention's shared pieces (image layout: window_attention_cpu.cpp and
// window_attention_cpu_backward.cpp; window layout: window_layout_attention_cpu.cpp):
// one op call's plan, and one task's window: where its tokens live, their q, k, v rows
// and the padded tiles that attention_tiles.h computes on.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <type_traits>
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

// n elements `stride` apart from src, converted into dst (contiguous fp32 and fp64 rows
// are a memcpy: the C library's, which picks the CPU's widest moves; this file is built
// for the baseline ISA).
template <typename scalar_t, typename acc_t>
void convert_row(const scalar_t* src, int64_t stride, int64_t n, acc_t* dst) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    if (stride == 1) {
      std::memcpy(dst, src, n * sizeof(acc_t));
      return;
    }
  }
  if (stride == 1) {
    for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<acc_t>(src[e]);
  } else {
    for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<acc_t>(src[e * stride]);
  }
}

// n accumulated values into a contiguous row of the map's type.
template <typename acc_t, typename scalar_t>
void store_row(const acc_t* src, int64_t n, scalar_t* dst) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    std::memcpy(dst, src, n * sizeof(acc_t));
  } else {
    for (int64_t e = 0; e < n; ++e) dst[e] = static_cast<scalar_t>(src[e]);
  }
}

// What a call of either layout shares: its sizes, v1's multiplier of q k^T, and the
// small tensors in the accumulation type, contiguous (logit_mul: v2's exp(clamped
// logit_scale) per head; undefined for v1).
struct AttentionHeads {
  int64_t heads, head_dim, channels, tokens;
  double scale;
  at::Tensor bias, logit_mul;
};

// One image-layout call: the map's geometry and strides besides.
struct AttentionCall : AttentionHeads {
  WindowGeometry geom;
  int64_t shift_d, shift_h, shift_w;  // as given (the geometry's wrap to the padded map)
  bool timm_order;
  MapStrides qkv_strides;
  at::Tensor qkv, qkv_fill;
};

// Where the tokens of one window live: their rows in the (B, [T,] H, W) map (-1: a
// padding token), their element offsets in qkv, and their regions.
struct Sources {
  std::vector<int64_t> pixels, offsets, regions;

  explicit Sources(int64_t tokens) : pixels(tokens), offsets(tokens), regions(tokens) {}
};

// The sources of task `task`: window task % nW of image task / nW.
template <bool kVideo>
void token_sources(const AttentionCall& c, int64_t task, Sources& src) {
  const WindowGeometry& g = c.geom;
  const int64_t b = task / windows_per_image(g), window = task % windows_per_image(g);
  for (int64_t n = 0; n < c.tokens; ++n) {
    int64_t t, h, w;
    const bool real = attention_token_source<kVideo, int64_t>(g, c.shift_d, c.shift_h, c.shift_w, c.timm_order,
                                                              window, n, t, h, w, src.regions[n]);
    src.pixels[n] = real ? b * reverse_rows_per_image(g) + (t * g.height + h) * g.width + w : -1;
    src.offsets[n] = c.qkv_strides.pixel(b, t, h, w);
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
inline int64_t tile_rows(int64_t n) { return round_up(n, kRows); }
inline int64_t tile_cols(int64_t n) { return round_up(n, kLanes); }

// One task's buffers, as attention_tiles.h lays them out: N tokens padded to NR rows
// (a multiple of kRows) and NC columns (of kLanes); head_dim d padded to dv. rows: the
// window's q, k, v rows (N, 3C), then zero rows to NR and a vector of slack: a product
// reads a head's v up to dv < d + kLanes columns, past the last head's into the slack
// (those columns land in the product's discarded ones). kt: one head's k transposed (d, NC), times the logit scale
// (v2: over the key's norm); q_factor (NR): v2's 1 / |q|. A backward also keeps that
// head's q times its scale (NR, dv), k^ (NC, dv) and v transposed (dv, NC).
template <typename acc_t>
struct Tiles {
  int64_t N, NR, NC, d, dv, width;
  std::vector<acc_t> rows, kt, q_factor, q, k, vt, q_norm, k_norm, s, o, max, sum, inv_sum, mask;
  Sources src, ahead;  // this task's tokens, and the next one's (prefetch_window)
  int64_t ahead_task = -1;

  Tiles(int64_t tokens, int64_t head_dim, int64_t width_, bool backward)
      : N(tokens), NR(tile_rows(tokens)), NC(tile_cols(tokens)), d(head_dim), dv(tile_cols(head_dim)), width(width_),
        rows(NR * width + kLanes), kt(d * NC), q_factor(NR, 1),
        q(backward ? NR * dv : 0), k(backward ? NC * dv : 0), vt(backward ? dv * NC : 0), q_norm(tokens),
        k_norm(tokens), s(NR * NC), o(NR * dv), max(NR), sum(NR), inv_sum(NR), mask(NR * NC), src(tokens),
        ahead(tokens) {}

  // Head `head`'s q, k and v in rows ((N, d), rows `width` = 3C apart).
  Strided<const acc_t> head_q(int64_t head) const { return {rows.data() + head * d, width}; }
  Strided<const acc_t> head_k(int64_t head) const { return {rows.data() + width / 3 + head * d, width}; }
  Rows<const acc_t> head_v(int64_t head) const { return {rows.data() + 2 * width / 3 + head * d, width}; }
};

// Task `task`'s tokens' sources and regions (found by prefetch_window where it ran
// ahead), and their qkv rows.
template <bool kVideo, typename scalar_t, typename acc_t>
void load_window(const AttentionCall& c, const scalar_t* qkv, const acc_t* fill, int64_t task, Tiles<acc_t>& t) {
  if (t.ahead_task == task) {
    std::swap(t.src, t.ahead);
    t.ahead_task = -1;
  } else {
    token_sources<kVideo>(c, task, t.src);
  }
  for (int64_t n = 0; n < t.N; ++n) {
    gather_row(c, qkv, fill, t.src.pixels[n] >= 0, t.src.offsets[n], t.rows.data() + n * t.width);
  }
}

// Asks the cache for a row of n elements `stride` apart.
template <typename scalar_t>
void prefetch_row(const scalar_t* row, int64_t n, int64_t stride) {
  const int64_t extent = (n - 1) * stride + 1, line = 64 / sizeof(scalar_t);
  for (int64_t e = 0; e < extent; e += line) __builtin_prefetch(row + e);
}

// Asks the cache for task `task`'s qkv rows, while the current task computes (a window's
// rows are 7 runs of 7 pixels, each run a stream the hardware prefetcher finds late).
template <bool kVideo, typename scalar_t, typename acc_t>
void prefetch_window(const AttentionCall& c, const scalar_t* qkv, int64_t task, Tiles<acc_t>& t) {
  token_sources<kVideo>(c, task, t.ahead);
  t.ahead_task = task;
  for (int64_t n = 0; n < t.N; ++n) {
    if (t.ahead.pixels[n] >= 0) prefetch_row(qkv + t.ahead.offsets[n], t.width, c.qkv_strides.channel);
  }
}

// v2's normalization: F.normalize divides by max(norm, eps).
template <typename acc_t>
acc_t clamped_norm(const acc_t* x, int64_t d) {
  return std::max<acc_t>(std::sqrt(dot(x, x, d)), static_cast<acc_t>(kNormalizeEps));
}

// One head's k, transposed and times q_scale (v2: over its norm) into kt, and v2's query
// factors 1 / |q| and norms. Padding columns of kt stay zero.
template <typename acc_t>
void load_head(Tiles<acc_t>& t, int64_t head, acc_t q_scale, bool cosine) {
  const Strided<const acc_t> q = t.head_q(head), k = t.head_k(head);
  for (int64_t n = 0; n < t.N; ++n) {
    const acc_t* kn = &k(n, 0);
    t.q_norm[n] = cosine ? clamped_norm(&q(n, 0), t.d) : 1;
    t.k_norm[n] = cosine ? clamped_norm(kn, t.d) : 1;
    t.q_factor[n] = 1 / t.q_norm[n];
    const acc_t fk = q_scale / t.k_norm[n];
    for (int64_t e = 0; e < t.d; ++e) t.kt[e * t.NC + n] = kn[e] * fk;
  }
}

// The logits of one head: logit_init (bias, -inf in padding columns: weight 0; zero
// padding rows) + q k^T + the window's mask.
template <typename acc_t>
void head_logits(Tiles<acc_t>& t, int64_t head, const acc_t* logit_init, const acc_t* mask, bool cosine) {
  add_product(t.head_q(head), Rows<const acc_t>{t.kt.data(), t.NC}, Rows<acc_t>{t.s.data(), t.NC}, t.NR, t.N, t.d,
              cosine ? t.q_factor.data() : nullptr, Rows<const acc_t>{logit_init, t.NC});
  if (mask) add_to(t.s.data(), mask, t.N * t.NC);
}

// Every head's (NR, NC) tile of logit_init: the bias (or zeros) in N x N, -inf in the
// padding columns of real rows, zeros in padding rows.
template <typename acc_t>
std::vector<acc_t> logit_inits(const AttentionHeads& c) {
  const int64_t N = c.tokens, NR = tile_rows(N), NC = tile_cols(N);
  const acc_t* bias = c.bias.defined() ? c.bias.const_data_ptr<acc_t>() : nullptr;
  std::vector<acc_t> init(c.heads * NR * NC, 0);
  for (int64_t head = 0; head < c.heads; ++head) {
    for (int64_t i = 0; i < N; ++i) {
      acc_t* row = init.data() + (head * NR + i) * NC;
      if (bias) std::copy(bias + (head * N + i) * N, bias + (head * N + i + 1) * N, row);
      std::fill(row + N, row + NC, -std::numeric_limits<acc_t>::infinity());
    }
  }
  return init;
}

// The additive shift mask of one window, (N, NC) with zero padding columns, or nullptr
// where all its tokens share a region (every window but those along the map's last row,
// column or plane).
template <typename acc_t>
const acc_t* window_mask(Tiles<acc_t>& t) {
  const int64_t* regions = t.src.regions.data();
  if (std::all_of(regions, regions + t.N, [&](int64_t r) { return r == regions[0]; })) return nullptr;
  for (int64_t i = 0; i < t.N; ++i) {
    for (int64_t j = 0; j < t.N; ++j) {
      t.mask[i * t.NC + j] = regions[i] == regions[j] ? 0 : static_cast<acc_t>(kMaskValue);
    }
  }
  return t.mask.data();
}

// Checks bias (heads, N, N) and logit_scale (heads entries) for op `op`, and sets c's
// small tensors from them (c's sizes set).
void plan_heads(AttentionHeads& c, const std::optional<at::Tensor>& bias,
                const std::optional<at::Tensor>& logit_scale, at::ScalarType acc, const char* op);

// A small tensor (bias, mask, fill, logit multipliers) as a contiguous one of type `type`.
inline at::Tensor small(const at::Tensor& x, at::ScalarType type) { return x.to(type).contiguous(); }

// Checks the arguments and plans a call: geometry, strides, the small tensors in the
// accumulation type.
AttentionCall plan_attention(const at::Tensor& qkv, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& logit_scale, const std::optional<at::Tensor>& qkv_bias,
                             int64_t num_heads, at::IntArrayRef window_size, at::IntArrayRef shift_size,
                             bool timm_order);

// The (B, [T,] H, W, C) attention output's sizes for a (B, [T,] H, W, 3C) qkv map.
std::vector<int64_t> output_sizes(const at::Tensor& qkv);

}  // namespace fastswin
