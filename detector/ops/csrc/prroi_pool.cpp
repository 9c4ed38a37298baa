// Precise RoI Pooling: CPU forward and backward (features and box coordinates).
// See detector/ops/prroi_pool.py for the maths in words.
//
// The bin integral is separable: with Hint the antiderivative of hat(t) = max(0, 1 - |t|),
//   Wy[ph, i] = Hint(y_hi - i) - Hint(y_lo - i),   Wx[pw, j] likewise,
//   out[ph, pw] = (sum_ij Wy[ph, i] F[i, j] Wx[pw, j]) / area.
// Each box precomputes its Wy (PH x rows of the box) and Wx (PW x cols) once; per channel
// the forward first contracts rows (G[j] = sum_i Wy[ph, i] F[i, j], a contiguous,
// vectorizable loop over j), then columns. Cost per bin ~ (rows+cols of the box), not
// (rows x cols), so big boxes stay cheap.
//
// Box gradient: d/dy_hi of the integral is the line integral along the bin's top edge,
// sum_j Wx[pw, j] * (F interpolated at row y_hi)[j]; likewise for the other three edges.
// Bin edges are y1 + e * bin_h (e = 0..PH), so each edge line is computed once per channel.
#include <ATen/Parallel.h>

#include <type_traits>

#include "roi_common.h"

namespace detector_ops {
namespace {

// Antiderivative of hat(t) = max(0, 1 - |t|), from -inf.
inline double hat_integral(double u) {
  if (u <= -1.0) return 0.0;
  if (u <= 0.0) return 0.5 * (u + 1.0) * (u + 1.0);
  if (u <= 1.0) return 1.0 - 0.5 * (1.0 - u) * (1.0 - u);
  return 1.0;
}

template <typename T>
struct PrBox {
  int64_t n;
  T y1, x1, bin_h, bin_w, area;
  double y1d, x1d, bin_hd, bin_wd;  // the same in double, for the weight tables
  int64_t r0, r1, c0, c1;  // rows [r0, r1) and columns [c0, c1) with nonzero weight
  int64_t wy_off, wx_off;  // offsets of Wy (PH x (r1-r0)) and Wx (PW x (c1-c0)) in the tables
};

template <typename T>
struct PrTables {
  std::vector<PrBox<T>> boxes;
  std::vector<T> wy, wx;              // dense per-box weight tables
  std::vector<int64_t> rb, re, cb, ce;  // per-bin row / column ranges (K*PH, K*PW)
  double work = 0;                       // ~inner-loop steps per channel, all boxes (grain sizing)
};

// Cells [begin, end) of one axis that a bin [lo, hi] touches (hat support is +-1 cell).
inline void bin_range(double lo, double hi, int64_t size, int64_t& begin, int64_t& end) {
  begin = clamped_floor(lo, 0, size);
  end = clamped_ceil(hi, -1, size - 1) + 1;
  if (end < begin) end = begin;
}

template <typename T>
PrTables<T> build_tables(const T* rois, int64_t K, int64_t H, int64_t W, int64_t PH, int64_t PW, double scale) {
  PrTables<T> t;
  t.boxes.resize(K);
  t.rb.resize(K * PH);
  t.re.resize(K * PH);
  t.cb.resize(K * PW);
  t.ce.resize(K * PW);
  int64_t wy_size = 0, wx_size = 0;
  for (int64_t k = 0; k < K; ++k) {  // geometry and ranges: cheap, serial
    const T* roi = rois + k * 5;
    PrBox<T>& b = t.boxes[k];
    b.n = static_cast<int64_t>(roi[0]);
    const double y1 = static_cast<double>(roi[2]) * scale, x1 = static_cast<double>(roi[1]) * scale;
    const double bh = std::max(static_cast<double>(roi[4]) * scale - y1, 0.0) / PH;
    const double bw = std::max(static_cast<double>(roi[3]) * scale - x1, 0.0) / PW;
    b.y1 = static_cast<T>(y1);
    b.x1 = static_cast<T>(x1);
    b.bin_h = static_cast<T>(bh);
    b.bin_w = static_cast<T>(bw);
    b.area = static_cast<T>(bh * bw);
    b.y1d = y1, b.x1d = x1, b.bin_hd = bh, b.bin_wd = bw;
    b.r0 = H, b.r1 = 0, b.c0 = W, b.c1 = 0;
    for (int64_t p = 0; p < PH; ++p) {
      bin_range(y1 + p * bh, y1 + (p + 1) * bh, H, t.rb[k * PH + p], t.re[k * PH + p]);
      b.r0 = std::min(b.r0, t.rb[k * PH + p]);
      b.r1 = std::max(b.r1, t.re[k * PH + p]);
    }
    for (int64_t p = 0; p < PW; ++p) {
      bin_range(x1 + p * bw, x1 + (p + 1) * bw, W, t.cb[k * PW + p], t.ce[k * PW + p]);
      b.c0 = std::min(b.c0, t.cb[k * PW + p]);
      b.c1 = std::max(b.c1, t.ce[k * PW + p]);
    }
    if (b.r1 < b.r0) b.r1 = b.r0;
    if (b.c1 < b.c0) b.c1 = b.c0;
    b.wy_off = wy_size;
    b.wx_off = wx_size;
    wy_size += PH * (b.r1 - b.r0);
    wx_size += PW * (b.c1 - b.c0);
    t.work += static_cast<double>(PH * ((b.r1 - b.r0 + 2) * (b.c1 - b.c0 + 1) + PW * (b.c1 - b.c0 + 2)));
  }
  t.wy.assign(wy_size, T(0));
  t.wx.assign(wx_size, T(0));
  at::parallel_for(0, K, grain_for(K, static_cast<double>(wy_size + wx_size) * 8), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const PrBox<T>& b = t.boxes[k];
      const double y1 = b.y1d, x1 = b.x1d, bhd = b.bin_hd, bwd = b.bin_wd;
      for (int64_t p = 0; p < PH; ++p) {
        const double lo = y1 + p * bhd, hi = y1 + (p + 1) * bhd;
        T* row = t.wy.data() + b.wy_off + p * (b.r1 - b.r0);
        for (int64_t i = t.rb[k * PH + p]; i < t.re[k * PH + p]; ++i)
          row[i - b.r0] = static_cast<T>(hat_integral(hi - i) - hat_integral(lo - i));
      }
      for (int64_t p = 0; p < PW; ++p) {
        const double lo = x1 + p * bwd, hi = x1 + (p + 1) * bwd;
        T* row = t.wx.data() + b.wx_off + p * (b.c1 - b.c0);
        for (int64_t j = t.cb[k * PW + p]; j < t.ce[k * PW + p]; ++j)
          row[j - b.c0] = static_cast<T>(hat_integral(hi - j) - hat_integral(lo - j));
      }
    }
  });
  return t;
}

