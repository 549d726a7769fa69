// A whole NTM sequence in one C++ loop, forward and a hand-written backward through time.
//
// The maths is graphmem.memory's (NTMCell.step): controller, clip, write heads addressing the
// memory before the write, erase and add, read heads addressing the memory after it, content
// addressing with the cosine score (x * rsqrt(|x|^2 + eps^2)) and softmax, interpolation,
// circular shift, sharpening in log space. tests/test_ntm_fused.py checks outputs and every
// gradient against the Python step.
//
// Why C++: a compiled Python step pays a fixed cost per time step (guards, the graph wrapper,
// an autograd node, one gradient accumulation per parameter) and runs the memory passes as
// separate small kernels; here the memory passes of one batch element are a few loops over
// its N x M floats, the matmuls are ATen's, and weight gradients are one matmul per weight
// over all steps at once.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

namespace {

using at::Tensor;

constexpr double kUnitEps = 1e-8;     // graphmem.attention.score._unit
constexpr double kSharpenEps = 1e-12;  // graphmem.memory.addressing.sharpen
constexpr double kSoftplusThreshold = 20.0;  // torch.nn.functional.softplus

template <typename T>
inline T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

template <typename T>
inline T softplus(T x) { return x > T(kSoftplusThreshold) ? x : std::log1p(std::exp(x)); }

template <typename T>
inline T softplus_grad(T x) { return x > T(kSoftplusThreshold) ? T(1) : sigmoid(x); }

// In-place softmax of n values.
template <typename T>
inline void softmax(T* v, int64_t n) {
  T mx = v[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, v[i]);
  T sum = 0;
  for (int64_t i = 0; i < n; ++i) { v[i] = std::exp(v[i] - mx); sum += v[i]; }
  for (int64_t i = 0; i < n; ++i) v[i] /= sum;
}

struct Sizes {
  int64_t N, M, S, R;
};

// Offsets of a head's parameters in its chunk of the heads' linear output:
// key (M), strength, gate, shift (S), sharpening, then erase (M) and add (M) for write heads.
struct Layout {
  int64_t key, beta, gate, shift, gamma, erase, add, size;
  Layout(const Sizes& s, bool write)
      : key(0), beta(s.M), gate(s.M + 1), shift(s.M + 2), gamma(s.M + 2 + s.S), erase(s.M + 3 + s.S),
        add(2 * s.M + 3 + s.S), size(write ? 3 * s.M + 3 + s.S : s.M + 3 + s.S) {}
};

// Row inverse norms 1 / sqrt(|M_i|^2 + eps^2) of one batch element's memory.
template <typename T>
void row_inverse_norms(const T* mem, T* ninv, const Sizes& s) {
  for (int64_t i = 0; i < s.N; ++i) {
    T sq = 0;
    for (int64_t m = 0; m < s.M; ++m) sq += mem[i * s.M + m] * mem[i * s.M + m];
    ninv[i] = T(1) / std::sqrt(sq + T(kUnitEps * kUnitEps));
  }
}

// Forward addressing of one head of one batch element; saves cos, wc, wg, ws and w (each N).
template <typename T>
void address_forward(const T* chunk, const T* mem, const T* ninv, const T* prev, const Sizes& s, const Layout& l,
                     T* cos, T* wc, T* wg, T* ws, T* w) {
  const T* key = chunk + l.key;
  T sq = 0;
  for (int64_t m = 0; m < s.M; ++m) sq += key[m] * key[m];
  const T kinv = T(1) / std::sqrt(sq + T(kUnitEps * kUnitEps));
  const T beta = softplus(chunk[l.beta]);
  const T gate = sigmoid(chunk[l.gate]);
  const T gamma = T(1) + softplus(chunk[l.gamma]);
  T shift[64];
  for (int64_t j = 0; j < s.S; ++j) shift[j] = chunk[l.shift + j];
  softmax(shift, s.S);
  for (int64_t i = 0; i < s.N; ++i) {
    T dot = 0;
    for (int64_t m = 0; m < s.M; ++m) dot += key[m] * mem[i * s.M + m];
    cos[i] = dot * kinv * ninv[i];
    wc[i] = beta * cos[i];
  }
  softmax(wc, s.N);
  for (int64_t i = 0; i < s.N; ++i) wg[i] = gate * wc[i] + (T(1) - gate) * prev[i];
  // roll(w, o)_i = w_{(i - o) mod N} for the offsets o = j - R
  for (int64_t i = 0; i < s.N; ++i) {
    T acc = 0;
    for (int64_t j = 0; j < s.S; ++j) {
      int64_t src = ((i - (j - s.R)) % s.N + s.N) % s.N;
      acc += shift[j] * wg[src];
    }
    ws[i] = acc;
  }
  for (int64_t i = 0; i < s.N; ++i) w[i] = gamma * std::log(ws[i] + T(kSharpenEps));
  softmax(w, s.N);
}

// Backward of address_forward: adds into dprev (N) and dmem (N x M), writes the head's
// addressing parameter gradients into dchunk (pre-activation).
template <typename T>
void address_backward(const T* chunk, const T* mem, const T* ninv, const T* prev, const Sizes& s, const Layout& l,
                      const T* cos, const T* wc, const T* wg, const T* ws, const T* w, const T* dw, T* dprev,
                      T* dmem, T* dchunk, T* scratch) {
  const T* key = chunk + l.key;
  T sq = 0;
  for (int64_t m = 0; m < s.M; ++m) sq += key[m] * key[m];
  const T kinv = T(1) / std::sqrt(sq + T(kUnitEps * kUnitEps));
  const T beta = softplus(chunk[l.beta]);
  const T gate = sigmoid(chunk[l.gate]);
  const T gamma = T(1) + softplus(chunk[l.gamma]);
  T shift[64], dshift[64];
  for (int64_t j = 0; j < s.S; ++j) { shift[j] = chunk[l.shift + j]; dshift[j] = 0; }
  softmax(shift, s.S);
  T* dws = scratch;
  T* dwg = scratch + s.N;
  T* dcos = scratch + 2 * s.N;
  // sharpen: w = softmax(gamma * log(ws + eps))
  T wdw = 0;
  for (int64_t i = 0; i < s.N; ++i) wdw += w[i] * dw[i];
  T dgamma = 0;
  for (int64_t i = 0; i < s.N; ++i) {
    const T dy = w[i] * (dw[i] - wdw);
    const T shifted = ws[i] + T(kSharpenEps);
    dgamma += dy * std::log(shifted);
    dws[i] = dy * gamma / shifted;
  }
  // circular shift
  for (int64_t i = 0; i < s.N; ++i) dwg[i] = 0;
  for (int64_t i = 0; i < s.N; ++i) {
    for (int64_t j = 0; j < s.S; ++j) {
      int64_t src = ((i - (j - s.R)) % s.N + s.N) % s.N;
      dwg[src] += shift[j] * dws[i];
      dshift[j] += dws[i] * wg[src];
    }
  }
  // interpolation, then the content softmax
  T dgate = 0, wcdwc = 0;
  for (int64_t i = 0; i < s.N; ++i) {
    dgate += dwg[i] * (wc[i] - prev[i]);
    dprev[i] += (T(1) - gate) * dwg[i];
    wcdwc += wc[i] * gate * dwg[i];
  }
  T dbeta = 0, dcos_cos = 0;
  for (int64_t i = 0; i < s.N; ++i) {
    const T dz = wc[i] * (gate * dwg[i] - wcdwc);
    dbeta += dz * cos[i];
    dcos[i] = beta * dz;
    dcos_cos += dcos[i] * cos[i];
  }
  // cos_i = (k kinv) . (M_i ninv_i): d key = kinv (sum_i dcos_i M_i ninv_i - k kinv sum_i dcos_i cos_i),
  // d M_i = dcos_i ninv_i (k kinv - cos_i M_i ninv_i)
  T* dkey = dchunk + l.key;
  for (int64_t m = 0; m < s.M; ++m) dkey[m] = -key[m] * kinv * dcos_cos;
  for (int64_t i = 0; i < s.N; ++i) {
    const T a = dcos[i] * ninv[i];
    const T b = a * cos[i] * ninv[i];
    const T* row = mem + i * s.M;
    T* drow = dmem + i * s.M;
    for (int64_t m = 0; m < s.M; ++m) {
      dkey[m] += a * row[m];
      drow[m] += a * key[m] * kinv - b * row[m];
    }
  }
  for (int64_t m = 0; m < s.M; ++m) dkey[m] *= kinv;
  dchunk[l.beta] = dbeta * softplus_grad(chunk[l.beta]);
  dchunk[l.gate] = dgate * gate * (T(1) - gate);
  dchunk[l.gamma] = dgamma * softplus_grad(chunk[l.gamma]);
  T sds = 0;
  for (int64_t j = 0; j < s.S; ++j) sds += shift[j] * dshift[j];
  for (int64_t j = 0; j < s.S; ++j) dchunk[l.shift + j] = shift[j] * (dshift[j] - sds);
}

struct Config {
  bool lstm;
  int64_t layers, H, I, Kr, Kw;
  double clip;  // <= 0: none
  Sizes s;
};

Config make_config(const Tensor& x, const Tensor& mem0, const Tensor& wr0, const Tensor& ww0, const Tensor& h0,
                   bool lstm, int64_t layers, int64_t shift_range, double clip) {
  Config c;
  c.lstm = lstm;
  c.layers = layers;
  c.H = h0.size(2);
  c.I = x.size(2);
  c.Kr = wr0.size(1);
  c.Kw = ww0.size(1);
  c.clip = clip;
  c.s = Sizes{mem0.size(1), mem0.size(2), 2 * shift_range + 1, shift_range};
  TORCH_CHECK(c.s.S <= 64, "ntm_fused: shift range above 31 is not supported");
  TORCH_CHECK(c.Kw >= 1, "ntm_fused: needs at least one write head");
  return c;
}

// The controller weights, per layer: LSTM (w_ih, w_hh, b_ih, b_hh), feed-forward (w, b).
inline int64_t per_layer(const Config& c) { return c.lstm ? 4 : 2; }

}  // namespace

