// Shifted-window attention on the image layout, CPU backward. Each task (one window of
// one image) gathers its tokens' q, k, v rows as the forward does, recomputes P as the
// forward does (max, exponentials, sum; not exp(S - lse): an fp32 lse of v2's logits,
// up to 100, is off by an ulp of them, a row-wide error in P of 1e-6 that made the
// gradients several times less accurate than eager PyTorch's), and writes d(qkv) rows
// to its real tokens' pixels (every pixel belongs to one window: no two tasks write the
// same row). The reductions over windows
// (d bias, d logit_scale, and d qkv_bias from the padding tokens) go to per-chunk
// partials summed in chunk order: deterministic for a given thread count.
//
// Per head, with S the logits, P = softmax(S), O = P V and dO the output's gradient:
//   dV = P^T dO,  dS = P * (dP - rowsum(P * dP)) with dP = dO V^T,  d bias += dS,
//   dQ = c dS K,  dK = dS^T (c Q)   (v1: c = scale; v2: q, k normalized, c = the logit
//   multiplier m, then F.normalize's backward; d logit_scale = sum_i (m q^_i) . (dS K^)_i
//   where the clamp passes it).
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "window_attention_cpu.h"

namespace fastswin {
namespace {

// A backward task's extra tiles: the window's rows of dO (N, C; zero for padding tokens,
// whose output is cropped, then zero rows to NR and a vector of slack, as Tiles::rows
// for v), dP then dS (NR, NC), one head's products (NR, dv), the window's d(qkv) rows
// (N, 3C), and a row of q^.
template <typename acc_t>
struct GradTiles {
  std::vector<acc_t> dout, g, dq, dk, dv, drows, unit;