template <typename T>
void forward_impl(const T* input, const PrTables<T>& t, T* output, int64_t K, int64_t C, int64_t H, int64_t W,
                  int64_t PH, int64_t PW) {
  at::parallel_for(0, K * C, grain_for(K * C, t.work * C), [&](int64_t begin, int64_t end) {
    std::vector<T> g(W);
    for (int64_t kc = begin; kc < end; ++kc) {
      const int64_t k = kc / C, c = kc % C;
      const PrBox<T>& b = t.boxes[k];
      T* out = output + kc * PH * PW;
      const int64_t ncol = b.c1 - b.c0;
      if (!(b.area > T(0)) || ncol == 0 || b.r1 == b.r0) {
        std::fill(out, out + PH * PW, T(0));
        continue;
      }
      const T* f = input + (b.n * C + c) * H * W + b.c0;
      const T inv_area = T(1) / b.area;
      for (int64_t ph = 0; ph < PH; ++ph) {
        const T* wy = t.wy.data() + b.wy_off + ph * (b.r1 - b.r0) - b.r0;
        std::fill(g.begin(), g.begin() + ncol, T(0));
        for (int64_t i = t.rb[k * PH + ph]; i < t.re[k * PH + ph]; ++i) {
          const T w = wy[i];
          const T* row = f + i * W;
          for (int64_t j = 0; j < ncol; ++j) g[j] += w * row[j];
        }
        for (int64_t pw = 0; pw < PW; ++pw) {
          const T* wx = t.wx.data() + b.wx_off + pw * ncol - b.c0;
          T s = T(0);
          for (int64_t j = t.cb[k * PW + pw]; j < t.ce[k * PW + pw]; ++j) s += wx[j] * g[j - b.c0];
          out[ph * PW + pw] = s * inv_area;
        }
      }
    }
  });
}

