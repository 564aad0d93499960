#include <stdio.h>
#include <string.h>

#include "layout.h"

int gpurnn_cell_gates(gpurnn_cell cell)
{
    switch (cell) {
    case GPURNN_CELL_GRU: return 3;
    case GPURNN_CELL_LSTM: return 4;
    default: return 1;
    }
}

const char *gpurnn_cell_name(gpurnn_cell cell)
{
    switch (cell) {
    case GPURNN_CELL_TANH: return "tanh";
    case GPURNN_CELL_RELU: return "relu";
    case GPURNN_CELL_GRU: return "gru";
    case GPURNN_CELL_LSTM: return "lstm";
    default: return "?";
    }
}

/* Weights of layer l and everything below it, then Why, then the biases, then by. */
static size_t layer_weights(const gpurnn_layout *lay, int l)
{
    return (size_t)lay->G * lay->H * (gpurnn_layout_inputs(lay, l) + lay->H);
}

static size_t layer_biases(const gpurnn_layout *lay)
{
    return lay->two_biases ? 2 * (size_t)lay->G * lay->H : lay->H;
}

size_t gpurnn_layout_inputs(const gpurnn_layout *lay, int l) { return l == 0 ? lay->V : lay->H; }

size_t gpurnn_layout_w_ih(const gpurnn_layout *lay, int l)
{
    return l == 0 ? 0 : layer_weights(lay, 0) + (size_t)(l - 1) * layer_weights(lay, 1);
}

size_t gpurnn_layout_w_hh(const gpurnn_layout *lay, int l)
{
    return gpurnn_layout_w_ih(lay, l) + (size_t)lay->G * lay->H * gpurnn_layout_inputs(lay, l);
}

size_t gpurnn_layout_why(const gpurnn_layout *lay) { return gpurnn_layout_w_ih(lay, lay->L); }

size_t gpurnn_layout_weights_end(const gpurnn_layout *lay) { return gpurnn_layout_why(lay) + lay->V * lay->H; }

size_t gpurnn_layout_b_ih(const gpurnn_layout *lay, int l)
{
    return gpurnn_layout_weights_end(lay) + (size_t)l * layer_biases(lay);
}

size_t gpurnn_layout_b_hh(const gpurnn_layout *lay, int l)
{
    return gpurnn_layout_b_ih(lay, l) + (lay->two_biases ? (size_t)lay->G * lay->H : 0);
}

size_t gpurnn_layout_by(const gpurnn_layout *lay) { return gpurnn_layout_b_ih(lay, lay->L); }

void gpurnn_layout_init(gpurnn_layout *lay, size_t V, size_t H, gpurnn_cell cell, int L)
{
    memset(lay, 0, sizeof *lay);
    lay->V = V;
    lay->H = H;
    lay->L = L;
    lay->cell = cell;
    lay->G = gpurnn_cell_gates(cell);
    lay->two_biases = cell == GPURNN_CELL_GRU || cell == GPURNN_CELL_LSTM;
    lay->count = gpurnn_layout_by(lay) + V;
    lay->tensor_count = 2 * (size_t)L + 1 + (size_t)L * (lay->two_biases ? 2 : 1) + 1;
}

void gpurnn_layout_of(gpurnn_layout *lay, const gpurnn_config *cfg)
{
    gpurnn_layout_init(lay, (size_t)cfg->vocab_size, (size_t)cfg->hidden_size, cfg->cell,
                       cfg->num_layers < 1 ? 1 : cfg->num_layers);
}

/* One tanh/ReLU layer keeps the vanilla model's names. */
static int vanilla_names(const gpurnn_layout *lay) { return lay->L == 1 && !lay->two_biases; }

static void set_tensor(gpurnn_tensor_info *out, const char *name, int layer, size_t rows, size_t cols,
                       size_t offset, int ndim)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->layer = layer;
    out->ndim = ndim;
    out->shape[0] = rows;
    out->shape[1] = cols;
    out->offset = offset;
    out->size = rows * cols;
}

