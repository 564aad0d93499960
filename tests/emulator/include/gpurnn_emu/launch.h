/* Device emulator (tests only): cudaLaunchKernel. The runtime's launch API takes the
 * kernel's arguments as an array of pointers; as the real runtime does, the emulator
 * copies each one by its parameter type at call time (so the caller may reuse its
 * variables at once), checks the configuration against sm_90's limits, and enqueues the
 * grid on the stream. `kernel<<<...>>>` is not available: use cudaLaunchKernel. */
#ifndef GPURNN_EMU_LAUNCH_H
#define GPURNN_EMU_LAUNCH_H

#include <stddef.h>

#include <new>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../cuda_runtime_api.h"

namespace gpurnn_emu {
namespace detail {

/* A launch with its arguments bound: run_thread runs the kernel body once for the
 * current emulated thread; destroy frees the closure when the grid is done. */
struct KernelBody {
    const void *func;        /* for the kernel's name in diagnostics */
    const char *signature;   /* __PRETTY_FUNCTION__ of the launching template, as a fallback name */
    void (*run_thread)(void *closure);
    void (*destroy)(void *closure);
    void *closure;
};

cudaError_t launch_kernel(const KernelBody &body, dim3 grid, dim3 block, size_t shared_bytes, cudaStream_t stream,
                          bool args_missing);

template <typename... P>
struct KernelClosure {
    void (*func)(P...);
    std::tuple<typename std::decay<P>::type...> args;

    static void run_thread(void *self)
    {
        KernelClosure *c = static_cast<KernelClosure *>(self);
        /* Each thread gets its own copies of the parameters, as on a GPU. */
        std::apply(c->func, c->args);
    }
    static void destroy(void *self) { delete static_cast<KernelClosure *>(self); }
};

template <typename... P, size_t... I>
std::tuple<typename std::decay<P>::type...> copy_kernel_args(void **args, std::index_sequence<I...>)
{
    return std::tuple<typename std::decay<P>::type...>(
        *static_cast<const typename std::decay<P>::type *>(args[I])...);
}

} // namespace detail
} // namespace gpurnn_emu

template <typename... P>
cudaError_t cudaLaunchKernel(void (*func)(P...), dim3 grid, dim3 block, void **args, size_t shared_bytes = 0,
                             cudaStream_t stream = 0)
{
    using Closure = gpurnn_emu::detail::KernelClosure<P...>;
    bool args_missing = sizeof...(P) > 0 && args == nullptr;
    Closure *closure = nullptr;
    if (func != nullptr && !args_missing) {
        closure = new (std::nothrow) Closure{func, gpurnn_emu::detail::copy_kernel_args<P...>(
                                                       args, std::index_sequence_for<P...>())};
        if (closure == nullptr) return cudaErrorMemoryAllocation;
    }
    gpurnn_emu::detail::KernelBody body = {reinterpret_cast<const void *>(func), __PRETTY_FUNCTION__,
                                           &Closure::run_thread, &Closure::destroy, closure};
    return gpurnn_emu::detail::launch_kernel(body, grid, block, shared_bytes, stream, args_missing);
}

#endif
