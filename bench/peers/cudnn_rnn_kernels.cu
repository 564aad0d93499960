// The two kernels the cuDNN peer needs beside cuDNN and cuBLAS: the output layer's fused
// softmax / cross-entropy / dY pass, and the clipped SGD update. Plain C entry points so
// that cudnn_rnn.c stays C.
#include <cuda_runtime.h>
#include <math.h>
#include <stddef.h>

namespace {

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One warp per row r of the (rows, V) logits: adds the bias, then
//   row_loss[r] = logsumexp(y) - y[target]       (>= 0, so cublasSasum sums them)
//   y[v]        = (softmax(y)[v] - [v == target]) * scale      (dY, in place)
__global__ void softmax_xent_kernel(float *__restrict__ logits, const float *__restrict__ by,
                                    const int *__restrict__ targets, float *__restrict__ row_loss,
                                    int rows, int V, float scale)
{
    const int lane = threadIdx.x & 31;
    const int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5);
    if (row >= rows) return; // whole warps leave together: rows are per warp
    float *y = logits + (size_t)row * V;
    float mx = -INFINITY;
    for (int v = lane; v < V; v += 32) {
        float z = y[v] + by[v];
        y[v] = z;
        mx = fmaxf(mx, z);
    }
    __syncwarp();
    mx = warp_max(mx);
    float s = 0.f;
    for (int v = lane; v < V; v += 32) s += expf(y[v] - mx);
    s = warp_sum(s);
    const float lse = mx + logf(s);
    const int t = targets[row];
    const float yt = y[t];
    __syncwarp(); // every lane has read y[t] before any lane overwrites it
    for (int v = lane; v < V; v += 32) {
        float p = expf(y[v] - lse);
        y[v] = (p - (v == t ? 1.f : 0.f)) * scale;
    }
    if (lane == 0) row_loss[row] = lse - yt;
}

// p -= lr * min(1, max_norm / (norm + 1e-6)) * g, the norm read from device memory (as
// torch.nn.utils.clip_grad_norm_ followed by SGD, without a host round trip).
__global__ void clip_sgd_kernel(float *__restrict__ p, const float *__restrict__ g, size_t n,
                                const float *__restrict__ norm, float max_norm, float lr)
{
    float coef = max_norm / (*norm + 1e-6f);
    if (coef > 1.f) coef = 1.f;
    const float step = lr * coef;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] -= step * g[i];
}

} // namespace

extern "C" int cudnn_peer_softmax_xent(float *logits, const float *by, const int *targets, float *row_loss,
                                       int rows, int V, float scale, cudaStream_t stream)
{
    const int threads = 256, rows_per_block = threads / 32;
    const int blocks = (rows + rows_per_block - 1) / rows_per_block;
    softmax_xent_kernel<<<blocks, threads, 0, stream>>>(logits, by, targets, row_loss, rows, V, scale);
    return (int)cudaGetLastError();
}

extern "C" int cudnn_peer_clip_sgd(float *p, const float *g, size_t n, const float *norm, float max_norm, float lr,
                                   cudaStream_t stream)
{
    const int threads = 256;
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 4096) blocks = 4096;
    if (blocks < 1) blocks = 1;
    clip_sgd_kernel<<<(unsigned)blocks, threads, 0, stream>>>(p, g, n, norm, max_norm, lr);
    return (int)cudaGetLastError();
}