void gpurnn_layout_tensor(const gpurnn_layout *lay, size_t k, gpurnn_tensor_info *out)
{
    const size_t L = (size_t)lay->L, GH = (size_t)lay->G * lay->H, H = lay->H;
    const int plain = vanilla_names(lay);
    char name[24];
    if (k < 2 * L) { /* W_ih_l, W_hh_l */
        const int l = (int)(k / 2), hh = (int)(k % 2);
        if (plain) snprintf(name, sizeof name, "%s", hh ? "Whh" : "Wxh");
        else snprintf(name, sizeof name, "%s_l%d", hh ? "W_hh" : "W_ih", l);
        set_tensor(out, name, l, GH, hh ? H : gpurnn_layout_inputs(lay, l),
                   hh ? gpurnn_layout_w_hh(lay, l) : gpurnn_layout_w_ih(lay, l), 2);
        return;
    }
    if (k == 2 * L) {
        set_tensor(out, "Why", -1, lay->V, H, gpurnn_layout_why(lay), 2);
        return;
    }
    size_t b = k - 2 * L - 1;
    const size_t per_layer = lay->two_biases ? 2 : 1;
    if (b < L * per_layer) {
        const int l = (int)(b / per_layer), hh = (int)(b % per_layer);
        if (plain) snprintf(name, sizeof name, "bh");
        else if (!lay->two_biases) snprintf(name, sizeof name, "b_l%d", l);
        else snprintf(name, sizeof name, "%s_l%d", hh ? "b_hh" : "b_ih", l);
        set_tensor(out, name, l, lay->two_biases ? GH : H, 1,
                   hh ? gpurnn_layout_b_hh(lay, l) : gpurnn_layout_b_ih(lay, l), 1);
        return;
    }
    set_tensor(out, "by", -1, lay->V, 1, gpurnn_layout_by(lay), 1);
}

void gpurnn_layout_describe(const gpurnn_layout *lay, size_t i, char *buf, size_t cap)
{
    gpurnn_tensor_info t;
    for (size_t k = lay->tensor_count; k-- > 0;) {
        gpurnn_layout_tensor(lay, k, &t);
        if (i < t.offset) continue;
        size_t local = i - t.offset;
        if (local >= t.size) break;
        if (t.ndim == 1) snprintf(buf, cap, "%s[%zu]", t.name, local);
        else snprintf(buf, cap, "%s[%zu, %zu]", t.name, local / t.shape[1], local % t.shape[1]);
        return;
    }
    snprintf(buf, cap, "entry %zu", i);
}

size_t gpurnn_layout_state_count(const gpurnn_layout *lay, size_t B)
{
    return (lay->cell == GPURNN_CELL_LSTM ? 2 : 1) * (size_t)lay->L * B * lay->H;
}

void gpurnn_layout_describe_state(const gpurnn_layout *lay, size_t B, size_t i, char *buf, size_t cap)
{
    const size_t per_kind = (size_t)lay->L * B * lay->H, kind = i / per_kind, in_kind = i % per_kind;
    const size_t l = in_kind / (B * lay->H), b = in_kind / lay->H % B, j = in_kind % lay->H;
    if (lay->L == 1 && lay->cell != GPURNN_CELL_LSTM)
        snprintf(buf, cap, "b=%zu, unit %zu", b, j);
    else
        snprintf(buf, cap, "layer %zu %s, b=%zu, unit %zu", l, kind ? "c" : "h", b, j);
}

int gpurnn_layout_carried_streams(const gpurnn_layout *lay) { return lay->cell == GPURNN_CELL_LSTM ? 2 : 1; }

int gpurnn_layout_gate_streams(const gpurnn_layout *lay) { return lay->two_biases ? 4 : 0; }

size_t gpurnn_layout_step_streams(const gpurnn_layout *lay)
{
    return (size_t)lay->L * (size_t)(gpurnn_layout_carried_streams(lay) + gpurnn_layout_gate_streams(lay));
}
