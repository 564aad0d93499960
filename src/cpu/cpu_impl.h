/* The CPU backend, written once for both precisions. A file that includes this defines
 *   REAL          float or double
 *   SFX           f32 or f64 (suffix of every function defined here)
 *   CBLAS_GEMM    cblas_sgemm or cblas_dgemm
 *   CBLAS_GEMV    cblas_sgemv or cblas_dgemv
 *   TANH          gpurnn_fast_tanhf or tanh
 *   SIGMOID       the logistic function of the dtype
 *   EXP_NONPOSITIVE  e^x for x <= 0 (the softmax's exponents)
 * and gets the table CPU_OPS(SFX).
 *
 * Shapes are row-major and noted as (rows, cols). A model is L layers of one cell
 * (gpurnn.h's gpurnn_cell) under one output layer; G is the cell's gate count (1, 3, 4).
 *
 * Activations are kept as streams of (B, H) values per time step: h of every layer, c of
 * every layer for LSTM, then the gates each gated layer saves for backward (GRU: r, z, n
 * and W_hn h_prev + b_hn; LSTM: i, f, g, o). The vanilla model has one stream, h. State j
 * (B, H per stream) is the state before step j: state 0 is the carried state at forward
 * time and state t+1 the state after step t (its gates: those of step t). An array of
 * states (the full history hs, the checkpointed run's window, the inference ring) holds
 * each stream in its own region, the regions `stride` values apart (a multiple of
 * GPURNN_CPU_ALIGN, so every stream's state j has the alignment stream 0's has); a
 * cpu_states names state j of such an array, all its streams. A chunk of steps t0..t1-1
 * works on states t0..t1, contiguous in every stream: the h of a layer for the chunk's
 * steps is one (rows = (t1-t0)*B, H) block. With the full history they all sit in hs
 * (max_T + 1 states); with checkpointed BPTT (src/bptt_plan.h) only every k-th state's
 * carried streams (h, c) are kept in ckpts, and a window holds the states of the chunks at
 * hand, recomputed from the checkpoint before them.
 *
 * Per step and layer, one product of h_prev by W_hh (and, above layer 0, one of the layer
 * below's h by W_ih; layer 0 gathers its one-hot input's column of W_ih) and one fused
 * pointwise pass of the cell; the products have the same shapes in training, in
 * backward's recomputation and in inference, so every one of them computes the same bits.
 * Backward runs the chunks from the last, layer after layer downwards: per step one fused
 * pass of the cell's derivative and one product by W_hh, then per chunk and layer the
 * weight gradients as GEMMs and the gradient passed to the layer below as one GEMM.
 *
 * Threads: training's loops, products and pipeline stages run on the model's own thread
 * pool (cpu_pool.h: it sleeps rather than spins when it waits, which keeps the backend fast
 * on a busy machine), each cut into items from the sizes and the caller's OpenMP thread
 * count alone; BLAS runs single-threaded inside every item. Inference and sampling keep
 * OpenMP's loops (one parallel loop per step or per call).
 *
 * Determinism: no reduction depends on which thread runs it, or on how many threads are
 * running at the time. Sums over rows go through BLAS or through fixed-size blocks summed
 * in order. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../alloc.h"
#include "../bptt_plan.h"
#include "../error.h"
#include "../layout.h"
#include "../model.h"
#include "../rng.h"
#include "../update_math.h"
#include "cpu_common.h"
#include "cpu_pool.h"

#define CPU_CAT2(a, b) a##_##b
#define CPU_CAT(a, b) CPU_CAT2(a, b)
#define FN(name) CPU_CAT(cpu_##name, SFX)
#define CPU_OPS_NAME(sfx) CPU_CAT2(gpurnn_cpu_ops, sfx)

/* State j of an array of states: stream s of it (B, H) at p + s * stride. */
typedef struct {
    REAL *p;
    size_t stride;
} cpu_states;

/* Rotating sets of backward chunk buffers: chunk i uses set i % 3 in the pipelined passes,
 * set 0 otherwise. */
enum { CPU_BACKWARD_SETS = 3 };

typedef struct {
    int V, H, B, max_T;
    gpurnn_loss_reduction reduction;
    gpurnn_layout lay;      /* where each layer's tensors sit in the flat buffers */
    size_t *offsets;        /* (4, L): W_ih, W_hh, b_ih, b_hh of each layer, from lay (the time
                               loops read them at every step) */
    size_t why_offset, by_offset;
    int L, G;               /* layers; gates per layer */
    gpurnn_cell cell;
    int carried;            /* streams per layer carried across steps: 1 (h) or 2 (h, c) */
    int gate_streams;       /* saved gate streams per layer: 0, or 4 for GRU and LSTM */
    int streams;            /* per state: L * (carried + gate_streams) */
    size_t n;               /* parameter count */
    REAL *params;           /* (n) flat layout */
    REAL *grads;            /* (n) */
    REAL *opt0, *opt1;      /* (n) each: optimizer slots */
    REAL *w_ih0_t;          /* (V, G*H): W_ih of layer 0 transposed as of the last forward, so
                               that the input column of a token is contiguous (a row) */
    REAL *state;            /* (L * carried, B, H) carried state, gpurnn.h's layout */
    int ckpt_every;         /* k, or GPURNN_BPTT_KEEP_ALL */
    REAL *hs;               /* (streams, max_T + 1, B, H): the full history; NULL with checkpoints */
    size_t hs_stride;
    REAL *ckpts;            /* (L * carried, max_T / k + 1, B, H): state j*k at [j] */
    size_t ckpt_stride;
    REAL *window;           /* (streams, pad_max + window_states, B, H), or three segment buffers */
    size_t window_stride;
    cpu_states window_first; /* where state window_lo sits in window */
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
    REAL *step_gx;          /* (B, G*H): a step's input projection, above layer 0 */
    REAL *step_gh;          /* (B, G*H): a step's recurrent projection, gated cells */
    int backward_sets;      /* sets of the chunk buffers below: 3 when a pipeline may run, else 1 */
    REAL *dz;               /* (sets, L, chunk_steps*B, G*H): pre-activation gradients of the
                               gates, input side; for G = 1 also dh_out of the layer (in place) */
    REAL *dz_hidden;        /* GRU: (sets, L, chunk_steps*B, 3H), the hidden side (the n gate's
                               differs: r * dn); NULL otherwise (the same as dz) */
    REAL *dh_out;           /* G > 1: (sets, chunk_steps*B, H): dh from above; NULL for G = 1 */
    REAL *dh_next;          /* (L, B, H) */
    REAL *dc_next;          /* LSTM: (L, B, H) */
    REAL *ones;             /* (chunk_steps*B) for column sums through gemv */
    double *row_loss;       /* (chunk_steps*B) */
    double *block_sums;     /* (blocks of the flat buffer) */
    size_t sample_stride;   /* values of one sequence's sampling workspace, rounded to GPURNN_CPU_ALIGN */
    REAL *sample_work;      /* (sample_stride): sampling keeps away from the training buffers */
    double *sample_y;       /* (V) */
    REAL *sample_logits;    /* (V) */
    int w_ih0_t_fresh;      /* w_ih0_t matches the parameters (cleared by every write to them) */
    /* Inference (infer, sample_batch) keeps away from the training buffers too. An
     * inference call puts its state j (j = 0 the carried state, j = t+1 the state after
     * step t) in slot j % infer_ring: infer_ring is a multiple of the period of
     * B*H*sizeof(REAL) modulo GPURNN_CPU_ALIGN (and >= 2), so state j has the alignment it
     * has in a training forward's history and BLAS computes the same bits from it. */
    int infer_ring;
    REAL *infer_states;     /* (streams, infer_ring, B, H) */
    size_t infer_stride;
    REAL *infer_logits;     /* (B, V) */
    double *infer_rows;     /* (B): log p[target] per sequence (0 without targets), NaN for a
                               non-finite logit */
    size_t batch_y_stride;  /* V rounded up to GPURNN_CPU_ALIGN bytes */
    REAL *batch_work;       /* (B, sample_stride): each sequence's sampling workspace */
    REAL *batch_logits;     /* (B, batch_y_stride) */
    double *batch_weights;  /* (B, V) */
    int *batch_bad_draw;    /* (B): the draw whose logits were not finite, -1 if none */
    size_t bytes[GPURNN_MEMORY_KINDS];
    gpurnn_cpu_pool *pool;  /* the threads of training's loops and stages (cpu_pool.h) */
    int split_threads;      /* the threads the current pass cuts its products and loops for: 1
                               where the recurrence is one slice (see single_slice_threads) */
} FN(ctx);

typedef FN(ctx) cpu_ctx;

static REAL *FN(buffer)(cpu_ctx *c, gpurnn_buffer buf, size_t *count)
{
    switch (buf) {
    case GPURNN_BUF_PARAMS: *count = c->n; return c->params;
    case GPURNN_BUF_GRADS: *count = c->n; return c->grads;
    case GPURNN_BUF_OPT0: *count = c->n; return c->opt0;
    case GPURNN_BUF_OPT1: *count = c->n; return c->opt1;
    case GPURNN_BUF_STATE: *count = (size_t)c->L * c->carried * c->B * c->H; return c->state;
    default: *count = 0; return NULL;
    }
}

/* Views of the tensors inside a flat buffer (src/layout.h). */
#define W_IH(p, c, l) ((p) + (c)->offsets[l])                    /* (G*H, V for l = 0, else H) */
#define W_HH(p, c, l) ((p) + (c)->offsets[(c)->L + (l)])         /* (G*H, H) */
#define B_IH(p, c, l) ((p) + (c)->offsets[2 * (c)->L + (l)])     /* (G*H); tanh/ReLU: b (H) */
#define B_HH(p, c, l) ((p) + (c)->offsets[3 * (c)->L + (l)])     /* (G*H); tanh/ReLU: b again */
#define WHY(p, c) ((p) + (c)->why_offset)                        /* (V, H) */
#define BY(p, c) ((p) + (c)->by_offset)                          /* (V) */

/* Stream indices within a state: h of layer l, c of layer l, gate k of layer l. */
#define H_STREAM(c, l) (l)
#define C_STREAM(c, l) ((c)->L + (l))
#define GATE_STREAM(c, l, k) ((c)->L * (c)->carried + (l) * (c)->gate_streams + (k))

