// autoloss-ray: fused CPU kernels for the surrogate losses (loaded by autoloss_ray/native.py).
//
// Plain C ABI (no torch headers, so it compiles in about a second); every function works on
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
    const F u = A * xv + B;
    F s = u + c * (c - F(2) * u);
    s = s > sfloor<F>() ? s : sfloor<F>();
    const F r = std::sqrt(s);
    const F t = u / (c + r);
    h[j] = (yb + ya * t) * t + y0;
    d[j] = (yb + F(2) * ya * t) * A * F(0.5) / r;
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
    const F u = A * xv + B;
    F s = u + c * (c - F(2) * u);
    s = s > sfloor<F>() ? s : sfloor<F>();
    const F r = std::sqrt(s);
    const F t = u / (c + r);
    h[j] = (yb + ya * t) * t + y0;
    d[j] = (yb + F(2) * ya * t) * A * F(0.5) / r;
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

// Softmax of one tile: z points at pixel j0 of image n's class-0 plane; writes p [C, TILE]
// (row stride TILE) and, per class, accumulates sum over the tile of w where z_c == max z
// (the argmax classes, ties counted for each) into npred (if given).
template <typename F>
void tile_softmax(const F* __restrict z, int64_t C, int64_t HW, int64_t cnt, F* __restrict p,
                  F* __restrict m, F* __restrict s, const F* __restrict w, double* npred) {
  for (int64_t j = 0; j < cnt; ++j) m[j] = z[j];
  for (int64_t c = 1; c < C; ++c) {
    const F* __restrict zc = z + c * HW;
    for (int64_t j = 0; j < cnt; ++j) m[j] = zc[j] > m[j] ? zc[j] : m[j];
  }
  for (int64_t j = 0; j < cnt; ++j) s[j] = F(0);
  for (int64_t c = 0; c < C; ++c) {
    const F* __restrict zc = z + c * HW;
    F* __restrict pc = p + c * TILE;
    for (int64_t j = 0; j < cnt; ++j) {
      pc[j] = std::exp(zc[j] - m[j]);
      s[j] += pc[j];
    }
    if (npred) {
      F acc = F(0);
      for (int64_t j = 0; j < cnt; ++j) acc += zc[j] >= m[j] ? w[j] : F(0);
      npred[c] += acc;
    }
  }
  for (int64_t j = 0; j < cnt; ++j) s[j] = F(1) / s[j];
  for (int64_t c = 0; c < C; ++c) {
    F* __restrict pc = p + c * TILE;
    for (int64_t j = 0; j < cnt; ++j) pc[j] *= s[j];
  }
}

inline int64_t tile_count(int64_t g, int64_t g1, int64_t HW) {
  return std::min({TILE, HW - g % HW, g1 - g});
}

// Region statistics, forward, for pixels [g0, g1). and_/or_ null: that curve is not used.
// acc [3C] (double): I, O, npred, added to. g_and [N*HW]: w h_and'(p_t). g_or [N, C, HW]:
// w (1 - y_c) h_or'(p_c).
template <typename F>
void region_forward(const F* z, const int64_t* tgt, const F* w, int64_t C, int64_t HW,
                    int64_t g0, int64_t g1, const Curve<F>* and_, const Curve<F>* or_,
                    F* g_and, F* g_or, double* acc) {
  std::vector<F> buf((C + 6) * TILE);
  F* p = buf.data();
  F* m = p + C * TILE;
  F* s = m + TILE;
  F* h = s + TILE;
  F* d = h + TILE;
  F* x = d + TILE;
  F* tw = x + TILE;
  std::vector<int32_t> ti(TILE);
  const EvalFn<F> fand = and_ ? pick<F>(and_->nb) : nullptr;
  const EvalFn<F> f_or = or_ ? pick<F>(or_->nb) : nullptr;
  double* I = acc;
  double* O = acc + C;
  double* npred = acc + 2 * C;
  for (int64_t g = g0; g < g1;) {
    const int64_t cnt = tile_count(g, g1, HW);
    const int64_t n = g / HW, j0 = g % HW;
    const F* zt = z + n * C * HW + j0;
    const F* wt = w + g;
    for (int64_t j = 0; j < cnt; ++j) ti[j] = static_cast<int32_t>(tgt[g + j]);
    tile_softmax(zt, C, HW, cnt, p, m, s, wt, npred);
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
    (void)tw;
    g += cnt;
  }
}

