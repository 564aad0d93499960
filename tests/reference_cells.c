/* Plain float64 reference of every cell and number of layers (see reference_cells.h). */
#include "reference_cells.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int reference_cells_gates(gpurnn_cell cell)
{
    switch (cell) {
    case GPURNN_CELL_GRU: return 3;
    case GPURNN_CELL_LSTM: return 4;
    default: return 1;
    }
}

static int two_biases(const reference_cells_config *cfg)
{
    return cfg->cell == GPURNN_CELL_GRU || cfg->cell == GPURNN_CELL_LSTM;
}

/* Inputs of layer l: the one-hot token (V) for layer 0, the layer below's h (H) above it. */
static size_t layer_inputs(const reference_cells_config *cfg, int l)
{
    return l == 0 ? (size_t)cfg->V : (size_t)cfg->H;
}

static size_t gate_rows(const reference_cells_config *cfg)
{
    return (size_t)reference_cells_gates(cfg->cell) * (size_t)cfg->H;
}

/* W_ih_l and W_hh_l of one layer. */
static size_t layer_weight_count(const reference_cells_config *cfg, int l)
{
    return gate_rows(cfg) * (layer_inputs(cfg, l) + (size_t)cfg->H);
}

/* b_l, or b_ih_l and b_hh_l, of one layer. */
static size_t layer_bias_count(const reference_cells_config *cfg)
{
    return two_biases(cfg) ? 2 * gate_rows(cfg) : (size_t)cfg->H;
}

size_t reference_cells_off_w_ih(const reference_cells_config *cfg, int l)
{
    size_t off = 0;
    for (int k = 0; k < l; ++k)
        off += layer_weight_count(cfg, k);
    return off;
}

size_t reference_cells_off_w_hh(const reference_cells_config *cfg, int l)
{
    return reference_cells_off_w_ih(cfg, l) + gate_rows(cfg) * layer_inputs(cfg, l);
}

size_t reference_cells_off_why(const reference_cells_config *cfg)
{
    return reference_cells_off_w_ih(cfg, cfg->num_layers);
}

size_t reference_cells_off_b_ih(const reference_cells_config *cfg, int l)
{
    return reference_cells_off_why(cfg) + (size_t)cfg->V * (size_t)cfg->H + (size_t)l * layer_bias_count(cfg);
}

size_t reference_cells_off_b_hh(const reference_cells_config *cfg, int l)
{
    return reference_cells_off_b_ih(cfg, l) + (two_biases(cfg) ? gate_rows(cfg) : 0);
}

size_t reference_cells_off_by(const reference_cells_config *cfg)
{
    return reference_cells_off_b_ih(cfg, cfg->num_layers);
}

size_t reference_cells_param_count(const reference_cells_config *cfg)
{
    return reference_cells_off_by(cfg) + (size_t)cfg->V;
}

size_t reference_cells_state_count(const reference_cells_config *cfg)
{
    return (cfg->cell == GPURNN_CELL_LSTM ? 2 : 1) * (size_t)cfg->num_layers * (size_t)cfg->B * (size_t)cfg->H;
}

/* Element accessors on a flat buffer P (params or grads), row-major; cfg, V, H in scope. */
#define W_IH(P, l, r, j) ((P)[reference_cells_off_w_ih(cfg, l) + (size_t)(r) * layer_inputs(cfg, l) + (size_t)(j)])
#define W_HH(P, l, r, j) ((P)[reference_cells_off_w_hh(cfg, l) + (size_t)(r) * (size_t)H + (size_t)(j)])
#define WHY(P, k, j) ((P)[reference_cells_off_why(cfg) + (size_t)(k) * (size_t)H + (size_t)(j)])
#define B_IH(P, l, r) ((P)[reference_cells_off_b_ih(cfg, l) + (size_t)(r)])
#define B_HH(P, l, r) ((P)[reference_cells_off_b_hh(cfg, l) + (size_t)(r)])
#define BY(P, k) ((P)[reference_cells_off_by(cfg) + (size_t)(k)])

static double sigmoid(double a) { return 1.0 / (1.0 + exp(-a)); }

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

