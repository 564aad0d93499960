/* The CUDA backend's fused kernels. Shapes are row-major, (rows, cols); every pointer is
 * device memory. No kernel uses floating-point atomics: each sum is computed by one
 * thread or one block in a fixed order, so equal inputs give equal bits on every run. */
#ifndef GPURNN_CUDA_KERNELS_CUH
#define GPURNN_CUDA_KERNELS_CUH

#include <stdint.h>

#include "../update_math.h"

namespace gpurnn {

constexpr int kThreads = 256;        /* threads per block for every kernel below */
constexpr int kReduceBlocks = 256;   /* first-stage blocks of a flat-buffer reduction */

__device__ __forceinline__ float dev_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dev_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float tanh_backward(float h, float dh) { return gpurnn_tanh_backward_f32(h, dh); }
__device__ __forceinline__ double tanh_backward(double h, double dh) { return gpurnn_tanh_backward_f64(h, dh); }

inline unsigned blocks_for(size_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

/* Sum over a block in a fixed tree order; every thread gets the result. */
template <typename A>
__device__ A block_sum(A value, A *scratch /* [kThreads / 32] */)
{
    for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < kThreads / 32 ? scratch[lane] : A(0);
        for (int offset = 16; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
        if (lane == 0) scratch[0] = value;
    }
    __syncthreads();
    A result = scratch[0];
    __syncthreads();
    return result;
}

template <typename A>
__device__ A block_max(A value, A *scratch /* [kThreads / 32] */)
{
    for (int offset = 16; offset > 0; offset /= 2) value = fmax(value, __shfl_down_sync(0xffffffffu, value, offset));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < kThreads / 32 ? scratch[lane] : scratch[0];
        for (int offset = 16; offset > 0; offset /= 2) value = fmax(value, __shfl_down_sync(0xffffffffu, value, offset));
        if (lane == 0) scratch[0] = value;
    }
    __syncthreads();
    A result = scratch[0];
    __syncthreads();
    return result;
}

/* Forward step, after z (B, H) = h_prev · Whh^T: h = tanh(z + Wxh[:, x_b] + bh). */
template <typename T>
__global__ void forward_pointwise(T *__restrict__ z, const T *__restrict__ Wxh, const T *__restrict__ bh,
                                  const int32_t *__restrict__ x /* (B) */, int B, int H, int V)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (size_t)B * H) return;
    int b = (int)(k / H), i = (int)(k % H);
    z[k] = dev_tanh(z[k] + Wxh[(size_t)i * V + x[b]] + bh[i]);
}

/* One block per output row: adds by to the logits (in place), then the max-subtracted
 * log-sum-exp and the row's loss -log p[target]. */
template <typename T>
__global__ void softmax_loss(T *__restrict__ logits /* (rows, V) */, const T *__restrict__ by,
                             const int32_t *__restrict__ targets /* (rows) */, int V,
                             double *__restrict__ row_lse /* (rows) */, double *__restrict__ row_loss)
{
    __shared__ double scratch[kThreads / 32];
    T *y = logits + (size_t)blockIdx.x * V;
    double max = -INFINITY;
    for (int v = threadIdx.x; v < V; v += kThreads) {
        T value = y[v] + by[v];
        y[v] = value;
        max = fmax(max, (double)value);
    }
    max = block_max(max, scratch);
    const T shift = (T)max;
    double sum = 0;
    for (int v = threadIdx.x; v < V; v += kThreads) sum += (double)dev_exp(y[v] - shift);
    sum = block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        double lse = (double)shift + log(sum);
        row_lse[blockIdx.x] = lse;
        row_loss[blockIdx.x] = lse - (double)y[targets[blockIdx.x]];
    }
}

/* *total += sum of values (n), in one block, in a fixed order. */
__global__ void accumulate_sum(const double *__restrict__ values, int n, double *__restrict__ total)
{
    __shared__ double scratch[kThreads / 32];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += kThreads) s += values[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) *total += s;
}

/* dY (rows, V) = (softmax(logits + by) - onehot(target)) * scale, from the forward's lse. */
template <typename T>
__global__ void output_gradient(T *__restrict__ logits, const T *__restrict__ by,
                                const double *__restrict__ row_lse, const int32_t *__restrict__ targets,
                                int rows, int V, T scale)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (size_t)rows * V) return;
    int r = (int)(k / V), v = (int)(k % V);
    T p = dev_exp(logits[k] + by[v] - (T)row_lse[r]) * scale;
    if (v == targets[r]) p -= scale;
    logits[k] = p;
}

