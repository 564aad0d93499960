/* Device memory: host dereference faults with a diagnostic, capacity limit, API misuse. */
#include <vector>

#include "test_support.h"

TEST_F(EmulatorTest, HostDereferenceOfDevicePointerNamesTheAllocation)
{
    EXPECT_DEATH(([] {
                     float *d;
                     cudaMalloc((void **)&d, 1024 * sizeof(float));
                     volatile float v = d[10];
                     (void)v;
                 })(),
                 "gpurnn-emu: error: host access to device allocation #[0-9]+ \\(4096 bytes at 0x[0-9a-f]+, allocated "
                 "by .*\\) at offset 40");
}

TEST_F(EmulatorTest, DeviceMemoryLimit)
{
    gpurnn_emu::set_device_memory((size_t)64 << 20);
    size_t free_bytes = 0, total = 0;
    CUDA_OK(cudaMemGetInfo(&free_bytes, &total));
    EXPECT_EQ((size_t)64 << 20, total);
    void *a = nullptr, *b = nullptr;
    CUDA_OK(cudaMalloc(&a, (size_t)40 << 20));
    EXPECT_EQ(cudaErrorMemoryAllocation, cudaMalloc(&b, (size_t)40 << 20));
    EXPECT_EQ(cudaErrorMemoryAllocation, cudaGetLastError());
    CUDA_OK(cudaFree(a));
    CUDA_OK(cudaMalloc(&b, (size_t)40 << 20));
    CUDA_OK(cudaFree(b));
    gpurnn_emu::set_device_memory((size_t)80 << 30);
    /* H100-sized allocations only reserve address space. */
    CUDA_OK(cudaMalloc(&a, (size_t)60 << 30));
    CUDA_OK(cudaFree(a));
}

TEST_F(EmulatorTest, AllocationsAre256ByteAlignedAndPoisoned)
{
    for (size_t size : {1, 255, 256, 1000, 4096, 100000}) {
        unsigned char *d;
        CUDA_OK(cudaMalloc((void **)&d, size));
        EXPECT_EQ(0u, (uintptr_t)d % 256);
        std::vector<unsigned char> host(size);
        CUDA_OK(cudaMemcpy(host.data(), d, size, cudaMemcpyDeviceToHost));
        for (unsigned char c : host) ASSERT_EQ(0xFF, c);
        CUDA_OK(cudaFree(d));
    }
}

TEST_F(EmulatorTest, CopyKindMustMatchThePointers)
{
    float *d, host[4] = {};
    CUDA_OK(cudaMalloc((void **)&d, sizeof host));
    EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(host, d, sizeof host, cudaMemcpyHostToDevice));
    EXPECT_EQ(cudaErrorInvalidValue, cudaMemcpy(d, host, sizeof host, cudaMemcpyDeviceToHost));
    EXPECT_EQ(cudaErrorInvalidValue, cudaMemset(host, 0, sizeof host));
    CUDA_OK(cudaMemcpy(d, host, sizeof host, cudaMemcpyDefault));
    (void)cudaGetLastError();
    CUDA_OK(cudaFree(d));
    EXPECT_EQ(cudaErrorInvalidValue, cudaFree(d)); /* double free */
    EXPECT_EQ(cudaErrorInvalidValue, cudaFreeHost(host));
    (void)cudaGetLastError();
}

TEST_F(EmulatorTest, CopyPastAllocationIsDiagnosed)
{
    EXPECT_DEATH(([] {
                     float *d, host[300] = {};
                     cudaMalloc((void **)&d, 256 * sizeof(float));
                     cudaMemcpy(d, host, sizeof host, cudaMemcpyHostToDevice);
                 })(),
                 "gpurnn-emu: error: cudaMemcpy destination: 1200 bytes at offset 0 of device allocation #[0-9]+ "
                 "\\(1024 bytes.* run 176 bytes past its end");
}

namespace {
__global__ void write_in_slack(unsigned char *p, int n) { p[n + 3] = 0; }
}

TEST_F(EmulatorTest, KernelWriteIntoSlackIsDiagnosedAtSync)
{
    EXPECT_DEATH(([] {
                     unsigned char *d;
                     cudaMalloc((void **)&d, 1000);
                     int n = 1000;
                     void *args[] = {&d, &n};
                     cudaLaunchKernel(write_in_slack, dim3(1), dim3(1), args);
                     cudaDeviceSynchronize();
                 })(),
                 "gpurnn-emu: error: device work wrote past the end of device allocation #[0-9]+ \\(1000 bytes.*4 "
                 "bytes past the end.*detected at cudaDeviceSynchronize");
}

TEST_F(EmulatorTest, DeviceQueries)
{
    int count = 0, value = 0;
    CUDA_OK(cudaGetDeviceCount(&count));
    EXPECT_EQ(1, count);
    CUDA_OK(cudaDeviceGetAttribute(&value, cudaDevAttrComputeCapabilityMajor, 0));
    EXPECT_EQ(9, value);
    CUDA_OK(cudaDeviceGetAttribute(&value, cudaDevAttrMultiProcessorCount, 0));
    EXPECT_EQ(132, value);
    cudaDeviceProp prop;
    CUDA_OK(cudaGetDeviceProperties(&prop, 0));
    EXPECT_EQ(1024, prop.maxThreadsPerBlock);
    EXPECT_EQ(65535, prop.maxGridSize[1]);
    EXPECT_EQ(cudaErrorInvalidDevice, cudaSetDevice(1));
    (void)cudaGetLastError();
    EXPECT_STREQ("cudaErrorInvalidConfiguration", cudaGetErrorName(cudaErrorInvalidConfiguration));
}

/* In stream order a queued copy from a pinned buffer reads it before a later copy into
 * that buffer writes it: poisoning the buffer for the later copy must not change what the
 * earlier one reads (a real GPU gives 42 here). */
TEST_F(EmulatorTest, QueuedReadOfAPinnedBufferPrecedesALaterCopyIntoIt)
{
    int *pinned = nullptr, *a = nullptr, *b = nullptr;
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CUDA_OK(cudaMallocHost((void **)&pinned, sizeof(int)));
    CUDA_OK(cudaMalloc((void **)&a, sizeof(int)));
    CUDA_OK(cudaMalloc((void **)&b, sizeof(int)));
    CUDA_OK(cudaMemsetAsync(b, 0, sizeof(int), s));
    *pinned = 42;
    CUDA_OK(cudaMemcpyAsync(a, pinned, sizeof(int), cudaMemcpyHostToDevice, s));
    CUDA_OK(cudaMemcpyAsync(pinned, b, sizeof(int), cudaMemcpyDeviceToHost, s));
    CUDA_OK(cudaMemcpyAsync(pinned, a, sizeof(int), cudaMemcpyDeviceToHost, s));
    CUDA_OK(cudaStreamSynchronize(s));
    EXPECT_EQ(*pinned, 42);
    CUDA_OK(cudaFree(a));
    CUDA_OK(cudaFree(b));
    CUDA_OK(cudaFreeHost(pinned));
    CUDA_OK(cudaStreamDestroy(s));
}
