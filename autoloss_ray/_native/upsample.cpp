// autoloss-ray: the evaluator's class map of logits upsampled bilinearly, in one pass
// (loaded with kernels.cpp by autoloss_ray/native.py; issue 31).
//
// autoloss_upsample_argmax writes, for every output pixel, the first class of largest value
// of F.interpolate(x, (H, W), mode="bilinear", align_corners=False) without materializing the
// [N, C, H, W] upsample: per image, the horizontal pass of each class and input row once
// (hrow, [C, h, W]), then per output row and class the vertical combination of two hrow rows
// and a running maximum. The arithmetic is PyTorch's CPU kernel's (upsample_generic_Nd_kernel
// with HelperInterpLinear, float): the same index/weight formulas in float, the same products
// and sums in the same order, so the values, and hence the classes, are the same bits. Whether
// PyTorch's build fused a product and a sum into one FMA is a property of its binary, not of
// the source: ``mode`` selects each of the three places where it may have (weights,
// horizontal, vertical), and autoloss_ray/trial/evaluation.py picks the mode whose values equal
// F.interpolate's on random data for each geometry before using it (else it does not use this
// kernel). This file is therefore compiled WITHOUT -ffast-math and with -ffp-contract=off
// (native.STRICT_FLAGS): the compiler may not reassociate or fuse anything; every FMA here is
// an explicit std::fma.
//
// Layouts: x [N, C, h, w] float32 contiguous; out int64 [N, H, W] (argmax) or float32
// [P, H, W] (values, for the check and the tests). A range [g0, g1) indexes the N*H output
// rows (argmax) or the P*H output rows (values).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// mode bits: 1 = the source index's scale * (j + 0.5) - 0.5 is one FMA;
// bits 1-2 (horizontal) and bits 3-4 (vertical), each 0 = a*wa + b*wb rounded twice,
// 1 = fma(a, wa, b*wb), 2 = fma(b, wb, a*wa).
struct Axis {
  std::vector<int64_t> i0, i1;
  std::vector<float> l0, l1;
};

// PyTorch's compute_indices_weights (HelperInterpLinear) for one dimension, float opmath:
// area_pixel_compute_scale / area_pixel_compute_source_index / guard_index_and_lambda.
Axis axis_weights(int64_t in, int64_t out, bool fma_index) {
  Axis a;
  a.i0.resize(out);
  a.i1.resize(out);
  a.l0.resize(out);
  a.l1.resize(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int64_t j = 0; j < out; ++j) {
    if (in == out) {
      a.i0[j] = a.i1[j] = j;
      a.l0[j] = 1.0f;
      a.l1[j] = 0.0f;
      continue;
    }
    const float jj = static_cast<float>(j) + 0.5f;
    float real = fma_index ? std::fma(scale, jj, -0.5f) : scale * jj - 0.5f;
    if (real < 0.0f) real = 0.0f;
    const int64_t i0 = std::min(static_cast<int64_t>(std::floor(real)), in - 1);
    const float l1 = std::min(std::max(real - static_cast<float>(i0), 0.0f), 1.0f);
    a.i0[j] = i0;
    a.i1[j] = i0 + (i0 < in - 1 ? 1 : 0);
    a.l1[j] = l1;
    a.l0[j] = 1.0f - l1;
  }
  return a;
}

template <int M>
inline float comb(float a, float wa, float b, float wb) {
  if constexpr (M == 0) {
    return a * wa + b * wb;
  } else if constexpr (M == 1) {
    return std::fma(a, wa, b * wb);
  } else {
    return std::fma(b, wb, a * wa);
  }
}

// hrow[r, j] for input rows r of one plane: comb(x[r, i0[j]], l0[j], x[r, i1[j]], l1[j])
template <int MH>
void horizontal(const float* __restrict plane, int64_t w, int64_t r0, int64_t r1,
                const Axis& ax, int64_t W, float* __restrict hrow) {
  const int64_t* __restrict i0 = ax.i0.data();
  const int64_t* __restrict i1 = ax.i1.data();
  const float* __restrict l0 = ax.l0.data();
  const float* __restrict l1 = ax.l1.data();
  for (int64_t r = r0; r < r1; ++r) {
    const float* __restrict src = plane + r * w;
    float* __restrict dst = hrow + r * W;
    for (int64_t j = 0; j < W; ++j) dst[j] = comb<MH>(src[i0[j]], l0[j], src[i1[j]], l1[j]);
  }
}

using Horizontal = void (*)(const float*, int64_t, int64_t, int64_t, const Axis&, int64_t,
                           float*);

Horizontal horizontal_for(int mh) {
  return mh == 0 ? horizontal<0> : mh == 1 ? horizontal<1> : horizontal<2>;
}

