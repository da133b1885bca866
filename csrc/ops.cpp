// The latentforge torch library: op schemas and their CPU kernels.
//
// reparam_linear runs as: a prologue that forms z = mu + t * exp(logvar / 2) * eps + offset in float32 from
// inputs of any strides, the product z @ weight.T, and an epilogue that adds the bias, applies the activation
// and casts, in one pass over the output. Small batches (the real-time case) do the product here too, so the
// whole op is one loop nest; larger ones hand it to ATen's BLAS, which blocks for cache better than we would.
#include "latentforge_ops.h"

#include <ATen/Parallel.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <type_traits>
#include <torch/library.h>

namespace latentforge {
namespace {

// Up to this many rows the product is a hand loop over weight rows (each weight row read once for all rows of
// z), one parallel region and no BLAS call; above it BLAS wins. On a 2-core AVX2 VM, for the 64px VAE's head
// (D=16, H=2048), one thread: 16.7 us at B = 1 against 23.3 us for the same math as torch calls; at B = 3 the
// hand loop took 26.6 us where the BLAS path takes 22.0 us for B = 4.
constexpr int64_t kDirectRows = 2;

// Dot product with eight independent partial sums: the compiler vectorizes this without -ffast-math, because
// no floating-point addition is reordered across lanes.
inline float dot(const float* a, const float* b, int64_t n) {
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) acc[k] += a[i + k] * b[i + k];
  float tail = 0.f;
  for (; i < n; ++i) tail += a[i] * b[i];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail;
}

template <typename scalar_t>
at::Tensor sample_latents(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                          const std::optional<at::Tensor>& offset, float temperature) {
  const int64_t B = mu.size(0), D = mu.size(1);
  at::Tensor z = at::empty({B, D}, mu.options().dtype(at::kFloat));
  float* zp = z.data_ptr<float>();
  const scalar_t* m = mu.const_data_ptr<scalar_t>();
  const scalar_t* lv = logvar.const_data_ptr<scalar_t>();
  const scalar_t* e = eps.const_data_ptr<scalar_t>();
  const scalar_t* o = offset ? offset->const_data_ptr<scalar_t>() : nullptr;
  // An offset [D] is read with row stride 0: the same edit for every row.
  const int64_t o0 = !offset ? 0 : (offset->dim() == 1 ? 0 : offset->stride(0));
  const int64_t o1 = !offset ? 0 : offset->stride(offset->dim() - 1);
  const int64_t m0 = mu.stride(0), m1 = mu.stride(1), l0 = logvar.stride(0), l1 = logvar.stride(1);
  const int64_t e0 = eps.stride(0), e1 = eps.stride(1);
  at::parallel_for(0, B, std::max<int64_t>(1, 4096 / std::max<int64_t>(D, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* row = zp + b * D;
      for (int64_t d = 0; d < D; ++d) {
        const float sigma = std::exp(0.5f * static_cast<float>(lv[b * l0 + d * l1]));
        float v = static_cast<float>(m[b * m0 + d * m1]) + temperature * sigma * static_cast<float>(e[b * e0 + d * e1]);
        if (o) v += static_cast<float>(o[b * o0 + d * o1]);
        row[d] = v;
      }
    }
  });
  return z;
}

// Calls f with the activation as a compile-time constant, so that in the loops below the switch in activate()
// folds away and the relu / lrelu / none loops vectorize.
template <typename F>
void with_activation(Activation act, F&& f) {
  switch (act) {
    case Activation::Relu: return f(std::integral_constant<Activation, Activation::Relu>{});
    case Activation::LeakyRelu: return f(std::integral_constant<Activation, Activation::LeakyRelu>{});
    case Activation::Silu: return f(std::integral_constant<Activation, Activation::Silu>{});
    case Activation::Tanh: return f(std::integral_constant<Activation, Activation::Tanh>{});
    default: return f(std::integral_constant<Activation, Activation::None>{});
  }
}

// The BLAS path's epilogue: activation (and, for half types, the cast) over y = z @ W.T + b, row by row so the
// inner loop is contiguous.
template <typename scalar_t>
void activate_rows(const float* y, Activation act, scalar_t* out, int64_t B, int64_t H) {
  with_activation(act, [&](auto A) {
    at::parallel_for(0, B, std::max<int64_t>(1, 32768 / std::max<int64_t>(H, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        const float* src = y + b * H;
        scalar_t* dst = out + b * H;
        for (int64_t h = 0; h < H; ++h) dst[h] = static_cast<scalar_t>(activate(src[h], decltype(A)::value));
      }
    });
  });
}

at::Tensor reparam_linear_cpu(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                              const std::optional<at::Tensor>& offset, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, double temperature, c10::string_view activation) {
  const Activation act = check_reparam_linear(mu, logvar, eps, offset, weight, bias, std::string(activation));
  TORCH_CHECK(mu.device().is_cpu(), "reparam_linear: the CPU kernel got a tensor on ", mu.device());
  const int64_t B = mu.size(0), D = mu.size(1), H = weight.size(0);
  if (B == 0 || H == 0) return at::empty({B, H}, mu.options());
  // The ATen calls below must stay float32 even when the caller runs under autocast.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  // The product runs in float32 whatever the input dtype: accumulate in fp32, round once at the end.
  const at::Tensor w = weight.to(at::kFloat).contiguous();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparam_linear_cpu", [&] {
    const at::Tensor z = sample_latents<scalar_t>(mu, logvar, eps, offset, static_cast<float>(temperature));
    if (B <= kDirectRows) {
      out = at::empty({B, H}, mu.options());
      scalar_t* op = out.mutable_data_ptr<scalar_t>();
      const float* zp = z.const_data_ptr<float>();
      const float* wp = w.const_data_ptr<float>();
      const scalar_t* bp = bias ? bias->const_data_ptr<scalar_t>() : nullptr;
      const int64_t bs = bias ? bias->stride(0) : 0;
      with_activation(act, [&](auto A) {
        at::parallel_for(0, H, std::max<int64_t>(1, 32768 / std::max<int64_t>(D * B, 1)), [&](int64_t begin, int64_t end) {
          for (int64_t h = begin; h < end; ++h) {
            const float* wrow = wp + h * D;
            const float bh = bp ? static_cast<float>(bp[h * bs]) : 0.f;
            for (int64_t b = 0; b < B; ++b)
              op[b * H + h] = static_cast<scalar_t>(activate(dot(zp + b * D, wrow, D) + bh, decltype(A)::value));
          }
        });
      });
      return;
    }
    // As torch.nn.functional.linear does it: the bias broadcast into the output, then one GEMM onto it; then
    // the activation in place (float32) or into the half-precision output.
    at::Tensor y = bias ? at::addmm(bias->to(at::kFloat), z, w.t()) : at::mm(z, w.t());
    if constexpr (std::is_same_v<scalar_t, float>) {
      if (act != Activation::None) activate_rows<float>(y.const_data_ptr<float>(), act, y.mutable_data_ptr<float>(), B, H);
      out = y;
    } else {
      out = at::empty({B, H}, mu.options());
      activate_rows<scalar_t>(y.const_data_ptr<float>(), act, out.mutable_data_ptr<scalar_t>(), B, H);
    }
  });
  return out;
}