// Returns {features (T,B,H+Kr*M), memories (T+1,B,N,M), read weights (T,B,Kr,N), write weights
// (T,B,Kw,N), controller h (T,L,B,H), controller c (T,L,B,H) (LSTM; empty otherwise), gates or
// pre-activations (T,L,B,G), hidden before clip (T,B,H), head outputs read (T,B,Kr*Pr) and write
// (T,B,Kw*Pw), the addressing intermediates (cos, wc, wg, ws) of read (T,4,B,Kr,N) and write
// heads (T,4,B,Kw,N), inverse row norms (T+1,B,N), controller inputs (T,B,I+Kr*M)}.
std::vector<Tensor> ntm_forward(const Tensor& x, const Tensor& r0, const Tensor& wr0, const Tensor& ww0,
                                const Tensor& mem0, const Tensor& h0, const Tensor& c0,
                                const std::vector<Tensor>& controller, const Tensor& read_w, const Tensor& read_b,
                                const Tensor& write_w, const Tensor& write_b, bool lstm, int64_t shift_range,
                                double clip) {
  const int64_t T = x.size(0), B = x.size(1), L = h0.size(0);
  Config c = make_config(x, mem0, wr0, ww0, h0, lstm, L, shift_range, clip);
  const Sizes s = c.s;
  const Layout lr(s, false), lw(s, true);
  const int64_t H = c.H, G = lstm ? 4 * H : H, In = c.I + c.Kr * s.M;
  auto opts = x.options();
  Tensor features = at::empty({T, B, H + c.Kr * s.M}, opts);
  Tensor mems = at::empty({T + 1, B, s.N, s.M}, opts);
  Tensor ninv = at::empty({T + 1, B, s.N}, opts);
  Tensor wr = at::empty({T, B, c.Kr, s.N}, opts);
  Tensor ww = at::empty({T, B, c.Kw, s.N}, opts);
  Tensor hs = at::empty({T, L, B, H}, opts);
  Tensor cs = lstm ? at::empty({T, L, B, H}, opts) : at::empty({0}, opts);
  Tensor gates = at::empty({T, L, B, G}, opts);
  Tensor hidden = at::empty({T, B, H}, opts);
  Tensor raw_r = at::empty({T, B, c.Kr * lr.size}, opts);
  Tensor raw_w = at::empty({T, B, c.Kw * lw.size}, opts);
  Tensor inter_r = at::empty({T, 4, B, c.Kr, s.N}, opts);
  Tensor inter_w = at::empty({T, 4, B, c.Kw, s.N}, opts);
  Tensor inputs = at::empty({T, B, In}, opts);
  mems[0].copy_(mem0);
  Tensor r_prev = r0.reshape({B, c.Kr * s.M});
  Tensor wr_prev = wr0, ww_prev = ww0;
  const int64_t nl = per_layer(c);
  const Tensor read_wt = read_w.t(), write_wt = write_w.t();
  std::vector<Tensor> w_ih_t(L), w_hh_t(L);
  for (int64_t l = 0; l < L; ++l) {
    w_ih_t[l] = controller[l * nl].t();
    if (lstm) w_hh_t[l] = controller[l * nl + 1].t();
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ntm_forward", [&] {
    using T_ = scalar_t;
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        row_inverse_norms(mems[0].data_ptr<T_>() + b * s.N * s.M, ninv[0].data_ptr<T_>() + b * s.N, s);
    });
    for (int64_t t = 0; t < T; ++t) {
      Tensor u = inputs[t];
      u.narrow(1, 0, c.I).copy_(x[t]);
      u.narrow(1, c.I, c.Kr * s.M).copy_(r_prev);
      Tensor layer_in = u;
      for (int64_t l = 0; l < L; ++l) {
        Tensor g = gates[t][l];
        Tensor h = hs[t][l];
        if (lstm) {
          at::addmm_out(g, controller[l * nl + 2], layer_in, w_ih_t[l]);
          g.addmm_(t ? hs[t - 1][l] : h0[l], w_hh_t[l]);
          const T_* bhh = controller[l * nl + 3].data_ptr<T_>();
          const Tensor cprev_t = (t ? cs[t - 1][l] : c0[l]).contiguous();
          const T_* cprev = cprev_t.data_ptr<T_>();
          T_* gp = g.data_ptr<T_>();
          T_* hp = h.data_ptr<T_>();
          T_* cp = cs[t][l].data_ptr<T_>();
          for (int64_t b = 0; b < B; ++b) {
            T_* gb = gp + b * G;
            for (int64_t k = 0; k < H; ++k) {
              const T_ ig = sigmoid(gb[k] + bhh[k]);
              const T_ fg = sigmoid(gb[H + k] + bhh[H + k]);
              const T_ gg = std::tanh(gb[2 * H + k] + bhh[2 * H + k]);
              const T_ og = sigmoid(gb[3 * H + k] + bhh[3 * H + k]);
              gb[k] = ig; gb[H + k] = fg; gb[2 * H + k] = gg; gb[3 * H + k] = og;
              const T_ cn = fg * cprev[b * H + k] + ig * gg;
              cp[b * H + k] = cn;
              hp[b * H + k] = og * std::tanh(cn);
            }
          }
        } else {
          at::addmm_out(g, controller[l * nl + 1], layer_in, w_ih_t[l]);
          T_* gp = g.data_ptr<T_>();
          T_* hp = h.data_ptr<T_>();
          for (int64_t k = 0; k < B * H; ++k) hp[k] = gp[k] > 0 ? gp[k] : T_(0);
        }
        layer_in = h;
      }
      hidden[t].copy_(layer_in);
      Tensor hc = features[t].narrow(1, 0, H);
      if (clip > 0) at::clamp_out(hc, layer_in, -clip, clip); else hc.copy_(layer_in);
      Tensor raw_wt = raw_w[t], raw_rt = raw_r[t];
      at::addmm_out(raw_wt, write_b, hc, write_wt);
      at::addmm_out(raw_rt, read_b, hc, read_wt);
      const T_* memp_old = mems[t].data_ptr<T_>();
      T_* memp = mems[t + 1].data_ptr<T_>();
      const T_* ninv_old = ninv[t].data_ptr<T_>();
      T_* ninv_new = ninv[t + 1].data_ptr<T_>();
      const T_* rwp = raw_w[t].data_ptr<T_>();
      const T_* rrp = raw_r[t].data_ptr<T_>();
      const Tensor wwp_c = ww_prev.contiguous(), wrp_c = wr_prev.contiguous();
      const T_* wwprev = wwp_c.data_ptr<T_>();
      const T_* wrprev = wrp_c.data_ptr<T_>();
      T_* wwt = ww[t].data_ptr<T_>();
      T_* wrt = wr[t].data_ptr<T_>();
      T_* iw = inter_w[t].data_ptr<T_>();
      T_* ir = inter_r[t].data_ptr<T_>();
      T_* feat = features[t].data_ptr<T_>();
      const int64_t NM = s.N * s.M, F = H + c.Kr * s.M, iws = B * c.Kw * s.N, irs = B * c.Kr * s.N;
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<T_> ea(2 * c.Kw * s.M);
        for (int64_t b = b0; b < b1; ++b) {
          const T_* mo = memp_old + b * NM;
          T_* mn = memp + b * NM;
          for (int64_t k = 0; k < c.Kw; ++k) {
            const int64_t o = (b * c.Kw + k) * s.N;
            address_forward(rwp + (b * c.Kw + k) * lw.size, mo, ninv_old + b * s.N, wwprev + o, s, lw,
                            iw + o, iw + iws + o, iw + 2 * iws + o, iw + 3 * iws + o, wwt + o);
          }
          // erase and add vectors of every write head, then M_t = M_{t-1} prod_k (1 - w_k e_k) + sum_k w_k a_k
          T_* erase = ea.data();
          T_* add = erase + c.Kw * s.M;
          for (int64_t k = 0; k < c.Kw; ++k) {
            const T_* chunk = rwp + (b * c.Kw + k) * lw.size;
            for (int64_t m = 0; m < s.M; ++m) {
              erase[k * s.M + m] = sigmoid(chunk[lw.erase + m]);
              add[k * s.M + m] = std::tanh(chunk[lw.add + m]);
            }
          }
          for (int64_t i = 0; i < s.N; ++i) {
            const T_* old = mo + i * s.M;
            T_* row = mn + i * s.M;
            for (int64_t m = 0; m < s.M; ++m) row[m] = old[m];
            for (int64_t k = 0; k < c.Kw; ++k) {
              const T_ wk = wwt[(b * c.Kw + k) * s.N + i];
              const T_* ek = erase + k * s.M;
              for (int64_t m = 0; m < s.M; ++m) row[m] *= T_(1) - wk * ek[m];
            }
            for (int64_t k = 0; k < c.Kw; ++k) {
              const T_ wk = wwt[(b * c.Kw + k) * s.N + i];
              const T_* ak = add + k * s.M;
              for (int64_t m = 0; m < s.M; ++m) row[m] += wk * ak[m];
            }
          }
          row_inverse_norms(mn, ninv_new + b * s.N, s);
          for (int64_t k = 0; k < c.Kr; ++k) {
            const int64_t o = (b * c.Kr + k) * s.N;
            address_forward(rrp + (b * c.Kr + k) * lr.size, mn, ninv_new + b * s.N, wrprev + o, s, lr,
                            ir + o, ir + irs + o, ir + 2 * irs + o, ir + 3 * irs + o, wrt + o);
            T_* r = feat + b * F + H + k * s.M;
            for (int64_t m = 0; m < s.M; ++m) r[m] = 0;
            for (int64_t i = 0; i < s.N; ++i) {
              const T_ wi = wrt[o + i];
              for (int64_t m = 0; m < s.M; ++m) r[m] += wi * mn[i * s.M + m];
            }
          }
        }
      });
      r_prev = features[t].narrow(1, H, c.Kr * s.M);
      wr_prev = wr[t];
      ww_prev = ww[t];
    }
  });
  return {features, mems, wr, ww, hs, cs, gates, hidden, raw_r, raw_w, inter_r, inter_w, ninv, inputs};
}

