/* The library's one host allocator, and its test-only fault injection.
 *
 * Every host allocation of the library goes through gpurnn_malloc / gpurnn_calloc and is
 * released with gpurnn_free (which is free(): memory from these functions may also be
 * given to free() directly). Device and pinned-host allocations of the CUDA backend ask
 * gpurnn_fault_allocation() before they call CUDA, so one countdown covers them all.
 *
 * Fault injection, for tests only (the shared library does not export these names; tests
 * link the static library gpurnn_static). Each countdown is thread-local: arming it on one
 * thread does not affect another thread's calls, and nothing here is shared mutable state.
 *
 *   gpurnn_fault_fail_allocation(n)   the allocation n places from now fails, once
 *                                     (0 = the next one); n < 0 disarms
 *   gpurnn_fault_fail_device_call(n)  the CUDA runtime call, cuBLAS call or kernel launch
 *                                     n places from now fails, once; n < 0 disarms
 *   gpurnn_fault_*_fired()            1 if the armed failure has happened since arming
 */
#ifndef GPURNN_ALLOC_H
#define GPURNN_ALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

void *gpurnn_malloc(size_t bytes);
void *gpurnn_calloc(size_t count, size_t size);
void gpurnn_free(void *p);
/* Zero-filled memory starting at a multiple of align (a power of two, at most 4096),
 * released with gpurnn_aligned_free only. Zero pages stay untouched until used, as with
 * calloc. */
void *gpurnn_aligned_calloc(size_t count, size_t size, size_t align);
void gpurnn_aligned_free(void *p);

/* Nonzero when the armed allocation countdown says this allocation must fail (each call
 * counts one allocation). For allocators that do not go through gpurnn_malloc. */
int gpurnn_fault_allocation(void);
/* The same for device calls: nonzero when this CUDA/cuBLAS call or launch must fail. */
int gpurnn_fault_device_call(void);

void gpurnn_fault_fail_allocation(long long n);
int gpurnn_fault_allocation_fired(void);
void gpurnn_fault_fail_device_call(long long n);
int gpurnn_fault_device_call_fired(void);

#ifdef __cplusplus
}
#endif

#endif
