// Helpers shared by the CPU kernels of detector.ops (RoIAlign avg and max modes, through
// align_common.h, and PrRoIPool). Semantics: docs/roi_ops.md.
//
// Interface: plain `extern "C"` functions on raw, contiguous buffers, called through
// ctypes by detector/ops/_extension.py, which allocates every tensor and checks shapes,
// dtypes and devices. Including no torch header but <ATen/Parallel.h> keeps the one-time
// JIT build at a few seconds (torch/library.h alone costs ~10 s of compile time).
//
// The Python side (detector/ops/_common.py) guarantees finite box coordinates and valid
// batch indices before calling a kernel; these helpers still clamp every float before it
// is cast to int, because a cast of an out-of-range float is undefined behaviour.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
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

// Preconditions of every kernel (the Python side guarantees them; checked again so that no
// direct call can read outside the map): non-negative sizes, positive output sizes, and a
// non-empty map when there is anything to compute (the bilinear rule reads row H - 1;
// detector/ops/_common.py returns zero rows for an empty map without calling a kernel).
inline void check_sizes(int64_t K, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW) {
  if (K < 0 || C < 0 || H < 0 || W < 0) throw std::invalid_argument("detector_ops: negative size");
  if (PH <= 0 || PW <= 0) throw std::invalid_argument("detector_ops: output size must be positive");
  if (K > 0 && C > 0 && (H == 0 || W == 0))
    throw std::invalid_argument("detector_ops: empty feature map (H = " + std::to_string(H) +
                                ", W = " + std::to_string(W) + "); the Python side returns zero rows");
}

// Grain for at::parallel_for over `items` tasks that together do about `work` inner-loop
// steps: each task gets at least ~32k steps (ATen's own GRAIN_SIZE), so small calls
// (tests, tiny batches) run inline instead of paying for an OpenMP region, whose start
// costs milliseconds when the cores are oversubscribed.
inline int64_t grain_for(int64_t items, double work) {
  if (items <= 0) return 1;
  if (!(work > 0.0)) return items;
  const double grain = std::ceil(static_cast<double>(items) * 32768.0 / work);
  return grain >= static_cast<double>(items) ? items : std::max<int64_t>(1, static_cast<int64_t>(grain));
}

// One sampling coordinate along one axis, reduced to its two neighbours and weights,
// following torchvision's RoIAlign bilinear rule (docs/roi_ops.md "Bilinear value"): a point
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

// Runs fn, turning any C++ exception into return code 1 and a message in `error`
// (exceptions must not cross the C boundary).
template <typename Fn>
int guarded(char* error, int64_t error_len, Fn&& fn) {
  try {
    fn();
    return 0;
  } catch (const std::exception& e) {
    if (error != nullptr && error_len > 0) {
      std::strncpy(error, e.what(), static_cast<size_t>(error_len - 1));
      error[error_len - 1] = '\0';
    }
    return 1;
  } catch (...) {
    if (error != nullptr && error_len > 0) std::strncpy(error, "unknown C++ exception", static_cast<size_t>(error_len - 1));
    return 1;
  }
}

// dtype codes shared with _extension.py: 0 = float32, 1 = float64.
template <typename Fn>
void dispatch_float(int dtype, Fn&& fn) {
  if (dtype == 0) {
    fn(static_cast<float*>(nullptr));
  } else if (dtype == 1) {
    fn(static_cast<double*>(nullptr));
  } else {
    throw std::invalid_argument("detector_ops: dtype code must be 0 (float32) or 1 (float64)");
  }
}

}  // namespace detector_ops
