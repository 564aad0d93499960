/* The CUDA backend: BPTT with cuBLAS GEMMs and the fused kernels of kernels.cuh.
 *
 * A model is L layers of one cell (tanh, ReLU, GRU, LSTM; G = 1, 1, 3, 4 gates) under one
 * output layer, with PyTorch's equations and gate order (DESIGN.md, "Cells and layers").
 * Schedule (haste's and cuDNN's, adapted to a one-hot input and a softmax output):
 *   forward   per chunk of time, per step and layer: one GEMM gh = h_prev · W_hh^T (above
 *             layer 0 one more, gx = h_below · W_ih^T; layer 0 gathers its one-hot
 *             input's column of W_ih inside the kernel) and one fused kernel of the cell
 *             (forward_pointwise); then one GEMM for the chunk's logits and one kernel
 *             for softmax/loss.
 *   backward  per chunk of time, last chunk first: one GEMM for the logits again, one kernel
 *             for dY, GEMMs for dWhy, dby (GEMV with ones) and dh_out of the top layer;
 *             then layer after layer downwards, per step one fused kernel of the cell's
 *             derivative (backward_pointwise) and one GEMM dh_next (+)= dzh · W_hh, and one
 *             GEMM passing dz · W_ih to the layer below; then per layer GEMMs for dW_hh,
 *             dW_ih and the biases, and a deterministic scatter-add for dW_ih of layer 0.
 * With checkpointed BPTT (src/bptt_plan.h) forward keeps every k-th state (h, c) and
 * backward recomputes a window of states from the checkpoint before a chunk, with the same
 * GEMMs and kernels on operands of the same alignment, so the results are the same bits.
 * The time loops only enqueue work on the model's stream: no allocation, no host copy and
 * no synchronisation inside them. Forward synchronises once at its end to return the loss.
 *
 * Every device buffer is allocated at creation. Row-major (rows, cols) shapes throughout;
 * cuBLAS is column-major, so gemm_rm/gemv_rm below swap operands the usual way. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <cstdio>
#include <mutex>
#include <new>
#include <vector>

#include "../backend.h"
#include "../bptt_plan.h"
#include "../model.h"
#include "../rng.h"
#include "cuda_backend.h"
#include "cuda_check.h"
#include "kernels.cuh"
#include "launch.cuh"

namespace gpurnn {
namespace {

/* Token arrays go to the device through a pinned buffer of this many int32 values (1 MiB),
 * so that pinned memory does not grow with max_seq_len * B. */
constexpr size_t kTokenStageValues = (size_t)1 << 18;
/* Tokens drawn per device-to-host copy while sampling. */
constexpr int kSampleBatch = 4096;
/* Time steps of tokens an inference call uploads at a time (inputs and targets), so that
 * its buffers are sized by B alone whatever T is. */
constexpr int kInferTokenSteps = 64;
/* cuBLAS's own workspace for this model's handle: with one per handle, results stay
 * bit-identical run to run even while other models' streams run concurrently (cuBLAS
 * guarantees it otherwise only for a single active stream). 32 MiB is what NVIDIA
 * recommends for Hopper. */
constexpr size_t kCublasWorkspaceBytes = (size_t)32 << 20;
/* cudaMalloc returns 256-byte aligned memory; window states are placed with the alignment
 * they would have in a full history (cuBLAS picks kernels by operand alignment). */
constexpr size_t kDeviceAlign = 256;

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const float *alpha, const float *A, int lda, const float *B, int ldb,
                    const float *beta, float *C, int ldc)
{
    return cublasSgemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                    const double *alpha, const double *A, int lda, const double *B, int ldb,
                    const double *beta, double *C, int ldc)
{
    return cublasDgemm(h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t t, int m, int n, const float *alpha,
                    const float *A, int lda, const float *x, const float *beta, float *y)
{
    return cublasSgemv(h, t, m, n, alpha, A, lda, x, 1, beta, y, 1);
}
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t t, int m, int n, const double *alpha,
                    const double *A, int lda, const double *x, const double *beta, double *y)
{
    return cublasDgemv(h, t, m, n, alpha, A, lda, x, 1, beta, y, 1);
}

/* C (M, N) = alpha op(A) op(B) + beta C with row-major operands, as cblas_?gemm(RowMajor):
 * in column-major terms that is C^T = op(B)^T op(A)^T. */
template <typename T>
gpurnn_status gemm_rm(cublasHandle_t h, bool trans_a, bool trans_b, int M, int N, int K, T alpha,
                      const T *A, int lda, const T *B, int ldb, T beta, T *C, int ldc)
{
    CUBLAS_TRY(gemm(h, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M,
                    K, &alpha, B, ldb, A, lda, &beta, C, ldc));
    return GPURNN_OK;
}

/* y = alpha op(A) x + beta y with A row-major (M, N), as cblas_?gemv(RowMajor). */
template <typename T>
gpurnn_status gemv_rm(cublasHandle_t h, bool trans, int M, int N, T alpha, const T *A, int lda,
                      const T *x, T beta, T *y)
{
    CUBLAS_TRY(gemv(h, trans ? CUBLAS_OP_N : CUBLAS_OP_T, N, M, &alpha, A, lda, x, &beta, y));
    return GPURNN_OK;
}

/* Makes the model's device current for one call and restores the caller's afterwards. */
struct DeviceGuard {
    int previous = -1;
    cudaError_t err = cudaSuccess;
    explicit DeviceGuard(int device)
    {
        if (cudaGetDevice(&previous) != cudaSuccess) previous = -1;
        if (previous != device) err = cudaSetDevice(device);
    }
    ~DeviceGuard()
    {
        if (previous >= 0 && err == cudaSuccess) cudaSetDevice(previous);
    }
    DeviceGuard(const DeviceGuard &) = delete;
    DeviceGuard &operator=(const DeviceGuard &) = delete;
};

template <typename T>
struct Model {
    int device = 0;
    int V = 0, H = 0, B = 0, max_T = 0;
    gpurnn_loss_reduction reduction = GPURNN_LOSS_SUM;
    gpurnn_layout lay{};   /* where each layer's tensors sit in the flat buffers */
    int L = 1, G = 1;      /* layers; gates per layer */
    gpurnn_cell cell = GPURNN_CELL_TANH;
    int carried = 1;       /* streams per layer carried across steps: 1 (h) or 2 (h, c) */
    int gate_streams = 0;  /* saved gate streams per layer: 0, or 4 for GRU and LSTM */
    int streams = 1;       /* per state: L * (carried + gate_streams) */
    size_t *offsets = nullptr; /* (4, L): W_ih, W_hh, b_ih, b_hh of each layer, from lay */
    size_t why_offset = 0, by_offset = 0;
    size_t n = 0;
    int chunk_steps = 1;
    int steps = 0; /* time steps of the last forward */
    cudaStream_t stream = nullptr;
    cublasHandle_t blas = nullptr;

    /* device. A state (the values before one time step) is `streams` streams of (B, H):
     * h of every layer, c of every layer (LSTM), then each gated layer's saved gates; an
     * array of states keeps each stream in its own region, `stride` values apart (a
     * multiple of kDeviceAlign bytes, so that every stream's state j has the alignment
     * stream 0's has). */
    T *params = nullptr, *grads = nullptr, *opt0 = nullptr, *opt1 = nullptr; /* (n) each */
    T *state = nullptr;        /* (L * carried, B, H): gpurnn.h's carried-state layout */
    int ckpt_every = GPURNN_BPTT_KEEP_ALL; /* k */
    T *hs = nullptr;           /* (streams, max_T + 1, B, H): state j before step j; NULL with checkpoints */
    size_t hs_stride = 0;
    T *ckpts = nullptr;        /* (L * carried, max_T / k + 1, B, H): state i*k at [i] */
    size_t ckpt_stride = 0;
    T *window = nullptr;       /* (streams, pad_max + window_states, B, H) */
    size_t window_stride = 0;
    T *window_first = nullptr; /* where state window_lo sits (stream 0) */
    int window_lo = 1, window_hi = 0; /* states [lo, hi] of the last forward; lo > hi: none */
    int32_t *tokens = nullptr; /* kTokenArrays blocks of (max_T * B), see TokenArray */
    double *row_lse = nullptr; /* (max_T, B) */
    T *logits = nullptr;       /* (chunk rows, V) */
    T *step_gx = nullptr;      /* (B, G*H): a step's input projection, above layer 0 */
    T *step_gh = nullptr;      /* (B, G*H): a step's recurrent projection, gated cells */
    T *dz = nullptr;           /* (L, chunk rows, G*H): the gates' pre-activation gradients,
                                  input side; tanh/ReLU: also dh_out of the layer (in place) */
    T *dz_hidden = nullptr;    /* GRU: (L, chunk rows, 3H), the hidden side; else NULL (= dz) */
    T *dh_out = nullptr;       /* G > 1: (chunk rows, H), the gradient from above; else NULL */
    T *dh_next = nullptr;      /* (L, B, H) */
    T *dc_next = nullptr;      /* LSTM: (L, B, H) */
    T *ones = nullptr;         /* (chunk rows) */
    double *row_loss = nullptr;/* (chunk rows) */
    double *scalars = nullptr; /* [0] loss, [1] sum of squares */
    double *partials = nullptr;/* (kReduceBlocks) */
    unsigned long long *first_bad = nullptr;
    T *sample_states = nullptr;/* (streams, 2, H): two states of one sequence, slot j at j*H */
    T *sample_logits = nullptr;/* (V) */
    double *sample_weights = nullptr; /* (V) */
    int32_t *sample_tokens = nullptr; /* (kSampleBatch + 1): drawn tokens, then the current one */
    int *sample_bad = nullptr;
    unsigned char *blas_workspace = nullptr;
    /* Inference (infer) has buffers of its own: the training ones stay untouched. State j of
     * a call (j = 0 the carried state, j = t+1 the state after step t) sits in slot
     * j % infer_ring, a multiple of the period of B*H*sizeof(T) modulo kDeviceAlign (and
     * >= 2), so that it has the alignment it has in a training forward's history: cuBLAS
     * then picks the same kernels and the states are the same bits. */
    int infer_ring = 2;
    T *infer_states = nullptr;     /* (streams, infer_ring, B, H) */
    size_t infer_stride = 0;
    T *infer_logits = nullptr;     /* (B, V) */
    double *infer_dist = nullptr;  /* (B, V): one step's distributions */
    double *infer_rows = nullptr;  /* (B): log p[target] per sequence (0 without targets), NaN: non-finite */
    double *infer_total = nullptr; /* (1): sum of infer_rows over the call */
    int32_t *infer_tokens = nullptr; /* (2, kInferTokenSteps, B): a block of inputs, then of targets */

