/* The CPU backend, written once for both precisions. A file that includes this defines
 *   REAL          float or double
 *   SFX           f32 or f64 (suffix of every function defined here)
 *   CBLAS_GEMM    cblas_sgemm or cblas_dgemm
 *   CBLAS_GEMV    cblas_sgemv or cblas_dgemv
 *   TANH          gpurnn_fast_tanhf or tanh
 *   EXP_NONPOSITIVE  e^x for x <= 0 (the softmax's exponents)
 * and gets the table CPU_OPS(SFX).
 *
 * Shapes are row-major and noted as (rows, cols). Time-major activations: hidden state
 * j (B, H) is h_{j-1}, so state 0 is the carried state at forward time and state t+1 is
 * h_t. A chunk of steps t0..t1-1 works on states t0..t1 kept contiguous: its h_t are the
 * (rows = (t1-t0)*B, H) block one state after state t0, their predecessors the block at
 * state t0. With the full history they all sit in hs (max_T + 1, B, H); with checkpointed
 * BPTT (src/bptt_plan.h) only every k-th state is kept in ckpts, and a window holds the
 * states of the chunks at hand, recomputed from the checkpoint before them.
 *
 * Determinism: no reduction depends on how many threads run it. Sums over rows go through
 * BLAS or through fixed-size blocks summed in order. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../bptt_plan.h"
#include "../error.h"
#include "../model.h"
#include "../rng.h"
#include "../update_math.h"
#include "cpu_common.h"

#define CPU_CAT2(a, b) a##_##b
#define CPU_CAT(a, b) CPU_CAT2(a, b)
#define FN(name) CPU_CAT(cpu_##name, SFX)
#define CPU_OPS_NAME(sfx) CPU_CAT2(gpurnn_cpu_ops, sfx)

typedef struct {
    int V, H, B, max_T;
    gpurnn_loss_reduction reduction;
    size_t n;               /* parameter count */
    REAL *params;           /* (n) flat layout */
    REAL *grads;            /* (n) */
    REAL *opt0, *opt1;      /* (n) each: optimizer slots */
    REAL *wxh_t;            /* (V, H): Wxh^T as of the last forward, so that the input
                               column of a token is contiguous (a row) in the time loops */
    REAL *state;            /* (B, H) carried hidden state */
    int ckpt_every;         /* k, or GPURNN_BPTT_KEEP_ALL */
    REAL *hs;               /* (max_T + 1, B, H): the full history; NULL with checkpoints */
    REAL *ckpts;            /* (max_T / k + 1, B, H): state j*k at [j] */
    REAL *window;           /* (pad_max + window_states, B, H), or three segment buffers */
    REAL *window_first;     /* where state window_lo sits in window */
    int window_lo, window_hi; /* the window holds states [lo, hi] of the last forward; lo > hi: none */
    size_t segment_cap;     /* states in each of the three segment buffers (k a multiple of C), else 0 */
    int segment_in[3];      /* the checkpoint interval each segment buffer holds; -1: none */
    int32_t *inputs;        /* (max_T, B) of the last forward */
    int32_t *targets;       /* (max_T, B) */
    double *row_lse;        /* (max_T, B) log-sum-exp of each output row */
    int T;                  /* steps of the last forward */
    int chunk_steps;        /* time steps per output-layer chunk */
    REAL *logits;           /* (chunk_steps*B, V): logits, then dY */
    REAL *probs;            /* (chunk_steps*B, V): softmax of a one-chunk forward, for backward */
    int probs_kept;         /* probs holds the last forward's softmax (T <= chunk_steps) */
    REAL *dh;               /* (chunk_steps*B, H): dh_out, then dz */
    REAL *dh_alt;           /* (2, chunk_steps*B, H): two more for the pipelined backward */
    REAL *dh_next;          /* (B, H) */
    REAL *ones;             /* (chunk_steps*B) for column sums through gemv */
    double *row_loss;       /* (chunk_steps*B) */
    double *block_sums;     /* (blocks of the flat buffer) */
    REAL *sample_h;         /* (2, H): sampling keeps away from the training buffers */
    double *sample_y;       /* (V) */
    REAL *sample_logits;    /* (V) */
    int wxh_t_fresh;        /* wxh_t matches the parameters (cleared by every write to them) */
    /* Inference (infer, sample_batch) keeps away from the training buffers too. An
     * inference call puts its state j (j = 0 the carried state, j = t+1 h_t) in slot
     * j % infer_ring: infer_ring is a multiple of the period of B*H*sizeof(REAL) modulo
     * GPURNN_CPU_ALIGN (and >= 2), so state j has the alignment it has in a training
     * forward's history and BLAS computes the same bits from it. */
    int infer_ring;
    REAL *infer_states;     /* (infer_ring, B, H) */
    REAL *infer_logits;     /* (B, V) */
    double *infer_rows;     /* (B): log p[target] per sequence (0 without targets), NaN for a
                               non-finite logit */
    size_t batch_h_stride, batch_y_stride; /* 2H and V rounded up to GPURNN_CPU_ALIGN bytes */
    REAL *batch_h;          /* (B, batch_h_stride): each sequence's sampling state, as sample_h */
    REAL *batch_logits;     /* (B, batch_y_stride) */
    double *batch_weights;  /* (B, V) */
    int *batch_bad_draw;    /* (B): the draw whose logits were not finite, -1 if none */
    size_t bytes[GPURNN_MEMORY_KINDS];
} FN(ctx);

typedef FN(ctx) cpu_ctx;

static REAL *FN(buffer)(cpu_ctx *c, gpurnn_buffer buf, size_t *count)
{
    switch (buf) {
    case GPURNN_BUF_PARAMS: *count = c->n; return c->params;
    case GPURNN_BUF_GRADS: *count = c->n; return c->grads;
    case GPURNN_BUF_OPT0: *count = c->n; return c->opt0;
    case GPURNN_BUF_OPT1: *count = c->n; return c->opt1;
    case GPURNN_BUF_STATE: *count = (size_t)c->B * (size_t)c->H; return c->state;
    default: *count = 0; return NULL;
    }
}

/* Views of the five tensors inside a flat buffer. */
#define WXH(p, c) ((p))                                                          /* (H, V) */
#define WHH(p, c) ((p) + (size_t)(c)->H * (c)->V)                                /* (H, H) */
#define WHY(p, c) ((p) + (size_t)(c)->H * (c)->V + (size_t)(c)->H * (c)->H)      /* (V, H) */
#define BH(p, c) ((p) + 2 * (size_t)(c)->H * (c)->V + (size_t)(c)->H * (c)->H)   /* (H) */
#define BY(p, c) (BH(p, c) + (c)->H)                                             /* (V) */

static void FN(destroy)(void *ctx)
{
    cpu_ctx *c = ctx;
    if (!c) return;
    void *owned[] = {c->params,  c->grads,   c->opt0,     c->opt1,       c->state, c->wxh_t,
                     c->hs,      c->ckpts,   c->window,   c->inputs,     c->targets,
                     c->row_lse, c->logits, c->probs,  c->dh,  c->dh_alt,  c->dh_next,    c->ones,
                     c->row_loss, c->block_sums, c->sample_h, c->sample_y, c->sample_logits,
                     c->infer_states, c->infer_logits, c->infer_rows, c->batch_h, c->batch_logits,
                     c->batch_weights, c->batch_bad_draw};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) gpurnn_aligned_free(owned[i]);
    gpurnn_free(c);
}