template <typename T>
void backward_input_impl(const T* grad, const PrTables<T>& t, T* grad_input, int64_t K, int64_t C, int64_t H,
                         int64_t W, int64_t PH, int64_t PW) {
  // One task owns whole channels: no two tasks write the same gradient plane.
  at::parallel_for(0, C, grain_for(C, t.work * C), [&](int64_t begin, int64_t end) {
    std::vector<T> gx(W);
    for (int64_t c = begin; c < end; ++c) {
      for (int64_t k = 0; k < K; ++k) {
        const PrBox<T>& b = t.boxes[k];
        const int64_t ncol = b.c1 - b.c0;
        if (!(b.area > T(0)) || ncol == 0 || b.r1 == b.r0) continue;
        const T* g = grad + (k * C + c) * PH * PW;
        T* gin = grad_input + (b.n * C + c) * H * W + b.c0;
        const T inv_area = T(1) / b.area;
        for (int64_t ph = 0; ph < PH; ++ph) {
          std::fill(gx.begin(), gx.begin() + ncol, T(0));
          bool any = false;
          for (int64_t pw = 0; pw < PW; ++pw) {
            const T q = g[ph * PW + pw] * inv_area;
            if (q == T(0)) continue;
            any = true;
            const T* wx = t.wx.data() + b.wx_off + pw * ncol - b.c0;
            for (int64_t j = t.cb[k * PW + pw]; j < t.ce[k * PW + pw]; ++j) gx[j - b.c0] += q * wx[j];
          }
          if (!any) continue;
          const T* wy = t.wy.data() + b.wy_off + ph * (b.r1 - b.r0) - b.r0;
          for (int64_t i = t.rb[k * PH + ph]; i < t.re[k * PH + ph]; ++i) {
            const T w = wy[i];
            T* row = gin + i * W;
            for (int64_t j = 0; j < ncol; ++j) row[j] += w * gx[j];
          }
        }
      }
    }
  });
}

// Linear interpolation weights of coordinate v between cells a and a + 1 (0 outside the map).
template <typename T>
inline void edge_weights(T v, int64_t size, int64_t& a, T& w0, T& w1) {
  a = clamped_floor(v, -2, size + 1);
  const T frac = v - static_cast<T>(a);
  w0 = (a >= 0 && a < size) ? T(1) - frac : T(0);
  w1 = (a + 1 >= 0 && a + 1 < size) ? frac : T(0);
}

