// Fused CPU kernels of the rollout hot loop: a window of optimisation steps (every LSTM layer, the
// update and halting heads, the optimizee's residual, NLL and closed-form gradient) and its
// back-propagation through time, each one call from Python.
//
// Built and loaded by learned_halting/kernels.py; it computes what bptt.py's Python path computes.
// Layout is row-major: row r = b * D + d (function b, coordinate d), and the gates of one row are
// contiguous in the order (i, f, o, g). The forward scales the g-gate columns of its weights by 2,
// so that one sigmoid serves all gates: tanh(a_g) = 2 sigmoid(2 a_g) - 1. Matrix products go
// through ATen (MKL); everything else is one vectorized pass per layer and step. A layer above the
// first multiplies its two inputs at once, [h_below, h_prev] @ [w_in; w_hh] (K = 2H), and its
// backward pass gets both gradients from one product, dg @ [w_in; w_hh]^T (N = 2H).
//
// Rows of different functions never meet before the weight gradients, so each thread runs a whole
// window on its own block of rows, with single-threaded matrix products and no synchronisation
// between steps: at these sizes (a few hundred rows per product) a barrier per operation costs more
// than the work it shares.
//
// Shapes (R rows, H hidden units, n window steps, B functions, D coordinates, S samples):
//   x (n, R, in)       network input of each step (gradient, or gradient and parameter)
//   h[k], c[k] (n+1, R, H)  LSTM state of layer k, index 0 the state before the window
//   s[k] (n, R, 4H)    gate activations (sigmoid of i, f, o; tanh of g)
//   tc[k] (n, R, H)    tanh of the new cell state
//   grads (n, B, D)    optimizee gradient after each step;  nll, logits (n, B)
// With record = false (evaluation) only slot 0 of x, s, tc and slots 0/1 of h, c are used.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

using at::Tensor;

float* fptr(const Tensor& t) { return t.data_ptr<float>(); }

// sigmoid(x) = 1 / (1 + exp(-x)) in plain arithmetic that the compiler vectorizes: exp by range
// reduction to |r| <= ln(2)/2 and a degree-5 polynomial fitted for relative error (2e-7 in float32
// arithmetic), 2^n built in the exponent bits. Agrees with torch.sigmoid to a few float32 ulps.
inline float sigmoid(float x) {
  const float z = std::min(std::max(-x, -87.0f), 88.0f);  // exp(z) stays a normal float
  const float n = (z * 1.44269504089f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (z - n * 0.693359375f) - n * -2.12194440e-4f;         // z - n ln2, two parts
  float p = 0.008297652f;
  p = p * r + 0.041915384f;
  p = p * r + 0.16667575f;
  p = p * r + 0.49998895f;
  p = p * r + 0.99999969f;
  p = p * r + 1.0000001f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return 1.0f / (1.0f + p * scale);
}

// The pointwise part of one LSTM cell in one pass: gate pre-activations G plus bias (4H; both
// with the g gate scaled by 2) become the activations [sigmoid(i, f, o), tanh(g)], stored to act
// when kRecord; c_new = f c + i g, tc = tanh(c_new) (stored when kRecord), h = o tc, also copied to
// z_lo and z_hi (row stride zs) where not null: the stacked inputs of the layers above.
template <bool kRecord>
void cell_forward(const float* __restrict G, const float* __restrict bias,
                  const float* __restrict c, float* __restrict act, float* __restrict c_new,
                  float* __restrict tc, float* __restrict h, float* __restrict z_lo,
                  float* __restrict z_hi, int64_t zs, int64_t R, int64_t H) {
  for (int64_t r = 0; r < R; ++r) {
    const float* __restrict gi = G + r * 4 * H;
    const float* __restrict gf = gi + H;
    const float* __restrict go = gi + 2 * H;
    const float* __restrict gg = gi + 3 * H;
    const float* __restrict cr = c + r * H;
    float* __restrict cn = c_new + r * H;
    float* __restrict hr = h + r * H;
    float* __restrict ai = kRecord ? act + r * 4 * H : nullptr;
    float* __restrict tr = kRecord ? tc + r * H : nullptr;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      const float i = sigmoid(gi[j] + bias[j]);
      const float f = sigmoid(gf[j] + bias[H + j]);
      const float o = sigmoid(go[j] + bias[2 * H + j]);
      const float g = 2.f * sigmoid(gg[j] + bias[3 * H + j]) - 1.f;
      const float v = f * cr[j] + i * g;
      const float t = 2.f * sigmoid(2.f * v) - 1.f;
      if constexpr (kRecord) {
        ai[j] = i;
        ai[H + j] = f;
        ai[2 * H + j] = o;
        ai[3 * H + j] = g;
        tr[j] = t;
      }
      cn[j] = v;
      hr[j] = o * t;
    }
    if (z_lo != nullptr) std::memcpy(z_lo + r * zs, hr, sizeof(float) * H);
    if (z_hi != nullptr) std::memcpy(z_hi + r * zs, hr, sizeof(float) * H);
  }
}