    /* pinned host */
    int32_t *host_token_stage = nullptr; /* (kTokenStageValues) */
    double *host_scalars = nullptr;   /* (4) */
    /* (max(n, carried state, chunk rows)): a whole buffer moves to or from the host in one copy */
    T *host_mirror = nullptr;
    /* Values of host_mirror that an enqueued host-to-device copy has yet to read:
     * [pending_lo, pending_hi), empty when lo >= hi. A write elsewhere need not wait. */
    size_t mirror_pending_lo = 0, mirror_pending_hi = 0;
    unsigned long long *host_bad = nullptr;
    int *host_sample_bad = nullptr;
    int32_t *host_sample_tokens = nullptr; /* (kSampleBatch) */
    double *host_infer_dist = nullptr;     /* (B, V): staging of infer_dist */
    int32_t *host_infer_tokens = nullptr;  /* (2, kInferTokenSteps, B): staging of infer_tokens */

    size_t host_bytes[GPURNN_MEMORY_KINDS] = {};
    size_t device_bytes[GPURNN_MEMORY_KINDS] = {};

    /* pageable host: the token arrays of the last forward, same layout as tokens */
    int32_t *host_tokens = nullptr;

    /* host scatter plan of the last forward, per chunk: [first segment, end segment) */
    std::vector<int32_t> chunk_segments;
    std::vector<int64_t> rows_sorted; /* plan_tokens' (token << 32 | row) keys, reserved at creation */
};

/* State j of an array of states: stream s of it (rows, H) at p + s * stride. */
template <typename T>
struct States {
    T *p;
    size_t stride;
    T *stream(int s) const { return p + (size_t)s * stride; }
};

/* Stream indices within a state: h of layer l, c of layer l, gate 0 of layer l. */
template <typename T> int h_stream(const Model<T> *, int l) { return l; }
template <typename T> int c_stream(const Model<T> *m, int l) { return m->L + l; }
template <typename T> int gate_stream(const Model<T> *m, int l) { return m->L * m->carried + l * m->gate_streams; }

/* State j + dj of the same array (states of the whole batch). */
template <typename T>
States<T> later(const Model<T> *m, States<T> s, int dj)
{
    s.p += (ptrdiff_t)dj * m->B * m->H;
    return s;
}

/* The token arrays uploaded once per forward, each (T * B) int32 for the forward's T,
 * packed one after the other so that one copy moves them all:
 * inputs and targets (time-major), and the dW_ih0 scatter plan: for each chunk of time, the
 * chunk's rows ordered by input token (stable), and its segments of equal tokens. */
enum TokenArray { kInputs, kTargets, kOrder, kSegmentToken, kSegmentBegin, kSegmentEnd, kTokenArrays };

template <typename T>
int32_t *token_array(Model<T> *m, int32_t *base, TokenArray which)
{
    return base + (size_t)which * m->steps * m->B;
}

template <typename T>
size_t state_count(const Model<T> *m)
{
    return (size_t)m->L * m->carried * m->B * m->H;
}

template <typename T>
T *buffer(Model<T> *m, gpurnn_buffer which, size_t *count)
{
    switch (which) {
    case GPURNN_BUF_PARAMS: *count = m->n; return m->params;
    case GPURNN_BUF_GRADS: *count = m->n; return m->grads;
    case GPURNN_BUF_OPT0: *count = m->n; return m->opt0;
    case GPURNN_BUF_OPT1: *count = m->n; return m->opt1;
    case GPURNN_BUF_STATE: *count = state_count(m); return m->state;
    default: *count = 0; return nullptr;
    }
}

/* Views of the tensors inside a flat buffer (src/layout.h). */
template <typename T> T *w_ih(const Model<T> *m, T *p, int l) { return p + m->offsets[l]; }              /* (G*H, V or H) */
template <typename T> T *w_hh(const Model<T> *m, T *p, int l) { return p + m->offsets[m->L + l]; }       /* (G*H, H) */
template <typename T> T *b_ih(const Model<T> *m, T *p, int l) { return p + m->offsets[2 * m->L + l]; }   /* (G*H); tanh/ReLU: b (H) */
template <typename T> T *b_hh(const Model<T> *m, T *p, int l) { return p + m->offsets[3 * m->L + l]; }   /* (G*H); tanh/ReLU: b again */
template <typename T> T *why(const Model<T> *m, T *p) { return p + m->why_offset; }                      /* (V, H) */
template <typename T> T *by(const Model<T> *m, T *p) { return p + m->by_offset; }                        /* (V) */

/* Values of a stream region of `values`, rounded up to kDeviceAlign bytes. */
template <typename T>
size_t aligned_values(size_t values)
{
    const size_t per_line = kDeviceAlign / sizeof(T);
    return (values + per_line - 1) / per_line * per_line;
}

template <typename T>
void destroy_model(Model<T> *m)
{
    if (!m) return;
    DeviceGuard device_guard(m->device);
    if (m->stream) cudaStreamSynchronize(m->stream);
    if (m->blas) cublasDestroy(m->blas); /* before its workspace is freed */
    m->blas = nullptr;
    void *device_owned[] = {m->params, m->grads, m->opt0, m->opt1, m->state, m->hs, m->ckpts, m->window, m->tokens,
                            m->row_lse, m->logits, m->step_gx, m->step_gh, m->dz, m->dz_hidden, m->dh_out,
                            m->dh_next, m->dc_next, m->ones, m->row_loss,
                            m->scalars, m->partials, m->first_bad, m->sample_states, m->sample_logits,
                            m->sample_weights, m->sample_tokens, m->sample_bad, m->blas_workspace,
                            m->infer_states, m->infer_logits, m->infer_dist, m->infer_rows, m->infer_total,
                            m->infer_tokens};
    for (void *p : device_owned)
        if (p) cudaFree(p);
    gpurnn_free(m->host_tokens);
    gpurnn_free(m->offsets);
    void *host_owned[] = {m->host_token_stage, m->host_scalars, m->host_mirror, m->host_bad, m->host_sample_bad,
                          m->host_sample_tokens, m->host_infer_dist, m->host_infer_tokens};
    for (void *p : host_owned)
        if (p) cudaFreeHost(p);
    if (m->stream) cudaStreamDestroy(m->stream);
    (void)cudaGetLastError();
    delete m;
}

template <typename T, typename P>
gpurnn_status device_alloc(Model<T> *m, P **slot, size_t count, gpurnn_memory_kind kind, const char *what)
{
    size_t bytes = (count ? count : 1) * sizeof(P);
    /* the test-only allocation countdown of src/alloc.h covers device memory too */
    cudaError_t err = gpurnn_fault_allocation() ? cudaErrorMemoryAllocation : cudaMalloc((void **)slot, bytes);
    if (err != cudaSuccess) {
        *slot = nullptr;
        (void)cudaGetLastError();
        return gpurnn_fail(err == cudaErrorMemoryAllocation ? GPURNN_ERR_OUT_OF_MEMORY : GPURNN_ERR_CUDA,
                           "cudaMalloc of %zu bytes for the %s failed: %s", bytes, what,
                           cudaGetErrorString(err));
    }
    m->device_bytes[kind] += bytes;
    return GPURNN_OK;
}

