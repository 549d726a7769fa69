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

// tanh through one exp: glibc's tanhf goes through expm1f, which was the largest single cost of
// a step (the LSTM's gates); this form is within a few ulp of 1 in absolute terms
template <typename T>
inline T fast_tanh(T x) {
  const T e = std::exp(T(-2) * std::abs(x));
  const T t = (T(1) - e) / (T(1) + e);
  return x < 0 ? -t : t;
}

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
  // the offset o_j = j - R of the circular shift as a rotation in 0 .. N - 1
  int64_t rotation(int64_t j) const { return (((j - R) % N) + N) % N; }
};

// out_i += a * w_{(i - q) mod N} for a rotation q: two contiguous runs, which vectorise (a gather
// through an index table does not)
template <typename T>
inline void add_rolled(T* out, const T* w, T a, int64_t q, int64_t n) {
  for (int64_t i = q; i < n; ++i) out[i] += a * w[i - q];
  for (int64_t i = 0; i < q; ++i) out[i] += a * w[i + n - q];
}

// sum_i u_i w_{(i - q) mod N}
template <typename T>
inline T dot_rolled(const T* u, const T* w, int64_t q, int64_t n) {
  T acc = 0;
  for (int64_t i = q; i < n; ++i) acc += u[i] * w[i - q];
  for (int64_t i = 0; i < q; ++i) acc += u[i] * w[i + n - q];
  return acc;
}

// Offsets of a head's parameters in its chunk of the heads' linear output:
// key (M), strength, gate, shift (S), sharpening, then erase (M) and add (M) for write heads.
struct Layout {
  int64_t key, beta, gate, shift, gamma, erase, add, size;
  Layout(const Sizes& s, bool write)
      : key(0), beta(s.M), gate(s.M + 1), shift(s.M + 2), gamma(s.M + 2 + s.S), erase(s.M + 3 + s.S),
        add(2 * s.M + 3 + s.S), size(write ? 3 * s.M + 3 + s.S : s.M + 3 + s.S) {}
};

// Row inverse norms 1 / sqrt(|M_i|^2 + eps^2) of one batch element's memory. The kernel keeps
// the memory transposed, (M, N) per batch element: every loop over it then runs over the N rows
// in its inner loop (128 contiguous values, several full vectors) rather than over M (20 values).
template <typename T>
void row_inverse_norms(const T* mem, T* ninv, const Sizes& s) {
  for (int64_t i = 0; i < s.N; ++i) ninv[i] = T(kUnitEps * kUnitEps);
  for (int64_t m = 0; m < s.M; ++m) {
    const T* col = mem + m * s.N;
    for (int64_t i = 0; i < s.N; ++i) ninv[i] += col[i] * col[i];
  }
  for (int64_t i = 0; i < s.N; ++i) ninv[i] = T(1) / std::sqrt(ninv[i]);
}

// A head's addressing parameters after their activations (Head.parameters_from): key and its
// inverse norm, strength beta = softplus, gate = sigmoid, shift = softmax, gamma = 1 + softplus.
template <typename T>
struct HeadParams {
  const T* key;
  T kinv, beta, gate, gamma;
  T shift[64];
  HeadParams(const T* chunk, const Sizes& s, const Layout& l)
      : key(chunk + l.key), beta(softplus(chunk[l.beta])), gate(sigmoid(chunk[l.gate])),
        gamma(T(1) + softplus(chunk[l.gamma])) {
    T sq = 0;
    for (int64_t m = 0; m < s.M; ++m) sq += key[m] * key[m];
    kinv = T(1) / std::sqrt(sq + T(kUnitEps * kUnitEps));
    for (int64_t j = 0; j < s.S; ++j) shift[j] = chunk[l.shift + j];
    softmax(shift, s.S);
  }
};

// Forward addressing of one head of one batch element; saves cos, wc, wg, ws, log(ws + eps) and w (each N).
template <typename T>
void address_forward(const T* chunk, const T* mem, const T* ninv, const T* prev, const Sizes& s, const Layout& l,
                     T* cos, T* wc, T* wg, T* ws, T* logs, T* w) {
  const HeadParams<T> p(chunk, s, l);
  const T *key = p.key, kinv = p.kinv, beta = p.beta, gate = p.gate, gamma = p.gamma, *shift = p.shift;
  for (int64_t i = 0; i < s.N; ++i) cos[i] = 0;
  for (int64_t m = 0; m < s.M; ++m) {
    const T km = key[m];
    const T* col = mem + m * s.N;
    for (int64_t i = 0; i < s.N; ++i) cos[i] += km * col[i];
  }
  for (int64_t i = 0; i < s.N; ++i) {
    cos[i] *= kinv * ninv[i];
    wc[i] = beta * cos[i];
  }
  softmax(wc, s.N);
  for (int64_t i = 0; i < s.N; ++i) wg[i] = gate * wc[i] + (T(1) - gate) * prev[i];
  // roll(w, o)_i = w_{(i - o) mod N} for the offsets o = j - R
  for (int64_t i = 0; i < s.N; ++i) ws[i] = 0;
  for (int64_t j = 0; j < s.S; ++j) add_rolled(ws, wg, shift[j], s.rotation(j), s.N);
  for (int64_t i = 0; i < s.N; ++i) {
    logs[i] = std::log(ws[i] + T(kSharpenEps));
    w[i] = gamma * logs[i];
  }
  softmax(w, s.N);
}

