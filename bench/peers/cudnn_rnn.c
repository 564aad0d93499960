/* gpurnn-bench-cudnn: the cuDNN peer of gpurnn-bench.
 *
 * The same model and training step as libgpurnn, built from cuDNN 9 and cuBLAS:
 *   forward   cudnnRNNForward (RNN_TANH, one layer, linear input of the one-hot tokens,
 *             cuDNN's default double bias), then logits = Why·h_t + by through one cuBLAS
 *             GEMM over all T·B rows and a fused softmax / cross-entropy / dY kernel;
 *   backward  dWhy = dYᵀ·h and dh = dY·Why (cuBLAS GEMMs), dby (GEMV), then
 *             cudnnRNNBackwardData_v8 and cudnnRNNBackwardWeights_v8;
 *   update    the global gradient norm (cublasSnrm2, left on the device) and one kernel
 *             for p -= lr·min(1, clip/(norm+1e-6))·g  (clip_grad_norm_ + SGD).
 * Parameters and gradients each live in one buffer: [cuDNN weight space | Why | by].
 * The final hidden state is carried into the next step (as libgpurnn's carried state),
 * and the loss is copied to the host every step (libgpurnn returns it every step).
 * --loss sum|mean reduces as libgpurnn does (the sum of the per-token losses, or that sum
 * / (T·B)); the gradients are those of that loss. cuDNN runs in CUDNN_FMA_MATH (FP32, no
 * TF32 tensor cores) and cuBLAS in its default math mode (no TF32), as libgpurnn.
 *
 * Every CUDA, cuDNN and cuBLAS status is checked. Each (T, algorithm) runs in a child
 * process, so an algorithm cuDNN refuses, or a crash, costs only its own line. With no
 * usable device it prints one "skipped" record and exits 0.
 *
 * Options are gpurnn-bench's (--vocab --hidden --batch --seq LIST --steps --warmup
 * --max-time --optimizer --lr --clip --loss --seed --preset) plus
 *   --algo LIST   standard, persist_static, persist_static_small_h, persist_dynamic, or all
 *                 (= standard,persist_static,persist_static_small_h)
 * Output: one JSON record per line, the fields of bench/README.md. */
#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_record.h"

int cudnn_peer_softmax_xent(float *logits, const float *by, const int *targets, float *row_loss, int rows, int V,
                            float scale, cudaStream_t stream);
int cudnn_peer_clip_sgd(float *p, const float *g, size_t n, const float *norm, float max_norm, float lr,
                        cudaStream_t stream);

typedef struct {
    int V, H, B;
    int seqs[32], nseq;
    int steps, warmup;
    double max_time, lr, clip, timeout;
    int mean;
    unsigned long long seed;
    char optimizer[16], preset[32], algos[256];
    char cell[8];   /* tanh, relu, gru, lstm */
    int layers;
} options;

static cudnnRNNMode_t cell_mode(const char *cell)
{
    if (!strcmp(cell, "relu")) return CUDNN_RNN_RELU;
    if (!strcmp(cell, "gru")) return CUDNN_GRU;
    if (!strcmp(cell, "lstm")) return CUDNN_LSTM;
    return CUDNN_RNN_TANH;
}

typedef struct {
    const char *name;
    cudnnRNNAlgo_t algo;
} algo_entry;

static const algo_entry algos[] = {
    {"standard", CUDNN_RNN_ALGO_STANDARD},
    {"persist_static", CUDNN_RNN_ALGO_PERSIST_STATIC},
    {"persist_static_small_h", CUDNN_RNN_ALGO_PERSIST_STATIC_SMALL_H},
    {"persist_dynamic", CUDNN_RNN_ALGO_PERSIST_DYNAMIC},
};

/* ---- error handling: every failure fills r->reason and jumps to the cleanup ---------- */

#define FAIL_IF(cond, ...)                                                                    \
    do {                                                                                      \
        if (cond) {                                                                           \
            snprintf(r->reason, sizeof r->reason, __VA_ARGS__);                               \
            goto done;                                                                        \
        }                                                                                     \
    } while (0)
