// RoIAlign, max mode: CPU forward and backward (see detector/ops/_align_max.py).
//
// Semantics (docs/roi_ops.md): the bin's gh x gw bilinear samples are placed exactly as
// in torchvision's RoIAlign; the bin's value is their maximum (an out-of-range sample
// takes part as 0); the gradient goes to the four neighbours of the arg-max sample with
// its bilinear weights; ties go to the first sample in row-major order; a bin without
// samples gives 0.
//
// Speed: the sample positions of a box are separable (y depends on (ph, iy), x on
// (pw, ix)), so each box precomputes PH*gh row samples and PW*gw column samples once and
// reuses them for every channel; channels are the vectorized inner loop (forward_impl).
// The forward splits work over boxes with at::parallel_for and stores the arg-max sample
// index per output element (int8/16/32, the narrowest that fits), so the backward touches
// one sample per bin; the backward is split over channels so that no two threads write
// the same gradient plane (no atomics).
#include <ATen/Parallel.h>

#include <limits>
#include <type_traits>

#include "align_common.h"

namespace detector_ops {
namespace {

// Forward on a channels-last copy of the input (N, H, W, C): for one box all channels
// share the sample positions and weights, so the innermost loop runs over contiguous
// channels and vectorizes (loads, the running max and the arg-max select become SIMD
// blends). A per-channel scalar loop instead spends most of its time in mispredicted
// branches of the running max (measured: ~3x slower than torchvision's avg kernel).
template <typename T, typename Index>
void forward_impl(const T* input_nhwc, const T* rois, T* output, Index* argmax, int64_t K, int64_t C, int64_t H,
                  int64_t W, int64_t PH, int64_t PW, T scale, int64_t sampling_ratio, bool aligned,
                  double samples) {
  const int64_t plane = PH * PW;
  at::parallel_for(0, K, grain_for(K, samples * C), [&](int64_t begin, int64_t end) {
    std::vector<AxisSample<T>> ys, xs;
    std::vector<T> best_buf(C);
    std::vector<int32_t> index_buf(C);
    T* __restrict__ best = best_buf.data();
    int32_t* __restrict__ best_i = index_buf.data();
    for (int64_t k = begin; k < end; ++k) {
      const AlignBox<T> b = align_box(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
      const int64_t gh = std::max<int64_t>(b.grid_h, 0), gw = std::max<int64_t>(b.grid_w, 0);
      fill_axis(ys, b.start_h, b.bin_h, PH, gh, H);
      fill_axis(xs, b.start_w, b.bin_w, PW, gw, W);
      const T* f = input_nhwc + b.n * H * W * C;
      T* out = output + k * C * plane;
      Index* arg = argmax + k * C * plane;
      for (int64_t ph = 0; ph < PH; ++ph) {
        for (int64_t pw = 0; pw < PW; ++pw) {
          const int64_t bin = ph * PW + pw;
          if (gh == 0 || gw == 0) {  // no sampling point: the bin reads 0
            for (int64_t c = 0; c < C; ++c) {
              out[c * plane + bin] = T(0);
              arg[c * plane + bin] = Index(-1);
            }
            continue;
          }
          for (int64_t c = 0; c < C; ++c) {
            best[c] = -std::numeric_limits<T>::infinity();
            best_i[c] = 0;
          }
          int32_t i = 0;
          for (int64_t iy = 0; iy < gh; ++iy) {
            const AxisSample<T> sy = ys[ph * gh + iy];
            for (int64_t ix = 0; ix < gw; ++ix, ++i) {
              const AxisSample<T> sx = xs[pw * gw + ix];
              const T w1 = sy.w_lo * sx.w_lo, w2 = sy.w_lo * sx.w_hi, w3 = sy.w_hi * sx.w_lo, w4 = sy.w_hi * sx.w_hi;
              const T* __restrict__ p1 = f + (sy.lo * W + sx.lo) * C;
              const T* __restrict__ p2 = f + (sy.lo * W + sx.hi) * C;
              const T* __restrict__ p3 = f + (sy.hi * W + sx.lo) * C;
              const T* __restrict__ p4 = f + (sy.hi * W + sx.hi) * C;
              for (int64_t c = 0; c < C; ++c) {
                const T v = w1 * p1[c] + w2 * p2[c] + w3 * p3[c] + w4 * p4[c];
                // "take" when v > best or v is NaN (NaN propagates like max_pool2d);
                // strict '>' keeps the first maximum in row-major sample order.
                const bool take = !(v <= best[c]);
                best[c] = take ? v : best[c];
                best_i[c] = take ? i : best_i[c];
              }
            }
          }
          for (int64_t c = 0; c < C; ++c) {
            out[c * plane + bin] = best[c];
            arg[c * plane + bin] = static_cast<Index>(best_i[c]);
          }
        }
      }
    }
  });
}

template <typename T, typename Index>
void backward_impl(const T* grad, const T* rois, const Index* argmax, T* grad_input, int64_t K, int64_t C,
                   int64_t H, int64_t W, int64_t PH, int64_t PW, T scale, int64_t sampling_ratio, bool aligned) {
  const int64_t plane = PH * PW;
  std::vector<AlignBox<T>> boxes(K);
  for (int64_t k = 0; k < K; ++k) boxes[k] = align_box(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
  // One task owns whole channels, so its writes never collide with another task's.
  at::parallel_for(0, C, grain_for(C, static_cast<double>(K * C * plane)), [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      for (int64_t k = 0; k < K; ++k) {
        const AlignBox<T>& b = boxes[k];
        T* gin = grad_input + (b.n * C + c) * H * W;
        const T* g = grad + (k * C + c) * plane;
        const Index* arg = argmax + (k * C + c) * plane;
        for (int64_t ph = 0; ph < PH; ++ph) {
          for (int64_t pw = 0; pw < PW; ++pw) {
            const int32_t a = static_cast<int32_t>(arg[ph * PW + pw]);
            const T go = g[ph * PW + pw];
            if (a < 0 || go == T(0)) continue;
            const int64_t iy = a / b.grid_w, ix = a % b.grid_w;
            const AxisSample<T> sy = axis_sample(sample_coord(b.start_h, b.bin_h, ph, iy, b.grid_h), H);
            const AxisSample<T> sx = axis_sample(sample_coord(b.start_w, b.bin_w, pw, ix, b.grid_w), W);
            gin[sy.lo * W + sx.lo] += go * sy.w_lo * sx.w_lo;
            gin[sy.lo * W + sx.hi] += go * sy.w_lo * sx.w_hi;
            gin[sy.hi * W + sx.lo] += go * sy.w_hi * sx.w_lo;
            gin[sy.hi * W + sx.hi] += go * sy.w_hi * sx.w_hi;
          }
        }
      }
    }
  });
}

// Arg-max maps use the narrowest signed integer that holds every sample index
// (int8 for <= 127 samples per bin): it is the op's only extra memory, so this keeps it at
// 1/4 of the output for usual grids. `index_bytes` is 1, 2 or 4.
template <typename Fn>
void dispatch_index(int index_bytes, Fn&& fn) {
  if (index_bytes == 1) {
    fn(static_cast<int8_t*>(nullptr));
  } else if (index_bytes == 2) {
    fn(static_cast<int16_t*>(nullptr));
  } else if (index_bytes == 4) {
    fn(static_cast<int32_t*>(nullptr));
  } else {
    throw std::invalid_argument("detector_ops: index_bytes must be 1, 2 or 4");
  }
}

}  // namespace
}  // namespace detector_ops

using namespace detector_ops;

extern "C" {

// kMaxGrid, for _extension.py to check against Python's options.MAX_SAMPLING_GRID.
int64_t detector_align_grid_limit() { return kMaxGrid; }

// Largest number of samples in one bin over all boxes (sizes the arg-max dtype); writes
// the total number of samples of one channel to *samples (sizes the parallel grain).
int detector_align_max_grid(int dtype, const void* rois, int64_t K, int64_t PH, int64_t PW, double scale,
                            int64_t sampling_ratio, int aligned, int64_t* most, double* samples, char* error,
                            int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_align_args(K, 0, 0, 0, PH, PW, sampling_ratio);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const T* r = static_cast<const T*>(rois);
      *most = 0;
      *samples = 0;
      for (int64_t k = 0; k < K; ++k) {
        const AlignBox<T> b = align_box(r + k * 5, static_cast<T>(scale), PH, PW, sampling_ratio, aligned != 0);
        const int64_t per_bin = std::max<int64_t>(b.grid_h, 0) * std::max<int64_t>(b.grid_w, 0);
        *most = std::max(*most, per_bin);
        *samples += static_cast<double>(per_bin + 1) * PH * PW;
      }
    });
  });
}

