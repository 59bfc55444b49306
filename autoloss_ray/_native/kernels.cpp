// autoloss-ray: fused CPU kernels for the surrogate losses (loaded by autoloss_ray/native.py).
//
// Plain C ABI (no torch headers, so it compiles in about two seconds); every function works on
// one range of pixels so Python can run several ranges on several threads (ctypes releases
// the GIL). Math is the same as the eager code in surrogates.py / parameterizations.py:
//
//   softmax over classes: e_c = exp(z_c - max z), p_c = e_c / sum e
//   curve (one half-segment k per element, k = number of bounds <= x):
//     u = A x + B, s = max(c^2 + (1 - 2c) u, EPS_C^2), t = u / (c + sqrt(s)),
//     h = (yb + ya t) t + y0,  h' = (yb + 2 ya t) A / (2 sqrt(s))
//
// Layouts: z, grad [N, C, HW] (NCHW, contiguous); tgt [N*HW] int64 in [0, C); pixel weights
// w [N*HW]; a curve table is bounds [nb] and coef [6, nb + 1] (rows A, B, c, y0, yb, ya);
// nb = -1 is the identity curve. A pixel range [g0, g1) indexes the flattened N*HW pixels.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t TILE = 128;  // pixels per tile; a tile's [C, TILE] buffers stay in L1/L2

template <typename F>
struct Curve {
  int nb;           // number of bounds (half-segments - 1); -1: identity
  const F* bounds;  // [nb]
  const F* coef;    // [6, nb + 1]
};

template <typename F>
inline F sfloor() { return F(1e-8); }  // EPS_C^2 (parameterizations._SFLOOR)

// One half-segment (coefficients A, B, c, y0, yb, ya of parameterizations.curve_table) at x:
// h = (yb + ya t) t + y0 and h' = (yb + 2 ya t) A / (2 sqrt(s)), t = u / (c + sqrt(s)).
template <typename F>
inline void half_segment(F x, F A, F B, F c, F y0, F yb, F ya, F& h, F& d) {
  const F u = A * x + B;
  F s = u + c * (c - F(2) * u);
  s = s > sfloor<F>() ? s : sfloor<F>();
  const F r = std::sqrt(s);
  const F t = u / (c + r);
  h = (yb + ya * t) * t + y0;
  d = (yb + F(2) * ya * t) * A * F(0.5) / r;
}

template <typename F, int NB>
void eval_fixed(const Curve<F>& cv, const F* __restrict x, F* __restrict h, F* __restrict d,
                int64_t n) {
  constexpr int ns = NB + 1;
  F b[NB];
  for (int i = 0; i < NB; ++i) b[i] = cv.bounds[i];
  F A_[ns], B_[ns], c_[ns], y0_[ns], yb_[ns], ya_[ns];
  for (int k = 0; k < ns; ++k) {
    A_[k] = cv.coef[k];
    B_[k] = cv.coef[ns + k];
    c_[k] = cv.coef[2 * ns + k];
    y0_[k] = cv.coef[3 * ns + k];
    yb_[k] = cv.coef[4 * ns + k];
    ya_[k] = cv.coef[5 * ns + k];
  }
  for (int64_t j = 0; j < n; ++j) {
    const F xv = x[j];
    F A = A_[0], B = B_[0], c = c_[0], y0 = y0_[0], yb = yb_[0], ya = ya_[0];
    for (int i = 0; i < NB; ++i) {  // unrolled selects: no gathers
      const bool up = xv >= b[i];
      A = up ? A_[i + 1] : A;
      B = up ? B_[i + 1] : B;
      c = up ? c_[i + 1] : c;
      y0 = up ? y0_[i + 1] : y0;
      yb = up ? yb_[i + 1] : yb;
      ya = up ? ya_[i + 1] : ya;
    }
    half_segment(xv, A, B, c, y0, yb, ya, h[j], d[j]);
  }
}

template <typename F>
void eval_generic(const Curve<F>& cv, const F* __restrict x, F* __restrict h,
                  F* __restrict d, int64_t n) {
  const int ns = cv.nb + 1;
  const F* co = cv.coef;
  for (int64_t j = 0; j < n; ++j) {
    const F xv = x[j];
    int k = 0;
    for (int i = 0; i < cv.nb; ++i) k += xv >= cv.bounds[i];
    const F A = co[k], B = co[ns + k], c = co[2 * ns + k], y0 = co[3 * ns + k],
            yb = co[4 * ns + k], ya = co[5 * ns + k];
    half_segment(xv, A, B, c, y0, yb, ya, h[j], d[j]);
  }
}

template <typename F>
void eval_identity(const Curve<F>&, const F* __restrict x, F* __restrict h, F* __restrict d,
                   int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    h[j] = x[j];
    d[j] = F(1);
  }
}

template <typename F>
using EvalFn = void (*)(const Curve<F>&, const F*, F*, F*, int64_t);

template <typename F>
EvalFn<F> pick(int nb) {
  switch (nb) {
    case -1: return eval_identity<F>;
    case 1: return eval_fixed<F, 1>;
    case 3: return eval_fixed<F, 3>;
    case 9: return eval_fixed<F, 9>;
    default: return eval_generic<F>;
  }
}

template <typename T, typename U>
inline T bits_as(U u) {  // std::bit_cast without C++20
  static_assert(sizeof(T) == sizeof(U));
  T t;
  std::memcpy(&t, &u, sizeof(T));
  return t;
}