#define CUDA_CHECK(call)                                                                      \
    do {                                                                                      \
        cudaError_t e_ = (call);                                                              \
        FAIL_IF(e_ != cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                  \
    } while (0)
#define CUDNN_CHECK(call)                                                                     \
    do {                                                                                      \
        cudnnStatus_t s_ = (call);                                                            \
        if (s_ != CUDNN_STATUS_SUCCESS) {                                                     \
            char detail_[160] = "";                                                           \
            cudnnGetLastErrorString(detail_, sizeof detail_);                                 \
            FAIL_IF(1, "%s: %s%s%s", #call, cudnnGetErrorString(s_), detail_[0] ? ": " : "", \
                    detail_);                                                                 \
        }                                                                                     \
    } while (0)
#define CUBLAS_CHECK(call)                                                                    \
    do {                                                                                      \
        cublasStatus_t b_ = (call);                                                           \
        FAIL_IF(b_ != CUBLAS_STATUS_SUCCESS, "%s: cuBLAS status %d", #call, (int)b_);         \
    } while (0)

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

typedef struct {
    const options *o;
    int T;
    const algo_entry *algo;
} job;

/* Child: one (T, algorithm) measurement. */
static void measure(const job *j, bench_record *r)
{
    const options *o = j->o;
    const int V = o->V, H = o->H, B = o->B, T = j->T;
    const size_t rows = (size_t)T * (size_t)B;
    cudaStream_t stream = NULL;
    cudnnHandle_t dnn = NULL;
    cublasHandle_t blas = NULL;
    cudnnDropoutDescriptor_t drop = NULL;
    cudnnRNNDescriptor_t rnn = NULL;
    cudnnRNNDataDescriptor_t xdesc = NULL, ydesc = NULL;
    cudnnTensorDescriptor_t hdesc = NULL;
    void *drop_states = NULL, *work = NULL, *reserve = NULL;
    float *params = NULL, *grads = NULL, *x = NULL, *dx = NULL, *y = NULL, *dy = NULL, *logits = NULL;
    float *hx = NULL, *hy = NULL, *dhx = NULL, *dhy = NULL, *row_loss = NULL, *ones = NULL, *scalars = NULL;
    float *cx = NULL, *cy = NULL, *dcx = NULL, *dcy = NULL; /* LSTM only */
    const int L = o->layers, lstm = !strcmp(o->cell, "lstm");
    const size_t state_values = (size_t)L * B * H;
    int *dev_seq = NULL, *targets_dev = NULL, *seq_host = NULL;
    float *host = NULL;
    int32_t *tokens = NULL, *targets = NULL;
    double *times = NULL;
    size_t free0 = 0, free1 = 0, total = 0;

    BENCH_SET(r->kind, "step");
    BENCH_SET(r->impl, "cudnn");
    BENCH_SET(r->backend, "cuda");
    BENCH_SET(r->variant, j->algo->name);
    BENCH_SET(r->preset, o->preset);
    BENCH_SET(r->dtype, "f32");
    BENCH_SET(r->optimizer, "sgd");
    BENCH_SET(r->reduction, o->mean ? "mean" : "sum");
    BENCH_SET(r->status, "error");
    BENCH_SET(r->cell, o->cell);
    r->layers = o->layers;
    r->V = V;
    r->H = H;
    r->B = B;
    r->T = T;
    r->warmup = o->warmup;

    int dev = 0;
    struct cudaDeviceProp prop;
    CUDA_CHECK(cudaSetDevice(0));
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    size_t ver = cudnnGetVersion();
    bench_format(r->device, sizeof r->device, "%s (sm_%d%d); cuDNN %zu.%zu.%zu", prop.name, prop.major, prop.minor,
             ver / 10000, (ver % 10000) / 100, ver % 100);
    CUDA_CHECK(cudaMemGetInfo(&free0, &total));

    /* tokens: the same generator as gpurnn-bench (the work does not depend on them) */
    tokens = malloc(rows * sizeof *tokens);
    targets = malloc(rows * sizeof *targets);
    times = malloc((size_t)o->steps * sizeof *times);
    seq_host = malloc((size_t)B * sizeof *seq_host);
    FAIL_IF(!tokens || !targets || !times || !seq_host, "out of host memory");
    uint64_t s = o->seed * 0x9e3779b97f4a7c15ULL + 12345;
    for (size_t i = 0; i < rows; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        tokens[i] = (int32_t)(s % (uint64_t)V);
        targets[i] = (int32_t)((s >> 32) % (uint64_t)V);
    }
    for (int b = 0; b < B; b++) seq_host[b] = T;

    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDNN_CHECK(cudnnCreate(&dnn));
    CUDNN_CHECK(cudnnSetStream(dnn, stream));
    CUBLAS_CHECK(cublasCreate(&blas));
    CUBLAS_CHECK(cublasSetStream(blas, stream));

    /* RNN descriptor: dropout 0 (cuDNN still wants a descriptor with states). Math type
       CUDNN_FMA_MATH: plain FP32 FMA, no tensor cores. CUDNN_DEFAULT_MATH lets cuDNN use
       TF32 tensor-core math for FP32 data on sm_80 and later, and libgpurnn computes in
       FP32, so the default would compare TF32 against FP32. */
    size_t drop_bytes = 0;
    CUDNN_CHECK(cudnnCreateDropoutDescriptor(&drop));
    CUDNN_CHECK(cudnnDropoutGetStatesSize(dnn, &drop_bytes));
    CUDA_CHECK(cudaMalloc(&drop_states, drop_bytes ? drop_bytes : 1));
    CUDNN_CHECK(cudnnSetDropoutDescriptor(drop, dnn, 0.0f, drop_states, drop_bytes, o->seed));
    CUDNN_CHECK(cudnnCreateRNNDescriptor(&rnn));
    CUDNN_CHECK(cudnnSetRNNDescriptor_v8(rnn, j->algo->algo, cell_mode(o->cell), CUDNN_RNN_DOUBLE_BIAS,
                                         CUDNN_UNIDIRECTIONAL, CUDNN_LINEAR_INPUT, CUDNN_DATA_FLOAT,
                                         CUDNN_DATA_FLOAT, CUDNN_FMA_MATH, V, H, H, L, drop,
                                         CUDNN_RNN_PADDED_IO_DISABLED));
    if (j->algo->algo == CUDNN_RNN_ALGO_PERSIST_DYNAMIC) CUDNN_CHECK(cudnnBuildRNNDynamic(dnn, rnn, B));

    CUDNN_CHECK(cudnnCreateRNNDataDescriptor(&xdesc));
    CUDNN_CHECK(cudnnCreateRNNDataDescriptor(&ydesc));
    CUDNN_CHECK(cudnnSetRNNDataDescriptor(xdesc, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, V,
                                          seq_host, NULL));
    CUDNN_CHECK(cudnnSetRNNDataDescriptor(ydesc, CUDNN_DATA_FLOAT, CUDNN_RNN_DATA_LAYOUT_SEQ_MAJOR_PACKED, T, B, H,
                                          seq_host, NULL));
    int hdims[3] = {L, B, H}, hstrides[3] = {B * H, H, 1};
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&hdesc));
    CUDNN_CHECK(cudnnSetTensorNdDescriptor(hdesc, CUDNN_DATA_FLOAT, 3, hdims, hstrides));

    size_t wspace = 0, work_bytes = 0, reserve_bytes = 0;
    CUDNN_CHECK(cudnnGetRNNWeightSpaceSize(dnn, rnn, &wspace));
    CUDNN_CHECK(cudnnGetRNNTempSpaceSizes(dnn, rnn, CUDNN_FWD_MODE_TRAINING, xdesc, &work_bytes, &reserve_bytes));

    /* one buffer each for parameters and gradients: [weight space | Why (V,H) | by (V)] */
    const size_t why_off = round_up(wspace, 256) / sizeof(float);
    const size_t by_off = why_off + (size_t)V * H;
    const size_t nparam = by_off + (size_t)V;
    CUDA_CHECK(cudaMalloc((void **)&params, nparam * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&grads, nparam * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&x, rows * V * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&dx, rows * V * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&y, rows * H * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&dy, rows * H * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&logits, rows * V * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&hx, state_values * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&hy, state_values * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&dhx, state_values * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&dhy, state_values * sizeof(float)));
    if (lstm) {
        CUDA_CHECK(cudaMalloc((void **)&cx, state_values * sizeof(float)));
        CUDA_CHECK(cudaMalloc((void **)&cy, state_values * sizeof(float)));
        CUDA_CHECK(cudaMalloc((void **)&dcx, state_values * sizeof(float)));
        CUDA_CHECK(cudaMalloc((void **)&dcy, state_values * sizeof(float)));
        CUDA_CHECK(cudaMemset(cx, 0, state_values * sizeof(float)));
        CUDA_CHECK(cudaMemset(dcy, 0, state_values * sizeof(float)));
    }
    CUDA_CHECK(cudaMalloc((void **)&row_loss, rows * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&ones, rows * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&scalars, 2 * sizeof(float))); /* [0] loss, [1] norm */
    CUDA_CHECK(cudaMalloc((void **)&dev_seq, (size_t)B * sizeof(int)));
    CUDA_CHECK(cudaMalloc((void **)&targets_dev, rows * sizeof(int)));
    if (work_bytes) CUDA_CHECK(cudaMalloc(&work, work_bytes));
    if (reserve_bytes) CUDA_CHECK(cudaMalloc(&reserve, reserve_bytes));

    /* initial values, all copied before timing */
    size_t host_n = nparam > rows * V ? nparam : rows * V;
    host = malloc(host_n * sizeof *host);
    FAIL_IF(!host, "out of host memory (%zu bytes)", host_n * sizeof *host);
    for (size_t i = 0; i < nparam; i++) { /* uniform with standard deviation 0.01 */
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        host[i] = (float)(((double)(s >> 11) * 0x1.0p-53 * 2.0 - 1.0) * 0.01 * 1.7320508075688772);
    }
    CUDA_CHECK(cudaMemcpy(params, host, nparam * sizeof(float), cudaMemcpyHostToDevice));
    memset(host, 0, rows * V * sizeof *host);
    for (size_t i = 0; i < rows; i++) host[i * V + (size_t)tokens[i]] = 1.0f; /* one-hot (T, B, V) */
    CUDA_CHECK(cudaMemcpy(x, host, rows * V * sizeof(float), cudaMemcpyHostToDevice));
    for (size_t i = 0; i < rows; i++) host[i] = 1.0f;
    CUDA_CHECK(cudaMemcpy(ones, host, rows * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(targets_dev, targets, rows * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dev_seq, seq_host, (size_t)B * sizeof(int), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(hx, 0, state_values * sizeof(float)));
    CUDA_CHECK(cudaMemset(dhy, 0, state_values * sizeof(float)));
    CUDA_CHECK(cudaDeviceSynchronize());

    const float one = 1.0f, zero = 0.0f;
    /* The reduction, as libgpurnn's: the step's loss is the sum of the T·B per-token
       losses (sum) or that sum / (T·B) (mean). dY is scaled by the same factor, so every
       gradient is the gradient of that loss. */
    const double loss_scale = o->mean ? 1.0 / (double)rows : 1.0;
    const float scale = (float)loss_scale;
    float *Why = params + why_off, *by = params + by_off, *dWhy = grads + why_off, *dby = grads + by_off;
    float loss_host = 0; /* the sum of the per-token losses (cublasSasum of row_loss) */
    double step_loss = NAN; /* the step's loss in the reduction's terms */
    int n = 0;
    double timed = 0;
    for (int it = -o->warmup; it < o->steps; it++) {
        double t0 = bench_now_s();
        CUDA_CHECK(cudaMemsetAsync(grads, 0, nparam * sizeof(float), stream)); /* zero_grad */
        CUDNN_CHECK(cudnnRNNForward(dnn, rnn, CUDNN_FWD_MODE_TRAINING, dev_seq, xdesc, x, ydesc, y, hdesc, hx, hy,
                                    hdesc, cx, cy, wspace, params, work_bytes, work, reserve_bytes, reserve));
        /* logits (rows, V) = h (rows, H) · Whyᵀ: column-major, logitsᵀ = Whyᵀᵀ... i.e.
           C(V x rows) = op(A = Why as (H x V))ᵀ · B (= h as (H x rows)) */
        CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, V, (int)rows, H, &one, Why, H, y, H, &zero, logits,
                                 V));
        {
            int e = cudnn_peer_softmax_xent(logits, by, targets_dev, row_loss, (int)rows, V, scale, stream);
            FAIL_IF(e != 0, "softmax/cross-entropy kernel: %s", cudaGetErrorString((cudaError_t)e));
        }
        CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_DEVICE));
        CUBLAS_CHECK(cublasSasum(blas, (int)rows, row_loss, 1, scalars));
        CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_HOST));
        /* dWhy (V,H) row-major = dYᵀ·h: column-major (H x V) = h(H x rows) · dY(V x rows)ᵀ */
        CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_T, H, V, (int)rows, &one, y, H, logits, V, &one, dWhy,
                                 H));
        /* dby (V) = dY(V x rows) · ones */
        CUBLAS_CHECK(cublasSgemv(blas, CUBLAS_OP_N, V, (int)rows, &one, logits, V, ones, 1, &one, dby, 1));
        /* dh (rows, H) row-major = dY · Why: column-major (H x rows) = Why(H x V) · dY(V x rows) */
        CUBLAS_CHECK(cublasSgemm(blas, CUBLAS_OP_N, CUBLAS_OP_N, H, (int)rows, V, &one, Why, H, logits, V, &zero, dy,
                                 H));
        CUDNN_CHECK(cudnnRNNBackwardData_v8(dnn, rnn, dev_seq, ydesc, y, dy, xdesc, dx, hdesc, hx, dhy, dhx, hdesc,
                                            cx, dcy, dcx, wspace, params, work_bytes, work, reserve_bytes,
                                            reserve));
        CUDNN_CHECK(cudnnRNNBackwardWeights_v8(dnn, rnn, CUDNN_WGRAD_MODE_ADD, dev_seq, xdesc, x, hdesc, hx, ydesc,
                                               y, wspace, grads, work_bytes, work, reserve_bytes, reserve));
        /* clip_grad_norm + SGD */
        CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_DEVICE));
        CUBLAS_CHECK(cublasSnrm2(blas, (int)nparam, grads, 1, scalars + 1));
        CUBLAS_CHECK(cublasSetPointerMode(blas, CUBLAS_POINTER_MODE_HOST));
        {
            int e = cudnn_peer_clip_sgd(params, grads, nparam, scalars + 1, (float)o->clip, (float)o->lr, stream);
            FAIL_IF(e != 0, "clip/SGD kernel: %s", cudaGetErrorString((cudaError_t)e));
        }
        CUDA_CHECK(cudaMemcpyAsync(&loss_host, scalars, sizeof(float), cudaMemcpyDeviceToHost, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        double dt = bench_now_s() - t0;
        float *swap = hx; /* carry the final state into the next step */
        hx = hy;
        hy = swap;
        swap = cx;
        cx = cy;
        cy = swap;
        step_loss = (double)loss_host * loss_scale;
        FAIL_IF(!isfinite(step_loss), "the loss is %g at step %d", step_loss, it);
        if (it < 0) continue;
        times[n++] = dt;
        timed += dt;
        if (timed > o->max_time) break;
    }
    CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    bench_summarize_times(times, n, r);
    r->tokens_per_s = (double)rows / r->median_s;
    r->flops_per_step = bench_model_flops(o->cell, L, V, H, B, T);
    r->gflops = r->flops_per_step / r->median_s * 1e-9;
    r->loss = o->mean ? step_loss : step_loss / (double)rows; /* per token, as gpurnn-bench's */
    r->dev_mem_bytes = free0 > free1 ? (double)(free0 - free1) : 0;
    r->dev_total_bytes = (double)total;
    BENCH_SET(r->status, "ok");
    r->reason[0] = '\0';

done:
    if (strcmp(r->status, "ok")) BENCH_SET(r->kind, "skip");
    {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) == 0) r->peak_rss_bytes = (double)ru.ru_maxrss * 1024.0;
    }
    if (hdesc) cudnnDestroyTensorDescriptor(hdesc);
    if (xdesc) cudnnDestroyRNNDataDescriptor(xdesc);
    if (ydesc) cudnnDestroyRNNDataDescriptor(ydesc);
    if (rnn) cudnnDestroyRNNDescriptor(rnn);
    if (drop) cudnnDestroyDropoutDescriptor(drop);
    if (blas) cublasDestroy(blas);
    if (dnn) cudnnDestroy(dnn);
    void *dev_ptrs[] = {drop_states, work, reserve, params, grads, x, dx, y, dy, logits, hx, hy, dhx, dhy,
                        cx, cy, dcx, dcy, row_loss, ones, scalars, dev_seq, targets_dev};
    for (size_t i = 0; i < sizeof dev_ptrs / sizeof dev_ptrs[0]; i++)
        if (dev_ptrs[i]) cudaFree(dev_ptrs[i]);
    if (stream) cudaStreamDestroy(stream);
    free(host);
    free(tokens);
    free(targets);
    free(times);
    free(seq_host);
}