// One range of output rows of the argmax over C classes, hrow [C, h, W] per image.
template <int MV>
void argmax_rows(Horizontal hpass, const float* x, int64_t C, int64_t h, int64_t w, int64_t H,
                 int64_t W, const Axis& ay, const Axis& ax, int64_t g0, int64_t g1,
                 int64_t* out) {
  std::vector<float> hrow(static_cast<size_t>(C * h * W));
  std::vector<float> best(static_cast<size_t>(W));
  std::vector<int64_t> arg(static_cast<size_t>(W));
  float* __restrict bv = best.data();
  int64_t* __restrict av = arg.data();
  for (int64_t g = g0; g < g1;) {
    const int64_t n = g / H;
    const int64_t y0 = g % H;
    const int64_t y1 = std::min(H, y0 + (g1 - g));  // this image's rows in the range
    // input rows these output rows read
    const int64_t r0 = ay.i0[y0];
    const int64_t r1 = ay.i1[y1 - 1] + 1;
    for (int64_t c = 0; c < C; ++c)
      hpass(x + (n * C + c) * h * w, w, r0, r1, ax, W, hrow.data() + c * h * W);
    for (int64_t y = y0; y < y1; ++y) {
      const float* __restrict a0 = hrow.data() + ay.i0[y] * W;
      const float* __restrict a1 = hrow.data() + ay.i1[y] * W;
      const float wa = ay.l0[y], wb = ay.l1[y];
      for (int64_t j = 0; j < W; ++j) {
        bv[j] = comb<MV>(a0[j], wa, a1[j], wb);
        av[j] = 0;
      }
      for (int64_t c = 1; c < C; ++c) {
        const float* __restrict b0 = a0 + c * h * W;
        const float* __restrict b1 = a1 + c * h * W;
        for (int64_t j = 0; j < W; ++j) {
          const float v = comb<MV>(b0[j], wa, b1[j], wb);
          const bool gt = v > bv[j];  // strict: ties keep the lower class, as torch.max
          bv[j] = gt ? v : bv[j];
          av[j] = gt ? c : av[j];
        }
      }
      int64_t* __restrict o = out + (n * H + y) * W;
      for (int64_t j = 0; j < W; ++j) o[j] = av[j];
    }
    g += y1 - y0;
  }
}

template <int MV>
void value_rows(Horizontal hpass, const float* x, int64_t h, int64_t w, int64_t H, int64_t W,
                const Axis& ay, const Axis& ax, int64_t g0, int64_t g1, float* out) {
  std::vector<float> hrow(static_cast<size_t>(h * W));
  for (int64_t g = g0; g < g1;) {
    const int64_t p = g / H;
    const int64_t y0 = g % H;
    const int64_t y1 = std::min(H, y0 + (g1 - g));
    hpass(x + p * h * w, w, ay.i0[y0], ay.i1[y1 - 1] + 1, ax, W, hrow.data());
    for (int64_t y = y0; y < y1; ++y) {
      const float* __restrict a0 = hrow.data() + ay.i0[y] * W;
      const float* __restrict a1 = hrow.data() + ay.i1[y] * W;
      const float wa = ay.l0[y], wb = ay.l1[y];
      float* __restrict o = out + (p * H + y) * W;
      for (int64_t j = 0; j < W; ++j) o[j] = comb<MV>(a0[j], wa, a1[j], wb);
    }
    g += y1 - y0;
  }
}

// the horizontal step by a function pointer (once per class and range), the vertical one,
// the hot loop, compiled per mode
template <template <int> class Run, typename... A>
int dispatch(int mode, A&&... args) {
  const int mh = (mode >> 1) & 3, mv = (mode >> 3) & 3;
  if (mh > 2 || mv > 2) return 1;
  const Horizontal hpass = horizontal_for(mh);
  switch (mv) {
    case 0: Run<0>::go(hpass, args...); break;
    case 1: Run<1>::go(hpass, args...); break;
    default: Run<2>::go(hpass, args...); break;
  }
  return 0;
}

template <int MV>
struct ArgmaxRun {
  template <typename... A>
  static void go(A&&... args) { argmax_rows<MV>(args...); }
};

template <int MV>
struct ValueRun {
  template <typename... A>
  static void go(A&&... args) { value_rows<MV>(args...); }
};

bool bad_sizes(int64_t C, int64_t h, int64_t w, int64_t H, int64_t W) {
  return C < 1 || h < 1 || w < 1 || H < 1 || W < 1;
}

}  // namespace

extern "C" {

// Class map [N, H, W] of x [N, C, h, w] upsampled bilinearly (align_corners=False) to
// (H, W): output rows [g0, g1) of the N*H. Returns 0, or 1 for bad arguments.
int autoloss_upsample_argmax(const float* x, int64_t C, int64_t h, int64_t w, int64_t H,
                             int64_t W, int mode, int64_t g0, int64_t g1, int64_t* out) {
  if (bad_sizes(C, h, w, H, W) || g0 < 0 || g1 < g0) return 1;
  if (g0 == g1) return 0;
  const Axis ay = axis_weights(h, H, mode & 1);
  const Axis ax = axis_weights(w, W, mode & 1);
  return dispatch<ArgmaxRun>(mode, x, C, h, w, H, W, ay, ax, g0, g1, out);
}

// The upsampled values [P, H, W] of planes x [P, h, w]: output rows [g0, g1) of the P*H.
int autoloss_upsample_values(const float* x, int64_t h, int64_t w, int64_t H, int64_t W,
                             int mode, int64_t g0, int64_t g1, float* out) {
  if (bad_sizes(1, h, w, H, W) || g0 < 0 || g1 < g0) return 1;
  if (g0 == g1) return 0;
  const Axis ay = axis_weights(h, H, mode & 1);
  const Axis ax = axis_weights(w, W, mode & 1);
  return dispatch<ValueRun>(mode, x, h, w, H, W, ay, ax, g0, g1, out);
}

}  // extern "C"
