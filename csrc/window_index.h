// Index math of window partition / reverse, shared by the CPU and CUDA kernels.
//
// Both ops are row gathers: every destination row (C contiguous elements) is a
// copy of one source row, or zeros for a padded position. Only the mapping from
// a destination row to its source row differs, and it lives here, once, as
// host+device functions, so the CPU tests exercise the exact code the CUDA
// kernels run.
//
// Layout (torchvision's order): pad the (B, H, W, C) map bottom/right to
// (Hp, Wp), multiples of the window (wh, ww); roll by (-sh, -sw), i.e.
// rolled[p] = padded[(p + s) mod P]; cut into windows, window-major in raster
// order, tokens in raster order inside each window. A (B, T, H, W, C) video map
// likewise in three dims (torchvision's video Swin); a 2D map is one of depth 1.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTSWIN_HD __host__ __device__ __forceinline__
#else
#define FASTSWIN_HD inline
#endif

namespace fastswin {

struct WindowGeometry {
  int64_t batch, depth, height, width;  // un-padded map; depth 1 for (B, H, W, C) maps
  int64_t win_d, win_h, win_w;          // window size
  int64_t shift_d, shift_h, shift_w;    // cyclic shift, applied as a roll by -shift
  int64_t padded_d, padded_h, padded_w; // multiples of the window
  int64_t windows_d, windows_h, windows_w;  // windows along each dim of the map
};

// Strides, in elements, of the four leading dims of the source tensor viewed as
// (B or B*nW, T or wd, H or wh, W or ww); a 2D source has no second dim (s1 unused).
struct RowStrides {
  int64_t s0, s1, s2, s3;
};

FASTSWIN_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

FASTSWIN_HD int64_t positive_mod(int64_t a, int64_t m) {
  const int64_t r = a % m;
  return r < 0 ? r + m : r;
}

// An empty map has nothing to shift.
inline int64_t wrapped_shift(int64_t shift, int64_t padded) {
  return padded > 0 ? positive_mod(shift, padded) : 0;
}

inline WindowGeometry make_geometry(int64_t batch, int64_t depth, int64_t height, int64_t width,
                                    int64_t win_d, int64_t win_h, int64_t win_w,
                                    int64_t shift_d, int64_t shift_h, int64_t shift_w) {
  WindowGeometry g;
  g.batch = batch;
  g.depth = depth;
  g.height = height;
  g.width = width;
  g.win_d = win_d;
  g.win_h = win_h;
  g.win_w = win_w;
  g.windows_d = ceil_div(depth, win_d);
  g.windows_h = ceil_div(height, win_h);
  g.windows_w = ceil_div(width, win_w);
  g.padded_d = g.windows_d * win_d;
  g.padded_h = g.windows_h * win_h;
  g.padded_w = g.windows_w * win_w;
  g.shift_d = wrapped_shift(shift_d, g.padded_d);
  g.shift_h = wrapped_shift(shift_h, g.padded_h);
  g.shift_w = wrapped_shift(shift_w, g.padded_w);
  return g;
}

// Whether the map has a time dim to index (a (B, T, H, W, C) map, or windows of one):
// the kernels are compiled for 2D maps without the third dim's divisions.
inline bool is_video(const WindowGeometry& g) { return g.depth != 1 || g.win_d != 1; }

// Destination rows per image: partition writes (nW, wd, wh, ww) == Tp * Hp * Wp rows,
// reverse writes (T, H, W) rows.
FASTSWIN_HD int64_t partition_rows_per_image(const WindowGeometry& g) {
  return g.padded_d * g.padded_h * g.padded_w;
}

FASTSWIN_HD int64_t reverse_rows_per_image(const WindowGeometry& g) {
  return g.depth * g.height * g.width;
}

FASTSWIN_HD int64_t windows_per_image(const WindowGeometry& g) {
  return g.windows_d * g.windows_h * g.windows_w;
}

// The per-row math is templated on the index type: the CPU runs it in 64-bit,
// the CUDA kernels in 32-bit where one image's rows fit (fewer, cheaper
// divisions); the batch offset is always 64-bit and added by the caller. kVideo:
// the map has a time dim (else t and k are 0 and its divisions are not compiled).

// Coordinate p + shift of the rolled map, wrapped into the padded map.
template <typename index_t>
FASTSWIN_HD index_t rolled_forward(index_t p, int64_t shift, int64_t padded) {
  p += static_cast<index_t>(shift);
  return p >= static_cast<index_t>(padded) ? p - static_cast<index_t>(padded) : p;
}

// Coordinate p - shift: where pixel p sits in the rolled map.
template <typename index_t>
FASTSWIN_HD index_t rolled_back(index_t p, int64_t shift, int64_t padded) {
  p -= static_cast<index_t>(shift);
  return p < 0 ? p + static_cast<index_t>(padded) : p;
}

// Partition: row r of one image's output -> pixel (t, h, w) of the input it copies.
// Returns false where the row is padding (written as zeros).
template <bool kVideo, typename index_t>
FASTSWIN_HD bool partition_source_pixel(const WindowGeometry& g, index_t r, index_t& t,
                                        index_t& h, index_t& w) {
  const index_t win_h = static_cast<index_t>(g.win_h);
  const index_t win_w = static_cast<index_t>(g.win_w);
  const index_t windows_w = static_cast<index_t>(g.windows_w);
  const index_t j = r % win_w;
  r /= win_w;
  const index_t i = r % win_h;
  r /= win_h;
  index_t k = 0;
  if constexpr (kVideo) {
    k = r % static_cast<index_t>(g.win_d);
    r /= static_cast<index_t>(g.win_d);
  }
  const index_t wx = r % windows_w;
  r /= windows_w;
  index_t wy = r;
  t = 0;
  if constexpr (kVideo) {
    wy = r % static_cast<index_t>(g.windows_h);
    t = rolled_forward((r / static_cast<index_t>(g.windows_h)) * static_cast<index_t>(g.win_d) + k,
                       g.shift_d, g.padded_d);
  }
  h = rolled_forward(wy * win_h + i, g.shift_h, g.padded_h);
  w = rolled_forward(wx * win_w + j, g.shift_w, g.padded_w);
  return t < static_cast<index_t>(g.depth) && h < static_cast<index_t>(g.height) &&
         w < static_cast<index_t>(g.width);
}

// Reverse: row r == (t, h, w) of one image's output -> the window (counted within
// the image) and the token (k, i, j) inside it that holds that pixel.
template <bool kVideo, typename index_t>
FASTSWIN_HD void reverse_source_token(const WindowGeometry& g, index_t r, index_t& window,
                                      index_t& k, index_t& i, index_t& j) {
  const index_t win_h = static_cast<index_t>(g.win_h);
  const index_t win_w = static_cast<index_t>(g.win_w);
  const index_t w = r % static_cast<index_t>(g.width);
  r /= static_cast<index_t>(g.width);
  index_t h = r;
  window = 0;
  k = 0;
  if constexpr (kVideo) {
    h = r % static_cast<index_t>(g.height);
    const index_t pt = rolled_back(r / static_cast<index_t>(g.height), g.shift_d, g.padded_d);
    window = pt / static_cast<index_t>(g.win_d) * static_cast<index_t>(g.windows_h);
    k = pt % static_cast<index_t>(g.win_d);
  }
  const index_t ph = rolled_back(h, g.shift_h, g.padded_h);
  const index_t pw = rolled_back(w, g.shift_w, g.padded_w);
  window = (window + ph / win_h) * static_cast<index_t>(g.windows_w) + pw / win_w;
  i = ph % win_h;
  j = pw % win_w;
}

// Element offset of the source row of destination row r of image b, or -1 for
// a padded row. `src` holds the strides of the source's leading dims.
template <bool kPartition, bool kVideo, typename index_t>
FASTSWIN_HD int64_t source_row_offset(const WindowGeometry& g, const RowStrides& src,
                                      int64_t b, index_t r) {
  if (kPartition) {
    index_t t, h, w;
    if (!partition_source_pixel<kVideo>(g, r, t, h, w)) return -1;
    return b * src.s0 + static_cast<int64_t>(t) * src.s1 + static_cast<int64_t>(h) * src.s2 +
           static_cast<int64_t>(w) * src.s3;
  }
  index_t window, k, i, j;
  reverse_source_token<kVideo>(g, r, window, k, i, j);
  const int64_t n = b * windows_per_image(g) + window;
  return n * src.s0 + static_cast<int64_t>(k) * src.s1 + static_cast<int64_t>(i) * src.s2 +
         static_cast<int64_t>(j) * src.s3;
}

// ---------------------------------------------------------------------------------------
// Shifted-window attention on the image layout: where token (k, i, j) of a window
// (counted within its image) reads its q, k, v, and its shift-mask region. The rolled,
// padded map holds at position p = (window origin + token) per dim:
// - torchvision's order (pad, then roll): the padded map's pixel (p + s) mod Pp,
//   padding where that is past the map;
// - timm's order (roll, then pad): padding where p is past the map, else pixel
//   (p + s mod size) mod size (a shift kept along a one-window dim may pass the map).
// `shift` here is the shift as given (0 <= shift < window), not the geometry's.

template <typename index_t>
FASTSWIN_HD bool attention_source_coord(index_t p, int64_t shift, int64_t size, int64_t padded,
                                        bool timm_order, index_t& pixel) {
  if (timm_order) {
    pixel = rolled_forward(p, size > 0 ? shift % size : 0, size);
    return p < static_cast<index_t>(size);
  }
  pixel = rolled_forward(p, shift, padded);
  return pixel < static_cast<index_t>(size);
}

// Region of rolled position p along a dim, as the shift mask numbers them: 0 before
// the last window, 1 before the last `shift` positions, 2 in them; one region unshifted.
template <typename index_t>
FASTSWIN_HD index_t attention_region_along(index_t p, int64_t shift, int64_t win, int64_t padded) {
  if (shift == 0) return 0;
  return p < static_cast<index_t>(padded - win) ? 0 : (p < static_cast<index_t>(padded - shift) ? 1 : 2);
}

// Token `token` of window `window` (both within one image): its pixel (t, h, w) and
// whether it is one (else a padding token), and its region code (equal codes attend
// to each other). `shift_*` as given, see above.
template <bool kVideo, typename index_t>
FASTSWIN_HD bool attention_token_source(const WindowGeometry& g, int64_t shift_d, int64_t shift_h,
                                        int64_t shift_w, bool timm_order, index_t window, index_t token,
                                        index_t& t, index_t& h, index_t& w, index_t& region) {
  const index_t win_h = static_cast<index_t>(g.win_h), win_w = static_cast<index_t>(g.win_w);
  const index_t windows_w = static_cast<index_t>(g.windows_w);
  const index_t j = token % win_w, wx = window % windows_w;
  index_t i = (token / win_w) % win_h, wy = window / windows_w;
  const index_t pw = wx * win_w + j;
  bool real = attention_source_coord(pw, shift_w, g.width, g.padded_w, timm_order, w);
  region = attention_region_along(pw, shift_w, g.win_w, g.padded_w);
  index_t ph;
  t = 0;
  if constexpr (kVideo) {
    const index_t windows_h = static_cast<index_t>(g.windows_h);
    const index_t pt = (wy / windows_h) * static_cast<index_t>(g.win_d) + token / (win_w * win_h);
    wy %= windows_h;
    real &= attention_source_coord(pt, shift_d, g.depth, g.padded_d, timm_order, t);
    region += 9 * attention_region_along(pt, shift_d, g.win_d, g.padded_d);
  }
  ph = wy * win_h + i;
  real &= attention_source_coord(ph, shift_h, g.height, g.padded_h, timm_order, h);
  region += 3 * attention_region_along(ph, shift_h, g.win_h, g.padded_h);
  return real;
}

}  // namespace fastswin