/* Child: is there a device at all? Fills r with a "skipped" record when not. */
static int probe(bench_record *r)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        snprintf(r->reason, sizeof r->reason, "no usable CUDA device: cudaGetDeviceCount: %s", cudaGetErrorString(e));
        return -1;
    }
    if (count < 1) {
        snprintf(r->reason, sizeof r->reason, "no CUDA device");
        return -1;
    }
    return 0;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Runs one job (or the probe, for j == NULL) in a child; a crash becomes an error record. */
static int run_child(const job *j, double timeout_s, bench_record *out)
{
    int fds[2];
    bench_record_init(out);
    fflush(NULL);
    if (pipe(fds)) {
        snprintf(out->reason, sizeof out->reason, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(out->reason, sizeof out->reason, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        bench_record r;
        bench_record_init(&r);
        int rc = 0;
        if (j)
            measure(j, &r);
        else
            rc = probe(&r) ? 3 : 0;
        if (write_all(fds[1], &r, sizeof r)) rc = 1;
        _exit(rc);
    }
    close(fds[1]);
    size_t got = 0;
    double deadline = bench_now_s() + timeout_s;
    int timed_out = 0;
    while (got < sizeof *out) {
        double left = deadline - bench_now_s();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {fds[0], POLLIN, 0};
        int pr = poll(&p, 1, (int)(left * 1000) + 1);
        if (pr <= 0) continue;
        ssize_t k = read(fds[0], (char *)out + got, sizeof *out - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == sizeof *out) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    bench_record_init(out);
    if (timed_out)
        snprintf(out->reason, sizeof out->reason, "killed after %.0f s", timeout_s);
    else if (WIFSIGNALED(status))
        snprintf(out->reason, sizeof out->reason, "the measurement process died of signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(out->reason, sizeof out->reason, "the measurement process exited with status %d",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return -1;
}

static int parse_args(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->V = 65;
    o->H = 100;
    o->B = 1;
    o->seqs[0] = 25;
    o->nseq = 1;
    o->steps = 10;
    o->warmup = 2;
    o->max_time = 60;
    o->lr = 0.01;
    o->clip = 5;
    o->timeout = 1800;
    o->seed = 1;
    BENCH_SET(o->optimizer, "sgd");
    BENCH_SET(o->preset, "custom");
    BENCH_SET(o->algos, "all");
    BENCH_SET(o->cell, "tanh");
    o->layers = 1;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i];
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            printf("usage: gpurnn-bench-cudnn [--vocab V] [--hidden H] [--batch B] [--seq LIST] [--steps N]\n"
                   "  [--warmup N] [--max-time SEC] [--lr X] [--clip X] [--loss sum|mean] [--seed N]\n"
                   "  [--preset NAME] [--algo standard|persist_static|persist_static_small_h|persist_dynamic|all]\n"
                   "  [--cell tanh|relu|gru|lstm] [--layers L]\n"
                   "Prints one JSON record per (T, algorithm); see bench/README.md.\n");
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "gpurnn-bench-cudnn: %s needs a value\n", k);
            return -1;
        }
        const char *v = argv[++i];
        if (!strcmp(k, "--vocab"))
            o->V = atoi(v);
        else if (!strcmp(k, "--hidden"))
            o->H = atoi(v);
        else if (!strcmp(k, "--batch"))
            o->B = atoi(v);
        else if (!strcmp(k, "--cell"))
            BENCH_SET(o->cell, v);
        else if (!strcmp(k, "--layers"))
            o->layers = atoi(v);
        else if (!strcmp(k, "--seq")) {
            char buf[512];
            BENCH_SET(buf, v);
            o->nseq = 0;
            for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && o->nseq < 32; t = strtok_r(NULL, ",", &save))
                o->seqs[o->nseq++] = atoi(t);
        } else if (!strcmp(k, "--steps"))
            o->steps = atoi(v);
        else if (!strcmp(k, "--warmup"))
            o->warmup = atoi(v);
        else if (!strcmp(k, "--max-time"))
            o->max_time = atof(v);
        else if (!strcmp(k, "--timeout"))
            o->timeout = atof(v);
        else if (!strcmp(k, "--lr"))
            o->lr = atof(v);
        else if (!strcmp(k, "--clip"))
            o->clip = atof(v);
        else if (!strcmp(k, "--loss"))
            o->mean = !strcmp(v, "mean");
        else if (!strcmp(k, "--seed"))
            o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--optimizer"))
            BENCH_SET(o->optimizer, v);
        else if (!strcmp(k, "--preset"))
            BENCH_SET(o->preset, v);
        else if (!strcmp(k, "--algo"))
            BENCH_SET(o->algos, v);
        else if (!strcmp(k, "--threads")) {
            /* accepted for symmetry with the other peers; the GPU does not use it */
        } else {
            fprintf(stderr, "gpurnn-bench-cudnn: unknown option %s\n", k);
            return -1;
        }
    }
    if (o->V < 1 || o->H < 1 || o->B < 1 || o->steps < 1 || o->warmup < 0 || o->nseq < 1 || o->layers < 1 ||
        (strcmp(o->cell, "tanh") && strcmp(o->cell, "relu") && strcmp(o->cell, "gru") && strcmp(o->cell, "lstm"))) {
        fprintf(stderr, "gpurnn-bench-cudnn: V, H, B, T and --steps must be >= 1, --warmup >= 0\n");
        return -1;
    }
    for (int i = 0; i < o->nseq; i++)
        if (o->seqs[i] < 1) {
            fprintf(stderr, "gpurnn-bench-cudnn: bad sequence length %d\n", o->seqs[i]);
            return -1;
        }
    return 0;
}

