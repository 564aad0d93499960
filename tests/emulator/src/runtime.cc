/* The device's identity and limits (an H100 SXM, sm_90), error reporting with the real
 * runtime's sticky-error rules, and device selection. */
#include <stdio.h>
#include <string.h>

#include <atomic>
#include <mutex>

#include "internal.h"

namespace gpurnn_emu {
namespace detail {
namespace {

/* Per host thread, as the real runtime's last-error slot. */
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local int t_device = 0;
/* A kernel fault (here: __trap) corrupts the context for the whole process. */
std::atomic<int> g_sticky{cudaSuccess};

} // namespace

cudaError_t runtime_entry()
{
    static std::once_flag once;
    std::call_once(once, [] {
        install_fault_handler();
        set_schedule_from_environment();
    });
    return sticky_error();
}

cudaError_t record_error(cudaError_t err)
{
    if (err != cudaSuccess) t_last_error = err;
    return err;
}

void set_sticky_error(cudaError_t err) { g_sticky.store(err); }
cudaError_t sticky_error() { return (cudaError_t)g_sticky.load(); }

const char *error_name(cudaError_t err)
{
    switch (err) {
#define GPURNN_EMU_NAME(e) case e: return #e;
        GPURNN_EMU_NAME(cudaSuccess)
        GPURNN_EMU_NAME(cudaErrorInvalidValue)
        GPURNN_EMU_NAME(cudaErrorMemoryAllocation)
        GPURNN_EMU_NAME(cudaErrorInitializationError)
        GPURNN_EMU_NAME(cudaErrorCudartUnloading)
        GPURNN_EMU_NAME(cudaErrorInvalidConfiguration)
        GPURNN_EMU_NAME(cudaErrorInvalidPitchValue)
        GPURNN_EMU_NAME(cudaErrorInvalidSymbol)
        GPURNN_EMU_NAME(cudaErrorInvalidDevicePointer)
        GPURNN_EMU_NAME(cudaErrorInvalidMemcpyDirection)
        GPURNN_EMU_NAME(cudaErrorInsufficientDriver)
        GPURNN_EMU_NAME(cudaErrorInvalidDeviceFunction)
        GPURNN_EMU_NAME(cudaErrorNoDevice)
        GPURNN_EMU_NAME(cudaErrorInvalidDevice)
        GPURNN_EMU_NAME(cudaErrorInvalidResourceHandle)
        GPURNN_EMU_NAME(cudaErrorNotReady)
        GPURNN_EMU_NAME(cudaErrorIllegalAddress)
        GPURNN_EMU_NAME(cudaErrorLaunchOutOfResources)
        GPURNN_EMU_NAME(cudaErrorAssert)
        GPURNN_EMU_NAME(cudaErrorLaunchFailure)
        GPURNN_EMU_NAME(cudaErrorUnknown)
#undef GPURNN_EMU_NAME
    }
    return "cudaErrorUnknown";
}

} // namespace detail
} // namespace gpurnn_emu

using namespace gpurnn_emu::detail;

namespace {

/* H100 SXM5 (sm_90). */
constexpr int kMaxThreadsPerBlock = 1024;
constexpr int kMaxBlockDim[3] = {1024, 1024, 64};
constexpr int kMaxGridDim[3] = {2147483647, 65535, 65535};
constexpr size_t kSharedPerBlock = 48 * 1024;
constexpr size_t kSharedPerBlockOptin = 227 * 1024;
constexpr int kMultiprocessors = 132;

bool valid_device(int device) { return device == 0; }

} // namespace

extern "C" cudaError_t cudaGetDeviceCount(int *count)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (count == nullptr) return record_error(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetDevice(int *device)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (device == nullptr) return record_error(cudaErrorInvalidValue);
    *device = t_device;
    return cudaSuccess;
}

extern "C" cudaError_t cudaSetDevice(int device)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_device(device)) return record_error(cudaErrorInvalidDevice);
    t_device = device;
    return cudaSuccess;
}

