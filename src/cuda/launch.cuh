/* Kernel launches through cudaLaunchKernel, the runtime's launch API, rather than <<<>>>:
 * the device emulator (tests/emulator) implements the same call as a host C++ template,
 * so this backend's sources compile unchanged for a GPU (nvcc) and for the emulator (a
 * host compiler), and the emulator sees each kernel's parameter types. */
#ifndef GPURNN_CUDA_LAUNCH_CUH
#define GPURNN_CUDA_LAUNCH_CUH

#include <cuda_runtime.h>

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace gpurnn {

template <typename... Params, typename Values, size_t... I>
cudaError_t launch_values(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                          cudaStream_t stream, Values &values, std::index_sequence<I...>)
{
    void *arguments[sizeof...(Params) + 1] = {static_cast<void *>(&std::get<I>(values))...};
    return cudaLaunchKernel(kernel, grid, block, arguments, shared_bytes, stream);
}

/* kernel<<<grid, block, shared_bytes, stream>>>(args...): each argument is converted to the
 * kernel's parameter type first, as a <<<>>> launch converts it; cudaLaunchKernel copies the
 * values before it returns. The result is the launch's error (configuration, resources). */
template <typename... Params, typename... Args>
cudaError_t launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                   Args &&...args)
{
    static_assert(sizeof...(Params) == sizeof...(Args), "a kernel launch needs one argument per parameter");
    std::tuple<std::decay_t<Params>...> values(static_cast<std::decay_t<Params>>(std::forward<Args>(args))...);
    return launch_values(kernel, grid, block, shared_bytes, stream, values, std::index_sequence_for<Params...>());
}

} // namespace gpurnn

#endif
