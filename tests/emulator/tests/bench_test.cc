/* Costs of the emulation, printed for README.md (these tests only fail if a kernel is wrong). */
#include <chrono>
#include <cstdio>

#include "test_support.h"

namespace emu_bench {

constexpr int kThreads = 256;

/* The backend's block_sum (src/cuda/kernels.cuh), copied: kernels_test.cc includes that
 * header, whose non-template kernels may be compiled into one translation unit only. */
template <typename A>
__device__ A block_sum(A value, A *scratch)
{
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < kThreads / 32 ? scratch[lane] : A(0);
        for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
        if (lane == 0) scratch[0] = value;
    }
    __syncthreads();
    A result = scratch[0];
    __syncthreads();
    return result;
}

__global__ void empty_kernel() {}

__global__ void barriers(int n)
{
    for (int i = 0; i < n; i++) __syncthreads();
}

/* softmax_loss's shape: two block reductions over a row of V values. */
__global__ void softmax_like(const float *logits, int V, double *out)
{
    __shared__ double scratch[kThreads / 32];
    const float *y = logits + (size_t)blockIdx.x * V;
    double m = 0; /* a sum stands in for the max: the logits are 0 */
    for (int v = threadIdx.x; v < V; v += kThreads) m += (double)y[v];
    m = block_sum(m, scratch);
    double s = 0;
    for (int v = threadIdx.x; v < V; v += kThreads) s += exp((double)y[v] - m);
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

} // namespace emu_bench

using namespace emu_bench;

namespace {
double seconds_since(std::chrono::steady_clock::time_point t0)
{
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
} // namespace

TEST_F(EmulatorTest, MeasureCosts)
{
    const int blocks = 2000;
    void *none[] = {nullptr};
    auto t0 = std::chrono::steady_clock::now();
    CUDA_OK(cudaLaunchKernel(empty_kernel, dim3(blocks), dim3(kThreads), none));
    CUDA_OK(cudaDeviceSynchronize());
    double empty = seconds_since(t0) / blocks;

    int n = 100;
    void *bargs[] = {&n};
    t0 = std::chrono::steady_clock::now();
    CUDA_OK(cudaLaunchKernel(barriers, dim3(20), dim3(kThreads), bargs));
    CUDA_OK(cudaDeviceSynchronize());
    /* every barrier: each thread switches out and back in */
    double per_switch = seconds_since(t0) / (20.0 * n * kThreads * 2);

    const int rows = 2000, V = 65;
    float *logits;
    double *out;
    CUDA_OK(cudaMalloc((void **)&logits, (size_t)rows * V * sizeof(float)));
    CUDA_OK(cudaMalloc((void **)&out, rows * sizeof(double)));
    CUDA_OK(cudaMemset(logits, 0, (size_t)rows * V * sizeof(float)));
    int v = V;
    void *sargs[] = {&logits, &v, &out};
    t0 = std::chrono::steady_clock::now();
    CUDA_OK(cudaLaunchKernel(softmax_like, dim3(rows), dim3(kThreads), sargs));
    CUDA_OK(cudaDeviceSynchronize());
    double softmax = seconds_since(t0) / rows;
    double first;
    CUDA_OK(cudaMemcpy(&first, out, sizeof first, cudaMemcpyDeviceToHost));
    EXPECT_EQ(65.0, first);
    cudaFree(logits);
    cudaFree(out);
    printf("emulator costs: fiber switch %.1f ns, empty 256-thread block %.1f us, softmax-style 256-thread block "
           "(2 block reductions) %.1f us\n",
           per_switch * 1e9, empty * 1e6, softmax * 1e6);
}
