/* Device emulator internals shared by its source files (not a public header). */
#ifndef GPURNN_EMU_INTERNAL_H
#define GPURNN_EMU_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include <functional>
#include <string>

#include "cuda_runtime_api.h"
#include "gpurnn_emu/control.h"
#include "gpurnn_emu/launch.h"

#if defined(__SANITIZE_ADDRESS__)
#define GPURNN_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GPURNN_EMU_ASAN 1
#endif
#endif

#ifdef GPURNN_EMU_ASAN
extern "C" void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

namespace gpurnn_emu {
namespace detail {

/* ASan keeps shadow state for fiber stacks it saw in use; a mapping that reuses their
 * addresses must start clean (both when a stack is unmapped and when memory is mapped). */
inline void asan_forget(void *p, size_t bytes)
{
#ifdef GPURNN_EMU_ASAN
    __asan_unpoison_memory_region(p, bytes);
#else
    (void)p;
    (void)bytes;
#endif
}

/* ---- diagnostics.cc ---- */
/* Prints one line "gpurnn-emu: error: <message>" to stderr and aborts: a detected bug. */
[[noreturn]] void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The same line without aborting: API misuse the real runtime answers with an error code. */
void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "note:" lines: things worth knowing that are not bugs of the caller by themselves. */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "function+0x1c (module)" for a code address, demangled where the symbol is known. */
std::string describe_code_address(const void *address);
std::string kernel_name(const KernelBody &body);
/* Installs the SIGSEGV/SIGBUS handler (once per process) and an alternate signal stack
 * for the calling thread (once per thread). */
void install_fault_handler();

/* ---- runtime.cc ---- */
/* Common entry of every runtime call: makes sure the emulator is set up and returns the
 * sticky error (cudaSuccess if none). */
cudaError_t runtime_entry();
/* Records err as the calling thread's last error (unless cudaSuccess) and returns it. */
cudaError_t record_error(cudaError_t err);
void set_sticky_error(cudaError_t err);
cudaError_t sticky_error();
const char *error_name(cudaError_t err);

/* ---- memory.cc ---- */
enum class RangeCheck { kDevice, kNotDevice };
/* For a range the caller says is device memory: kDevice when [p, p + bytes) lies in one
 * allocation; kNotDevice when p is in none (the caller reports the API error); a range that
 * starts in an allocation and runs out of it is a fatal diagnostic naming `what`. */
RangeCheck check_device_range(const void *p, size_t bytes, const char *what);
bool is_device_pointer(const void *p);
bool is_pinned_host_pointer(const void *p);
/* Device work brackets: device memory is readable and writable only between these. */
void begin_device_work();
void end_device_work(const char *sync_point);
void free_all_device_memory_checks(); /* slack checks of every allocation (end_device_work) */
/* For the fault handler: describes a fault at addr if it concerns device memory (writes
 * the message into buf) and returns true; false for a fault that is not the emulator's. */
bool describe_memory_fault(const void *addr, bool in_device_work, char *buf, size_t size);
size_t device_memory_capacity();
void poison_host(void *p, size_t bytes);

/* ---- streams.cc ---- */
/* Enqueues device work on a stream (0 and cudaStreamLegacy: the legacy default stream). */
struct WaitFor {
    unsigned stream_id;
    uint64_t seq;
};
struct Enqueued {
    unsigned stream_id;
    uint64_t seq;
};
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work, const WaitFor *also_after = nullptr,
                    Enqueued *where = nullptr);
void discard_all_work();
/* Runs all device work enqueued so far on one stream / on every stream, under the device
 * lock, and returns the sticky error. */
cudaError_t synchronize_stream(cudaStream_t stream, const char *sync_point);
cudaError_t synchronize_device(const char *sync_point);
bool valid_stream(cudaStream_t stream);

/* ---- fibers.cc ---- */
/* Runs a whole grid on the calling thread (which holds the device lock). */
void run_grid(const KernelBody &body, dim3 grid, dim3 block);
/* For diagnostics: "kernel K, block (x,y,z), thread (x,y,z)" of the emulated thread now
 * running, or "" when none. */
std::string current_thread_description();
/* What device work is running now (for the fault handler): a kernel's name or a copy. */
extern const char *g_current_work;
void set_schedule_from_environment();

} // namespace detail
} // namespace gpurnn_emu

#endif
