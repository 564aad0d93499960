/* What the two precisions of the CPU backend share. */
#ifndef GPURNN_CPU_COMMON_H
#define GPURNN_CPU_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "../backend.h"

/* Below this many elements a loop runs on one thread: waking a second thread (and waiting
 * for it when the machine is busy) costs more than it saves. */
#define GPURNN_CPU_PARALLEL_MIN ((size_t)131072)
/* Below this many multiply-adds per time step the recurrence runs on one thread. */
#define GPURNN_CPU_SLICE_MIN_MACS 65536.0
/* Flat-buffer reductions sum fixed blocks, then the blocks in order, so the result does
 * not depend on the number of threads. */
#define GPURNN_CPU_BLOCK ((size_t)4096)

size_t gpurnn_cpu_block_count(size_t n);

/* Every buffer starts at a multiple of this many bytes (a cache line; the widest vector
 * loads), which also makes the BPTT window's operands aligned as the full history's are. */
#define GPURNN_CPU_ALIGN ((size_t)64)

typedef struct {
    void **slot;
    size_t count, elem_size;
    const char *what;
    gpurnn_memory_kind kind;
} gpurnn_cpu_allocation;

/* Zero-filled, GPURNN_CPU_ALIGN-aligned allocations (release with gpurnn_aligned_free),
 * adding each one's bytes to bytes_by_kind; refuses a total beyond the machine's memory
 * and swap; on failure frees nothing (the caller's destroy does) and reports the bytes
 * asked for. */
gpurnn_status gpurnn_cpu_allocate_all(const gpurnn_cpu_allocation *table, size_t count,
                                      size_t bytes_by_kind[GPURNN_MEMORY_KINDS]);

/* Draws token index from logits y (V) with p ∝ exp(y / temperature), the uniform number
 * for draw k of seed; temperature 0 takes the first maximum. */
gpurnn_status gpurnn_cpu_draw(double *y, int V, double temperature, uint64_t seed, uint64_t k,
                              int32_t *token);

#endif