template <typename T, typename P>
gpurnn_status host_alloc(Model<T> *m, P **slot, size_t count, gpurnn_memory_kind kind, const char *what)
{
    size_t bytes = (count ? count : 1) * sizeof(P);
    /* the test-only allocation countdown of src/alloc.h covers pinned host memory too */
    cudaError_t err = gpurnn_fault_allocation() ? cudaErrorMemoryAllocation : cudaMallocHost((void **)slot, bytes);
    if (err != cudaSuccess) {
        *slot = nullptr;
        (void)cudaGetLastError();
        return gpurnn_fail(err == cudaErrorMemoryAllocation ? GPURNN_ERR_OUT_OF_MEMORY : GPURNN_ERR_CUDA,
                           "cudaMallocHost of %zu bytes for the %s failed: %s", bytes, what,
                           cudaGetErrorString(err));
    }
    m->host_bytes[kind] += bytes;
    return GPURNN_OK;
}

template <typename T>
gpurnn_status allocate(Model<T> *m)
{
    size_t V = m->V, H = m->H, B = m->B, Tm = m->max_T, rows = (size_t)m->chunk_steps * B;
    size_t GH = (size_t)m->G * H, L = m->L, carried = (size_t)m->L * m->carried, streams = m->streams;
    size_t token_values = (size_t)kTokenArrays * Tm * B;
    constexpr gpurnn_memory_kind P = GPURNN_MEMORY_PARAMETERS, G = GPURNN_MEMORY_GRADIENTS,
                                 O = GPURNN_MEMORY_OPTIMIZER, A = GPURNN_MEMORY_ACTIVATIONS,
                                 W = GPURNN_MEMORY_WORKSPACE;
    GPURNN_TRY(device_alloc(m, &m->params, m->n, P, "parameters"));
    GPURNN_TRY(device_alloc(m, &m->grads, m->n, G, "gradients"));
    GPURNN_TRY(device_alloc(m, &m->opt0, m->n, O, "optimizer state"));
    GPURNN_TRY(device_alloc(m, &m->opt1, m->n, O, "optimizer state"));
    GPURNN_TRY(device_alloc(m, &m->state, carried * B * H, W, "carried state"));
    if (m->ckpt_every == GPURNN_BPTT_KEEP_ALL) {
        m->hs_stride = aligned_values<T>((Tm + 1) * B * H);
        GPURNN_TRY(device_alloc(m, &m->hs, streams * m->hs_stride, A, "hidden states"));
    } else {
        size_t window = gpurnn_window_pad_max(B * H * sizeof(T), kDeviceAlign) +
                        gpurnn_window_states(m->ckpt_every, m->chunk_steps, m->max_T);
        m->ckpt_stride = aligned_values<T>(gpurnn_checkpoint_count(m->ckpt_every, m->max_T) * B * H);
        m->window_stride = aligned_values<T>(window * B * H);
        GPURNN_TRY(device_alloc(m, &m->ckpts, carried * m->ckpt_stride, A, "BPTT checkpoints"));
        GPURNN_TRY(device_alloc(m, &m->window, streams * m->window_stride, A, "BPTT recomputation window"));
    }
    GPURNN_TRY(device_alloc(m, &m->tokens, token_values, A, "tokens"));
    GPURNN_TRY(device_alloc(m, &m->row_lse, Tm * B, A, "output log-sum-exps"));
    GPURNN_TRY(device_alloc(m, &m->logits, rows * V, A, "output chunk"));
    if (L > 1) GPURNN_TRY(device_alloc(m, &m->step_gx, B * GH, W, "input projection"));
    if (m->G > 1) GPURNN_TRY(device_alloc(m, &m->step_gh, B * GH, W, "recurrent projection"));
    GPURNN_TRY(device_alloc(m, &m->dz, L * rows * GH, A, "gate gradient chunk"));
    if (m->cell == GPURNN_CELL_GRU)
        GPURNN_TRY(device_alloc(m, &m->dz_hidden, L * rows * GH, A, "hidden-side gate gradient chunk"));
    if (m->G > 1) GPURNN_TRY(device_alloc(m, &m->dh_out, rows * H, A, "hidden gradient chunk"));
    GPURNN_TRY(device_alloc(m, &m->dh_next, L * B * H, A, "recurrent gradient"));
    if (m->cell == GPURNN_CELL_LSTM) GPURNN_TRY(device_alloc(m, &m->dc_next, L * B * H, A, "cell gradient"));
    GPURNN_TRY(device_alloc(m, &m->ones, rows, A, "ones"));
    GPURNN_TRY(device_alloc(m, &m->row_loss, rows, A, "row losses"));
    GPURNN_TRY(device_alloc(m, &m->scalars, 4, W, "scalars"));
    GPURNN_TRY(device_alloc(m, &m->partials, kReduceBlocks, W, "partial sums"));
    GPURNN_TRY(device_alloc(m, &m->first_bad, 1, W, "update check"));
    GPURNN_TRY(device_alloc(m, &m->sample_states, streams * 2 * H, W, "sampling state"));
    GPURNN_TRY(device_alloc(m, &m->sample_logits, V, W, "sampling logits"));
    GPURNN_TRY(device_alloc(m, &m->sample_weights, V, W, "sampling weights"));
    GPURNN_TRY(device_alloc(m, &m->sample_tokens, (size_t)kSampleBatch + 1, W, "sampled tokens"));
    GPURNN_TRY(device_alloc(m, &m->sample_bad, 1, W, "sampling check"));
    GPURNN_TRY(device_alloc(m, &m->blas_workspace, kCublasWorkspaceBytes, W, "cuBLAS workspace"));
    const size_t period = gpurnn_window_pad_max(B * H * sizeof(T), kDeviceAlign) + 1;
    m->infer_ring = (int)std::max<size_t>(2, period);
    m->infer_stride = aligned_values<T>((size_t)m->infer_ring * B * H);
    const size_t infer_token_values = 2 * (size_t)kInferTokenSteps * B;
    GPURNN_TRY(device_alloc(m, &m->infer_states, streams * m->infer_stride, W, "inference states"));
    GPURNN_TRY(device_alloc(m, &m->infer_logits, B * V, W, "inference logits"));
    GPURNN_TRY(device_alloc(m, &m->infer_dist, B * V, W, "inference distributions"));
    GPURNN_TRY(device_alloc(m, &m->infer_rows, B, W, "inference row log-likelihoods"));
    GPURNN_TRY(device_alloc(m, &m->infer_total, 1, W, "inference log-likelihood"));
    GPURNN_TRY(device_alloc(m, &m->infer_tokens, infer_token_values, W, "inference tokens"));
    CUBLAS_TRY(cublasSetWorkspace(m->blas, m->blas_workspace, kCublasWorkspaceBytes));
    size_t token_bytes = token_values * sizeof(int32_t);
    m->host_tokens = static_cast<int32_t *>(gpurnn_malloc(token_bytes));
    if (!m->host_tokens)
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory for the token arrays",
                           token_bytes);
    m->host_bytes[A] += token_bytes;
    GPURNN_TRY(host_alloc(m, &m->host_token_stage, std::min(token_values, kTokenStageValues), A, "token staging"));
    GPURNN_TRY(host_alloc(m, &m->host_scalars, 4, W, "scalar staging"));
    GPURNN_TRY(host_alloc(m, &m->host_mirror, std::max({m->n, state_count(m), rows}), W, "host copy of a buffer"));
    GPURNN_TRY(host_alloc(m, &m->host_bad, 1, W, "update check staging"));
    GPURNN_TRY(host_alloc(m, &m->host_sample_bad, 1, W, "sampling check staging"));
    GPURNN_TRY(host_alloc(m, &m->host_sample_tokens, (size_t)kSampleBatch, W, "sampled token staging"));
    GPURNN_TRY(host_alloc(m, &m->host_infer_dist, B * V, W, "inference distribution staging"));
    GPURNN_TRY(host_alloc(m, &m->host_infer_tokens, infer_token_values, W, "inference token staging"));

    /* Zero everything the API exposes; fill the ones vector. */
    for (gpurnn_buffer b : {GPURNN_BUF_PARAMS, GPURNN_BUF_GRADS, GPURNN_BUF_OPT0, GPURNN_BUF_OPT1, GPURNN_BUF_STATE}) {
        size_t count;
        T *p = buffer(m, b, &count);
        CUDA_TRY(cudaMemsetAsync(p, 0, count * sizeof(T), m->stream));
    }
    for (size_t i = 0; i < rows; i++) m->host_mirror[i] = T(1);
    CUDA_TRY(cudaMemcpyAsync(m->ones, m->host_mirror, rows * sizeof(T), cudaMemcpyHostToDevice, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    return GPURNN_OK;
}

/* The layout's numbers of a resolved config, and each layer's tensor offsets. */
template <typename T>
gpurnn_status describe_layers(Model<T> *m, const gpurnn_config *cfg)
{
    gpurnn_layout_of(&m->lay, cfg);
    m->L = m->lay.L;
    m->G = m->lay.G;
    m->cell = m->lay.cell;
    m->carried = gpurnn_layout_carried_streams(&m->lay);
    m->gate_streams = gpurnn_layout_gate_streams(&m->lay);
    m->streams = (int)gpurnn_layout_step_streams(&m->lay);
    m->n = m->lay.count;
    const size_t bytes = 4 * (size_t)m->L * sizeof(size_t);
    m->offsets = static_cast<size_t *>(gpurnn_malloc(bytes));
    if (!m->offsets)
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory for the layer offsets",
                           bytes);
    m->host_bytes[GPURNN_MEMORY_WORKSPACE] += bytes;
    for (int l = 0; l < m->L; l++) {
        m->offsets[l] = gpurnn_layout_w_ih(&m->lay, l);
        m->offsets[m->L + l] = gpurnn_layout_w_hh(&m->lay, l);
        m->offsets[2 * m->L + l] = gpurnn_layout_b_ih(&m->lay, l);
        m->offsets[3 * m->L + l] = gpurnn_layout_b_hh(&m->lay, l);
    }
    m->why_offset = gpurnn_layout_why(&m->lay);
    m->by_offset = gpurnn_layout_by(&m->lay);
    return GPURNN_OK;
}