static REAL *FN(stream)(cpu_states s, int k) { return s.p + (size_t)k * s.stride; }

/* State j + dj of the same array. */
static cpu_states FN(later)(const cpu_ctx *c, cpu_states s, int dj)
{
    s.p += (ptrdiff_t)dj * c->B * c->H;
    return s;
}

/* Copies the carried streams (h, c of every layer) of state src to state dst. */
static void FN(copy_carried)(const cpu_ctx *c, cpu_states dst, cpu_states src)
{
    const size_t bytes = (size_t)c->B * c->H * sizeof(REAL);
    for (int k = 0; k < c->L * c->carried; k++)
        if (FN(stream)(dst, k) != FN(stream)(src, k)) memmove(FN(stream)(dst, k), FN(stream)(src, k), bytes);
}

/* The carried state as a state of one: its streams are the layout's (L*carried, B, H) blocks. */
static cpu_states FN(carried_state)(const cpu_ctx *c)
{
    cpu_states s = {c->state, (size_t)c->B * c->H};
    return s;
}

/* Rounds a stream region of `values` up to GPURNN_CPU_ALIGN bytes. */
static size_t FN(aligned_values)(size_t values)
{
    const size_t per_line = GPURNN_CPU_ALIGN / sizeof(REAL);
    return (values + per_line - 1) / per_line * per_line;
}

static void FN(destroy)(void *ctx)
{
    cpu_ctx *c = ctx;
    if (!c) return;
    void *owned[] = {c->params,       c->grads,         c->opt0,          c->opt1,         c->state,
                     c->w_ih0_t,      c->hs,            c->ckpts,         c->window,       c->inputs,
                     c->targets,      c->row_lse,       c->logits,        c->probs,        c->step_gx,
                     c->step_gh,      c->dz,            c->dz_hidden,     c->dh_out,       c->dh_next,
                     c->dc_next,      c->ones,          c->row_loss,      c->block_sums,   c->sample_work,
                     c->sample_y,     c->sample_logits, c->infer_states,  c->infer_logits, c->infer_rows,
                     c->batch_work,   c->batch_logits,  c->batch_weights, c->batch_bad_draw};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++) gpurnn_aligned_free(owned[i]);
    gpurnn_free(c->offsets);
    gpurnn_cpu_pool_destroy(c->pool);
    gpurnn_free(c);
}

static gpurnn_status FN(create)(const gpurnn_config *cfg, void **out)
{
    cpu_ctx *c = gpurnn_calloc(1, sizeof *c);
    if (!c) return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", sizeof *c);
    c->V = cfg->vocab_size;
    c->H = cfg->hidden_size;
    c->B = cfg->batch_size;
    c->max_T = cfg->max_seq_len;
    c->reduction = cfg->reduction;
    gpurnn_layout_of(&c->lay, cfg);
    c->L = c->lay.L;
    c->G = c->lay.G;
    c->cell = cfg->cell;
    c->carried = gpurnn_layout_carried_streams(&c->lay);
    c->gate_streams = gpurnn_layout_gate_streams(&c->lay);
    c->streams = (int)gpurnn_layout_step_streams(&c->lay);
    c->n = c->lay.count;
    c->offsets = gpurnn_malloc(4 * (size_t)c->L * sizeof *c->offsets);
    if (!c->offsets) {
        const size_t bytes = 4 * (size_t)c->L * sizeof(size_t);
        gpurnn_free(c);
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", bytes);
    }
    c->pool = gpurnn_cpu_pool_create();
    if (!c->pool) {
        FN(destroy)(c);
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes for the CPU backend's thread pool",
                           gpurnn_cpu_pool_size());
    }
    for (int l = 0; l < c->L; l++) {
        c->offsets[l] = gpurnn_layout_w_ih(&c->lay, l);
        c->offsets[c->L + l] = gpurnn_layout_w_hh(&c->lay, l);
        c->offsets[2 * c->L + l] = gpurnn_layout_b_ih(&c->lay, l);
        c->offsets[3 * c->L + l] = gpurnn_layout_b_hh(&c->lay, l);
    }
    c->why_offset = gpurnn_layout_why(&c->lay);
    c->by_offset = gpurnn_layout_by(&c->lay);
    c->chunk_steps = gpurnn_chunk_steps(c->V, c->H, c->B, c->max_T);
    c->ckpt_every = cfg->bptt_checkpoint_every;
    c->window_lo = 1;
    c->window_hi = 0;
    c->segment_in[0] = c->segment_in[1] = c->segment_in[2] = -1;
    size_t V = (size_t)c->V, H = (size_t)c->H, B = (size_t)c->B, T = (size_t)c->max_T;
    size_t GH = (size_t)c->G * H, L = (size_t)c->L, S = (size_t)c->streams, carried = L * (size_t)c->carried;
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
    c->hs_stride = FN(aligned_values)(history * B * H);
    c->ckpt_stride = FN(aligned_values)(ckpts * B * H);
    c->window_stride = FN(aligned_values)(window * B * H);
    c->backward_sets = keep_all || c->segment_cap ? CPU_BACKWARD_SETS : 1;
    const size_t sets = (size_t)c->backward_sets;
    {
        const size_t period = gpurnn_window_pad_max(B * H * sizeof(REAL), GPURNN_CPU_ALIGN) + 1;
        c->infer_ring = (int)(period < 2 ? 2 : period);
        c->infer_stride = FN(aligned_values)((size_t)c->infer_ring * B * H);
        /* two copies of every carried stream, the step's two projections and four gates */
        c->sample_stride = FN(aligned_values)(2 * carried * H + 2 * GH + 4 * H);
        c->batch_y_stride = FN(aligned_values)(V);
    }
    const gpurnn_memory_kind P = GPURNN_MEMORY_PARAMETERS, G = GPURNN_MEMORY_GRADIENTS,
                             O = GPURNN_MEMORY_OPTIMIZER, A = GPURNN_MEMORY_ACTIVATIONS,
                             W = GPURNN_MEMORY_WORKSPACE;
    const int gated = c->G > 1;
    gpurnn_cpu_allocation table[] = {
        {(void **)&c->params, c->n, sizeof(REAL), "parameters", P},
        {(void **)&c->grads, c->n, sizeof(REAL), "gradients", G},
        {(void **)&c->opt0, c->n, sizeof(REAL), "optimizer state", O},
        {(void **)&c->opt1, c->n, sizeof(REAL), "optimizer state", O},
        {(void **)&c->state, carried * B * H, sizeof(REAL), "carried state", W},
        {(void **)&c->w_ih0_t, V * GH, sizeof(REAL), "transposed input weights", W},
        {(void **)&c->hs, S * c->hs_stride, sizeof(REAL), "hidden states", A},
        {(void **)&c->ckpts, carried * c->ckpt_stride, sizeof(REAL), "BPTT checkpoints", A},
        {(void **)&c->window, S * c->window_stride, sizeof(REAL), "BPTT recomputation window", A},
        {(void **)&c->inputs, T * B, sizeof(int32_t), "inputs", A},
        {(void **)&c->targets, T * B, sizeof(int32_t), "targets", A},
        {(void **)&c->row_lse, T * B, sizeof(double), "output log-sum-exps", A},
        {(void **)&c->logits, rows * V, sizeof(REAL), "output chunk", A},
        {(void **)&c->probs, rows * V, sizeof(REAL), "output probabilities", A},
        {(void **)&c->step_gx, L > 1 ? B * GH : 0, sizeof(REAL), "input projections", W},
        {(void **)&c->step_gh, gated ? B * GH : 0, sizeof(REAL), "recurrent projections", W},
        {(void **)&c->dz, sets * L * rows * GH, sizeof(REAL), "gate gradient chunks", A},
        {(void **)&c->dz_hidden, c->cell == GPURNN_CELL_GRU ? sets * L * rows * GH : 0, sizeof(REAL),
         "hidden-side gate gradient chunks", A},
        {(void **)&c->dh_out, gated ? sets * rows * H : 0, sizeof(REAL), "hidden gradient chunks", A},
        {(void **)&c->dh_next, L * B * H, sizeof(REAL), "recurrent gradient", A},
        {(void **)&c->dc_next, c->cell == GPURNN_CELL_LSTM ? L * B * H : 0, sizeof(REAL), "cell gradient", A},
        {(void **)&c->ones, rows, sizeof(REAL), "ones", A},
        {(void **)&c->row_loss, rows, sizeof(double), "row losses", A},
        {(void **)&c->block_sums, gpurnn_cpu_block_count(c->n), sizeof(double), "partial sums", W},
        {(void **)&c->sample_work, c->sample_stride, sizeof(REAL), "sampling state", W},
        {(void **)&c->sample_y, V, sizeof(double), "sampling weights", W},
        {(void **)&c->sample_logits, V, sizeof(REAL), "sampling logits", W},
        {(void **)&c->infer_states, S * c->infer_stride, sizeof(REAL), "inference states", W},
        {(void **)&c->infer_logits, B * V, sizeof(REAL), "inference logits", W},
        {(void **)&c->infer_rows, B, sizeof(double), "inference row log-likelihoods", W},
        {(void **)&c->batch_work, B * c->sample_stride, sizeof(REAL), "batch sampling states", W},
        {(void **)&c->batch_logits, B * c->batch_y_stride, sizeof(REAL), "batch sampling logits", W},
        {(void **)&c->batch_weights, B * V, sizeof(double), "batch sampling weights", W},
        {(void **)&c->batch_bad_draw, B, sizeof(int), "batch sampling checks", W},
    };
    /* Unused slots (hs with checkpoints, ckpts and window without, the gated cells' buffers
     * of a tanh model) stay NULL. */
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
    if (buf == GPURNN_BUF_PARAMS) ((cpu_ctx *)ctx)->w_ih0_t_fresh = 0;
    return GPURNN_OK;
}

static gpurnn_status FN(fill_zero)(void *ctx, gpurnn_buffer buf)
{
    size_t count;
    REAL *dst = FN(buffer)(ctx, buf, &count);
    memset(dst, 0, count * sizeof(REAL));
    if (buf == GPURNN_BUF_PARAMS) ((cpu_ctx *)ctx)->w_ih0_t_fresh = 0;
    return GPURNN_OK;
}