static gpurnn_status FN(create)(const gpurnn_config *cfg, void **out)
{
    if (cfg->cell != GPURNN_CELL_TANH || cfg->num_layers > 1)
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE, "CPU backend: %s cells and stacked layers: not yet",
                           gpurnn_cell_name(cfg->cell));
    cpu_ctx *c = gpurnn_calloc(1, sizeof *c);
    if (!c) return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", sizeof *c);
    c->V = cfg->vocab_size;
    c->H = cfg->hidden_size;
    c->B = cfg->batch_size;
    c->max_T = cfg->max_seq_len;
    c->reduction = cfg->reduction;
    c->n = gpurnn_layout_param_count((size_t)c->V, (size_t)c->H);
    c->chunk_steps = gpurnn_chunk_steps(c->V, c->H, c->B, c->max_T);
    c->ckpt_every = cfg->bptt_checkpoint_every;
    c->window_lo = 1;
    c->window_hi = 0;
    c->segment_in[0] = c->segment_in[1] = c->segment_in[2] = -1;
    size_t V = (size_t)c->V, H = (size_t)c->H, B = (size_t)c->B, T = (size_t)c->max_T;
    size_t rows = (size_t)c->chunk_steps * B;
    const int keep_all = c->ckpt_every == GPURNN_BPTT_KEEP_ALL;
    size_t history = keep_all ? T + 1 : 0, ckpts = 0, window = 0;
    if (!keep_all) {
        ckpts = gpurnn_checkpoint_count(c->ckpt_every, c->max_T);
        const size_t pad_max = gpurnn_window_pad_max(B * H * sizeof(REAL), GPURNN_CPU_ALIGN);
        window = pad_max + gpurnn_window_states(c->ckpt_every, c->chunk_steps, c->max_T);
        if (c->ckpt_every % c->chunk_steps == 0) {
            /* room for the pipeline's three segment buffers, each one checkpoint interval */
            size_t interval = (size_t)(c->ckpt_every < c->max_T ? c->ckpt_every : c->max_T);
            c->segment_cap = pad_max + interval + 1;
            if (window < 3 * c->segment_cap) window = 3 * c->segment_cap;
        }
    }
    {
        const size_t period = gpurnn_window_pad_max(B * H * sizeof(REAL), GPURNN_CPU_ALIGN) + 1;
        c->infer_ring = (int)(period < 2 ? 2 : period);
        const size_t per_line = GPURNN_CPU_ALIGN / sizeof(REAL);
        c->batch_h_stride = (2 * H + per_line - 1) / per_line * per_line;
        c->batch_y_stride = (V + per_line - 1) / per_line * per_line;
    }
    const gpurnn_memory_kind P = GPURNN_MEMORY_PARAMETERS, G = GPURNN_MEMORY_GRADIENTS,
                             O = GPURNN_MEMORY_OPTIMIZER, A = GPURNN_MEMORY_ACTIVATIONS,
                             W = GPURNN_MEMORY_WORKSPACE;
    gpurnn_cpu_allocation table[] = {
        {(void **)&c->params, c->n, sizeof(REAL), "parameters", P},
        {(void **)&c->grads, c->n, sizeof(REAL), "gradients", G},
        {(void **)&c->opt0, c->n, sizeof(REAL), "optimizer state", O},
        {(void **)&c->opt1, c->n, sizeof(REAL), "optimizer state", O},
        {(void **)&c->state, B * H, sizeof(REAL), "carried state", W},
        {(void **)&c->wxh_t, V * H, sizeof(REAL), "transposed input weights", W},
        {(void **)&c->hs, history * B * H, sizeof(REAL), "hidden states", A},
        {(void **)&c->ckpts, ckpts * B * H, sizeof(REAL), "BPTT checkpoints", A},
        {(void **)&c->window, window * B * H, sizeof(REAL), "BPTT recomputation window", A},
        {(void **)&c->inputs, T * B, sizeof(int32_t), "inputs", A},
        {(void **)&c->targets, T * B, sizeof(int32_t), "targets", A},
        {(void **)&c->row_lse, T * B, sizeof(double), "output log-sum-exps", A},
        {(void **)&c->logits, rows * V, sizeof(REAL), "output chunk", A},
        {(void **)&c->probs, rows * V, sizeof(REAL), "output probabilities", A},
        {(void **)&c->dh, rows * H, sizeof(REAL), "hidden gradient chunk", A},
        {(void **)&c->dh_alt, keep_all || c->segment_cap ? 2 * rows * H : 0, sizeof(REAL),
         "second hidden gradient chunk", A},
        {(void **)&c->dh_next, B * H, sizeof(REAL), "recurrent gradient", A},
        {(void **)&c->ones, rows, sizeof(REAL), "ones", A},
        {(void **)&c->row_loss, rows, sizeof(double), "row losses", A},
        {(void **)&c->block_sums, gpurnn_cpu_block_count(c->n), sizeof(double), "partial sums", W},
        {(void **)&c->sample_h, 2 * H, sizeof(REAL), "sampling state", W},
        {(void **)&c->sample_y, V, sizeof(double), "sampling weights", W},
        {(void **)&c->sample_logits, V, sizeof(REAL), "sampling logits", W},
        {(void **)&c->infer_states, (size_t)c->infer_ring * B * H, sizeof(REAL), "inference states", W},
        {(void **)&c->infer_logits, B * V, sizeof(REAL), "inference logits", W},
        {(void **)&c->infer_rows, B, sizeof(double), "inference row log-likelihoods", W},
        {(void **)&c->batch_h, B * c->batch_h_stride, sizeof(REAL), "batch sampling states", W},
        {(void **)&c->batch_logits, B * c->batch_y_stride, sizeof(REAL), "batch sampling logits", W},
        {(void **)&c->batch_weights, B * V, sizeof(double), "batch sampling weights", W},
        {(void **)&c->batch_bad_draw, B, sizeof(int), "batch sampling checks", W},
    };
    /* Unused slots (hs with checkpoints, ckpts and window without) stay NULL. */
    gpurnn_cpu_allocation used[sizeof table / sizeof table[0]];
    size_t n_used = 0;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (table[i].count) used[n_used++] = table[i];
    c->bytes[W] += sizeof *c;
    gpurnn_status s = gpurnn_cpu_allocate_all(used, n_used, c->bytes);
    if (s != GPURNN_OK) {
        FN(destroy)(c);
        return s;
    }
    for (size_t r = 0; r < rows; r++) c->ones[r] = 1;
    *out = c;
    return GPURNN_OK;
}

static gpurnn_status FN(read)(void *ctx, gpurnn_buffer buf, size_t offset, size_t n, double *dst)
{
    size_t count;
    const REAL *src = FN(buffer)(ctx, buf, &count) + offset;
    for (size_t i = 0; i < n; i++) dst[i] = (double)src[i];
    return GPURNN_OK;
}