template <typename T>
gpurnn_status create(const gpurnn_config *cfg, void **out)
{
    /* Token indices on the device are int32. */
    if ((long long)cfg->max_seq_len * cfg->batch_size >= ((long long)1 << 31))
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "CUDA backend: max_seq_len * batch_size = %lld must be below 2^31",
                           (long long)cfg->max_seq_len * cfg->batch_size);
    Model<T> *m = gpurnn_fault_allocation() ? nullptr : new (std::nothrow) Model<T>();
    if (!m) return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes", sizeof(Model<T>));
    m->V = cfg->vocab_size;
    m->H = cfg->hidden_size;
    m->B = cfg->batch_size;
    m->max_T = cfg->max_seq_len;
    m->reduction = cfg->reduction;
    m->chunk_steps = gpurnn_chunk_steps(m->V, m->H, m->B, m->max_T);
    m->ckpt_every = cfg->bptt_checkpoint_every;
    gpurnn_status s = describe_layers(m, cfg);
    if (s == GPURNN_OK) {
        const char *call = "cudaGetDevice";
        cudaError_t err = cudaGetDevice(&m->device);
        if (err == cudaSuccess) {
            call = "cudaStreamCreateWithFlags";
            cudaStream_t stream = nullptr;
            err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
            if (err == cudaSuccess) m->stream = stream;
        }
        if (err != cudaSuccess) s = gpurnn_cuda_status(err, call);
    }
    if (s == GPURNN_OK) {
        cublasHandle_t handle = nullptr;
        cublasStatus_t st = cublasCreate(&handle);
        if (st == CUBLAS_STATUS_SUCCESS) m->blas = handle;
        if (st == CUBLAS_STATUS_SUCCESS) st = cublasSetStream(m->blas, m->stream);
        if (st != CUBLAS_STATUS_SUCCESS) s = gpurnn_cublas_status(st, "cublasCreate/cublasSetStream");
    }
    if (s == GPURNN_OK) s = allocate(m);
    if (s == GPURNN_OK) {
        /* The host scatter plan's memory too is taken here, not in the training loop. */
        try {
            if (gpurnn_fault_allocation()) throw std::bad_alloc();
            m->chunk_segments.reserve((size_t)(m->max_T / m->chunk_steps) + 2);
            m->rows_sorted.reserve((size_t)m->chunk_steps * m->B);
        } catch (const std::bad_alloc &) {
            size_t bytes = ((size_t)(m->max_T / m->chunk_steps) + 2) * sizeof(int32_t) +
                           (size_t)m->chunk_steps * m->B * sizeof(int64_t);
            s = gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory for the scatter plan",
                            bytes);
        }
    }
    if (s != GPURNN_OK) {
        destroy_model(m);
        return s;
    }
    *out = m;
    return GPURNN_OK;
}

template <typename T>
void destroy(void *ctx)
{
    destroy_model(static_cast<Model<T> *>(ctx));
}

/* The mirror may be overwritten only where no enqueued copy still reads it. */
template <typename T>
gpurnn_status claim_mirror(Model<T> *m, size_t lo, size_t hi)
{
    if (lo < m->mirror_pending_hi && m->mirror_pending_lo < hi) {
        CUDA_TRY(cudaStreamSynchronize(m->stream));
        m->mirror_pending_lo = m->mirror_pending_hi = 0;
    }
    return GPURNN_OK;
}

/* One copy of the whole range into the host mirror, one synchronisation, then the
 * conversion to float64. */
template <typename T>
gpurnn_status read(void *ctx, gpurnn_buffer which, size_t offset, size_t n, double *dst)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    size_t count;
    const T *src = buffer(m, which, &count) + offset;
    /* enqueued writes read the mirror before this copy overwrites it: stream order */
    CUDA_TRY(cudaMemcpyAsync(m->host_mirror, src, n * sizeof(T), cudaMemcpyDeviceToHost, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    m->mirror_pending_lo = m->mirror_pending_hi = 0;
    for (size_t i = 0; i < n; i++) dst[i] = (double)m->host_mirror[i];
    return GPURNN_OK;
}

/* The conversion into the mirror at the buffer's own offset and one copy, left to run in
 * stream order: consecutive writes of different ranges (the dispatch layer initialises
 * parameters a slice at a time) then cost no synchronisation at all. */
template <typename T>
gpurnn_status write(void *ctx, gpurnn_buffer which, size_t offset, size_t n, const double *src)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    size_t count;
    T *dst = buffer(m, which, &count) + offset;
    GPURNN_TRY(claim_mirror(m, offset, offset + n));
    T *staged = m->host_mirror + offset;
    for (size_t i = 0; i < n; i++) staged[i] = (T)src[i];
    CUDA_TRY(cudaMemcpyAsync(dst, staged, n * sizeof(T), cudaMemcpyHostToDevice, m->stream));
    if (m->mirror_pending_lo >= m->mirror_pending_hi) {
        m->mirror_pending_lo = offset;
        m->mirror_pending_hi = offset + n;
    } else {
        m->mirror_pending_lo = std::min(m->mirror_pending_lo, offset);
        m->mirror_pending_hi = std::max(m->mirror_pending_hi, offset + n);
    }
    return GPURNN_OK;
}