static void base_record(const options *o, int T, const char *variant, bench_record *r)
{
    BENCH_SET(r->kind, "skip");
    BENCH_SET(r->impl, "cudnn");
    BENCH_SET(r->backend, "cuda");
    BENCH_SET(r->variant, variant);
    BENCH_SET(r->preset, o->preset);
    BENCH_SET(r->dtype, "f32");
    BENCH_SET(r->optimizer, o->optimizer);
    r->V = o->V;
    r->H = o->H;
    r->B = o->B;
    r->T = T;
}

int main(int argc, char **argv)
{
    options o;
    if (parse_args(argc, argv, &o)) return 2;

    /* which algorithms */
    const algo_entry *list[8];
    int nalg = 0;
    char buf[256];
    BENCH_SET(buf, o.algos);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "all")) {
            for (int i = 0; i < 3 && nalg < 8; i++) list[nalg++] = &algos[i];
            continue;
        }
        int found = 0;
        for (size_t i = 0; i < sizeof algos / sizeof algos[0]; i++)
            if (!strcmp(t, algos[i].name) && nalg < 8) list[nalg++] = &algos[i], found = 1;
        if (!found) {
            fprintf(stderr, "gpurnn-bench-cudnn: unknown algorithm '%s'\n", t);
            return 2;
        }
    }

    bench_record r;
    if (strcmp(o.optimizer, "sgd")) {
        for (int i = 0; i < o.nseq; i++) {
            bench_record_init(&r);
            base_record(&o, o.seqs[i], "", &r);
            BENCH_SET(r.status, "skipped");
            snprintf(r.reason, sizeof r.reason, "the cuDNN peer implements SGD only, not %s", o.optimizer);
            bench_record_write_json(stdout, &r);
        }
        return 0;
    }

    /* no device: one line per T, status "skipped", exit 0 */
    int rc = run_child(NULL, 120, &r);
    if (rc != 0) {
        char reason[sizeof r.reason];
        BENCH_SET(reason, r.reason[0] ? r.reason : "no usable CUDA device");
        for (int i = 0; i < o.nseq; i++) {
            bench_record_init(&r);
            base_record(&o, o.seqs[i], "", &r);
            BENCH_SET(r.status, "skipped");
            BENCH_SET(r.reason, reason);
            bench_record_write_json(stdout, &r);
        }
        fflush(stdout);
        return 0;
    }

    for (int i = 0; i < o.nseq; i++)
        for (int a = 0; a < nalg; a++) {
            job j = {&o, o.seqs[i], list[a]};
            rc = run_child(&j, o.timeout, &r);
            if (rc < 0 && !r.kind[0]) { /* the child died before it could report */
                char reason[sizeof r.reason];
                BENCH_SET(reason, r.reason);
                bench_record_init(&r);
                base_record(&o, o.seqs[i], list[a]->name, &r);
                BENCH_SET(r.status, "error");
                BENCH_SET(r.reason, reason);
            }
            bench_record_write_json(stdout, &r);
            fflush(stdout);
        }
    return 0;
}
