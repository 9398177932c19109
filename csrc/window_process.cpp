// Window partition / reverse: op schemas, argument checks and the CPU kernel.
#include "window_process.h"

#include <cstring>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

namespace fastswin {
namespace {

void check_pair(at::IntArrayRef v, const char* name, int64_t min_value) {
  TORCH_CHECK(v.size() == 2, "fastswin: ", name, " must have two entries (h, w), got ", v.size());
  TORCH_CHECK(v[0] >= min_value && v[1] >= min_value, "fastswin: ", name, " must be >= ",
              min_value, ", got (", v[0], ", ", v[1], ")");
}

// The gather that reads `src` (a 4-d tensor, channels last) into a new tensor of `out_sizes`.
RowGather make_gather(const at::Tensor& src, const WindowGeometry& geom, bool partition,
                      at::IntArrayRef out_sizes) {
  RowGather p;
  p.geom = geom;
  p.src_strides = RowStrides{src.stride(0), src.stride(1), src.stride(2)};
  p.channel_stride = src.stride(3);
  p.rows_per_image = partition ? partition_rows_per_image(geom) : reverse_rows_per_image(geom);
  p.channels = src.size(3);
  p.partition = partition;
  p.src = src;
  p.out = at::empty(out_sizes, src.options());
  return p;
}

}  // namespace

RowGather plan_window_partition(const at::Tensor& x, at::IntArrayRef window_size,
                                at::IntArrayRef shift_size) {
  TORCH_CHECK(x.dim() == 4, "fastswin.window_partition: x must be (B, H, W, C), got ", x.dim(),
              " dims");
  check_pair(window_size, "window_size", 1);
  check_pair(shift_size, "shift_size", 0);
  const WindowGeometry geom = make_geometry(x.size(0), x.size(1), x.size(2), window_size[0],
                                            window_size[1], shift_size[0], shift_size[1]);
  return make_gather(x, geom, /*partition=*/true,
                     {geom.batch * geom.windows_h * geom.windows_w, window_size[0], window_size[1],
                      x.size(3)});
}

RowGather plan_window_reverse(const at::Tensor& windows, at::IntArrayRef window_size,
                              int64_t height, int64_t width, at::IntArrayRef shift_size) {
  TORCH_CHECK(windows.dim() == 4,
              "fastswin.window_reverse: windows must be (B*nW, wh, ww, C), got ", windows.dim(),
              " dims");
  check_pair(window_size, "window_size", 1);
  check_pair(shift_size, "shift_size", 0);
  TORCH_CHECK(height > 0 && width > 0, "fastswin.window_reverse: H and W must be positive, got (",
              height, ", ", width, ")");
  TORCH_CHECK(windows.size(1) == window_size[0] && windows.size(2) == window_size[1],
              "fastswin.window_reverse: windows are ", windows.size(1), "x", windows.size(2),
              " but window_size is (", window_size[0], ", ", window_size[1], ")");
  const int64_t per_image = ceil_div(height, window_size[0]) * ceil_div(width, window_size[1]);
  TORCH_CHECK(windows.size(0) % per_image == 0, "fastswin.window_reverse: ", windows.size(0),
              " windows cannot tile a ", height, "x", width, " map (", per_image,
              " windows per image)");
  const WindowGeometry geom = make_geometry(windows.size(0) / per_image, height, width,
                                            window_size[0], window_size[1], shift_size[0],
                                            shift_size[1]);
  return make_gather(windows, geom, /*partition=*/false,
                     {geom.batch, height, width, windows.size(3)});
}

namespace {

// Copies whole rows as bytes: the ops move data and never look at values, so
// one kernel serves every dtype. memcpy is the vectorized copy along C.
template <bool kPartition>
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
          source_row_offset<kPartition, int64_t>(p.geom, p.src_strides, b, row % p.rows_per_image);
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
  if (p.partition) {
    gather_rows_cpu<true>(p);
  } else {
    gather_rows_cpu<false>(p);
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
  RowGather p = plan_window_reverse(windows, window_size, height, width, shift_size);
  run_cpu(p);
  return p.out;
}

}  // namespace

TORCH_LIBRARY(fastswin, m) {
  m.def("window_partition(Tensor x, int[2] window_size, int[2] shift_size) -> Tensor");
  m.def(
      "window_reverse(Tensor windows, int[2] window_size, int height, int width, "
      "int[2] shift_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastswin, CPU, m) {
  m.impl("window_partition", &window_partition_cpu);
  m.impl("window_reverse", &window_reverse_cpu);
}

}  // namespace fastswin