/* The fused tanh-derivative step: dz = (1 - h^2) ⊙ (dh_out + dh_next), in place over dh_out. */
template <typename T>
__global__ void tanh_backward_step(T *__restrict__ dz /* (B, H), holds dh_out */, const T *__restrict__ h,
                                   const T *__restrict__ dh_next, size_t n)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) dz[k] = tanh_backward(h[k], dz[k] + dh_next[k]);
}

/* dWxh[:, token] += sum of dz rows with that token. Rows arrive grouped by token (a
 * stable order made on the host): block (segment, unit tile) sums its rows in order. */
template <typename T>
__global__ void scatter_input_gradient(T *__restrict__ dWxh /* (H, V) */, const T *__restrict__ dz /* (rows, H) */,
                                       const int32_t *__restrict__ order /* chunk-local rows, grouped by token */,
                                       const int32_t *__restrict__ segment_token,
                                       const int32_t *__restrict__ segment_begin,
                                       const int32_t *__restrict__ segment_end, int H, int V)
{
    int segment = blockIdx.x;
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= H) return;
    T acc = 0;
    for (int j = segment_begin[segment]; j < segment_end[segment]; j++) acc += dz[(size_t)order[j] * H + i];
    dWxh[(size_t)i * V + segment_token[segment]] += acc;
}

/* First stage of a sum of squares: partial[block] over a grid-stride share. */
template <typename T>
__global__ void sum_squares_partial(const T *__restrict__ x, size_t n, double *__restrict__ partial)
{
    __shared__ double scratch[kThreads / 32];
    double s = 0;
    for (size_t i = (size_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += (size_t)kReduceBlocks * kThreads)
        s += (double)x[i] * (double)x[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void sum_partials(const double *__restrict__ partial, int n, double *__restrict__ out)
{
    __shared__ double scratch[kThreads / 32];
    double s = 0;
    for (int i = threadIdx.x; i < n; i += kThreads) s += partial[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) *out = s;
}

template <typename T>
__global__ void scale_values(T *__restrict__ x, size_t n, T factor)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) x[k] *= factor;
}

template <typename T>
__global__ void clamp_values(T *__restrict__ x, size_t n, T limit)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    T g = x[k];
    x[k] = g > limit ? limit : (g < -limit ? -limit : g); /* NaN stays NaN */
}

struct UpdateRule {
    int kind; /* gpurnn_optimizer_kind */
    double lr, momentum, beta1, beta2, eps, bc1, bc2;
};

__device__ __forceinline__ void update_one(const UpdateRule &r, float g, float *p, float *s0, float *s1)
{
    if (r.kind == 0) gpurnn_sgd_update_f32(p, s0, g, (float)r.lr, (float)r.momentum);
    else if (r.kind == 1) gpurnn_adagrad_update_f32(p, s0, g, (float)r.lr, (float)r.eps);
    else gpurnn_adam_update_f32(p, s0, s1, g, (float)r.lr, (float)r.beta1, (float)r.beta2, (float)r.eps, (float)r.bc1, (float)r.bc2);
}
__device__ __forceinline__ void update_one(const UpdateRule &r, double g, double *p, double *s0, double *s1)
{
    if (r.kind == 0) gpurnn_sgd_update_f64(p, s0, g, r.lr, r.momentum);
    else if (r.kind == 1) gpurnn_adagrad_update_f64(p, s0, g, r.lr, r.eps);
    else gpurnn_adam_update_f64(p, s0, s1, g, r.lr, r.beta1, r.beta2, r.eps, r.bc1, r.bc2);
}

/* Pass one of an all-or-nothing update: computes every new value without storing it and
 * keeps the smallest index whose gradient or result is not finite (an integer atomicMin,
 * whose result does not depend on order). */
template <typename T>
__global__ void find_bad_update(UpdateRule rule, const T *__restrict__ params, const T *__restrict__ grads,
                                const T *__restrict__ s0, const T *__restrict__ s1, size_t n,
                                unsigned long long *__restrict__ first_bad)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    T g = grads[k], p = params[k], a = s0[k], b = s1[k];
    update_one(rule, g, &p, &a, &b);
    if (!(isfinite(g) && isfinite(p) && isfinite(a) && isfinite(b))) atomicMin(first_bad, (unsigned long long)k);
}

template <typename T>
__global__ void apply_update(UpdateRule rule, T *__restrict__ params, const T *__restrict__ grads,
                             T *__restrict__ s0, T *__restrict__ s1, size_t n)
{
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k < n) update_one(rule, grads[k], &params[k], &s0[k], &s1[k]);
}

/* Sampling, one token: h_next = tanh(z + Wxh[:, *token] + bh) for one sequence. */
template <typename T>
__global__ void sample_hidden(T *__restrict__ z /* (H) */, const T *__restrict__ Wxh, const T *__restrict__ bh,
                              const int32_t *__restrict__ token, int H, int V)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < H) z[i] = dev_tanh(z[i] + Wxh[(size_t)i * V + *token] + bh[i]);
}