// Backward of address_forward: adds into dprev (N) and dmem (N x M), writes the head's
// addressing parameter gradients into dchunk (pre-activation).
template <typename T>
void address_backward(const T* chunk, const T* mem, const T* ninv, const T* prev, const Sizes& s, const Layout& l,
                      const T* cos, const T* wc, const T* wg, const T* ws, const T* logs, const T* w,
                      const T* dw, T* dprev, T* dmem, T* dchunk, T* scratch) {
  const HeadParams<T> p(chunk, s, l);
  const T *key = p.key, kinv = p.kinv, beta = p.beta, gate = p.gate, gamma = p.gamma, *shift = p.shift;
  T dshift[64];
  T* dws = scratch;
  T* dwg = scratch + s.N;
  T* dcos = scratch + 2 * s.N;
  // sharpen: w = softmax(gamma * log(ws + eps))
  T wdw = 0;
  for (int64_t i = 0; i < s.N; ++i) wdw += w[i] * dw[i];
  T dgamma = 0;
  for (int64_t i = 0; i < s.N; ++i) {
    const T dy = w[i] * (dw[i] - wdw);
    dgamma += dy * logs[i];
    dws[i] = dy * gamma / (ws[i] + T(kSharpenEps));
  }
  // circular shift
  // ws = sum_j s_j roll(wg, o_j): dwg = sum_j s_j roll(dws, -o_j), ds_j = dws . roll(wg, o_j)
  for (int64_t i = 0; i < s.N; ++i) dwg[i] = 0;
  for (int64_t j = 0; j < s.S; ++j) {
    const int64_t q = s.rotation(j);
    add_rolled(dwg, dws, shift[j], (s.N - q) % s.N, s.N);
    dshift[j] = dot_rolled(dws, wg, q, s.N);
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
  T* a = dcos;  // dcos_i ninv_i, in place
  T* b = scratch + 3 * s.N;
  for (int64_t i = 0; i < s.N; ++i) {
    a[i] = dcos[i] * ninv[i];
    b[i] = a[i] * cos[i] * ninv[i];
  }
  for (int64_t m = 0; m < s.M; ++m) {
    const T* col = mem + m * s.N;
    T* dcol = dmem + m * s.N;
    const T km = key[m] * kinv;
    T acc = 0;
    for (int64_t i = 0; i < s.N; ++i) {
      acc += a[i] * col[i];
      dcol[i] += a[i] * km - b[i] * col[i];
    }
    dkey[m] = kinv * (acc - key[m] * kinv * dcos_cos);
  }
  dchunk[l.beta] = dbeta * softplus_grad(chunk[l.beta]);
  dchunk[l.gate] = dgate * gate * (T(1) - gate);
  dchunk[l.gamma] = dgamma * softplus_grad(chunk[l.gamma]);
  T sds = 0;
  for (int64_t j = 0; j < s.S; ++j) sds += shift[j] * dshift[j];
  for (int64_t j = 0; j < s.S; ++j) dchunk[l.shift + j] = shift[j] * (dshift[j] - sds);
}

// A tensor over raw memory (no copy, no allocation) for the matmuls of one step.
template <typename T>
inline Tensor view(const T* data, int64_t rows, int64_t cols, int64_t ld) {
  return at::from_blob(const_cast<T*>(data), {rows, cols}, {ld, 1},
                       at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
}

// C (rows x out, leading dimension ldc) = beta C + A W^T, with A (rows x in, leading dimension lda)
// and W (out x in) row-major.
template <typename T>
inline void linear_rows(const T* a, int64_t lda, int64_t rows, int64_t in, const T* w, int64_t out, T* c,
                        int64_t ldc, T beta) {
  Tensor result = view(c, rows, out, ldc);
  if (beta == T(0)) {
    at::mm_out(result, view(a, rows, in, lda), view(w, out, in, in).t());
  } else {
    result.addmm_(view(a, rows, in, lda), view(w, out, in, in).t());
  }
}

// dA (rows x in, leading dimension lda) = beta dA + dC W: the gradient of linear_rows' input.
template <typename T>
inline void linear_rows_backward(const T* dc, int64_t ldc, int64_t rows, int64_t out, const T* w, int64_t in, T* da,
                                 int64_t lda, T beta) {
  Tensor result = view(da, rows, in, lda);
  if (beta == T(0)) {
    at::mm_out(result, view(dc, rows, out, ldc), view(w, out, in, in));
  } else {
    result.addmm_(view(dc, rows, out, ldc), view(w, out, in, in));
  }
}

template <typename T>
inline void fill_rows(T* c, int64_t rows, int64_t width, const T* bias) {
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t k = 0; k < width; ++k) c[b * width + k] = bias[k];
}

struct Config {
  bool lstm;
  int64_t T, B, L, H, G, I, In, Kr, Kw;
  double clip;  // <= 0: none
  Sizes s;
  Layout lr, lw;

  Config(bool lstm_, int64_t T_, int64_t B_, int64_t L_, int64_t H_, int64_t I_, int64_t Kr_, int64_t Kw_, int64_t N,
         int64_t M, int64_t shift_range, double clip_)
      : lstm(lstm_), T(T_), B(B_), L(L_), H(H_), G(lstm_ ? 4 * H_ : H_), I(I_), In(I_ + Kr_ * M), Kr(Kr_), Kw(Kw_),
        clip(clip_), s{N, M, 2 * shift_range + 1, shift_range},
        lr(Sizes{N, M, 2 * shift_range + 1, shift_range}, false),
        lw(Sizes{N, M, 2 * shift_range + 1, shift_range}, true) {
    TORCH_CHECK(s.S <= 64, "ntm_fused: shift range above 31 is not supported");
    TORCH_CHECK(Kw >= 1, "ntm_fused: needs at least one write head");
  }
  int64_t F() const { return H + Kr * s.M; }
  int64_t layer_in(int64_t l) const { return l == 0 ? In : H; }
  int64_t per_layer() const { return lstm ? 4 : 2; }  // LSTM (w_ih, w_hh, b_ih, b_hh), linear (w, b)
};

// One step's memory work for batch element b: write heads address M_{t-1} and write, read heads
// address M_t and read. Pointers are to this step's slices of the saved buffers.
template <typename T>
void memory_forward(const Config& c, int64_t b, const T* rw, const T* rr, const T* mo, T* mn, const T* ninv_old,
                    T* ninv_new, const T* wwprev, const T* wrprev, T* wwt, T* wrt, T* iw, T* ir, T* feat, T* ea) {
  const Sizes& s = c.s;
  const int64_t iws = c.B * c.Kw * s.N, irs = c.B * c.Kr * s.N, NM = s.N * s.M;
  mo += b * NM;
  mn += b * NM;
  for (int64_t k = 0; k < c.Kw; ++k) {
    const int64_t o = (b * c.Kw + k) * s.N;
    address_forward(rw + (b * c.Kw + k) * c.lw.size, mo, ninv_old + b * s.N, wwprev + o, s, c.lw, iw + o,
                    iw + iws + o, iw + 2 * iws + o, iw + 3 * iws + o, iw + 4 * iws + o, wwt + o);
  }
  // erase and add vectors of every write head, then M_t = M_{t-1} prod_k (1 - w_k e_k) + sum_k w_k a_k
  T* erase = ea;
  T* add = ea + c.Kw * s.M;
  for (int64_t k = 0; k < c.Kw; ++k) {
    const T* chunk = rw + (b * c.Kw + k) * c.lw.size;
    for (int64_t m = 0; m < s.M; ++m) {
      erase[k * s.M + m] = sigmoid(chunk[c.lw.erase + m]);
      add[k * s.M + m] = fast_tanh(chunk[c.lw.add + m]);
    }
  }
  for (int64_t m = 0; m < s.M; ++m) {
    const T* old = mo + m * s.N;
    T* col = mn + m * s.N;
    for (int64_t i = 0; i < s.N; ++i) col[i] = old[i];
    for (int64_t k = 0; k < c.Kw; ++k) {
      const T* wk = wwt + (b * c.Kw + k) * s.N;
      const T ek = erase[k * s.M + m];
      for (int64_t i = 0; i < s.N; ++i) col[i] *= T(1) - wk[i] * ek;
    }
    for (int64_t k = 0; k < c.Kw; ++k) {
      const T* wk = wwt + (b * c.Kw + k) * s.N;
      const T ak = add[k * s.M + m];
      for (int64_t i = 0; i < s.N; ++i) col[i] += wk[i] * ak;
    }
  }
  row_inverse_norms(mn, ninv_new + b * s.N, s);
  for (int64_t k = 0; k < c.Kr; ++k) {
    const int64_t o = (b * c.Kr + k) * s.N;
    address_forward(rr + (b * c.Kr + k) * c.lr.size, mn, ninv_new + b * s.N, wrprev + o, s, c.lr, ir + o,
                    ir + irs + o, ir + 2 * irs + o, ir + 3 * irs + o, ir + 4 * irs + o, wrt + o);
    T* r = feat + b * c.F() + c.H + k * s.M;
    for (int64_t m = 0; m < s.M; ++m) {
      const T* col = mn + m * s.N;
      T acc = 0;
      for (int64_t i = 0; i < s.N; ++i) acc += wrt[o + i] * col[i];
      r[m] = acc;
    }
  }
}

// The backward of memory_forward for batch element b. On entry dmn holds the gradient of M_t
// from the future and dr (this element's K_r M values) that of the reads; dwr and dww hold the
// gradients of this step's weightings from the next step. Writes dmo (the gradient of M_{t-1}),
// dwrprev and dwwprev (of the previous weightings), and the heads' pre-activation gradients.
template <typename T>
void memory_backward(const Config& c, int64_t b, const T* rw, const T* rr, const T* mo, const T* mn,
                     const T* ninv_old, const T* ninv_new, const T* wwprev, const T* wrprev, const T* wwt,
                     const T* wrt, const T* iw, const T* ir, const T* dr, T* dmn, T* dmo, T* dwr, T* dww, T* dwrprev,
                     T* dwwprev, T* drr, T* drw, T* buf, T* scratch) {
  const Sizes& s = c.s;
  const Layout &lr = c.lr, &lw = c.lw;
  const int64_t iws = c.B * c.Kw * s.N, irs = c.B * c.Kr * s.N, NM = s.N * s.M;
  mo += b * NM;
  mn += b * NM;
  dmn += b * NM;
  dmo += b * NM;
  // the reads r_k = sum_i w_k(i) M_t(i)
  for (int64_t k = 0; k < c.Kr; ++k) {
    const int64_t o = (b * c.Kr + k) * s.N;
    const T* drk = dr + k * s.M;
    for (int64_t m = 0; m < s.M; ++m) {
      const T drm = drk[m];
      const T* col = mn + m * s.N;
      T* dcol = dmn + m * s.N;
      for (int64_t i = 0; i < s.N; ++i) {
        dwr[o + i] += drm * col[i];
        dcol[i] += wrt[o + i] * drm;
      }
    }
  }
  for (int64_t k = 0; k < c.Kr; ++k) {
    const int64_t o = (b * c.Kr + k) * s.N;
    for (int64_t i = 0; i < s.N; ++i) dwrprev[o + i] = 0;
    address_backward(rr + (b * c.Kr + k) * lr.size, mn, ninv_new + b * s.N, wrprev + o, s, lr, ir + o, ir + irs + o,
                     ir + 2 * irs + o, ir + 3 * irs + o, ir + 4 * irs + o, wrt + o, dwr + o, dwrprev + o, dmn,
                     drr + (b * c.Kr + k) * lr.size, scratch);
  }
  // the write M_t = M_{t-1} prod_k (1 - w_k e_k) + sum_k w_k a_k
  T* dchunks = drw + b * c.Kw * lw.size;
  T* erase = buf;
  T* add = erase + c.Kw * s.M;
  T* factors = erase + 2 * c.Kw * s.M;      // 1 - w_k e_k(m), (Kw, N), for the current column
  T* others = factors + c.Kw * s.N;          // the product of the other heads' factors
  for (int64_t k = 0; k < c.Kw; ++k) {
    const T* chunk = rw + (b * c.Kw + k) * lw.size;
    for (int64_t m = 0; m < s.M; ++m) {
      erase[k * s.M + m] = sigmoid(chunk[lw.erase + m]);
      add[k * s.M + m] = fast_tanh(chunk[lw.add + m]);
      dchunks[k * lw.size + lw.erase + m] = 0;
      dchunks[k * lw.size + lw.add + m] = 0;
    }
  }
  for (int64_t m = 0; m < s.M; ++m) {
    const T* g = dmn + m * s.N;
    const T* old = mo + m * s.N;
    T* dold = dmo + m * s.N;
    for (int64_t k = 0; k < c.Kw; ++k) {
      const T* wk = wwt + (b * c.Kw + k) * s.N;
      const T ek = erase[k * s.M + m];
      for (int64_t i = 0; i < s.N; ++i) factors[k * s.N + i] = T(1) - wk[i] * ek;
    }
    for (int64_t k = 0; k < c.Kw; ++k) {
      T* ok = others + k * s.N;
      for (int64_t i = 0; i < s.N; ++i) ok[i] = 1;
      for (int64_t j = 0; j < c.Kw; ++j)
        if (j != k)
          for (int64_t i = 0; i < s.N; ++i) ok[i] *= factors[j * s.N + i];
    }
    for (int64_t i = 0; i < s.N; ++i) dold[i] = g[i] * factors[i] * others[i];  // the product of all factors
    for (int64_t k = 0; k < c.Kw; ++k) {
      const T* wk = wwt + (b * c.Kw + k) * s.N;
      T* dwk = dww + (b * c.Kw + k) * s.N;
      const T ek = erase[k * s.M + m], ak = add[k * s.M + m];
      const T* ok = others + k * s.N;
      T de = 0, da = 0;
      for (int64_t i = 0; i < s.N; ++i) {
        const T gom = g[i] * old[i] * ok[i];
        dwk[i] += g[i] * ak - gom * ek;
        de -= gom * wk[i];
        da += g[i] * wk[i];
      }
      dchunks[k * lw.size + lw.erase + m] += de;
      dchunks[k * lw.size + lw.add + m] += da;
    }
  }
  for (int64_t k = 0; k < c.Kw; ++k) {
    const T* chunk = rw + (b * c.Kw + k) * lw.size;
    for (int64_t m = 0; m < s.M; ++m) {
      const T ek = erase[k * s.M + m], ak = add[k * s.M + m];
      dchunks[k * lw.size + lw.erase + m] *= ek * (T(1) - ek);
      dchunks[k * lw.size + lw.add + m] *= T(1) - ak * ak;
    }
    const int64_t o = (b * c.Kw + k) * s.N;
    for (int64_t i = 0; i < s.N; ++i) dwwprev[o + i] = 0;
    address_backward(chunk, mo, ninv_old + b * s.N, wwprev + o, s, lw, iw + o, iw + iws + o, iw + 2 * iws + o,
                     iw + 3 * iws + o, iw + 4 * iws + o, wwt + o, dww + o, dwwprev + o, dmo, dchunks + k * lw.size,
                     scratch);
  }
}

template <typename T>
const T* ptr(const Tensor& t) { return t.data_ptr<T>(); }
template <typename T>
T* mptr(Tensor& t) { return t.data_ptr<T>(); }

}  // namespace