template <typename T>
gpurnn_status fill_zero(void *ctx, gpurnn_buffer which)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    size_t count;
    T *p = buffer(m, which, &count);
    CUDA_TRY(cudaMemsetAsync(p, 0, count * sizeof(T), m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    return GPURNN_OK;
}

/* Fills the host token arrays for T steps: inputs, targets, and per chunk of time the rows
 * ordered by input token with their segments (a stable counting sort when the vocabulary
 * is small next to the chunk, a comparison sort otherwise). */
template <typename T>
void plan_tokens(Model<T> *m, const int32_t *inputs, const int32_t *targets, int T_steps)
{
    const int B = m->B;
    size_t total = (size_t)T_steps * B;
    memcpy(token_array(m, m->host_tokens, kInputs), inputs, total * sizeof(int32_t));
    memcpy(token_array(m, m->host_tokens, kTargets), targets, total * sizeof(int32_t));
    int32_t *order = token_array(m, m->host_tokens, kOrder);
    int32_t *seg_token = token_array(m, m->host_tokens, kSegmentToken);
    int32_t *seg_begin = token_array(m, m->host_tokens, kSegmentBegin);
    int32_t *seg_end = token_array(m, m->host_tokens, kSegmentEnd);
    m->chunk_segments.clear();
    int segments = 0;
    std::vector<int64_t> &rows_sorted = m->rows_sorted;
    for (int t0 = 0; t0 < T_steps; t0 += m->chunk_steps) {
        int steps = std::min(m->chunk_steps, T_steps - t0);
        int rows = steps * B;
        const int32_t *x = inputs + (size_t)t0 * B;
        int32_t *chunk_order = order + (size_t)t0 * B;
        rows_sorted.resize(rows);
        /* (token, row) keys: sorted, they give rows grouped by token in row order (a stable
         * sort) without the temporary buffer std::stable_sort allocates on every call. */
        for (int r = 0; r < rows; r++) rows_sorted[r] = (int64_t)x[r] << 32 | (uint32_t)r;
        std::sort(rows_sorted.begin(), rows_sorted.end());
        for (int r = 0; r < rows; r++) chunk_order[r] = (int32_t)(rows_sorted[r] & 0xffffffff);
        m->chunk_segments.push_back(segments);
        for (int j = 0; j < rows; j++) {
            if (j == 0 || x[chunk_order[j]] != x[chunk_order[j - 1]]) {
                seg_token[segments] = x[chunk_order[j]];
                seg_begin[segments] = (int32_t)(t0 * B + j);
                segments++;
            }
            seg_end[segments - 1] = (int32_t)(t0 * B + j + 1);
        }
    }
    m->chunk_segments.push_back(segments);
    /* order holds chunk-local rows (indices into the chunk's dz); segment bounds index the
     * whole order array. */
}

/* host_tokens[0, count) to the device through the bounded pinned stage: a copy may read the
 * stage only until the next piece overwrites it, so every piece after the first waits for
 * the one before (the previous call's pieces were waited for by its synchronisation). */
template <typename T>
gpurnn_status upload_tokens(Model<T> *m, size_t count)
{
    for (size_t done = 0; done < count; done += kTokenStageValues) {
        size_t piece = std::min(kTokenStageValues, count - done);
        if (done > 0) CUDA_TRY(cudaStreamSynchronize(m->stream));
        memcpy(m->host_token_stage, m->host_tokens + done, piece * sizeof(int32_t));
        CUDA_TRY(cudaMemcpyAsync(m->tokens + done, m->host_token_stage, piece * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, m->stream));
    }
    return GPURNN_OK;
}

template <typename T>
gpurnn_status output_logits(Model<T> *m, const T *h, int rows)
{
    return gemm_rm<T>(m->blas, false, true, rows, m->V, m->H, T(1), h, m->H, why(m, m->params), m->H,
                      T(0), m->logits, m->V);
}

static_assert((int)kCellTanh == (int)GPURNN_CELL_TANH && (int)kCellRelu == (int)GPURNN_CELL_RELU &&
                  (int)kCellGru == (int)GPURNN_CELL_GRU && (int)kCellLstm == (int)GPURNN_CELL_LSTM,
              "the kernels' cell kinds are gpurnn_cell's values");

template <typename T>
CellArgs cell_args(const Model<T> *m, int rows)
{
    return CellArgs{(int)m->cell, rows, m->H, m->V};
}

/* out (rows, M) = in (rows, K) · W^T, W (M, K): a step's projection (a GEMV for one row). */
template <typename T>
gpurnn_status project(Model<T> *m, const T *W, int M, int K, const T *in, T *out, int rows)
{
    if (rows == 1) return gemv_rm<T>(m->blas, false, M, K, T(1), W, K, in, T(0), out);
    return gemm_rm<T>(m->blas, false, true, rows, M, K, T(1), in, K, W, K, T(0), out, M);
}

/* One step of layer l for `rows` sequences: state cur from state prev (the state before the
 * step; both hold rows sequences per stream), xt (rows) the step's tokens on the device.
 * One GEMM for W_hh h_prev (tanh/ReLU: straight into h), above layer 0 one for W_ih times
 * the layer below's new h, and one fused kernel. Training forward, backward's
 * recomputation, inference and sampling all come here, so their states are the same bits. */
template <typename T>
gpurnn_status layer_step(Model<T> *m, int l, States<T> prev, States<T> cur, const int32_t *xt, int rows)
{
    const int H = m->H, GH = m->G * H;
    T *h = cur.stream(h_stream(m, l));
    T *gh = m->G == 1 ? h : m->step_gh;
    GPURNN_TRY(project(m, w_hh(m, m->params, l), GH, H, prev.stream(h_stream(m, l)), gh, rows));
    const T *gx = nullptr;
    if (l > 0) {
        GPURNN_TRY(project(m, w_ih(m, m->params, l), GH, H, cur.stream(h_stream(m, l - 1)), m->step_gx, rows));
        gx = m->step_gx;
    }
    const bool lstm = m->cell == GPURNN_CELL_LSTM;
    CUDA_TRY_LAUNCH(launch(forward_pointwise<T>, blocks_for((size_t)rows * H), kThreads, 0, m->stream,
        cell_args(m, rows), gh, gx, w_ih(m, m->params, 0), xt, b_ih(m, m->params, l), b_hh(m, m->params, l),
        prev.stream(h_stream(m, l)), lstm ? prev.stream(c_stream(m, l)) : nullptr, h,
        lstm ? cur.stream(c_stream(m, l)) : nullptr, m->gate_streams ? cur.stream(gate_stream(m, l)) : nullptr,
        cur.stride), "forward_pointwise");
    return GPURNN_OK;
}

/* States 1..steps after `states` (the whole batch), inputs x (steps, B) on the device: per
 * step every layer from the bottom. Forward and backward's recomputation both come here. */
template <typename T>
gpurnn_status run_recurrence(Model<T> *m, States<T> states, const int32_t *x, int steps)
{
    for (int t = 0; t < steps; t++)
        for (int l = 0; l < m->L; l++)
            GPURNN_TRY(layer_step(m, l, later(m, states, t), later(m, states, t + 1), x + (size_t)t * m->B, m->B));
    return GPURNN_OK;
}

/* Copies the carried streams (h, c of every layer) of state src to state dst (rows
 * sequences each), in stream order. */
template <typename T>
gpurnn_status copy_carried(Model<T> *m, States<T> dst, States<T> src, int rows)
{
    const size_t bytes = (size_t)rows * m->H * sizeof(T);
    for (int s = 0; s < m->L * m->carried; s++)
        if (dst.stream(s) != src.stream(s))
            CUDA_TRY(cudaMemcpyAsync(dst.stream(s), src.stream(s), bytes, cudaMemcpyDeviceToDevice, m->stream));
    return GPURNN_OK;
}

/* The carried state as a state of one: its streams are gpurnn.h's (L*carried, B, H) blocks. */
template <typename T>
States<T> carried_state(Model<T> *m)
{
    return States<T>{m->state, (size_t)m->B * m->H};
}

/* h of the top layer for the steps after state s: the output layer's input, (rows, H). */
template <typename T>
const T *top_h(Model<T> *m, States<T> s)
{
    return later(m, s, 1).stream(h_stream(m, m->L - 1));
}

/* Where state `first` goes when a chunk's states are laid out from it. */
template <typename T>
States<T> states_from(Model<T> *m, int first)
{
    const size_t step = (size_t)m->B * m->H;
    if (m->ckpt_every == GPURNN_BPTT_KEEP_ALL) return States<T>{m->hs + (size_t)first * step, m->hs_stride};
    return States<T>{m->window + gpurnn_window_pad((size_t)first, 0, step * sizeof(T), kDeviceAlign) * step,
                     m->window_stride};
}

/* Checkpoint j (a multiple of k) as a state. */
template <typename T>
States<T> checkpoint(Model<T> *m, int j)
{
    return States<T>{m->ckpts + (size_t)(j / m->ckpt_every) * m->B * m->H, m->ckpt_stride};
}

/* States [t0, t1] of the last forward, contiguous; with checkpoints, recomputed into the
 * window from the checkpoint at or before t0 unless the window holds them already. */
template <typename T>
gpurnn_status states_for_backward(Model<T> *m, int t0, int t1, States<T> *out)
{
    if (m->ckpt_every == GPURNN_BPTT_KEEP_ALL) {
        *out = states_from(m, t0);
        return GPURNN_OK;
    }
    if (!(m->window_lo <= t0 && t1 <= m->window_hi)) {
        const int k = m->ckpt_every, from = t0 / k * k;
        States<T> states = states_from(m, from);
        m->window_lo = 1; /* invalid until the recomputation is enqueued */
        m->window_hi = 0;
        GPURNN_TRY(copy_carried(m, states, checkpoint(m, from), m->B));
        GPURNN_TRY(run_recurrence(m, states, token_array(m, m->tokens, kInputs) + (size_t)from * m->B, t1 - from));
        m->window_first = states.p;
        m->window_lo = from;
        m->window_hi = t1;
    }
    *out = later(m, States<T>{m->window_first, m->window_stride}, t0 - m->window_lo);
    return GPURNN_OK;
}

template <typename T>
gpurnn_status forward(void *ctx, const int32_t *inputs, const int32_t *targets, int T_steps, double *loss)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    const int V = m->V, B = m->B, k = m->ckpt_every;
    m->steps = T_steps; /* before plan_tokens: it sets where each token array starts */
    m->window_lo = 1;   /* nothing valid until this pass ends */
    m->window_hi = 0;
    plan_tokens(m, inputs, targets, T_steps);
    GPURNN_TRY(upload_tokens(m, (size_t)kTokenArrays * T_steps * B));
    CUDA_TRY(cudaMemsetAsync(m->scalars, 0, sizeof(double), m->stream));

    const int32_t *x = token_array(m, m->tokens, kInputs);
    const int32_t *tgt = token_array(m, m->tokens, kTargets);
    /* Chunk by chunk: the recurrence through the chunk, then its output layer. */
    States<T> last = carried_state(m); /* state t0 */
    for (int t0 = 0; t0 < T_steps; t0 += m->chunk_steps) {
        int steps = std::min(m->chunk_steps, T_steps - t0);
        int rows = steps * B;
        States<T> states = states_from(m, t0);
        /* distinct window places of a state never overlap: they are whole states apart */
        GPURNN_TRY(copy_carried(m, states, last, B));
        GPURNN_TRY(run_recurrence(m, states, x + (size_t)t0 * B, steps));
        last = later(m, states, steps);
        if (k != GPURNN_BPTT_KEEP_ALL)
            for (int j = (t0 + k - 1) / k * k; j <= t0 + steps; j += k)
                GPURNN_TRY(copy_carried(m, checkpoint(m, j), later(m, states, j - t0), B));

        GPURNN_TRY(output_logits(m, top_h(m, states), rows));
        CUDA_TRY_LAUNCH(launch(softmax_loss<T>, rows, kThreads, 0, m->stream, m->logits, by(m, m->params),
            tgt + (size_t)t0 * B, V, m->row_lse + (size_t)t0 * B, m->row_loss), "softmax_loss");
        CUDA_TRY_LAUNCH(launch(accumulate_sum, 1, kThreads, 0, m->stream, m->row_loss, rows,
            m->scalars), "accumulate_sum");
        if (t0 + steps == T_steps && k != GPURNN_BPTT_KEEP_ALL) {
            /* backward starts with this chunk: its states need no recomputation */
            m->window_first = states.p;
            m->window_lo = t0;
            m->window_hi = T_steps;
        }
    }
    CUDA_TRY(cudaMemcpyAsync(m->host_scalars, m->scalars, sizeof(double), cudaMemcpyDeviceToHost, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    double total = m->host_scalars[0];
    if (m->reduction == GPURNN_LOSS_MEAN) total /= (double)T_steps * (double)B;
    if (!isfinite(total))
        return gpurnn_fail(GPURNN_ERR_NUMERIC,
                           "the loss is %g (the parameters or carried state are too large); the "
                           "carried state was not changed",
                           total);
    GPURNN_TRY(copy_carried(m, carried_state(m), last, B));
    *loss = total;
    return GPURNN_OK;
}

/* The backward chunk buffers (rows up to chunk_steps*B each): dz of layer l (rows, G*H),
 * its hidden side (GRU; else dz), and where dh_out of layer l (rows, H) comes in: for
 * tanh/ReLU dz itself (the derivative is taken in place). */
template <typename T>
T *dz_of(Model<T> *m, int l)
{
    return m->dz + (size_t)l * m->chunk_steps * m->B * m->G * m->H;
}

template <typename T>
T *dz_hidden_of(Model<T> *m, int l)
{
    if (!m->dz_hidden) return dz_of(m, l);
    return m->dz_hidden + (size_t)l * m->chunk_steps * m->B * m->G * m->H;
}

template <typename T>
T *dh_out_of(Model<T> *m, int l)
{
    return m->G == 1 ? dz_of(m, l) : m->dh_out;
}

/* The output layer's backward for rows (h: (rows, H), the top layer's states of steps t0..):
 * dY (rows, V) = softmax(Y) - onehot(target), times 1/(T*B) for MEAN, from the logits
 * recomputed and the stored log-sum-exps; dby += colsum(dY); dWhy (V, H) += dY^T · h;
 * dh_out (rows, H) of the top layer = dY · Why. */
template <typename T>
gpurnn_status output_backward(Model<T> *m, const T *h, int t0, int rows)
{
    const int V = m->V, H = m->H, B = m->B;
    const T scale = m->reduction == GPURNN_LOSS_MEAN ? (T)(1.0 / ((double)m->steps * B)) : T(1);
    const int32_t *tgt = token_array(m, m->tokens, kTargets);
    GPURNN_TRY(output_logits(m, h, rows));
    CUDA_TRY_LAUNCH(launch(output_gradient<T>, blocks_for((size_t)rows * V), kThreads, 0, m->stream,
        m->logits, by(m, m->params), m->row_lse + (size_t)t0 * B, tgt + (size_t)t0 * B, rows, V,
        scale), "output_gradient");
    GPURNN_TRY(gemv_rm<T>(m->blas, true, rows, V, T(1), m->logits, V, m->ones, T(1), by(m, m->grads)));
    GPURNN_TRY(gemm_rm<T>(m->blas, true, false, V, H, rows, T(1), m->logits, V, h, H, T(1), why(m, m->grads), H));
    GPURNN_TRY(gemm_rm<T>(m->blas, false, false, rows, H, V, T(1), m->logits, V, why(m, m->params), H, T(0),
                          dh_out_of(m, m->L - 1), H));
    return GPURNN_OK;
}

/* Backwards through the chunk's steps s = steps-1 .. 0 (states: the state before the
 * chunk) for layer l: per step one fused kernel of the cell's derivative (dh_out of the
 * layer to its dz, carrying dh_next and dc_next) and one GEMM dh_next (+)= dzh · W_hh;
 * none leaves step 0 of the sequence (first_step). */
template <typename T>
gpurnn_status layer_backward(Model<T> *m, int l, States<T> states, int steps, bool first_step)
{
    const int H = m->H, B = m->B, GH = m->G * H;
    const size_t step = (size_t)B * H;
    T *dh_next = m->dh_next + (size_t)l * step;
    T *dc_next = m->dc_next ? m->dc_next + (size_t)l * step : nullptr;
    T *dz_chunk = dz_of(m, l), *dzh_chunk = dz_hidden_of(m, l);
    const T *dh_chunk = dh_out_of(m, l);
    const T *W_hh = w_hh(m, m->params, l);
    const bool lstm = m->cell == GPURNN_CELL_LSTM, gru = m->cell == GPURNN_CELL_GRU;
    for (int s = steps - 1; s >= 0; s--) {
        const States<T> prev = later(m, states, s), cur = later(m, states, s + 1);
        T *dz = dz_chunk + (size_t)s * B * GH, *dzh = dzh_chunk + (size_t)s * B * GH;
        CUDA_TRY_LAUNCH(launch(backward_pointwise<T>, blocks_for(step), kThreads, 0, m->stream, cell_args(m, B),
            dz, dzh, m->G == 1 ? nullptr : dh_chunk + (size_t)s * step, dh_next, dc_next,
            cur.stream(h_stream(m, l)), prev.stream(h_stream(m, l)), lstm ? prev.stream(c_stream(m, l)) : nullptr,
            lstm ? cur.stream(c_stream(m, l)) : nullptr, m->gate_streams ? cur.stream(gate_stream(m, l)) : nullptr,
            cur.stride), "backward_pointwise");
        if (first_step && s == 0) continue;
        /* GRU keeps z * dh in dh_next and adds W_hh^T dzh to it */
        const T beta = gru ? T(1) : T(0);
        if (B == 1)
            GPURNN_TRY(gemv_rm<T>(m->blas, true, GH, H, T(1), W_hh, H, dzh, beta, dh_next));
        else
            GPURNN_TRY(gemm_rm<T>(m->blas, false, false, B, H, GH, T(1), dzh, GH, W_hh, H, beta, dh_next, H));
    }
    return GPURNN_OK;
}

/* The weight gradients of layer l from the chunk's dz and its states (states: the state
 * before the chunk; rows = steps*B): dW_hh (G*H, H) += dZh^T · h_prev; biases += column
 * sums; dW_ih += dZ^T · x (layer 0: a deterministic scatter-add by token). */
template <typename T>
gpurnn_status layer_weight_grads(Model<T> *m, int l, States<T> states, int chunk, int rows)
{
    const int H = m->H, GH = m->G * H;
    const T *dz = dz_of(m, l), *dzh = dz_hidden_of(m, l);
    GPURNN_TRY(gemm_rm<T>(m->blas, true, false, GH, H, rows, T(1), dzh, GH, states.stream(h_stream(m, l)), H, T(1),
                          w_hh(m, m->grads, l), H));
    GPURNN_TRY(gemv_rm<T>(m->blas, true, rows, GH, T(1), dz, GH, m->ones, T(1), b_ih(m, m->grads, l)));
    if (m->lay.two_biases)
        GPURNN_TRY(gemv_rm<T>(m->blas, true, rows, GH, T(1), dzh, GH, m->ones, T(1), b_hh(m, m->grads, l)));
    if (l > 0)
        return gemm_rm<T>(m->blas, true, false, GH, H, rows, T(1), dz, GH,
                          later(m, states, 1).stream(h_stream(m, l - 1)), H, T(1), w_ih(m, m->grads, l), H);
    int first = m->chunk_segments[chunk], segments = m->chunk_segments[chunk + 1] - first;
    dim3 grid((unsigned)segments, (unsigned)((GH + kThreads - 1) / kThreads));
    CUDA_TRY_LAUNCH(launch(scatter_input_gradient<T>, grid, kThreads, 0, m->stream, w_ih(m, m->grads, 0), dz,
        token_array(m, m->tokens, kOrder), token_array(m, m->tokens, kSegmentToken) + first,
        token_array(m, m->tokens, kSegmentBegin) + first, token_array(m, m->tokens, kSegmentEnd) + first, GH,
        m->V), "scatter_input_gradient");
    return GPURNN_OK;
}

/* Chunks of time from the last to the first: per chunk the output layer's gradients, the
 * recurrence backwards through every layer from the top (with one GEMM passing each
 * layer's gradient to the layer below), then every layer's weight gradients as GEMMs. */
template <typename T>
gpurnn_status backward(void *ctx)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    const int H = m->H, B = m->B, T_steps = m->steps, GH = m->G * H;
    const size_t step = (size_t)B * H;
    CUDA_TRY(cudaMemsetAsync(m->dh_next, 0, (size_t)m->L * step * sizeof(T), m->stream));
    if (m->dc_next) CUDA_TRY(cudaMemsetAsync(m->dc_next, 0, (size_t)m->L * step * sizeof(T), m->stream));

    int chunk = (T_steps - 1) / m->chunk_steps;
    for (int t0 = chunk * m->chunk_steps; t0 >= 0; t0 -= m->chunk_steps, chunk--) {
        int steps = std::min(m->chunk_steps, T_steps - t0);
        int rows = steps * B;
        States<T> states{};
        GPURNN_TRY(states_for_backward(m, t0, t0 + steps, &states)); /* state t0 .. */
        GPURNN_TRY(output_backward(m, top_h(m, states), t0, rows));
        for (int l = m->L - 1; l >= 0; l--) {
            GPURNN_TRY(layer_backward(m, l, states, steps, t0 == 0));
            /* dh_out (rows, H) of layer l-1 = dz_l (rows, G*H) · W_ih_l */
            if (l > 0)
                GPURNN_TRY(gemm_rm<T>(m->blas, false, false, rows, H, GH, T(1), dz_of(m, l), GH,
                                      w_ih(m, m->params, l), H, T(0), dh_out_of(m, l - 1), H));
        }
        for (int l = m->L - 1; l >= 0; l--) GPURNN_TRY(layer_weight_grads(m, l, states, chunk, rows));
    }
    CUDA_TRY(cudaStreamSynchronize(m->stream)); /* a device fault is this call's error, not the next one's */
    return GPURNN_OK;
}

template <typename T>
gpurnn_status grad_sumsq(void *ctx, double *sumsq)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    CUDA_TRY_LAUNCH(launch(sum_squares_partial<T>, kReduceBlocks, kThreads, 0, m->stream, m->grads, m->n,
        m->partials), "sum_squares_partial");
    CUDA_TRY_LAUNCH(launch(sum_partials, 1, kThreads, 0, m->stream, m->partials, kReduceBlocks,
        m->scalars + 1), "sum_partials");
    CUDA_TRY(cudaMemcpyAsync(m->host_scalars + 1, m->scalars + 1, sizeof(double), cudaMemcpyDeviceToHost, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    *sumsq = m->host_scalars[1];
    return GPURNN_OK;
}

template <typename T>
gpurnn_status grad_scale(void *ctx, double factor)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    CUDA_TRY_LAUNCH(launch(scale_values<T>, blocks_for(m->n), kThreads, 0, m->stream, m->grads, m->n,
        (T)factor), "scale_values");
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    return GPURNN_OK;
}

template <typename T>
gpurnn_status grad_clamp(void *ctx, double limit)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    CUDA_TRY_LAUNCH(launch(clamp_values<T>, blocks_for(m->n), kThreads, 0, m->stream, m->grads, m->n,
        (T)limit), "clamp_values");
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    return GPURNN_OK;
}