  explicit GradTiles(const Tiles<acc_t>& t)
      : dout(t.NR * t.width / 3 + kLanes), g(t.NR * t.NC), dq(t.NR * t.dv), dk(t.NR * t.dv), dv(t.NR * t.dv),
        drows(t.N * t.width), unit(t.d) {}
};

// One chunk's sums over its windows.
template <typename acc_t>
struct Partials {
  std::vector<acc_t> bias, scale, fill;
};

// The tiles the backward's products read besides kt: c q^ (NR, dv), k^ (NC, dv) and v
// transposed (dv, NC), from the norms load_head found.
template <typename acc_t>
void load_head_backward(Tiles<acc_t>& t, int64_t head, acc_t q_scale) {
  const Strided<const acc_t> q = t.head_q(head), k = t.head_k(head);
  const Rows<const acc_t> v = t.head_v(head);
  for (int64_t n = 0; n < t.N; ++n) {
    const acc_t fq = q_scale / t.q_norm[n], fk = 1 / t.k_norm[n];
    for (int64_t e = 0; e < t.d; ++e) {
      t.q[n * t.dv + e] = q(n, e) * fq;
      t.k[n * t.dv + e] = k(n, e) * fk;
      t.vt[e * t.NC + n] = v(n, e);
    }
  }
}

// F.normalize's backward: the gradient of x from that of x^ = x / max(|x|, eps), in place.
template <typename acc_t>
void normalize_backward(acc_t* grad, const acc_t* unit, acc_t norm, int64_t d) {
  if (norm <= static_cast<acc_t>(kNormalizeEps)) {  // the clamp: x^ = x / eps
    for (int64_t e = 0; e < d; ++e) grad[e] /= norm;
    return;
  }
  const acc_t along = dot(grad, unit, d);
  for (int64_t e = 0; e < d; ++e) grad[e] = (grad[e] - unit[e] * along) / norm;
}

struct BackwardCall {
  AttentionCall c;
  at::Tensor grad_out, dqkv;
  MapStrides grad_strides;
  bool bias_grad, scale_grad, fill_grad;
  std::vector<bool> scale_passes;  // per head: logit_scale <= log 100 (the clamp passes its gradient)
};

// Element offset of pixel `pixel`'s row (as token_sources numbers them) in a map of
// these strides.
inline int64_t pixel_offset(const WindowGeometry& g, const MapStrides& strides, int64_t pixel) {
  const int64_t w = pixel % g.width, h = (pixel / g.width) % g.height;
  const int64_t t = (pixel / (g.width * g.height)) % g.depth, b = pixel / reverse_rows_per_image(g);
  return strides.pixel(b, t, h, w);
}

template <typename scalar_t, bool kVideo>
void backward_task(const BackwardCall& k, int64_t task, int64_t next_task, const at::opmath_type<scalar_t>* logit_init,
                   Tiles<at::opmath_type<scalar_t>>& t, GradTiles<at::opmath_type<scalar_t>>& gt,
                   Partials<at::opmath_type<scalar_t>>& part) {
  using acc_t = at::opmath_type<scalar_t>;
  using Tile = Rows<acc_t>;
  using ConstTile = Rows<const acc_t>;
  const AttentionCall& c = k.c;
  const int64_t N = c.tokens, d = c.head_dim, C = c.channels, width = 3 * C, NR = t.NR, NC = t.NC, dv = t.dv;
  const acc_t* logit_mul = c.logit_mul.defined() ? c.logit_mul.const_data_ptr<acc_t>() : nullptr;
  const scalar_t* qkv = c.qkv.const_data_ptr<scalar_t>();
  const scalar_t* grad_out = k.grad_out.const_data_ptr<scalar_t>();
  scalar_t* dqkv = k.dqkv.mutable_data_ptr<scalar_t>();
  const acc_t scale = static_cast<acc_t>(1.0 / std::sqrt(static_cast<double>(d)));

  load_window<kVideo>(c, qkv, c.qkv_fill.const_data_ptr<acc_t>(), task, t);
  for (int64_t n = 0; n < N; ++n) {  // dO, zero for padding tokens (their output is cropped)
    acc_t* row = gt.dout.data() + n * C;
    const int64_t pixel = t.src.pixels[n];
    if (pixel < 0) {
      std::fill(row, row + C, static_cast<acc_t>(0));
    } else {
      convert_row(grad_out + pixel_offset(c.geom, k.grad_strides, pixel), k.grad_strides.channel, C, row);
    }
  }
  if (next_task >= 0) {  // the next window's qkv rows, then its dO rows
    prefetch_window<kVideo>(c, qkv, next_task, t);
    for (const int64_t pixel : t.ahead.pixels) {
      if (pixel >= 0) prefetch_row(grad_out + pixel_offset(c.geom, k.grad_strides, pixel), C, k.grad_strides.channel);
    }
  }
  const acc_t* mask = window_mask(t);
  for (int64_t head = 0; head < c.heads; ++head) {
    const acc_t q_scale = logit_mul ? logit_mul[head] : scale;
    load_head(t, head, q_scale, logit_mul != nullptr);
    load_head_backward(t, head, q_scale);
    head_logits(t, head, logit_init + head * NR * NC, mask, logit_mul != nullptr);
    softmax_rows(t.s.data(), N, NC, t.max.data(), t.sum.data());
    std::fill(gt.g.begin(), gt.g.end(), static_cast<acc_t>(0));
    const ConstTile p{t.s.data(), NC}, ds{gt.g.data(), NC}, dout{gt.dout.data() + head * d, C};
    add_product(dout.strided(), ConstTile{t.vt.data(), NC}, Tile{gt.g.data(), NC}, NR, N, d);  // dP = dO V^T
    // dS, the row sums of dO * O as those of P * dP (equal, and exact in the accumulation
    // type where the saved out is rounded to the input's).
    softmax_backward(t.s.data(), gt.g.data(), N, NC);
    if (k.bias_grad) {
      acc_t* db = part.bias.data() + head * N * N;
      for (int64_t i = 0; i < N; ++i) {
        for (int64_t j = 0; j < N; ++j) db[i * N + j] += gt.g[i * NC + j];
      }
    }
    for (auto* product : {&gt.dv, &gt.dq, &gt.dk}) std::fill(product->begin(), product->end(), static_cast<acc_t>(0));
    // The transposed products read P's and dS's padding columns (about 1e-38 from the
    // padding logits) only into rows N..NR of dV and dK, which are never stored.
    add_product(p.strided().transposed(), dout, Tile{gt.dv.data(), dv}, NR, d, N);             // P^T dO
    add_product(ds.strided(), ConstTile{t.k.data(), dv}, Tile{gt.dq.data(), dv}, NR, d, N);     // dS K^
    add_product(ds.strided().transposed(), ConstTile{t.q.data(), dv}, Tile{gt.dk.data(), dv}, NR, d, N);  // dS^T cQ^
    acc_t scale_grad = 0;
    for (int64_t n = 0; n < N; ++n) {
      acc_t *dq = gt.dq.data() + n * dv, *dk = gt.dk.data() + n * dv;
      const acc_t* dvn = gt.dv.data() + n * dv;
      if (logit_mul) {
        const acc_t* q_unit = t.q.data() + n * dv;  // m q^
        scale_grad += dot(q_unit, dq, d);
        for (int64_t e = 0; e < d; ++e) dq[e] *= q_scale;
        for (int64_t e = 0; e < d; ++e) gt.unit[e] = q_unit[e] / q_scale;
        normalize_backward(dq, gt.unit.data(), t.q_norm[n], d);
        normalize_backward(dk, t.k.data() + n * dv, t.k_norm[n], d);
      } else {
        for (int64_t e = 0; e < d; ++e) dq[e] *= q_scale;
      }
      if (t.src.pixels[n] < 0) {  // a padding token reads qkv_bias
        if (k.fill_grad) {
          acc_t* fill = part.fill.data() + head * d;
          for (int64_t e = 0; e < d; ++e) {
            fill[e] += dq[e];
            fill[C + e] += dk[e];
            fill[2 * C + e] += dvn[e];
          }
        }
        continue;
      }
      acc_t* row = gt.drows.data() + n * width + head * d;
      std::copy(dq, dq + d, row);
      std::copy(dk, dk + d, row + C);
      std::copy(dvn, dvn + d, row + 2 * C);
    }
    if (logit_mul && k.scale_passes[head]) part.scale[head] += scale_grad;
  }
  for (int64_t n = 0; n < N; ++n) {  // dqkv: contiguous (B, [T,] H, W, 3C), whole rows at once
    if (t.src.pixels[n] >= 0) store_row(gt.drows.data() + n * width, width, dqkv + t.src.pixels[n] * width);
  }
}

template <typename scalar_t, bool kVideo>
std::vector<Partials<at::opmath_type<scalar_t>>> backward_cpu(const BackwardCall& k) {
  using acc_t = at::opmath_type<scalar_t>;
  const AttentionCall& c = k.c;
  const int64_t tasks = c.geom.batch * windows_per_image(c.geom);
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  std::vector<Partials<acc_t>> parts(chunks);
  const std::vector<acc_t> logit_init = logit_inits<acc_t>(c);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    Tiles<acc_t> t(c.tokens, c.head_dim, 3 * c.channels, /*backward=*/true);
    GradTiles<acc_t> gt(t);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      Partials<acc_t>& part = parts[chunk];
      part.bias.assign(k.bias_grad ? c.heads * c.tokens * c.tokens : 0, 0);
      part.scale.assign(c.heads, 0);
      part.fill.assign(k.fill_grad ? 3 * c.channels : 0, 0);
      const int64_t first = chunk * tasks / chunks, last = (chunk + 1) * tasks / chunks;
      for (int64_t task = first; task < last; ++task) {
        backward_task<scalar_t, kVideo>(k, task, task + 1 < last ? task + 1 : -1, logit_init.data(), t, gt, part);
      }
    }
  });
  return parts;
}

