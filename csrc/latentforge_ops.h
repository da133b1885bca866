// Shared by the CPU (ops.cpp) and CUDA (ops_cuda.cu) kernels of the fused latentforge ops:
// the activation names, their math, and the input checks, so both devices accept and reject the same inputs.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <optional>
#include <string>

#if defined(__CUDACC__)
#define LF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LF_HOST_DEVICE inline
#endif

namespace latentforge {

enum class Activation : int { None = 0, Relu = 1, LeakyRelu = 2, Silu = 3, Tanh = 4 };

constexpr float kLeakySlope = 0.2f;

inline Activation parse_activation(const std::string& name) {
  if (name == "none") return Activation::None;
  if (name == "relu") return Activation::Relu;
  if (name == "lrelu") return Activation::LeakyRelu;
  if (name == "silu") return Activation::Silu;
  if (name == "tanh") return Activation::Tanh;
  TORCH_CHECK(false, "reparam_linear: activation must be one of none, relu, lrelu, silu, tanh; got '", name, "'");
}

// Comparisons are written so that NaN propagates, as in torch.relu and leaky_relu.
LF_HOST_DEVICE float activate(float y, Activation act) {
  switch (act) {
    case Activation::Relu: return y < 0.f ? 0.f : y;
    case Activation::LeakyRelu: return y < 0.f ? kLeakySlope * y : y;
#if defined(__CUDA_ARCH__)
    case Activation::Silu: return y / (1.f + expf(-y));
    case Activation::Tanh: return tanhf(y);
#else
    case Activation::Silu: return y / (1.f + std::exp(-y));
    case Activation::Tanh: return std::tanh(y);
#endif
    default: return y;
  }
}

// float [lo, hi] -> byte: scale, NaN -> 0, round half to even (as numpy.rint and torch.round), clamp.
LF_HOST_DEVICE uint8_t float_to_byte(float x, float lo, float scale) {
  float y = (x - lo) * scale;
  if (!(y == y)) return 0;
#if defined(__CUDA_ARCH__)
  y = rintf(y);
#else
  y = std::nearbyint(y);
#endif
  y = y < 0.f ? 0.f : (y > 255.f ? 255.f : y);
  return static_cast<uint8_t>(y);
}

inline void check_same(const at::Tensor& t, const at::Tensor& ref, const char* name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "reparam_linear: ", name, " is ", t.scalar_type(),
              " but mu is ", ref.scalar_type(), "; pass every input in one dtype");
  TORCH_CHECK(t.device() == ref.device(), "reparam_linear: ", name, " is on ", t.device(), " but mu is on ",
              ref.device(), "; move every input to one device");
}

// Checks shapes, dtypes and devices; returns the activation.
inline Activation check_reparam_linear(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                                       const std::optional<at::Tensor>& offset, const at::Tensor& weight,
                                       const std::optional<at::Tensor>& bias, const std::string& activation) {
  const auto dtype = mu.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "reparam_linear: inputs must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(mu.dim() == 2, "reparam_linear: mu must be [B, D], got shape ", mu.sizes());
  const int64_t B = mu.size(0), D = mu.size(1);
  check_same(logvar, mu, "logvar");
  check_same(eps, mu, "eps");
  check_same(weight, mu, "weight");
  TORCH_CHECK(logvar.sizes() == mu.sizes(), "reparam_linear: logvar must be [B, D] = ", mu.sizes(), " like mu, got ",
              logvar.sizes());
  TORCH_CHECK(eps.sizes() == mu.sizes(), "reparam_linear: eps must be [B, D] = ", mu.sizes(), " like mu, got ",
              eps.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == D, "reparam_linear: weight must be [H, D] with D = ", D,
              ", got shape ", weight.sizes());
  if (offset) {
    check_same(*offset, mu, "offset");
    const bool row = offset->dim() == 1 && offset->size(0) == D;
    const bool full = offset->dim() == 2 && offset->size(0) == B && offset->size(1) == D;
    TORCH_CHECK(row || full, "reparam_linear: offset must be [D] or [B, D] with B = ", B, ", D = ", D,
                ", got shape ", offset->sizes());
  }
  if (bias) {
    check_same(*bias, mu, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "reparam_linear: bias must be [H] with H = ",
                weight.size(0), ", got shape ", bias->sizes());
  }
  return parse_activation(activation);
}

inline void check_to_uint8(const at::Tensor& x, double lo, double hi) {
  TORCH_CHECK(x.dim() == 4, "to_uint8_image: x must be [B, C, H, W], got shape ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16,
              "to_uint8_image: x must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && hi > lo,
              "to_uint8_image: the value range must be finite with hi > lo, got [", lo, ", ", hi, "]");
}

inline void check_from_uint8(const at::Tensor& x, double lo, double hi) {
  TORCH_CHECK(x.dim() == 4, "from_uint8_image: x must be [B, H, W, C], got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kByte, "from_uint8_image: x must be uint8, got ", x.scalar_type());
  TORCH_CHECK(std::isfinite(lo) && std::isfinite(hi) && hi > lo,
              "from_uint8_image: the value range must be finite with hi > lo, got [", lo, ", ", hi, "]");
}

}  // namespace latentforge