template <typename T>
gpurnn_status step(void *ctx, const gpurnn_update_rule *rule, size_t *bad_index)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    UpdateRule r{(int)rule->kind, rule->learning_rate, rule->momentum, rule->beta1, rule->beta2,
                 rule->eps, rule->bias_correction1, rule->bias_correction2};
    *m->host_bad = (unsigned long long)m->n;
    CUDA_TRY(cudaMemcpyAsync(m->first_bad, m->host_bad, sizeof *m->host_bad, cudaMemcpyHostToDevice, m->stream));
    CUDA_TRY_LAUNCH(launch(find_bad_update<T>, blocks_for(m->n), kThreads, 0, m->stream, r, m->params, m->grads,
        m->opt0, m->opt1, m->n, m->first_bad), "find_bad_update");
    CUDA_TRY(cudaMemcpyAsync(m->host_bad, m->first_bad, sizeof *m->host_bad, cudaMemcpyDeviceToHost, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    if (*m->host_bad < (unsigned long long)m->n) {
        *bad_index = (size_t)*m->host_bad;
        return GPURNN_ERR_NUMERIC;
    }
    CUDA_TRY_LAUNCH(launch(apply_update<T>, blocks_for(m->n), kThreads, 0, m->stream, r, m->params, m->grads,
        m->opt0, m->opt1, m->n), "apply_update");
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    return GPURNN_OK;
}

/* One sequence of sampling from state row b: feeds first_token, then each token drawn,
 * writing draw k to out[k * out_stride] with the random number gpurnn_sample_draw_index(b,
 * k). gpurnn_sample (b = 0) and every sequence of gpurnn_sample_batch come here, with the
 * same GEMVs and kernels, so that sequence 0 of a batch draws sample's tokens. The
 * sequence's two states (every stream, one row) alternate in sample_states. */
template <typename T>
gpurnn_status sample_sequence(Model<T> *m, int b, int32_t first_token, int n, double temperature,
                              unsigned long long seed, int32_t *out, size_t out_stride)
{
    const int V = m->V, H = m->H;
    States<T> h{m->sample_states, 2 * (size_t)H}, next{m->sample_states + H, 2 * (size_t)H};
    int32_t *current = m->sample_tokens + kSampleBatch;
    const States<T> carried{m->state + (size_t)b * H, (size_t)m->B * H};
    GPURNN_TRY(copy_carried(m, h, carried, 1));
    CUDA_TRY(cudaMemsetAsync(m->sample_bad, 0, sizeof(int), m->stream));
    /* the staging buffer's last read (a previous sequence's tokens) was waited for */
    m->host_sample_tokens[0] = first_token;
    CUDA_TRY(cudaMemcpyAsync(current, m->host_sample_tokens, sizeof(int32_t), cudaMemcpyHostToDevice, m->stream));
    /* long long: done + kSampleBatch passes INT_MAX when n is within a batch of it */
    for (long long done = 0; done < n; done += kSampleBatch) {
        int batch = (int)std::min((long long)kSampleBatch, (long long)n - done);
        for (int j = 0; j < batch; j++) {
            for (int l = 0; l < m->L; l++) GPURNN_TRY(layer_step(m, l, h, next, current, 1));
            std::swap(h, next);
            GPURNN_TRY(gemv_rm<T>(m->blas, false, V, H, T(1), why(m, m->params), H, h.stream(h_stream(m, m->L - 1)),
                                  T(0), m->sample_logits));
            const unsigned long long k = (unsigned long long)(done + j);
            CUDA_TRY_LAUNCH(launch(sample_draw<T>, 1, kThreads, 0, m->stream, m->sample_logits,
                by(m, m->params), V, temperature, seed, k, gpurnn_sample_draw_index((uint64_t)b, k),
                m->sample_weights, m->sample_tokens + j, current, m->sample_bad), "sample_draw");
        }
        CUDA_TRY(cudaMemcpyAsync(m->host_sample_tokens, m->sample_tokens, (size_t)batch * sizeof(int32_t),
                                 cudaMemcpyDeviceToHost, m->stream));
        CUDA_TRY(cudaMemcpyAsync(m->host_sample_bad, m->sample_bad, sizeof(int), cudaMemcpyDeviceToHost, m->stream));
        CUDA_TRY(cudaStreamSynchronize(m->stream));
        if (*m->host_sample_bad) {
            if (out_stride == 1)
                return gpurnn_fail(GPURNN_ERR_NUMERIC, "a logit of draw %lld is not finite",
                                   (long long)*m->host_sample_bad - 1);
            return gpurnn_fail(GPURNN_ERR_NUMERIC, "a logit of draw %lld of sequence b=%d is not finite",
                               (long long)*m->host_sample_bad - 1, b);
        }
        for (int j = 0; j < batch; j++) out[(size_t)(done + j) * out_stride] = m->host_sample_tokens[j];
    }
    return GPURNN_OK;
}

template <typename T>
gpurnn_status sample(void *ctx, int32_t first_token, int n, double temperature, unsigned long long seed,
                     int32_t *out)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    return sample_sequence(m, 0, first_token, n, temperature, seed, out, 1);
}

