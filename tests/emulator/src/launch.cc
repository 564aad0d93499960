/* cudaLaunchKernel's checks and enqueueing. The configuration is judged at the call, as
 * the real runtime does, against sm_90's limits; a bad one is returned (and recorded as
 * the last error) with a diagnostic line, and nothing is queued. */
#include <memory>

#include "internal.h"

namespace gpurnn_emu {
namespace detail {

cudaError_t launch_kernel(const KernelBody &body, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                          bool args_missing)
{
    std::shared_ptr<void> closure(body.closure, body.destroy);
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (body.func == nullptr) {
        report("cudaLaunchKernel: null kernel function");
        return record_error(cudaErrorInvalidDeviceFunction);
    }
    auto name = [&] { return kernel_name(body); }; /* dladdr + demangling: only for reports */
    if (args_missing) {
        report("cudaLaunchKernel(%s): args is null but the kernel has parameters", name().c_str());
        return record_error(cudaErrorInvalidValue);
    }
    unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    const char *problem = nullptr;
    if (grid.x == 0 || grid.y == 0 || grid.z == 0) problem = "a grid dimension is 0";
    else if (block.x == 0 || block.y == 0 || block.z == 0) problem = "a block dimension is 0";
    else if (threads > 1024) problem = "more than 1024 threads per block";
    else if (block.x > 1024 || block.y > 1024 || block.z > 64) problem = "blockDim exceeds (1024, 1024, 64)";
    else if (grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535) problem = "gridDim exceeds (2^31-1, 65535, 65535)";
    if (problem) {
        report("cudaLaunchKernel(%s): invalid configuration grid (%u,%u,%u) block (%u,%u,%u): %s "
               "(cudaErrorInvalidConfiguration)",
               name().c_str(), grid.x, grid.y, grid.z, block.x, block.y, block.z, problem);
        return record_error(cudaErrorInvalidConfiguration);
    }
    if (shared_bytes > 48 * 1024) {
        /* Above 48 KiB a kernel must opt in with cudaFuncSetAttribute, which is not emulated. */
        report("cudaLaunchKernel(%s): %zu bytes of dynamic shared memory exceed the 48 KiB per block available "
               "without opt-in (cudaErrorInvalidValue)",
               name().c_str(), shared_bytes);
        return record_error(cudaErrorInvalidValue);
    }
    if (!valid_stream(stream)) {
        report("cudaLaunchKernel(%s): stream %p is not a live stream", name().c_str(), (void *)stream);
        return record_error(cudaErrorInvalidResourceHandle);
    }
    KernelBody bound = body;
    return record_error(enqueue(stream, [bound, closure, grid, block] { run_grid(bound, grid, block); }));
}

} // namespace detail
} // namespace gpurnn_emu
