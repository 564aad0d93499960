/* Device emulator (tests only): what CUDA device code sees, for kernels compiled as host
 * C++. Execution qualifiers vanish; the built-in coordinates read the emulator's record of
 * the thread now running (exactly one emulated thread runs at a time, as a fiber on the
 * OS thread that holds the device lock); barriers, warp shuffles and votes call into the
 * emulator's block scheduler, which may switch fibers. Every function that can switch is
 * out of line, so the compiler reloads threadIdx and shared memory after it. */
#ifndef GPURNN_EMU_DEVICE_H
#define GPURNN_EMU_DEVICE_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#include "../cuda_runtime_api.h"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)

/* Static shared memory. Every __shared__ variable of the program lives in one linker
 * section; the emulator fills the whole section with 0xFF bytes before each block (so a
 * read before the first write sees NaN / -1), and, as function-local statics, the
 * variables are one object shared by all threads of the running block. `used` keeps the
 * compiler from treating a variable whose address is never taken as private to the
 * function (it is written by other fibers across __syncthreads). Dynamic shared memory
 * (extern __shared__) is not supported: `extern static` does not compile. */
#define __shared__ static __attribute__((section("gpurnn_emu_shared"), used))

namespace gpurnn_emu {
namespace detail {

/* The running thread's coordinates: set by the block scheduler before it resumes a fiber. */
extern uint3 g_thread_idx;
extern uint3 g_block_idx;
extern dim3 g_block_dim;
extern dim3 g_grid_dim;

void syncthreads_at(const char *file, int line);
[[noreturn]] void trap_at(const char *file, int line);

enum WarpOp { kWarpShfl, kWarpShflUp, kWarpShflDown, kWarpShflXor, kWarpSync, kWarpBallot, kWarpAny, kWarpAll };

/* One lane's arrival at a warp-level rendezvous: blocks until every lane in mask has
 * arrived at the same operation (same kind, mask and call site), then returns this lane's
 * result (the shuffled bits, or the vote). */
uint64_t warp_op(WarpOp op, const char *file, int line, unsigned mask, uint64_t value, int param, int width);

template <typename T>
inline T warp_shuffle(WarpOp op, const char *file, int line, unsigned mask, T var, int param, int width)
{
    static_assert(std::is_arithmetic<T>::value && sizeof(T) <= 8 && !std::is_same<T, bool>::value,
                  "__shfl*_sync: the emulator supports the integer and floating-point overloads");
    uint64_t bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = warp_op(op, file, line, mask, bits, param, width);
    T result;
    memcpy(&result, &bits, sizeof(T));
    return result;
}

} // namespace detail
} // namespace gpurnn_emu

#define threadIdx (static_cast<const uint3 &>(::gpurnn_emu::detail::g_thread_idx))
#define blockIdx (static_cast<const uint3 &>(::gpurnn_emu::detail::g_block_idx))
#define blockDim (static_cast<const dim3 &>(::gpurnn_emu::detail::g_block_dim))
#define gridDim (static_cast<const dim3 &>(::gpurnn_emu::detail::g_grid_dim))
static constexpr int warpSize = 32;

/* The call site (file:line) goes with every barrier and warp operation, so that the
 * diagnostics can say which __syncthreads a thread is waiting at. */
#define __syncthreads() ::gpurnn_emu::detail::syncthreads_at(__FILE__, __LINE__)
#define __trap() ::gpurnn_emu::detail::trap_at(__FILE__, __LINE__)
#define __syncwarp(...) ::gpurnn_emu::detail::syncwarp_at(__FILE__, __LINE__, ##__VA_ARGS__)
#define __shfl_sync(...) ::gpurnn_emu::detail::shfl_at(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_up_sync(...) ::gpurnn_emu::detail::shfl_up_at(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_down_sync(...) ::gpurnn_emu::detail::shfl_down_at(__FILE__, __LINE__, __VA_ARGS__)
#define __shfl_xor_sync(...) ::gpurnn_emu::detail::shfl_xor_at(__FILE__, __LINE__, __VA_ARGS__)
#define __ballot_sync(...) ::gpurnn_emu::detail::ballot_at(__FILE__, __LINE__, __VA_ARGS__)
#define __any_sync(...) ::gpurnn_emu::detail::any_at(__FILE__, __LINE__, __VA_ARGS__)
#define __all_sync(...) ::gpurnn_emu::detail::all_at(__FILE__, __LINE__, __VA_ARGS__)