/* One sequence after another, each exactly as gpurnn_sample samples sequence 0 (GEMVs,
 * not one GEMM over the batch: a GEMM's rounding may differ from a GEMV's, and sequence
 * 0 must draw sample's tokens). */
template <typename T>
gpurnn_status sample_batch(void *ctx, const int32_t *first_tokens, int n, double temperature,
                           unsigned long long seed, int32_t *out)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    for (int b = 0; b < m->B; b++)
        GPURNN_TRY(sample_sequence(m, b, first_tokens[b], n, temperature, seed, out + b, (size_t)m->B));
    return GPURNN_OK;
}

/* Where state j of an inference call sits (see infer_ring). */
template <typename T>
States<T> infer_state(Model<T> *m, int j)
{
    return States<T>{m->infer_states + (size_t)(j % m->infer_ring) * m->B * m->H, m->infer_stride};
}

/* Per step: the recurrence (as forward's), and where an output is wanted or a score kept,
 * one GEMM for the (B, V) logits, one kernel for the distributions and per-sequence
 * log-likelihoods, one for their running sum. Tokens go up kInferTokenSteps steps at a
 * time through pinned staging; each wanted (B, V) block comes back through pinned staging
 * (one synchronisation per step of GPURNN_INFER_EACH_STEP). */
