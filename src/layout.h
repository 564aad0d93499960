/* The flat parameter layout of any model (gpurnn.h, "Cells and layers" of DESIGN.md):
 * where each layer's weights and biases sit, shared by the dispatch layer, the
 * checkpoint code and the backends, so that offsets are written down once. */
#ifndef GPURNN_LAYOUT_H
#define GPURNN_LAYOUT_H

#include <stddef.h>

#include "gpurnn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gpurnn_layout {
    size_t V, H;
    int L;                  /* layers, >= 1 */
    gpurnn_cell cell;
    int G;                  /* gates per layer: 1 tanh/ReLU, 3 GRU, 4 LSTM */
    int two_biases;         /* GRU/LSTM: b_ih and b_hh; tanh/ReLU: one b */
    size_t count;           /* parameters */
    size_t tensor_count;
} gpurnn_layout;

int gpurnn_cell_gates(gpurnn_cell cell);
const char *gpurnn_cell_name(gpurnn_cell cell);

/* Fills *lay for V, H, cell and L >= 1 (sizes already checked not to overflow). */
void gpurnn_layout_init(gpurnn_layout *lay, size_t V, size_t H, gpurnn_cell cell, int L);
/* The layout of a resolved config. */
void gpurnn_layout_of(gpurnn_layout *lay, const gpurnn_config *cfg);

/* Offsets of layer l's tensors: W_ih (G*H, in_l), W_hh (G*H, H); b_ih (G*H) and b_hh
 * (G*H), or for one-bias cells the single b (H) at b_ih (b_hh returns the same). */
size_t gpurnn_layout_w_ih(const gpurnn_layout *lay, int l);
size_t gpurnn_layout_w_hh(const gpurnn_layout *lay, int l);
size_t gpurnn_layout_b_ih(const gpurnn_layout *lay, int l);
size_t gpurnn_layout_b_hh(const gpurnn_layout *lay, int l);
size_t gpurnn_layout_why(const gpurnn_layout *lay);
size_t gpurnn_layout_by(const gpurnn_layout *lay);
/* Inputs of layer l: V for layer 0, H above. */
size_t gpurnn_layout_inputs(const gpurnn_layout *lay, int l);
/* The end of the weights (every matrix comes before every bias): [0, this) are drawn
 * at initialisation, the rest start at zero. */
size_t gpurnn_layout_weights_end(const gpurnn_layout *lay);

/* Tensor k of the table (0 <= k < tensor_count). */
void gpurnn_layout_tensor(const gpurnn_layout *lay, size_t k, gpurnn_tensor_info *out);
/* Writes "Whh[3, 7]", "b_ih_l1[5]" for flat index i into buf. */
void gpurnn_layout_describe(const gpurnn_layout *lay, size_t i, char *buf, size_t cap);

/* Values of the carried state for a batch of B: L*B*H, twice that for LSTM. */
size_t gpurnn_layout_state_count(const gpurnn_layout *lay, size_t B);
/* Writes where carried-state index i is ("b=0, unit 3"; "layer 1 c, b=0, unit 3" for stacked or LSTM models) into buf. */
void gpurnn_layout_describe_state(const gpurnn_layout *lay, size_t B, size_t i, char *buf, size_t cap);

/* Per-step activation streams of (B, H) values each that a backend keeps for backward:
 * h of every layer, c for LSTM, and the saved gates (GRU: r, z, n, W_hn h_prev + b_hn;
 * LSTM: i, f, g, o). 1 for the vanilla model. */
int gpurnn_layout_carried_streams(const gpurnn_layout *lay); /* h (and c) per layer: 1 or 2 */
int gpurnn_layout_gate_streams(const gpurnn_layout *lay);    /* saved gates per layer: 0 or 4 */
size_t gpurnn_layout_step_streams(const gpurnn_layout *lay);


#ifdef __cplusplus
}
#endif

#endif
