// One head of one window of the CPU window attention, whatever layout its rows came
// from (the image layout's window_attention_cpu*.cpp, the window layout's
// window_layout_attention_cpu.cpp): the forward's output and log-sum-exp rows, and the
// backward's d q, d k, d v rows and its sums over windows.
//
// Per head, with S the logits, P = softmax(S), O = P V and dO the output's gradient:
//   dV = P^T dO,  dS = P * (dP - rowsum(P * dP)) with dP = dO V^T,  d bias += dS,
//   dQ = c dS K,  dK = dS^T (c Q)   (v1: c = scale; v2: q, k normalized, c = the logit
//   multiplier m, then F.normalize's backward; d logit_scale = sum_i (m q^_i) . (dS K^)_i
//   where the clamp passes it).
#pragma once

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include "denormals.h"
#include "window_attention_cpu.h"

namespace fastswin {

// Head `head`'s multiplier of q: v2's logit multiplier, or v1's scale.
template <typename acc_t>
acc_t q_scale(const AttentionHeads& c, int64_t head) {
  return c.logit_mul.defined() ? c.logit_mul.const_data_ptr<acc_t>()[head] : static_cast<acc_t>(c.scale);
}

// Head `head` of the window in t.rows: its d columns of out_rows (N, C) and its N
// log-sum-exps. logit_init: every head's logit_inits tile; mask: window_mask's or nullptr.
template <typename acc_t>
void forward_head(const AttentionHeads& c, Tiles<acc_t>& t, int64_t head, const acc_t* logit_init, const acc_t* mask,
                  acc_t* out_rows, acc_t* lse) {
  const int64_t N = t.N, d = t.d, C = c.channels;
  const bool cosine = c.logit_mul.defined();
  load_head(t, head, q_scale<acc_t>(c, head), cosine);
  head_logits(t, head, logit_init + head * t.NR * t.NC, mask, cosine);
  softmax_numerators(t.s.data(), N, t.NC, t.max.data(), t.sum.data());
  for (int64_t i = 0; i < N; ++i) t.inv_sum[i] = 1 / t.sum[i];
  std::fill(t.o.begin(), t.o.end(), static_cast<acc_t>(0));
  add_product(Strided<const acc_t>{t.s.data(), t.NC}, t.head_v(head), Rows<acc_t>{t.o.data(), t.dv}, t.NR, d, N,
              t.inv_sum.data());  // P V: the numerators' product over their sums
  for (int64_t i = 0; i < N; ++i) {
    lse[i] = t.max[i] + std::log(t.sum[i]);
    std::copy(t.o.begin() + i * t.dv, t.o.begin() + i * t.dv + d, out_rows + i * C + head * d);
  }
}

// A backward task's extra tiles: the window's rows of dO (N, C; the caller's zeros for
// tokens whose output is cropped, then zero rows to NR and a vector of slack, as
// Tiles::rows for v), dP then dS (NR, NC), one head's products (NR, dv), the window's
// d(qkv) rows (N, 3C), and a row of q^.
template <typename acc_t>
struct GradTiles {
  std::vector<acc_t> dout, g, dq, dk, dv, drows, unit;

