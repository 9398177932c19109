// A scope in which this thread's float arithmetic flushes denormal results and operands to
// zero (x86's MXCSR FTZ and DAZ bits), restored on leaving it: the thread may be a pool
// thread that runs other code next.
//
// Why: softmax's numerators of masked keys (exp(-100 - max) ~ 4e-44), of padding columns
// and of far-below-max logits are denormal, and so are products of them. Intel cores take
// a microcode assist of some 100 cycles for each operation on one; measured on a Xeon
// (AVX-512): the image-layout backward of Swin-T stage 1 took 150 ms with denormals, 44 ms
// flushed (one thread). A flushed value is below 1.2e-38 (fp32) or 2.2e-308 (fp64) in
// magnitude: far below any tolerance of the results.
#pragma once

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace fastswin {

class FlushDenormals {
 public:
#if defined(__x86_64__) || defined(_M_X64)
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushToZero | kDenormalsAreZero); }
  ~FlushDenormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 0x8000, kDenormalsAreZero = 0x0040;
  unsigned saved_;
#else
  // Elsewhere (aarch64 among them) the scope changes nothing; not measured there.
  FlushDenormals() = default;
#endif
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
};

}  // namespace fastswin