// G = x @ w_in for a narrow input (in = 1 or 2 features): an outer product, cheaper as a loop
// than as a matrix product with K = in.
void input_gates(float* __restrict G, const float* __restrict x, const float* __restrict w_in,
                 int64_t R, int64_t in, int64_t G4) {
  for (int64_t r = 0; r < R; ++r) {
    float* __restrict gr = G + r * G4;
    const float x0 = x[r * in];
#pragma GCC ivdep
    for (int64_t j = 0; j < G4; ++j) gr[j] = x0 * w_in[j];
    if (in == 2) {
      const float x1 = x[r * in + 1];
#pragma GCC ivdep
      for (int64_t j = 0; j < G4; ++j) gr[j] += x1 * w_in[G4 + j];
    }
  }
}

// d_w_in += x^T dg for a narrow input (in = 1 or 2 features), dg (R, G4).
void input_weight_grad(float* __restrict d_w_in, const float* __restrict x,
                       const float* __restrict dg, int64_t R, int64_t in, int64_t G4) {
  for (int64_t r = 0; r < R; ++r) {
    const float* __restrict dr = dg + r * G4;
    for (int64_t m = 0; m < in; ++m) {
      const float xm = x[r * in + m];
      float* __restrict wm = d_w_in + m * G4;
#pragma GCC ivdep
      for (int64_t j = 0; j < G4; ++j) wm[j] += xm * dr[j];
    }
  }
}

// One task per thread, each a block of [0, n) (functions in the forward, rows in the backward).
template <typename F>
void per_thread_blocks(int64_t n, const F& f) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  at::parallel_for(0, n, (n + threads - 1) / threads, f);
}

