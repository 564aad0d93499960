/* Kernel execution: barriers, shuffles, votes, schedules, shared memory, launch limits,
 * stream order, __trap, and the diagnostics for broken kernels. The kernels are written as
 * CUDA code and launched through cudaLaunchKernel, as the backend does. */
#include <math.h>

#include <thread>
#include <vector>

#include "test_support.h"

#include "../../../src/cuda/kernels.cuh"

namespace emu_test {

constexpr int kThreads = 256;

/* The backend's own block reduction (src/cuda/kernels.cuh). */
using gpurnn::block_sum;

template <typename T>
__global__ void row_sums(const T *__restrict__ x, int cols, T *__restrict__ out)
{
    __shared__ T scratch[kThreads / 32];
    T s = 0;
    for (int c = threadIdx.x; c < cols; c += kThreads) s += x[(size_t)blockIdx.x * cols + c];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

/* Missing a barrier between the write and the read of a neighbour's slot. */
__global__ void neighbour_without_barrier(int *out)
{
    __shared__ int slot[kThreads];
    slot[threadIdx.x] = (int)threadIdx.x;
    out[threadIdx.x] = slot[(threadIdx.x + 1) % kThreads];
}

__global__ void read_shared_before_write(double *out)
{
    __shared__ double cell;
    if (threadIdx.x == 0) out[blockIdx.x] = cell; /* poisoned: NaN in every block */
    __syncthreads();
    if (threadIdx.x == 0) cell = 1.0;
}

__global__ void barrier_in_branch(int *out)
{
    if (threadIdx.x < 16) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}

__global__ void early_exit_then_barrier(int n, int *out)
{
    if ((int)threadIdx.x >= n) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}

__global__ void shuffle_from_inactive_lane(int *out)
{
    int v = (int)threadIdx.x;
    if (threadIdx.x < 16) v = __shfl_down_sync(0x0000ffffu, v, 8); /* lane 8..15 read 16..23 */
    out[threadIdx.x] = v;
}

__global__ void shuffle_naming_exited_lane(int *out)
{
    if (threadIdx.x >= 16) return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

__global__ void warp_intrinsics(int *out)
{
    unsigned lane = threadIdx.x % 32;
    int v = (int)threadIdx.x;
    out[threadIdx.x * 8 + 0] = __shfl_sync(0xffffffffu, v, 3);
    out[threadIdx.x * 8 + 1] = __shfl_up_sync(0xffffffffu, v, 2);
    out[threadIdx.x * 8 + 2] = __shfl_down_sync(0xffffffffu, v, 2, 8);
    out[threadIdx.x * 8 + 3] = __shfl_xor_sync(0xffffffffu, v, 5);
    out[threadIdx.x * 8 + 4] = (int)__ballot_sync(0xffffffffu, lane % 3 == 0);
    out[threadIdx.x * 8 + 5] = __any_sync(0xffffffffu, lane == 7);
    out[threadIdx.x * 8 + 6] = __all_sync(0xffffffffu, lane < 31);
    __syncwarp();
    long long big = (long long)v << 40;
    out[threadIdx.x * 8 + 7] = (int)(__shfl_down_sync(0xffffffffu, big, 1) >> 40);
}

__global__ void first_negative(const int *x, int n, unsigned long long *first)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n && x[k] < 0) atomicMin(first, (unsigned long long)k);
}

__global__ void add_one(float *x, int n)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) x[k] += 1.0f;
}

__global__ void read_one_past(const float *x, int n, float *out)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k <= n + 1024) out[0] = x[k]; /* runs past the allocation into its guard page */
}

__global__ void trap_in_block_two(int *out)
{
    if (blockIdx.x == 2 && threadIdx.x == 5) __trap();
    out[blockIdx.x] = 1;
}

__global__ void empty_kernel() {}

} // namespace emu_test

using namespace emu_test;

