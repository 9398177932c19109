// The fp32 inner loops of the CPU window attention, on padded tiles in GCC vector
// types: a vector of 16 floats is one AVX-512 register, two AVX2 or four SSE / NEON
// registers. On x86-64 each function is compiled for x86-64-v4 (AVX-512), v3 (AVX2,
// FMA) and the baseline, and the loader picks the one the CPU runs (target_clones), so
// the build does not assume the build machine's ISA.
//
// Tiles: row counts a multiple of kRows and column counts of kLanes, padding rows and
// columns zeros (q, k, v) or -inf logits.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FASTSWIN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
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

inline floatv splat(float x) { return floatv{} + x; }

// c (rows, cols) += a b: a (rows, depth) with rows `lda` apart, b (depth, cols). Every
// product of the attention (q k^T, P V and the backward's) is one. Each tile keeps
// kRows x 2 vectors of c in registers while it runs along depth.
FASTSWIN_CLONES
inline void add_product(const float* a, int64_t lda, const float* b, float* c, int64_t rows, int64_t cols,
                        int64_t depth) {
  for (int64_t i = 0; i < rows; i += kRows) {
    for (int64_t j = 0; j < cols; j += 2 * kLanes) {
      const bool pair = j + kLanes < cols;
      floatv acc[kRows][2] = {};
      for (int64_t e = 0; e < depth; ++e) {
        const floatv b0 = load(b + e * cols + j);
        const floatv b1 = pair ? load(b + e * cols + j + kLanes) : floatv{};
        for (int64_t r = 0; r < kRows; ++r) {
          const floatv ar = splat(a[(i + r) * lda + e]);
          acc[r][0] += ar * b0;
          acc[r][1] += ar * b1;
        }
      }
      for (int64_t r = 0; r < kRows; ++r) {
        float* row = c + (i + r) * cols + j;
        store(row, load(row) + acc[r][0]);
        if (pair) store(row + kLanes, load(row + kLanes) + acc[r][1]);
      }
    }
  }
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
    float row_max = m[0];
    for (int64_t l = 1; l < kLanes; ++l) row_max = m[l] > row_max ? m[l] : row_max;
    floatv total{};
    for (int64_t j = 0; j < cols; j += kLanes) {
      const floatv x = exp_nonpositive(load(row + j) - row_max);
      store(row + j, x);
      total += x;
    }
    float row_sum = 0;
    for (int64_t l = 0; l < kLanes; ++l) row_sum += total[l];
    max[i] = row_max;
    sum[i] = row_sum;
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
    float delta = 0;
    for (int64_t l = 0; l < kLanes; ++l) delta += total[l];
    for (int64_t j = 0; j < cols; j += kLanes) store(gi + j, load(pi + j) * (load(gi + j) - delta));
  }
}

// The same loops in any type, plainly (the fp64 path, which the tests compare
// with the fp64 reference; the float overloads above are the fast path).
template <typename T>
void add_product(const T* a, int64_t lda, const T* b, T* c, int64_t rows, int64_t cols, int64_t depth) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t e = 0; e < depth; ++e) {
      for (int64_t j = 0; j < cols; ++j) c[i * cols + j] += a[i * lda + e] * b[e * cols + j];
    }
  }
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