// Region statistics, backward: grad = p (a - sum_c p_c a_c) with
// a_c = gO_c g_or_c + [c = t] gI_t g_and (either part skipped when its pointer is null).
template <typename F>
void region_backward(const F* z, const int64_t* tgt, int64_t C, int64_t HW, int64_t g0,
                     int64_t g1, const F* gI, const F* g_and, const F* gO, const F* g_or,
                     F* grad) {
  std::vector<F> buf((2 * C + 3) * TILE);
  F* p = buf.data();
  F* a = p + C * TILE;
  F* m = a + C * TILE;
  F* s = m + TILE;
  F* at = s + TILE;
  std::vector<int32_t> ti(TILE);
  for (int64_t g = g0; g < g1;) {
    const int64_t cnt = tile_count(g, g1, HW);
    const int64_t n = g / HW, j0 = g % HW;
    for (int64_t j = 0; j < cnt; ++j) ti[j] = static_cast<int32_t>(tgt[g + j]);
    tile_softmax(z + n * C * HW + j0, C, HW, cnt, p, m, s, static_cast<const F*>(nullptr),
                 static_cast<double*>(nullptr));
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

template <typename F>
Curve<F> curve(int nb, const void* bounds, const void* coef) {
  return Curve<F>{nb, static_cast<const F*>(bounds), static_cast<const F*>(coef)};
}

}  // namespace

extern "C" {

int autoloss_abi_version() { return 1; }

// dtype: 0 float32, 1 float64. nb_and / nb_or: -2 = curve not used, -1 = identity, else the
// number of bounds.
int autoloss_region_forward(int dtype, const void* z, const int64_t* tgt, const void* w,
                            int64_t C, int64_t HW, int64_t g0, int64_t g1, int nb_and,
                            const void* b_and, const void* c_and, int nb_or, const void* b_or,
                            const void* c_or, void* g_and, void* g_or, double* acc) {
  if (dtype == 0) {
    using F = float;
    Curve<F> ca = curve<F>(nb_and, b_and, c_and), co = curve<F>(nb_or, b_or, c_or);
    region_forward<F>(static_cast<const F*>(z), tgt, static_cast<const F*>(w), C, HW, g0, g1,
                      nb_and >= -1 ? &ca : nullptr, nb_or >= -1 ? &co : nullptr,
                      static_cast<F*>(g_and), static_cast<F*>(g_or), acc);
  } else if (dtype == 1) {
    using F = double;
    Curve<F> ca = curve<F>(nb_and, b_and, c_and), co = curve<F>(nb_or, b_or, c_or);
    region_forward<F>(static_cast<const F*>(z), tgt, static_cast<const F*>(w), C, HW, g0, g1,
                      nb_and >= -1 ? &ca : nullptr, nb_or >= -1 ? &co : nullptr,
                      static_cast<F*>(g_and), static_cast<F*>(g_or), acc);
  } else {
    return 1;
  }
  return 0;
}

int autoloss_region_backward(int dtype, const void* z, const int64_t* tgt, int64_t C,
                             int64_t HW, int64_t g0, int64_t g1, const void* gI,
                             const void* g_and, const void* gO, const void* g_or,
                             void* grad) {
  if (dtype == 0) {
    using F = float;
    region_backward<F>(static_cast<const F*>(z), tgt, C, HW, g0, g1,
                       static_cast<const F*>(gI), static_cast<const F*>(g_and),
                       static_cast<const F*>(gO), static_cast<const F*>(g_or),
                       static_cast<F*>(grad));
  } else if (dtype == 1) {
    using F = double;
    region_backward<F>(static_cast<const F*>(z), tgt, C, HW, g0, g1,
                       static_cast<const F*>(gI), static_cast<const F*>(g_and),
                       static_cast<const F*>(gO), static_cast<const F*>(g_or),
                       static_cast<F*>(grad));
  } else {
    return 1;
  }
  return 0;
}

}  // extern "C"