/* out (rows, M) = in (rows, K) · W^T, W (M, K): a step's projection for rows sequences. */
static void FN(project)(const REAL *W, int M, int K, const REAL *in, REAL *out, int rows)
{
    if (rows == 1)
        CBLAS_GEMV(CblasRowMajor, CblasNoTrans, M, K, 1, W, K, in, 1, 0, out, 1);
    else
        CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, rows, M, K, 1, in, K, W, K, 0, out, M);
}

/* out (rows, K) = beta * out + dz (rows, M) · W, W (M, K): W^T dz for rows sequences. */
static void FN(project_back)(const REAL *W, int M, int K, const REAL *dz, REAL *out, int rows, REAL beta)
{
    if (rows == 1)
        CBLAS_GEMV(CblasRowMajor, CblasTrans, M, K, 1, W, K, dz, 1, beta, out, 1);
    else
        CBLAS_GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, K, M, 1, dz, M, W, K, beta, out, K);
}

/* The sequences of a batch are independent in the recurrence, so the batch is split into
 * one slice per thread and a pool item runs the whole time loop on its slice with
 * single-threaded BLAS calls. Threads then meet once per loop rather than twice per step:
 * per-step products are too small to split well, and a thread that waits at a per-step
 * barrier while its partner is descheduled wastes the step. Small batches stay on one
 * thread. */
static int FN(recurrence_slices)(const cpu_ctx *c)
{
    double macs_per_step = (double)c->B * c->G * c->H * c->H;
    if (c->B < 2 || macs_per_step < GPURNN_CPU_SLICE_MIN_MACS) return 1;
    int threads = omp_get_max_threads();
    return threads < c->B ? threads : c->B;
}

/* Rows [*b0, *b1) of the batch in slice s of `slices`. */
static void FN(slice_rows)(const cpu_ctx *c, int s, int slices, int *b0, int *b1)
{
    *b0 = (int)((long long)c->B * s / slices);
    *b1 = (int)((long long)c->B * (s + 1) / slices);
}

/* OpenBLAS's OpenMP build sizes its team from the calling thread's omp_get_max_threads()
 * at every call. The recurrence's per-step products are too small to split: two threads
 * per step never beat one in bench/RESULTS.md's runs, and on a busy machine they were many
 * times slower. So the time loops drop this thread's count to one and restore it after:
 * a per-thread setting, so other threads and the caller's own regions are unaffected (the
 * pool's items run so anyway). */
static int FN(enter_serial_blas)(void)
{
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    return saved;
}

/* Rows [*b0, *b1) of the batch for this thread of the current team. */
static void FN(batch_slice)(const cpu_ctx *c, int *b0, int *b1)
{
    FN(slice_rows)(c, omp_get_thread_num(), omp_get_num_threads(), b0, b1);
}

/* ---- spreading work over the pool ------------------------------------------------------
 * Every loop and product below is cut into items from its sizes and split_threads alone,
 * and an item computes the same bits whichever thread runs it (cpu_pool.h). */

/* fn(c, arg, lo, hi) for [lo, hi) covering [0, n) in pieces of `per_item`. */
typedef void (*FN(range_fn))(const cpu_ctx *c, void *arg, size_t lo, size_t hi);

typedef struct {
    const cpu_ctx *c;
    FN(range_fn) fn;
    void *arg;
    size_t n, per_item;
} FN(range_job);

static void FN(range_item)(void *p, size_t item)
{
    const FN(range_job) *job = p;
    const size_t lo = item * job->per_item, hi = lo + job->per_item < job->n ? lo + job->per_item : job->n;
    job->fn(job->c, job->arg, lo, hi);
}

/* [0, n) in about four pieces per thread (one piece below `work` >= GPURNN_CPU_PARALLEL_MIN),
 * each a multiple of `align` long. */
static void FN(parallel_ranges)(const cpu_ctx *c, size_t n, size_t work, size_t align, FN(range_fn) fn, void *arg)
{
    const int threads = work >= GPURNN_CPU_PARALLEL_MIN ? c->split_threads : 1;
    size_t per_item = threads > 1 ? (n + 4 * (size_t)threads - 1) / (4 * (size_t)threads) : n;
    per_item = (per_item + align - 1) / align * align;
    if (per_item == 0) per_item = 1;
    FN(range_job) job = {c, fn, arg, n, per_item};
    gpurnn_cpu_pool_for(c->pool, threads, (n + per_item - 1) / per_item, FN(range_item), &job);
}

/* C (M, N) = alpha op(A) op(B) + beta C, row-major, as cblas_?gemm, cut into one block of
 * rows (or of columns, when N > M: the smaller operand is the one every block packs
 * again) per split thread, each a single-threaded BLAS call, every block but the last a
 * multiple of 32 long. One block per thread: more blocks balanced no better on a busy
 * machine and cost more packing on a quiet one (bench/RESULTS.md, "On a busy machine"). */
typedef struct {
    CBLAS_TRANSPOSE ta, tb;
    int M, N, K;
    REAL alpha, beta;
    const REAL *A, *B;
    int lda, ldb;
    REAL *C;
    int ldc, by_columns;
} FN(gemm_job);

static void FN(gemm_block)(const cpu_ctx *c, void *p, size_t lo, size_t hi)
{
    (void)c;
    const FN(gemm_job) *g = p;
    const int n0 = (int)lo, len = (int)(hi - lo);
    if (g->by_columns) {
        const REAL *B = g->tb == CblasNoTrans ? g->B + n0 : g->B + (size_t)n0 * g->ldb;
        CBLAS_GEMM(CblasRowMajor, g->ta, g->tb, g->M, len, g->K, g->alpha, g->A, g->lda, B, g->ldb, g->beta,
                   g->C + n0, g->ldc);
    } else {
        const REAL *A = g->ta == CblasNoTrans ? g->A + (size_t)n0 * g->lda : g->A + n0;
        CBLAS_GEMM(CblasRowMajor, g->ta, g->tb, len, g->N, g->K, g->alpha, A, g->lda, g->B, g->ldb, g->beta,
                   g->C + (size_t)n0 * g->ldc, g->ldc);
    }
}

static void FN(gemm)(const cpu_ctx *c, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int M, int N, int K, REAL alpha,
                     const REAL *A, int lda, const REAL *B, int ldb, REAL beta, REAL *C, int ldc)
{
    FN(gemm_job) g = {ta, tb, M, N, K, alpha, beta, A, B, lda, ldb, C, ldc, N > M};
    const size_t n = (size_t)(g.by_columns ? N : M), work = (size_t)M * N * K / 64;
    const int threads = work >= GPURNN_CPU_PARALLEL_MIN ? c->split_threads : 1;
    size_t per_item = (n + (size_t)threads - 1) / (size_t)threads;
    per_item = (per_item + 31) / 32 * 32;
    FN(range_job) job = {c, FN(gemm_block), &g, n, per_item};
    gpurnn_cpu_pool_for(c->pool, threads, (n + per_item - 1) / per_item, FN(range_item), &job);
}

/* y (N) += colsum(A) for A (rows, N): cblas_?gemv by blocks of columns. */
typedef struct {
    int rows, N;
    const REAL *A, *ones;
    REAL *y;
} FN(colsum_job);

static void FN(colsum_block)(const cpu_ctx *c, void *p, size_t lo, size_t hi)
{
    (void)c;
    const FN(colsum_job) *j = p;
    CBLAS_GEMV(CblasRowMajor, CblasTrans, j->rows, (int)(hi - lo), 1, j->A + lo, j->N, j->ones, 1, 1, j->y + lo, 1);
}

static void FN(add_column_sums)(const cpu_ctx *c, const REAL *A, int rows, int N, REAL *y)
{
    FN(colsum_job) j = {rows, N, A, c->ones, y};
    FN(parallel_ranges)(c, (size_t)N, (size_t)rows * N, 32, FN(colsum_block), &j);
}

/* logits (rows, V) = h (rows, H) · Why^T; the bias is added by the caller's row pass. */
static void FN(output_product)(const cpu_ctx *c, const REAL *h, int rows)
{
    FN(gemm)(c, CblasNoTrans, CblasTrans, rows, c->V, c->H, 1, h, c->H, WHY(c->params, c), c->H, 0, c->logits, c->V);
}

/* ---- the cells, forward: one sequence's pointwise pass ---------------------------------
 * gx (G*H): W_ih x of the step (layer 0: the gathered column of W_ih), gh (G*H): W_hh h_prev,
 * both without biases. Each cell's derivative is in cell_backward_row below. */

/* tanh/ReLU: h = act(gh + gx + b). gh may be h itself (the product is written in place). */
static void FN(simple_forward_row)(gpurnn_cell cell, int H, const REAL *gx, const REAL *gh, const REAL *b,
                                   REAL *h)
{
    if (cell == GPURNN_CELL_RELU) {
        for (int i = 0; i < H; i++) {
            REAL z = gh[i] + gx[i] + b[i];
            h[i] = z > 0 ? z : (z == z ? 0 : z); /* a NaN stays visible */
        }
    } else {
        for (int i = 0; i < H; i++) h[i] = TANH(gh[i] + gx[i] + b[i]);
    }
}

/* GRU, gates (r, z, n): saves r, z, n and hn = W_hn h_prev + b_hn, which backward needs. */
static void FN(gru_forward_row)(int H, const REAL *restrict gx, const REAL *restrict gh, const REAL *restrict b_ih,
                                const REAL *restrict b_hh, const REAL *restrict h_prev, REAL *restrict h,
                                REAL *restrict r_out, REAL *restrict z_out, REAL *restrict n_out,
                                REAL *restrict hn_out)
{
    for (int i = 0; i < H; i++) {
        const REAL r = SIGMOID(gx[i] + b_ih[i] + gh[i] + b_hh[i]);
        const REAL z = SIGMOID(gx[H + i] + b_ih[H + i] + gh[H + i] + b_hh[H + i]);
        const REAL hn = gh[2 * H + i] + b_hh[2 * H + i];
        const REAL n = TANH(gx[2 * H + i] + b_ih[2 * H + i] + r * hn);
        h[i] = (1 - z) * n + z * h_prev[i];
        r_out[i] = r;
        z_out[i] = z;
        n_out[i] = n;
        hn_out[i] = hn;
    }
}

