// The fp32 inner loops of the CPU window attention, on padded tiles in GCC vector
// types: a vector of 16 floats is one AVX-512 register, two AVX2 or four SSE / NEON
// registers. On x86-64 each function is compiled for x86-64-v4 (AVX-512), v3 (AVX2,
// FMA) and the baseline, and the loader picks the one the CPU runs (target_clones), so
// the build does not assume the build machine's ISA.
//
// Tiles: row counts a multiple of kRows and column counts of kLanes. What their padding
// holds is the caller's to choose (window_attention_cpu.h); a column of a product depends
// only on the same column of b, and a row only on the same row of a.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTSWIN_X86_GCC 1
#include <immintrin.h>
#define FASTSWIN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FASTSWIN_X86_GCC 0
#define FASTSWIN_CLONES
#endif

namespace fastswin {

constexpr int64_t kLanes = 16;  // floats in a vector
constexpr int64_t kRows = 4;    // query rows a register tile holds (x 2 vectors: 8 FMA chains)

typedef float floatv __attribute__((vector_size(kLanes * sizeof(float))));

inline floatv load(const float* p) {
  floatv v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store(float* p, floatv v) { std::memcpy(p, &v, sizeof(v)); }

// (A broadcast from memory, x - floatv{} or a lane-wise fill, compiles to 16 masked
// broadcasts in GCC 12's x86-64-v4 code; this adds in a register and broadcasts that.)
inline floatv splat(float x) { return floatv{} + x; }

// A matrix in memory: element (i, j) at data[i * row + j * col]. Its transpose is the same
// memory with the strides swapped.
template <typename T>
struct Strided {
  T* data;
  int64_t row, col = 1;

  T& operator()(int64_t i, int64_t j) const { return data[i * row + j * col]; }
  Strided transposed() const { return {data, col, row}; }
};

// A matrix with contiguous rows `row` apart (what a product reads whole vectors of).
template <typename T>
struct Rows {
  T* data;
  int64_t row;

  T& operator()(int64_t i, int64_t j) const { return data[i * row + j]; }
  Strided<T> strided() const { return {data, row, 1}; }
};

// c (rows, cols) = init + row_scale * (a b), row_scale one factor per row of c (nullptr:
// 1), init c itself where its data is nullptr (c += ...). Every product of the attention
// (q k^T, P V and the backward's) is one. a (rows, depth) is read as scalars, in any
// layout; b (depth, cols), c and init have contiguous rows, read and written up to cols
// rounded up to a multiple of kLanes. rows: a multiple of kRows. Each tile keeps kRows x 2
// vectors of c in registers while it runs along depth, each scalar of a broadcast to meet
// two vectors of b.
//
// Two builds of the loop (tile_product.inc): GCC broadcasts a scalar through a register,
// on the port the AVX-512 FMAs issue on too, unless it is an AVX-512 intrinsic's operand,
// which it folds into the FMA as a broadcast from memory. That build, for CPUs with
// x86-64-v4, ran the products 1.3-1.4x faster on a Xeon (Swin's q k^T and P V tiles).
namespace product_any {
#define FASTSWIN_PRODUCT_TARGET FASTSWIN_CLONES
#define FASTSWIN_SPLAT_FROM(p) splat(*(p))
#include "tile_product.inc"
#undef FASTSWIN_PRODUCT_TARGET
#undef FASTSWIN_SPLAT_FROM
}  // namespace product_any

#if FASTSWIN_X86_GCC
#pragma GCC push_options
#pragma GCC target("arch=x86-64-v4")
namespace product_v4 {
#define FASTSWIN_PRODUCT_TARGET
#define FASTSWIN_SPLAT_FROM(p) reinterpret_cast<floatv>(_mm512_set1_ps(*(p)))
#include "tile_product.inc"
#undef FASTSWIN_PRODUCT_TARGET
#undef FASTSWIN_SPLAT_FROM
}  // namespace product_v4
#pragma GCC pop_options

inline bool has_x86_64_v4() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                          __builtin_cpu_supports("avx512vl");
  return has;
}
#endif

inline void add_product(Strided<const float> a, Rows<const float> b, Rows<float> c, int64_t rows, int64_t cols,
                        int64_t depth, const float* row_scale = nullptr, Rows<const float> init = {nullptr, 0}) {
#if FASTSWIN_X86_GCC
  if (has_x86_64_v4()) return product_v4::add_product(a, b, c, rows, cols, depth, row_scale, init);
#endif
  product_any::add_product(a, b, c, rows, cols, depth, row_scale, init);
}

// s += x over n elements, a multiple of kLanes (a tile's rows).
FASTSWIN_CLONES
inline void add_to(float* s, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += kLanes) store(s + i, load(s + i) + load(x + i));
}