/* Sampling, one draw in one block: p ∝ exp((y - max) / temperature) in float64, the same
 * arithmetic and order as the CPU backend's draw (temperature 0: the first maximum).
 * Writes the token to *out and to *token for the next step; *bad_logit gets k+1 if a
 * logit is not finite. */
template <typename T>
__global__ void sample_draw(const T *__restrict__ logits /* (V) */, const T *__restrict__ by, int V,
                            double temperature, unsigned long long seed, unsigned long long k,
                            unsigned long long draw_index /* gpurnn_sample_draw_index(b, k) */,
                            double *__restrict__ weights /* (V) */, int32_t *__restrict__ out /* (1) */,
                            int32_t *__restrict__ token, int *__restrict__ bad_logit)
{
    __shared__ double scratch[kThreads / 32];
    __shared__ int best_shared;
    if (*bad_logit != 0) return; /* an earlier draw failed: keep its index, draw nothing */
    double max = -INFINITY;
    int nonfinite = 0;
    for (int v = threadIdx.x; v < V; v += kThreads) {
        double y = (double)(logits[v] + by[v]);
        weights[v] = y;
        if (!isfinite(y)) nonfinite = 1;
        max = fmax(max, y);
    }
    max = block_max(max, scratch);
    double any_bad = block_sum((double)nonfinite, scratch);
    if (any_bad > 0) {
        if (threadIdx.x == 0) *bad_logit = (int)k + 1;
        return;
    }
    if (threadIdx.x == 0) {
        int best = 0;
        while (weights[best] != max) best++;
        best_shared = best;
    }
    __syncthreads();
    if (temperature == 0) {
        if (threadIdx.x == 0) *out = *token = best_shared;
        return;
    }
    for (int v = threadIdx.x; v < V; v += kThreads) weights[v] = exp((weights[v] - max) / temperature);
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0;
        for (int v = 0; v < V; v++) total += weights[v];
        double u = gpurnn_uniform(seed, GPURNN_STREAM_SAMPLE, (uint64_t)draw_index) * total, cumulative = 0;
        int chosen = -1;
        for (int v = 0; v < V && chosen < 0; v++) {
            cumulative += weights[v];
            if (u < cumulative) chosen = v;
        }
        if (chosen < 0) { /* u rounded up to total: the last token with any weight */
            chosen = V - 1;
            while (chosen > 0 && weights[chosen] == 0) chosen--;
        }
        *out = *token = chosen;
    }
}

/* Inference, one block per sequence b of one step: adds by to the logits (in place), then
 * in float64 the distribution into dist (B, V; nullptr: none), probabilities or (log_probs)
 * log-probabilities y - max - log(sum exp(y - max)), and rows[b] = log p[targets[b]]
 * (targets nullptr: 0); rows[b] is NaN where a logit is not finite. The log-sum-exp is
 * formed as softmax_loss forms it, so that a score matches the training loss. */
template <typename T>
__global__ void infer_distribution(T *__restrict__ logits /* (B, V) */, const T *__restrict__ by, int V,
                                   int log_probs, const int32_t *__restrict__ targets /* (B) or nullptr */,
                                   double *__restrict__ dist /* (B, V) or nullptr */,
                                   double *__restrict__ rows /* (B) */)
{
    __shared__ double scratch[kThreads / 32];
    T *y = logits + (size_t)blockIdx.x * V;
    double max = -INFINITY;
    int nonfinite = 0;
    for (int v = threadIdx.x; v < V; v += kThreads) {
        T value = y[v] + by[v];
        y[v] = value;
        if (!isfinite((double)value)) nonfinite = 1;
        max = fmax(max, (double)value);
    }
    max = block_max(max, scratch);
    if (block_sum((double)nonfinite, scratch) > 0) { /* the same for every thread of the block */
        if (threadIdx.x == 0) rows[blockIdx.x] = NAN;
        return;
    }
    double sum = 0;
    for (int v = threadIdx.x; v < V; v += kThreads) sum += exp((double)y[v] - max);
    sum = block_sum(sum, scratch);
    const double log_sum = log(sum);
    if (dist) {
        double *d = dist + (size_t)blockIdx.x * V;
        for (int v = threadIdx.x; v < V; v += kThreads)
            d[v] = log_probs ? ((double)y[v] - max) - log_sum : exp((double)y[v] - max) / sum;
    }
    if (threadIdx.x == 0) rows[blockIdx.x] = targets ? (double)y[targets[blockIdx.x]] - (max + log_sum) : 0.0;
}

} // namespace gpurnn

#endif
