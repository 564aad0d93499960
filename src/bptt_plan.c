#include "bptt_plan.h"

#include <math.h>

#include "layout.h"

int gpurnn_chunk_steps(int V, int H, int B, int max_T)
{
    const size_t budget = (size_t)1 << 18; /* elements in the larger chunk buffer */
    size_t width = (size_t)B * (size_t)(V > H ? V : H);
    size_t steps = budget / width;
    if (steps < 1) steps = 1;
    if (steps > (size_t)max_T) steps = (size_t)max_T;
    return (int)steps;
}

static size_t dtype_bytes(gpurnn_dtype d) { return d == GPURNN_F64 ? sizeof(double) : sizeof(float); }

size_t gpurnn_history_bytes(const gpurnn_config *cfg)
{
    gpurnn_layout lay;
    gpurnn_layout_of(&lay, cfg);
    return ((size_t)cfg->max_seq_len + 1) * (size_t)cfg->batch_size * (size_t)cfg->hidden_size *
           gpurnn_layout_step_streams(&lay) * dtype_bytes(cfg->dtype);
}

int gpurnn_resolve_checkpoint_every(const gpurnn_config *cfg)
{
    if (cfg->bptt_checkpoint_every != 0) return cfg->bptt_checkpoint_every;
    if (gpurnn_history_bytes(cfg) <= cfg->activation_budget_bytes) return GPURNN_BPTT_KEEP_ALL;
    /* k + T/k states is least at k = sqrt(T); a multiple of C keeps every chunk inside one
     * checkpoint interval, so each state is recomputed once. */
    int C = gpurnn_chunk_steps(cfg->vocab_size, cfg->hidden_size, cfg->batch_size, cfg->max_seq_len);
    long long k = (long long)ceil(sqrt((double)cfg->max_seq_len));
    k = (k + C - 1) / C * C;
    /* With one interval for the whole sequence, checkpoints save nothing. */
    return k >= cfg->max_seq_len ? GPURNN_BPTT_KEEP_ALL : (int)k;
}

size_t gpurnn_checkpoint_count(int k, int max_T) { return (size_t)max_T / (size_t)k + 1; }

size_t gpurnn_window_states(int k, int chunk_steps, int max_T)
{
    size_t span = (size_t)k - 1 + (size_t)chunk_steps;
    if (span > (size_t)max_T) span = (size_t)max_T;
    return span + 1;
}

static size_t gcd(size_t a, size_t b)
{
    while (b) {
        size_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

size_t gpurnn_window_pad_max(size_t state_bytes, size_t align_bytes)
{
    return align_bytes / gcd(state_bytes, align_bytes) - 1;
}

size_t gpurnn_window_pad(size_t first_j, size_t base, size_t state_bytes, size_t align_bytes)
{
    /* state j of a full history sits at j * state_bytes; in the window at
     * (base + pad + j - first_j) * state_bytes: equal modulo align_bytes when
     * base + pad = first_j modulo the period of state_bytes's multiples. */
    size_t period = align_bytes / gcd(state_bytes, align_bytes);
    return (first_j % period + period - base % period) % period;
}