extern "C" cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (value == nullptr) return record_error(cudaErrorInvalidValue);
    if (!valid_device(device)) return record_error(cudaErrorInvalidDevice);
    switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = kMaxThreadsPerBlock; break;
    case cudaDevAttrMaxBlockDimX: *value = kMaxBlockDim[0]; break;
    case cudaDevAttrMaxBlockDimY: *value = kMaxBlockDim[1]; break;
    case cudaDevAttrMaxBlockDimZ: *value = kMaxBlockDim[2]; break;
    case cudaDevAttrMaxGridDimX: *value = kMaxGridDim[0]; break;
    case cudaDevAttrMaxGridDimY: *value = kMaxGridDim[1]; break;
    case cudaDevAttrMaxGridDimZ: *value = kMaxGridDim[2]; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = (int)kSharedPerBlock; break;
    case cudaDevAttrTotalConstantMemory: *value = 65536; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMaxRegistersPerBlock: *value = 65536; break;
    case cudaDevAttrClockRate: *value = 1980000; break;
    case cudaDevAttrMultiProcessorCount: *value = kMultiprocessors; break;
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = (int)kSharedPerBlockOptin; break;
    default:
        report("cudaDeviceGetAttribute: attribute %d is not emulated", (int)attr);
        return record_error(cudaErrorInvalidValue);
    }
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (prop == nullptr) return record_error(cudaErrorInvalidValue);
    if (!valid_device(device)) return record_error(cudaErrorInvalidDevice);
    memset(prop, 0, sizeof *prop);
    snprintf(prop->name, sizeof prop->name, "NVIDIA H100 80GB HBM3 (gpurnn device emulator)");
    prop->totalGlobalMem = device_memory_capacity();
    prop->sharedMemPerBlock = kSharedPerBlock;
    prop->sharedMemPerBlockOptin = kSharedPerBlockOptin;
    prop->sharedMemPerMultiprocessor = 228 * 1024;
    prop->regsPerBlock = 65536;
    prop->regsPerMultiprocessor = 65536;
    prop->warpSize = 32;
    prop->memPitch = 2147483647;
    prop->maxThreadsPerBlock = kMaxThreadsPerBlock;
    prop->maxThreadsPerMultiProcessor = 2048;
    for (int i = 0; i < 3; i++) {
        prop->maxThreadsDim[i] = kMaxBlockDim[i];
        prop->maxGridSize[i] = kMaxGridDim[i];
    }
    prop->totalConstMem = 65536;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = kMultiprocessors;
    prop->l2CacheSize = 50 * 1024 * 1024;
    prop->memoryBusWidth = 5120;
    prop->asyncEngineCount = 3;
    prop->unifiedAddressing = 1;
    prop->concurrentKernels = 1;
    return cudaSuccess;
}

extern "C" cudaError_t cudaGetLastError(void)
{
    runtime_entry();
    if (cudaError_t sticky = sticky_error()) return sticky; /* cannot be cleared */
    cudaError_t err = t_last_error;
    t_last_error = cudaSuccess;
    return err;
}

extern "C" cudaError_t cudaPeekAtLastError(void)
{
    runtime_entry();
    if (cudaError_t sticky = sticky_error()) return sticky;
    return t_last_error;
}

extern "C" const char *cudaGetErrorName(cudaError_t error) { return error_name(error); }

extern "C" const char *cudaGetErrorString(cudaError_t error)
{
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInitializationError: return "initialization error";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidMemcpyDirection: return "invalid copy direction for memcpy";
    case cudaErrorInsufficientDriver: return "CUDA driver version is insufficient for CUDA runtime version";
    case cudaErrorInvalidDeviceFunction: return "invalid device function";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchOutOfResources: return "too many resources requested for launch";
    case cudaErrorAssert: return "device-side assert triggered";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "unknown error";
    }
}

/* Destroys the context as far as the emulator has one: queued work is dropped and the
 * sticky error is cleared. Allocations stay (the emulator's tests free their own). */
extern "C" cudaError_t cudaDeviceReset(void)
{
    runtime_entry();
    discard_all_work();
    set_sticky_error(cudaSuccess);
    t_last_error = cudaSuccess;
    return cudaSuccess;
}