// Gradients of ntm_forward's inputs, given the gradients of the features and of the final
// state (memory, reads, read and write weights, h, c). Returns {dx, dr0, dwr0, dww0, dmem0, dh0,
// dc0, d read_w, d read_b, d write_w, d write_b, then the controller weights' gradients}.
std::vector<Tensor> ntm_backward(const Tensor& dfeatures, const Tensor& dmem_T, const Tensor& dr_T,
                                 const Tensor& dwr_T, const Tensor& dww_T, const Tensor& dh_T, const Tensor& dc_T,
                                 const std::vector<Tensor>& saved, const Tensor& wr0, const Tensor& ww0,
                                 const Tensor& h0, const Tensor& c0, const std::vector<Tensor>& controller,
                                 const Tensor& read_w, const Tensor& write_w, bool lstm, int64_t shift_range,
                                 double clip, int64_t input_size) {
  const Tensor &mems = saved[0], &wr = saved[1], &ww = saved[2], &hs = saved[3], &cs = saved[4],
               &gates = saved[5], &hidden = saved[6], &raw_r = saved[7], &raw_w = saved[8],
               &inter_r = saved[9], &inter_w = saved[10], &ninv = saved[11], &inputs = saved[12];
  const int64_t T = dfeatures.size(0), B = dfeatures.size(1), L = h0.size(0);
  Config c;
  c.lstm = lstm; c.layers = L; c.H = h0.size(2); c.I = input_size; c.Kr = wr0.size(1); c.Kw = ww0.size(1);
  c.clip = clip;
  c.s = Sizes{mems.size(2), mems.size(3), 2 * shift_range + 1, shift_range};
  const Sizes s = c.s;
  const Layout lr(s, false), lw(s, true);
  const int64_t H = c.H, G = lstm ? 4 * H : H, In = c.I + c.Kr * s.M, NM = s.N * s.M;
  const int64_t nl = per_layer(c);
  auto opts = dfeatures.options();
  Tensor dx = at::empty({T, B, c.I}, opts);
  Tensor dgates = at::empty({T, L, B, G}, opts);
  Tensor draw_r = at::empty({T, B, c.Kr * lr.size}, opts);
  Tensor draw_w = at::empty({T, B, c.Kw * lw.size}, opts);
  // carries from step t + 1 into step t
  Tensor dmem = dmem_T.contiguous().clone();
  Tensor dr = dr_T.reshape({B, c.Kr * s.M}).contiguous().clone();
  Tensor dwr = dwr_T.contiguous().clone();
  Tensor dww = dww_T.contiguous().clone();
  Tensor dh = dh_T.contiguous().clone();  // (L, B, H)
  Tensor dc = dc_T.contiguous().clone();
  Tensor dmem_prev = at::empty_like(dmem);
  Tensor dwr_prev = at::empty_like(dwr), dww_prev = at::empty_like(dww);
  Tensor dhc = at::empty({B, H}, opts);
  Tensor scratch = at::empty({B, 3 * s.N}, opts);
  std::vector<Tensor> w_ih(L), w_hh(L);
  for (int64_t l = 0; l < L; ++l) {
    w_ih[l] = controller[l * nl];
    if (lstm) w_hh[l] = controller[l * nl + 1];
  }
  AT_DISPATCH_FLOATING_TYPES(dfeatures.scalar_type(), "ntm_backward", [&] {
    using T_ = scalar_t;
    for (int64_t t = T - 1; t >= 0; --t) {
      const Tensor wr_prev = (t ? wr[t - 1] : wr0).contiguous();
      const Tensor ww_prev = (t ? ww[t - 1] : ww0).contiguous();
      const T_* df = dfeatures[t].data_ptr<T_>();
      const T_* mo_all = mems[t].data_ptr<T_>();
      const T_* mn_all = mems[t + 1].data_ptr<T_>();
      const T_* ninv_o = ninv[t].data_ptr<T_>();
      const T_* ninv_n = ninv[t + 1].data_ptr<T_>();
      const T_* rrp = raw_r[t].data_ptr<T_>();
      const T_* rwp = raw_w[t].data_ptr<T_>();
      const T_* wrt = wr[t].data_ptr<T_>();
      const T_* wwt = ww[t].data_ptr<T_>();
      const T_* wrprev = wr_prev.data_ptr<T_>();
      const T_* wwprev = ww_prev.data_ptr<T_>();
      const T_* ir = inter_r[t].data_ptr<T_>();
      const T_* iw = inter_w[t].data_ptr<T_>();
      T_* dmemp = dmem.data_ptr<T_>();
      T_* dmemo = dmem_prev.data_ptr<T_>();
      T_* drp = dr.data_ptr<T_>();
      T_* dwrp = dwr.data_ptr<T_>();
      T_* dwwp = dww.data_ptr<T_>();
      T_* dwrprev = dwr_prev.data_ptr<T_>();
      T_* dwwprev = dww_prev.data_ptr<T_>();
      T_* drr = draw_r[t].data_ptr<T_>();
      T_* drw = draw_w[t].data_ptr<T_>();
      T_* scr = scratch.data_ptr<T_>();
      const int64_t F = H + c.Kr * s.M, iws = B * c.Kw * s.N, irs = B * c.Kr * s.N;
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<T_> buf(4 * c.Kw * s.M);
        for (int64_t b = b0; b < b1; ++b) {
          const T_* mo = mo_all + b * NM;
          const T_* mn = mn_all + b * NM;
          T_* dmn = dmemp + b * NM;
          T_* dmo = dmemo + b * NM;
          T_* drb = drp + b * c.Kr * s.M;
          for (int64_t k = 0; k < c.Kr * s.M; ++k) drb[k] += df[b * F + H + k];
          // the reads r_k = sum_i w_k(i) M_t(i)
          for (int64_t k = 0; k < c.Kr; ++k) {
            const int64_t o = (b * c.Kr + k) * s.N;
            const T_* drk = drb + k * s.M;
            for (int64_t i = 0; i < s.N; ++i) {
              T_ acc = 0;
              const T_ wi = wrt[o + i];
              for (int64_t m = 0; m < s.M; ++m) {
                acc += drk[m] * mn[i * s.M + m];
                dmn[i * s.M + m] += wi * drk[m];
              }
              dwrp[o + i] += acc;
            }
          }
          for (int64_t k = 0; k < c.Kr; ++k) {
            const int64_t o = (b * c.Kr + k) * s.N;
            for (int64_t i = 0; i < s.N; ++i) dwrprev[o + i] = 0;
            address_backward(rrp + (b * c.Kr + k) * lr.size, mn, ninv_n + b * s.N, wrprev + o, s, lr, ir + o,
                             ir + irs + o, ir + 2 * irs + o, ir + 3 * irs + o, wrt + o, dwrp + o, dwrprev + o, dmn,
                             drr + (b * c.Kr + k) * lr.size, scr + b * 3 * s.N);
          }
          // the write M_t = M_{t-1} * prod_k (1 - w_k e_k) + sum_k w_k a_k
          T_* dchunks = drw + b * c.Kw * lw.size;
          T_* erase = buf.data();
          T_* add = erase + c.Kw * s.M;
          T_* factors = erase + 2 * c.Kw * s.M;  // 1 - w_k(i) e_k, (Kw, M) for the current row
          T_* others = erase + 3 * c.Kw * s.M;   // prod over the other heads' factors
          for (int64_t k = 0; k < c.Kw; ++k) {
            const T_* chunk = rwp + (b * c.Kw + k) * lw.size;
            for (int64_t m = 0; m < s.M; ++m) {
              erase[k * s.M + m] = sigmoid(chunk[lw.erase + m]);
              add[k * s.M + m] = std::tanh(chunk[lw.add + m]);
              dchunks[k * lw.size + lw.erase + m] = 0;
              dchunks[k * lw.size + lw.add + m] = 0;
            }
          }
          for (int64_t i = 0; i < s.N; ++i) {
            const T_* g = dmn + i * s.M;
            const T_* old = mo + i * s.M;
            T_* dold = dmo + i * s.M;
            for (int64_t k = 0; k < c.Kw; ++k) {
              const T_ wk = wwt[(b * c.Kw + k) * s.N + i];
              for (int64_t m = 0; m < s.M; ++m) factors[k * s.M + m] = T_(1) - wk * erase[k * s.M + m];
            }
            for (int64_t k = 0; k < c.Kw; ++k) {
              T_* ok = others + k * s.M;
              for (int64_t m = 0; m < s.M; ++m) ok[m] = 1;
              for (int64_t j = 0; j < c.Kw; ++j)
                if (j != k)
                  for (int64_t m = 0; m < s.M; ++m) ok[m] *= factors[j * s.M + m];
            }
            // keep = factors_0 * others_0
            for (int64_t m = 0; m < s.M; ++m) dold[m] = g[m] * factors[m] * others[m];
            for (int64_t k = 0; k < c.Kw; ++k) {
              const T_ wk = wwt[(b * c.Kw + k) * s.N + i];
              const T_* ek = erase + k * s.M;
              const T_* ak = add + k * s.M;
              const T_* ok = others + k * s.M;
              T_* de = dchunks + k * lw.size + lw.erase;
              T_* da = dchunks + k * lw.size + lw.add;
              T_ dw = 0;
              for (int64_t m = 0; m < s.M; ++m) {
                const T_ gom = g[m] * old[m] * ok[m];
                dw += g[m] * ak[m] - gom * ek[m];
                de[m] -= gom * wk;
                da[m] += g[m] * wk;
              }
              dwwp[(b * c.Kw + k) * s.N + i] += dw;
            }
          }
          for (int64_t k = 0; k < c.Kw; ++k) {
            const T_* chunk = rwp + (b * c.Kw + k) * lw.size;
            for (int64_t m = 0; m < s.M; ++m) {
              const T_ ek = erase[k * s.M + m], ak = add[k * s.M + m];
              dchunks[k * lw.size + lw.erase + m] *= ek * (T_(1) - ek);
              dchunks[k * lw.size + lw.add + m] *= T_(1) - ak * ak;
            }
            const int64_t o = (b * c.Kw + k) * s.N;
            for (int64_t i = 0; i < s.N; ++i) dwwprev[o + i] = 0;
            address_backward(chunk, mo, ninv_o + b * s.N, wwprev + o, s, lw, iw + o, iw + iws + o,
                             iw + 2 * iws + o, iw + 3 * iws + o, wwt + o, dwwp + o, dwwprev + o, dmo,
                             dchunks + k * lw.size, scr + b * 3 * s.N);
          }
        }
      });
      std::swap(dmem, dmem_prev);
      std::swap(dwr, dwr_prev);
      std::swap(dww, dww_prev);
      // the heads' linear layers, then the clip
      at::mm_out(dhc, draw_r[t], read_w);
      dhc.addmm_(draw_w[t], write_w);
      dhc.add_(dfeatures[t].narrow(1, 0, H));
      if (clip > 0) dhc.mul_(hidden[t].abs().le(clip));
      // the controller, last layer first
      Tensor dlayer = dhc;
      for (int64_t l = L - 1; l >= 0; --l) {
        Tensor dg = dgates[t][l];
        T_* dgp = dg.data_ptr<T_>();
        const T_* gp = gates[t][l].data_ptr<T_>();
        const T_* dlp = dlayer.data_ptr<T_>();
        if (lstm) {
          T_* dhp = dh[l].data_ptr<T_>();
          T_* dcp = dc[l].data_ptr<T_>();
          const T_* cp = cs[t][l].data_ptr<T_>();
          const Tensor cprev_t = (t ? cs[t - 1][l] : c0[l]).contiguous();
          const T_* cprev = cprev_t.data_ptr<T_>();
          for (int64_t b = 0; b < B; ++b) {
            const T_* gb = gp + b * G;
            T_* dgb = dgp + b * G;
            for (int64_t k = 0; k < H; ++k) {
              const T_ ig = gb[k], fg = gb[H + k], gg = gb[2 * H + k], og = gb[3 * H + k];
              const T_ dhk = dlp[b * H + k] + dhp[b * H + k];
              const T_ tc = std::tanh(cp[b * H + k]);
              const T_ dct = dcp[b * H + k] + dhk * og * (T_(1) - tc * tc);
              dgb[k] = dct * gg * ig * (T_(1) - ig);
              dgb[H + k] = dct * cprev[b * H + k] * fg * (T_(1) - fg);
              dgb[2 * H + k] = dct * ig * (T_(1) - gg * gg);
              dgb[3 * H + k] = dhk * tc * og * (T_(1) - og);
              dcp[b * H + k] = dct * fg;
            }
          }
          Tensor dh_l = dh[l];
          at::mm_out(dh_l, dg, w_hh[l]);
        } else {
          const T_* hp = hs[t][l].data_ptr<T_>();
          for (int64_t k = 0; k < B * H; ++k) dgp[k] = hp[k] > 0 ? dlp[k] : T_(0);
        }
        dlayer = at::mm(dg, w_ih[l]);
      }
      // dlayer is the gradient of the controller's input [x_t, r_{t-1}]
      dx[t].copy_(dlayer.narrow(1, 0, c.I));
      dr.copy_(dlayer.narrow(1, c.I, c.Kr * s.M));
    }
  });
  // weight gradients: one matmul per weight over all steps
  std::vector<Tensor> out = {dx, dr.reshape({B, c.Kr, s.M}), dwr, dww, dmem, dh, dc};
  const Tensor hc2 = (clip > 0 ? hidden.clamp(-clip, clip) : hidden).reshape({T * B, H});
  const Tensor drr2 = draw_r.reshape({T * B, -1}), drw2 = draw_w.reshape({T * B, -1});
  out.push_back(drr2.t().mm(hc2));
  out.push_back(drr2.sum(0));
  out.push_back(drw2.t().mm(hc2));
  out.push_back(drw2.sum(0));
  for (int64_t l = 0; l < L; ++l) {
    const Tensor dg2 = dgates.select(1, l).reshape({T * B, G});
    const Tensor in2 = l == 0 ? inputs.reshape({T * B, In}) : hs.select(1, l - 1).reshape({T * B, H});
    out.push_back(dg2.t().mm(in2));
    if (lstm) {
      const Tensor hprev = at::cat({h0[l].unsqueeze(0), hs.select(1, l).narrow(0, 0, T - 1)}, 0).reshape({T * B, H});
      out.push_back(dg2.t().mm(hprev));
      out.push_back(dg2.sum(0));
      out.push_back(dg2.sum(0));
    } else {
      out.push_back(dg2.sum(0));
    }
  }
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &ntm_forward, "NTM sequence forward");
  m.def("backward", &ntm_backward, "NTM sequence backward through time");
}
