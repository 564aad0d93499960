/* Every CUDA runtime and cuBLAS call of the backend goes through these: a failure becomes
 * a status with a message naming the call and the reason, and the function returns it.
 * Nothing here exits or prints. */
#ifndef GPURNN_CUDA_CHECK_H
#define GPURNN_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "../alloc.h"
#include "../error.h"

static inline gpurnn_status gpurnn_cuda_status(cudaError_t err, const char *call)
{
    /* Reset the runtime's last-error slot so later calls are judged on their own. */
    (void)cudaGetLastError();
    gpurnn_status s = (err == cudaErrorMemoryAllocation) ? GPURNN_ERR_OUT_OF_MEMORY : GPURNN_ERR_CUDA;
    return gpurnn_fail(s, "%s failed: %s (%s)", call, cudaGetErrorString(err), cudaGetErrorName(err));
}

static inline const char *gpurnn_cublas_error_name(cublasStatus_t st)
{
    switch (st) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "unknown cuBLAS status";
    }
}

static inline gpurnn_status gpurnn_cublas_status(cublasStatus_t st, const char *call)
{
    gpurnn_status s = st == CUBLAS_STATUS_ALLOC_FAILED ? GPURNN_ERR_OUT_OF_MEMORY : GPURNN_ERR_CUDA;
    return gpurnn_fail(s, "%s failed: %s (%d)", call, gpurnn_cublas_error_name(st), (int)st);
}

/* Test-only fault injection (src/alloc.h): when the thread's device-call countdown says so,
 * the call is not made and fails as cudaErrorUnknown / CUBLAS_STATUS_EXECUTION_FAILED, and
 * a launch that was made is reported as cudaErrorLaunchFailure. Disarmed, it costs one
 * thread-local read. */
#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t cuda_try_err_ = gpurnn_fault_device_call() ? cudaErrorUnknown : (call);        \
        if (cuda_try_err_ != cudaSuccess) return gpurnn_cuda_status(cuda_try_err_, #call);        \
    } while (0)

#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t cublas_try_st_ =                                                            \
            gpurnn_fault_device_call() ? CUBLAS_STATUS_EXECUTION_FAILED : (call);                  \
        if (cublas_try_st_ != CUBLAS_STATUS_SUCCESS)                                               \
            return gpurnn_cublas_status(cublas_try_st_, #call);                                    \
    } while (0)

/* Around a kernel launch (launch.cuh): a bad configuration is the launch's own error, a
 * fault in the kernel shows up at the next synchronisation. */
#define CUDA_TRY_LAUNCH(launch_call, kernel_name)                                                  \
    do {                                                                                           \
        cudaError_t cuda_launch_err_ = (launch_call);                                              \
        if (cuda_launch_err_ == cudaSuccess && gpurnn_fault_device_call())                         \
            cuda_launch_err_ = cudaErrorLaunchFailure;                                             \
        if (cuda_launch_err_ != cudaSuccess)                                                       \
            return gpurnn_cuda_status(cuda_launch_err_, "launch of " kernel_name);                 \
    } while (0)

#define GPURNN_TRY(expr)                                                                           \
    do {                                                                                           \
        gpurnn_status gpurnn_try_s_ = (expr);                                                      \
        if (gpurnn_try_s_ != GPURNN_OK) return gpurnn_try_s_;                                     \
    } while (0)

#endif
