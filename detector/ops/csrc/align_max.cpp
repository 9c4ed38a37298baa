// RoIAlign, max mode: CPU forward and backward (see detector/ops/_align_max.py).
//
// Semantics (shared/ROI_OPS.md): the bin's gh x gw bilinear samples are placed exactly as
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
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <type_traits>

#include "roi_common.h"

namespace detector_ops {
namespace {

// Largest sampling grid per axis; only absurd finite boxes reach it (keeps int casts defined).
constexpr int64_t kMaxGrid = 1 << 16;

template <typename T>
struct AlignBox {
  int64_t n;
  T start_h, start_w, bin_h, bin_w;
  int64_t grid_h, grid_w;
};

// The box geometry, computed exactly as torchvision's roi_align_kernel.cpp does it.
template <typename T>
AlignBox<T> align_box(const T* roi, T scale, int64_t PH, int64_t PW, int64_t sampling_ratio, bool aligned) {
  AlignBox<T> b;
  b.n = static_cast<int64_t>(roi[0]);
  T offset = aligned ? T(0.5) : T(0);
  b.start_w = roi[1] * scale - offset;
  b.start_h = roi[2] * scale - offset;
  T end_w = roi[3] * scale - offset;
  T end_h = roi[4] * scale - offset;
  T roi_w = end_w - b.start_w;
  T roi_h = end_h - b.start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, T(1));
    roi_h = std::max(roi_h, T(1));
  }
  b.bin_h = roi_h / static_cast<T>(PH);
  b.bin_w = roi_w / static_cast<T>(PW);
  b.grid_h = sampling_ratio > 0 ? sampling_ratio : clamped_ceil(roi_h / static_cast<T>(PH), 0, kMaxGrid);
  b.grid_w = sampling_ratio > 0 ? sampling_ratio : clamped_ceil(roi_w / static_cast<T>(PW), 0, kMaxGrid);
  return b;
}

// Sample coordinate of point i (of g) in bin p, torchvision's formula.
template <typename T>
inline T sample_coord(T start, T bin, int64_t p, int64_t i, int64_t g) {
  return start + static_cast<T>(p) * bin + static_cast<T>(i + .5f) * bin / static_cast<T>(g);
}

template <typename T>
void fill_axis(std::vector<AxisSample<T>>& out, T start, T bin, int64_t P, int64_t g, int64_t size) {
  out.resize(P * g);
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < g; ++i) out[p * g + i] = axis_sample(sample_coord(start, bin, p, i, g), size);
}

