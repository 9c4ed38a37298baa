// RoIAlign, avg mode: CPU forward and backward (see detector/ops/_align_avg.py).
//
// Semantics: exactly torchvision.ops.roi_align (docs/roi_ops.md "RoIAlign, mode=avg"):
// the bin's value is the sum of its gh x gw bilinear samples divided by max(gh * gw, 1)
// (an out-of-range sample adds 0 but still counts); the gradient of a bin goes to the four
// neighbours of every sample with weight (bilinear weight / count).
//
// Why not torchvision's own CPU kernel: its backward is a serial scalar loop over
// (box, channel, bin, sample) that recomputes every sample position per channel and runs on
// one thread; in the quickstart's training step it took ~170 ms of a ~500 ms step
// (benchmarks/roi_ops.py, torch.profiler). Here, as in align_max.cpp, a box's sample
// positions are separable and computed once for all channels, and channels are the
// contiguous, vectorized inner loop on channels-last (N, H, W, C) buffers:
// - forward: split over boxes (each box writes only its own output rows);
// - backward: split over channel blocks, each task scattering its channels of every box
//   into a channels-last gradient, so no two tasks write the same element (no atomics).
// The per-channel arithmetic is torchvision's, in its order, so the forward matches it
// exactly and the backward to rounding.
#include <ATen/Parallel.h>

#include <type_traits>

#include "align_common.h"

