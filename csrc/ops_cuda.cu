// CUDA kernels of the latentforge ops. Schemas live in ops.cpp; this file only adds the CUDA implementations.
//
// reparam_linear is one launch: each 16x16 thread block owns a [16 rows x 16 hidden] output tile, forms its
// slice of z = mu + t * exp(logvar / 2) * eps + offset in shared memory as it walks D (so z never goes to global
// memory), multiplies by the matching weight tile in float32, and finishes with bias, activation and the cast.
#include "latentforge_ops.h"

#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace latentforge {
namespace {

constexpr int kTile = 16;

struct Strides2 {
  int64_t s0, s1;
};

inline Strides2 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1)}; }

template <typename scalar_t>
__global__ void reparam_linear_kernel(const scalar_t* __restrict__ mu, Strides2 ms, const scalar_t* __restrict__ logvar,
                                      Strides2 ls, const scalar_t* __restrict__ eps, Strides2 es,
                                      const scalar_t* __restrict__ offset, Strides2 os,
                                      const scalar_t* __restrict__ weight, Strides2 ws,
                                      const scalar_t* __restrict__ bias, int64_t bias_stride, float temperature,
                                      Activation act, scalar_t* __restrict__ out, int64_t B, int64_t D, int64_t H) {
  __shared__ float z_tile[kTile][kTile + 1];  // +1 column: no bank conflicts on the transposed read
  __shared__ float w_tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kTile + ty;    // batch index this thread outputs
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kTile + tx;    // hidden index this thread outputs
  const int64_t w_row = static_cast<int64_t>(blockIdx.x) * kTile + ty;  // hidden index this thread loads
  float acc = 0.f;
  for (int64_t d0 = 0; d0 < D; d0 += kTile) {
    const int64_t d = d0 + tx;
    float z = 0.f;
    if (row < B && d < D) {
      const float sigma = __expf(0.5f * static_cast<float>(logvar[row * ls.s0 + d * ls.s1]));
      z = static_cast<float>(mu[row * ms.s0 + d * ms.s1]) + temperature * sigma * static_cast<float>(eps[row * es.s0 + d * es.s1]);
      if (offset != nullptr) z += static_cast<float>(offset[row * os.s0 + d * os.s1]);
    }
    z_tile[ty][tx] = z;
    w_tile[ty][tx] = (w_row < H && d < D) ? static_cast<float>(weight[w_row * ws.s0 + d * ws.s1]) : 0.f;
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; ++k) acc += z_tile[ty][k] * w_tile[tx][k];
    __syncthreads();
  }
  if (row < B && col < H) {
    if (bias != nullptr) acc += static_cast<float>(bias[col * bias_stride]);
    out[row * H + col] = static_cast<scalar_t>(activate(acc, act));
  }
}

template <typename scalar_t>
__global__ void to_uint8_kernel(const scalar_t* __restrict__ x, int64_t s0, int64_t s1, int64_t s2, int64_t s3,
                                uint8_t* __restrict__ out, int64_t C, int64_t H, int64_t W, int64_t n, float lo,
                                float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, w = (i / C) % W, h = (i / (C * W)) % H, b = i / (C * W * H);
    out[i] = float_to_byte(static_cast<float>(x[b * s0 + c * s1 + h * s2 + w * s3]), lo, scale);
  }
}

__global__ void from_uint8_kernel(const uint8_t* __restrict__ x, int64_t s0, int64_t s1, int64_t s2, int64_t s3,
                                  float* __restrict__ out, int64_t C, int64_t H, int64_t W, int64_t n, float lo,
                                  float scale) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t w = i % W, h = (i / W) % H, c = (i / (W * H)) % C, b = i / (W * H * C);
    out[i] = static_cast<float>(x[b * s0 + h * s1 + w * s2 + c * s3]) * scale + lo;
  }
}