// Forward on a channels-last copy of the input (N, H, W, C): for one box all channels
// share the sample positions and weights, so the innermost loop runs over contiguous
// channels and vectorizes (loads, the running max and the arg-max select become SIMD
// blends). A per-channel scalar loop instead spends most of its time in mispredicted
// branches of the running max (measured: ~3x slower than torchvision's avg kernel).
template <typename T, typename Index>
void forward_impl(const T* input_nhwc, const T* rois, T* output, Index* argmax, int64_t K, int64_t C, int64_t H,
                  int64_t W, int64_t PH, int64_t PW, T scale, int64_t sampling_ratio, bool aligned) {
  const int64_t plane = PH * PW;
  at::parallel_for(0, K, 1, [&](int64_t begin, int64_t end) {
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
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
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

void check_args(const at::Tensor& input, const at::Tensor& rois) {
  TORCH_CHECK(input.device().is_cpu() && rois.device().is_cpu(), "detector_ops: CPU tensors expected");
  TORCH_CHECK(input.dim() == 4, "detector_ops: input must be [N, C, H, W]");
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, "detector_ops: rois must be [K, 5]");
  TORCH_CHECK(input.scalar_type() == rois.scalar_type(), "detector_ops: input and rois dtypes differ");
}

// Calls fn with a null pointer of the narrowest signed integer type that holds every
// sample index of these boxes (int8 for <= 127 samples per bin): the arg-max map is the
// op's only extra memory, so this keeps it at 1/4 of the output for usual grids.
template <typename Fn>
void dispatch_index(at::ScalarType type, Fn&& fn) {
  if (type == at::kChar) {
    fn(static_cast<int8_t*>(nullptr));
  } else if (type == at::kShort) {
    fn(static_cast<int16_t*>(nullptr));
  } else {
    TORCH_CHECK(type == at::kInt, "detector_ops: argmax must be int8, int16 or int32");
    fn(static_cast<int32_t*>(nullptr));
  }
}

std::tuple<at::Tensor, at::Tensor> align_max_forward(const at::Tensor& input_, const at::Tensor& rois_,
                                                     double spatial_scale, int64_t PH, int64_t PW,
                                                     int64_t sampling_ratio, bool aligned) {
  check_args(input_, rois_);
  at::Tensor rois = rois_.contiguous();
  const int64_t K = rois.size(0), C = input_.size(1), H = input_.size(2), W = input_.size(3);
  at::Tensor output = at::empty({K, C, PH, PW}, input_.options());
  int64_t most = 0;  // largest number of samples in one bin
  AT_DISPATCH_FLOATING_TYPES(input_.scalar_type(), "align_max_grid", [&] {
    const scalar_t* r = rois.data_ptr<scalar_t>();
    for (int64_t k = 0; k < K; ++k) {
      auto b = align_box(r + k * 5, static_cast<scalar_t>(spatial_scale), PH, PW, sampling_ratio, aligned);
      most = std::max(most, std::max<int64_t>(b.grid_h, 0) * std::max<int64_t>(b.grid_w, 0));
    }
  });
  const at::ScalarType index_type = most <= 127 ? at::kChar : (most <= 32767 ? at::kShort : at::kInt);
  at::Tensor argmax = at::empty({K, C, PH, PW}, input_.options().dtype(index_type));
  if (output.numel() == 0) return {output, argmax};
  at::Tensor input = input_.permute({0, 2, 3, 1}).contiguous();  // (N, C, H, W) -> (N, H, W, C)
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "align_max_forward", [&] {
    dispatch_index(index_type, [&](auto* tag) {
      using Index = std::remove_pointer_t<decltype(tag)>;
      forward_impl<scalar_t, Index>(input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(),
                                    output.data_ptr<scalar_t>(), static_cast<Index*>(argmax.data_ptr()), K, C, H, W,
                                    PH, PW, static_cast<scalar_t>(spatial_scale), sampling_ratio, aligned);
    });
  });
  return {output, argmax};
}

at::Tensor align_max_backward(const at::Tensor& grad_, const at::Tensor& rois_, const at::Tensor& argmax_,
                              double spatial_scale, int64_t PH, int64_t PW, int64_t sampling_ratio, bool aligned,
                              int64_t N, int64_t C, int64_t H, int64_t W) {
  check_args(grad_, rois_);
  at::Tensor grad = grad_.contiguous(), rois = rois_.contiguous(), argmax = argmax_.contiguous();
  at::Tensor grad_input = at::zeros({N, C, H, W}, grad.options());
  if (grad.numel() == 0) return grad_input;
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "align_max_backward", [&] {
    dispatch_index(argmax.scalar_type(), [&](auto* tag) {
      using Index = std::remove_pointer_t<decltype(tag)>;
      backward_impl<scalar_t, Index>(grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(),
                                     static_cast<const Index*>(argmax.data_ptr()), grad_input.data_ptr<scalar_t>(),
                                     rois.size(0), C, H, W, PH, PW, static_cast<scalar_t>(spatial_scale),
                                     sampling_ratio, aligned);
    });
  });
  return grad_input;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(detector_ops, m) {
  m.def(
      "align_max_forward(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int sampling_ratio, bool aligned) -> (Tensor, Tensor)",
      &align_max_forward);
  m.def(
      "align_max_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, int batch, int channels, int height, int width) "
      "-> Tensor",
      &align_max_backward);
}

}  // namespace detector_ops