static gpurnn_status FN(write)(void *ctx, gpurnn_buffer buf, size_t offset, size_t n, const double *src)
{
    size_t count;
    REAL *dst = FN(buffer)(ctx, buf, &count) + offset;
    for (size_t i = 0; i < n; i++) dst[i] = (REAL)src[i];
    if (buf == GPURNN_BUF_PARAMS) ((cpu_ctx *)ctx)->wxh_t_fresh = 0;
    return GPURNN_OK;
}

static gpurnn_status FN(fill_zero)(void *ctx, gpurnn_buffer buf)
{
    size_t count;
    REAL *dst = FN(buffer)(ctx, buf, &count);
    memset(dst, 0, count * sizeof(REAL));
    if (buf == GPURNN_BUF_PARAMS) ((cpu_ctx *)ctx)->wxh_t_fresh = 0;
    return GPURNN_OK;
}

/* out (rows, H) = prev (rows, H) · Whh^T: the recurrent product of a forward step for
 * rows sequences. */
static void FN(recurrent_product)(const cpu_ctx *c, const REAL *prev, REAL *out, int rows)
{
    const REAL *Whh = WHH(c->params, c);
    if (rows == 1)
        CBLAS_GEMV(CblasRowMajor, CblasNoTrans, c->H, c->H, 1, Whh, c->H, prev, 1, 0, out, 1);
    else
        CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, c->H, c->H, 1, prev, c->H, Whh,
                   c->H, 0, out, c->H);
}

/* out (rows, H) = dz (rows, H) · Whh: dh_next = Whh^T dz for rows sequences. */
static void FN(recurrent_product_backward)(const cpu_ctx *c, const REAL *dz, REAL *out, int rows)
{
    const REAL *Whh = WHH(c->params, c);
    if (rows == 1)
        CBLAS_GEMV(CblasRowMajor, CblasTrans, c->H, c->H, 1, Whh, c->H, dz, 1, 0, out, 1);
    else
        CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, c->H, c->H, 1, dz, c->H, Whh,
                   c->H, 0, out, c->H);
}

/* The sequences of a batch are independent in the recurrence, so the batch is split into
 * one slice per thread and each thread runs the whole time loop on its slice with
 * single-threaded BLAS calls (OpenBLAS's OpenMP build runs serially inside a parallel
 * region). Threads then meet once per loop rather than twice per step: per-step products
 * are too small to split well, and a thread that spins at a per-step barrier while its
 * partner is descheduled wastes the step. Small batches stay on one thread. */
static int FN(recurrence_slices)(const cpu_ctx *c)
{
    double macs_per_step = (double)c->B * c->H * c->H;
    if (c->B < 2 || macs_per_step < GPURNN_CPU_SLICE_MIN_MACS) return 1;
    int threads = omp_get_max_threads();
    return threads < c->B ? threads : c->B;
}

/* OpenBLAS's OpenMP build sizes its team from the calling thread's omp_get_max_threads()
 * at every call. The recurrence's per-step products are too small to split: two threads
 * per step never beat one in bench/RESULTS.md's runs, and on a busy machine they were many
 * times slower. So the time loops drop this thread's count to one and restore it after:
 * a per-thread setting, so other threads and the caller's own regions are unaffected. */
static int FN(enter_serial_blas)(void)
{
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    return saved;
}

/* Rows [*b0, *b1) of the batch for this thread of the current team. */
static void FN(batch_slice)(const cpu_ctx *c, int *b0, int *b1)
{
    long long s = omp_get_thread_num(), ns = omp_get_num_threads();
    *b0 = (int)(c->B * s / ns);
    *b1 = (int)(c->B * (s + 1) / ns);
}

/* logits (rows, V) = h (rows, H) · Why^T; the bias is added by the caller's row pass. */
static void FN(output_product)(const cpu_ctx *c, const REAL *h, int rows)
{
    CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, c->V, c->H, 1, h, c->H,
               WHY(c->params, c), c->H, 0, c->logits, c->V);
}

/* One step of the recurrence for sequences [b0, b1): cur = tanh(prev · Whh^T +
 * Wxh[:, x_b] + bh), prev and cur (B, H) states, xt (B) tokens. Training forward, backward's
 * recomputation and inference all come here, so their states are the same bits. */
static void FN(recurrence_step)(const cpu_ctx *c, const REAL *prev, REAL *cur, const int32_t *xt, int b0,
                                int b1)
{
    const int H = c->H;
    const REAL *bh = BH(c->params, c);
    prev += (size_t)b0 * H;
    cur += (size_t)b0 * H;
    FN(recurrent_product)(c, prev, cur, b1 - b0);
    for (int b = b0; b < b1; b++) {
        REAL *z = cur + (size_t)(b - b0) * H;
        const REAL *wx = c->wxh_t + (size_t)xt[b] * H; /* column x_b of Wxh */
        for (int i = 0; i < H; i++) z[i] = TANH(z[i] + wx[i] + bh[i]);
    }
}

/* States 1..steps after states[0] (B, H each) for sequences [b0, b1), with inputs x
 * (steps, B): one product and one fused pointwise pass a step. */
static void FN(forward_recurrence)(const cpu_ctx *c, REAL *states, const int32_t *x, int steps,
                                   int b0, int b1)
{
    const size_t step = (size_t)c->B * c->H;
    for (int t = 0; t < steps; t++)
        FN(recurrence_step)(c, states + (size_t)t * step, states + (size_t)(t + 1) * step, x + (size_t)t * c->B,
                            b0, b1);
}

/* forward_recurrence over the whole batch, each thread on its slice. The forward pass and
 * backward's recomputation both come here, so a recomputed state is the same bits. */
static void FN(run_recurrence)(const cpu_ctx *c, REAL *states, const int32_t *x, int steps)
{
    const int slices = FN(recurrence_slices)(c);
    const int saved_threads = FN(enter_serial_blas)();
    if (slices == 1) {
        FN(forward_recurrence)(c, states, x, steps, 0, c->B);
    } else {
#pragma omp parallel num_threads(slices)
        {
            int b0, b1;
            FN(batch_slice)(c, &b0, &b1);
            FN(forward_recurrence)(c, states, x, steps, b0, b1);
        }
    }
    omp_set_num_threads(saved_threads);
}

/* Where state `first` goes when a chunk's states are laid out from it. */
static REAL *FN(states_from)(cpu_ctx *c, int first)
{
    const size_t step = (size_t)c->B * c->H;
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) return c->hs + (size_t)first * step;
    return c->window + gpurnn_window_pad((size_t)first, 0, step * sizeof(REAL), GPURNN_CPU_ALIGN) * step;
}

/* States [t0, t1] of the last forward, contiguous; with checkpoints, recomputed into the
 * window from the checkpoint at or before t0 unless the window holds them already. */
static const REAL *FN(states_for_backward)(cpu_ctx *c, int t0, int t1)
{
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) return FN(states_from)(c, t0);
    const size_t step = (size_t)c->B * c->H;
    if (!(c->window_lo <= t0 && t1 <= c->window_hi)) {
        const int k = c->ckpt_every, from = t0 / k * k;
        REAL *states = FN(states_from)(c, from);
        memcpy(states, c->ckpts + (size_t)(from / k) * step, step * sizeof(REAL));
        FN(run_recurrence)(c, states, c->inputs + (size_t)from * c->B, t1 - from);
        c->window_first = states;
        c->window_lo = from;
        c->window_hi = t1;
    }
    return c->window_first + (size_t)(t0 - c->window_lo) * step;
}

