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
// reuses them for every channel. Work is split over boxes x channels with
// at::parallel_for. The forward stores the arg-max sample index per output element
// (int32), so the backward touches one sample per bin; it is split over channels so that
// no two threads write the same gradient plane (no atomics).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <tuple>

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

template <typename T>
void forward_impl(const T* input, const T* rois, T* output, int32_t* argmax, int64_t K, int64_t C, int64_t H,
                  int64_t W, int64_t PH, int64_t PW, T scale, int64_t sampling_ratio, bool aligned) {
  const int64_t plane = PH * PW;
  // Grain: a few channels of one box per task; tasks walk channels of a box in order so
  // the per-box sample tables are built once per task and box.
  at::parallel_for(0, K * C, 16, [&](int64_t begin, int64_t end) {
    std::vector<AxisSample<T>> ys, xs;
    int64_t cached_k = -1;
    AlignBox<T> b{};
    for (int64_t kc = begin; kc < end; ++kc) {
      const int64_t k = kc / C, c = kc % C;
      if (k != cached_k) {
        b = align_box(rois + k * 5, scale, PH, PW, sampling_ratio, aligned);
        fill_axis(ys, b.start_h, b.bin_h, PH, std::max<int64_t>(b.grid_h, 0), H);
        fill_axis(xs, b.start_w, b.bin_w, PW, std::max<int64_t>(b.grid_w, 0), W);
        cached_k = k;
      }
      const T* f = input + (b.n * C + c) * H * W;
      T* out = output + kc * plane;
      int32_t* arg = argmax + kc * plane;
      const int64_t gh = b.grid_h, gw = b.grid_w;
      if (gh <= 0 || gw <= 0) {
        for (int64_t i = 0; i < plane; ++i) {
          out[i] = T(0);
          arg[i] = -1;
        }
        continue;
      }
      for (int64_t ph = 0; ph < PH; ++ph) {
        for (int64_t pw = 0; pw < PW; ++pw) {
          T best = T(0);
          int32_t best_i = -1;
          for (int64_t iy = 0; iy < gh; ++iy) {
            const AxisSample<T>& sy = ys[ph * gh + iy];
            const T* r0 = f + sy.lo * W;
            const T* r1 = f + sy.hi * W;
            for (int64_t ix = 0; ix < gw; ++ix) {
              const AxisSample<T>& sx = xs[pw * gw + ix];
              T v = sy.w_lo * (sx.w_lo * r0[sx.lo] + sx.w_hi * r0[sx.hi]) +
                    sy.w_hi * (sx.w_lo * r1[sx.lo] + sx.w_hi * r1[sx.hi]);
              // Strict '>' keeps the first maximum (row-major); NaN propagates like max_pool2d.
              if (best_i < 0 || v > best || std::isnan(v)) {
                best = v;
                best_i = static_cast<int32_t>(iy * gw + ix);
              }
            }
          }
          out[ph * PW + pw] = best;
          arg[ph * PW + pw] = best_i;
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const T* grad, const T* rois, const int32_t* argmax, T* grad_input, int64_t K, int64_t C,
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
        const int32_t* arg = argmax + (k * C + c) * plane;
        for (int64_t ph = 0; ph < PH; ++ph) {
          for (int64_t pw = 0; pw < PW; ++pw) {
            const int32_t a = arg[ph * PW + pw];
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

std::tuple<at::Tensor, at::Tensor> align_max_forward(const at::Tensor& input_, const at::Tensor& rois_,
                                                     double spatial_scale, int64_t PH, int64_t PW,
                                                     int64_t sampling_ratio, bool aligned) {
  check_args(input_, rois_);
  at::Tensor input = input_.contiguous(), rois = rois_.contiguous();
  const int64_t K = rois.size(0), C = input.size(1), H = input.size(2), W = input.size(3);
  at::Tensor output = at::empty({K, C, PH, PW}, input.options());
  at::Tensor argmax = at::empty({K, C, PH, PW}, input.options().dtype(at::kInt));
  if (output.numel() == 0) return {output, argmax};
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "align_max_forward", [&] {
    forward_impl<scalar_t>(input.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(),
                           argmax.data_ptr<int32_t>(), K, C, H, W, PH, PW, static_cast<scalar_t>(spatial_scale),
                           sampling_ratio, aligned);
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
    backward_impl<scalar_t>(grad.data_ptr<scalar_t>(), rois.data_ptr<scalar_t>(), argmax.data_ptr<int32_t>(),
                            grad_input.data_ptr<scalar_t>(), rois.size(0), C, H, W, PH, PW,
                            static_cast<scalar_t>(spatial_scale), sampling_ratio, aligned);
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
