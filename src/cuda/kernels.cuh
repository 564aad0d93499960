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

__device__ __forceinline__ float dev_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ double dev_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* The cells' pointwise passes, one thread per (sequence b, unit i). Gate g of a row is
 * element g*H + i of the row's G*H values (PyTorch's gate order: GRU r, z, n; LSTM i, f,
 * g, o); gate streams are (B, H) each, gate_stride values apart. The cell is a kernel
 * argument, the same for every thread, so the branch costs nothing. */
enum CellKind { kCellTanh, kCellRelu, kCellGru, kCellLstm }; /* gpurnn_cell's values (checked where used) */
struct CellArgs {
    int cell; /* CellKind */
    int B, H, V;
};

/* One step of one layer, after gh (B, G*H) = h_prev · W_hh^T: the cell's activations from
 * gh, the input projection (gx (B, G*H) above layer 0; layer 0 gathers column x_b of
 * W_ih0 (G*H, V), its one-hot input) and the biases. Writes h (for tanh/ReLU gh is h: in
 * place), c (LSTM) and the gates backward needs (GRU: r, z, n, W_hn h_prev + b_hn; LSTM:
 * i, f, g, o). The additions run in the CPU backend's order. */
template <typename T>
__global__ void forward_pointwise(CellArgs a, T *__restrict__ gh, const T *__restrict__ gx,
                                  const T *__restrict__ W_ih0, const int32_t *__restrict__ x /* (B) */,
                                  const T *__restrict__ b_ih, const T *__restrict__ b_hh,
                                  const T *__restrict__ h_prev, const T *__restrict__ c_prev, T *__restrict__ h,
                                  T *__restrict__ c, T *__restrict__ gates, size_t gate_stride)
{
    const int B = a.B, H = a.H;
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (size_t)B * H) return;
    const int b = (int)(k / H), i = (int)(k % H);
    const int G = a.cell == kCellGru ? 3 : a.cell == kCellLstm ? 4 : 1;
    const T *ghb = gh + (size_t)b * G * H + i;
    const T *gxb = gx ? gx + (size_t)b * G * H + i : W_ih0 + (size_t)i * a.V + x[b];
    const size_t gx_gate = gx ? (size_t)H : (size_t)H * a.V; /* from gate g to g+1 */
    switch (a.cell) {
    case kCellGru: {
        const T r = dev_sigmoid(gxb[0] + b_ih[i] + ghb[0] + b_hh[i]);
        const T z = dev_sigmoid(gxb[gx_gate] + b_ih[H + i] + ghb[H] + b_hh[H + i]);
        const T hn = ghb[2 * H] + b_hh[2 * H + i];
        const T n = dev_tanh(gxb[2 * gx_gate] + b_ih[2 * H + i] + r * hn);
        h[k] = (1 - z) * n + z * h_prev[k];
        gates[k] = r;
        gates[gate_stride + k] = z;
        gates[2 * gate_stride + k] = n;
        gates[3 * gate_stride + k] = hn;
        break;
    }
    case kCellLstm: {
        const T ig = dev_sigmoid(gxb[0] + b_ih[i] + ghb[0] + b_hh[i]);
        const T f = dev_sigmoid(gxb[gx_gate] + b_ih[H + i] + ghb[H] + b_hh[H + i]);
        const T g = dev_tanh(gxb[2 * gx_gate] + b_ih[2 * H + i] + ghb[2 * H] + b_hh[2 * H + i]);
        const T o = dev_sigmoid(gxb[3 * gx_gate] + b_ih[3 * H + i] + ghb[3 * H] + b_hh[3 * H + i]);
        const T cell = f * c_prev[k] + ig * g;
        c[k] = cell;
        h[k] = o * dev_tanh(cell);
        gates[k] = ig;
        gates[gate_stride + k] = f;
        gates[2 * gate_stride + k] = g;
        gates[3 * gate_stride + k] = o;
        break;
    }
    case kCellRelu: {
        const T z = ghb[0] + gxb[0] + b_ih[i];
        h[k] = z > 0 ? z : (z == z ? T(0) : z); /* a NaN stays visible */
        break;
    }
    default: h[k] = dev_tanh(ghb[0] + gxb[0] + b_ih[i]); break;
    }
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