  explicit GradTiles(const Tiles<acc_t>& t)
      : dout(t.NR * t.width / 3 + kLanes), g(t.NR * t.NC), dq(t.NR * t.dv), dk(t.NR * t.dv), dv(t.NR * t.dv),
        drows(t.N * t.width), unit(t.d) {}
};

// One chunk's sums over its windows (empty where not asked for): d bias, d logit_scale
// (before the clamp's), d qkv_bias.
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

// Per head: whether logit_scale <= log 100, where the clamp passes its gradient (all false
// without a logit_scale).
inline std::vector<bool> clamp_passes(const std::optional<at::Tensor>& logit_scale, int64_t heads) {
  std::vector<bool> passes(heads, false);
  if (logit_scale.has_value()) {
    const at::Tensor raw = logit_scale->to(at::kDouble).contiguous().view({heads});
    for (int64_t h = 0; h < heads; ++h) passes[h] = raw[h].item<double>() <= kLogitScaleMax;
  }
  return passes;
}

// Head `head` of the window in t.rows, with its dO in gt.dout: its columns of gt.drows
// (every token's, cropped ones too), its d bias into part.bias where that is not empty,
// and its d logit_scale into part.scale where scale_passes (the clamp passes it).
template <typename acc_t>
void backward_head(const AttentionHeads& c, Tiles<acc_t>& t, GradTiles<acc_t>& gt, int64_t head,
                   const acc_t* logit_init, const acc_t* mask, bool scale_passes, Partials<acc_t>& part) {
  using Tile = Rows<acc_t>;
  using ConstTile = Rows<const acc_t>;
  const int64_t N = t.N, d = t.d, C = c.channels, width = t.width, NR = t.NR, NC = t.NC, dv = t.dv;
  const bool cosine = c.logit_mul.defined();
  const acc_t scale = q_scale<acc_t>(c, head);
  load_head(t, head, scale, cosine);
  load_head_backward(t, head, scale);
  head_logits(t, head, logit_init + head * NR * NC, mask, cosine);
  softmax_rows(t.s.data(), N, NC, t.max.data(), t.sum.data());
  std::fill(gt.g.begin(), gt.g.end(), static_cast<acc_t>(0));
  const ConstTile p{t.s.data(), NC}, ds{gt.g.data(), NC}, dout{gt.dout.data() + head * d, C};
  add_product(dout.strided(), ConstTile{t.vt.data(), NC}, Tile{gt.g.data(), NC}, NR, N, d);  // dP = dO V^T
  // dS, the row sums of dO * O as those of P * dP (equal, and exact in the accumulation
  // type where the saved out is rounded to the input's).
  softmax_backward(t.s.data(), gt.g.data(), N, NC);
  if (!part.bias.empty()) {
    acc_t* db = part.bias.data() + head * N * N;
    for (int64_t i = 0; i < N; ++i) {
      for (int64_t j = 0; j < N; ++j) db[i * N + j] += gt.g[i * NC + j];
    }
  }
  for (auto* product : {&gt.dv, &gt.dq, &gt.dk}) std::fill(product->begin(), product->end(), static_cast<acc_t>(0));
  // The transposed products read P's and dS's padding columns (about 1e-38 from the
  // padding logits) only into rows N..NR of dV and dK, which are never stored.
  add_product(p.strided().transposed(), dout, Tile{gt.dv.data(), dv}, NR, d, N);                 // P^T dO
  add_product(ds.strided(), ConstTile{t.k.data(), dv}, Tile{gt.dq.data(), dv}, NR, d, N);         // dS K^
  add_product(ds.strided().transposed(), ConstTile{t.q.data(), dv}, Tile{gt.dk.data(), dv}, NR, d, N);  // dS^T cQ^
  acc_t scale_grad = 0;
  for (int64_t n = 0; n < N; ++n) {
    acc_t *dq = gt.dq.data() + n * dv, *dk = gt.dk.data() + n * dv;
    const acc_t* dvn = gt.dv.data() + n * dv;
    if (cosine) {
      const acc_t* q_unit = t.q.data() + n * dv;  // m q^
      scale_grad += dot(q_unit, dq, d);
      for (int64_t e = 0; e < d; ++e) dq[e] *= scale;
      for (int64_t e = 0; e < d; ++e) gt.unit[e] = q_unit[e] / scale;
      normalize_backward(dq, gt.unit.data(), t.q_norm[n], d);
      normalize_backward(dk, t.k.data() + n * dv, t.k_norm[n], d);
    } else {
      for (int64_t e = 0; e < d; ++e) dq[e] *= scale;
    }
    acc_t* row = gt.drows.data() + n * width + head * d;
    std::copy(dq, dq + d, row);
    std::copy(dk, dk + d, row + C);
    std::copy(dvn, dvn + d, row + 2 * C);
  }
  if (cosine && scale_passes) part.scale[head] += scale_grad;
}

// Runs backward task function run(task, next_task or -1, tiles, grad_tiles, partials)
// over `tasks` windows in one chunk per thread, each with its own tiles and partials
// (sized for d bias where bias_grad, and `fill` entries of d qkv_bias).
template <typename acc_t, typename Run>
std::vector<Partials<acc_t>> backward_chunks(const AttentionHeads& c, int64_t tasks, bool bias_grad, int64_t fill,
                                             Run run) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), tasks));
  std::vector<Partials<acc_t>> parts(chunks);
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    const FlushDenormals flush;  // denormals.h says why
    Tiles<acc_t> t(c.tokens, c.head_dim, 3 * c.channels, /*backward=*/true);
    GradTiles<acc_t> gt(t);
    for (int64_t chunk = begin; chunk < end; ++chunk) {
      Partials<acc_t>& part = parts[chunk];
      part.bias.assign(bias_grad ? c.heads * c.tokens * c.tokens : 0, 0);
      part.scale.assign(c.heads, 0);
      part.fill.assign(fill, 0);
      const int64_t first = chunk * tasks / chunks, last = (chunk + 1) * tasks / chunks;
      for (int64_t task = first; task < last; ++task) run(task, task + 1 < last ? task + 1 : -1, t, gt, part);
    }
  });
  return parts;
}

// The chunks' partials of one kind, summed in chunk order (deterministic for a given
// thread count), as a tensor like `like`.
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

}  // namespace fastswin