/* With one recurrence slice (B = 1, or small B*H*H) the time loop leaves every thread but
 * one idle, while the output layer's GEMMs do not depend on it: with two threads or more,
 * the full history and at least two chunks, one thread runs the recurrence through a
 * chunk while another does the output layer of the chunk beside it (pipelined()).
 * The GEMMs then run on one thread. OpenBLAS's results depend on its thread count, so
 * whenever the pipeline could run (single_slice_threads()) every GEMM of the pass runs on
 * one thread, pipelined or not: a checkpointed run that cannot be pipelined (k not a
 * multiple of C) or a one-chunk call computes the same bits as the pipelined full history
 * (tests/test_bptt_checkpoint.cc). */
static int FN(single_slice_threads)(const cpu_ctx *c)
{
    return FN(recurrence_slices)(c) == 1 && omp_get_max_threads() >= 2;
}

/* With checkpoints the pipeline needs every chunk inside one checkpoint interval (k a
 * multiple of C, as the automatic choice makes it): three segment buffers then hold the
 * intervals of chunks i+1 and i, which the first thread works in, and of chunk i-1,
 * which the other thread recomputes. */
static int FN(pipelined)(const cpu_ctx *c, int T)
{
    return (c->ckpt_every == GPURNN_BPTT_KEEP_ALL || c->segment_cap > 0) && FN(single_slice_threads)(c) &&
           T > c->chunk_steps;
}

/* Where state `first` goes in segment buffer `buf`, aligned as in a full history. */
static REAL *FN(segment_states)(const cpu_ctx *c, int buf, int first)
{
    const size_t step = (size_t)c->B * c->H, base = (size_t)buf * c->segment_cap;
    return c->window + (base + gpurnn_window_pad((size_t)first, base, step * sizeof(REAL), GPURNN_CPU_ALIGN)) * step;
}

/* The states from t0 on of the chunk starting at t0, for the pipelined passes: in the full
 * history, or in the segment buffer of checkpoint interval t0 / k (which holds the whole
 * chunk: k is a multiple of C), recomputed from its checkpoint unless there. */
static REAL *FN(pipeline_states)(cpu_ctx *c, int t0)
{
    const size_t step = (size_t)c->B * c->H;
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) return c->hs + (size_t)t0 * step;
    const int k = c->ckpt_every, seg = t0 / k, buf = seg % 3, from = seg * k;
    REAL *states = FN(segment_states)(c, buf, from);
    if (c->segment_in[buf] != seg) {
        const int len = c->T - from < k ? c->T - from : k;
        c->segment_in[buf] = -1;
        memcpy(states, c->ckpts + (size_t)seg * step, step * sizeof(REAL));
        FN(run_recurrence)(c, states, c->inputs + (size_t)from * c->B, len);
        c->segment_in[buf] = seg;
    }
    return states + (size_t)(t0 - from) * step;
}

/* wxh_t = Wxh^T from the current parameters. */
static void FN(transpose_wxh)(cpu_ctx *c)
{
    const int V = c->V, H = c->H;
    const REAL *Wxh = WXH(c->params, c);
    for (int i = 0; i < H; i++)
        for (int v = 0; v < V; v++) c->wxh_t[(size_t)v * H + i] = Wxh[(size_t)i * V + v];
    c->wxh_t_fresh = 1;
}

/* The output layer and softmax cross-entropy of rows (h: (rows, H), the states of steps
 * t0..): stores each row's log-sum-exp and returns the rows' summed loss, in row order.
 * With probs, also stores the softmax there (rows, V). */
static double FN(output_loss)(cpu_ctx *c, const REAL *h, int t0, int rows, REAL *probs)
{
    const int V = c->V;
    const REAL *by = BY(c->params, c);
    FN(output_product)(c, h, rows);
    const int32_t *tgt = c->targets + (size_t)t0 * c->B;
    double *lse_out = c->row_lse + (size_t)t0 * c->B;
#pragma omp parallel for schedule(static) if ((size_t)rows * V >= GPURNN_CPU_PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        REAL *y = c->logits + (size_t)r * V;
        REAL max = y[0] + by[0];
        for (int v = 0; v < V; v++) {
            y[v] += by[v];
            if (y[v] > max) max = y[v];
        }
        const REAL y_target = y[tgt[r]];
        /* the exponentials in place (a vector loop), then their sum in order */
        for (int v = 0; v < V; v++) y[v] = EXP_NONPOSITIVE(y[v] - max);
        double sum = 0;
        for (int v = 0; v < V; v++) sum += (double)y[v];
        double lse = (double)max + log(sum);
        lse_out[r] = lse;
        c->row_loss[r] = lse - (double)y_target;
        if (probs) {
            const REAL inv_sum = (REAL)(1.0 / sum);
            REAL *p = probs + (size_t)r * V;
            for (int v = 0; v < V; v++) p[v] = y[v] * inv_sum;
        }
    }
    double total = 0;
    for (int r = 0; r < rows; r++) total += c->row_loss[r];
    return total;
}

/* Copies the checkpoints among states t0..t0+steps (states: state t0 first) to ckpts. */
static void FN(keep_checkpoints)(cpu_ctx *c, const REAL *states, int t0, int steps)
{
    const int k = c->ckpt_every;
    const size_t step = (size_t)c->B * c->H;
    for (int j = (t0 + k - 1) / k * k; j <= t0 + steps; j += k)
        memcpy(c->ckpts + (size_t)(j / k) * step, states + (size_t)(j - t0) * step, step * sizeof(REAL));
}