/* The cells' derivatives for one step of one layer, one thread per (b, i): from dh =
 * dh_out + dh_next (the gradient of h after the step) the gates' pre-activation
 * gradients dz (B, G*H, input side) and dzh (B, G*H, hidden side: GRU's n gate there is
 * r * dn; the same buffer as dz for the other cells); the part of dh_next that does not
 * go through W_hh (GRU: z * dh; the W_hh^T dzh GEMM adds the rest) and LSTM's dc_next =
 * f * dc. For tanh/ReLU dz holds dh_out on entry (in place, dh_out nullptr). */
template <typename T>
__global__ void backward_pointwise(CellArgs a, T *__restrict__ dz, T *__restrict__ dzh,
                                   const T *__restrict__ dh_out /* (B, H) */, T *__restrict__ dh_next,
                                   T *__restrict__ dc_next, const T *__restrict__ h, const T *__restrict__ h_prev,
                                   const T *__restrict__ c_prev, const T *__restrict__ c,
                                   const T *__restrict__ gates, size_t gate_stride)
{
    const int H = a.H;
    size_t k = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (size_t)a.B * H) return;
    const int b = (int)(k / H), i = (int)(k % H);
    switch (a.cell) {
    case kCellGru: {
        const T dh = dh_out[k] + dh_next[k], r = gates[k], z = gates[gate_stride + k], n = gates[2 * gate_stride + k];
        const T dn = dh * (1 - z) * (1 - n * n);
        const T dzg = dh * (h_prev[k] - n) * z * (1 - z);
        const T dr = dn * gates[3 * gate_stride + k] * r * (1 - r);
        T *row = dz + (size_t)b * 3 * H + i, *row_h = dzh + (size_t)b * 3 * H + i;
        row[0] = row_h[0] = dr;
        row[H] = row_h[H] = dzg;
        row[2 * H] = dn;
        row_h[2 * H] = dn * r;
        dh_next[k] = dh * z;
        break;
    }
    case kCellLstm: {
        const T dh = dh_out[k] + dh_next[k], ig = gates[k], f = gates[gate_stride + k],
                g = gates[2 * gate_stride + k], o = gates[3 * gate_stride + k];
        const T tc = dev_tanh(c[k]);
        const T dc = dc_next[k] + dh * o * (1 - tc * tc);
        T *row = dz + (size_t)b * 4 * H + i;
        row[0] = dc * g * ig * (1 - ig);
        row[H] = dc * c_prev[k] * f * (1 - f);
        row[2 * H] = dc * ig * (1 - g * g);
        row[3 * H] = dh * tc * o * (1 - o);
        dc_next[k] = dc * f;
        break;
    }
    case kCellRelu: dz[k] = h[k] > 0 ? dz[k] + dh_next[k] : T(0); break;
    default: dz[k] = tanh_backward(h[k], dz[k] + dh_next[k]); break;
    }
}

/* dW_ih0[:, token] += sum of dz rows with that token (GH = G*H values a row). Rows arrive
 * grouped by token (a stable order made on the host): block (segment, gate-row tile) sums
 * its rows in order. */
template <typename T>
__global__ void scatter_input_gradient(T *__restrict__ dWxh /* (GH, V) */, const T *__restrict__ dz /* (rows, GH) */,
                                       const int32_t *__restrict__ order /* chunk-local rows, grouped by token */,
                                       const int32_t *__restrict__ segment_token,
                                       const int32_t *__restrict__ segment_begin,
                                       const int32_t *__restrict__ segment_end, int GH, int V)
{
    int segment = blockIdx.x;
    int i = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= GH) return;
    T acc = 0;
    for (int j = segment_begin[segment]; j < segment_end[segment]; j++) acc += dz[(size_t)order[j] * GH + i];
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