static int config_valid(const reference_cells_config *cfg)
{
    return cfg && cfg->V >= 1 && cfg->H >= 1 && cfg->B >= 1 && cfg->T >= 1 && cfg->num_layers >= 1 &&
           (cfg->cell == GPURNN_CELL_TANH || cfg->cell == GPURNN_CELL_RELU || cfg->cell == GPURNN_CELL_GRU ||
            cfg->cell == GPURNN_CELL_LSTM) &&
           (cfg->reduction == GPURNN_LOSS_SUM || cfg->reduction == GPURNN_LOSS_MEAN);
}

/* Every per-sequence buffer of one call, so that one function frees them all. */
typedef struct buffers {
    double *hs;       /* (L, T+1, H): hs[l][t+1] = h^l_t, hs[l][0] = h^l_{-1} */
    double *cs;       /* (L, T+1, H): the same for c (LSTM) */
    double *gates;    /* (L, T, G*H): activated gates (GRU r, z, n; LSTM i, f, g, o) */
    double *hn;       /* (L, T, H): GRU's W_hn h_prev + b_hn */
    double *ps;       /* (T, V) */
    double *ai, *ah;  /* (G*H): input and hidden pre-activations of one step */
    double *y, *dy;   /* (V) */
    double *dh_above; /* (T, H): dL/dh^l_t from above (output layer or layer l+1) */
    double *dh_below; /* (T, H): dL/dx^l_t, i.e. dL/dh^{l-1}_t */
    double *dh_next;  /* (H): dL/dh^l_t through step t+1 */
    double *dc_next;  /* (H): dL/dc^l_t through step t+1 */
    double *dh, *dc;  /* (H) */
    double *gi, *gh;  /* (G*H): dL/d(input pre-activation), dL/d(hidden pre-activation) */
} buffers;

static void free_buffers(buffers *w)
{
    free(w->hs);
    free(w->cs);
    free(w->gates);
    free(w->hn);
    free(w->ps);
    free(w->ai);
    free(w->ah);
    free(w->y);
    free(w->dy);
    free(w->dh_above);
    free(w->dh_below);
    free(w->dh_next);
    free(w->dc_next);
    free(w->dh);
    free(w->dc);
    free(w->gi);
    free(w->gh);
}

static int alloc_buffers(buffers *w, size_t L, size_t T, size_t H, size_t GH, size_t V)
{
    memset(w, 0, sizeof *w);
    w->hs = calloc(L * (T + 1) * H, sizeof(double));
    w->cs = calloc(L * (T + 1) * H, sizeof(double));
    w->gates = calloc(L * T * GH, sizeof(double));
    w->hn = calloc(L * T * H, sizeof(double));
    w->ps = calloc(T * V, sizeof(double));
    w->ai = calloc(GH, sizeof(double));
    w->ah = calloc(GH, sizeof(double));
    w->y = calloc(V, sizeof(double));
    w->dy = calloc(V, sizeof(double));
    w->dh_above = calloc(T * H, sizeof(double));
    w->dh_below = calloc(T * H, sizeof(double));
    w->dh_next = calloc(H, sizeof(double));
    w->dc_next = calloc(H, sizeof(double));
    w->dh = calloc(H, sizeof(double));
    w->dc = calloc(H, sizeof(double));
    w->gi = calloc(GH, sizeof(double));
    w->gh = calloc(GH, sizeof(double));
    if (!w->hs || !w->cs || !w->gates || !w->hn || !w->ps || !w->ai || !w->ah || !w->y || !w->dy ||
        !w->dh_above || !w->dh_below || !w->dh_next || !w->dc_next || !w->dh || !w->dc || !w->gi || !w->gh) {
        free_buffers(w);
        return -1;
    }
    return 0;
}