// The chunks' partials of one kind, summed in chunk order, as a tensor like `like`.
template <typename acc_t, typename Member>
at::Tensor summed(const std::vector<Partials<acc_t>>& parts, Member member, const at::Tensor& like) {
  std::vector<acc_t> total((parts.front().*member).size(), 0);
  for (const auto& part : parts) {
    for (size_t i = 0; i < total.size(); ++i) total[i] += (part.*member)[i];
  }
  const auto dtype = c10::CppTypeToScalarType<acc_t>::value;
  at::Tensor sums = at::empty({static_cast<int64_t>(total.size())}, like.options().dtype(dtype));
  std::copy(total.begin(), total.end(), sums.mutable_data_ptr<acc_t>());
  return sums.view(like.sizes()).to(like.scalar_type());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shifted_window_attention_cpu_backward(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& out, const at::Tensor& lse,
    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& logit_scale,
    const std::optional<at::Tensor>& qkv_bias, int64_t num_heads, at::IntArrayRef window_size,
    at::IntArrayRef shift_size, bool timm_order, bool bias_grad, bool scale_grad, bool fill_grad) {
  // out and lse: in the signature that every backend's backward shares; unused here (above).
  BackwardCall k;
  k.c = plan_attention(qkv, bias, logit_scale, qkv_bias, num_heads, window_size, shift_size, timm_order);
  const std::vector<int64_t> out_sizes = output_sizes(qkv);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(out_sizes) && out.sizes() == at::IntArrayRef(out_sizes) &&
                  grad_out.scalar_type() == qkv.scalar_type() && out.scalar_type() == qkv.scalar_type(),
              "fastswin.shifted_window_attention backward: grad_out and out must be ", out_sizes, " of ",
              qkv.scalar_type());
  k.grad_out = grad_out;
  k.grad_strides = MapStrides(grad_out);
  k.dqkv = at::empty(qkv.sizes(), qkv.options());
  k.bias_grad = bias_grad && bias.has_value();
  k.scale_grad = scale_grad && logit_scale.has_value();
  k.fill_grad = fill_grad && qkv_bias.has_value();
  if (logit_scale.has_value()) {
    const at::Tensor raw = logit_scale->to(at::kDouble).contiguous().view({num_heads});
    for (int64_t h = 0; h < num_heads; ++h) k.scale_passes.push_back(raw[h].item<double>() <= kLogitScaleMax);
  }
  at::Tensor dbias = qkv.new_empty({0}), dscale = qkv.new_empty({0}), dfill = qkv.new_empty({0});
  if (qkv.numel() == 0) return {k.dqkv, dbias, dscale, dfill};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, qkv.scalar_type(), "shifted_window_attention_cpu_backward",
                                  [&] {
                                    using acc_t = at::opmath_type<scalar_t>;
                                    const auto parts = is_video(k.c.geom) ? backward_cpu<scalar_t, true>(k)
                                                                          : backward_cpu<scalar_t, false>(k);
                                    if (k.bias_grad) dbias = summed(parts, &Partials<acc_t>::bias, *bias);
                                    if (k.scale_grad) dscale = summed(parts, &Partials<acc_t>::scale, *logit_scale);
                                    if (k.fill_grad) dfill = summed(parts, &Partials<acc_t>::fill, *qkv_bias);
                                  });
  return {k.dqkv, dbias, dscale, dfill};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastswin, m) {
  m.def(
      "shifted_window_attention_cpu_backward(Tensor grad_out, Tensor qkv, Tensor out, Tensor lse, Tensor? bias, "
      "Tensor? logit_scale, Tensor? qkv_bias, int num_heads, int[] window_size, int[] shift_size, bool timm_order, "
      "bool bias_grad, bool scale_grad, bool fill_grad) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastswin, CPU, m) {
  m.impl("shifted_window_attention_cpu_backward", &shifted_window_attention_cpu_backward);
}

}  // namespace fastswin