// cells: per layer [w_in (in, 4H), bias (4H), w_hh (H, 4H)], contiguous, unscaled.
std::vector<Tensor> window_forward(const Tensor& theta_in, const Tensor& grad_in, const Tensor& W,
                                   const Tensor& y, double a, double dof1, double constant,
                                   at::TensorList cells, const Tensor& head, double halt_bias,
                                   const Tensor& logit_in, const Tensor& x, at::TensorList h,
                                   at::TensorList c, at::TensorList s, at::TensorList tc,
                                   const Tensor& grads, const Tensor& nll, const Tensor& logits,
                                   int64_t steps, bool record) {
  const int64_t B = theta_in.size(0), D = theta_in.size(1), S = W.size(1);
  const int64_t L = static_cast<int64_t>(h.size()), H = h[0].size(2), R = B * D;
  const int64_t in = x.size(2), nh = head.size(1);
  TORCH_CHECK(nh == 1 || nh == 2, "head must have 1 or 2 columns");
  const bool act = nh == 2;
  const auto opts = theta_in.options();
  // the g-gate columns scaled by 2; above the first layer, [w_in; w_hh] stacked (2H, 4H)
  Tensor scale = at::ones({4 * H}, opts);
  scale.narrow(0, 3 * H, H).fill_(2.0);
  std::vector<Tensor> w_x(L), w_b(L);
  for (int64_t k = 0; k < L; ++k) {
    w_x[k] = k == 0 ? cells[0] * scale : at::cat({cells[3 * k], cells[3 * k + 2]}, 0) * scale;
    w_b[k] = cells[3 * k + 1] * scale;
  }
  Tensor w_hh0 = cells[2] * scale;
  Tensor theta = theta_in.clone(), grad = grad_in.clone();
  Tensor logit = act ? logit_in.clone() : Tensor();
  Tensor out = at::empty({R, nh}, opts);
  float* th = fptr(theta);
  float* gr = fptr(grad);
  const float* Wp = fptr(W);
  const float* yp = fptr(y);
  float* lg = act ? fptr(logit) : nullptr;
  const float fa = static_cast<float>(a), fd = static_cast<float>(dof1);
  const float fc = static_cast<float>(constant), fhb = static_cast<float>(halt_bias);
  per_thread_blocks(B, [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * D, rn = (b1 - b0) * D;
    auto rows = [&](const Tensor& t) { return t.narrow(0, r0, rn); };
    std::vector<float> psi(S);
    Tensor G = at::empty({rn, 4 * H}, opts);  // gate pre-activations: a block that stays in cache
    float* Gp = fptr(G);
    std::vector<Tensor> z(L);  // above the first layer: the stacked input [h_below, h_prev]
    for (int64_t k = 1; k < L; ++k) {
      z[k] = at::empty({rn, 2 * H}, opts);
      z[k].narrow(1, H, H).copy_(rows(h[k][0]));
    }
    Tensor out_b = rows(out);
    const float* op = fptr(out_b);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t ts = record ? t : 0;                // slot of x, s, tc
      const int64_t hp = record ? t : t % 2;            // slot of the previous h, c
      const int64_t hn = record ? t + 1 : (t + 1) % 2;  // slot of the new h, c
      Tensor xt = rows(x[ts]);
      float* xp = fptr(xt);
      if (in == 1) {
        std::memcpy(xp, gr + r0, sizeof(float) * rn);
      } else {
        for (int64_t r = 0; r < rn; ++r) {
          xp[2 * r] = gr[r0 + r];
          xp[2 * r + 1] = th[r0 + r];
        }
      }
      Tensor h_new;
      for (int64_t k = 0; k < L; ++k) {
        if (k > 0) {
          at::mm_out(G, z[k], w_x[k]);
        } else {
          if (in <= 2) {
            input_gates(Gp, xp, fptr(w_x[0]), rn, in, 4 * H);
          } else {
            at::mm_out(G, xt, w_x[0]);
          }
          G.addmm_(rows(h[0][hp]), w_hh0);
        }
        h_new = rows(h[k][hn]);
        Tensor c_old = rows(c[k][hp]), c_new = rows(c[k][hn]);
        float* z_lo = k + 1 < L ? fptr(z[k + 1]) : nullptr;
        float* z_hi = k > 0 ? fptr(z[k]) + H : nullptr;
        if (record) {
          Tensor a_t = rows(s[k][ts]), tc_t = rows(tc[k][ts]);
          cell_forward<true>(Gp, fptr(w_b[k]), fptr(c_old), fptr(a_t), fptr(c_new), fptr(tc_t),
                             fptr(h_new), z_lo, z_hi, 2 * H, rn, H);
        } else {
          cell_forward<false>(Gp, fptr(w_b[k]), fptr(c_old), nullptr, fptr(c_new), nullptr,
                              fptr(h_new), z_lo, z_hi, 2 * H, rn, H);
        }
      }
      at::mm_out(out_b, h_new, head);
      float* nllp = fptr(nll) + t * B;
      float* gsp = fptr(grads) + ts * R;
      float* lgs = act ? fptr(logits) + t * B : nullptr;
      for (int64_t b = b0; b < b1; ++b) {
        float* tb = th + b * D;
        const float* ob = op + (b - b0) * D * nh;
        float inc = 0.f;
        for (int64_t d = 0; d < D; ++d) {
          tb[d] -= ob[d * nh];
          if (act) inc += ob[d * nh + 1];
        }
        float acc = 0.f;
        for (int64_t si = 0; si < S; ++si) {
          const float* w = Wp + (b * S + si) * D;
          float dot = 0.f;
          for (int64_t d = 0; d < D; ++d) dot += w[d] * tb[d];
          const float r = yp[b * S + si] - dot;
          acc += std::log1p(r * r / fa);
          psi[si] = fd * r / (fa + r * r);
        }
        nllp[b] = 0.5f * fd * acc + fc;
        for (int64_t d = 0; d < D; ++d) {
          float v = 0.f;
          for (int64_t si = 0; si < S; ++si) v += psi[si] * Wp[(b * S + si) * D + d];
          gr[b * D + d] = -v;
          gsp[b * D + d] = -v;
        }
        if (act) {
          lg[b] += inc / static_cast<float>(D) + fhb;
          lgs[b] = lg[b];
        }
      }
    }
  });
  return {theta, grad, act ? logit : at::empty({0}, theta.options())};
}

