// Host side of window partition / reverse: argument checks, output allocation
// and the description of the row gather that the CPU and CUDA kernels run.
#pragma once

#include <ATen/core/Tensor.h>

#include "window_index.h"

namespace fastswin {

// One op call, lowered to a row gather: `rows_per_image` destination rows of
// `channels` elements per image, read from `src` at the offsets that
// source_row_offset<partition> gives.
struct RowGather {
  WindowGeometry geom;
  RowStrides src_strides;   // elements, leading dims of src (s1 = 0 for a 2D source)
  int64_t channel_stride;   // elements, last dim of src
  int64_t rows_per_image;
  int64_t channels;
  bool partition;
  at::Tensor src;
  at::Tensor out;           // contiguous, allocated here
};

// 2D: x (B, H, W, C), window_size and shift_size (h, w); 3D: x (B, T, H, W, C), (t, h, w).
RowGather plan_window_partition(const at::Tensor& x, at::IntArrayRef window_size,
                                at::IntArrayRef shift_size);

// 2D: windows (B*nW, wh, ww, C), sizes (H, W); 3D: (B*nW, wd, wh, ww, C), (T, H, W).
RowGather plan_window_reverse(const at::Tensor& windows, at::IntArrayRef window_size,
                              at::IntArrayRef sizes, at::IntArrayRef shift_size);

}  // namespace fastswin