static gpurnn_status FN(forward_pass)(cpu_ctx *c, const int32_t *inputs, const int32_t *targets, int T,
                                      int pipelined, double *loss)
{
    const int B = c->B, k = c->ckpt_every;
    const size_t step = (size_t)B * c->H;
    memcpy(c->inputs, inputs, (size_t)T * B * sizeof(int32_t));
    memcpy(c->targets, targets, (size_t)T * B * sizeof(int32_t));
    c->T = T;
    c->window_lo = 1; /* nothing valid until this pass ends */
    c->window_hi = 0;
    c->segment_in[0] = c->segment_in[1] = c->segment_in[2] = -1;
    c->probs_kept = T <= c->chunk_steps;
    /* backward's recomputation uses it too: parameters cannot change in between (a change
     * ends the forward pass's validity) */
    FN(transpose_wxh)(c);

    double total = 0;
    const REAL *last = c->state; /* state t0 */
    if (pipelined) {
        /* Stage s: one thread runs the recurrence through chunk s while another runs the
         * output layer of chunk s-1, whose states are done (the full history, or two
         * chunk slots, keep both). The chunks' losses are summed in the same order as
         * below. */
        const int C = c->chunk_steps, chunks = (T + C - 1) / C, keep_all = k == GPURNN_BPTT_KEEP_ALL;
        /* With checkpoints, chunk s's states go to segment buffer s % 2 (the forward pass
         * uses the buffers as two chunk slots) and its checkpoints are copied out. */
#define CHUNK_STATES(s) (keep_all ? c->hs + (size_t)(s) * C * step : FN(segment_states)(c, (s) & 1, (s) * C))
        memcpy(CHUNK_STATES(0), c->state, step * sizeof(REAL));
        for (int s = 0; s <= chunks; s++) {
#pragma omp parallel num_threads(2)
            {
                const int id = omp_get_thread_num(), alone = omp_get_num_threads() == 1;
                if (id == 0 && s < chunks) {
                    const int t0 = s * C, steps = T - t0 < C ? T - t0 : C;
                    REAL *states = CHUNK_STATES(s);
                    if (s > 0 && !keep_all) /* state t0 ends the chunk before */
                        memcpy(states, CHUNK_STATES(s - 1) + (size_t)C * step, step * sizeof(REAL));
                    FN(run_recurrence)(c, states, c->inputs + (size_t)t0 * B, steps);
                    if (!keep_all) FN(keep_checkpoints)(c, states, t0, steps);
                }
                if ((id == 1 || alone) && s > 0) {
                    const int t0 = (s - 1) * C, steps = T - t0 < C ? T - t0 : C;
                    total += FN(output_loss)(c, CHUNK_STATES(s - 1) + step, t0, steps * B, NULL);
                }
            }
        }
        last = CHUNK_STATES(chunks - 1) + (size_t)(T - (chunks - 1) * C) * step;
#undef CHUNK_STATES
    } else {
        /* Chunk by chunk: the recurrence through the chunk, then its output layer. */
        for (int t0 = 0; t0 < T; t0 += c->chunk_steps) {
            int steps = T - t0 < c->chunk_steps ? T - t0 : c->chunk_steps;
            REAL *states = FN(states_from)(c, t0);
            if (states != last) memmove(states, last, step * sizeof(REAL));
            FN(run_recurrence)(c, states, c->inputs + (size_t)t0 * B, steps);
            last = states + (size_t)steps * step;
            if (k != GPURNN_BPTT_KEEP_ALL) FN(keep_checkpoints)(c, states, t0, steps);
            /* a one-chunk sequence keeps its softmax: backward then needs no second pass
             * through the output layer (min-char-rnn's shapes) */
            total += FN(output_loss)(c, states + step, t0, steps * B, T <= c->chunk_steps ? c->probs : NULL);
            if (t0 + steps == T && k != GPURNN_BPTT_KEEP_ALL) {
                /* backward starts with this chunk: its states need no recomputation */
                c->window_first = states;
                c->window_lo = t0;
                c->window_hi = T;
            }
        }
    }
    if (c->reduction == GPURNN_LOSS_MEAN) total /= (double)T * (double)B;
    if (!isfinite(total))
        return gpurnn_fail(GPURNN_ERR_NUMERIC,
                           "the loss is %g (the parameters or carried state are too large); the "
                           "carried state was not changed",
                           total);
    memcpy(c->state, last, step * sizeof(REAL));
    *loss = total;
    return GPURNN_OK;
}

static gpurnn_status FN(forward)(void *ctx, const int32_t *inputs, const int32_t *targets, int T,
                                 double *loss)
{
    cpu_ctx *c = ctx;
    const int pipelined = FN(pipelined)(c, T), saved_threads = omp_get_max_threads();
    if (FN(single_slice_threads)(c)) omp_set_num_threads(1);
    gpurnn_status s = FN(forward_pass)(c, inputs, targets, T, pipelined, loss);
    omp_set_num_threads(saved_threads);
    return s;
}

/* dWxh[:, x_r] += dz_r for every row, in row order: a scatter-add by token that gives the
 * same bits on every run. Threads own disjoint blocks of hidden units. */
static void FN(scatter_input_gradient)(const cpu_ctx *c, const REAL *dz, const int32_t *tokens,
                                       int rows, REAL *dWxh)
{
    const int V = c->V, H = c->H;
    enum { UNITS = 64 };
    int blocks = (H + UNITS - 1) / UNITS;
#pragma omp parallel for schedule(static) if ((size_t)rows * H >= GPURNN_CPU_PARALLEL_MIN)
    for (int blk = 0; blk < blocks; blk++) {
        int i0 = blk * UNITS, i1 = i0 + UNITS < H ? i0 + UNITS : H;
        for (int r = 0; r < rows; r++) {
            const REAL *row = dz + (size_t)r * H;
            REAL *col = dWxh + tokens[r];
            for (int i = i0; i < i1; i++) col[(size_t)i * V] += row[i];
        }
    }
}

/* dz_t = (1 - h_t^2) ⊙ (dh_out_t + dh_next) for the chunk's steps s = steps-1 .. 0
 * (h: the chunk's (steps, B, H) states h_t0..) and sequences [b0, b1), in place over
 * dz (which holds dh_out), carrying dh_next = Whh^T dz_t to the step before; none leaves
 * step 0 of the sequence (first_step). */
static void FN(backward_recurrence)(const cpu_ctx *c, REAL *dz_chunk, const REAL *h, int steps,
                                    int first_step, int b0, int b1)
{
    const int H = c->H;
    const size_t step = (size_t)c->B * H;
    const size_t first = (size_t)b0 * H, count = (size_t)(b1 - b0) * H;
    REAL *dh_next = c->dh_next + first;
    for (int s = steps - 1; s >= 0; s--) {
        REAL *dz = dz_chunk + (size_t)s * step + first;
        const REAL *ht = h + (size_t)s * step + first;
        for (size_t i = 0; i < count; i++) dz[i] = FN_TANH_BACKWARD(ht[i], dz[i] + dh_next[i]);
        if (!(first_step && s == 0)) FN(recurrent_product_backward)(c, dz, dh_next, b1 - b0);
    }
}

/* backward_recurrence over the whole batch, each thread on its slice as in forward. */
static void FN(run_backward_recurrence)(const cpu_ctx *c, REAL *dz, const REAL *h, int steps, int first_step)
{
    const int slices = FN(recurrence_slices)(c);
    const int saved_threads = FN(enter_serial_blas)();
    if (slices == 1) {
        FN(backward_recurrence)(c, dz, h, steps, first_step, 0, c->B);
    } else {
#pragma omp parallel num_threads(slices)
        {
            int b0, b1;
            FN(batch_slice)(c, &b0, &b1);
            FN(backward_recurrence)(c, dz, h, steps, first_step, b0, b1);
        }
    }
    omp_set_num_threads(saved_threads);
}

/* The output layer's backward for rows (h: (rows, H), the states of steps t0..):
 * dY (rows, V) = softmax(Y) - onehot(target), times 1/(T*B) for MEAN, from the logits
 * recomputed and the stored log-sum-exps; dby += colsum(dY); dWhy (V, H) += dY^T · h;
 * dh_out (rows, H) = dY · Why into dz. */
