#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include "../alloc.h"
#include "../error.h"
#include "../rng.h"
#include "cpu_common.h"

extern const gpurnn_backend_ops gpurnn_cpu_ops_f32;
extern const gpurnn_backend_ops gpurnn_cpu_ops_f64;
#ifdef GPURNN_CPU_AVX2
extern const gpurnn_backend_ops gpurnn_cpu_ops_f32_avx2;
extern const gpurnn_backend_ops gpurnn_cpu_ops_f64_avx2;
#endif

/* Results depend on the variant (FMA rounds once where the baseline rounds twice), so a
 * process always uses one: the CPU's, which cannot change while it runs. */
const gpurnn_backend_ops *gpurnn_cpu_backend(gpurnn_dtype dtype)
{
#ifdef GPURNN_CPU_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return dtype == GPURNN_F64 ? &gpurnn_cpu_ops_f64_avx2 : &gpurnn_cpu_ops_f32_avx2;
#endif
    return dtype == GPURNN_F64 ? &gpurnn_cpu_ops_f64 : &gpurnn_cpu_ops_f32;
}

size_t gpurnn_cpu_block_count(size_t n) { return (n + GPURNN_CPU_BLOCK - 1) / GPURNN_CPU_BLOCK; }

/* Bytes of physical memory plus swap, 0 if unknown. */
static unsigned long long machine_memory_bytes(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page_size = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) return 0;
    unsigned long long total = (unsigned long long)pages * (unsigned long long)page_size;
    struct sysinfo info;
    if (sysinfo(&info) == 0) total += (unsigned long long)info.totalswap * info.mem_unit;
    return total;
}

gpurnn_status gpurnn_cpu_allocate_all(const gpurnn_cpu_allocation *table, size_t count,
                                      size_t bytes_by_kind[GPURNN_MEMORY_KINDS])
{
    /* Linux overcommits: calloc of far more than the machine has may succeed and fail
     * only when the pages are touched, in the middle of training. So the total is
     * judged up front against physical memory plus swap. */
    size_t total = 0, largest = 0;
    const char *largest_what = "";
    for (size_t i = 0; i < count; i++) {
        size_t n = table[i].count ? table[i].count : 1;
        if (n > SIZE_MAX / table[i].elem_size || n * table[i].elem_size > SIZE_MAX - total)
            return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY,
                               "the CPU backend's buffers for this configuration need more than "
                               "%zu bytes (SIZE_MAX)",
                               (size_t)SIZE_MAX);
        size_t bytes = n * table[i].elem_size;
        total += bytes;
        if (bytes > largest) {
            largest = bytes;
            largest_what = table[i].what;
        }
    }
    unsigned long long available = machine_memory_bytes();
    if (available != 0 && (unsigned long long)total > available)
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY,
                           "the CPU backend needs %zu bytes for this configuration (%zu bytes for "
                           "the %s alone), more than this machine's %llu bytes of memory and swap",
                           total, largest, largest_what, available);
    for (size_t i = 0; i < count; i++) {
        size_t n = table[i].count ? table[i].count : 1;
        *table[i].slot = gpurnn_aligned_calloc(n, table[i].elem_size, GPURNN_CPU_ALIGN);
        if (!*table[i].slot)
            return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY,
                               "cannot allocate %zu bytes for the %s (%zu bytes in all)",
                               n * table[i].elem_size, table[i].what, total);
        bytes_by_kind[table[i].kind] += n * table[i].elem_size;
    }
    return GPURNN_OK;
}

gpurnn_status gpurnn_cpu_draw(double *y, int V, double temperature, uint64_t seed, uint64_t k,
                              int32_t *token)
{
    int best = 0;
    for (int v = 0; v < V; v++) {
        if (!isfinite(y[v]))
            return gpurnn_fail(GPURNN_ERR_NUMERIC, "logit %d of draw %llu is %g", v,
                               (unsigned long long)k, y[v]);
        if (y[v] > y[best]) best = v;
    }
    if (temperature == 0) {
        *token = best;
        return GPURNN_OK;
    }
    double max = y[best], total = 0;
    for (int v = 0; v < V; v++) {
        y[v] = exp((y[v] - max) / temperature);
        total += y[v];
    }
    double u = gpurnn_uniform(seed, GPURNN_STREAM_SAMPLE, k) * total;
    double cumulative = 0;
    for (int v = 0; v < V; v++) {
        cumulative += y[v];
        if (u < cumulative) {
            *token = v;
            return GPURNN_OK;
        }
    }
    /* u can round up to total: take the last token with any weight. */
    int last = V - 1;
    while (last > 0 && y[last] == 0) last--;
    *token = last;
    return GPURNN_OK;
}
