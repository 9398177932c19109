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
// order, tokens in raster order inside each window.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FASTSWIN_HD __host__ __device__ __forceinline__
#else
#define FASTSWIN_HD inline
#endif

namespace fastswin {

struct WindowGeometry {
  int64_t batch, height, width;   // un-padded map
  int64_t win_h, win_w;           // window size
  int64_t shift_h, shift_w;       // cyclic shift, applied as a roll by -shift
  int64_t padded_h, padded_w;     // multiples of the window
  int64_t windows_h, windows_w;   // windows per column / row of the map
};

// Strides, in elements, of the three leading dims of the source tensor.
struct RowStrides {
  int64_t s0, s1, s2;
};

FASTSWIN_HD int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

FASTSWIN_HD int64_t positive_mod(int64_t a, int64_t m) {
  const int64_t r = a % m;
  return r < 0 ? r + m : r;
}

inline WindowGeometry make_geometry(int64_t batch, int64_t height, int64_t width,
                                    int64_t win_h, int64_t win_w,
                                    int64_t shift_h, int64_t shift_w) {
  WindowGeometry g;
  g.batch = batch;
  g.height = height;
  g.width = width;
  g.win_h = win_h;
  g.win_w = win_w;
  g.windows_h = ceil_div(height, win_h);
  g.windows_w = ceil_div(width, win_w);
  g.padded_h = g.windows_h * win_h;
  g.padded_w = g.windows_w * win_w;
  // An empty map (H or W zero) has nothing to shift.
  g.shift_h = g.padded_h > 0 ? positive_mod(shift_h, g.padded_h) : 0;
  g.shift_w = g.padded_w > 0 ? positive_mod(shift_w, g.padded_w) : 0;
  return g;
}

// Destination rows per image: partition writes (nW, wh, ww) == Hp * Wp rows,
// reverse writes (H, W) rows.
FASTSWIN_HD int64_t partition_rows_per_image(const WindowGeometry& g) {
  return g.padded_h * g.padded_w;
}

FASTSWIN_HD int64_t reverse_rows_per_image(const WindowGeometry& g) {
  return g.height * g.width;
}

// The per-row math is templated on the index type: the CPU runs it in 64-bit,
// the CUDA kernels in 32-bit where one image's rows fit (fewer, cheaper
// divisions); the batch offset is always 64-bit and added by the caller.

// Partition: row r of one image's output -> pixel (h, w) of the input it copies.
// Returns false where the row is padding (written as zeros).
template <typename index_t>
FASTSWIN_HD bool partition_source_pixel(const WindowGeometry& g, index_t r,
                                        index_t& h, index_t& w) {
  const index_t win_h = static_cast<index_t>(g.win_h);
  const index_t win_w = static_cast<index_t>(g.win_w);
  const index_t windows_w = static_cast<index_t>(g.windows_w);
  const index_t j = r % win_w;
  r /= win_w;
  const index_t i = r % win_h;
  r /= win_h;
  const index_t wx = r % windows_w;
  const index_t wy = r / windows_w;

  h = wy * win_h + i + static_cast<index_t>(g.shift_h);
  w = wx * win_w + j + static_cast<index_t>(g.shift_w);
  if (h >= static_cast<index_t>(g.padded_h)) h -= static_cast<index_t>(g.padded_h);
  if (w >= static_cast<index_t>(g.padded_w)) w -= static_cast<index_t>(g.padded_w);
  return h < static_cast<index_t>(g.height) && w < static_cast<index_t>(g.width);
}

// Reverse: row r == (h, w) of one image's output -> the window (counted within
// the image) and the token (i, j) inside it that holds that pixel.
template <typename index_t>
FASTSWIN_HD void reverse_source_token(const WindowGeometry& g, index_t r,
                                      index_t& window, index_t& i, index_t& j) {
  const index_t win_h = static_cast<index_t>(g.win_h);
  const index_t win_w = static_cast<index_t>(g.win_w);
  const index_t w = r % static_cast<index_t>(g.width);
  const index_t h = r / static_cast<index_t>(g.width);
  // Position in the rolled map: p + shift == h (mod Hp).
  index_t ph = h - static_cast<index_t>(g.shift_h);
  index_t pw = w - static_cast<index_t>(g.shift_w);
  if (ph < 0) ph += static_cast<index_t>(g.padded_h);
  if (pw < 0) pw += static_cast<index_t>(g.padded_w);
  window = (ph / win_h) * static_cast<index_t>(g.windows_w) + pw / win_w;
  i = ph % win_h;
  j = pw % win_w;
}

// Element offset of the source row of destination row r of image b, or -1 for
// a padded row. `src` holds the strides of the source's three leading dims.
template <bool kPartition, typename index_t>
FASTSWIN_HD int64_t source_row_offset(const WindowGeometry& g, const RowStrides& src,
                                      int64_t b, index_t r) {
  if (kPartition) {
    index_t h, w;
    if (!partition_source_pixel(g, r, h, w)) return -1;
    return b * src.s0 + static_cast<int64_t>(h) * src.s1 + static_cast<int64_t>(w) * src.s2;
  }
  index_t window, i, j;
  reverse_source_token(g, r, window, i, j);
  const int64_t n = b * g.windows_h * g.windows_w + window;
  return n * src.s0 + static_cast<int64_t>(i) * src.s1 + static_cast<int64_t>(j) * src.s2;
}

}  // namespace fastswin