// The sum and the maximum of a vector's lanes, pairwise (halves, then quarters, ...).
#if defined(__clang__)
#define FASTSWIN_SWAP_LANES(v, ...) __builtin_shufflevector(v, v, __VA_ARGS__)
#else  // GCC before 12 has only __builtin_shuffle
#define FASTSWIN_SWAP_LANES(v, ...) __builtin_shuffle(v, intv{__VA_ARGS__})
#endif
template <typename Op>
inline float reduce_lanes(floatv v, Op op) {
  typedef int32_t intv __attribute__((vector_size(kLanes * sizeof(int32_t))));
  v = op(v, FASTSWIN_SWAP_LANES(v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  v = op(v, FASTSWIN_SWAP_LANES(v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  v = op(v, FASTSWIN_SWAP_LANES(v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  v = op(v, FASTSWIN_SWAP_LANES(v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
  return v[0];
}
#undef FASTSWIN_SWAP_LANES

inline float sum_lanes(floatv v) {
  return reduce_lanes(v, [](floatv a, floatv b) { return a + b; });
}

inline float max_lanes(floatv v) {
  return reduce_lanes(v, [](floatv a, floatv b) { return a > b ? a : b; });
}

// exp(x) for x <= 0, lane-wise (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in
// r, 2^n from the exponent bits); within 2 ulp of std::exp, and 1e-38 instead of 0
// below -87 (softmax terms that vanish beside the row's maximum, which gives 1).
inline floatv exp_nonpositive(floatv x) {
  typedef int32_t intv __attribute__((vector_size(kLanes * sizeof(int32_t))));
  x = x < -87.0f ? splat(-87.0f) : x;
  const floatv n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round(x / ln2)
  const floatv r = x - n * 0.693359375f + n * 2.12194440e-4f;
  floatv p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const intv bits = (__builtin_convertvector(n, intv) + 127) << 23;
  floatv scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Each row of s (rows, cols) becomes exp(s - max); max and sum get the row's maximum
// and the sum of its exponentials.
FASTSWIN_CLONES
inline void softmax_numerators(float* s, int64_t rows, int64_t cols, float* max, float* sum) {
  for (int64_t i = 0; i < rows; ++i) {
    float* row = s + i * cols;
    floatv m = load(row);
    for (int64_t j = kLanes; j < cols; j += kLanes) {
      const floatv x = load(row + j);
      m = x > m ? x : m;
    }
    const float row_max = max_lanes(m);
    floatv total{};
    for (int64_t j = 0; j < cols; j += kLanes) {
      const floatv x = exp_nonpositive(load(row + j) - row_max);
      store(row + j, x);
      total += x;
    }
    max[i] = row_max;
    sum[i] = sum_lanes(total);
  }
}

// Each row of s (rows, cols) becomes its softmax: P, as the forward computes it.
FASTSWIN_CLONES
inline void softmax_rows(float* s, int64_t rows, int64_t cols, float* max, float* sum) {
  softmax_numerators(s, rows, cols, max, sum);
  for (int64_t i = 0; i < rows; ++i) {
    const floatv inv = splat(1.0f / sum[i]);
    for (int64_t j = 0; j < cols; j += kLanes) store(s + i * cols + j, load(s + i * cols + j) * inv);
  }
}

// The softmax's backward, in place: g (rows, cols) holds dP on entry, dS = P * (dP -
// rowsum(P * dP)) on return.
FASTSWIN_CLONES
inline void softmax_backward(const float* p, float* g, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    const float* pi = p + i * cols;
    float* gi = g + i * cols;
    floatv total{};
    for (int64_t j = 0; j < cols; j += kLanes) total += load(pi + j) * load(gi + j);
    const float delta = sum_lanes(total);
    for (int64_t j = 0; j < cols; j += kLanes) store(gi + j, load(pi + j) * (load(gi + j) - delta));
  }
}

// The same loops in any type, plainly (the fp64 path, which the tests compare
// with the fp64 reference; the float overloads above are the fast path), over the same
// columns.
template <typename T>
void add_product(Strided<const T> a, Rows<const T> b, Rows<T> c, int64_t rows, int64_t cols, int64_t depth,
                 const T* row_scale = nullptr, Rows<const T> init = {nullptr, 0}) {
  const int64_t padded_cols = (cols + kLanes - 1) / kLanes * kLanes;
  for (int64_t i = 0; i < rows; ++i) {
    const T factor = row_scale ? row_scale[i] : 1;
    for (int64_t j = 0; j < padded_cols; ++j) {
      T sum = 0;
      for (int64_t e = 0; e < depth; ++e) sum += a(i, e) * b(e, j);
      c(i, j) = (init.data ? init(i, j) : c(i, j)) + factor * sum;
    }
  }
}

template <typename T>
void add_to(T* s, const T* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) s[i] += x[i];
}

template <typename T>
void softmax_numerators(T* s, int64_t rows, int64_t cols, T* max, T* sum) {
  for (int64_t i = 0; i < rows; ++i) {
    T* row = s + i * cols;
    max[i] = row[0];
    for (int64_t j = 1; j < cols; ++j) max[i] = row[j] > max[i] ? row[j] : max[i];
    sum[i] = 0;
    for (int64_t j = 0; j < cols; ++j) sum[i] += (row[j] = std::exp(row[j] - max[i]));
  }
}

template <typename T>
void softmax_rows(T* s, int64_t rows, int64_t cols, T* max, T* sum) {
  softmax_numerators(s, rows, cols, max, sum);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) s[i * cols + j] /= sum[i];
  }
}

template <typename T>
void softmax_backward(const T* p, T* g, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; ++i) {
    T delta = 0;
    for (int64_t j = 0; j < cols; ++j) delta += p[i * cols + j] * g[i * cols + j];
    for (int64_t j = 0; j < cols; ++j) g[i * cols + j] = p[i * cols + j] * (g[i * cols + j] - delta);
  }
}

}  // namespace fastswin
