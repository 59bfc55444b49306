// autoloss-ray: the metrics' per-batch counts at any resolution in one pass per image
// (loaded with kernels.cpp by autoloss_ray/native.py; issue 31).
//
// autoloss_metric_stats is metrics/counts.py's _all_stats (the one-word path) in integers:
// the confusion matrix, the confusion inside the BIoU band and the BF1 counts of checked label
// maps. Per image: class codes (the class c, or C for no class: the target's ignore value, the
// prediction's non-class value), each map's class boundaries (a class pixel some in-image 3x3
// neighbour of which holds another code: metrics/_boundary.py's _label_boundaries), the
// boundaries' tolerance dilation as bit sets of classes (OR over the (2r+1)^2 square clipped to
// the image), the band (any dilated target boundary; with a background class, the dilated
// boundaries of the other classes) and the counts. Integers only: the same numbers as the
// torch path, which the tests compare.
//
// It also counts the labels that metrics/_labels.py's value check would refuse, so that the
// accumulator's CPU path reads the maps once for both (the torch check then runs only to raise
// its error).
//
// Layouts: pred, target int64 [N, H, W] contiguous; a range [n0, n1) of images; outputs (added
// to, not overwritten) cm int64 [2, C, C] (outside the band, inside it), bf int64 [4, C]
// (n_p, n_g, m_p, m_g) and bad int64 [2].
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// boundary of a code map: code < C and not every in-image 3x3 neighbour equal to it
void boundaries(const uint8_t* code, int64_t H, int64_t W, int C, uint8_t* row,
                uint8_t* out) {
  for (int64_t y = 0; y < H; ++y) {
    const uint8_t* c = code + y * W;
    uint8_t* r = row + y * W;
    r[0] = 1;
    for (int64_t x = 1; x < W; ++x) r[x] = c[x - 1] == c[x];  // equals its left neighbour
    for (int64_t x = 0; x + 1 < W; ++x) r[x] &= c[x + 1] == c[x];  // and its right one
  }
  for (int64_t y = 0; y < H; ++y) {
    const uint8_t* __restrict c = code + y * W;
    const uint8_t* __restrict r = row + y * W;
    uint8_t* __restrict o = out + y * W;
    for (int64_t x = 0; x < W; ++x) o[x] = r[x];
    if (y > 0)
      for (int64_t x = 0; x < W; ++x) o[x] &= (c[x - W] == c[x]) & r[x - W];
    if (y < H - 1)
      for (int64_t x = 0; x < W; ++x) o[x] &= (c[x + W] == c[x]) & r[x + W];
    for (int64_t x = 0; x < W; ++x) o[x] = (c[x] < C) & (o[x] ^ 1);  // o[x] was "inside"
  }
}

// OR over a (2r+1)^2 square clipped to the image, separably; tmp has H * W words
template <typename T>
void or_dilate(T* map, int64_t H, int64_t W, int64_t r, T* tmp) {
  if (r <= 0) return;
  const int64_t ry = std::min(r, H - 1), rx = std::min(r, W - 1);
  for (int64_t y = 0; y < H; ++y) {
    T* t = tmp + y * W;
    const int64_t a = std::max<int64_t>(0, y - ry), b = std::min(H - 1, y + ry);
    std::copy(map + a * W, map + a * W + W, t);
    for (int64_t k = a + 1; k <= b; ++k) {
      const T* s = map + k * W;
      for (int64_t x = 0; x < W; ++x) t[x] |= s[x];
    }
  }
  for (int64_t y = 0; y < H; ++y) {
    const T* __restrict t = tmp + y * W;
    T* __restrict m = map + y * W;
    std::copy(t, t + W, m);
    for (int64_t k = 1; k <= rx; ++k) {  // m[x] |= t[x - k], t[x + k] where in the image
      for (int64_t x = k; x < W; ++x) m[x] |= t[x - k];
      for (int64_t x = 0; x < W - k; ++x) m[x] |= t[x + k];
    }
  }
}

template <typename T>
struct Buffers {
  std::vector<uint8_t> pc, tc, row, bp, bt, band, tmp8;
  std::vector<T> dp, dt, tmp;
  std::vector<uint16_t> idx;
  std::vector<int64_t> hist;
  Buffers(int64_t P, int64_t C)
      : pc(P), tc(P), row(P), bp(P), bt(P), band(P), tmp8(P), dp(P), dt(P), tmp(P), idx(P),
        hist(4 * (2 * C * (C + 1) + 1)) {}
};