namespace {

template <typename... P>
cudaError_t launch(void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t stream, P... args)
{
    void *ptrs[sizeof...(P) + 1] = {&args...};
    return cudaLaunchKernel(kernel, grid, block, ptrs, 0, stream);
}

std::vector<double> run_row_sums(gpurnn_emu::Schedule schedule, int rows, int cols)
{
    gpurnn_emu::set_schedule(schedule, 7);
    std::vector<double> host((size_t)rows * cols), out(rows);
    for (size_t i = 0; i < host.size(); i++) host[i] = 1.0 / (1 + (double)(i % 97)) * ((i % 5) ? 1 : -3);
    double *x = nullptr, *sums = nullptr;
    EXPECT_EQ(cudaSuccess, cudaMalloc((void **)&x, host.size() * sizeof(double)));
    EXPECT_EQ(cudaSuccess, cudaMalloc((void **)&sums, rows * sizeof(double)));
    EXPECT_EQ(cudaSuccess, cudaMemcpy(x, host.data(), host.size() * sizeof(double), cudaMemcpyHostToDevice));
    EXPECT_EQ(cudaSuccess, launch(row_sums<double>, dim3(rows), dim3(kThreads), nullptr, (const double *)x, cols, sums));
    EXPECT_EQ(cudaSuccess, cudaMemcpy(out.data(), sums, rows * sizeof(double), cudaMemcpyDeviceToHost));
    cudaFree(x);
    cudaFree(sums);
    return out;
}

/* The tree order of block_sum, on the host. */
double reference_row_sum(const std::vector<double> &v)
{
    double lanes[kThreads];
    for (int t = 0; t < kThreads; t++) {
        lanes[t] = 0;
        for (size_t c = t; c < v.size(); c += kThreads) lanes[t] += v[c];
    }
    double warp_sums[32] = {};
    for (int w = 0; w < kThreads / 32; w++) {
        double *l = lanes + w * 32;
        for (int offset = 16; offset > 0; offset /= 2)
            for (int i = 0; i < 32; i++) l[i] += i + offset < 32 ? l[i + offset] : l[i];
        warp_sums[w] = l[0];
    }
    for (int offset = 16; offset > 0; offset /= 2)
        for (int i = 0; i < 32; i++) warp_sums[i] += i + offset < 32 ? warp_sums[i + offset] : warp_sums[i];
    return warp_sums[0];
}

} // namespace

TEST_F(EmulatorTest, BlockSumIsExactUnderEverySchedule)
{
    const int rows = 5, cols = 1000;
    for (auto schedule : {gpurnn_emu::Schedule::kForward, gpurnn_emu::Schedule::kReverse, gpurnn_emu::Schedule::kShuffle}) {
        std::vector<double> out = run_row_sums(schedule, rows, cols);
        for (int r = 0; r < rows; r++) {
            std::vector<double> row(cols);
            for (int c = 0; c < cols; c++) {
                size_t i = (size_t)r * cols + c;
                row[c] = 1.0 / (1 + (double)(i % 97)) * ((i % 5) ? 1 : -3);
            }
            EXPECT_EQ(reference_row_sum(row), out[r]) << "row " << r << " schedule " << (int)schedule;
        }
    }
}

TEST_F(EmulatorTest, MissingBarrierDependsOnSchedule)
{
    int *d = nullptr;
    CUDA_OK(cudaMalloc((void **)&d, kThreads * sizeof(int)));
    std::vector<int> forward(kThreads), reverse(kThreads);
    gpurnn_emu::set_schedule(gpurnn_emu::Schedule::kForward, 1);
    CUDA_OK(launch(neighbour_without_barrier, dim3(1), dim3(kThreads), nullptr, d));
    CUDA_OK(cudaMemcpy(forward.data(), d, kThreads * sizeof(int), cudaMemcpyDeviceToHost));
    gpurnn_emu::set_schedule(gpurnn_emu::Schedule::kReverse, 1);
    CUDA_OK(launch(neighbour_without_barrier, dim3(1), dim3(kThreads), nullptr, d));
    CUDA_OK(cudaMemcpy(reverse.data(), d, kThreads * sizeof(int), cudaMemcpyDeviceToHost));
    EXPECT_NE(forward, reverse);
    EXPECT_EQ(-1, forward[0]);  /* thread 1 had not written yet: poison */
    EXPECT_EQ(1, reverse[0]);
    cudaFree(d);
}