// Number of non-finite values (NaN, +-inf) in x [n], from the exponent bits (integer
// operations, which -ffast-math leaves alone).
inline int64_t count_nonfinite(const float* __restrict x, int64_t n) {
  int64_t k = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint32_t b = bits_as<uint32_t>(x[j]);
    k += (b & 0x7f800000u) == 0x7f800000u;
  }
  return k;
}

inline int64_t count_nonfinite(const double* __restrict x, int64_t n) {
  int64_t k = 0;
  for (int64_t j = 0; j < n; ++j) {
    const uint64_t b = bits_as<uint64_t>(x[j]);
    k += (b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull;
  }
  return k;
}

// exp(x) for x <= 0 (softmax arguments z - max z) from plain IEEE operations, so vectorized
// loop bodies and their scalar tails give bit-identical results (libm's vector and scalar exp
// differ in the last bit, which would make equal logits give unequal probabilities depending
// on a pixel's position and break exact ties). Cephes' expf / exp: Cody-Waite reduction and a
// polynomial (float) or rational (double) approximation, written with explicit fma so that
// -ffast-math cannot merge the two-step reduction; exp(0) = 1 exactly. Results under the
// smallest normal number are 0 (torch gives subnormals there). Accuracy: see
// tests/test_native.py::test_exp_accuracy_and_position_independence.
inline float exp_nonpos(float x) {
  const bool under = x < -87.0f;
  x = under ? -87.0f : x;
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  float r = std::fma(n, -0.693359375f, x);
  r = std::fma(n, 2.12194440e-4f, r);
  float y = 1.9875691500e-4f;
  y = std::fma(y, r, 1.3981999507e-3f);
  y = std::fma(y, r, 8.3334519073e-3f);
  y = std::fma(y, r, 4.1665795894e-2f);
  y = std::fma(y, r, 1.6666665459e-1f);
  y = std::fma(y, r, 5.0000001201e-1f);
  y = std::fma(y, r * r, r) + 1.0f;
  const float scale = bits_as<float>((static_cast<int32_t>(n) + 127) << 23);
  return under ? 0.0f : y * scale;
}

inline double exp_nonpos(double x) {
  const bool under = x < -708.0;
  x = under ? -708.0 : x;
  const double n = std::floor(x * 1.4426950408889634073599 + 0.5);
  double r = std::fma(n, -6.93145751953125e-1, x);
  r = std::fma(n, -1.42860682030941723212e-6, r);
  const double xx = r * r;
  const double px = r * std::fma(std::fma(1.26177193074810590878e-4, xx,
                                          3.02994407707441961300e-2), xx,
                                 9.99999999999999999910e-1);
  const double qx = std::fma(std::fma(std::fma(3.00198505138664455042e-6, xx,
                                               2.52448340349684104192e-3), xx,
                                      2.27265548208155028766e-1), xx,
                             2.00000000000000000009e0);
  const double y = std::fma(2.0, px / (qx - px), 1.0);
  const double scale = bits_as<double>((static_cast<int64_t>(n) + 1023) << 52);
  return under ? 0.0 : y * scale;
}

// Softmax of one tile: z points at pixel j0 of image n's class-0 plane; writes p [C, TILE]
// (row stride TILE) for the first cnt pixels and, if ``pred`` is given, argmax_c z per pixel
// (the first maximum, as torch.argmax) into pred [cnt]. m, s: [TILE] scratch; zt: [C, TILE]
// scratch. The logits are first copied into zt (a partial tile padded with zeros) and every
// loop runs over the full TILE width: no loop has a remainder, so every pixel goes through the
// same vector code and equal logits give bit-identical probabilities at any position (under
// -ffast-math a remainder loop may sum the classes in another order than the vector body).
template <typename F>
void tile_softmax(const F* __restrict z, int64_t C, int64_t HW, int64_t cnt, F* __restrict p,
                  F* __restrict m, F* __restrict s, F* __restrict zt, int32_t* __restrict pred) {
  for (int64_t c = 0; c < C; ++c) {
    const F* __restrict zc = z + c * HW;
    F* __restrict dst = zt + c * TILE;
    for (int64_t j = 0; j < cnt; ++j) dst[j] = zc[j];
    for (int64_t j = cnt; j < TILE; ++j) dst[j] = F(0);
  }
  for (int64_t j = 0; j < TILE; ++j) m[j] = zt[j];
  for (int64_t c = 1; c < C; ++c) {
    const F* __restrict zc = zt + c * TILE;
    for (int64_t j = 0; j < TILE; ++j) m[j] = zc[j] > m[j] ? zc[j] : m[j];
  }
  if (pred) {
    for (int64_t j = 0; j < cnt; ++j) pred[j] = static_cast<int32_t>(C - 1);
    for (int64_t c = C - 2; c >= 0; --c) {
      const F* __restrict zc = zt + c * TILE;
      for (int64_t j = 0; j < cnt; ++j)
        pred[j] = zc[j] >= m[j] ? static_cast<int32_t>(c) : pred[j];
    }
  }
  for (int64_t j = 0; j < TILE; ++j) s[j] = F(0);
  for (int64_t c = 0; c < C; ++c) {
    const F* __restrict zc = zt + c * TILE;
    F* __restrict pc = p + c * TILE;
    for (int64_t j = 0; j < TILE; ++j) {
      pc[j] = exp_nonpos(zc[j] - m[j]);
      s[j] += pc[j];
    }
  }
  for (int64_t j = 0; j < TILE; ++j) s[j] = F(1) / s[j];
  for (int64_t c = 0; c < C; ++c) {
    F* __restrict pc = p + c * TILE;
    for (int64_t j = 0; j < TILE; ++j) pc[j] *= s[j];
  }
}

inline int64_t tile_count(int64_t g, int64_t g1, int64_t HW) {
  return std::min({TILE, HW - g % HW, g1 - g});
}

// Region statistics, forward, for pixels [g0, g1). and_/or_ null: that curve is not used.
// acc [4C + 1] (double, added to): I, O, npred (sum of w over the pixels whose argmax is c),
// ntgt (sum of w over the pixels whose target is c), and the number of non-finite logits
// (the caller then discards the results: -ffast-math promises nothing for them).
// g_and [N*HW]: w h_and'(p_t). g_or [N, C, HW]: w (1 - y_c) h_or'(p_c).
template <typename F>
void region_forward(const F* z, const int64_t* tgt, const F* w, int64_t C, int64_t HW,
                    int64_t g0, int64_t g1, const Curve<F>* and_, const Curve<F>* or_,
                    F* g_and, F* g_or, double* acc) {
  std::vector<F> buf((2 * C + 5) * TILE);
  F* p = buf.data();
  F* m = p + C * TILE;
  F* s = m + TILE;
  F* h = s + TILE;
  F* d = h + TILE;
  F* x = d + TILE;
  F* zt = x + TILE;  // [C, TILE]
  std::vector<int32_t> ti(TILE), pi(TILE);
  const EvalFn<F> fand = and_ ? pick<F>(and_->nb) : nullptr;
  const EvalFn<F> f_or = or_ ? pick<F>(or_->nb) : nullptr;
  double* I = acc;
  double* O = acc + C;
  double* npred = acc + 2 * C;
  double* ntgt = acc + 3 * C;
  int64_t nonfinite = 0;
  for (int64_t g = g0; g < g1;) {
    const int64_t cnt = tile_count(g, g1, HW);
    const int64_t n = g / HW, j0 = g % HW;
    const F* zt0 = z + n * C * HW + j0;
    const F* wt = w + g;
    for (int64_t j = 0; j < cnt; ++j) ti[j] = static_cast<int32_t>(tgt[g + j]);
    tile_softmax(zt0, C, HW, cnt, p, m, s, zt, pi.data());
    nonfinite += count_nonfinite(zt, C * TILE);  // the tile's logits (padded with zeros)
    for (int64_t j = 0; j < cnt; ++j) {
      npred[pi[j]] += static_cast<double>(wt[j]);
      ntgt[ti[j]] += static_cast<double>(wt[j]);
    }
    if (f_or) {
      for (int64_t c = 0; c < C; ++c) {
        f_or(*or_, p + c * TILE, h, d, cnt);
        F* __restrict go = g_or + (n * C + c) * HW + j0;
        F oc = F(0);
        for (int64_t j = 0; j < cnt; ++j) {
          const F wv = ti[j] == c ? F(0) : wt[j];
          oc += wv * h[j];
          go[j] = wv * d[j];
        }
        O[c] += oc;
      }
    }
    if (fand) {
      for (int64_t j = 0; j < cnt; ++j) x[j] = p[ti[j] * TILE + j];
      fand(*and_, x, h, d, cnt);
      for (int64_t j = 0; j < cnt; ++j) {
        I[ti[j]] += static_cast<double>(wt[j] * h[j]);
        g_and[g + j] = wt[j] * d[j];
      }
    }
    g += cnt;
  }
  acc[4 * C] += static_cast<double>(nonfinite);
}

// Region statistics, backward: grad = p (a - sum_c p_c a_c) with
// a_c = gO_c g_or_c + [c = t] gI_t g_and (either part skipped when its pointer is null).
template <typename F>
void region_backward(const F* z, const int64_t* tgt, int64_t C, int64_t HW, int64_t g0,
                     int64_t g1, const F* gI, const F* g_and, const F* gO, const F* g_or,
                     F* grad) {
  std::vector<F> buf((3 * C + 3) * TILE);
  F* p = buf.data();
  F* a = p + C * TILE;
  F* m = a + C * TILE;
  F* s = m + TILE;
  F* at = s + TILE;
  F* zt = at + TILE;  // [C, TILE]
  std::vector<int32_t> ti(TILE);
  for (int64_t g = g0; g < g1;) {
    const int64_t cnt = tile_count(g, g1, HW);
    const int64_t n = g / HW, j0 = g % HW;
    for (int64_t j = 0; j < cnt; ++j) ti[j] = static_cast<int32_t>(tgt[g + j]);
    tile_softmax(z + n * C * HW + j0, C, HW, cnt, p, m, s, zt, static_cast<int32_t*>(nullptr));
    for (int64_t j = 0; j < cnt; ++j) {
      at[j] = gI ? gI[ti[j]] * g_and[g + j] : F(0);
      s[j] = F(0);
    }
    for (int64_t c = 0; c < C; ++c) {
      const F* __restrict pc = p + c * TILE;
      F* __restrict ac = a + c * TILE;
      if (g_or) {
        const F* __restrict go = g_or + (n * C + c) * HW + j0;
        const F oc = gO[c];
        for (int64_t j = 0; j < cnt; ++j) {
          const F v = (oc * go[j] + (ti[j] == c ? at[j] : F(0))) * pc[j];
          ac[j] = v;
          s[j] += v;
        }
      } else {
        for (int64_t j = 0; j < cnt; ++j) {
          const F v = (ti[j] == c ? at[j] : F(0)) * pc[j];
          ac[j] = v;
          s[j] += v;
        }
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      const F* __restrict pc = p + c * TILE;
      const F* __restrict ac = a + c * TILE;
      F* __restrict gc = grad + (n * C + c) * HW + j0;
      for (int64_t j = 0; j < cnt; ++j) gc[j] = ac[j] - pc[j] * s[j];
    }
    g += cnt;
  }
}

// ---- BF1 -------------------------------------------------------------------------------

// Softmax of a whole image: z [C, HW] -> p [C, HW]; if ``pred`` is given, also writes
// argmax_c z [HW] (the first maximum).
template <typename F>
void image_softmax(const F* z, int64_t C, int64_t HW, F* p, int64_t* pred = nullptr) {
  std::vector<F> m(TILE), s(TILE), t(C * TILE), zt(C * TILE);
  std::vector<int32_t> pi(TILE);
  for (int64_t j0 = 0; j0 < HW; j0 += TILE) {
    const int64_t cnt = std::min(TILE, HW - j0);
    tile_softmax(z + j0, C, HW, cnt, t.data(), m.data(), s.data(), zt.data(),
                 pred ? pi.data() : static_cast<int32_t*>(nullptr));
    if (pred)
      for (int64_t j = 0; j < cnt; ++j) pred[j0 + j] = pi[j];
    for (int64_t c = 0; c < C; ++c) {
      const F* __restrict src = t.data() + c * TILE;
      F* __restrict dst = p + c * HW + j0;
      for (int64_t j = 0; j < cnt; ++j) dst[j] = src[j];
    }
  }
}

// 3x3 min of a plane (outside ignored): x [H, W] -> e [H, W] (tmp [H, W] scratch).
template <typename F>
void erode3x3(const F* __restrict x, int64_t H, int64_t W, F* __restrict tmp,
              F* __restrict e) {
  for (int64_t i = 0; i < H; ++i) {
    const F* __restrict r = x + i * W;
    F* __restrict o = tmp + i * W;
    if (W == 1) { o[0] = r[0]; continue; }
    o[0] = std::min(r[0], r[1]);
    for (int64_t j = 1; j < W - 1; ++j) o[j] = std::min(std::min(r[j - 1], r[j]), r[j + 1]);
    o[W - 1] = std::min(r[W - 2], r[W - 1]);
  }
  for (int64_t i = 0; i < H; ++i) {
    const F* __restrict a = tmp + (i > 0 ? i - 1 : i) * W;
    const F* __restrict b = tmp + i * W;
    const F* __restrict c = tmp + (i < H - 1 ? i + 1 : i) * W;
    F* __restrict o = e + i * W;
    for (int64_t j = 0; j < W; ++j) o[j] = std::min(std::min(a[j], b[j]), c[j]);
  }
}

// Sites of one image grouped by class (a counting sort): the pixels of class c are
// list[start[c] .. start[c + 1]).
void group_sites(const int32_t* st, int64_t HW, int64_t C, std::vector<int64_t>& start,
                 std::vector<int64_t>& list) {
  start.assign(C + 1, 0);
  for (int64_t j = 0; j < HW; ++j)
    if (st[j] >= 0) ++start[st[j] + 1];
  for (int64_t c = 0; c < C; ++c) start[c + 1] += start[c];
  list.resize(start[C]);
  std::vector<int64_t> pos(start.begin(), start.end() - 1);
  for (int64_t j = 0; j < HW; ++j)
    if (st[j] >= 0) list[pos[st[j]]++] = j;
}

// d = dilate(st == c, r) of one plane ((2r+1)^2 window, outside = 0) as 0/1 bytes, by
// separable sliding counts (rowc [H, W] and colc [W] scratch).
void dilate_class(const int32_t* st, int32_t c, int64_t H, int64_t W, int64_t r, int32_t* rowc,
                  int32_t* colc, uint8_t* d) {
  for (int64_t i = 0; i < H; ++i) {
    const int32_t* si = st + i * W;
    int32_t* ri = rowc + i * W;
    int32_t cnt = 0;
    for (int64_t j = 0; j < std::min(r, W); ++j) cnt += si[j] == c;
    for (int64_t j = 0; j < W; ++j) {
      if (j + r < W) cnt += si[j + r] == c;
      if (j - r - 1 >= 0) cnt -= si[j - r - 1] == c;
      ri[j] = cnt;
    }
  }
  std::fill(colc, colc + W, 0);
  for (int64_t i = 0; i < std::min(r, H); ++i)
    for (int64_t j = 0; j < W; ++j) colc[j] += rowc[i * W + j] > 0;
  for (int64_t i = 0; i < H; ++i) {
    if (i + r < H) {
      const int32_t* ra = rowc + (i + r) * W;
      for (int64_t j = 0; j < W; ++j) colc[j] += ra[j] > 0;
    }
    if (i - r - 1 >= 0) {
      const int32_t* rb = rowc + (i - r - 1) * W;
      for (int64_t j = 0; j < W; ++j) colc[j] -= rb[j] > 0;
    }
    uint8_t* di = d + i * W;
    for (int64_t j = 0; j < W; ++j) di[j] = colc[j] > 0;
  }
}

// BF1 forward for images [n0, n1), fused: softmax (and argmax into pred [N*HW]), erosion,
// soft boundary b = max(h3(p) + h4(e) - h3(p) h4(e) - h1(p) h2(e), 0) one class plane at a
// time (b itself is never stored), and the soft counts, added to acc [5C] (double):
//   n_p = sum v b_c,  m_p = sum v b_c dil_c,  m_g = sum over class-c sites of the max of b_c
//   over the (2r+1)^2 window,  n_g = number of class-c sites,  and (no gradient) the valid
//   pixels of pred == c with another pred label in their in-image 3x3 window (acc [5C + 1]:
//   acc[5C] is the number of non-finite logits; the caller then discards the results),
// with v [N*HW] valid (0/1), site [N*HW] int32 (target class of each target-boundary pixel,
// -1 elsewhere) and dil_c = dilate(site == c, r). Saves for backward: ga = db/dp, gb = db/de
// ([N, C, HW], 0 where the clamp is active), dil [N, C, HW] uint8 and arg [N*HW] int32 (per
// site, the in-image offset of its window maximum: the first one with window columns outer
// and rows inner, which is where autograd through morphology.dilate sends the gradient).
template <typename F>
void bf1_forward(const F* z, const F* v, const int32_t* site, int64_t C, int64_t H, int64_t W,
                 int64_t r, int64_t n0, int64_t n1, const Curve<F>* cv, F* ga, F* gb,
                 int64_t* pred, uint8_t* dil, int32_t* arg, double* acc) {
  const int64_t HW = H * W;
  std::vector<F> p(C * HW), e(HW), tmp(HW), bp(HW), buf(8 * TILE);
  std::vector<int32_t> rowc(HW), colc(W);
  std::vector<int64_t> start, list;
  F* h1 = buf.data(); F* d1 = h1 + TILE; F* h2 = d1 + TILE; F* d2 = h2 + TILE;
  F* h3 = d2 + TILE; F* d3 = h3 + TILE; F* h4 = d3 + TILE; F* d4 = h4 + TILE;
  const EvalFn<F> f1 = pick<F>(cv[0].nb), f2 = pick<F>(cv[1].nb), f3 = pick<F>(cv[2].nb),
                  f4 = pick<F>(cv[3].nb);
  double* n_p = acc;
  double* m_p = acc + C;
  double* m_g = acc + 2 * C;
  double* n_g = acc + 3 * C;
  double* n_ph = acc + 4 * C;
  int64_t nonfinite = 0;
  for (int64_t n = n0; n < n1; ++n) {
    nonfinite += count_nonfinite(z + n * C * HW, C * HW);
    image_softmax(z + n * C * HW, C, HW, p.data(), pred + n * HW);
    {  // predicted boundary pixels per class (valid pixels with another in-image 3x3 label)
      const int64_t* L = pred + n * HW;
      const F* __restrict vv = v + n * HW;
      for (int64_t i = 0; i < H; ++i) {
        const int64_t a0 = i > 0 ? i - 1 : 0, a1 = i < H - 1 ? i + 1 : H - 1;
        for (int64_t j = 0; j < W; ++j) {
          if (vv[i * W + j] == F(0)) continue;
          const int64_t c = L[i * W + j];
          const int64_t b0 = j > 0 ? j - 1 : 0, b1 = j < W - 1 ? j + 1 : W - 1;
          bool edge = false;
          for (int64_t a = a0; a <= a1; ++a)
            for (int64_t b = b0; b <= b1; ++b) edge |= L[a * W + b] != c;
          if (edge) n_ph[c] += 1.0;
        }
      }
    }
    const int32_t* st = site + n * HW;
    const F* __restrict vn = v + n * HW;
    int32_t* an = arg + n * HW;
    std::fill(an, an + HW, -1);
    group_sites(st, HW, C, start, list);
    for (int64_t c = 0; c < C; ++c) {
      const F* pc = p.data() + c * HW;
      erode3x3(pc, H, W, tmp.data(), e.data());
      const int64_t off = (n * C + c) * HW;
      double np = 0.0;
      for (int64_t j0 = 0; j0 < HW; j0 += TILE) {
        const int64_t cnt = std::min(TILE, HW - j0);
        const F* xp = pc + j0;
        const F* xe = e.data() + j0;
        f1(cv[0], xp, h1, d1, cnt);
        f2(cv[1], xe, h2, d2, cnt);
        f3(cv[2], xp, h3, d3, cnt);
        f4(cv[3], xe, h4, d4, cnt);
        F* __restrict ob = bp.data() + j0;
        F* __restrict oa = ga + off + j0;
        F* __restrict oe = gb + off + j0;
        const F* __restrict vj = vn + j0;
        F npt = F(0);
        for (int64_t j = 0; j < cnt; ++j) {
          const F raw = h3[j] + h4[j] - h3[j] * h4[j] - h1[j] * h2[j];
          const bool keep = raw >= F(0);
          ob[j] = keep ? raw : F(0);
          oa[j] = keep ? (F(1) - h4[j]) * d3[j] - d1[j] * h2[j] : F(0);
          oe[j] = keep ? (F(1) - h3[j]) * d4[j] - h1[j] * d2[j] : F(0);
          npt += vj[j] * ob[j];
        }
        np += static_cast<double>(npt);
      }
      n_p[c] += np;
      uint8_t* __restrict dc = dil + off;
      if (start[c] == start[c + 1]) {
        std::fill(dc, dc + HW, 0);
        continue;
      }
      dilate_class(st, static_cast<int32_t>(c), H, W, r, rowc.data(), colc.data(), dc);
      const F* __restrict bc = bp.data();
      double mp = 0.0;
      for (int64_t j0 = 0; j0 < HW; j0 += TILE) {
        const int64_t j1 = std::min(HW, j0 + TILE);
        F mpt = F(0);
        for (int64_t j = j0; j < j1; ++j) mpt += dc[j] ? vn[j] * bc[j] : F(0);
        mp += static_cast<double>(mpt);
      }
      m_p[c] += mp;
      double mg = 0.0;
      for (int64_t q = start[c]; q < start[c + 1]; ++q) {
        const int64_t x = list[q], i = x / W, j = x % W;
        const int64_t a0 = std::max<int64_t>(0, i - r), a1 = std::min<int64_t>(H - 1, i + r);
        const int64_t c0 = std::max<int64_t>(0, j - r), c1 = std::min<int64_t>(W - 1, j + r);
        int64_t best = a0 * W + c0;
        F bv = bc[best];
        for (int64_t col = c0; col <= c1; ++col)
          for (int64_t row = a0; row <= a1; ++row) {
            const F y = bc[row * W + col];
            if (y > bv) { bv = y; best = row * W + col; }
          }
        an[x] = static_cast<int32_t>(best);
        mg += bv;
      }
      m_g[c] += mg;
      n_g[c] += static_cast<double>(start[c + 1] - start[c]);
    }
  }
  acc[5 * C] += static_cast<double>(nonfinite);
}

// BF1 backward: with gB = v (gnp_c + gmp_c dil_c) + gmg_c at each class-c site's arg (the
// gradient reaching b), dL/dp = ga gB + the erosion's share (gb gB sent to the first minimum
// of each 3x3 window in row-major order, as max_pool2d over -p routes it), then through the
// softmax. gnp, gmp, gmg [C] (any may be null: zero).
template <typename F>
void bf1_backward(const F* z, const F* ga, const F* gb, const F* v, const int32_t* site,
                  const uint8_t* dil, const int32_t* arg, const F* gnp, const F* gmp,
                  const F* gmg, int64_t C, int64_t H, int64_t W, int64_t n0, int64_t n1,
                  F* grad) {
  const int64_t HW = H * W, Wp = W + 2, HWp = (H + 2) * Wp;
  std::vector<F> p(C * HW), s(HW), gB(HW), P(HWp, F(2)), V(HWp, F(0));
  std::vector<uint8_t> code(HWp, 255);
  std::vector<int64_t> start, list;
  int64_t off9[9];  // window offsets in the padded plane, row-major (max_pool2d's scan order)
  for (int k = 0; k < 9; ++k) off9[k] = (k / 3 - 1) * Wp + (k % 3 - 1);
  for (int64_t n = n0; n < n1; ++n) {
    image_softmax(z + n * C * HW, C, HW, p.data());
    const F* __restrict vn = v + n * HW;
    const int32_t* an = arg + n * HW;
    group_sites(site + n * HW, HW, C, start, list);
    F* gp = grad + n * C * HW;  // dL/dp first, then dL/dz in place
    for (int64_t c = 0; c < C; ++c) {
      const int64_t off = (n * C + c) * HW;
      const F* __restrict pc = p.data() + c * HW;
      const F* __restrict gac = ga + off;
      const F* __restrict gbc = gb + off;
      const uint8_t* __restrict dc = dil + off;
      F* __restrict gq = gB.data();
      const F a = gnp ? gnp[c] : F(0), m = gmp ? gmp[c] : F(0);
      for (int64_t j = 0; j < HW; ++j) gq[j] = vn[j] * (a + (dc[j] ? m : F(0)));
      if (gmg)
        for (int64_t q = start[c]; q < start[c + 1]; ++q) gq[an[list[q]]] += gmg[c];
      F* __restrict o = gp + c * HW;
      F* __restrict Pp = P.data();
      F* __restrict Vp = V.data();
      uint8_t* __restrict cp = code.data();
      for (int64_t i = 0; i < H; ++i) {  // padded copies: 2 (> any p) / 0 outside the image
        const int64_t q = (i + 1) * Wp + 1;
        for (int64_t j = 0; j < W; ++j) {
          Pp[q + j] = pc[i * W + j];
          Vp[q + j] = gbc[i * W + j] * gq[i * W + j];
        }
      }
      // code[y] = k of the first minimum of p in y's window (strict <, row-major)
      for (int64_t i = 0; i < H; ++i) {
        const int64_t q = (i + 1) * Wp + 1;
        for (int64_t j = 0; j < W; ++j) {
          F best = F(2);  // above every probability (no infinities under -ffast-math)
          uint8_t kb = 0;
          for (int k = 0; k < 9; ++k) {
            const F x = Pp[q + j + off9[k]];
            const bool lt = x < best;
            best = lt ? x : best;
            kb = lt ? static_cast<uint8_t>(k) : kb;
          }
          cp[q + j] = kb;
        }
      }
      // gather: x receives V[y] from every y whose window minimum is x (x = y + off9[k])
      for (int64_t i = 0; i < H; ++i) {
        const int64_t q = (i + 1) * Wp + 1;
        F* __restrict oi = o + i * W;
        for (int64_t j = 0; j < W; ++j) oi[j] = gac[i * W + j] * gq[i * W + j];
        for (int k = 0; k < 9; ++k) {
          const uint8_t* __restrict ck = cp + q - off9[k];
          const F* __restrict vk = Vp + q - off9[k];
          const uint8_t kk = static_cast<uint8_t>(k);
          for (int64_t j = 0; j < W; ++j) oi[j] += ck[j] == kk ? vk[j] : F(0);
        }
      }
    }
    for (int64_t j = 0; j < HW; ++j) s[j] = F(0);
    for (int64_t c = 0; c < C; ++c) {
      const F* __restrict pc = p.data() + c * HW;
      const F* __restrict o = gp + c * HW;
      for (int64_t j = 0; j < HW; ++j) s[j] += pc[j] * o[j];
    }
    for (int64_t c = 0; c < C; ++c) {
      const F* __restrict pc = p.data() + c * HW;
      F* __restrict o = gp + c * HW;
      for (int64_t j = 0; j < HW; ++j) o[j] = pc[j] * (o[j] - s[j]);
    }
  }
}

// Boundary pixels of label maps [N, H, W]: out = lab where valid and some in-image 3x3
// neighbour has another label, -1 elsewhere (per class, morphology.boundaries of the class
// mask with the outside counting as inside).
void label_sites(const int64_t* lab, const uint8_t* valid, int64_t H, int64_t W, int64_t n0,
                 int64_t n1, int32_t* out) {
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t* L = lab + n * H * W;
    for (int64_t i = 0; i < H; ++i) {
      const int64_t a0 = i > 0 ? i - 1 : 0, a1 = i < H - 1 ? i + 1 : H - 1;
      for (int64_t j = 0; j < W; ++j) {
        const int64_t x = n * H * W + i * W + j, c = L[i * W + j];
        bool edge = false;
        if (valid[x]) {
          const int64_t b0 = j > 0 ? j - 1 : 0, b1 = j < W - 1 ? j + 1 : W - 1;
          for (int64_t a = a0; a <= a1; ++a)
            for (int64_t b = b0; b <= b1; ++b) edge |= L[a * W + b] != c;
        }
        out[x] = edge ? static_cast<int32_t>(c) : -1;
      }
    }
  }
}

// Per-pixel inputs of the region kernels from a label map t [N, H, W] (int64), for images
// [n0, n1): a label is a class in [0, C) or, when has_ign, the value ign (ignored, weight 0);
// any other value is counted in *bad and also gets weight 0 (the caller raises on it, or,
// without the label check, gets wrong numbers but no access outside [0, C)).
//   tgt [N*HW]: the class, 0 where not a valid class;  w [N*HW]: 1 at valid pixels, else 0;
//   wb [N*HW] (only when r >= 0): w times BIoU's band, dilate(B, r) ((2r+1)^2 square, outside
//   0) of B = the valid pixels (of a class other than bg, when bg >= 0) with some in-image
//   3x3 neighbour holding another code (code = the class, C for anything else), i.e.
//   metrics.counts.checked_boundary_band. rowc [HW], colc [W], code [HW], bnd [HW]: scratch.
template <typename F>
void target_prep(const int64_t* t, int64_t C, int has_ign, int64_t ign, int64_t H, int64_t W,
                 int64_t r, int64_t bg, int64_t n0, int64_t n1, int64_t* tgt, F* w, F* wb,
                 int64_t* bad) {
  const int64_t HW = H * W;
  std::vector<int32_t> code(r >= 0 ? HW : 0), bnd(r >= 0 ? HW : 0), rowc(r >= 0 ? HW : 0),
      colc(r >= 0 ? W : 0);
  std::vector<uint8_t> band(r >= 0 ? HW : 0);
  int64_t nbad = 0;
  for (int64_t n = n0; n < n1; ++n) {
    const int64_t* tn = t + n * HW;
    int64_t* gn = tgt + n * HW;
    F* wn = w + n * HW;
    for (int64_t x = 0; x < HW; ++x) {
      const int64_t v = tn[x];
      const bool is_ign = has_ign && v == ign;
      const bool cls = v >= 0 && v < C && !is_ign;
      nbad += !(cls || is_ign);
      gn[x] = cls ? v : 0;
      wn[x] = cls ? F(1) : F(0);
      if (r >= 0) code[x] = cls ? static_cast<int32_t>(v) : static_cast<int32_t>(C);
    }
    if (r < 0) continue;
    for (int64_t i = 0; i < H; ++i) {
      const int64_t a0 = i > 0 ? i - 1 : 0, a1 = i < H - 1 ? i + 1 : H - 1;
      for (int64_t j = 0; j < W; ++j) {
        const int32_t c = code[i * W + j];
        bool edge = false;
        if (c < C && c != bg) {
          const int64_t b0 = j > 0 ? j - 1 : 0, b1 = j < W - 1 ? j + 1 : W - 1;
          for (int64_t a = a0; a <= a1; ++a)
            for (int64_t b = b0; b <= b1; ++b) edge |= code[a * W + b] != c;
        }
        bnd[i * W + j] = edge ? 1 : 0;
      }
    }
    dilate_class(bnd.data(), 1, H, W, r, rowc.data(), colc.data(), band.data());
    F* bn = wb + n * HW;
    for (int64_t x = 0; x < HW; ++x) bn[x] = band[x] ? wn[x] : F(0);
  }
  *bad += nbad;
}

template <typename F>
Curve<F> curve(int nb, const void* bounds, const void* coef) {
  return Curve<F>{nb, static_cast<const F*>(bounds), static_cast<const F*>(coef)};
}

}  // namespace