/* LSTM, gates (i, f, g, o): c = f c_prev + i g, h = o tanh(c); saves the four gates. */
static void FN(lstm_forward_row)(int H, const REAL *restrict gx, const REAL *restrict gh, const REAL *restrict b_ih,
                                 const REAL *restrict b_hh, const REAL *restrict c_prev, REAL *restrict h,
                                 REAL *restrict c_out, REAL *restrict i_out, REAL *restrict f_out,
                                 REAL *restrict g_out, REAL *restrict o_out)
{
    for (int u = 0; u < H; u++) {
        const REAL i = SIGMOID(gx[u] + b_ih[u] + gh[u] + b_hh[u]);
        const REAL f = SIGMOID(gx[H + u] + b_ih[H + u] + gh[H + u] + b_hh[H + u]);
        const REAL g = TANH(gx[2 * H + u] + b_ih[2 * H + u] + gh[2 * H + u] + b_hh[2 * H + u]);
        const REAL o = SIGMOID(gx[3 * H + u] + b_ih[3 * H + u] + gh[3 * H + u] + b_hh[3 * H + u]);
        const REAL cell = f * c_prev[u] + i * g;
        c_out[u] = cell;
        h[u] = o * TANH(cell);
        i_out[u] = i;
        f_out[u] = f;
        g_out[u] = g;
        o_out[u] = o;
    }
}

/* The pointwise pass of layer l for one sequence: gx, gh as above; h_prev, c_prev the
 * carried streams before the step, h, c after it; gates (4 pointers, gated cells) where the
 * saved gates go. */
static void FN(cell_forward_row)(const cpu_ctx *c, int l, const REAL *gx, const REAL *gh, const REAL *h_prev,
                                 const REAL *c_prev, REAL *h, REAL *c_out, REAL *const gates[4])
{
    const REAL *b_ih = B_IH(c->params, c, l), *b_hh = B_HH(c->params, c, l);
    switch (c->cell) {
    case GPURNN_CELL_GRU:
        FN(gru_forward_row)(c->H, gx, gh, b_ih, b_hh, h_prev, h, gates[0], gates[1], gates[2], gates[3]);
        break;
    case GPURNN_CELL_LSTM:
        FN(lstm_forward_row)(c->H, gx, gh, b_ih, b_hh, c_prev, h, c_out, gates[0], gates[1], gates[2], gates[3]);
        break;
    default: FN(simple_forward_row)(c->cell, c->H, gx, gh, b_ih, h); break;
    }
}

/* One step of layer l for sequences [b0, b1): state cur from state prev (the state before
 * the step), xt (B) the step's tokens. Training forward, backward's recomputation and
 * inference all come here, so their states are the same bits. */
static void FN(layer_step)(const cpu_ctx *c, int l, cpu_states prev, cpu_states cur, const int32_t *xt, int b0,
                           int b1)
{
    const int H = c->H, GH = c->G * H, rows = b1 - b0;
    const size_t first = (size_t)b0 * H;
    const REAL *h_prev = FN(stream)(prev, H_STREAM(c, l)) + first;
    REAL *h = FN(stream)(cur, H_STREAM(c, l)) + first;
    /* tanh/ReLU write W_hh h_prev straight into h, then add the rest in place */
    REAL *gh = c->G == 1 ? h : c->step_gh + (size_t)b0 * GH;
    FN(project)(W_HH(c->params, c, l), GH, H, h_prev, gh, rows);
    const REAL *gx_rows = NULL;
    if (l > 0) {
        REAL *gx = c->step_gx + (size_t)b0 * GH;
        FN(project)(W_IH(c->params, c, l), GH, H, FN(stream)(cur, H_STREAM(c, l - 1)) + first, gx, rows);
        gx_rows = gx;
    }
    if (c->G == 1) { /* tanh/ReLU: nothing saved but h */
        const REAL *bias = B_IH(c->params, c, l);
        for (int b = b0; b < b1; b++) {
            const size_t row = (size_t)(b - b0);
            const REAL *gx = l > 0 ? gx_rows + row * H : c->w_ih0_t + (size_t)xt[b] * H; /* column x_b */
            FN(simple_forward_row)(c->cell, H, gx, h + row * H, bias, h + row * H);
        }
        return;
    }
    const int lstm = c->cell == GPURNN_CELL_LSTM;
    for (int b = b0; b < b1; b++) {
        const size_t row = (size_t)(b - b0);
        const REAL *gx = l > 0 ? gx_rows + row * GH : c->w_ih0_t + (size_t)xt[b] * GH; /* column x_b */
        REAL *gates[4] = {NULL, NULL, NULL, NULL};
        for (int k = 0; k < c->gate_streams; k++)
            gates[k] = FN(stream)(cur, GATE_STREAM(c, l, k)) + (size_t)b * H;
        FN(cell_forward_row)(c, l, gx, gh + row * GH, h_prev + row * H,
                             lstm ? FN(stream)(prev, C_STREAM(c, l)) + (size_t)b * H : NULL, h + row * H,
                             lstm ? FN(stream)(cur, C_STREAM(c, l)) + (size_t)b * H : NULL, gates);
    }
}

/* States 1..steps after state `states` for sequences [b0, b1), with inputs x (steps, B):
 * layer after layer, each through every step. */
static void FN(forward_recurrence)(const cpu_ctx *c, cpu_states states, const int32_t *x, int steps, int b0,
                                   int b1)
{
    for (int l = 0; l < c->L; l++)
        for (int t = 0; t < steps; t++)
            FN(layer_step)(c, l, FN(later)(c, states, t), FN(later)(c, states, t + 1), x + (size_t)t * c->B, b0,
                           b1);
}

typedef struct {
    const cpu_ctx *c;
    cpu_states states;
    const int32_t *x;
    int steps, slices;
    int set, first_step, layer; /* backward */
} FN(slices_job);

static void FN(forward_slice)(void *p, size_t s)
{
    const FN(slices_job) *j = p;
    int b0, b1;
    FN(slice_rows)(j->c, (int)s, j->slices, &b0, &b1);
    FN(forward_recurrence)(j->c, j->states, j->x, j->steps, b0, b1);
}

/* forward_recurrence over the whole batch, a slice per thread (the pool's items). The
 * forward pass and backward's recomputation both come here, so a recomputed state is the
 * same bits. */
static void FN(run_recurrence)(const cpu_ctx *c, cpu_states states, const int32_t *x, int steps)
{
    const int slices = FN(recurrence_slices)(c);
    const int saved_threads = FN(enter_serial_blas)();
    if (slices == 1) {
        FN(forward_recurrence)(c, states, x, steps, 0, c->B);
    } else {
        FN(slices_job) job = {c, states, x, steps, slices, 0, 0, 0};
        gpurnn_cpu_pool_for(c->pool, slices, (size_t)slices, FN(forward_slice), &job);
    }
    omp_set_num_threads(saved_threads);
}

/* Where state `first` goes when a chunk's states are laid out from it. */
static cpu_states FN(states_from)(cpu_ctx *c, int first)
{
    const size_t step = (size_t)c->B * c->H;
    cpu_states s;
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) {
        s.p = c->hs + (size_t)first * step;
        s.stride = c->hs_stride;
    } else {
        s.p = c->window + gpurnn_window_pad((size_t)first, 0, step * sizeof(REAL), GPURNN_CPU_ALIGN) * step;
        s.stride = c->window_stride;
    }
    return s;
}

/* Checkpoint j (a multiple of k) as a state. */
static cpu_states FN(checkpoint)(const cpu_ctx *c, int j)
{
    cpu_states s = {c->ckpts + (size_t)(j / c->ckpt_every) * c->B * c->H, c->ckpt_stride};
    return s;
}

/* States [t0, t1] of the last forward, contiguous; with checkpoints, recomputed into the
 * window from the checkpoint at or before t0 unless the window holds them already. */
static cpu_states FN(states_for_backward)(cpu_ctx *c, int t0, int t1)
{
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) return FN(states_from)(c, t0);
    if (!(c->window_lo <= t0 && t1 <= c->window_hi)) {
        const int k = c->ckpt_every, from = t0 / k * k;
        cpu_states states = FN(states_from)(c, from);
        FN(copy_carried)(c, states, FN(checkpoint)(c, from));
        FN(run_recurrence)(c, states, c->inputs + (size_t)from * c->B, t1 - from);
        c->window_first = states;
        c->window_lo = from;
        c->window_hi = t1;
    }
    return FN(later)(c, c->window_first, t0 - c->window_lo);
}

/* With one recurrence slice (B = 1, or small B*H*H) the time loop leaves every thread but
 * one idle, while the output layer's GEMMs do not depend on it: with two threads or more,
 * the full history and at least two chunks, one thread runs the recurrence through a
 * chunk while another does the output layer of the chunk beside it (pipelined()).
 * The GEMMs then run on one thread. A product's bits depend on how it is cut into blocks,
 * so whenever the pipeline could run (single_slice_threads()) every GEMM of the pass is
 * one block (split_threads = 1), pipelined or not: a checkpointed run that cannot be
 * pipelined (k not a multiple of C) or a one-chunk call computes the same bits as the
 * pipelined full history (tests/test_bptt_checkpoint.cc). */
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

/* A call from inside the caller's own OpenMP parallel region runs on that one thread, as
 * the OpenMP loops nested in it would (the pool would add threads to a full team). */
static int FN(caller_threads)(void) { return omp_in_parallel() ? 1 : omp_get_max_threads(); }

/* The thread counts of a forward or backward pass over T steps, from the caller's OpenMP
 * setting, and whether the pass is pipelined; returns that setting, which the pass
 * restores at its end. */
static int FN(enter_pass)(cpu_ctx *c, int T, int *pipelined)
{
    const int saved = omp_get_max_threads(), threads = FN(caller_threads)();
    omp_set_num_threads(threads);
    *pipelined = FN(pipelined)(c, T);
    const int single = FN(single_slice_threads)(c);
    c->split_threads = single ? 1 : threads;
    if (single) omp_set_num_threads(1);
    return saved;
}