// One layer and step of the backward pass: gate gradients dg (R, 4H) from dh = ext + dh_rec (row
// strides es and hs) and the carried dc_rec, which becomes dc * f; d_bias (4H) accumulates dg's
// column sums. The top layer (kTop) gets dh from the heads instead of ext, and accumulates their
// gradients: d_head (nh, H) += [d_delta, d_inc]^T h, with h = o tanh(c) as the forward computed it.
template <bool kTop, bool kAct>
void cell_backward(const float* __restrict s, const float* __restrict tc, const float* __restrict c,
                   const float* __restrict ext, const float* __restrict d_delta,
                   const float* __restrict d_inc, const float* __restrict u,
                   const float* __restrict w_halt, const float* __restrict dh_rec,
                   float* __restrict dc_rec, float* __restrict dg, float* __restrict d_bias,
                   float* __restrict d_head, int64_t es, int64_t hs, int64_t R, int64_t H) {
  float* __restrict d_u = d_head;
  float* __restrict d_w = kAct ? d_head + H : nullptr;
  for (int64_t r = 0; r < R; ++r) {
    // one restrict pointer per gate block: no aliasing, so the loop over j vectorizes
    const float* __restrict si = s + r * 4 * H;
    const float* __restrict sf = si + H;
    const float* __restrict so = si + 2 * H;
    const float* __restrict sg = si + 3 * H;
    float* __restrict gi = dg + r * 4 * H;
    float* __restrict gf = gi + H;
    float* __restrict go = gi + 2 * H;
    float* __restrict gg = gi + 3 * H;
    const float* __restrict tr = tc + r * H;
    const float* __restrict cr = c + r * H;
    const float* __restrict hr = dh_rec + r * hs;
    float* __restrict dcr = dc_rec + r * H;
    const float dd = kTop ? d_delta[r] : 0.f;
    const float di = kAct ? d_inc[r] : 0.f;
    const float* __restrict er = kTop ? nullptr : ext + r * es;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      float dh = hr[j];
      if constexpr (kTop) {
        dh += dd * u[j];
        if constexpr (kAct) dh += di * w_halt[j];
      } else {
        dh += er[j];
      }
      const float i = si[j], f = sf[j], o = so[j], g = sg[j], t = tr[j];
      if constexpr (kTop) {
        d_u[j] += dd * (o * t);
        if constexpr (kAct) d_w[j] += di * (o * t);
      }
      const float dc = dcr[j] + dh * o * (1.f - t * t);
      gi[j] = dc * g * (i - i * i);
      gf[j] = dc * cr[j] * (f - f * f);
      go[j] = dh * t * (o - o * o);
      gg[j] = dc * i * (1.f - g * g);
      dcr[j] = dc * f;
    }
#pragma GCC ivdep
    for (int64_t j = 0; j < 4 * H; ++j) d_bias[j] += gi[j];
  }
}

