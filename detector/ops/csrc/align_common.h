// RoIAlign geometry shared by the avg and max CPU kernels (align_avg.cpp, align_max.cpp):
// the box's start, bin size and sampling grid, and the separable sample coordinates,
// all computed exactly as torchvision's roi_align_kernel.cpp computes them, so that the
// kernels reproduce torchvision's sample positions bit for bit.
#pragma once

#include <vector>

#include "roi_common.h"

namespace detector_ops {

// Most sampling points per bin side, for an explicit sampling_ratio (refused above it) and
// for the adaptive grid ceil(bin size) (capped at it). Python's options.MAX_SAMPLING_GRID
// holds the same number (why 64: see there); _extension.py checks they agree through
// detector_align_grid_limit(). Only absurd boxes (bins over 64 feature cells) reach the cap,
// which bounds the work per bin where torchvision's grid for a box of 1e30 never finishes.
constexpr int64_t kMaxGrid = 64;

// check_sizes (roi_common.h) plus a sampling ratio of at most kMaxGrid.
inline void check_align_args(int64_t K, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW,
                             int64_t sampling_ratio) {
  check_sizes(K, C, H, W, PH, PW);
  if (sampling_ratio > kMaxGrid)
    throw std::invalid_argument("detector_ops: sampling_ratio " + std::to_string(sampling_ratio) +
                                " is above the limit of " + std::to_string(kMaxGrid) + " points per bin side");
}

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

}  // namespace detector_ops
