// Window partition / reverse: op schemas, argument checks and the CPU kernel.
#include "window_process.h"

#include <array>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace fastswin {
namespace {

// Window and shift sizes: one entry per spatial dim, dims of them (2 or 3).
void check_sizes(at::IntArrayRef v, size_t dims, const char* name, int64_t min_value) {
  TORCH_CHECK(v.size() == dims, "fastswin: ", name, " must have ", dims, " entries, got ", v.size());
  for (const int64_t entry : v) {
    TORCH_CHECK(entry >= min_value, "fastswin: ", name, " must be >= ", min_value, ", got ", v);
  }
}

// The spatial dims (2 or 3, from window_size) after checking that `src` (`what`) has
// them in the layout named for them, and window and shift sizes of as many entries.
size_t check_layout(const at::Tensor& src, at::IntArrayRef window_size, at::IntArrayRef shift_size,
                    const char* what, const char* layout_2d, const char* layout_3d) {
  const size_t dims = window_size.size();
  TORCH_CHECK(dims == 2 || dims == 3, "fastswin: window_size must have 2 or 3 entries, got ", dims);
  TORCH_CHECK(src.dim() == static_cast<int64_t>(dims) + 2, "fastswin.", what, " must be ",
              dims == 2 ? layout_2d : layout_3d, ", got ", src.dim(), " dims");
  check_sizes(window_size, dims, "window_size", 1);
  check_sizes(shift_size, dims, "shift_size", 0);
  return dims;
}

// A 2D map is a video map of depth 1: {t, h, w} from two or three entries.
std::array<int64_t, 3> as_3d(at::IntArrayRef v, int64_t missing) {
  return v.size() == 3 ? std::array<int64_t, 3>{v[0], v[1], v[2]}
                       : std::array<int64_t, 3>{missing, v[0], v[1]};
}

WindowGeometry geometry(int64_t batch, at::IntArrayRef sizes, at::IntArrayRef window_size,
                        at::IntArrayRef shift_size) {
  const auto s = as_3d(sizes, 1), win = as_3d(window_size, 1), shift = as_3d(shift_size, 0);
  return make_geometry(batch, s[0], s[1], s[2], win[0], win[1], win[2], shift[0], shift[1], shift[2]);
}

// The gather that reads `src` (channels last, 2 or 3 spatial dims) into a new tensor of
// `out_sizes`.
RowGather make_gather(const at::Tensor& src, const WindowGeometry& geom, bool partition,
                      at::IntArrayRef out_sizes) {
  const bool video = src.dim() == 5;
  RowGather p;
  p.geom = geom;
  p.src_strides = video ? RowStrides{src.stride(0), src.stride(1), src.stride(2), src.stride(3)}
                        : RowStrides{src.stride(0), 0, src.stride(1), src.stride(2)};
  p.channel_stride = src.stride(-1);
  p.rows_per_image = partition ? partition_rows_per_image(geom) : reverse_rows_per_image(geom);
  p.channels = src.size(-1);
  p.partition = partition;
  p.src = src;
  p.out = at::empty(out_sizes, src.options());
  return p;
}

}  // namespace

RowGather plan_window_partition(const at::Tensor& x, at::IntArrayRef window_size,
                                at::IntArrayRef shift_size) {
  const size_t dims = check_layout(x, window_size, shift_size, "window_partition: x", "(B, H, W, C)",
                                   "(B, T, H, W, C)");
  const WindowGeometry geom = geometry(x.size(0), x.sizes().slice(1, dims), window_size, shift_size);
  std::vector<int64_t> out_sizes{geom.batch * windows_per_image(geom)};
  out_sizes.insert(out_sizes.end(), window_size.begin(), window_size.end());
  out_sizes.push_back(x.size(-1));
  return make_gather(x, geom, /*partition=*/true, out_sizes);
}