int reference_cells_forward_backward(const reference_cells_config *cfg, const double *params,
                                     const double *state_in, const int32_t *inputs, const int32_t *targets,
                                     double *loss, double *state_out, double *grads)
{
    if (!config_valid(cfg) || !params || !inputs || !targets || !loss)
        return -1;
    const int V = cfg->V, H = cfg->H, B = cfg->B, T = cfg->T, L = cfg->num_layers;
    const gpurnn_cell cell = cfg->cell;
    const int G = reference_cells_gates(cell);
    const size_t GH = (size_t)G * (size_t)H;
    for (size_t i = 0; i < (size_t)T * (size_t)B; ++i)
        if (inputs[i] < 0 || inputs[i] >= V || targets[i] < 0 || targets[i] >= V)
            return -1;
    buffers w;
    if (alloc_buffers(&w, (size_t)L, (size_t)T, (size_t)H, GH, (size_t)V) != 0)
        return -1;

    /* Views of the per-sequence buffers. */
#define HS(l, t1) (w.hs + ((size_t)(l) * (size_t)(T + 1) + (size_t)(t1)) * (size_t)H)    /* h^l_{t1-1} */
#define CS(l, t1) (w.cs + ((size_t)(l) * (size_t)(T + 1) + (size_t)(t1)) * (size_t)H)    /* c^l_{t1-1} */
#define GATES(l, t) (w.gates + ((size_t)(l) * (size_t)T + (size_t)(t)) * GH)
#define HN(l, t) (w.hn + ((size_t)(l) * (size_t)T + (size_t)(t)) * (size_t)H)
#define PS(t) (w.ps + (size_t)(t) * (size_t)V)
#define STATE_H(l, b) ((size_t)((size_t)(l) * (size_t)B + (size_t)(b)) * (size_t)H)
#define STATE_C(l, b) ((size_t)L * (size_t)B * (size_t)H + STATE_H(l, b))

    const double scale = cfg->reduction == GPURNN_LOSS_MEAN ? 1.0 / ((double)T * (double)B) : 1.0;
    if (grads)
        memset(grads, 0, reference_cells_param_count(cfg) * sizeof(double));

    double total = 0.0;
    for (int b = 0; b < B; ++b) {
        /* ---- forward for sequence b: every step, every layer bottom-up ---- */
        for (int l = 0; l < L; ++l)
            for (int j = 0; j < H; ++j) {
                HS(l, 0)[j] = state_in ? state_in[STATE_H(l, b) + (size_t)j] : 0.0;
                CS(l, 0)[j] = state_in && cell == GPURNN_CELL_LSTM ? state_in[STATE_C(l, b) + (size_t)j] : 0.0;
            }
        for (int t = 0; t < T; ++t) {
            const int token = inputs[(size_t)t * (size_t)B + (size_t)b];
            const int target = targets[(size_t)t * (size_t)B + (size_t)b];
            for (int l = 0; l < L; ++l) {
                const double *x = l == 0 ? NULL : HS(l - 1, t + 1); /* h^{l-1}_t */
                const double *h_prev = HS(l, t), *c_prev = CS(l, t);
                double *h = HS(l, t + 1), *c = CS(l, t + 1), *gate = GATES(l, t);
                /* ai = W_ih x + b_ih (x one-hot for layer 0: a column gather);
                 * ah = W_hh h_prev + b_hh (one-bias cells: b in ai, none in ah) */
                for (size_t r = 0; r < GH; ++r) {
                    double s = 0.0;
                    if (l == 0)
                        s = W_IH(params, 0, r, token);
                    else
                        for (int j = 0; j < H; ++j)
                            s += W_IH(params, l, r, j) * x[j];
                    w.ai[r] = s + B_IH(params, l, r);
                    s = 0.0;
                    for (int j = 0; j < H; ++j)
                        s += W_HH(params, l, r, j) * h_prev[j];
                    w.ah[r] = two_biases(cfg) ? s + B_HH(params, l, r) : s;
                }
                for (int j = 0; j < H; ++j) {
                    switch (cell) {
                    case GPURNN_CELL_TANH: h[j] = tanh(w.ai[j] + w.ah[j]); break;
                    case GPURNN_CELL_RELU: h[j] = fmax(0.0, w.ai[j] + w.ah[j]); break;
                    case GPURNN_CELL_GRU: {
                        const double r = sigmoid(w.ai[j] + w.ah[j]);
                        const double z = sigmoid(w.ai[H + j] + w.ah[H + j]);
                        const double hn = w.ah[2 * H + j]; /* W_hn h_prev + b_hn */
                        const double n = tanh(w.ai[2 * H + j] + r * hn);
                        h[j] = (1.0 - z) * n + z * h_prev[j];
                        gate[j] = r;
                        gate[H + j] = z;
                        gate[2 * H + j] = n;
                        HN(l, t)[j] = hn;
                        break;
                    }
                    case GPURNN_CELL_LSTM: {
                        const double i = sigmoid(w.ai[j] + w.ah[j]);
                        const double f = sigmoid(w.ai[H + j] + w.ah[H + j]);
                        const double g = tanh(w.ai[2 * H + j] + w.ah[2 * H + j]);
                        const double o = sigmoid(w.ai[3 * H + j] + w.ah[3 * H + j]);
                        c[j] = f * c_prev[j] + i * g;
                        h[j] = o * tanh(c[j]);
                        gate[j] = i;
                        gate[H + j] = f;
                        gate[2 * H + j] = g;
                        gate[3 * H + j] = o;
                        break;
                    }
                    }
                }
            }
            /* y = Why h^{L-1}_t + by ; p = softmax(y) ; loss -= log p[target] */
            const double *h_top = HS(L - 1, t + 1);
            for (int k = 0; k < V; ++k) {
                double s = 0.0;
                for (int j = 0; j < H; ++j)
                    s += WHY(params, k, j) * h_top[j];
                w.y[k] = s + BY(params, k);
            }
            softmax(V, w.y, PS(t));
            total += -log(PS(t)[target]);
        }
        if (state_out)
            for (int l = 0; l < L; ++l)
                for (int j = 0; j < H; ++j) {
                    state_out[STATE_H(l, b) + (size_t)j] = HS(l, T)[j];
                    if (cell == GPURNN_CELL_LSTM)
                        state_out[STATE_C(l, b) + (size_t)j] = CS(l, T)[j];
                }
        if (!grads)
            continue;

        /* ---- backward for sequence b ---- */
        /* The output layer at every step: dy_t = p_t - onehot(target_t) (times 1/(T*B) for
         * MEAN); dWhy += dy_t h_t^T; dby += dy_t; dh^{L-1}_t (from above) = Why^T dy_t. */
        for (int t = 0; t < T; ++t) {
            const int target = targets[(size_t)t * (size_t)B + (size_t)b];
            const double *h_top = HS(L - 1, t + 1), *p = PS(t);
            for (int k = 0; k < V; ++k)
                w.dy[k] = (p[k] - (k == target ? 1.0 : 0.0)) * scale;
            for (int k = 0; k < V; ++k) {
                for (int j = 0; j < H; ++j)
                    WHY(grads, k, j) += w.dy[k] * h_top[j];
                BY(grads, k) += w.dy[k];
            }
            for (int j = 0; j < H; ++j) {
                double s = 0.0;
                for (int k = 0; k < V; ++k)
                    s += WHY(params, k, j) * w.dy[k];
                w.dh_above[(size_t)t * (size_t)H + (size_t)j] = s;
            }
        }
        /* Then layer after layer, top-down, each backwards through time. */
        for (int l = L - 1; l >= 0; --l) {
            for (int j = 0; j < H; ++j) {
                w.dh_next[j] = 0.0;
                w.dc_next[j] = 0.0;
            }
            for (int t = T - 1; t >= 0; --t) {
                const int token = inputs[(size_t)t * (size_t)B + (size_t)b];
                const double *x = l == 0 ? NULL : HS(l - 1, t + 1);
                const double *h_prev = HS(l, t), *c_prev = CS(l, t);
                const double *h = HS(l, t + 1), *c = CS(l, t + 1), *gate = GATES(l, t);
                /* dh = dL/dh^l_t: from above at step t plus through step t+1 */
                for (int j = 0; j < H; ++j)
                    w.dh[j] = w.dh_above[(size_t)t * (size_t)H + (size_t)j] + w.dh_next[j];

                /* The cell's derivative: gi = dL/d(W_ih x + b_ih), gh = dL/d(W_hh h_prev + b_hh),
                 * and the part of dL/dh_prev (GRU) and dL/dc_prev (LSTM) that skips W_hh. */
                for (int j = 0; j < H; ++j) {
                    switch (cell) {
                    case GPURNN_CELL_TANH: {
                        const double da = (1.0 - h[j] * h[j]) * w.dh[j];
                        w.gi[j] = da;
                        w.gh[j] = da;
                        w.dh_next[j] = 0.0;
                        break;
                    }
                    case GPURNN_CELL_RELU: {
                        /* the derivative of max(0, a) is taken as 0 at a = 0 */
                        const double da = h[j] > 0.0 ? w.dh[j] : 0.0;
                        w.gi[j] = da;
                        w.gh[j] = da;
                        w.dh_next[j] = 0.0;
                        break;
                    }
                    case GPURNN_CELL_GRU: {
                        const double r = gate[j], z = gate[H + j], n = gate[2 * H + j], hn = HN(l, t)[j];
                        /* h = (1 - z) n + z h_prev */
                        const double dn = w.dh[j] * (1.0 - z);
                        const double dz = w.dh[j] * (h_prev[j] - n);
                        /* n = tanh(a_n), a_n = W_in x + b_in + r hn */
                        const double da_n = dn * (1.0 - n * n);
                        const double dr = da_n * hn;
                        const double dhn = da_n * r;
                        const double da_r = dr * r * (1.0 - r);
                        const double da_z = dz * z * (1.0 - z);
                        w.gi[j] = da_r;
                        w.gi[H + j] = da_z;
                        w.gi[2 * H + j] = da_n;
                        w.gh[j] = da_r;
                        w.gh[H + j] = da_z;
                        w.gh[2 * H + j] = dhn;
                        w.dh_next[j] = w.dh[j] * z; /* the z h_prev term */
                        break;
                    }
                    case GPURNN_CELL_LSTM: {
                        const double i = gate[j], f = gate[H + j], g = gate[2 * H + j], o = gate[3 * H + j];
                        const double tc = tanh(c[j]);
                        /* h = o tanh(c) ; c = f c_prev + i g */
                        const double d_o = w.dh[j] * tc;
                        const double dc = w.dc_next[j] + w.dh[j] * o * (1.0 - tc * tc);
                        const double di = dc * g;
                        const double dg = dc * i;
                        const double df = dc * c_prev[j];
                        const double da_i = di * i * (1.0 - i);
                        const double da_f = df * f * (1.0 - f);
                        const double da_g = dg * (1.0 - g * g);
                        const double da_o = d_o * o * (1.0 - o);
                        w.gi[j] = w.gh[j] = da_i;
                        w.gi[H + j] = w.gh[H + j] = da_f;
                        w.gi[2 * H + j] = w.gh[2 * H + j] = da_g;
                        w.gi[3 * H + j] = w.gh[3 * H + j] = da_o;
                        w.dc[j] = dc * f; /* dL/dc_prev */
                        w.dh_next[j] = 0.0;
                        break;
                    }
                    }
                }
                /* dW_ih_l += gi x^T (layer 0: column x_t += gi); dW_hh_l += gh h_prev^T;
                 * db_ih_l += gi, db_hh_l += gh (one-bias cells: db_l += gi) */
                for (size_t r = 0; r < GH; ++r) {
                    if (l == 0)
                        W_IH(grads, 0, r, token) += w.gi[r];
                    else
                        for (int j = 0; j < H; ++j)
                            W_IH(grads, l, r, j) += w.gi[r] * x[j];
                    for (int j = 0; j < H; ++j)
                        W_HH(grads, l, r, j) += w.gh[r] * h_prev[j];
                    B_IH(grads, l, r) += w.gi[r];
                    if (two_biases(cfg))
                        B_HH(grads, l, r) += w.gh[r];
                }
                /* dx = W_ih^T gi goes down to layer l-1 as its dh from above at step t */
                if (l > 0)
                    for (int j = 0; j < H; ++j) {
                        double s = 0.0;
                        for (size_t r = 0; r < GH; ++r)
                            s += W_IH(params, l, r, j) * w.gi[r];
                        w.dh_below[(size_t)t * (size_t)H + (size_t)j] = s;
                    }
                /* dh_next = W_hh^T gh (+ the GRU's z term set above); dc_next = dc f */
                for (int j = 0; j < H; ++j) {
                    double s = 0.0;
                    for (size_t r = 0; r < GH; ++r)
                        s += W_HH(params, l, r, j) * w.gh[r];
                    w.dh_next[j] += s;
                }
                if (cell == GPURNN_CELL_LSTM)
                    for (int j = 0; j < H; ++j)
                        w.dc_next[j] = w.dc[j];
            }
            double *swap = w.dh_above;
            w.dh_above = w.dh_below;
            w.dh_below = swap;
        }
    }
#undef HS
#undef CS
#undef GATES
#undef HN
#undef PS
#undef STATE_H
#undef STATE_C

    free_buffers(&w);
    *loss = total * scale;
    return 0;
}