namespace detector_ops {
namespace {

template <typename T>
void forward_impl(const T* input_nhwc, const T* rois, T* output, int64_t K, int64_t C, int64_t H, int64_t W,
                  int64_t PH, int64_t PW, T scale, int64_t sampling_ratio, bool aligned, double samples) {
  const int64_t plane = PH * PW;
  at::parallel_for(0, K, grain_for(K, samples * C), [&](int64_t begin, int64_t end) {
    std::vector<AxisSample<T>> ys, xs;
    std::vector<T> sum_buf(C);
    T* __restrict__ sum = sum_buf.data();
    for (int64_t k = begin; k < end; ++k) {
      const AlignBox<T> b = align_box(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
      const int64_t gh = std::max<int64_t>(b.grid_h, 0), gw = std::max<int64_t>(b.grid_w, 0);
      const T count = static_cast<T>(std::max<int64_t>(gh * gw, 1));
      fill_axis(ys, b.start_h, b.bin_h, PH, gh, H);
      fill_axis(xs, b.start_w, b.bin_w, PW, gw, W);
      const T* f = input_nhwc + b.n * H * W * C;
      T* out = output + k * C * plane;
      for (int64_t ph = 0; ph < PH; ++ph) {
        for (int64_t pw = 0; pw < PW; ++pw) {
          for (int64_t c = 0; c < C; ++c) sum[c] = T(0);
          for (int64_t iy = 0; iy < gh; ++iy) {
            const AxisSample<T> sy = ys[ph * gh + iy];
            for (int64_t ix = 0; ix < gw; ++ix) {
              const AxisSample<T> sx = xs[pw * gw + ix];
              const T w1 = sy.w_lo * sx.w_lo, w2 = sy.w_lo * sx.w_hi, w3 = sy.w_hi * sx.w_lo, w4 = sy.w_hi * sx.w_hi;
              const T* __restrict__ p1 = f + (sy.lo * W + sx.lo) * C;
              const T* __restrict__ p2 = f + (sy.lo * W + sx.hi) * C;
              const T* __restrict__ p3 = f + (sy.hi * W + sx.lo) * C;
              const T* __restrict__ p4 = f + (sy.hi * W + sx.hi) * C;
              for (int64_t c = 0; c < C; ++c) sum[c] += w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c];
            }
          }
          const int64_t bin = ph * PW + pw;
          for (int64_t c = 0; c < C; ++c) out[c * plane + bin] = sum[c] / count;
        }
      }
    }
  });
}

// grad_nhwc: (K, PH, PW, C); grad_input_nhwc: (N, H, W, C), zero-filled by the caller.
template <typename T>
void backward_impl(const T* grad_nhwc, const T* rois, T* grad_input_nhwc, int64_t K, int64_t C, int64_t H,
                   int64_t W, int64_t PH, int64_t PW, T scale, int64_t sampling_ratio, bool aligned, double samples) {
  // Blocks of at least 16 channels keep the inner loop vectorized; the grain also keeps
  // small calls on one thread.
  const int64_t blocks = (C + 15) / 16;
  at::parallel_for(0, blocks, grain_for(blocks, samples * C), [&](int64_t begin, int64_t end) {
    const int64_t c0 = begin * 16, c1 = std::min(C, end * 16), width = c1 - c0;
    std::vector<AxisSample<T>> ys, xs;
    for (int64_t k = 0; k < K; ++k) {
      const AlignBox<T> b = align_box(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
      const int64_t gh = std::max<int64_t>(b.grid_h, 0), gw = std::max<int64_t>(b.grid_w, 0);
      if (gh == 0 || gw == 0) continue;
      const T count = static_cast<T>(gh * gw);
      fill_axis(ys, b.start_h, b.bin_h, PH, gh, H);
      fill_axis(xs, b.start_w, b.bin_w, PW, gw, W);
      T* gin = grad_input_nhwc + b.n * H * W * C + c0;
      for (int64_t ph = 0; ph < PH; ++ph) {
        for (int64_t pw = 0; pw < PW; ++pw) {
          const T* __restrict__ go = grad_nhwc + ((k * PH + ph) * PW + pw) * C + c0;
          for (int64_t iy = 0; iy < gh; ++iy) {
            const AxisSample<T> sy = ys[ph * gh + iy];
            for (int64_t ix = 0; ix < gw; ++ix) {
              const AxisSample<T> sx = xs[pw * gw + ix];
              const T w1 = sy.w_lo * sx.w_lo / count, w2 = sy.w_lo * sx.w_hi / count;
              const T w3 = sy.w_hi * sx.w_lo / count, w4 = sy.w_hi * sx.w_hi / count;
              if (w1 == T(0) && w2 == T(0) && w3 == T(0) && w4 == T(0)) continue;  // out-of-range sample
              T* __restrict__ g1 = gin + (sy.lo * W + sx.lo) * C;
              T* __restrict__ g2 = gin + (sy.lo * W + sx.hi) * C;
              T* __restrict__ g3 = gin + (sy.hi * W + sx.lo) * C;
              T* __restrict__ g4 = gin + (sy.hi * W + sx.hi) * C;
              // g1..g4 may alias (a clamped edge sample): four separate passes keep every
              // accumulation, where one fused loop under __restrict__ would not.
              for (int64_t c = 0; c < width; ++c) g1[c] += go[c] * w1;
              for (int64_t c = 0; c < width; ++c) g2[c] += go[c] * w2;
              for (int64_t c = 0; c < width; ++c) g3[c] += go[c] * w3;
              for (int64_t c = 0; c < width; ++c) g4[c] += go[c] * w4;
            }
          }
        }
      }
    }
  });
}

}  // namespace
}  // namespace detector_ops

using namespace detector_ops;

extern "C" {

// input_nhwc: (N, H, W, C); rois: (K, 5); output: (K, C, PH, PW). `samples` (from
// detector_align_max_grid) sizes the parallel grain.
int detector_align_avg_forward(int dtype, const void* input_nhwc, const void* rois, void* output, int64_t K,
                               int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, double scale,
                               int64_t sampling_ratio, int aligned, double samples, char* error, int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_align_args(K, C, H, W, PH, PW, sampling_ratio);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      forward_impl<T>(static_cast<const T*>(input_nhwc), static_cast<const T*>(rois), static_cast<T*>(output), K, C,
                      H, W, PH, PW, static_cast<T>(scale), sampling_ratio, aligned != 0, samples);
    });
  });
}

// grad_nhwc: (K, PH, PW, C); grad_input_nhwc: (N, H, W, C), zero-filled by the caller.
int detector_align_avg_backward(int dtype, const void* grad_nhwc, const void* rois, void* grad_input_nhwc,
                                int64_t K, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, double scale,
                                int64_t sampling_ratio, int aligned, double samples, char* error, int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_align_args(K, C, H, W, PH, PW, sampling_ratio);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      backward_impl<T>(static_cast<const T*>(grad_nhwc), static_cast<const T*>(rois),
                       static_cast<T*>(grad_input_nhwc), K, C, H, W, PH, PW, static_cast<T>(scale), sampling_ratio,
                       aligned != 0, samples);
    });
  });
}

}  // extern "C"
