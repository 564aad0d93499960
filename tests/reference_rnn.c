/* Plain float64 reference of the model in DESIGN.md (see reference_rnn.h). */
#include "reference_rnn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t ref_param_count(int V, int H)
{
    return 2 * (size_t)H * (size_t)V + (size_t)H * (size_t)H + (size_t)H + (size_t)V;
}
size_t ref_off_wxh(int V, int H)
{
    (void)V;
    (void)H;
    return 0;
}
size_t ref_off_whh(int V, int H) { return (size_t)H * (size_t)V; }
size_t ref_off_why(int V, int H) { return (size_t)H * (size_t)V + (size_t)H * (size_t)H; }
size_t ref_off_bh(int V, int H) { return 2 * (size_t)H * (size_t)V + (size_t)H * (size_t)H; }
size_t ref_off_by(int V, int H) { return 2 * (size_t)H * (size_t)V + (size_t)H * (size_t)H + (size_t)H; }

/* Element accessors on the flat buffer (row-major). */
#define WXH(P, i, j) ((P)[ref_off_wxh(V, H) + (size_t)(i) * (size_t)V + (size_t)(j)]) /* (H, V) */
#define WHH(P, i, j) ((P)[ref_off_whh(V, H) + (size_t)(i) * (size_t)H + (size_t)(j)]) /* (H, H) */
#define WHY(P, i, j) ((P)[ref_off_why(V, H) + (size_t)(i) * (size_t)H + (size_t)(j)]) /* (V, H) */
#define BH(P, i) ((P)[ref_off_bh(V, H) + (size_t)(i)])                                /* (H) */
#define BY(P, i) ((P)[ref_off_by(V, H) + (size_t)(i)])                                /* (V) */

void ref_step(int V, int H, const double *params, const double *h_prev, int token, double *h_out,
              double *y_out)
{
    /* z = Wxh[:, token] + Whh h_prev + bh ; h = tanh(z) */
    for (int i = 0; i < H; ++i) {
        double z = WXH(params, i, token);
        for (int j = 0; j < H; ++j)
            z += WHH(params, i, j) * h_prev[j];
        z += BH(params, i);
        h_out[i] = tanh(z);
    }
    /* y = Why h + by */
    if (y_out) {
        for (int k = 0; k < V; ++k) {
            double y = 0.0;
            for (int j = 0; j < H; ++j)
                y += WHY(params, k, j) * h_out[j];
            y_out[k] = y + BY(params, k);
        }
    }
}

/* p = softmax(y), max-subtracted. */
static void softmax(int V, const double *y, double *p)
{
    double mx = y[0];
    for (int k = 1; k < V; ++k)
        if (y[k] > mx)
            mx = y[k];
    double sum = 0.0;
    for (int k = 0; k < V; ++k) {
        p[k] = exp(y[k] - mx);
        sum += p[k];
    }
    for (int k = 0; k < V; ++k)
        p[k] /= sum;
}

double ref_forward_backward(int V, int H, int B, int T, const double *params, const double *h0,
                            const int32_t *inputs, const int32_t *targets, int mean,
                            double *grads, double *h_last)
{
    /* Per-sequence storage: hs[t+1] = h_t for t = -1 .. T-1 (hs[0] = h_{-1}), ps[t] = p_t. */
    double *hs = calloc((size_t)(T + 1) * (size_t)H, sizeof(double));
    double *ps = calloc((size_t)T * (size_t)V, sizeof(double));
    double *y = calloc((size_t)V, sizeof(double));
    double *dy = calloc((size_t)V, sizeof(double));
    double *dh = calloc((size_t)H, sizeof(double));
    double *dz = calloc((size_t)H, sizeof(double));
    double *dh_next = calloc((size_t)H, sizeof(double));
    if (!hs || !ps || !y || !dy || !dh || !dz || !dh_next) {
        free(hs);
        free(ps);
        free(y);
        free(dy);
        free(dh);
        free(dz);
        free(dh_next);
        return NAN;
    }
    const double scale = mean ? 1.0 / ((double)T * (double)B) : 1.0;
    if (grads)
        memset(grads, 0, ref_param_count(V, H) * sizeof(double));

    double loss = 0.0;
    for (int b = 0; b < B; ++b) {
        /* ---- forward for sequence b ---- */
        for (int j = 0; j < H; ++j)
            hs[j] = h0 ? h0[(size_t)b * (size_t)H + (size_t)j] : 0.0;
        for (int t = 0; t < T; ++t) {
            const int x = inputs[(size_t)t * (size_t)B + (size_t)b];
            const int target = targets[(size_t)t * (size_t)B + (size_t)b];
            const double *h_prev = hs + (size_t)t * (size_t)H;
            double *h = hs + (size_t)(t + 1) * (size_t)H;
            double *p = ps + (size_t)t * (size_t)V;
            ref_step(V, H, params, h_prev, x, h, y);
            softmax(V, y, p);
            loss += -log(p[target]);
        }
        if (h_last)
            for (int j = 0; j < H; ++j)
                h_last[(size_t)b * (size_t)H + (size_t)j] = hs[(size_t)T * (size_t)H + (size_t)j];
        if (!grads)
            continue;

        /* ---- backward for sequence b: the six steps, t = T-1 .. 0 ---- */
        for (int j = 0; j < H; ++j)
            dh_next[j] = 0.0;
        for (int t = T - 1; t >= 0; --t) {
            const int x = inputs[(size_t)t * (size_t)B + (size_t)b];
            const int target = targets[(size_t)t * (size_t)B + (size_t)b];
            const double *h = hs + (size_t)(t + 1) * (size_t)H;      /* h_t */
            const double *h_prev = hs + (size_t)t * (size_t)H;       /* h_{t-1} */
            const double *p = ps + (size_t)t * (size_t)V;

            /* 1. dy_t = p_t - onehot(target_t)  (times 1/(T*B) for MEAN) */
            for (int k = 0; k < V; ++k)
                dy[k] = (p[k] - (k == target ? 1.0 : 0.0)) * scale;
            /* 2. dWhy += dy_t h_t^T ; dby += dy_t */
            for (int k = 0; k < V; ++k) {
                for (int j = 0; j < H; ++j)
                    WHY(grads, k, j) += dy[k] * h[j];
                BY(grads, k) += dy[k];
            }
            /* 3. dh_t = Why^T dy_t + dh_next */
            for (int j = 0; j < H; ++j) {
                double s = 0.0;
                for (int k = 0; k < V; ++k)
                    s += WHY(params, k, j) * dy[k];
                dh[j] = s + dh_next[j];
            }
            /* 4. dz_t = (1 - h_t^2) * dh_t */
            for (int j = 0; j < H; ++j)
                dz[j] = (1.0 - h[j] * h[j]) * dh[j];
            /* 5. dWxh[:, x_t] += dz_t ; dWhh += dz_t h_{t-1}^T ; dbh += dz_t */
            for (int i = 0; i < H; ++i) {
                WXH(grads, i, x) += dz[i];
                for (int j = 0; j < H; ++j)
                    WHH(grads, i, j) += dz[i] * h_prev[j];
                BH(grads, i) += dz[i];
            }
            /* 6. dh_next = Whh^T dz_t */
            for (int j = 0; j < H; ++j) {
                double s = 0.0;
                for (int i = 0; i < H; ++i)
                    s += WHH(params, i, j) * dz[i];
                dh_next[j] = s;
            }
        }
    }

    free(hs);
    free(ps);
    free(y);
    free(dy);
    free(dh);
    free(dz);
    free(dh_next);
    return loss * scale;
}