extern "C" {

int autoloss_abi_version() { return 11; }

#define AUTOLOSS_DISPATCH(dtype, ...)        \
  if ((dtype) == 0) {                        \
    using F = float;                         \
    __VA_ARGS__;                             \
  } else if ((dtype) == 1) {                 \
    using F = double;                        \
    __VA_ARGS__;                             \
  } else {                                   \
    return 1;                                \
  }                                          \
  return 0;

// dtype: 0 float32, 1 float64 (every entry point; another value returns 1). nb_and / nb_or:
// -2 = curve not used, -1 = identity, else the number of bounds.
int autoloss_region_forward(int dtype, const void* z, const int64_t* tgt, const void* w,
                            int64_t C, int64_t HW, int64_t g0, int64_t g1, int nb_and,
                            const void* b_and, const void* c_and, int nb_or, const void* b_or,
                            const void* c_or, void* g_and, void* g_or, double* acc) {
  AUTOLOSS_DISPATCH(dtype, {
    Curve<F> ca = curve<F>(nb_and, b_and, c_and), co = curve<F>(nb_or, b_or, c_or);
    region_forward<F>(static_cast<const F*>(z), tgt, static_cast<const F*>(w), C, HW, g0, g1,
                      nb_and >= -1 ? &ca : nullptr, nb_or >= -1 ? &co : nullptr,
                      static_cast<F*>(g_and), static_cast<F*>(g_or), acc);
  })
}

int autoloss_region_backward(int dtype, const void* z, const int64_t* tgt, int64_t C,
                             int64_t HW, int64_t g0, int64_t g1, const void* gI,
                             const void* g_and, const void* gO, const void* g_or,
                             void* grad) {
  AUTOLOSS_DISPATCH(dtype, region_backward<F>(
      static_cast<const F*>(z), tgt, C, HW, g0, g1, static_cast<const F*>(gI),
      static_cast<const F*>(g_and), static_cast<const F*>(gO), static_cast<const F*>(g_or),
      static_cast<F*>(grad)))
}

// nbs [4], bounds [4], coefs [4]: the curves h1..h4 (nb -1: identity).
int autoloss_bf1_forward(int dtype, const void* z, const void* v, const int32_t* site,
                         int64_t C, int64_t H, int64_t W, int64_t r, int64_t n0, int64_t n1,
                         const int* nbs, const void* const* bounds, const void* const* coefs,
                         void* ga, void* gb, int64_t* pred, uint8_t* dil, int32_t* arg,
                         double* acc) {
  AUTOLOSS_DISPATCH(dtype, {
    Curve<F> cv[4];
    for (int k = 0; k < 4; ++k) cv[k] = curve<F>(nbs[k], bounds[k], coefs[k]);
    bf1_forward<F>(static_cast<const F*>(z), static_cast<const F*>(v), site, C, H, W, r, n0,
                   n1, cv, static_cast<F*>(ga), static_cast<F*>(gb), pred, dil, arg, acc);
  })
}

int autoloss_bf1_backward(int dtype, const void* z, const void* ga, const void* gb,
                          const void* v, const int32_t* site, const uint8_t* dil,
                          const int32_t* arg, const void* gnp, const void* gmp,
                          const void* gmg, int64_t C, int64_t H, int64_t W, int64_t n0,
                          int64_t n1, void* grad) {
  AUTOLOSS_DISPATCH(dtype, bf1_backward<F>(
      static_cast<const F*>(z), static_cast<const F*>(ga), static_cast<const F*>(gb),
      static_cast<const F*>(v), site, dil, arg, static_cast<const F*>(gnp),
      static_cast<const F*>(gmp), static_cast<const F*>(gmg), C, H, W, n0, n1,
      static_cast<F*>(grad)))
}

// exp_nonpos over x [n] (x <= 0), for tests of its accuracy and position independence.
int autoloss_exp(int dtype, const void* x, void* out, int64_t n) {
  AUTOLOSS_DISPATCH(dtype, {
    const F* __restrict xi = static_cast<const F*>(x);
    F* __restrict o = static_cast<F*>(out);
    for (int64_t j = 0; j < n; ++j) o[j] = exp_nonpos(xi[j]);
  })
}

int autoloss_label_sites(const int64_t* lab, const uint8_t* valid, int64_t H, int64_t W,
                         int64_t n0, int64_t n1, int32_t* out) {
  label_sites(lab, valid, H, W, n0, n1, out);
  return 0;
}

// target_prep for images [n0, n1) (r < 0: no band, wb unused; bg < 0: every class).
int autoloss_target_prep(int dtype, const int64_t* t, int64_t C, int has_ign, int64_t ign,
                         int64_t H, int64_t W, int64_t r, int64_t bg, int64_t n0, int64_t n1,
                         int64_t* tgt, void* w, void* wb, int64_t* bad) {
  AUTOLOSS_DISPATCH(dtype, target_prep<F>(t, C, has_ign, ign, H, W, r, bg, n0, n1, tgt,
                                          static_cast<F*>(w), static_cast<F*>(wb), bad))
}

}  // extern "C"
