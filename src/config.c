#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "bptt_plan.h"
#include "error.h"
#include "layout.h"
#include "model.h"

/* A bound on |gpurnn_normal()| (it never exceeds 8.58). */
#define GPURNN_MAX_NORMAL_DRAW 9.0

void gpurnn_config_init(gpurnn_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->dtype = GPURNN_F32;
    cfg->backend = GPURNN_BACKEND_AUTO;
    cfg->reduction = GPURNN_LOSS_SUM;
    cfg->init_scale = 0.01;
    cfg->activation_budget_bytes = GPURNN_DEFAULT_ACTIVATION_BUDGET;
}

/* Every buffer any backend allocates must have a byte size that fits size_t; checking
 * the largest ones here lets backends multiply freely. */
static gpurnn_status check_sizes(const gpurnn_config *c)
{
    size_t V = (size_t)c->vocab_size, H = (size_t)c->hidden_size, B = (size_t)c->batch_size;
    size_t L = (size_t)(c->num_layers < 1 ? 1 : c->num_layers), G = (size_t)gpurnn_cell_gates(c->cell);
    /* + 256: a checkpointed run's window may hold up to 255 alignment states more */
    size_t T1 = (size_t)c->max_seq_len + 1 + 256;
    /* streams per step (layout.h) are at most 6 per layer; 8 covers them with room */
    size_t gh, w0, w1, params, bytes, states, tokens, widest;
    int overflow = __builtin_mul_overflow(G, H, &gh) || __builtin_mul_overflow(gh, V + H, &w0) ||
                   __builtin_mul_overflow(gh, 2 * H, &w1) || __builtin_mul_overflow(w1, L, &w1) ||
                   __builtin_add_overflow(w0, w1, &params) ||
                   __builtin_add_overflow(params, 2 * V * H + 2 * L * gh + V, &params) ||
                   __builtin_mul_overflow(params, 8 * sizeof(double), &bytes) || H > SIZE_MAX / (V + 1);
    if (overflow)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "vocab_size = %d, hidden_size = %d and num_layers = %d give a parameter buffer "
                           "whose size overflows size_t",
                           c->vocab_size, c->hidden_size, c->num_layers);
    widest = V > gh ? V : gh;
    overflow = __builtin_mul_overflow(T1, B, &states) || __builtin_mul_overflow(states, H, &states) ||
               __builtin_mul_overflow(states, 8 * L, &states) ||
               __builtin_mul_overflow(states, 2 * sizeof(double), &bytes) ||
               __builtin_mul_overflow(T1, B, &tokens) || __builtin_mul_overflow(tokens, 4 * sizeof(double), &bytes) ||
               __builtin_mul_overflow(B, widest, &bytes) || __builtin_mul_overflow(bytes, 8 * L * sizeof(double), &bytes);
    if (overflow)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "max_seq_len = %d, batch_size = %d, hidden_size = %d, vocab_size = %d and "
                           "num_layers = %d give activation buffers whose size overflows size_t",
                           c->max_seq_len, c->batch_size, c->hidden_size, c->vocab_size, c->num_layers);
    return GPURNN_OK;
}

gpurnn_status gpurnn_config_resolve(const gpurnn_config *in, gpurnn_config *out)
{
    if (!in) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "config is NULL");
    gpurnn_config c = *in;
    if (c.vocab_size < 1)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "vocab_size = %d must be >= 1", c.vocab_size);
    if (c.hidden_size < 1)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "hidden_size = %d must be >= 1", c.hidden_size);
    if (c.batch_size < 1)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "batch_size = %d must be >= 1", c.batch_size);
    if (c.max_seq_len < 1)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "max_seq_len = %d must be >= 1", c.max_seq_len);
    /* Checked here rather than at save, so that a model that trained can always be saved. */
    if (c.max_seq_len > GPURNN_MAX_SEQ_LEN)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "max_seq_len = %d is above GPURNN_MAX_SEQ_LEN = %d, the largest a "
                           "checkpoint can hold",
                           c.max_seq_len, GPURNN_MAX_SEQ_LEN);
    if (c.dtype != GPURNN_F32 && c.dtype != GPURNN_F64)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "dtype = %d is not GPURNN_F32 (0) or GPURNN_F64 (1)", (int)c.dtype);
    if (c.backend != GPURNN_BACKEND_AUTO && c.backend != GPURNN_BACKEND_CPU &&
        c.backend != GPURNN_BACKEND_CUDA)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "backend = %d is not GPURNN_BACKEND_AUTO, _CPU or _CUDA", (int)c.backend);
    if (c.reduction != GPURNN_LOSS_SUM && c.reduction != GPURNN_LOSS_MEAN)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "reduction = %d is not GPURNN_LOSS_SUM (0) or GPURNN_LOSS_MEAN (1)",
                           (int)c.reduction);
    if (!isfinite(c.init_scale) || c.init_scale < 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "init_scale = %g must be finite and >= 0",
                           c.init_scale);
    if (c.init_scale == 0) c.init_scale = 0.01;
    /* Weights are N(0,1) draws times init_scale; a draw (Box-Muller on 53-bit uniforms,
     * rng.h) is at most sqrt(-2 ln 2^-53) < 8.6 in magnitude. A larger scale than this
     * could give weights that are not finite in the dtype (and a float32 conversion out
     * of range, which C leaves undefined). Found by fuzz/fuzz_api. */
    const double limit = (c.dtype == GPURNN_F64 ? DBL_MAX : FLT_MAX) / GPURNN_MAX_NORMAL_DRAW;
    if (c.init_scale > limit)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "init_scale = %g is too large for %s: N(0,1) * init_scale weights could "
                           "overflow (the largest accepted is %g)",
                           c.init_scale, c.dtype == GPURNN_F64 ? "float64" : "float32", limit);
    if (c.bptt_checkpoint_every < GPURNN_BPTT_KEEP_ALL)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "bptt_checkpoint_every = %d must be >= 1, 0 (automatic) or "
                           "GPURNN_BPTT_KEEP_ALL (-1)",
                           c.bptt_checkpoint_every);
    if ((unsigned)c.cell > GPURNN_CELL_LSTM)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "cell = %d is not GPURNN_CELL_TANH (0), _RELU (1), _GRU (2) or _LSTM (3)", (int)c.cell);
    if (c.num_layers < 0 || c.num_layers > GPURNN_MAX_LAYERS)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "num_layers = %d must be in [1, GPURNN_MAX_LAYERS = %d] (0 means 1)", c.num_layers,
                           GPURNN_MAX_LAYERS);
    if (c.num_layers == 0) c.num_layers = 1;
    if (c.activation_budget_bytes == 0) c.activation_budget_bytes = GPURNN_DEFAULT_ACTIVATION_BUDGET;
    gpurnn_status s = check_sizes(&c);
    if (s != GPURNN_OK) return s;
    c.bptt_checkpoint_every = gpurnn_resolve_checkpoint_every(&c);
    *out = c;
    return GPURNN_OK;
}