at::Tensor to_uint8_image_cpu(const at::Tensor& x, double lo, double hi) {
  check_to_uint8(x, lo, hi);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  at::Tensor out = at::empty({B, H, W, C}, x.options().dtype(at::kByte));
  const float flo = static_cast<float>(lo), scale = static_cast<float>(255.0 / (hi - lo));
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);
  uint8_t* op = out.mutable_data_ptr<uint8_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "to_uint8_image_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    // One task per image row; any input strides (NCHW or channels_last) are read in place, no copy.
    at::parallel_for(0, B * H, std::max<int64_t>(1, 16384 / std::max<int64_t>(W * C, 1)), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / H, h = r % H;
        const scalar_t* src = xp + b * s0 + h * s2;
        uint8_t* dst = op + r * W * C;
        for (int64_t w = 0; w < W; ++w)
          for (int64_t c = 0; c < C; ++c)
            dst[w * C + c] = float_to_byte(static_cast<float>(src[w * s3 + c * s1]), flo, scale);
      }
    });
  });
  return out;
}

at::Tensor from_uint8_image_cpu(const at::Tensor& x, double lo, double hi) {
  check_from_uint8(x, lo, hi);
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  at::Tensor out = at::empty({B, C, H, W}, x.options().dtype(at::kFloat));
  const float flo = static_cast<float>(lo), scale = static_cast<float>((hi - lo) / 255.0);
  const int64_t s0 = x.stride(0), s1 = x.stride(1), s2 = x.stride(2), s3 = x.stride(3);
  const uint8_t* xp = x.const_data_ptr<uint8_t>();
  float* op = out.mutable_data_ptr<float>();
  at::parallel_for(0, B * C, std::max<int64_t>(1, 16384 / std::max<int64_t>(H * W, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t b = p / C, c = p % C;
      const uint8_t* src = xp + b * s0 + c * s3;
      float* dst = op + p * H * W;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t w = 0; w < W; ++w) dst[h * W + w] = static_cast<float>(src[h * s1 + w * s2]) * scale + flo;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(latentforge, m) {
  // The fake (meta) kernels and autograd are registered in Python; torch imports this module when it needs them.
  m.set_python_module("latentforge.ops");
  m.def("reparam_linear(Tensor mu, Tensor logvar, Tensor eps, Tensor? offset, Tensor weight, Tensor? bias, "
        "float temperature, str activation) -> Tensor");
  m.def("to_uint8_image(Tensor x, float lo, float hi) -> Tensor");
  m.def("from_uint8_image(Tensor x, float lo, float hi) -> Tensor");
}

TORCH_LIBRARY_IMPL(latentforge, CPU, m) {
  m.impl("reparam_linear", &reparam_linear_cpu);
  m.impl("to_uint8_image", &to_uint8_image_cpu);
  m.impl("from_uint8_image", &from_uint8_image_cpu);
}

}  // namespace latentforge
