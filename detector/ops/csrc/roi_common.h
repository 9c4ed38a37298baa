// Helpers shared by the CPU kernels of detector.ops (RoIAlign max mode, PrRoIPool).
//
// The Python side (detector/ops/_common.py) guarantees finite box coordinates and valid
// batch indices before calling a kernel; these helpers still clamp every float before it
// is cast to int, because a cast of an out-of-range float is undefined behaviour.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace detector_ops {

// floor(v) as int, with v clamped to [lo, hi] first (no undefined float -> int cast).
template <typename T>
inline int64_t clamped_floor(T v, int64_t lo, int64_t hi) {
  if (!(v >= static_cast<T>(lo))) return lo;  // also catches NaN
  if (v >= static_cast<T>(hi)) return hi;
  return static_cast<int64_t>(std::floor(v));
}

template <typename T>
inline int64_t clamped_ceil(T v, int64_t lo, int64_t hi) {
  if (!(v >= static_cast<T>(lo))) return lo;
  if (v >= static_cast<T>(hi)) return hi;
  return static_cast<int64_t>(std::ceil(v));
}

// One sampling coordinate along one axis, reduced to its two neighbours and weights,
// following torchvision's RoIAlign bilinear rule (ROI_OPS.md "Bilinear value"): a point
// outside [-1, size] reads 0 (weights 0); negatives clamp to 0; the last cell repeats.
template <typename T>
struct AxisSample {
  int64_t lo;  // index of the lower neighbour (row or column)
  int64_t hi;  // index of the upper neighbour
  T w_lo;      // weight of lo (1 - frac), 0 for an out-of-range point
  T w_hi;      // weight of hi (frac)
};

template <typename T>
inline AxisSample<T> axis_sample(T v, int64_t size) {
  AxisSample<T> s{0, 0, T(0), T(0)};
  if (!(v >= T(-1.0)) || v > static_cast<T>(size)) return s;  // outside, or NaN
  if (v <= T(0)) v = T(0);
  int64_t lo = static_cast<int64_t>(v);
  int64_t hi;
  if (lo >= size - 1) {
    hi = lo = size - 1;
    v = static_cast<T>(lo);
  } else {
    hi = lo + 1;
  }
  T l = v - static_cast<T>(lo);
  s.lo = lo;
  s.hi = hi;
  s.w_lo = T(1) - l;
  s.w_hi = l;
  return s;
}

}  // namespace detector_ops