TEST_F(EmulatorTest, SharedMemoryIsPoisonedPerBlock)
{
    double *d = nullptr;
    CUDA_OK(cudaMalloc((void **)&d, 3 * sizeof(double)));
    CUDA_OK(launch(read_shared_before_write, dim3(3), dim3(64), nullptr, d));
    double out[3];
    CUDA_OK(cudaMemcpy(out, d, sizeof out, cudaMemcpyDeviceToHost));
    for (double v : out) EXPECT_TRUE(isnan(v));
    cudaFree(d);
}

TEST_F(EmulatorTest, WarpIntrinsicsHaveTheRealSemantics)
{
    int *d = nullptr;
    CUDA_OK(cudaMalloc((void **)&d, 64 * 8 * sizeof(int)));
    CUDA_OK(launch(warp_intrinsics, dim3(1), dim3(64), nullptr, d));
    std::vector<int> out(64 * 8);
    CUDA_OK(cudaMemcpy(out.data(), d, out.size() * sizeof(int), cudaMemcpyDeviceToHost));
    unsigned ballot = 0;
    for (unsigned l = 0; l < 32; l++)
        if (l % 3 == 0) ballot |= 1u << l;
    for (int t = 0; t < 64; t++) {
        int lane = t % 32, base = t - lane;
        const int *o = &out[t * 8];
        EXPECT_EQ(base + 3, o[0]) << t;
        EXPECT_EQ(lane >= 2 ? t - 2 : t, o[1]) << t;
        EXPECT_EQ((lane % 8) + 2 < 8 ? t + 2 : t, o[2]) << t;
        EXPECT_EQ(base + (lane ^ 5), o[3]) << t;
        EXPECT_EQ((int)ballot, o[4]) << t;
        EXPECT_EQ(1, o[5]) << t;
        EXPECT_EQ(0, o[6]) << t;
        EXPECT_EQ(lane < 31 ? t + 1 : t, o[7]) << t;
    }
    cudaFree(d);
}