template <typename T>
void image_stats(const int64_t* pred, const int64_t* target, int64_t H, int64_t W, int C,
                 bool has_ignore, int64_t ignore, int64_t tol, int64_t background,
                 Buffers<T>& b, int64_t* cm, int64_t* bf, int64_t* bad) {
  const int64_t P = H * W;
  uint8_t* pc = b.pc.data();
  uint8_t* tc = b.tc.data();
  uint8_t* bp = b.bp.data();
  uint8_t* bt = b.bt.data();
  uint8_t* band = b.band.data();
  T* dp = b.dp.data();
  T* dt = b.dt.data();
  int64_t bad_t = 0, bad_p = 0;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t p = pred[i], t = target[i];
    // metrics/_labels.py's check: a target value is a class or the ignore value (no class,
    // even when it is in [0, C)); a pred value is a class, or the ignore value where the
    // target is ignored (no class then)
    const bool t_class = t >= 0 && t < C, t_ign = has_ignore && t == ignore;
    const bool p_class = p >= 0 && p < C;
    bad_t += !(t_class || t_ign);
    bad_p += !(p_class || (t_ign && p == ignore));
    pc[i] = static_cast<uint8_t>(p_class ? p : C);
    tc[i] = static_cast<uint8_t>(t_class && !t_ign ? t : C);
  }
  bad[0] += bad_t;
  bad[1] += bad_p;
  boundaries(pc, H, W, C, b.row.data(), bp);
  boundaries(tc, H, W, C, b.row.data(), bt);
  for (int64_t i = 0; i < P; ++i) {
    dp[i] = bp[i] ? static_cast<T>(T(1) << pc[i]) : T(0);
    dt[i] = bt[i] ? static_cast<T>(T(1) << tc[i]) : T(0);
  }
  or_dilate(dp, H, W, tol, b.tmp.data());
  or_dilate(dt, H, W, tol, b.tmp.data());
  if (background < 0) {
    for (int64_t i = 0; i < P; ++i) band[i] = dt[i] != 0;
  } else {
    for (int64_t i = 0; i < P; ++i) band[i] = bt[i] && tc[i] != background;
    or_dilate(band, H, W, tol, b.tmp8.data());
  }
  // confusion: bins (band, target class, pred code) of the valid pixels, counted in four
  // partial histograms (a run of pixels in one bin would otherwise wait on its own stores)
  const int64_t K = static_cast<int64_t>(C) + 1;
  const int64_t dust = 2 * C * K;  // ignored target pixels
  uint16_t* idx = b.idx.data();
  for (int64_t i = 0; i < P; ++i) {
    const int t = tc[i];
    idx[i] = static_cast<uint16_t>(t < C ? ((band[i] ? C : 0) + t) * K + pc[i] : dust);
  }
  int64_t* h = b.hist.data();
  std::fill(h, h + 4 * (dust + 1), 0);
  int64_t i = 0;
  for (; i + 4 <= P; i += 4) {
    h[idx[i]] += 1;
    h[(dust + 1) + idx[i + 1]] += 1;
    h[2 * (dust + 1) + idx[i + 2]] += 1;
    h[3 * (dust + 1) + idx[i + 3]] += 1;
  }
  for (; i < P; ++i) h[idx[i]] += 1;
  for (int64_t bnd = 0; bnd < 2; ++bnd)
    for (int64_t t = 0; t < C; ++t)
      for (int64_t p = 0; p < C; ++p) {
        const int64_t j = (bnd * C + t) * K + p;
        cm[(bnd * C + t) * C + p] +=
            h[j] + h[(dust + 1) + j] + h[2 * (dust + 1) + j] + h[3 * (dust + 1) + j];
      }
  // BF1: boundary pixels of valid target pixels (sparse)
  int64_t* n_p = bf;
  int64_t* n_g = bf + C;
  int64_t* m_p = bf + 2 * C;
  int64_t* m_g = bf + 3 * C;
  for (int64_t k0 = 0; k0 < P; k0 += 8) {
    const int64_t k1 = std::min(P, k0 + 8);
    if (k1 - k0 == 8) {  // skip 8 pixels without a boundary at once
      uint64_t wp, wt;
      std::memcpy(&wp, bp + k0, 8);
      std::memcpy(&wt, bt + k0, 8);
      if ((wp | wt) == 0) continue;
    }
    for (int64_t k = k0; k < k1; ++k) {
      if (!((bp[k] | bt[k]) && tc[k] < C)) continue;
      const int t = tc[k], p = pc[k];
      if (bp[k]) {
        n_p[p] += 1;
        m_p[p] += (dt[k] >> p) & 1;
      }
      if (bt[k]) {
        n_g[t] += 1;
        m_g[t] += (dp[k] >> t) & 1;
      }
    }
  }
}

template <typename T>
void run(const int64_t* pred, const int64_t* target, int64_t H, int64_t W, int64_t C,
         bool has_ignore, int64_t ignore, int64_t tol, int64_t background, int64_t n0,
         int64_t n1, int64_t* cm, int64_t* bf, int64_t* bad) {
  Buffers<T> b(H * W, C);
  for (int64_t n = n0; n < n1; ++n)
    image_stats<T>(pred + n * H * W, target + n * H * W, H, W, static_cast<int>(C),
                   has_ignore, ignore, tol, background, b, cm, bf, bad);
}

}  // namespace

extern "C" {

// Counts of images [n0, n1) added to cm [2, C, C] and bf [4, C], and the labels that fail
// metrics/_labels.py's check added to bad [2] (target, pred): when they are not 0, the counts
// mean nothing (the caller raises the check's error). has_ignore / ignore: the ignore value
// (no class even when it is in [0, C), as in _stack_codes); background: the class left out of
// the band (-1: none). Returns 0, or 1 for bad arguments (C outside 1..63).
int autoloss_metric_stats(const int64_t* pred, const int64_t* target, int64_t H, int64_t W,
                          int64_t C, int has_ignore, int64_t ignore, int64_t tolerance,
                          int64_t background, int64_t n0, int64_t n1, int64_t* cm,
                          int64_t* bf, int64_t* bad) {
  if (C < 1 || C > 63 || H < 1 || W < 1 || tolerance < 0 || n0 < 0 || n1 < n0) return 1;
  if (n0 == n1) return 0;
  const bool ign = has_ignore != 0;
  if (C <= 8)
    run<uint8_t>(pred, target, H, W, C, ign, ignore, tolerance, background, n0, n1, cm, bf, bad);
  else if (C <= 16)
    run<uint16_t>(pred, target, H, W, C, ign, ignore, tolerance, background, n0, n1, cm, bf,
                  bad);
  else if (C <= 32)
    run<uint32_t>(pred, target, H, W, C, ign, ignore, tolerance, background, n0, n1, cm, bf,
                  bad);
  else
    run<uint64_t>(pred, target, H, W, C, ign, ignore, tolerance, background, n0, n1, cm, bf,
                  bad);
  return 0;
}

}  // extern "C"