static void FN(output_backward)(cpu_ctx *c, const REAL *h, int t0, int rows, REAL *dz)
{
    const int V = c->V, H = c->H;
    const REAL *Why = WHY(c->params, c), *by = BY(c->params, c);
    REAL *dWhy = WHY(c->grads, c), *dby = BY(c->grads, c);
    const REAL scale =
        c->reduction == GPURNN_LOSS_MEAN ? (REAL)(1.0 / ((double)c->T * c->B)) : (REAL)1;
    const int32_t *tgt = c->targets + (size_t)t0 * c->B;
    const double *lse = c->row_lse + (size_t)t0 * c->B;
    if (c->probs_kept) {
        /* the forward pass's softmax (kept for a one-chunk sequence; left as it is, so
         * that a second backward adds the same again) */
#pragma omp parallel for schedule(static) if ((size_t)rows * V >= GPURNN_CPU_PARALLEL_MIN)
        for (int r = 0; r < rows; r++) {
            REAL *y = c->logits + (size_t)r * V;
            const REAL *p = c->probs + (size_t)r * V;
            for (int v = 0; v < V; v++) y[v] = p[v] * scale;
            y[tgt[r]] -= scale;
        }
    } else {
        FN(output_product)(c, h, rows);
#pragma omp parallel for schedule(static) if ((size_t)rows * V >= GPURNN_CPU_PARALLEL_MIN)
        for (int r = 0; r < rows; r++) {
            REAL *y = c->logits + (size_t)r * V;
            REAL shift = (REAL)lse[r];
            for (int v = 0; v < V; v++) y[v] = EXP_NONPOSITIVE(y[v] + by[v] - shift) * scale;
            y[tgt[r]] -= scale;
        }
    }
    CBLAS_GEMV(CblasRowMajor, CblasTrans, rows, V, 1, c->logits, V, c->ones, 1, 1, dby, 1);
    CBLAS_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, V, H, rows, 1, c->logits, V, h, H, 1, dWhy, H);
    CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, H, V, 1, c->logits, V, Why, H, 0, dz, H);
}

/* The recurrence's weight gradients from a chunk's dz (rows, H) and the states before
 * (h_prev: (rows, H)): dWhh (H, H) += dZ^T · h_prev; dbh += colsum(dZ); dWxh[:, x] += dz. */
static void FN(recurrence_weight_grads)(cpu_ctx *c, const REAL *dz, const REAL *h_prev, int t0, int rows)
{
    const int H = c->H;
    CBLAS_GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, H, H, rows, 1, dz, H, h_prev, H, 1,
               WHH(c->grads, c), H);
    CBLAS_GEMV(CblasRowMajor, CblasTrans, rows, H, 1, dz, H, c->ones, 1, 1, BH(c->grads, c), 1);
    FN(scatter_input_gradient)(c, dz, c->inputs + (size_t)t0 * c->B, rows, WXH(c->grads, c));
}

static void FN(backward_pass)(cpu_ctx *c, int pipelined)
{
    const int B = c->B, T = c->T, C = c->chunk_steps;
    const size_t step = (size_t)B * c->H;
    memset(c->dh_next, 0, step * sizeof(REAL));
    const int chunks = (T + C - 1) / C;
#define CHUNK_T0(i) ((i) * C)
#define CHUNK_STEPS(i) (T - (i) * C < C ? T - (i) * C : C)

    if (pipelined) {
        /* Stage i: one thread runs the recurrence backwards through chunk i while another
         * does the output layer of chunk i-1; chunk i+1's weight gradients (its dz was
         * done at stage i+1) go to the thread with less to do: the other one with the
         * full history, the first one when the other also recomputes states. Chunk i's
         * dz is dz[i % 3]. Every sum over chunks still runs from the last to the first. */
        const size_t chunk_values = (size_t)C * step;
        REAL *dz[3] = {c->dh, c->dh_alt, c->dh_alt + chunk_values};
        const int grads_on_first = c->ckpt_every != GPURNN_BPTT_KEEP_ALL;
        const int last = chunks - 1;
        c->window_lo = 1; /* the segment buffers share the window's memory */
        c->window_hi = 0;
#define STATES(i) FN(pipeline_states)(c, CHUNK_T0(i)) /* state t0 of chunk i .. */
        FN(output_backward)(c, STATES(last) + step, CHUNK_T0(last), CHUNK_STEPS(last) * B, dz[last % 3]);
        for (int i = last; i >= 0; i--) {
#pragma omp parallel num_threads(2)
            {
                const int id = omp_get_thread_num(), alone = omp_get_num_threads() == 1;
                /* chunk i's interval was made ready by the previous stage (or above); the
                 * other thread only ever recomputes the interval in the other buffer */
                const int first = id == 0, other = id == 1 || alone;
                if (first)
                    FN(run_backward_recurrence)(c, dz[i % 3], STATES(i) + step, CHUNK_STEPS(i), i == 0);
                if (i < last && (grads_on_first ? first : other))
                    FN(recurrence_weight_grads)(c, dz[(i + 1) % 3], STATES(i + 1), CHUNK_T0(i + 1),
                                                CHUNK_STEPS(i + 1) * B);
                if (i > 0 && other)
                    FN(output_backward)(c, STATES(i - 1) + step, CHUNK_T0(i - 1), CHUNK_STEPS(i - 1) * B,
                                        dz[(i - 1) % 3]);
            }
        }
        FN(recurrence_weight_grads)(c, dz[0], STATES(0), 0, CHUNK_STEPS(0) * B);
#undef STATES
        return;
    }

    /* Chunks of time from the last to the first, so the recurrence runs backwards through
     * each chunk right after its output-layer gradients are known. */
    c->segment_in[0] = c->segment_in[1] = c->segment_in[2] = -1; /* the window overwrites the segment buffers */
    for (int i = chunks - 1; i >= 0; i--) {
        const int t0 = CHUNK_T0(i), steps = CHUNK_STEPS(i);
        const REAL *h_prev = FN(states_for_backward)(c, t0, t0 + steps); /* (rows, H): h_{t0-1} .. */
        const REAL *h = h_prev + step;                                    /* (rows, H): h_t0 .. */
        FN(output_backward)(c, h, t0, steps * B, c->dh);
        FN(run_backward_recurrence)(c, c->dh, h, steps, t0 == 0);
        FN(recurrence_weight_grads)(c, c->dh, h_prev, t0, steps * B);
    }
#undef CHUNK_T0
#undef CHUNK_STEPS
}

static gpurnn_status FN(backward)(void *ctx)
{
    cpu_ctx *c = ctx;
    const int pipelined = FN(pipelined)(c, c->T), saved_threads = omp_get_max_threads();
    if (FN(single_slice_threads)(c)) omp_set_num_threads(1);
    FN(backward_pass)(c, pipelined);
    omp_set_num_threads(saved_threads);
    return GPURNN_OK;
}

static void FN(memory)(void *ctx, gpurnn_memory_report *report)
{
    const cpu_ctx *c = ctx;
    for (int kind = 0; kind < GPURNN_MEMORY_KINDS; kind++) report->host[kind] += c->bytes[kind];
}

static gpurnn_status FN(grad_sumsq)(void *ctx, double *sumsq)
{
    cpu_ctx *c = ctx;
    size_t blocks = gpurnn_cpu_block_count(c->n);
#pragma omp parallel for schedule(static) if (c->n >= GPURNN_CPU_PARALLEL_MIN)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t i0 = blk * GPURNN_CPU_BLOCK, i1 = i0 + GPURNN_CPU_BLOCK < c->n ? i0 + GPURNN_CPU_BLOCK : c->n;
        /* A vector of partial sums (as wide as the build's vectors), added up at the
         * end: the order is fixed by the code, so every run gives the same result (the
         * buffer is aligned, so the vectoriser's peeling is the same every time too). */
        const REAL *g = c->grads;
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (size_t i = i0; i < i1; i++) acc += (double)g[i] * (double)g[i];
        c->block_sums[blk] = acc;
    }
    double total = 0;
    for (size_t blk = 0; blk < blocks; blk++) total += c->block_sums[blk];
    *sumsq = total;
    return GPURNN_OK;
}

