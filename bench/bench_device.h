/* What gpurnn-bench asks of the CUDA runtime and cuBLAS directly (device memory, a
 * synchronisation point for timing, the machine's own GEMM rate). Built with CUDA only
 * when the library is (GPURNN_BENCH_HAVE_CUDA); otherwise every call says so. */
#ifndef GPURNN_BENCH_DEVICE_H
#define GPURNN_BENCH_DEVICE_H

#include <stddef.h>

/* 1 when the bench was built with the CUDA runtime. */
int bench_cuda_built(void);

/* Waits for all work on the current device. Returns 0, or -1 with msg filled. */
int bench_cuda_sync(char *msg, size_t msg_size);

/* Free and total device memory of the current device. Returns 0, or -1 with msg. */
int bench_cuda_meminfo(size_t *free_bytes, size_t *total_bytes, char *msg, size_t msg_size);

/* Name of the current device, e.g. "NVIDIA H100 80GB HBM3". Returns 0, or -1 with msg. */
int bench_cuda_device_name(char *name, size_t size, char *msg, size_t msg_size);

/* Times cuBLAS GEMM C = A·B of n×n matrices (f64 when dbl) with the default math mode
 * (no TF32), the median of reps calls after warm-up. Returns 0, or -1 with msg. */
int bench_cublas_gemm(int n, int dbl, int reps, double *median_s, double *min_s, double *max_s,
                      char *msg, size_t msg_size);

#endif
