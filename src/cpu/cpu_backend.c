#include <math.h>
#include <stdlib.h>
#include <string.h>

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

gpurnn_status gpurnn_cpu_allocate_all(const gpurnn_cpu_allocation *table, size_t count,
                                      size_t bytes_by_kind[GPURNN_MEMORY_KINDS])
{
    for (size_t i = 0; i < count; i++) {
        size_t n = table[i].count ? table[i].count : 1;
        size_t bytes = n * table[i].elem_size; /* config.c bounds every buffer's size */
        void *p = NULL;
        if (posix_memalign(&p, GPURNN_CPU_ALIGN, bytes) != 0) p = NULL;
        *table[i].slot = p;
        if (!p)
            return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the %s", bytes,
                               table[i].what);
        memset(p, 0, bytes);
        bytes_by_kind[table[i].kind] += bytes;
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
