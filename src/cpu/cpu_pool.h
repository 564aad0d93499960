/* The CPU backend's threads: one pool per model, for the backend's parallel loops and
 * pipeline stages in training.
 *
 * Why not OpenMP's own team: libgomp's threads spin at every barrier (up to about 300,000
 * pause instructions, several milliseconds, unless OMP_WAIT_POLICY or GOMP_SPINCOUNT was
 * set before the process started). On a busy machine a thread that spins while its partner
 * is descheduled keeps its core from the partner and from everybody else, and a training
 * step meets hundreds of such barriers (bench/RESULTS.md, "On a busy machine"). This pool
 * waits briefly and then sleeps (a futex), so a waiting thread frees its core at once, and
 * hands out work items by claiming: a descheduled thread holds up at most the item it is
 * running, while the others take the rest.
 *
 * Determinism: the work is cut into items by the caller, from the configured thread count
 * alone, and each item's arithmetic does not depend on which thread runs it, so results
 * are the same bits whichever thread runs what (and however many of the pool's threads
 * are running at that moment).
 *
 * BLAS: every item runs with this thread's OpenMP thread count at one, so that OpenBLAS's
 * OpenMP build runs serially inside it (the pool, not BLAS, spreads a product over the
 * threads: the product is cut into row blocks, cpu_impl.h's gemm_rows). */
#ifndef GPURNN_CPU_POOL_H
#define GPURNN_CPU_POOL_H

#include <stddef.h>

typedef struct gpurnn_cpu_pool gpurnn_cpu_pool;

/* Runs item(arg, i) for every i in [0, items). */
typedef void (*gpurnn_cpu_item_fn)(void *arg, size_t item);

/* A pool with no threads yet (they start on first use); NULL when out of memory. */
gpurnn_cpu_pool *gpurnn_cpu_pool_create(void);

/* The bytes gpurnn_cpu_pool_create allocates. */
size_t gpurnn_cpu_pool_size(void);

/* Stops and joins the pool's threads; NULL does nothing. */
void gpurnn_cpu_pool_destroy(gpurnn_cpu_pool *pool);

/* Runs items [0, items) on the calling thread and up to threads - 1 of the pool's threads,
 * each thread claiming the next item not taken yet, and returns when every item is done.
 * items <= 1 or threads <= 1, a call from inside an item (nested), or a pool whose
 * threads could not start run every item here, in order. The items must be independent of
 * each other. */
void gpurnn_cpu_pool_for(gpurnn_cpu_pool *pool, int threads, size_t items, gpurnn_cpu_item_fn item, void *arg);

#endif