namespace gpurnn_emu {
namespace detail {

inline void syncwarp_at(const char *file, int line, unsigned mask = 0xffffffffu)
{
    (void)warp_op(kWarpSync, file, line, mask, 0, 0, 32);
}
template <typename T>
inline T shfl_at(const char *file, int line, unsigned mask, T var, int src_lane, int width = 32)
{
    return warp_shuffle(kWarpShfl, file, line, mask, var, src_lane, width);
}
template <typename T>
inline T shfl_up_at(const char *file, int line, unsigned mask, T var, unsigned delta, int width = 32)
{
    return warp_shuffle(kWarpShflUp, file, line, mask, var, (int)delta, width);
}
template <typename T>
inline T shfl_down_at(const char *file, int line, unsigned mask, T var, unsigned delta, int width = 32)
{
    return warp_shuffle(kWarpShflDown, file, line, mask, var, (int)delta, width);
}
template <typename T>
inline T shfl_xor_at(const char *file, int line, unsigned mask, T var, int lane_mask, int width = 32)
{
    return warp_shuffle(kWarpShflXor, file, line, mask, var, lane_mask, width);
}
inline unsigned ballot_at(const char *file, int line, unsigned mask, int predicate)
{
    return (unsigned)warp_op(kWarpBallot, file, line, mask, predicate != 0, 0, 32);
}
inline int any_at(const char *file, int line, unsigned mask, int predicate)
{
    return (int)warp_op(kWarpAny, file, line, mask, predicate != 0, 0, 32);
}
inline int all_at(const char *file, int line, unsigned mask, int predicate)
{
    return (int)warp_op(kWarpAll, file, line, mask, predicate != 0, 0, 32);
}

} // namespace detail
} // namespace gpurnn_emu

/* Atomics. Emulated threads never preempt each other (a fiber switches only inside a
 * barrier or warp operation), so a plain read-modify-write is atomic here. */
#define GPURNN_EMU_ATOMIC(name, T, expr)                                                           \
    inline T name(T *address, T val)                                                               \
    {                                                                                              \
        T old = *address;                                                                          \
        *address = (expr);                                                                         \
        return old;                                                                                \
    }
GPURNN_EMU_ATOMIC(atomicAdd, int, (int)((unsigned)old + (unsigned)val))
GPURNN_EMU_ATOMIC(atomicAdd, unsigned int, old + val)
GPURNN_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
GPURNN_EMU_ATOMIC(atomicAdd, float, old + val)
GPURNN_EMU_ATOMIC(atomicAdd, double, old + val)
GPURNN_EMU_ATOMIC(atomicSub, int, (int)((unsigned)old - (unsigned)val))
GPURNN_EMU_ATOMIC(atomicSub, unsigned int, old - val)
GPURNN_EMU_ATOMIC(atomicMin, int, val < old ? val : old)
GPURNN_EMU_ATOMIC(atomicMin, unsigned int, val < old ? val : old)
GPURNN_EMU_ATOMIC(atomicMin, long long, val < old ? val : old)
GPURNN_EMU_ATOMIC(atomicMin, unsigned long long, val < old ? val : old)
GPURNN_EMU_ATOMIC(atomicMax, int, val > old ? val : old)
GPURNN_EMU_ATOMIC(atomicMax, unsigned int, val > old ? val : old)
GPURNN_EMU_ATOMIC(atomicMax, long long, val > old ? val : old)
GPURNN_EMU_ATOMIC(atomicMax, unsigned long long, val > old ? val : old)
GPURNN_EMU_ATOMIC(atomicExch, int, val)
GPURNN_EMU_ATOMIC(atomicExch, unsigned int, val)
GPURNN_EMU_ATOMIC(atomicExch, unsigned long long, val)
GPURNN_EMU_ATOMIC(atomicExch, float, val)
GPURNN_EMU_ATOMIC(atomicAnd, int, old & val)
GPURNN_EMU_ATOMIC(atomicAnd, unsigned int, old & val)
GPURNN_EMU_ATOMIC(atomicOr, int, old | val)
GPURNN_EMU_ATOMIC(atomicOr, unsigned int, old | val)
#undef GPURNN_EMU_ATOMIC

#define GPURNN_EMU_ATOMIC_CAS(T)                                                                   \
    inline T atomicCAS(T *address, T compare, T val)                                               \
    {                                                                                              \
        T old = *address;                                                                          \
        if (old == compare) *address = val;                                                        \
        return old;                                                                                \
    }
GPURNN_EMU_ATOMIC_CAS(int)
GPURNN_EMU_ATOMIC_CAS(unsigned int)
GPURNN_EMU_ATOMIC_CAS(unsigned long long)
#undef GPURNN_EMU_ATOMIC_CAS

/* Fences order memory between threads on a GPU; the emulator's threads run one at a time. */
inline void __threadfence() {}
inline void __threadfence_block() {}
template <typename T>
inline T __ldg(const T *p)
{
    return *p;
}
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
inline float __fdividef(float x, float y) { return x / y; }

#endif