// Grid-stride loops cap the grid; enough blocks to fill any current GPU several times over.
inline unsigned int elementwise_blocks(int64_t n, int threads) {
  return static_cast<unsigned int>(std::min<int64_t>((n + threads - 1) / threads, 65535));
}

at::Tensor reparam_linear_cuda(const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& eps,
                               const std::optional<at::Tensor>& offset, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, double temperature, c10::string_view activation) {
  const Activation act = check_reparam_linear(mu, logvar, eps, offset, weight, bias, std::string(activation));
  TORCH_CHECK(mu.is_cuda(), "reparam_linear: the CUDA kernel got a tensor on ", mu.device());
  const c10::cuda::CUDAGuard guard(mu.device());
  const int64_t B = mu.size(0), D = mu.size(1), H = weight.size(0);
  at::Tensor out = at::empty({B, H}, mu.options());
  if (B == 0 || H == 0) return out;
  TORCH_CHECK((B + kTile - 1) / kTile <= 65535, "reparam_linear: batch ", B, " is over the CUDA grid limit of ",
              65535 * kTile, " rows; split it");
  Strides2 os{0, 0};
  if (offset) os = offset->dim() == 1 ? Strides2{0, offset->stride(0)} : strides_of(*offset);
  const dim3 block(kTile, kTile);
  const dim3 grid(static_cast<unsigned int>((H + kTile - 1) / kTile), static_cast<unsigned int>((B + kTile - 1) / kTile));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparam_linear_cuda", [&] {
    reparam_linear_kernel<scalar_t><<<grid, block, 0, stream>>>(
        mu.const_data_ptr<scalar_t>(), strides_of(mu), logvar.const_data_ptr<scalar_t>(), strides_of(logvar),
        eps.const_data_ptr<scalar_t>(), strides_of(eps), offset ? offset->const_data_ptr<scalar_t>() : nullptr, os,
        weight.const_data_ptr<scalar_t>(), strides_of(weight), bias ? bias->const_data_ptr<scalar_t>() : nullptr,
        bias ? bias->stride(0) : 0, static_cast<float>(temperature), act, out.mutable_data_ptr<scalar_t>(), B, D, H);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor to_uint8_image_cuda(const at::Tensor& x, double lo, double hi) {
  check_to_uint8(x, lo, hi);
  TORCH_CHECK(x.is_cuda(), "to_uint8_image: the CUDA kernel got a tensor on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), n = B * C * H * W;
  at::Tensor out = at::empty({B, H, W, C}, x.options().dtype(at::kByte));
  if (n == 0) return out;
  constexpr int threads = 256;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "to_uint8_image_cuda", [&] {
    to_uint8_kernel<scalar_t><<<elementwise_blocks(n, threads), threads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), x.stride(0), x.stride(1), x.stride(2), x.stride(3),
        out.mutable_data_ptr<uint8_t>(), C, H, W, n, static_cast<float>(lo), static_cast<float>(255.0 / (hi - lo)));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor from_uint8_image_cuda(const at::Tensor& x, double lo, double hi) {
  check_from_uint8(x, lo, hi);
  TORCH_CHECK(x.is_cuda(), "from_uint8_image: the CUDA kernel got a tensor on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t B = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3), n = B * C * H * W;
  at::Tensor out = at::empty({B, C, H, W}, x.options().dtype(at::kFloat));
  if (n == 0) return out;
  constexpr int threads = 256;
  from_uint8_kernel<<<elementwise_blocks(n, threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<uint8_t>(), x.stride(0), x.stride(1), x.stride(2), x.stride(3), out.mutable_data_ptr<float>(),
      C, H, W, n, static_cast<float>(lo), static_cast<float>((hi - lo) / 255.0));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(latentforge, CUDA, m) {
  m.impl("reparam_linear", &reparam_linear_cuda);
  m.impl("to_uint8_image", &to_uint8_image_cuda);
  m.impl("from_uint8_image", &from_uint8_image_cuda);
}

}  // namespace latentforge