static gpurnn_status FN(grad_scale)(void *ctx, double factor)
{
    cpu_ctx *c = ctx;
    const REAL f = (REAL)factor;
#pragma omp parallel for schedule(static) if (c->n >= GPURNN_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < c->n; i++) c->grads[i] *= f;
    return GPURNN_OK;
}

static gpurnn_status FN(grad_clamp)(void *ctx, double limit)
{
    cpu_ctx *c = ctx;
    const REAL hi = (REAL)limit, lo = -hi;
#pragma omp parallel for schedule(static) if (c->n >= GPURNN_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < c->n; i++) {
        REAL g = c->grads[i];
        c->grads[i] = g > hi ? hi : (g < lo ? lo : g); /* NaN stays NaN */
    }
    return GPURNN_OK;
}

/* x - x is 0 exactly when x is finite; unlike isfinite() it vectorises. */
#define CPU_FINITE(x) ((x) - (x) == 0)

/* Applies the rule to n elements, storing the results only when store is set (a
 * constant at each call, so each use compiles to its own loop). Returns nonzero if any
 * gradient or result is not finite. One loop per kind keeps each loop vectorisable. */
static inline int FN(update_block)(const gpurnn_update_rule *rule, const REAL *g, REAL *p, REAL *s0,
                                   REAL *s1, size_t n, const int store)
{
    const REAL lr = (REAL)rule->learning_rate, momentum = (REAL)rule->momentum;
    const REAL beta1 = (REAL)rule->beta1, beta2 = (REAL)rule->beta2, eps = (REAL)rule->eps;
    const REAL bc1 = (REAL)rule->bias_correction1, bc2 = (REAL)rule->bias_correction2;
    int bad = 0;
    switch (rule->kind) {
    case GPURNN_SGD:
        for (size_t i = 0; i < n; i++) {
            REAL pi = p[i], vi = s0[i];
            FN_SGD(&pi, &vi, g[i], lr, momentum);
            bad |= !(CPU_FINITE(g[i]) & CPU_FINITE(pi) & CPU_FINITE(vi));
            if (store) {
                p[i] = pi;
                s0[i] = vi;
            }
        }
        break;
    case GPURNN_ADAGRAD:
        for (size_t i = 0; i < n; i++) {
            REAL pi = p[i], mi = s0[i];
            FN_ADAGRAD(&pi, &mi, g[i], lr, eps);
            bad |= !(CPU_FINITE(g[i]) & CPU_FINITE(pi) & CPU_FINITE(mi));
            if (store) {
                p[i] = pi;
                s0[i] = mi;
            }
        }
        break;
    case GPURNN_ADAM:
        for (size_t i = 0; i < n; i++) {
            REAL pi = p[i], mi = s0[i], vi = s1[i];
            FN_ADAM(&pi, &mi, &vi, g[i], lr, beta1, beta2, eps, bc1, bc2);
            bad |= !(CPU_FINITE(g[i]) & CPU_FINITE(pi) & CPU_FINITE(mi) & CPU_FINITE(vi));
            if (store) {
                p[i] = pi;
                s0[i] = mi;
                s1[i] = vi;
            }
        }
        break;
    }
    return bad;
}

/* Two passes so the update is all or nothing: the first computes every new value without
 * storing it, the second stores. */
static gpurnn_status FN(step)(void *ctx, const gpurnn_update_rule *rule, size_t *bad_index)
{
    cpu_ctx *c = ctx;
    c->wxh_t_fresh = 0;
    size_t blocks = gpurnn_cpu_block_count(c->n);
    double *block_bad = c->block_sums;
#pragma omp parallel for schedule(static) if (c->n >= GPURNN_CPU_PARALLEL_MIN)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t i0 = blk * GPURNN_CPU_BLOCK, len = c->n - i0 < GPURNN_CPU_BLOCK ? c->n - i0 : GPURNN_CPU_BLOCK;
        block_bad[blk] = FN(update_block)(rule, c->grads + i0, c->params + i0, c->opt0 + i0,
                                          c->opt1 + i0, len, 0);
    }
    for (size_t blk = 0; blk < blocks; blk++) {
        if (!block_bad[blk]) continue;
        size_t i = blk * GPURNN_CPU_BLOCK;
        while (!FN(update_block)(rule, c->grads + i, c->params + i, c->opt0 + i, c->opt1 + i, 1, 0)) i++;
        *bad_index = i;
        return GPURNN_ERR_NUMERIC;
    }
#pragma omp parallel for schedule(static) if (c->n >= GPURNN_CPU_PARALLEL_MIN)
    for (size_t blk = 0; blk < blocks; blk++) {
        size_t i0 = blk * GPURNN_CPU_BLOCK, len = c->n - i0 < GPURNN_CPU_BLOCK ? c->n - i0 : GPURNN_CPU_BLOCK;
        FN(update_block)(rule, c->grads + i0, c->params + i0, c->opt0 + i0, c->opt1 + i0, len, 1);
    }
    return GPURNN_OK;
}

/* One sequence of sampling from state h0 (H), with scratch h (2, H), y (V) and weights
 * (V): feeds first_token, then each token drawn, writing draw k to out[k * out_stride]
 * with the random number of gpurnn_sample_draw_index(b, k). On NUMERIC, *bad_draw is k.
 * gpurnn_sample and every sequence of gpurnn_sample_batch come here, so that sequence 0
 * of a batch draws sample's tokens. Runs BLAS on the calling thread only. */
static gpurnn_status FN(sample_sequence)(const cpu_ctx *c, const REAL *h0, REAL *h, REAL *y, double *weights,
                                         int32_t first_token, int n, double temperature,
                                         unsigned long long seed, uint64_t b, int32_t *out,
                                         size_t out_stride, int *bad_draw)
{
    const int V = c->V, H = c->H;
    const REAL *Wxh = WXH(c->params, c), *Whh = WHH(c->params, c), *Why = WHY(c->params, c);
    const REAL *bh = BH(c->params, c), *by = BY(c->params, c);
    REAL *next = h + H;
    memcpy(h, h0, (size_t)H * sizeof(REAL));
    int32_t x = first_token;
    for (int k = 0; k < n; k++) {
        CBLAS_GEMV(CblasRowMajor, CblasNoTrans, H, H, 1, Whh, H, h, 1, 0, next, 1);
        for (int i = 0; i < H; i++) next[i] = TANH(next[i] + Wxh[(size_t)i * V + x] + bh[i]);
        REAL *swap = h;
        h = next;
        next = swap;
        CBLAS_GEMV(CblasRowMajor, CblasNoTrans, V, H, 1, Why, H, h, 1, 0, y, 1);
        for (int v = 0; v < V; v++) y[v] += by[v];
        for (int v = 0; v < V; v++) weights[v] = (double)y[v];
        gpurnn_status s = gpurnn_cpu_draw(weights, V, temperature, seed, gpurnn_sample_draw_index(b, (uint64_t)k), &x);
        if (s != GPURNN_OK) {
            *bad_draw = k;
            return s;
        }
        out[(size_t)k * out_stride] = x;
    }
    return GPURNN_OK;
}

