// Window partition / reverse: CUDA kernel.
//
// One pass: every destination row is read once from its source row (or
// zero-filled for padding) and written once, so the op moves exactly the bytes
// of its input and output. Rows are copied in the widest unit (16, 8, 4 or 2
// bytes) that the row length, base pointers and strides allow.
#include <algorithm>
#include <climits>
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "window_process.h"

namespace fastswin {
namespace {

constexpr int kThreads = 256;
// Grid-stride loops cover the rest; this cap also keeps 32-bit row indices
// plus one stride from overflowing.
constexpr int64_t kMaxGridX = 1 << 20;
constexpr int64_t kMaxGridY = 65535;

// A copy unit of N bytes.
template <int N>
struct alignas(N) Unit {
  unsigned char bytes[N];
};

// Block (lanes, rows): `lanes` threads share one destination row and copy its
// units with stride `lanes`; the row's index math runs once per thread.
// Grid (x: row groups of one image, y: images), both loops stride over the
// whole range so any size fits the grid limits.
template <bool kPartition, bool kVideo, typename U, typename index_t>
__global__ void gather_rows_kernel(WindowGeometry geom, RowStrides src_strides,
                                   const unsigned char* __restrict__ src, U* __restrict__ dst,
                                   int64_t elem_bytes, int64_t units_per_row,
                                   int64_t src_unit_stride, index_t rows_per_image) {
  for (int64_t b = blockIdx.y; b < geom.batch; b += gridDim.y) {
    for (index_t r = static_cast<index_t>(blockIdx.x) * blockDim.y + threadIdx.y;
         r < rows_per_image; r += static_cast<index_t>(gridDim.x) * blockDim.y) {
      const int64_t offset = source_row_offset<kPartition, kVideo, index_t>(geom, src_strides, b, r);
      U* out_row = dst + (b * rows_per_image + r) * units_per_row;
      if (offset < 0) {
        for (int64_t u = threadIdx.x; u < units_per_row; u += blockDim.x) out_row[u] = U{};
      } else {
        const U* in_row = reinterpret_cast<const U*>(src + offset * elem_bytes);
        for (int64_t u = threadIdx.x; u < units_per_row; u += blockDim.x) {
          out_row[u] = in_row[u * src_unit_stride];
        }
      }
    }
  }
}

bool aligned(int64_t bytes, int n) { return bytes % n == 0; }

// The widest unit every source row start and the row length are aligned to.
int unit_bytes(const RowGather& p) {
  const int64_t elem = p.src.element_size();
  if (p.channel_stride != 1) return static_cast<int>(elem);
  const int64_t addr = reinterpret_cast<int64_t>(p.src.const_data_ptr());
  for (int n : {16, 8, 4, 2}) {
    if (n > elem && aligned(addr, n) && aligned(p.channels * elem, n) &&
        aligned(p.src_strides.s0 * elem, n) && aligned(p.src_strides.s1 * elem, n) &&
        aligned(p.src_strides.s2 * elem, n) && aligned(p.src_strides.s3 * elem, n)) {
      return n;
    }
  }
  return static_cast<int>(elem);
}

int lanes_for(int64_t units_per_row) {
  // About four units per thread amortizes the row's index math; at most a warp.
  int lanes = 1;
  while (lanes < 32 && lanes * 4 < units_per_row) lanes *= 2;
  return lanes;
}

template <bool kPartition, bool kVideo, int N, typename index_t>
void launch(const RowGather& p, int64_t units_per_row, int64_t src_unit_stride) {
  const int lanes = lanes_for(units_per_row);
  const dim3 block(lanes, kThreads / lanes);
  const int64_t groups = (p.rows_per_image + block.y - 1) / block.y;
  const dim3 grid(static_cast<unsigned>(std::min(groups, kMaxGridX)),
                  static_cast<unsigned>(std::min(p.geom.batch, kMaxGridY)));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  gather_rows_kernel<kPartition, kVideo, Unit<N>, index_t><<<grid, block, 0, stream>>>(
      p.geom, p.src_strides, static_cast<const unsigned char*>(p.src.const_data_ptr()),
      static_cast<Unit<N>*>(p.out.mutable_data_ptr()), p.src.element_size(), units_per_row,
      src_unit_stride, static_cast<index_t>(p.rows_per_image));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <bool kPartition, int N>
void launch_index(const RowGather& p, int64_t units_per_row, int64_t src_unit_stride) {
  // 32-bit index math inside one image whenever its padded map fits; the time dim's
  // divisions only for video maps.
  const bool small = partition_rows_per_image(p.geom) < INT_MAX / 2;
  if (is_video(p.geom)) {
    small ? launch<kPartition, true, N, int32_t>(p, units_per_row, src_unit_stride)
          : launch<kPartition, true, N, int64_t>(p, units_per_row, src_unit_stride);
  } else {
    small ? launch<kPartition, false, N, int32_t>(p, units_per_row, src_unit_stride)
          : launch<kPartition, false, N, int64_t>(p, units_per_row, src_unit_stride);
  }
}

template <bool kPartition>
void launch_unit(const RowGather& p) {
  const int n = unit_bytes(p);
  const int64_t elem = p.src.element_size();
  const int64_t units_per_row = p.channels * elem / n;
  // With a strided last dim a unit is one element, `channel_stride` apart.
  const int64_t src_unit_stride = p.channel_stride == 1 ? 1 : p.channel_stride;
  switch (n) {
    case 16: return launch_index<kPartition, 16>(p, units_per_row, src_unit_stride);
    case 8: return launch_index<kPartition, 8>(p, units_per_row, src_unit_stride);
    case 4: return launch_index<kPartition, 4>(p, units_per_row, src_unit_stride);
    case 2: return launch_index<kPartition, 2>(p, units_per_row, src_unit_stride);
    default: return launch_index<kPartition, 1>(p, units_per_row, src_unit_stride);
  }
}

void run_cuda(const RowGather& p) {
  if (p.out.numel() == 0) return;
  if (p.partition) {
    launch_unit<true>(p);
  } else {
    launch_unit<false>(p);
  }
}

at::Tensor window_partition_cuda(const at::Tensor& x, at::IntArrayRef window_size,
                                 at::IntArrayRef shift_size) {
  const c10::cuda::CUDAGuard guard(x.device());
  RowGather p = plan_window_partition(x, window_size, shift_size);
  run_cuda(p);
  return p.out;
}

at::Tensor window_reverse_3d_cuda(const at::Tensor& windows, at::IntArrayRef window_size,
                                  at::IntArrayRef size, at::IntArrayRef shift_size) {
  const c10::cuda::CUDAGuard guard(windows.device());
  RowGather p = plan_window_reverse(windows, window_size, size, shift_size);
  run_cuda(p);
  return p.out;
}

at::Tensor window_reverse_cuda(const at::Tensor& windows, at::IntArrayRef window_size,
                               int64_t height, int64_t width, at::IntArrayRef shift_size) {
  return window_reverse_3d_cuda(windows, window_size, {height, width}, shift_size);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastswin, CUDA, m) {
  m.impl("window_partition", &window_partition_cuda);
  m.impl("window_reverse", &window_reverse_cuda);
  m.impl("window_partition_3d", &window_partition_cuda);
  m.impl("window_reverse_3d", &window_reverse_3d_cuda);
}

}  // namespace fastswin
