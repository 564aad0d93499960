/* The CPU backend's thread pool (cpu_pool.h says why it exists). Waiting is a short spin,
 * then a futex sleep: the spin covers the gaps between the loops of one training step on a
 * quiet machine (tens of microseconds), the sleep gives the core away as soon as a wait is
 * longer than that, which on a busy machine it is. */
#define _GNU_SOURCE
#include "cpu_pool.h"

#include <limits.h>
#include <omp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "../alloc.h"

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif
#include <sched.h>

/* How long a waiting thread spins before it sleeps. */
#define POOL_SPIN_NS 50000L
/* Most threads a pool starts (the thread count past this runs on this many). */
#define POOL_MAX_WORKERS 255

/* A job: the caller writes items, item and arg, resets the counters and publishes it by
 * bumping job_word (generation << 1); it closes it (low bit set) once every item is done,
 * and then waits until no worker is inside it, so that the next job's fields are never
 * read by a worker of this one. A worker that wakes late finds the job closed or replaced
 * and skips it: nobody ever waits for a thread that took no part. */
struct gpurnn_cpu_pool {
    pthread_t threads[POOL_MAX_WORKERS];
    int workers;                    /* started */
    int failed;                     /* a thread could not start: grow no more */
    _Atomic int stop;
    _Atomic uint32_t job_word;      /* futex word of the workers */
    _Atomic uint32_t start_word;    /* job_word when the newest threads were started: they
                                       take part in every job after that value, even one
                                       published before they first ran */
    _Atomic uint32_t done_items;    /* futex word of the caller */
    _Atomic size_t next_item;       /* the next item to claim */
    _Atomic int running;            /* workers inside the current job */
    _Atomic int sleeping_workers;   /* workers in (or about to enter) a futex wait */
    _Atomic int caller_sleeping;
    _Atomic int busy;               /* a job is running: a call from inside it runs inline */
    size_t items;
    gpurnn_cpu_item_fn item;
    void *arg;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t value)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    (void)word;
    (void)value;
    sched_yield();
#endif
}

static void futex_wake_all(_Atomic uint32_t *word)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Spins up to POOL_SPIN_NS for *word != value; returns nonzero if it changed. */
static int spin_while_equal(_Atomic uint32_t *word, uint32_t value)
{
    long long deadline = 0;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(word, memory_order_acquire) != value) return 1;
        cpu_relax();
        if ((i & 63) == 0) {
            long long t = now_ns();
            if (deadline == 0)
                deadline = t + POOL_SPIN_NS;
            else if (t >= deadline)
                return 0;
        }
    }
}

static void claim_items(gpurnn_cpu_pool *pool)
{
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&pool->next_item, 1, memory_order_relaxed);
        if (i >= pool->items) return;
        pool->item(pool->arg, i);
        if (atomic_fetch_add(&pool->done_items, 1) + 1 == pool->items && atomic_load(&pool->caller_sleeping))
            futex_wake_all(&pool->done_items);
    }
}

static void *worker_main(void *p)
{
    gpurnn_cpu_pool *pool = p;
    omp_set_num_threads(1); /* BLAS serial on this thread (cpu_pool.h) */
    uint32_t seen = atomic_load(&pool->start_word);
    for (;;) {
        /* destroy sets stop before it bumps job_word: a thread that started after the bump
         * (seen is already the last value) stops here instead of waiting for a change */
        if (atomic_load(&pool->stop)) return NULL;
        while (!spin_while_equal(&pool->job_word, seen)) {
            atomic_fetch_add(&pool->sleeping_workers, 1);
            if (atomic_load(&pool->job_word) == seen) futex_wait(&pool->job_word, seen);
            atomic_fetch_sub(&pool->sleeping_workers, 1);
        }
        const uint32_t job = atomic_load(&pool->job_word);
        seen = job;
        if (atomic_load(&pool->stop)) return NULL;
        if (job & 1) continue; /* closed before this thread came to it */
        atomic_fetch_add(&pool->running, 1);
        if (atomic_load(&pool->job_word) == job) claim_items(pool);
        atomic_fetch_sub(&pool->running, 1);
    }
}

gpurnn_cpu_pool *gpurnn_cpu_pool_create(void)
{
    return gpurnn_calloc(1, sizeof(gpurnn_cpu_pool));
}

size_t gpurnn_cpu_pool_size(void) { return sizeof(gpurnn_cpu_pool); }

void gpurnn_cpu_pool_destroy(gpurnn_cpu_pool *pool)
{
    if (!pool) return;
    pool->stop = 1;
    atomic_fetch_add(&pool->job_word, 2);
    futex_wake_all(&pool->job_word);
    for (int i = 0; i < pool->workers; i++) pthread_join(pool->threads[i], NULL);
    gpurnn_free(pool);
}

/* Starts threads until the pool has `wanted` (or one fails to start: then it keeps what it
 * has, and the jobs run on fewer threads, the same items). */
static void grow(gpurnn_cpu_pool *pool, int wanted)
{
    if (wanted > POOL_MAX_WORKERS) wanted = POOL_MAX_WORKERS;
    atomic_store(&pool->start_word, atomic_load(&pool->job_word));
    while (!pool->failed && pool->workers < wanted) {
        if (pthread_create(&pool->threads[pool->workers], NULL, worker_main, pool) != 0) {
            pool->failed = 1;
            break;
        }
        pool->workers++;
    }
}

void gpurnn_cpu_pool_for(gpurnn_cpu_pool *pool, int threads, size_t items, gpurnn_cpu_item_fn item, void *arg)
{
    const int saved_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    int inline_run = !pool || threads <= 1 || items <= 1 || items >= UINT32_MAX || atomic_load(&pool->busy);
    if (!inline_run) {
        grow(pool, threads - 1);
        inline_run = pool->workers == 0;
    }
    if (inline_run) {
        for (size_t i = 0; i < items; i++) item(arg, i);
        omp_set_num_threads(saved_threads);
        return;
    }
    atomic_store(&pool->busy, 1);
    pool->items = items;
    pool->item = item;
    pool->arg = arg;
    atomic_store(&pool->next_item, 0);
    atomic_store(&pool->done_items, 0);
    const uint32_t job = (atomic_load(&pool->job_word) | 1) + 1; /* the next generation, open */
    atomic_store(&pool->job_word, job);
    if (atomic_load(&pool->sleeping_workers) > 0) futex_wake_all(&pool->job_word);

    claim_items(pool);

    for (;;) {
        const uint32_t done = atomic_load(&pool->done_items);
        if (done == items) break;
        if (spin_while_equal(&pool->done_items, done)) continue;
        atomic_store(&pool->caller_sleeping, 1);
        if (atomic_load(&pool->done_items) == done) futex_wait(&pool->done_items, done);
        atomic_store(&pool->caller_sleeping, 0);
    }
    atomic_store(&pool->job_word, job | 1);
    /* a worker that came in just now leaves at once: every item is taken */
    for (unsigned spins = 0; atomic_load(&pool->running) > 0; spins++) {
        if (spins < 1000)
            cpu_relax();
        else
            sched_yield(); /* it was descheduled between entering and leaving */
    }
    atomic_store(&pool->busy, 0);
    omp_set_num_threads(saved_threads);
}