static gpurnn_status FN(sample)(void *ctx, int32_t first_token, int n, double temperature,
                                unsigned long long seed, int32_t *out)
{
    cpu_ctx *c = ctx;
    const int saved_threads = FN(enter_serial_blas)();
    int bad_draw = -1;
    gpurnn_status s = FN(sample_sequence)(c, c->state /* sequence 0 */, c->sample_h, c->sample_logits,
                                          c->sample_y, first_token, n, temperature, seed, 0, out, 1, &bad_draw);
    omp_set_num_threads(saved_threads);
    return s;
}

/* The sequences are independent: each thread samples whole sequences, one at a time, with
 * single-threaded BLAS (as in the recurrence), so results do not depend on the thread count. */
static gpurnn_status FN(sample_batch)(void *ctx, const int32_t *first_tokens, int n, double temperature,
                                      unsigned long long seed, int32_t *out)
{
    cpu_ctx *c = ctx;
    const int B = c->B, V = c->V, H = c->H;
    const int threads = FN(enter_serial_blas)();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (B > 1)
    for (int b = 0; b < B; b++) {
        c->batch_bad_draw[b] = -1;
        FN(sample_sequence)(c, c->state + (size_t)b * H, c->batch_h + (size_t)b * c->batch_h_stride,
                            c->batch_logits + (size_t)b * c->batch_y_stride, c->batch_weights + (size_t)b * V,
                            first_tokens[b], n, temperature, seed, (uint64_t)b, out + b, (size_t)B,
                            &c->batch_bad_draw[b]);
    }
    omp_set_num_threads(threads);
    /* the draws' own messages were set on the worker threads: report on this one */
    for (int b = 0; b < B; b++)
        if (c->batch_bad_draw[b] >= 0)
            return gpurnn_fail(GPURNN_ERR_NUMERIC, "a logit of draw %d of sequence b=%d is not finite",
                               c->batch_bad_draw[b], b);
    return GPURNN_OK;
}

/* Where state j of an inference call sits (see infer_ring). */
static REAL *FN(infer_state)(const cpu_ctx *c, int j)
{
    return c->infer_states + (size_t)(j % c->infer_ring) * c->B * c->H;
}

/* One recurrence step of the whole batch, each thread on its slice as in run_recurrence
 * (the same slices, so the same products). */
static void FN(infer_recurrence_step)(const cpu_ctx *c, const REAL *prev, REAL *cur, const int32_t *xt)
{
    const int slices = FN(recurrence_slices)(c);
    const int saved_threads = FN(enter_serial_blas)();
    if (slices == 1) {
        FN(recurrence_step)(c, prev, cur, xt, 0, c->B);
    } else {
#pragma omp parallel num_threads(slices)
        {
            int b0, b1;
            FN(batch_slice)(c, &b0, &b1);
            FN(recurrence_step)(c, prev, cur, xt, b0, b1);
        }
    }
    omp_set_num_threads(saved_threads);
}

/* The output layer of one step for the whole batch: logits (B, V) = h (B, H) · Why^T + by,
 * then per sequence, in float64, the distribution into dist (B, V; NULL: none) and
 * infer_rows[b] = log p[tgt[b]] (tgt NULL: 0), NaN where a logit is not finite. The
 * log-sum-exp is formed as the training forward's is, so that scores match its loss. */
static void FN(infer_output)(cpu_ctx *c, const REAL *h, const int32_t *tgt, gpurnn_prob_kind kind, double *dist)
{
    const int V = c->V, B = c->B;
    const REAL *by = BY(c->params, c);
    CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, B, V, c->H, 1, h, c->H, WHY(c->params, c), c->H, 0,
               c->infer_logits, V);
#pragma omp parallel for schedule(static) if ((size_t)B * V >= GPURNN_CPU_PARALLEL_MIN)
    for (int b = 0; b < B; b++) {
        REAL *y = c->infer_logits + (size_t)b * V;
        REAL max = y[0] + by[0];
        int finite = 1;
        for (int v = 0; v < V; v++) {
            y[v] += by[v];
            if (y[v] > max) max = y[v];
            finite &= CPU_FINITE(y[v]);
        }
        if (!finite) {
            c->infer_rows[b] = NAN;
            continue;
        }
        const double shift = (double)max;
        double sum = 0;
        for (int v = 0; v < V; v++) sum += exp((double)y[v] - shift);
        const double log_sum = log(sum);
        if (dist) {
            double *d = dist + (size_t)b * V;
            if (kind == GPURNN_LOG_PROBS)
                for (int v = 0; v < V; v++) d[v] = ((double)y[v] - shift) - log_sum;
            else
                for (int v = 0; v < V; v++) d[v] = exp((double)y[v] - shift) / sum;
        }
        c->infer_rows[b] = tgt ? (double)y[tgt[b]] - (shift + log_sum) : 0.0;
    }
}

static gpurnn_status FN(infer)(void *ctx, const int32_t *inputs, const int32_t *targets, int T,
                               gpurnn_infer_output what, gpurnn_prob_kind kind, double *out,
                               double *log_likelihood)
{
    cpu_ctx *c = ctx;
    const int B = c->B, V = c->V;
    const size_t step = (size_t)B * c->H;
    if (!c->wxh_t_fresh) FN(transpose_wxh)(c);
    memcpy(FN(infer_state)(c, 0), c->state, step * sizeof(REAL));
    double total = 0;
    for (int t = 0; t < T; t++) {
        REAL *h = FN(infer_state)(c, t + 1);
        FN(infer_recurrence_step)(c, FN(infer_state)(c, t), h, inputs + (size_t)t * B);
        const int wants = what == GPURNN_INFER_EACH_STEP || (what == GPURNN_INFER_LAST && t == T - 1);
        if (!wants && !targets) continue;
        double *dist = !wants ? NULL : what == GPURNN_INFER_EACH_STEP ? out + (size_t)t * B * V : out;
        FN(infer_output)(c, h, targets ? targets + (size_t)t * B : NULL, kind, dist);
        for (int b = 0; b < B; b++) {
            if (isnan(c->infer_rows[b]))
                return gpurnn_fail(GPURNN_ERR_NUMERIC,
                                   "a logit at t=%d, b=%d is not finite (the parameters are too large); the "
                                   "carried state was not changed",
                                   t, b);
            total += c->infer_rows[b];
        }
    }
    if (targets && !isfinite(total))
        return gpurnn_fail(GPURNN_ERR_NUMERIC, "the log-likelihood is %g; the carried state was not changed", total);
    memcpy(c->state, FN(infer_state)(c, T), step * sizeof(REAL));
    if (log_likelihood) *log_likelihood = total;
    return GPURNN_OK;
}

const gpurnn_backend_ops CPU_OPS_NAME(SFX) = {
    .name = "cpu",
    .create = FN(create),
    .destroy = FN(destroy),
    .read = FN(read),
    .write = FN(write),
    .fill_zero = FN(fill_zero),
    .forward = FN(forward),
    .backward = FN(backward),
    .grad_sumsq = FN(grad_sumsq),
    .grad_scale = FN(grad_scale),
    .grad_clamp = FN(grad_clamp),
    .step = FN(step),
    .sample = FN(sample),
    .infer = FN(infer),
    .sample_batch = FN(sample_batch),
    .memory = FN(memory),
};