/* Where state `first` goes in segment buffer `buf`, aligned as in a full history. */
static cpu_states FN(segment_states)(const cpu_ctx *c, int buf, int first)
{
    const size_t step = (size_t)c->B * c->H, base = (size_t)buf * c->segment_cap;
    cpu_states s = {c->window + (base + gpurnn_window_pad((size_t)first, base, step * sizeof(REAL), GPURNN_CPU_ALIGN)) * step,
                    c->window_stride};
    return s;
}

/* The states from t0 on of the chunk starting at t0, for the pipelined passes: in the full
 * history, or in the segment buffer of checkpoint interval t0 / k (which holds the whole
 * chunk: k is a multiple of C), recomputed from its checkpoint unless there. */
static cpu_states FN(pipeline_states)(cpu_ctx *c, int t0)
{
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) return FN(states_from)(c, t0);
    const int k = c->ckpt_every, seg = t0 / k, buf = seg % 3, from = seg * k;
    cpu_states states = FN(segment_states)(c, buf, from);
    if (c->segment_in[buf] != seg) {
        const int len = c->T - from < k ? c->T - from : k;
        c->segment_in[buf] = -1;
        FN(copy_carried)(c, states, FN(checkpoint)(c, from));
        FN(run_recurrence)(c, states, c->inputs + (size_t)from * c->B, len);
        c->segment_in[buf] = seg;
    }
    return FN(later)(c, states, t0 - from);
}

/* w_ih0_t = W_ih_l0^T from the current parameters. */
static void FN(transpose_input_weights)(cpu_ctx *c)
{
    const int V = c->V, GH = c->G * c->H;
    const REAL *W = W_IH(c->params, c, 0);
    for (int i = 0; i < GH; i++)
        for (int v = 0; v < V; v++) c->w_ih0_t[(size_t)v * GH + i] = W[(size_t)i * V + v];
    c->w_ih0_t_fresh = 1;
}

/* h of the top layer for the steps after state s: the output layer's input, (rows, H). */
static const REAL *FN(top_h)(const cpu_ctx *c, cpu_states s) { return FN(stream)(FN(later)(c, s, 1), H_STREAM(c, c->L - 1)); }

typedef struct {
    const int32_t *tgt;
    double *lse_out;
    REAL *probs;
} FN(softmax_job);

/* Rows [lo, hi) of output_loss's pass over the logits. */
static void FN(softmax_rows)(const cpu_ctx *c, void *p, size_t lo, size_t hi)
{
    const FN(softmax_job) *j = p;
    const int V = c->V;
    const REAL *by = BY(c->params, c);
    for (size_t r = lo; r < hi; r++) {
        REAL *y = c->logits + r * V;
        REAL max = y[0] + by[0];
        for (int v = 0; v < V; v++) {
            y[v] += by[v];
            if (y[v] > max) max = y[v];
        }
        const REAL y_target = y[j->tgt[r]];
        /* the exponentials in place (a vector loop), then their sum in order */
        for (int v = 0; v < V; v++) y[v] = EXP_NONPOSITIVE(y[v] - max);
        double sum = 0;
        for (int v = 0; v < V; v++) sum += (double)y[v];
        double lse = (double)max + log(sum);
        j->lse_out[r] = lse;
        c->row_loss[r] = lse - (double)y_target;
        if (j->probs) {
            const REAL inv_sum = (REAL)(1.0 / sum);
            REAL *pr = j->probs + r * V;
            for (int v = 0; v < V; v++) pr[v] = y[v] * inv_sum;
        }
    }
}

/* The output layer and softmax cross-entropy of rows (h: (rows, H), the states of steps
 * t0..): stores each row's log-sum-exp and returns the rows' summed loss, in row order.
 * With probs, also stores the softmax there (rows, V). */
static double FN(output_loss)(cpu_ctx *c, const REAL *h, int t0, int rows, REAL *probs)
{
    FN(output_product)(c, h, rows);
    FN(softmax_job) job = {c->targets + (size_t)t0 * c->B, c->row_lse + (size_t)t0 * c->B, probs};
    FN(parallel_ranges)(c, (size_t)rows, (size_t)rows * c->V, 1, FN(softmax_rows), &job);
    double total = 0;
    for (int r = 0; r < rows; r++) total += c->row_loss[r];
    return total;
}

/* Copies the checkpoints among states t0..t0+steps (states: state t0 first) to ckpts. */
static void FN(keep_checkpoints)(cpu_ctx *c, cpu_states states, int t0, int steps)
{
    const int k = c->ckpt_every;
    for (int j = (t0 + k - 1) / k * k; j <= t0 + steps; j += k)
        FN(copy_carried)(c, FN(checkpoint)(c, j), FN(later)(c, states, j - t0));
}

/* With checkpoints, chunk s's states go to segment buffer s % 2 (the forward pass uses the
 * buffers as two chunk slots) and its checkpoints are copied out. */
static cpu_states FN(forward_chunk_states)(cpu_ctx *c, int s)
{
    const int C = c->chunk_steps;
    if (c->ckpt_every == GPURNN_BPTT_KEEP_ALL) return FN(states_from)(c, s * C);
    return FN(segment_states)(c, s & 1, s * C);
}

/* Stage `stage` of the pipelined forward pass: item 0 the recurrence through that chunk,
 * item 1 the output layer of the chunk before (its loss into stage_loss). */
typedef struct {
    cpu_ctx *c;
    int T, stage;
    double stage_loss;
} FN(forward_stage_job);

static void FN(forward_stage_item)(void *p, size_t item)
{
    FN(forward_stage_job) *j = p;
    cpu_ctx *c = j->c;
    const int C = c->chunk_steps, chunks = (j->T + C - 1) / C, s = j->stage, B = c->B;
    const int keep_all = c->ckpt_every == GPURNN_BPTT_KEEP_ALL;
    if (item == 0 && s < chunks) {
        const int t0 = s * C, steps = j->T - t0 < C ? j->T - t0 : C;
        cpu_states states = FN(forward_chunk_states)(c, s);
        if (s > 0 && !keep_all) /* state t0 ends the chunk before */
            FN(copy_carried)(c, states, FN(later)(c, FN(forward_chunk_states)(c, s - 1), C));
        FN(run_recurrence)(c, states, c->inputs + (size_t)t0 * B, steps);
        if (!keep_all) FN(keep_checkpoints)(c, states, t0, steps);
    }
    if (item == 1 && s > 0) {
        const int t0 = (s - 1) * C, steps = j->T - t0 < C ? j->T - t0 : C;
        j->stage_loss = FN(output_loss)(c, FN(top_h)(c, FN(forward_chunk_states)(c, s - 1)), t0, steps * B, NULL);
    }
}

