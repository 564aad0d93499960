/* See bench_device.h. */
#include "bench_device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef GPURNN_BENCH_HAVE_CUDA

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

int bench_cuda_built(void) { return 1; }

#define CUDA_OR_FAIL(call)                                                                    \
    do {                                                                                      \
        cudaError_t err_ = (call);                                                            \
        if (err_ != cudaSuccess) {                                                            \
            snprintf(msg, msg_size, "%s: %s", #call, cudaGetErrorString(err_));               \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)

#define CUBLAS_OR_FAIL(call)                                                                  \
    do {                                                                                      \
        cublasStatus_t st_ = (call);                                                          \
        if (st_ != CUBLAS_STATUS_SUCCESS) {                                                   \
            snprintf(msg, msg_size, "%s: cuBLAS status %d", #call, (int)st_);                 \
            goto fail;                                                                        \
        }                                                                                     \
    } while (0)

int bench_cuda_sync(char *msg, size_t msg_size)
{
    CUDA_OR_FAIL(cudaDeviceSynchronize());
    return 0;
fail:
    return -1;
}

int bench_cuda_meminfo(size_t *free_bytes, size_t *total_bytes, char *msg, size_t msg_size)
{
    CUDA_OR_FAIL(cudaMemGetInfo(free_bytes, total_bytes));
    return 0;
fail:
    return -1;
}

int bench_cuda_device_name(char *name, size_t size, char *msg, size_t msg_size)
{
    int dev = 0;
    struct cudaDeviceProp prop;
    CUDA_OR_FAIL(cudaGetDevice(&dev));
    CUDA_OR_FAIL(cudaGetDeviceProperties(&prop, dev));
    snprintf(name, size, "%s (sm_%d%d)", prop.name, prop.major, prop.minor);
    return 0;
fail:
    return -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int bench_cublas_gemm(int n, int dbl, int reps, double *median_s, double *min_s, double *max_s,
                      char *msg, size_t msg_size)
{
    cublasHandle_t handle = NULL;
    cudaEvent_t start = NULL, stop = NULL;
    void *a = NULL, *b = NULL, *c = NULL;
    double *times = calloc((size_t)(reps > 0 ? reps : 1), sizeof *times);
    size_t elem = dbl ? sizeof(double) : sizeof(float);
    size_t bytes = (size_t)n * (size_t)n * elem;
    int rc = -1;
    if (!times) {
        snprintf(msg, msg_size, "out of host memory");
        return -1;
    }
    CUDA_OR_FAIL(cudaMalloc(&a, bytes));
    CUDA_OR_FAIL(cudaMalloc(&b, bytes));
    CUDA_OR_FAIL(cudaMalloc(&c, bytes));
    /* Small values: the bit pattern 0x3c (about 0.01 as float, 1.4e-18 as double) keeps
     * the products finite. */
    CUDA_OR_FAIL(cudaMemset(a, 0x3c, bytes));
    CUDA_OR_FAIL(cudaMemset(b, 0x3c, bytes));
    CUDA_OR_FAIL(cudaMemset(c, 0, bytes));
    CUBLAS_OR_FAIL(cublasCreate(&handle));
    CUDA_OR_FAIL(cudaEventCreate(&start));
    CUDA_OR_FAIL(cudaEventCreate(&stop));
    for (int r = -2; r < reps; r++) { /* two calls of warm-up */
        CUDA_OR_FAIL(cudaEventRecord(start, 0));
        if (dbl) {
            const double one = 1, zero = 0;
            CUBLAS_OR_FAIL(cublasDgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n,
                                       &zero, c, n));
        } else {
            const float one = 1, zero = 0;
            CUBLAS_OR_FAIL(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a, n, b, n,
                                       &zero, c, n));
        }
        CUDA_OR_FAIL(cudaEventRecord(stop, 0));
        CUDA_OR_FAIL(cudaEventSynchronize(stop));
        float ms = 0;
        CUDA_OR_FAIL(cudaEventElapsedTime(&ms, start, stop));
        if (r >= 0) times[r] = ms * 1e-3;
    }
    qsort(times, (size_t)reps, sizeof *times, cmp_double);
    *median_s = reps % 2 ? times[reps / 2] : 0.5 * (times[reps / 2 - 1] + times[reps / 2]);
    *min_s = times[0];
    *max_s = times[reps - 1];
    rc = 0;
fail:
    if (start) cudaEventDestroy(start);
    if (stop) cudaEventDestroy(stop);
    if (handle) cublasDestroy(handle);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    free(times);
    return rc;
}

#else /* built without CUDA */

int bench_cuda_built(void) { return 0; }

static int not_built(char *msg, size_t msg_size)
{
    snprintf(msg, msg_size, "gpurnn-bench was built without CUDA");
    return -1;
}

int bench_cuda_sync(char *msg, size_t msg_size) { return not_built(msg, msg_size); }

int bench_cuda_meminfo(size_t *free_bytes, size_t *total_bytes, char *msg, size_t msg_size)
{
    (void)free_bytes;
    (void)total_bytes;
    return not_built(msg, msg_size);
}

int bench_cuda_device_name(char *name, size_t size, char *msg, size_t msg_size)
{
    (void)name;
    (void)size;
    return not_built(msg, msg_size);
}

int bench_cublas_gemm(int n, int dbl, int reps, double *median_s, double *min_s, double *max_s,
                      char *msg, size_t msg_size)
{
    (void)n;
    (void)dbl;
    (void)reps;
    (void)median_s;
    (void)min_s;
    (void)max_s;
    return not_built(msg, msg_size);
}

#endif