TEST_F(EmulatorTest, AtomicMinOnUnsignedLongLong)
{
    std::vector<int> host(1000, 1);
    host[700] = host[333] = host[999] = -1;
    int *x;
    unsigned long long *first, result = 0;
    CUDA_OK(cudaMalloc((void **)&x, host.size() * sizeof(int)));
    CUDA_OK(cudaMalloc((void **)&first, sizeof *first));
    CUDA_OK(cudaMemcpy(x, host.data(), host.size() * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemset(first, 0xFF, sizeof *first));
    CUDA_OK(launch(first_negative, dim3(4), dim3(256), nullptr, (const int *)x, 1000, first));
    CUDA_OK(cudaMemcpy(&result, first, sizeof result, cudaMemcpyDeviceToHost));
    EXPECT_EQ(333u, result);
    cudaFree(x);
    cudaFree(first);
}

TEST_F(EmulatorTest, LaunchOverLimitsIsInvalidConfiguration)
{
    void *args[] = {nullptr};
    EXPECT_EQ(cudaErrorInvalidConfiguration, cudaLaunchKernel(empty_kernel, dim3(1), dim3(1025), args));
    EXPECT_EQ(cudaErrorInvalidConfiguration, cudaGetLastError());
    EXPECT_EQ(cudaSuccess, cudaGetLastError()); /* not sticky */
    EXPECT_EQ(cudaErrorInvalidConfiguration, cudaLaunchKernel(empty_kernel, dim3(1), dim3(1, 1, 65), args));
    EXPECT_EQ(cudaErrorInvalidConfiguration, cudaLaunchKernel(empty_kernel, dim3(1, 65536), dim3(32), args));
    EXPECT_EQ(cudaErrorInvalidConfiguration, cudaLaunchKernel(empty_kernel, dim3(0), dim3(32), args));
    EXPECT_EQ(cudaErrorInvalidValue, cudaLaunchKernel(empty_kernel, dim3(1), dim3(32), args, 49 * 1024));
    (void)cudaGetLastError();
    EXPECT_EQ(cudaSuccess, cudaLaunchKernel(empty_kernel, dim3(1), dim3(1024), args));
    EXPECT_EQ(cudaSuccess, cudaDeviceSynchronize());
}

TEST_F(EmulatorTest, StreamOrderAndPoisonedPinnedDestination)
{
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    const int n = 1000;
    float *d, *pinned;
    CUDA_OK(cudaMalloc((void **)&d, n * sizeof(float)));
    CUDA_OK(cudaMallocHost((void **)&pinned, n * sizeof(float)));
    for (int i = 0; i < n; i++) pinned[i] = 5;
    CUDA_OK(cudaMemsetAsync(d, 0, n * sizeof(float), s));
    CUDA_OK(launch(add_one, dim3((n + 255) / 256), dim3(256), s, d, n));
    CUDA_OK(cudaMemcpyAsync(pinned, d, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    EXPECT_TRUE(isnan(pinned[0])); /* poisoned until the stream is synchronised */
    EXPECT_TRUE(isnan(pinned[n - 1]));
    CUDA_OK(cudaStreamSynchronize(s));
    for (int i = 0; i < n; i++) ASSERT_EQ(1.0f, pinned[i]) << i;
    /* A pinned source is read when the copy runs, not at the call. */
    for (int i = 0; i < n; i++) pinned[i] = 2;
    CUDA_OK(cudaMemcpyAsync(d, pinned, n * sizeof(float), cudaMemcpyHostToDevice, s));
    for (int i = 0; i < n; i++) pinned[i] = 3;
    std::vector<float> back(n);
    CUDA_OK(cudaMemcpyAsync(back.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost, s)); /* pageable: syncs */
    EXPECT_EQ(3.0f, back[0]);
    CUDA_OK(cudaFreeHost(pinned));
    CUDA_OK(cudaFree(d));
    CUDA_OK(cudaStreamDestroy(s));
}

TEST_F(EmulatorTest, EventsAndWaits)
{
    cudaStream_t a, b;
    cudaEvent_t e0, e1;
    CUDA_OK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
    CUDA_OK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
    CUDA_OK(cudaEventCreate(&e0));
    CUDA_OK(cudaEventCreate(&e1));
    float *d;
    CUDA_OK(cudaMalloc((void **)&d, 256 * sizeof(float)));
    CUDA_OK(cudaEventRecord(e0, a));
    CUDA_OK(cudaMemsetAsync(d, 0, 256 * sizeof(float), a));
    CUDA_OK(cudaEventRecord(e1, a));
    EXPECT_EQ(cudaErrorNotReady, cudaEventQuery(e1));
    CUDA_OK(cudaStreamWaitEvent(b, e1, 0));
    CUDA_OK(launch(add_one, dim3(1), dim3(256), b, d, 256));
    CUDA_OK(cudaStreamSynchronize(b)); /* runs a's memset first */
    EXPECT_EQ(cudaSuccess, cudaEventQuery(e1));
    float ms = -1;
    CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
    EXPECT_GE(ms, 0);
    float out[256];
    CUDA_OK(cudaMemcpy(out, d, sizeof out, cudaMemcpyDeviceToHost));
    EXPECT_EQ(1.0f, out[255]);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
    cudaFree(d);
}

TEST_F(EmulatorTest, ConcurrentThreadsWithTheirOwnStreams)
{
    const int rows = 64, cols = 700;
    std::vector<double> expected = run_row_sums(gpurnn_emu::Schedule::kShuffle, rows, cols);
    std::vector<std::vector<double>> results(4);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([&, t] {
            cudaStream_t s;
            cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
            std::vector<double> host((size_t)rows * cols), out(rows);
            for (size_t i = 0; i < host.size(); i++) host[i] = 1.0 / (1 + (double)(i % 97)) * ((i % 5) ? 1 : -3);
            double *x, *sums;
            cudaMalloc((void **)&x, host.size() * sizeof(double));
            cudaMalloc((void **)&sums, rows * sizeof(double));
            for (int rep = 0; rep < 5; rep++) {
                cudaMemcpyAsync(x, host.data(), host.size() * sizeof(double), cudaMemcpyHostToDevice, s);
                const double *cx = x;
                int c = cols;
                void *args[] = {&cx, &c, &sums};
                cudaLaunchKernel(row_sums<double>, dim3(rows), dim3(kThreads), args, 0, s);
                cudaMemcpyAsync(out.data(), sums, rows * sizeof(double), cudaMemcpyDeviceToHost, s);
            }
            cudaStreamSynchronize(s);
            results[t] = out;
            cudaFree(x);
            cudaFree(sums);
            cudaStreamDestroy(s);
        });
    }
    for (auto &th : threads) th.join();
    for (auto &r : results) EXPECT_EQ(expected, r);
}

TEST_F(EmulatorTest, TrapIsStickyLaunchFailure)
{
    EXPECT_EXIT(
        ([] {
            int *d;
            if (cudaMalloc((void **)&d, 8 * sizeof(int)) != cudaSuccess) exit(2);
            if (launch(trap_in_block_two, dim3(8), dim3(32), nullptr, d) != cudaSuccess) exit(3);
            if (cudaDeviceSynchronize() != cudaErrorLaunchFailure) exit(4);
            if (cudaGetLastError() != cudaErrorLaunchFailure) exit(5);
            if (cudaGetLastError() != cudaErrorLaunchFailure) exit(6); /* sticky */
            void *p;
            if (cudaMalloc(&p, 16) != cudaErrorLaunchFailure) exit(7);
            exit(0);
        })(),
        ::testing::ExitedWithCode(0), "__trap\\(\\) at .*kernels_test.cc");
}

/* ---- diagnostics ---- */

TEST_F(EmulatorTest, DivergentBarriersAreDiagnosed)
{
    EXPECT_DEATH(
        ([] {
            int *d;
            cudaMalloc((void **)&d, 64 * sizeof(int));
            launch(barrier_in_branch, dim3(1), dim3(64), nullptr, d);
            cudaDeviceSynchronize();
        })(),
        "gpurnn-emu: error: kernel .*barrier_in_branch.*block \\(0,0,0\\), thread .* reached __syncthreads at "
        ".*kernels_test.cc:[0-9]+ while .* wait at __syncthreads at .*kernels_test.cc:[0-9]+: divergent barriers");
}

TEST_F(EmulatorTest, EarlyExitBeforeBarrierIsDiagnosed)
{
    EXPECT_DEATH(
        ([] {
            int *d;
            cudaMalloc((void **)&d, 64 * sizeof(int));
            launch(early_exit_then_barrier, dim3(1), dim3(64), nullptr, 40, d);
            cudaDeviceSynchronize();
        })(),
        "gpurnn-emu: error: kernel .*early_exit_then_barrier.* (exited while|have exited).*barrier can never complete");
}

TEST_F(EmulatorTest, ShuffleFromInactiveLaneIsDiagnosed)
{
    EXPECT_DEATH(
        ([] {
            int *d;
            cudaMalloc((void **)&d, 32 * sizeof(int));
            launch(shuffle_from_inactive_lane, dim3(1), dim3(32), nullptr, d);
            cudaDeviceSynchronize();
        })(),
        "gpurnn-emu: error: kernel .*shuffle_from_inactive_lane.*__shfl_down_sync at .*mask 0x0000ffff.* reads lane "
        "1[6-9].*not in the mask");
}

TEST_F(EmulatorTest, ShuffleNamingExitedLaneIsDiagnosed)
{
    EXPECT_DEATH(
        ([] {
            int *d;
            cudaMalloc((void **)&d, 32 * sizeof(int));
            launch(shuffle_naming_exited_lane, dim3(1), dim3(32), nullptr, d);
            cudaDeviceSynchronize();
        })(),
        "gpurnn-emu: error: kernel .*shuffle_naming_exited_lane.*(has exited|exited while lane)");
}

TEST_F(EmulatorTest, KernelReadPastAllocationIsDiagnosed)
{
    EXPECT_DEATH(
        ([] {
            float *x, *out;
            cudaMalloc((void **)&x, 1000 * sizeof(float));
            cudaMalloc((void **)&out, sizeof(float));
            launch(read_one_past, dim3(16), dim3(256), nullptr, (const float *)x, 1000, out);
            cudaDeviceSynchronize();
        })(),
        "gpurnn-emu: error: kernel .*read_one_past.*block \\([0-9]+,0,0\\), thread \\([0-9]+,0,0\\) "
        "accessed offset [0-9]+ of device allocation #[0-9]+ \\(4000 bytes.*past its end");
}