template <typename T>
void backward_rois_impl(const T* grad, const T* input, const T* output, const PrTables<T>& t, T* grad_rois,
                        int64_t K, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, T scale) {
  at::parallel_for(0, K, grain_for(K, 3 * t.work * C), [&](int64_t begin, int64_t end) {
    std::vector<T> line, ly((PH + 1) * PW), lx((PW + 1) * PH);
    for (int64_t k = begin; k < end; ++k) {
      const PrBox<T>& b = t.boxes[k];
      T* gr = grad_rois + k * 5;
      std::fill(gr, gr + 5, T(0));
      const int64_t nrow = b.r1 - b.r0, ncol = b.c1 - b.c0;
      if (!(b.area > T(0)) || ncol == 0 || nrow == 0) continue;
      line.resize(std::max(nrow, ncol));
      T gy1 = 0, gy2 = 0, gx1 = 0, gx2 = 0;
      for (int64_t c = 0; c < C; ++c) {
        const T* f = input + (b.n * C + c) * H * W;
        const T* g = grad + (k * C + c) * PH * PW;
        const T* out = output + (k * C + c) * PH * PW;
        // Line integrals along the PH + 1 horizontal bin edges: ly[e][pw].
        for (int64_t e = 0; e <= PH; ++e) {
          int64_t a;
          T w0, w1;
          edge_weights(b.y1 + static_cast<T>(e) * b.bin_h, H, a, w0, w1);
          for (int64_t j = 0; j < ncol; ++j) {
            T v = 0;
            if (w0 != T(0)) v += w0 * f[a * W + b.c0 + j];
            if (w1 != T(0)) v += w1 * f[(a + 1) * W + b.c0 + j];
            line[j] = v;
          }
          for (int64_t pw = 0; pw < PW; ++pw) {
            const T* wx = t.wx.data() + b.wx_off + pw * ncol - b.c0;
            T s = 0;
            for (int64_t j = t.cb[k * PW + pw]; j < t.ce[k * PW + pw]; ++j) s += wx[j] * line[j - b.c0];
            ly[e * PW + pw] = s;
          }
        }
        // Line integrals along the PW + 1 vertical bin edges: lx[e][ph].
        for (int64_t e = 0; e <= PW; ++e) {
          int64_t a;
          T w0, w1;
          edge_weights(b.x1 + static_cast<T>(e) * b.bin_w, W, a, w0, w1);
          for (int64_t i = 0; i < nrow; ++i) {
            const T* row = f + (b.r0 + i) * W;
            T v = 0;
            if (w0 != T(0)) v += w0 * row[a];
            if (w1 != T(0)) v += w1 * row[a + 1];
            line[i] = v;
          }
          for (int64_t ph = 0; ph < PH; ++ph) {
            const T* wy = t.wy.data() + b.wy_off + ph * nrow - b.r0;
            T s = 0;
            for (int64_t i = t.rb[k * PH + ph]; i < t.re[k * PH + ph]; ++i) s += wy[i] * line[i - b.r0];
            lx[e * PH + ph] = s;
          }
        }
        for (int64_t ph = 0; ph < PH; ++ph) {
          for (int64_t pw = 0; pw < PW; ++pw) {
            const T q = g[ph * PW + pw] / b.area;
            if (q == T(0)) continue;
            const T o = out[ph * PW + pw];
            const T top = ly[ph * PW + pw], bottom = ly[(ph + 1) * PW + pw];
            const T left = lx[pw * PH + ph], right = lx[(pw + 1) * PH + ph];
            const T fy0 = static_cast<T>(ph) / PH, fy1 = static_cast<T>(ph + 1) / PH;
            const T fx0 = static_cast<T>(pw) / PW, fx1 = static_cast<T>(pw + 1) / PW;
            gy1 += q * (-top * (T(1) - fy0) + bottom * (T(1) - fy1) + o * b.bin_w / PH);
            gy2 += q * (-top * fy0 + bottom * fy1 - o * b.bin_w / PH);
            gx1 += q * (-left * (T(1) - fx0) + right * (T(1) - fx1) + o * b.bin_h / PW);
            gx2 += q * (-left * fx0 + right * fx1 - o * b.bin_h / PW);
          }
        }
      }
      gr[1] = gx1 * scale;
      gr[2] = gy1 * scale;
      gr[3] = gx2 * scale;
      gr[4] = gy2 * scale;
    }
  });
}

}  // namespace
}  // namespace detector_ops

using namespace detector_ops;

extern "C" {

// input: (N, C, H, W); rois: (K, 5); output: (K, C, PH, PW).
int detector_prroi_forward(int dtype, const void* input, const void* rois, void* output, int64_t K, int64_t C,
                           int64_t H, int64_t W, int64_t PH, int64_t PW, double scale, char* error,
                           int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_sizes(K, C, H, W, PH, PW);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const PrTables<T> t = build_tables<T>(static_cast<const T*>(rois), K, H, W, PH, PW, scale);
      forward_impl<T>(static_cast<const T*>(input), t, static_cast<T*>(output), K, C, H, W, PH, PW);
    });
  });
}

// grad, output: (K, C, PH, PW). grad_input (N, C, H, W), zero-filled by the caller, or null;
// grad_rois (K, 5) or null (then output may be null too).
int detector_prroi_backward(int dtype, const void* grad, const void* input, const void* rois, const void* output,
                            void* grad_input, void* grad_rois, int64_t K, int64_t C, int64_t H, int64_t W,
                            int64_t PH, int64_t PW, double scale, char* error, int64_t error_len) {
  return guarded(error, error_len, [&] {
    check_sizes(K, C, H, W, PH, PW);
    dispatch_float(dtype, [&](auto* tag) {
      using T = std::remove_pointer_t<decltype(tag)>;
      const PrTables<T> t = build_tables<T>(static_cast<const T*>(rois), K, H, W, PH, PW, scale);
      if (grad_input != nullptr)
        backward_input_impl<T>(static_cast<const T*>(grad), t, static_cast<T*>(grad_input), K, C, H, W, PH, PW);
      if (grad_rois != nullptr)
        backward_rois_impl<T>(static_cast<const T*>(grad), static_cast<const T*>(input), static_cast<const T*>(output),
                              t, static_cast<T*>(grad_rois), K, C, H, W, PH, PW, static_cast<T>(scale));
    });
  });
}

}  // extern "C"
