// Window attention on the window layout, CPU forward and backward: q, k, v of
// (B_, heads, N, d), any strides, one task per window; mask[b % nW] (an additive
// (nW, N, N) tensor) joins the logits. The per-head math is the image layout's
// (window_attention_heads.h); the forward also returns the log-sum-exp of every row's
// logits, (B_, heads, N) in the accumulation type. Outputs and gradients are
// (B_, heads, N, d) views of contiguous (B_, N, heads, d) buffers, as the Triton ops'.
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "denormals.h"
#include "window_attention_cpu.h"
#include "window_attention_heads.h"

namespace fastswin {
namespace {

// One call: the heads' shared plan, the operands and the mask in the accumulation type.
struct WindowCall : AttentionHeads {
  int64_t windows, mask_windows;  // B_, and nW (0 without a mask)
  at::Tensor q, k, v, mask;
};

WindowCall plan_windows(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                        const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
                        const std::optional<at::Tensor>& logit_scale, double scale) {
  const char* op = logit_scale.has_value() ? "fastswin.cosine_window_attention" : "fastswin.window_attention";
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(), op,
              ": q, k, v must be (B_, heads, N, d) of one shape, got ", q.sizes(), ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(), op,
              ": q, k, v must share a dtype");
  WindowCall c;
  c.windows = q.size(0);
  c.heads = q.size(1);
  c.tokens = q.size(2);
  c.head_dim = q.size(3);
  c.channels = c.heads * c.head_dim;
  c.scale = scale;
  c.q = q;
  c.k = k;
  c.v = v;
  const at::ScalarType acc = at::toOpMathType(q.scalar_type());
  plan_heads(c, bias, logit_scale, acc, op);
  c.mask_windows = 0;
  if (mask.has_value()) {
    TORCH_CHECK(mask->dim() == 3 && mask->size(0) > 0 && mask->size(1) == c.tokens && mask->size(2) == c.tokens &&
                    c.windows % mask->size(0) == 0,
                op, ": mask must be (nW, N, N) with N = ", c.tokens, " and B_ = ", c.windows,
                " a multiple of nW, got ", mask->sizes());
    c.mask_windows = mask->size(0);
    c.mask = small(*mask, acc);
  }
  return c;
}

// A (B_, heads, N, d) operand's rows: token n of window b, every head's d values.
template <typename scalar_t>
struct HeadRows {
  const scalar_t* data;
  int64_t window, head, token, element, heads, d;

  explicit HeadRows(const at::Tensor& x)
      : data(x.const_data_ptr<scalar_t>()), window(x.stride(0)), head(x.stride(1)), token(x.stride(2)),
        element(x.stride(3)), heads(x.size(1)), d(x.size(3)) {}

  template <typename acc_t>
  void gather(int64_t b, int64_t n, acc_t* row) const {
    const scalar_t* first = data + b * window + n * token;
    for (int64_t h = 0; h < heads; ++h) convert_row(first + h * head, element, d, row + h * d);
  }
};

// Window b's q, k, v rows into t.rows, and its mask (N, NC; zero padding columns) or nullptr.
template <typename scalar_t, typename acc_t>
const acc_t* load_windows(const WindowCall& c, const HeadRows<scalar_t> (&qkv)[3], int64_t b, Tiles<acc_t>& t) {
  for (int64_t n = 0; n < t.N; ++n) {
    for (int64_t part = 0; part < 3; ++part) qkv[part].gather(b, n, t.rows.data() + n * t.width + part * c.channels);
  }
  if (!c.mask.defined()) return nullptr;
  const acc_t* mask = c.mask.const_data_ptr<acc_t>() + (b % c.mask_windows) * t.N * t.N;
  for (int64_t i = 0; i < t.N; ++i) std::copy(mask + i * t.N, mask + (i + 1) * t.N, t.mask.data() + i * t.NC);
  return t.mask.data();
}

// A contiguous (B_, N, heads, d) buffer, seen as (B_, heads, N, d).
at::Tensor bshd_empty(const at::Tensor& q) {
  return at::empty({q.size(0), q.size(2), q.size(1), q.size(3)}, q.options()).transpose(1, 2);
}

template <typename scalar_t>
void forward_windows(const WindowCall& c, const at::Tensor& out_rows_, const at::Tensor& lse_rows) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = c.tokens, C = c.channels;
  const HeadRows<scalar_t> qkv[3] = {HeadRows<scalar_t>(c.q), HeadRows<scalar_t>(c.k), HeadRows<scalar_t>(c.v)};
  scalar_t* out = out_rows_.mutable_data_ptr<scalar_t>();
  acc_t* lse = lse_rows.mutable_data_ptr<acc_t>();
  const std::vector<acc_t> logit_init = logit_inits<acc_t>(c);
  at::parallel_for(0, c.windows, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;  // denormals.h says why
    Tiles<acc_t> t(N, c.head_dim, 3 * C, /*backward=*/false);
    std::vector<acc_t> out_rows(N * C);
    for (int64_t b = begin; b < end; ++b) {
      const acc_t* mask = load_windows(c, qkv, b, t);
      for (int64_t head = 0; head < c.heads; ++head) {
        forward_head(c, t, head, logit_init.data(), mask, out_rows.data(), lse + (b * c.heads + head) * N);
      }
      store_row(out_rows.data(), N * C, out + b * N * C);
    }
  });
}