static gpurnn_status FN(forward_pass)(cpu_ctx *c, const int32_t *inputs, const int32_t *targets, int T,
                                      int pipelined, double *loss)
{
    const int B = c->B, k = c->ckpt_every;
    memcpy(c->inputs, inputs, (size_t)T * B * sizeof(int32_t));
    memcpy(c->targets, targets, (size_t)T * B * sizeof(int32_t));
    c->T = T;
    c->window_lo = 1; /* nothing valid until this pass ends */
    c->window_hi = 0;
    c->segment_in[0] = c->segment_in[1] = c->segment_in[2] = -1;
    c->probs_kept = T <= c->chunk_steps;
    /* backward's recomputation uses it too: parameters cannot change in between (a change
     * ends the forward pass's validity) */
    FN(transpose_input_weights)(c);

    double total = 0;
    cpu_states last = FN(carried_state)(c); /* state t0 */
    if (pipelined) {
        /* Stage s: one thread runs the recurrence through chunk s while another runs the
         * output layer of chunk s-1, whose states are done (the full history, or two
         * chunk slots, keep both). The chunks' losses are summed in the same order as
         * below. */
        const int C = c->chunk_steps, chunks = (T + C - 1) / C;
        FN(copy_carried)(c, FN(forward_chunk_states)(c, 0), last);
        FN(forward_stage_job) job = {c, T, 0, 0};
        for (int s = 0; s <= chunks; s++) {
            job.stage = s;
            job.stage_loss = 0;
            gpurnn_cpu_pool_for(c->pool, 2, 2, FN(forward_stage_item), &job);
            total += job.stage_loss;
        }
        last = FN(later)(c, FN(forward_chunk_states)(c, chunks - 1), T - (chunks - 1) * C);
    } else {
        /* Chunk by chunk: the recurrence through the chunk, then its output layer. */
        for (int t0 = 0; t0 < T; t0 += c->chunk_steps) {
            int steps = T - t0 < c->chunk_steps ? T - t0 : c->chunk_steps;
            cpu_states states = FN(states_from)(c, t0);
            FN(copy_carried)(c, states, last);
            FN(run_recurrence)(c, states, c->inputs + (size_t)t0 * B, steps);
            last = FN(later)(c, states, steps);
            if (k != GPURNN_BPTT_KEEP_ALL) FN(keep_checkpoints)(c, states, t0, steps);
            /* a one-chunk sequence keeps its softmax: backward then needs no second pass
             * through the output layer (min-char-rnn's shapes) */
            total += FN(output_loss)(c, FN(top_h)(c, states), t0, steps * B, T <= c->chunk_steps ? c->probs : NULL);
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
    FN(copy_carried)(c, FN(carried_state)(c), last);
    *loss = total;
    return GPURNN_OK;
}

static gpurnn_status FN(forward)(void *ctx, const int32_t *inputs, const int32_t *targets, int T,
                                 double *loss)
{
    cpu_ctx *c = ctx;
    int pipelined;
    const int saved_threads = FN(enter_pass)(c, T, &pipelined);
    gpurnn_status s = FN(forward_pass)(c, inputs, targets, T, pipelined, loss);
    omp_set_num_threads(saved_threads);
    return s;
}

typedef struct {
    const REAL *dz;
    const int32_t *tokens;
    int rows;
    REAL *dW;
} FN(scatter_job);

static void FN(scatter_units)(const cpu_ctx *c, void *p, size_t i0, size_t i1)
{
    const FN(scatter_job) *j = p;
    const int V = c->V, GH = c->G * c->H;
    for (int r = 0; r < j->rows; r++) {
        const REAL *row = j->dz + (size_t)r * GH;
        REAL *col = j->dW + j->tokens[r];
        for (size_t i = i0; i < i1; i++) col[i * V] += row[i];
    }
}

/* dW_ih_l0[:, x_r] += dz_r (G*H) for every row, in row order: a scatter-add by token that
 * gives the same bits on every run. Threads own disjoint blocks of gate rows. */
static void FN(scatter_input_gradient)(const cpu_ctx *c, const REAL *dz, const int32_t *tokens, int rows,
                                       REAL *dW)
{
    const int GH = c->G * c->H;
    FN(scatter_job) job = {dz, tokens, rows, dW};
    FN(parallel_ranges)(c, (size_t)GH, (size_t)rows * GH, 64, FN(scatter_units), &job);
}

/* The backward chunk buffers of set `set` (rows up to chunk_steps*B each):
 * dz of layer l (rows, G*H), its hidden side (GRU; else dz), and where dh_out of layer l
 * (rows, H) comes in: for G = 1 dz itself (the derivative is taken in place). */
static REAL *FN(dz_of)(const cpu_ctx *c, int set, int l)
{
    return c->dz + ((size_t)set * c->L + l) * c->chunk_steps * c->B * c->G * c->H;
}

static REAL *FN(dz_hidden_of)(const cpu_ctx *c, int set, int l)
{
    if (!c->dz_hidden) return FN(dz_of)(c, set, l);
    return c->dz_hidden + ((size_t)set * c->L + l) * c->chunk_steps * c->B * c->G * c->H;
}

static REAL *FN(dh_out_of)(const cpu_ctx *c, int set, int l)
{
    if (c->G == 1) return FN(dz_of)(c, set, l);
    return c->dh_out + (size_t)set * c->chunk_steps * c->B * c->H;
}

/* ---- the cells, backward: one sequence's pointwise pass --------------------------------
 * dh (H) = dh_out + dh_next is the gradient of h after the step. Writes the gates'
 * pre-activation gradients dz (G*H, input side) and dzh (G*H, hidden side: GRU's n gate
 * there is r * dn), the part of dh_next that does not go through W_hh (GRU: z * dh) into
 * dh_next, and for LSTM dc_next = f * dc. */
static void FN(gru_backward_row)(int H, const REAL *restrict dh_out, REAL *restrict dh_next,
                                 const REAL *restrict h_prev, const REAL *restrict r_s, const REAL *restrict z_s,
                                 const REAL *restrict n_s, const REAL *restrict hn_s, REAL *restrict dz,
                                 REAL *restrict dzh)
{
    for (int i = 0; i < H; i++) {
        const REAL dh = dh_out[i] + dh_next[i], r = r_s[i], z = z_s[i], n = n_s[i];
        const REAL dn = dh * (1 - z) * (1 - n * n);
        const REAL dzg = dh * (h_prev[i] - n) * z * (1 - z);
        const REAL dr = dn * hn_s[i] * r * (1 - r);
        dz[i] = dzh[i] = dr;
        dz[H + i] = dzh[H + i] = dzg;
        dz[2 * H + i] = dn;
        dzh[2 * H + i] = dn * r;
        dh_next[i] = dh * z;
    }
}

static void FN(lstm_backward_row)(int H, const REAL *restrict dh_out, const REAL *restrict dh_next,
                                  REAL *restrict dc_next, const REAL *restrict c_prev, const REAL *restrict c_s,
                                  const REAL *restrict i_s, const REAL *restrict f_s, const REAL *restrict g_s,
                                  const REAL *restrict o_s, REAL *restrict dz)
{
    for (int u = 0; u < H; u++) {
        const REAL dh = dh_out[u] + dh_next[u], i = i_s[u], f = f_s[u], g = g_s[u], o = o_s[u];
        const REAL tc = TANH(c_s[u]); /* the forward's tanh(c), the same bits */
        const REAL dc = dc_next[u] + dh * o * (1 - tc * tc);
        dz[u] = dc * g * i * (1 - i);
        dz[H + u] = dc * c_prev[u] * f * (1 - f);
        dz[2 * H + u] = dc * i * (1 - g * g);
        dz[3 * H + u] = dh * tc * o * (1 - o);
        dc_next[u] = dc * f;
    }
}

/* Backwards through the chunk's steps s = steps-1 .. 0 (states: the state before the
 * chunk) for layer l and sequences [b0, b1): from dh_out of the layer (set's buffer) to
 * its dz, carrying dh_next (and dc_next) to the step before; none leaves step 0 of the
 * sequence (first_step). */
static void FN(layer_backward)(const cpu_ctx *c, int l, int set, cpu_states states, int steps, int first_step,
                               int b0, int b1)
{
    const int H = c->H, GH = c->G * H, rows = b1 - b0;
    const size_t step = (size_t)c->B * H, first = (size_t)b0 * H, count = (size_t)rows * H;
    REAL *dh_next = c->dh_next + (size_t)l * step + first;
    REAL *dc_next = c->dc_next ? c->dc_next + (size_t)l * step + first : NULL;
    REAL *dz_chunk = FN(dz_of)(c, set, l), *dzh_chunk = FN(dz_hidden_of)(c, set, l);
    const REAL *dh_chunk = FN(dh_out_of)(c, set, l);
    const REAL *W_hh = W_HH(c->params, c, l);
    for (int s = steps - 1; s >= 0; s--) {
        const cpu_states prev = FN(later)(c, states, s), cur = FN(later)(c, states, s + 1);
        REAL *dz = dz_chunk + ((size_t)s * c->B + b0) * GH;
        REAL *dzh = dzh_chunk + ((size_t)s * c->B + b0) * GH;
        const REAL *dh_out = dh_chunk + (size_t)s * step + first;
        const REAL *h = FN(stream)(cur, H_STREAM(c, l)) + first;
        const int last = first_step && s == 0;
        switch (c->cell) {
        case GPURNN_CELL_TANH:
            for (size_t i = 0; i < count; i++) dz[i] = FN_TANH_BACKWARD(h[i], dh_out[i] + dh_next[i]);
            break;
        case GPURNN_CELL_RELU:
            for (size_t i = 0; i < count; i++) dz[i] = h[i] > 0 ? dh_out[i] + dh_next[i] : 0;
            break;
        case GPURNN_CELL_GRU:
            for (int b = 0; b < rows; b++) {
                const size_t at = first + (size_t)b * H;
                FN(gru_backward_row)(H, dh_out + (size_t)b * H, dh_next + (size_t)b * H,
                                     FN(stream)(prev, H_STREAM(c, l)) + at, FN(stream)(cur, GATE_STREAM(c, l, 0)) + at,
                                     FN(stream)(cur, GATE_STREAM(c, l, 1)) + at,
                                     FN(stream)(cur, GATE_STREAM(c, l, 2)) + at,
                                     FN(stream)(cur, GATE_STREAM(c, l, 3)) + at, dz + (size_t)b * GH,
                                     dzh + (size_t)b * GH);
            }
            break;
        case GPURNN_CELL_LSTM:
            for (int b = 0; b < rows; b++) {
                const size_t at = first + (size_t)b * H;
                FN(lstm_backward_row)(H, dh_out + (size_t)b * H, dh_next + (size_t)b * H, dc_next + (size_t)b * H,
                                      FN(stream)(prev, C_STREAM(c, l)) + at, FN(stream)(cur, C_STREAM(c, l)) + at,
                                      FN(stream)(cur, GATE_STREAM(c, l, 0)) + at,
                                      FN(stream)(cur, GATE_STREAM(c, l, 1)) + at,
                                      FN(stream)(cur, GATE_STREAM(c, l, 2)) + at,
                                      FN(stream)(cur, GATE_STREAM(c, l, 3)) + at, dz + (size_t)b * GH);
            }
            break;
        }
        /* GRU keeps z * dh in dh_next and adds W_hh^T dzh to it */
        if (!last) FN(project_back)(W_hh, GH, H, dzh, dh_next, rows, c->cell == GPURNN_CELL_GRU ? 1 : 0);
    }
}

/* dh_out (rows, H) of layer l-1 = dz_l (rows, G*H) · W_ih_l: what layer l passes down. */
static void FN(input_backward)(const cpu_ctx *c, int l, int set, int rows)
{
    FN(gemm)(c, CblasNoTrans, CblasNoTrans, rows, c->H, c->G * c->H, 1, FN(dz_of)(c, set, l), c->G * c->H,
             W_IH(c->params, c, l), c->H, 0, FN(dh_out_of)(c, set, l - 1), c->H);
}

static void FN(backward_slice)(void *p, size_t s)
{
    const FN(slices_job) *j = p;
    int b0, b1;
    FN(slice_rows)(j->c, (int)s, j->slices, &b0, &b1);
    FN(layer_backward)(j->c, j->layer, j->set, j->states, j->steps, j->first_step, b0, b1);
}

/* The backward recurrence of a chunk through every layer, from the top, a slice of the
 * batch per thread as in forward; between layers the gradient passed down. */
static void FN(run_backward_recurrence)(const cpu_ctx *c, int set, cpu_states states, int steps, int first_step)
{
    const int slices = FN(recurrence_slices)(c);
    for (int l = c->L - 1; l >= 0; l--) {
        const int saved_threads = FN(enter_serial_blas)();
        if (slices == 1) {
            FN(layer_backward)(c, l, set, states, steps, first_step, 0, c->B);
        } else {
            FN(slices_job) job = {c, states, NULL, steps, slices, set, first_step, l};
            gpurnn_cpu_pool_for(c->pool, slices, (size_t)slices, FN(backward_slice), &job);
        }
        omp_set_num_threads(saved_threads);
        if (l > 0) FN(input_backward)(c, l, set, steps * c->B);
    }
}

typedef struct {
    REAL scale;
    const int32_t *tgt;
    const double *lse;
} FN(dlogits_job);

/* dY from the forward pass's softmax (kept for a one-chunk sequence; left as it is, so
 * that a second backward adds the same again) */
static void FN(dlogits_from_probs)(const cpu_ctx *c, void *p, size_t lo, size_t hi)
{
    const FN(dlogits_job) *j = p;
    const int V = c->V;
    for (size_t r = lo; r < hi; r++) {
        REAL *y = c->logits + r * V;
        const REAL *pr = c->probs + r * V;
        for (int v = 0; v < V; v++) y[v] = pr[v] * j->scale;
        y[j->tgt[r]] -= j->scale;
    }
}

/* dY from the logits recomputed and the stored log-sum-exps */
static void FN(dlogits_from_logits)(const cpu_ctx *c, void *p, size_t lo, size_t hi)
{
    const FN(dlogits_job) *j = p;
    const int V = c->V;
    const REAL *by = BY(c->params, c);
    for (size_t r = lo; r < hi; r++) {
        REAL *y = c->logits + r * V;
        REAL shift = (REAL)j->lse[r];
        for (int v = 0; v < V; v++) y[v] = EXP_NONPOSITIVE(y[v] + by[v] - shift) * j->scale;
        y[j->tgt[r]] -= j->scale;
    }
}

/* The output layer's backward for rows (h: (rows, H), the top layer's states of steps t0..):
 * dY (rows, V) = softmax(Y) - onehot(target), times 1/(T*B) for MEAN; dby += colsum(dY);
 * dWhy (V, H) += dY^T · h; dh_out (rows, H) = dY · Why into the set's buffer of the top layer. */
static void FN(output_backward)(cpu_ctx *c, const REAL *h, int t0, int rows, int set)
{
    const int V = c->V, H = c->H;
    const REAL scale =
        c->reduction == GPURNN_LOSS_MEAN ? (REAL)(1.0 / ((double)c->T * c->B)) : (REAL)1;
    FN(dlogits_job) job = {scale, c->targets + (size_t)t0 * c->B, c->row_lse + (size_t)t0 * c->B};
    if (c->probs_kept) {
        FN(parallel_ranges)(c, (size_t)rows, (size_t)rows * V, 1, FN(dlogits_from_probs), &job);
    } else {
        FN(output_product)(c, h, rows);
        FN(parallel_ranges)(c, (size_t)rows, (size_t)rows * V, 1, FN(dlogits_from_logits), &job);
    }
    FN(add_column_sums)(c, c->logits, rows, V, BY(c->grads, c));
    FN(gemm)(c, CblasTrans, CblasNoTrans, V, H, rows, 1, c->logits, V, h, H, 1, WHY(c->grads, c), H);
    FN(gemm)(c, CblasNoTrans, CblasNoTrans, rows, H, V, 1, c->logits, V, WHY(c->params, c), H, 0,
             FN(dh_out_of)(c, set, c->L - 1), H);
}

/* The weight gradients of every layer from a chunk's dz (set) and its states (states: the
 * state before the chunk; rows = steps*B): dW_hh (G*H, H) += dZh^T · h_prev;
 * dW_ih += dZ^T · x (layer 0: a scatter-add by token); biases += column sums. */
static void FN(recurrence_weight_grads)(cpu_ctx *c, int set, cpu_states states, int t0, int rows)
{
    const int H = c->H, GH = c->G * H;
    for (int l = c->L - 1; l >= 0; l--) {
        const REAL *dz = FN(dz_of)(c, set, l), *dzh = FN(dz_hidden_of)(c, set, l);
        FN(gemm)(c, CblasTrans, CblasNoTrans, GH, H, rows, 1, dzh, GH, FN(stream)(states, H_STREAM(c, l)), H, 1,
                 W_HH(c->grads, c, l), H);
        FN(add_column_sums)(c, dz, rows, GH, B_IH(c->grads, c, l));
        if (c->lay.two_biases) FN(add_column_sums)(c, dzh, rows, GH, B_HH(c->grads, c, l));
        if (l == 0)
            FN(scatter_input_gradient)(c, dz, c->inputs + (size_t)t0 * c->B, rows, W_IH(c->grads, c, 0));
        else
            FN(gemm)(c, CblasTrans, CblasNoTrans, GH, H, rows, 1, dz, GH,
                     FN(stream)(FN(later)(c, states, 1), H_STREAM(c, l - 1)), H, 1, W_IH(c->grads, c, l), H);
    }
}

/* Stage i of the pipelined backward pass, as three items: 0 the recurrence backwards
 * through chunk i (its interval was made ready by the stage before), 1 the output layer of
 * chunk i-1 (which may recompute that chunk's interval, always into another segment buffer
 * than chunks i and i+1 use), 2 the weight gradients of chunk i+1 (its dz was done at stage
 * i+1, its states are still in place). They touch disjoint buffers, so two threads take
 * items 0 and 1 and whichever is done first takes item 2. */
typedef struct {
    cpu_ctx *c;
    int stage;
} FN(backward_stage_job);

static void FN(backward_stage_item)(void *p, size_t item)
{
    const FN(backward_stage_job) *j = p;
    cpu_ctx *c = j->c;
    const int B = c->B, T = c->T, C = c->chunk_steps, i = j->stage, last = (T + C - 1) / C - 1;
#define CHUNK_T0(i) ((i) * C)
#define CHUNK_STEPS(i) (T - (i) * C < C ? T - (i) * C : C)
    if (item == 0) {
        FN(run_backward_recurrence)(c, i % 3, FN(pipeline_states)(c, CHUNK_T0(i)), CHUNK_STEPS(i), i == 0);
    } else if (item == 1 && i > 0) {
        FN(output_backward)(c, FN(top_h)(c, FN(pipeline_states)(c, CHUNK_T0(i - 1))), CHUNK_T0(i - 1),
                            CHUNK_STEPS(i - 1) * B, (i - 1) % 3);
    } else if (item == 2 && i < last) {
        FN(recurrence_weight_grads)(c, (i + 1) % 3, FN(pipeline_states)(c, CHUNK_T0(i + 1)), CHUNK_T0(i + 1),
                                    CHUNK_STEPS(i + 1) * B);
    }
#undef CHUNK_T0
#undef CHUNK_STEPS
}

static void FN(backward_pass)(cpu_ctx *c, int pipelined)
{
    const int B = c->B, T = c->T, C = c->chunk_steps;
    const size_t step = (size_t)B * c->H;
    memset(c->dh_next, 0, (size_t)c->L * step * sizeof(REAL));
    if (c->dc_next) memset(c->dc_next, 0, (size_t)c->L * step * sizeof(REAL));
    const int chunks = (T + C - 1) / C;
#define CHUNK_T0(i) ((i) * C)
#define CHUNK_STEPS(i) (T - (i) * C < C ? T - (i) * C : C)

    if (pipelined) {
        /* Stage i (backward_stage_item): the recurrence backwards through chunk i, the
         * output layer of chunk i-1 and the weight gradients of chunk i+1. Chunk i's
         * buffers are set i % 3. Every sum over chunks still runs from the last to the first. */
        const int last = chunks - 1;
        c->window_lo = 1; /* the segment buffers share the window's memory */
        c->window_hi = 0;
#define STATES(i) FN(pipeline_states)(c, CHUNK_T0(i)) /* state t0 of chunk i .. */
        FN(output_backward)(c, FN(top_h)(c, STATES(last)), CHUNK_T0(last), CHUNK_STEPS(last) * B, last % 3);
        FN(backward_stage_job) job = {c, 0};
        for (int i = last; i >= 0; i--) {
            job.stage = i;
            gpurnn_cpu_pool_for(c->pool, 2, 3, FN(backward_stage_item), &job);
        }
        FN(recurrence_weight_grads)(c, 0, STATES(0), 0, CHUNK_STEPS(0) * B);
#undef STATES
        return;
    }

    /* Chunks of time from the last to the first, so the recurrence runs backwards through
     * each chunk right after its output-layer gradients are known. */
    c->segment_in[0] = c->segment_in[1] = c->segment_in[2] = -1; /* the window overwrites the segment buffers */
    for (int i = chunks - 1; i >= 0; i--) {
        const int t0 = CHUNK_T0(i), steps = CHUNK_STEPS(i);
        const cpu_states states = FN(states_for_backward)(c, t0, t0 + steps); /* state t0 .. */
        FN(output_backward)(c, FN(top_h)(c, states), t0, steps * B, 0);
        FN(run_backward_recurrence)(c, 0, states, steps, t0 == 0);
        FN(recurrence_weight_grads)(c, 0, states, t0, steps * B);
    }
#undef CHUNK_T0
#undef CHUNK_STEPS
}

static gpurnn_status FN(backward)(void *ctx)
{
    cpu_ctx *c = ctx;
    int pipelined;
    const int saved_threads = FN(enter_pass)(c, c->T, &pipelined);
    FN(backward_pass)(c, pipelined);
    omp_set_num_threads(saved_threads);
    return GPURNN_OK;
}

static void FN(memory)(void *ctx, gpurnn_memory_report *report)
{
    const cpu_ctx *c = ctx;
    for (int kind = 0; kind < GPURNN_MEMORY_KINDS; kind++) report->host[kind] += c->bytes[kind];
}

/* The flat buffers' loops (norm, clipping, optimizer steps) by blocks of GPURNN_CPU_BLOCK,
 * fn(c, arg, blk0, blk1) for blocks [blk0, blk1), on the caller's threads. */
static void FN(flat_blocks)(cpu_ctx *c, FN(range_fn) fn, void *arg)
{
    c->split_threads = FN(caller_threads)();
    FN(parallel_ranges)(c, gpurnn_cpu_block_count(c->n), c->n, 1, fn, arg);
}

/* The range [*i0, *i1) of flat-buffer blocks [blk0, blk1). */
static void FN(block_range)(const cpu_ctx *c, size_t blk0, size_t blk1, size_t *i0, size_t *i1)
{
    *i0 = blk0 * GPURNN_CPU_BLOCK;
    *i1 = blk1 * GPURNN_CPU_BLOCK < c->n ? blk1 * GPURNN_CPU_BLOCK : c->n;
}

static void FN(sumsq_blocks)(const cpu_ctx *c, void *arg, size_t blk0, size_t blk1)
{
    (void)arg;
    for (size_t blk = blk0; blk < blk1; blk++) {
        size_t i0, i1;
        FN(block_range)(c, blk, blk + 1, &i0, &i1);
        /* A vector of partial sums (as wide as the build's vectors), added up at the
         * end: the order is fixed by the code, so every run gives the same result (the
         * buffer is aligned, so the vectoriser's peeling is the same every time too). */
        const REAL *g = c->grads;
        double acc = 0;
#pragma omp simd reduction(+ : acc)
        for (size_t i = i0; i < i1; i++) acc += (double)g[i] * (double)g[i];
        c->block_sums[blk] = acc;
    }
}

static void FN(scale_blocks)(const cpu_ctx *c, void *arg, size_t blk0, size_t blk1)
{
    const REAL f = *(const REAL *)arg;
    size_t i0, i1;
    FN(block_range)(c, blk0, blk1, &i0, &i1);
    for (size_t i = i0; i < i1; i++) c->grads[i] *= f;
}

static void FN(clamp_blocks)(const cpu_ctx *c, void *arg, size_t blk0, size_t blk1)
{
    const REAL hi = *(const REAL *)arg, lo = -hi;
    size_t i0, i1;
    FN(block_range)(c, blk0, blk1, &i0, &i1);
    for (size_t i = i0; i < i1; i++) {
        REAL g = c->grads[i];
        c->grads[i] = g > hi ? hi : (g < lo ? lo : g); /* NaN stays NaN */
    }
}

static gpurnn_status FN(grad_sumsq)(void *ctx, double *sumsq)
{
    cpu_ctx *c = ctx;
    const size_t blocks = gpurnn_cpu_block_count(c->n);
    FN(flat_blocks)(c, FN(sumsq_blocks), NULL);
    double total = 0;
    for (size_t blk = 0; blk < blocks; blk++) total += c->block_sums[blk];
    *sumsq = total;
    return GPURNN_OK;
}

static gpurnn_status FN(grad_scale)(void *ctx, double factor)
{
    cpu_ctx *c = ctx;
    REAL f = (REAL)factor;
    FN(flat_blocks)(c, FN(scale_blocks), &f);
    return GPURNN_OK;
}

static gpurnn_status FN(grad_clamp)(void *ctx, double limit)
{
    cpu_ctx *c = ctx;
    REAL hi = (REAL)limit;
    FN(flat_blocks)(c, FN(clamp_blocks), &hi);
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

/* Per block: whether the update would give a non-finite value (in block_sums, 0 or 1). */
static void FN(check_update_blocks)(const cpu_ctx *c, void *arg, size_t blk0, size_t blk1)
{
    for (size_t blk = blk0; blk < blk1; blk++) {
        size_t i0, i1;
        FN(block_range)(c, blk, blk + 1, &i0, &i1);
        c->block_sums[blk] = FN(update_block)(arg, c->grads + i0, c->params + i0, c->opt0 + i0, c->opt1 + i0,
                                              i1 - i0, 0);
    }
}

static void FN(store_update_blocks)(const cpu_ctx *c, void *arg, size_t blk0, size_t blk1)
{
    size_t i0, i1;
    FN(block_range)(c, blk0, blk1, &i0, &i1);
    FN(update_block)(arg, c->grads + i0, c->params + i0, c->opt0 + i0, c->opt1 + i0, i1 - i0, 1);
}

/* Two passes so the update is all or nothing: the first computes every new value without
 * storing it, the second stores. */
static gpurnn_status FN(step)(void *ctx, const gpurnn_update_rule *rule, size_t *bad_index)
{
    cpu_ctx *c = ctx;
    c->w_ih0_t_fresh = 0;
    const size_t blocks = gpurnn_cpu_block_count(c->n);
    const double *block_bad = c->block_sums;
    FN(flat_blocks)(c, FN(check_update_blocks), (void *)rule);
    for (size_t blk = 0; blk < blocks; blk++) {
        if (!block_bad[blk]) continue;
        size_t i = blk * GPURNN_CPU_BLOCK;
        while (!FN(update_block)(rule, c->grads + i, c->params + i, c->opt0 + i, c->opt1 + i, 1, 0)) i++;
        *bad_index = i;
        return GPURNN_ERR_NUMERIC;
    }
    FN(flat_blocks)(c, FN(store_update_blocks), (void *)rule);
    return GPURNN_OK;
}

/* One sequence of sampling from sequence b's carried state (of every layer), with the
 * workspace work (sample_stride values), y (V) and weights (V): feeds first_token, then each
 * token drawn, writing draw k to out[k * out_stride] with the random number of
 * gpurnn_sample_draw_index(b, k). On NUMERIC, *bad_draw is k. gpurnn_sample and every
 * sequence of gpurnn_sample_batch come here, so that sequence 0 of a batch draws sample's
 * tokens. Runs BLAS on the calling thread only; w_ih0_t must be fresh. */
static gpurnn_status FN(sample_sequence)(const cpu_ctx *c, int b, REAL *work, REAL *y, double *weights,
                                         int32_t first_token, int n, double temperature,
                                         unsigned long long seed, int32_t *out, size_t out_stride, int *bad_draw)
{
    const int V = c->V, H = c->H, L = c->L, GH = c->G * H, carried = L * c->carried;
    const REAL *Why = WHY(c->params, c), *by = BY(c->params, c);
    /* work: two copies of the carried streams (carried, H) each, gx (G*H), gh (G*H), gates (4, H) */
    REAL *now = work, *next = work + (size_t)carried * H;
    REAL *gx_work = next + (size_t)carried * H, *gh_work = gx_work + GH, *gate_work = gh_work + GH;
    REAL *gates[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < c->gate_streams; k++) gates[k] = gate_work + (size_t)k * H;
    for (int k = 0; k < carried; k++)
        memcpy(now + (size_t)k * H, c->state + ((size_t)k * c->B + b) * H, (size_t)H * sizeof(REAL));
    const int lstm = c->cell == GPURNN_CELL_LSTM;
    int32_t x = first_token;
    for (int k = 0; k < n; k++) {
        for (int l = 0; l < L; l++) {
            REAL *h = next + (size_t)l * H;
            REAL *gh = c->G == 1 ? h : gh_work;
            FN(project)(W_HH(c->params, c, l), GH, H, now + (size_t)l * H, gh, 1);
            const REAL *gx = c->w_ih0_t + (size_t)x * GH;
            if (l > 0) {
                FN(project)(W_IH(c->params, c, l), GH, H, next + (size_t)(l - 1) * H, gx_work, 1);
                gx = gx_work;
            }
            FN(cell_forward_row)(c, l, gx, gh, now + (size_t)l * H, lstm ? now + (size_t)(L + l) * H : NULL, h,
                                 lstm ? next + (size_t)(L + l) * H : NULL, gates);
        }
        REAL *swap = now;
        now = next;
        next = swap;
        CBLAS_GEMV(CblasRowMajor, CblasNoTrans, V, H, 1, Why, H, now + (size_t)(L - 1) * H, 1, 0, y, 1);
        for (int v = 0; v < V; v++) y[v] += by[v];
        for (int v = 0; v < V; v++) weights[v] = (double)y[v];
        gpurnn_status s =
            gpurnn_cpu_draw(weights, V, temperature, seed, gpurnn_sample_draw_index((uint64_t)b, (uint64_t)k), &x);
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
    if (!c->w_ih0_t_fresh) FN(transpose_input_weights)(c);
    const int saved_threads = FN(enter_serial_blas)();
    int bad_draw = -1;
    gpurnn_status s = FN(sample_sequence)(c, 0, c->sample_work, c->sample_logits, c->sample_y, first_token, n,
                                          temperature, seed, out, 1, &bad_draw);
    omp_set_num_threads(saved_threads);
    return s;
}

/* The sequences are independent: each thread samples whole sequences, one at a time, with
 * single-threaded BLAS (as in the recurrence), so results do not depend on the thread count. */
static gpurnn_status FN(sample_batch)(void *ctx, const int32_t *first_tokens, int n, double temperature,
                                      unsigned long long seed, int32_t *out)
{
    cpu_ctx *c = ctx;
    const int B = c->B, V = c->V;
    if (!c->w_ih0_t_fresh) FN(transpose_input_weights)(c);
    const int threads = FN(enter_serial_blas)();
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (B > 1)
    for (int b = 0; b < B; b++) {
        c->batch_bad_draw[b] = -1;
        FN(sample_sequence)(c, b, c->batch_work + (size_t)b * c->sample_stride,
                            c->batch_logits + (size_t)b * c->batch_y_stride, c->batch_weights + (size_t)b * V,
                            first_tokens[b], n, temperature, seed, out + b, (size_t)B, &c->batch_bad_draw[b]);
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
static cpu_states FN(infer_state)(const cpu_ctx *c, int j)
{
    cpu_states s = {c->infer_states + (size_t)(j % c->infer_ring) * c->B * c->H, c->infer_stride};
    return s;
}

/* One step of every layer for the whole batch, each thread on its slice as in
 * run_recurrence (the same slices and calls, so the same products). */
static void FN(infer_layers_step)(const cpu_ctx *c, cpu_states prev, cpu_states cur, const int32_t *xt, int b0, int b1)
{
    for (int l = 0; l < c->L; l++) FN(layer_step)(c, l, prev, cur, xt, b0, b1);
}

static void FN(infer_recurrence_step)(const cpu_ctx *c, cpu_states prev, cpu_states cur, const int32_t *xt)
{
    const int slices = FN(recurrence_slices)(c);
    const int saved_threads = FN(enter_serial_blas)();
    if (slices == 1) {
        FN(infer_layers_step)(c, prev, cur, xt, 0, c->B);
    } else {
#pragma omp parallel num_threads(slices)
        {
            int b0, b1;
            FN(batch_slice)(c, &b0, &b1);
            FN(infer_layers_step)(c, prev, cur, xt, b0, b1);
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
    if (!c->w_ih0_t_fresh) FN(transpose_input_weights)(c);
    FN(copy_carried)(c, FN(infer_state)(c, 0), FN(carried_state)(c));
    double total = 0;
    for (int t = 0; t < T; t++) {
        const cpu_states cur = FN(infer_state)(c, t + 1);
        FN(infer_recurrence_step)(c, FN(infer_state)(c, t), cur, inputs + (size_t)t * B);
        const REAL *h = FN(stream)(cur, H_STREAM(c, c->L - 1));
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
    FN(copy_carried)(c, FN(carried_state)(c), FN(infer_state)(c, T));
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