// input_nhwc: (N, H, W, C); rois: (K, 5); output: (K, C, PH, PW); argmax: same shape, int8/16/32.
int detector_align_max_forward(int dtype, const void* input_nhwc, const void* rois, void* output, void* argmax,
                               int index_bytes, int64_t K, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                               double scale, int64_t sampling_ratio, int aligned, double samples, char* error,
                               int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_align_args(K, C, H, W, PH, PW, sampling_ratio);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      dispatch_index(index_bytes, [&](auto* index_tag) {
        using Index = std::remove_pointer_t<decltype(index_tag)>;
        forward_impl<T, Index>(static_cast<const T*>(input_nhwc), static_cast<const T*>(rois), static_cast<T*>(output),
                               static_cast<Index*>(argmax), K, C, H, W, PH, PW, static_cast<T>(scale), sampling_ratio,
                               aligned != 0, samples);
      });
    });
  });
}

// grad: (K, C, PH, PW); grad_input: (N, C, H, W), zero-filled by the caller.
int detector_align_max_backward(int dtype, const void* grad, const void* rois, const void* argmax, int index_bytes,
                                void* grad_input, int64_t K, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                                double scale, int64_t sampling_ratio, int aligned, char* error, int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_align_args(K, C, H, W, PH, PW, sampling_ratio);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      dispatch_index(index_bytes, [&](auto* index_tag) {
        using Index = std::remove_pointer_t<decltype(index_tag)>;
        backward_impl<T, Index>(static_cast<const T*>(grad), static_cast<const T*>(rois),
                                static_cast<const Index*>(argmax), static_cast<T*>(grad_input), K, C, H, W, PH, PW,
                                static_cast<T>(scale), sampling_ratio, aligned != 0);
      });
    });
  });
}

}  // extern "C"