// Returns {features (T,B,H+Kr*M), then what the backward needs: memories (T+1,B,M,N), read
// weights (T,B,Kr,N), write weights (T,B,Kw,N), controller h (T,L,B,H), controller c (T,L,B,H)
// (LSTM; empty otherwise), gates after their activations or pre-activations (T,L,B,G), hidden
// before the clip (T,B,H), head outputs read (T,B,Kr*Pr) and write (T,B,Kw*Pw), the addressing
// intermediates (cos, wc, wg, ws, log(ws + eps)) of read (T,5,B,Kr,N) and write heads (T,5,B,Kw,N), inverse
// row norms (T+1,B,N), controller inputs (T,B,I+Kr*M)}. Every tensor argument is contiguous.
std::vector<Tensor> ntm_forward(const Tensor& x, const Tensor& r0, const Tensor& wr0, const Tensor& ww0,
                                const Tensor& mem0, const Tensor& h0, const Tensor& c0,
                                const std::vector<Tensor>& controller, const Tensor& read_w, const Tensor& read_b,
                                const Tensor& write_w, const Tensor& write_b, bool lstm, int64_t shift_range,
                                double clip) {
  const Config c(lstm, x.size(0), x.size(1), h0.size(0), h0.size(2), x.size(2), wr0.size(1), ww0.size(1),
                 mem0.size(1), mem0.size(2), shift_range, clip);
  const Sizes& s = c.s;
  const int64_t T = c.T, B = c.B, L = c.L, H = c.H, G = c.G, In = c.In, F = c.F(), NM = s.N * s.M;
  const int64_t Pr = c.Kr * c.lr.size, Pw = c.Kw * c.lw.size, nl = c.per_layer();
  auto opts = x.options();
  Tensor features = at::empty({T, B, F}, opts);
  Tensor mems = at::empty({T + 1, B, s.M, s.N}, opts);  // transposed, see row_inverse_norms
  Tensor ninv = at::empty({T + 1, B, s.N}, opts);
  Tensor wr = at::empty({T, B, c.Kr, s.N}, opts);
  Tensor ww = at::empty({T, B, c.Kw, s.N}, opts);
  Tensor hs = at::empty({T, L, B, H}, opts);
  Tensor cs = lstm ? at::empty({T, L, B, H}, opts) : at::empty({0}, opts);
  Tensor gates = at::empty({T, L, B, G}, opts);
  Tensor hidden = at::empty({T, B, H}, opts);
  Tensor raw_r = at::empty({T, B, Pr}, opts);
  Tensor raw_w = at::empty({T, B, Pw}, opts);
  Tensor inter_r = at::empty({T, 5, B, c.Kr, s.N}, opts);
  Tensor inter_w = at::empty({T, 5, B, c.Kw, s.N}, opts);
  Tensor inputs = at::empty({T, B, In}, opts);
  mems[0].copy_(mem0.transpose(1, 2));
  // an LSTM cell's two biases are added together once
  std::vector<Tensor> biases(L);
  for (int64_t l = 0; l < L; ++l)
    biases[l] = lstm ? (controller[l * nl + 2] + controller[l * nl + 3]).contiguous() : controller[l * nl + 1];
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ntm_forward", [&] {
    using T_ = scalar_t;
    const T_ *xp = ptr<T_>(x), *r0p = ptr<T_>(r0), *h0p = ptr<T_>(h0), *c0p = lstm ? ptr<T_>(c0) : nullptr;
    const T_ *rwb = ptr<T_>(read_b), *wwb = ptr<T_>(write_b), *rwp = ptr<T_>(read_w), *wwp = ptr<T_>(write_w);
    T_ *featp = mptr<T_>(features), *memp = mptr<T_>(mems), *ninvp = mptr<T_>(ninv), *wrp = mptr<T_>(wr),
       *wwtp = mptr<T_>(ww), *hsp = mptr<T_>(hs), *csp = lstm ? mptr<T_>(cs) : nullptr, *gp = mptr<T_>(gates),
       *hidp = mptr<T_>(hidden), *rrp = mptr<T_>(raw_r), *rwrp = mptr<T_>(raw_w), *irp = mptr<T_>(inter_r),
       *iwp = mptr<T_>(inter_w), *up = mptr<T_>(inputs);
    at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) row_inverse_norms(memp + b * NM, ninvp + b * s.N, s);
    });
    for (int64_t t = 0; t < T; ++t) {
      // the controller's input [x_t, r_{t-1}]
      T_* u = up + t * B * In;
      const T_* r_prev = t ? featp + (t - 1) * B * F + H : r0p;
      const int64_t r_ld = t ? F : c.Kr * s.M;
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t k = 0; k < c.I; ++k) u[b * In + k] = xp[(t * B + b) * c.I + k];
        for (int64_t k = 0; k < c.Kr * s.M; ++k) u[b * In + c.I + k] = r_prev[b * r_ld + k];
      }
      const T_* layer_in = u;
      int64_t in_ld = In;
      for (int64_t l = 0; l < L; ++l) {
        T_* g = gp + (t * L + l) * B * G;
        T_* h = hsp + (t * L + l) * B * H;
        fill_rows(g, B, G, ptr<T_>(biases[l]));
        linear_rows(layer_in, in_ld, B, c.layer_in(l), ptr<T_>(controller[l * nl]), G, g, G, T_(1));
        if (lstm) {
          const T_* h_prev = t ? hsp + ((t - 1) * L + l) * B * H : h0p + l * B * H;
          const T_* c_prev = t ? csp + ((t - 1) * L + l) * B * H : c0p + l * B * H;
          T_* cn = csp + (t * L + l) * B * H;
          linear_rows(h_prev, H, B, H, ptr<T_>(controller[l * nl + 1]), G, g, G, T_(1));
          for (int64_t b = 0; b < B; ++b) {
            T_* gb = g + b * G;
            for (int64_t k = 0; k < H; ++k) {
              const T_ ig = sigmoid(gb[k]), fg = sigmoid(gb[H + k]), gg = fast_tanh(gb[2 * H + k]),
                       og = sigmoid(gb[3 * H + k]);
              gb[k] = ig; gb[H + k] = fg; gb[2 * H + k] = gg; gb[3 * H + k] = og;
              const T_ cell = fg * c_prev[b * H + k] + ig * gg;
              cn[b * H + k] = cell;
              h[b * H + k] = og * fast_tanh(cell);
            }
          }
        } else {
          for (int64_t k = 0; k < B * H; ++k) h[k] = g[k] > 0 ? g[k] : T_(0);
        }
        layer_in = h;
        in_ld = H;
      }
      T_* feat = featp + t * B * F;
      T_* hid = hidp + t * B * H;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < H; ++k) {
          const T_ v = layer_in[b * H + k];
          hid[b * H + k] = v;
          feat[b * F + k] = clip > 0 ? std::min(std::max(v, T_(-clip)), T_(clip)) : v;
        }
      T_* rw = rwrp + t * B * Pw;
      T_* rr = rrp + t * B * Pr;
      fill_rows(rw, B, Pw, wwb);
      linear_rows(feat, F, B, H, wwp, Pw, rw, Pw, T_(1));
      fill_rows(rr, B, Pr, rwb);
      linear_rows(feat, F, B, H, rwp, Pr, rr, Pr, T_(1));
      const T_* wwprev = t ? wwtp + (t - 1) * B * c.Kw * s.N : ptr<T_>(ww0);
      const T_* wrprev = t ? wrp + (t - 1) * B * c.Kr * s.N : ptr<T_>(wr0);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<T_> ea(2 * c.Kw * s.M);
        for (int64_t b = b0; b < b1; ++b)
          memory_forward(c, b, rw, rr, memp + t * B * NM, memp + (t + 1) * B * NM, ninvp + t * B * s.N,
                         ninvp + (t + 1) * B * s.N, wwprev, wrprev, wwtp + t * B * c.Kw * s.N,
                         wrp + t * B * c.Kr * s.N, iwp + t * 5 * B * c.Kw * s.N, irp + t * 5 * B * c.Kr * s.N, feat,
                         ea.data());
      });
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
  const Config c(lstm, dfeatures.size(0), dfeatures.size(1), h0.size(0), h0.size(2), input_size, wr0.size(1),
                 ww0.size(1), mems.size(3), mems.size(2), shift_range, clip);
  const Sizes& s = c.s;
  const int64_t T = c.T, B = c.B, L = c.L, H = c.H, G = c.G, In = c.In, F = c.F(), NM = s.N * s.M;
  const int64_t Pr = c.Kr * c.lr.size, Pw = c.Kw * c.lw.size, nl = c.per_layer();
  auto opts = dfeatures.options();
  Tensor dx = at::empty({T, B, c.I}, opts);
  Tensor dgates = at::empty({T, L, B, G}, opts);
  Tensor draw_r = at::empty({T, B, Pr}, opts);
  Tensor draw_w = at::empty({T, B, Pw}, opts);
  // carries from step t + 1 into step t
  Tensor dmem = dmem_T.transpose(1, 2).contiguous(), dmem_prev = at::empty_like(dmem);
  Tensor dr = dr_T.reshape({B, c.Kr * s.M}).clone();
  Tensor dwr = dwr_T.clone(), dwr_prev = at::empty_like(dwr);
  Tensor dww = dww_T.clone(), dww_prev = at::empty_like(dww);
  Tensor dh = dh_T.clone(), dc = dc_T.clone();  // (L, B, H)
  Tensor dhc = at::empty({B, H}, opts);
  Tensor dlayer = at::empty({B, std::max(In, H)}, opts);
  AT_DISPATCH_FLOATING_TYPES(dfeatures.scalar_type(), "ntm_backward", [&] {
    using T_ = scalar_t;
    const T_ *dfp = ptr<T_>(dfeatures), *memp = ptr<T_>(mems), *wrp = ptr<T_>(wr), *wwtp = ptr<T_>(ww),
             *hsp = ptr<T_>(hs), *csp = lstm ? ptr<T_>(cs) : nullptr, *gp = ptr<T_>(gates),
             *hidp = ptr<T_>(hidden), *rrp = ptr<T_>(raw_r), *rwrp = ptr<T_>(raw_w), *irp = ptr<T_>(inter_r),
             *iwp = ptr<T_>(inter_w), *ninvp = ptr<T_>(ninv), *c0p = lstm ? ptr<T_>(c0) : nullptr,
             *rwp = ptr<T_>(read_w), *wwp = ptr<T_>(write_w);
    T_ *dxp = mptr<T_>(dx), *dgp = mptr<T_>(dgates), *drrp = mptr<T_>(draw_r), *drwp = mptr<T_>(draw_w),
       *drp = mptr<T_>(dr), *dhp = lstm ? mptr<T_>(dh) : nullptr, *dcp = lstm ? mptr<T_>(dc) : nullptr,
       *dhcp = mptr<T_>(dhc), *dlp = mptr<T_>(dlayer);
    for (int64_t t = T - 1; t >= 0; --t) {
      const T_* df = dfp + t * B * F;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < c.Kr * s.M; ++k) drp[b * c.Kr * s.M + k] += df[b * F + H + k];
      const T_* rw = rwrp + t * B * Pw;
      const T_* rr = rrp + t * B * Pr;
      T_* drw = drwp + t * B * Pw;
      T_* drr = drrp + t * B * Pr;
      const T_* wwprev = t ? wwtp + (t - 1) * B * c.Kw * s.N : ptr<T_>(ww0);
      const T_* wrprev = t ? wrp + (t - 1) * B * c.Kr * s.N : ptr<T_>(wr0);
      T_ *dmn = mptr<T_>(dmem), *dmo = mptr<T_>(dmem_prev), *dwrt = mptr<T_>(dwr), *dwwt = mptr<T_>(dww),
         *dwrprev = mptr<T_>(dwr_prev), *dwwprev = mptr<T_>(dww_prev);
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        std::vector<T_> buf(2 * c.Kw * (s.M + s.N) + 4 * s.N);
        for (int64_t b = b0; b < b1; ++b)
          memory_backward(c, b, rw, rr, memp + t * B * NM, memp + (t + 1) * B * NM, ninvp + t * B * s.N,
                          ninvp + (t + 1) * B * s.N, wwprev, wrprev, wwtp + t * B * c.Kw * s.N,
                          wrp + t * B * c.Kr * s.N, iwp + t * 5 * B * c.Kw * s.N, irp + t * 5 * B * c.Kr * s.N,
                          drp + b * c.Kr * s.M, dmn, dmo, dwrt, dwwt, dwrprev, dwwprev, drr, drw, buf.data(),
                          buf.data() + 2 * c.Kw * (s.M + s.N));
      });
      std::swap(dmem, dmem_prev);
      std::swap(dwr, dwr_prev);
      std::swap(dww, dww_prev);
      // the heads' linear layers and the clip
      const T_* hid = hidp + t * B * H;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t k = 0; k < H; ++k) dhcp[b * H + k] = df[b * F + k];
      linear_rows_backward(drr, Pr, B, Pr, rwp, H, dhcp, H, T_(1));
      linear_rows_backward(drw, Pw, B, Pw, wwp, H, dhcp, H, T_(1));
      if (clip > 0)
        for (int64_t k = 0; k < B * H; ++k)
          if (hid[k] < -clip || hid[k] > clip) dhcp[k] = 0;
      // the controller, last layer first; dup is the gradient of the layer's output
      const T_* dup = dhcp;
      for (int64_t l = L - 1; l >= 0; --l) {
        T_* dg = dgp + (t * L + l) * B * G;
        const T_* g = gp + (t * L + l) * B * G;
        if (lstm) {
          T_* dhl = dhp + l * B * H;
          T_* dcl = dcp + l * B * H;
          const T_* cn = csp + (t * L + l) * B * H;
          const T_* c_prev = t ? csp + ((t - 1) * L + l) * B * H : c0p + l * B * H;
          for (int64_t b = 0; b < B; ++b) {
            const T_* gb = g + b * G;
            T_* dgb = dg + b * G;
            for (int64_t k = 0; k < H; ++k) {
              const T_ ig = gb[k], fg = gb[H + k], gg = gb[2 * H + k], og = gb[3 * H + k];
              const T_ dhk = dup[b * H + k] + dhl[b * H + k];
              const T_ tc = fast_tanh(cn[b * H + k]);
              const T_ dct = dcl[b * H + k] + dhk * og * (T_(1) - tc * tc);
              dgb[k] = dct * gg * ig * (T_(1) - ig);
              dgb[H + k] = dct * c_prev[b * H + k] * fg * (T_(1) - fg);
              dgb[2 * H + k] = dct * ig * (T_(1) - gg * gg);
              dgb[3 * H + k] = dhk * tc * og * (T_(1) - og);
              dcl[b * H + k] = dct * fg;
            }
          }
          linear_rows_backward(dg, G, B, G, ptr<T_>(controller[l * nl + 1]), H, dhl, H, T_(0));
        } else {
          const T_* h = hsp + (t * L + l) * B * H;
          for (int64_t k = 0; k < B * H; ++k) dg[k] = h[k] > 0 ? dup[k] : T_(0);
        }
        const int64_t in = c.layer_in(l);
        linear_rows_backward(dg, G, B, G, ptr<T_>(controller[l * nl]), in, dlp, in, T_(0));
        dup = dlp;  // read by the next (lower) layer before it is overwritten
      }
      // dlayer is now the gradient of the controller's input [x_t, r_{t-1}]
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t k = 0; k < c.I; ++k) dxp[(t * B + b) * c.I + k] = dlp[b * In + k];
        for (int64_t k = 0; k < c.Kr * s.M; ++k) drp[b * c.Kr * s.M + k] = dlp[b * In + c.I + k];
      }
    }
  });
  // weight gradients: one matmul per weight over all steps
  std::vector<Tensor> out = {dx, dr.reshape({B, c.Kr, s.M}), dwr, dww, dmem.transpose(1, 2).contiguous(), dh, dc};
  const Tensor hc = (clip > 0 ? hidden.clamp(-clip, clip) : hidden).reshape({T * B, H});
  const Tensor drr2 = draw_r.reshape({T * B, Pr}), drw2 = draw_w.reshape({T * B, Pw});
  out.push_back(drr2.t().mm(hc));
  out.push_back(drr2.sum(0));
  out.push_back(drw2.t().mm(hc));
  out.push_back(drw2.sum(0));
  for (int64_t l = 0; l < L; ++l) {
    const Tensor dg2 = dgates.select(1, l).reshape({T * B, G});
    const Tensor in2 = l == 0 ? inputs.reshape({T * B, In}) : hs.select(1, l - 1).reshape({T * B, H});
    out.push_back(dg2.t().mm(in2));
    if (lstm) {
      const Tensor hprev = at::cat({h0[l].unsqueeze(0), hs.select(1, l).narrow(0, 0, T - 1)}, 0).reshape({T * B, H});
      const Tensor db = dg2.sum(0);
      out.push_back(dg2.t().mm(hprev));
      out.push_back(db);
      out.push_back(db.clone());
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