RowGather plan_window_reverse(const at::Tensor& windows, at::IntArrayRef window_size,
                              at::IntArrayRef sizes, at::IntArrayRef shift_size) {
  const size_t dims = check_layout(windows, window_size, shift_size, "window_reverse: windows",
                                   "(B*nW, wh, ww, C)", "(B*nW, wd, wh, ww, C)");
  check_sizes(sizes, dims, "the map size", 1);
  TORCH_CHECK(windows.sizes().slice(1, dims) == window_size, "fastswin.window_reverse: windows are ",
              windows.sizes().slice(1, dims), " but window_size is ", window_size);
  int64_t per_image = 1;
  for (size_t d = 0; d < dims; ++d) per_image *= ceil_div(sizes[d], window_size[d]);
  TORCH_CHECK(windows.size(0) % per_image == 0, "fastswin.window_reverse: ", windows.size(0),
              " windows cannot tile a ", sizes, " map (", per_image, " windows per image)");
  const WindowGeometry geom = geometry(windows.size(0) / per_image, sizes, window_size, shift_size);
  std::vector<int64_t> out_sizes{geom.batch};
  out_sizes.insert(out_sizes.end(), sizes.begin(), sizes.end());
  out_sizes.push_back(windows.size(-1));
  return make_gather(windows, geom, /*partition=*/false, out_sizes);
}

namespace {

// Copies whole rows as bytes: the ops move data and never look at values, so
// one kernel serves every dtype. memcpy is the vectorized copy along C.
template <bool kPartition, bool kVideo>
void gather_rows_cpu(const RowGather& p) {
  const int64_t elem = p.src.element_size();
  const int64_t row_bytes = p.channels * elem;
  const char* src = static_cast<const char*>(p.src.const_data_ptr());
  char* dst = static_cast<char*>(p.out.mutable_data_ptr());
  const int64_t rows = p.geom.batch * p.rows_per_image;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(row_bytes, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / p.rows_per_image;
      const int64_t offset =
          source_row_offset<kPartition, kVideo, int64_t>(p.geom, p.src_strides, b, row % p.rows_per_image);
      char* out_row = dst + row * row_bytes;
      if (offset < 0) {
        std::memset(out_row, 0, row_bytes);
      } else if (p.channel_stride == 1) {
        std::memcpy(out_row, src + offset * elem, row_bytes);
      } else {
        for (int64_t c = 0; c < p.channels; ++c) {
          std::memcpy(out_row + c * elem, src + (offset + c * p.channel_stride) * elem, elem);
        }
      }
    }
  });
}

void run_cpu(const RowGather& p) {
  if (p.out.numel() == 0) return;
  const bool video = is_video(p.geom);
  if (p.partition) {
    video ? gather_rows_cpu<true, true>(p) : gather_rows_cpu<true, false>(p);
  } else {
    video ? gather_rows_cpu<false, true>(p) : gather_rows_cpu<false, false>(p);
  }
}

at::Tensor window_partition_cpu(const at::Tensor& x, at::IntArrayRef window_size,
                                at::IntArrayRef shift_size) {
  RowGather p = plan_window_partition(x, window_size, shift_size);
  run_cpu(p);
  return p.out;
}

at::Tensor window_reverse_cpu(const at::Tensor& windows, at::IntArrayRef window_size,
                              int64_t height, int64_t width, at::IntArrayRef shift_size) {
  RowGather p = plan_window_reverse(windows, window_size, {height, width}, shift_size);
  run_cpu(p);
  return p.out;
}

at::Tensor window_reverse_3d_cpu(const at::Tensor& windows, at::IntArrayRef window_size,
                                 at::IntArrayRef size, at::IntArrayRef shift_size) {
  RowGather p = plan_window_reverse(windows, window_size, size, shift_size);
  run_cpu(p);
  return p.out;
}

}  // namespace

TORCH_LIBRARY(fastswin, m) {
  m.def("window_partition(Tensor x, int[2] window_size, int[2] shift_size) -> Tensor");
  m.def(
      "window_reverse(Tensor windows, int[2] window_size, int height, int width, "
      "int[2] shift_size) -> Tensor");
  m.def("window_partition_3d(Tensor x, int[3] window_size, int[3] shift_size) -> Tensor");
  m.def("window_reverse_3d(Tensor windows, int[3] window_size, int[3] size, int[3] shift_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastswin, CPU, m) {
  m.impl("window_partition", &window_partition_cpu);
  m.impl("window_reverse", &window_reverse_cpu);
  m.impl("window_partition_3d", &window_partition_cpu);
  m.impl("window_reverse_3d", &window_reverse_3d_cpu);
}

}  // namespace fastswin