std::tuple<at::Tensor, at::Tensor> window_attention_cpu(const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v, const std::optional<at::Tensor>& bias,
                                                        const std::optional<at::Tensor>& mask,
                                                        const std::optional<at::Tensor>& logit_scale, double scale) {
  const WindowCall c = plan_windows(q, k, v, bias, mask, logit_scale, scale);
  const at::Tensor out = bshd_empty(q);
  const at::Tensor lse = at::empty({c.windows, c.heads, c.tokens}, q.options().dtype(at::toOpMathType(q.scalar_type())));
  if (out.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "window_attention_cpu",
                                    [&] { forward_windows<scalar_t>(c, out, lse); });
  }
  return {out, lse};
}

template <typename scalar_t>
std::vector<Partials<at::opmath_type<scalar_t>>> backward_windows(const WindowCall& c, const at::Tensor& grad_out,
                                                                  const at::Tensor (&grads)[3], bool bias_grad,
                                                                  const std::vector<bool>& scale_passes) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = c.tokens, C = c.channels;
  const HeadRows<scalar_t> qkv[3] = {HeadRows<scalar_t>(c.q), HeadRows<scalar_t>(c.k), HeadRows<scalar_t>(c.v)};
  const HeadRows<scalar_t> dout(grad_out);
  scalar_t* dqkv[3] = {grads[0].mutable_data_ptr<scalar_t>(), grads[1].mutable_data_ptr<scalar_t>(),
                       grads[2].mutable_data_ptr<scalar_t>()};
  const std::vector<acc_t> logit_init = logit_inits<acc_t>(c);
  return backward_chunks<acc_t>(c, c.windows, bias_grad, 0,
                                [&](int64_t b, int64_t, Tiles<acc_t>& t, GradTiles<acc_t>& gt, Partials<acc_t>& part) {
                                  const acc_t* mask = load_windows(c, qkv, b, t);
                                  for (int64_t n = 0; n < N; ++n) dout.gather(b, n, gt.dout.data() + n * C);
                                  for (int64_t head = 0; head < c.heads; ++head) {
                                    backward_head(c, t, gt, head, logit_init.data(), mask, scale_passes[head], part);
                                  }
                                  for (int64_t n = 0; n < N; ++n) {  // the d(qkv) row's thirds to dq, dk, dv
                                    for (int64_t p = 0; p < 3; ++p) {
                                      store_row(gt.drows.data() + n * 3 * C + p * C, C, dqkv[p] + (b * N + n) * C);
                                    }
                                  }
                                });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> window_attention_cpu_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
    const std::optional<at::Tensor>& logit_scale, double scale, bool bias_grad, bool logit_scale_grad) {
  // out and lse: in the signature every backend's backward shares; P is recomputed
  // (window_attention_cpu_backward.cpp says why).
  const WindowCall c = plan_windows(q, k, v, bias, mask, logit_scale, scale);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && grad_out.scalar_type() == q.scalar_type(),
              "fastswin.window_attention backward: grad_out must be ", q.sizes(), " of ", q.scalar_type());
  const at::Tensor grads[3] = {bshd_empty(q), bshd_empty(q), bshd_empty(q)};
  bias_grad = bias_grad && bias.has_value();
  logit_scale_grad = logit_scale_grad && logit_scale.has_value();
  const std::vector<bool> scale_passes = clamp_passes(logit_scale, c.heads);
  at::Tensor dbias = q.new_empty({0}), dscale = q.new_empty({0});
  if (q.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, q.scalar_type(), "window_attention_cpu_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto parts = backward_windows<scalar_t>(c, grad_out, grads, bias_grad, scale_passes);
      if (bias_grad) dbias = summed(parts, &Partials<acc_t>::bias, *bias);
      if (logit_scale_grad) dscale = summed(parts, &Partials<acc_t>::scale, *logit_scale);
    });
  }
  return {grads[0], grads[1], grads[2], dbias, dscale};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastswin, m) {
  m.def(
      "window_attention_cpu(Tensor q, Tensor k, Tensor v, Tensor? bias, Tensor? mask, Tensor? logit_scale, "
      "float scale) -> (Tensor, Tensor)");
  m.def(
      "window_attention_cpu_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? bias, Tensor? mask, Tensor? logit_scale, float scale, bool bias_grad, bool logit_scale_grad) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastswin, CPU, m) {
  m.impl("window_attention_cpu", &window_attention_cpu);
  m.impl("window_attention_cpu_backward", &window_attention_cpu_backward);
}

}  // namespace fastswin