template <typename T>
gpurnn_status infer(void *ctx, const int32_t *inputs, const int32_t *targets, int T_steps,
                    gpurnn_infer_output what, gpurnn_prob_kind kind, double *out, double *log_likelihood)
{
    Model<T> *m = static_cast<Model<T> *>(ctx);
    DeviceGuard device_guard(m->device);
    CUDA_TRY(device_guard.err);
    const int V = m->V, H = m->H, B = m->B;
    const size_t dist_values = (size_t)B * V;
    GPURNN_TRY(copy_carried(m, infer_state(m, 0), carried_state(m), B));
    CUDA_TRY(cudaMemsetAsync(m->infer_total, 0, sizeof(double), m->stream));
    for (int t0 = 0; t0 < T_steps; t0 += kInferTokenSteps) {
        const int steps = std::min(kInferTokenSteps, T_steps - t0);
        const size_t count = (size_t)steps * B;
        /* the stage may be overwritten once the previous block's copy has read it */
        if (t0 > 0) CUDA_TRY(cudaStreamSynchronize(m->stream));
        memcpy(m->host_infer_tokens, inputs + (size_t)t0 * B, count * sizeof(int32_t));
        if (targets) memcpy(m->host_infer_tokens + count, targets + (size_t)t0 * B, count * sizeof(int32_t));
        CUDA_TRY(cudaMemcpyAsync(m->infer_tokens, m->host_infer_tokens, (targets ? 2 : 1) * count * sizeof(int32_t),
                                 cudaMemcpyHostToDevice, m->stream));
        const int32_t *x = m->infer_tokens, *tgt = targets ? m->infer_tokens + count : nullptr;
        for (int s = 0; s < steps; s++) {
            const int t = t0 + s;
            for (int l = 0; l < m->L; l++)
                GPURNN_TRY(layer_step(m, l, infer_state(m, t), infer_state(m, t + 1), x + (size_t)s * B, B));
            const T *h = infer_state(m, t + 1).stream(h_stream(m, m->L - 1));
            const bool wanted = what == GPURNN_INFER_EACH_STEP || (what == GPURNN_INFER_LAST && t == T_steps - 1);
            if (!wanted && !tgt) continue;
            GPURNN_TRY(gemm_rm<T>(m->blas, false, true, B, V, H, T(1), h, H, why(m, m->params), H, T(0),
                                  m->infer_logits, V));
            CUDA_TRY_LAUNCH(launch(infer_distribution<T>, B, kThreads, 0, m->stream, m->infer_logits,
                by(m, m->params), V, kind == GPURNN_LOG_PROBS ? 1 : 0, tgt ? tgt + (size_t)s * B : nullptr,
                wanted ? m->infer_dist : nullptr, m->infer_rows), "infer_distribution");
            CUDA_TRY_LAUNCH(launch(accumulate_sum, 1, kThreads, 0, m->stream, m->infer_rows, B, m->infer_total),
                            "accumulate_sum");
            if (wanted) {
                CUDA_TRY(cudaMemcpyAsync(m->host_infer_dist, m->infer_dist, dist_values * sizeof(double),
                                         cudaMemcpyDeviceToHost, m->stream));
                CUDA_TRY(cudaStreamSynchronize(m->stream));
                double *dst = what == GPURNN_INFER_EACH_STEP ? out + (size_t)t * dist_values : out;
                memcpy(dst, m->host_infer_dist, dist_values * sizeof(double));
            }
        }
    }
    CUDA_TRY(cudaMemcpyAsync(m->host_scalars + 2, m->infer_total, sizeof(double), cudaMemcpyDeviceToHost, m->stream));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    const double total = m->host_scalars[2];
    if (!isfinite(total))
        return gpurnn_fail(GPURNN_ERR_NUMERIC,
                           "a logit is not finite (the parameters are too large); the carried state was not changed");
    GPURNN_TRY(copy_carried(m, carried_state(m), infer_state(m, T_steps), B));
    CUDA_TRY(cudaStreamSynchronize(m->stream));
    if (log_likelihood) *log_likelihood = total;
    return GPURNN_OK;
}

template <typename T>
void memory(void *ctx, gpurnn_memory_report *report)
{
    const Model<T> *m = static_cast<const Model<T> *>(ctx);
    for (int kind = 0; kind < GPURNN_MEMORY_KINDS; kind++) {
        report->host[kind] += m->host_bytes[kind];
        report->device[kind] += m->device_bytes[kind];
    }
    report->host[GPURNN_MEMORY_WORKSPACE] += sizeof *m;
}

template <typename T>
constexpr gpurnn_backend_ops make_ops()
{
    gpurnn_backend_ops ops{};
    ops.name = "cuda";
    ops.create = create<T>;
    ops.destroy = destroy<T>;
    ops.read = read<T>;
    ops.write = write<T>;
    ops.fill_zero = fill_zero<T>;
    ops.forward = forward<T>;
    ops.backward = backward<T>;
    ops.grad_sumsq = grad_sumsq<T>;
    ops.grad_scale = grad_scale<T>;
    ops.grad_clamp = grad_clamp<T>;
    ops.step = step<T>;
    ops.sample = sample<T>;
    ops.infer = infer<T>;
    ops.sample_batch = sample_batch<T>;
    ops.memory = memory<T>;
    return ops;
}

const gpurnn_backend_ops cuda_ops_f32 = make_ops<float>();
const gpurnn_backend_ops cuda_ops_f64 = make_ops<double>();

} // namespace
} // namespace gpurnn

extern "C" const gpurnn_backend_ops *gpurnn_cuda_backend(gpurnn_dtype dtype)
{
    return dtype == GPURNN_F64 ? &gpurnn::cuda_ops_f64 : &gpurnn::cuda_ops_f32;
}

namespace gpurnn {
namespace {

__global__ void probe_kernel(int *out) { *out = 1; }

/* What the probe found for one device, kept because finding it synchronises the whole
 * device (other threads' models included); each device is probed the first time it is
 * current. A failure that may pass (an allocation) is not kept. */
constexpr int kMaxProbedDevices = 64;
struct ProbeResult {
    bool known = false;
    gpurnn_status status = GPURNN_OK;
    char message[512] = "";
};
std::mutex probe_mutex;
ProbeResult probe_results[kMaxProbedDevices];

gpurnn_status probe_device(int device, bool *keep)
{
    *keep = true;
    /* A device this build has no kernel image (or PTX) for fails only at launch: try one. */
    int *flag = nullptr;
    cudaError_t err = cudaMalloc((void **)&flag, sizeof(int));
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *keep = false;
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE,
                           "CUDA backend: cannot allocate %zu bytes on device %d to test it: %s (%s)", sizeof(int),
                           device, cudaGetErrorString(err), cudaGetErrorName(err));
    }
    err = launch(probe_kernel, 1, 1, 0, nullptr, flag);
    if (err == cudaSuccess) err = cudaDeviceSynchronize();
    cudaFree(flag);
    (void)cudaGetLastError();
    if (err != cudaSuccess) {
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
        (void)cudaGetLastError();
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE,
                           "CUDA backend: device %d (compute capability %d.%d) cannot run this build's kernels: %s",
                           device, major, minor, cudaGetErrorString(err));
    }
    return GPURNN_OK;
}

} // namespace
} // namespace gpurnn

extern "C" gpurnn_status gpurnn_cuda_probe(void)
{
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    (void)cudaGetLastError();
    if (err == cudaErrorNoDevice || (err == cudaSuccess && count == 0))
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE, "CUDA backend: no CUDA device is present");
    if (err == cudaErrorInsufficientDriver)
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE,
                           "CUDA backend: no NVIDIA driver, or one older than this build's CUDA %d.%d runtime needs",
                           CUDART_VERSION / 1000, (CUDART_VERSION % 1000) / 10);
    if (err != cudaSuccess)
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE, "CUDA backend: cudaGetDeviceCount failed: %s (%s)",
                           cudaGetErrorString(err), cudaGetErrorName(err));
    int device = 0;
    err = cudaGetDevice(&device);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return gpurnn_fail(GPURNN_ERR_BACKEND_UNAVAILABLE, "CUDA backend: cudaGetDevice failed: %s (%s)",
                           cudaGetErrorString(err), cudaGetErrorName(err));
    }
    std::lock_guard<std::mutex> lock(gpurnn::probe_mutex);
    bool cacheable = device >= 0 && device < gpurnn::kMaxProbedDevices;
    if (cacheable && gpurnn::probe_results[device].known) {
        const gpurnn::ProbeResult &r = gpurnn::probe_results[device];
        return r.status == GPURNN_OK ? GPURNN_OK : gpurnn_fail(r.status, "%s", r.message);
    }
    bool keep = false;
    gpurnn_status s = gpurnn::probe_device(device, &keep);
    if (cacheable && keep) {
        gpurnn::ProbeResult &r = gpurnn::probe_results[device];
        r.status = s;
        if (s != GPURNN_OK) snprintf(r.message, sizeof r.message, "%s", gpurnn_last_error());
        r.known = true;
    }
    return s;
}

extern "C" gpurnn_status gpurnn_cuda_memory_info(size_t *free_bytes, size_t *total_bytes)
{
    cudaError_t err = cudaMemGetInfo(free_bytes, total_bytes);
    if (err != cudaSuccess) return gpurnn_cuda_status(err, "cudaMemGetInfo");
    return GPURNN_OK;
}