// Gradients of one window's loss with respect to the step weights, from d_delta (n, R) (and
// d_inc (n, R) for act models: the gradient with respect to each row's halting increment).
// cells are the step weights as window_forward got them. Returns per layer the gradients of w_in,
// bias, w_hh, then of head (H, nh), then (act models) of the halting bias (1,).
//
// Each thread runs back through time on its own block of rows, every layer at each step (so the
// gate gradients dg and the gradient passed down a layer are one step's scratch blocks that stay in
// cache), and accumulates the weight gradients of its rows step by step; the threads' sums are
// added at the end.
std::vector<Tensor> window_backward(at::TensorList cells, const Tensor& head, const Tensor& x,
                                    at::TensorList h, at::TensorList c, at::TensorList s,
                                    at::TensorList tc, const Tensor& d_delta, const Tensor& d_inc,
                                    int64_t steps) {
  const int64_t L = static_cast<int64_t>(h.size()), H = h[0].size(2), R = h[0].size(1);
  const int64_t n = steps, nh = head.size(1), in = x.size(2);
  const bool act = nh == 2;
  const auto opts = d_delta.options();
  Tensor head_t = head.t().contiguous();  // (nh, H): column u, then w_halt
  const float* u = fptr(head_t);
  const float* w_halt = act ? u + H : nullptr;
  // dL/d[h_below, h_prev] = dg @ [w_in; w_hh]^T above the first layer; dL/dh_prev = dg @ w_hh^T
  std::vector<Tensor> w_back(L);
  for (int64_t k = 0; k < L; ++k) {
    w_back[k] = k == 0 ? cells[2].t() : at::cat({cells[3 * k], cells[3 * k + 2]}, 0).t();
  }
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  std::vector<std::vector<Tensor>> acc(threads);
  for (auto& a : acc) {
    for (int64_t k = 0; k < 3 * L; ++k) a.push_back(at::zeros_like(cells[k]));
    a.push_back(at::zeros({nh, H}, opts));  // the heads' gradient, transposed
  }
  per_thread_blocks(R, [&](int64_t r0, int64_t r1) {
    const int64_t rn = r1 - r0;
    auto rows = [&](const Tensor& t) { return t.narrow(0, r0, rn); };
    std::vector<Tensor>& grads = acc[at::get_thread_num()];
    float* dhead = fptr(grads[3 * L]);
    // carried back from step t + 1: dc per layer; dh of the first layer in dh0, of a layer k above
    // in the right half of back[k], whose left half is the gradient passed down to layer k - 1
    Tensor dh0 = at::zeros({rn, H}, opts);
    std::vector<Tensor> dc(L), back(L);
    for (int64_t k = 0; k < L; ++k) {
      dc[k] = at::zeros({rn, H}, opts);
      if (k > 0) back[k] = at::zeros({rn, 2 * H}, opts);
    }
    Tensor dg = at::empty({rn, 4 * H}, opts);  // gate gradients of one layer and step
    float* dgp = fptr(dg);
    const float* dd = fptr(d_delta);
    const float* di = act ? fptr(d_inc) : nullptr;
    for (int64_t t = n - 1; t >= 0; --t) {
      for (int64_t k = L - 1; k >= 0; --k) {
        const int64_t o4 = r0 * 4 * H, o1 = r0 * H;
        const float* sp = fptr(s[k][t]) + o4;
        const float* tp = fptr(tc[k][t]) + o1;
        const float* cp = fptr(c[k][t]) + o1;
        const float* dh = k > 0 ? fptr(back[k]) + H : fptr(dh0);
        const int64_t hs = k > 0 ? 2 * H : H;
        float* dck = fptr(dc[k]);
        float* gb = fptr(grads[3 * k + 1]);
        if (k == L - 1 && act) {
          cell_backward<true, true>(sp, tp, cp, nullptr, dd + t * R + r0, di + t * R + r0, u,
                                    w_halt, dh, dck, dgp, gb, dhead, 0, hs, rn, H);
        } else if (k == L - 1) {
          cell_backward<true, false>(sp, tp, cp, nullptr, dd + t * R + r0, nullptr, u, nullptr, dh,
                                     dck, dgp, gb, dhead, 0, hs, rn, H);
        } else {
          cell_backward<false, false>(sp, tp, cp, fptr(back[k + 1]), nullptr, nullptr, nullptr,
                                      nullptr, dh, dck, dgp, gb, nullptr, 2 * H, hs, rn, H);
        }
        if (k == 0 && in <= 2) {
          input_weight_grad(fptr(grads[0]), fptr(x[t]) + r0 * in, dgp, rn, in, 4 * H);
        } else {
          Tensor in_t = k == 0 ? rows(x[t]) : rows(h[k - 1][t + 1]);
          grads[3 * k].addmm_(in_t.t(), dg);
        }
        grads[3 * k + 2].addmm_(rows(h[k][t]).t(), dg);
        at::mm_out(k > 0 ? back[k] : dh0, dg, w_back[k]);
      }
    }
  });
  std::vector<Tensor> out = acc[0];
  for (int64_t i = 1; i < threads; ++i)
    for (size_t j = 0; j < out.size(); ++j) out[j].add_(acc[i][j]);
  out[3 * L] = out[3 * L].t().contiguous();  // (H, nh)
  if (act) out.push_back(d_inc.narrow(0, 0, n).sum().reshape({1}));
  return out;
}

}  // namespace

TORCH_LIBRARY(learned_halting, m) {
  m.def(
      "window_forward(Tensor theta, Tensor grad, Tensor W, Tensor y, float a, float dof1, "
      "float constant, Tensor[] cells, Tensor head, float halt_bias, Tensor logit, Tensor(a!) x, "
      "Tensor(b!)[] h, Tensor(c!)[] c, Tensor(d!)[] s, Tensor(e!)[] tc, Tensor(f!) grads, "
      "Tensor(g!) nll, Tensor(h!) logits, int steps, bool record) -> Tensor[]");
  m.def(
      "window_backward(Tensor[] cells, Tensor head, Tensor x, Tensor[] h, Tensor[] c, Tensor[] s, "
      "Tensor[] tc, Tensor d_delta, Tensor d_inc, int steps) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(learned_halting, CPU, m) {
  m.impl("window_forward", &window_forward);
  m.impl("window_backward", &window_backward);
}
