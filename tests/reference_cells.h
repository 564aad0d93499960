/* A plain float64 reference of every cell and number of layers of DESIGN.md ("Cells and
 * layers"), used by the tests as an oracle, like reference_rnn.h for the vanilla model.
 * Written for obviousness, not speed: plain loops, no BLAS, one sequence at a time, and a
 * backward pass that follows the equations gate by gate. It shares no code with the
 * library: it takes only the enums of gpurnn.h and writes the flat layout out itself
 *
 *   for l = 0 .. L-1:  W_ih_l (G*H, V for l = 0, else H),  W_hh_l (G*H, H)
 *   Why (V, H)
 *   for l = 0 .. L-1:  TANH/RELU: b_l (H);  GRU/LSTM: b_ih_l (G*H), b_hh_l (G*H)
 *   by (V)
 *
 * (row-major; G = 1 tanh/ReLU, 3 GRU with gates r, z, n, 4 LSTM with gates i, f, g, o;
 * gate k in rows [k*H, (k+1)*H)), and the carried state: h of every layer (L, B, H), then
 * for LSTM c of every layer (L, B, H). */
#ifndef GPURNN_TESTS_REFERENCE_CELLS_H
#define GPURNN_TESTS_REFERENCE_CELLS_H

#include <stddef.h>
#include <stdint.h>

#include "gpurnn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct reference_cells_config {
    int V, H, B, T;                   /* all >= 1 */
    gpurnn_cell cell;
    int num_layers;                   /* L >= 1 */
    gpurnn_loss_reduction reduction;  /* SUM, or MEAN: the sum / (T*B) */
} reference_cells_config;

/* Gates per layer: 1, 1, 3, 4. */
int reference_cells_gates(gpurnn_cell cell);
/* Values of the flat parameter vector (and of the gradient). */
size_t reference_cells_param_count(const reference_cells_config *cfg);
/* Values of the carried state: L*B*H, twice that for LSTM. */
size_t reference_cells_state_count(const reference_cells_config *cfg);

/* Offsets of layer l's tensors in the flat vector. For TANH/RELU the single bias b_l is
 * at reference_cells_off_b_ih, and reference_cells_off_b_hh returns the same offset. */
size_t reference_cells_off_w_ih(const reference_cells_config *cfg, int l);
size_t reference_cells_off_w_hh(const reference_cells_config *cfg, int l);
size_t reference_cells_off_why(const reference_cells_config *cfg);
size_t reference_cells_off_b_ih(const reference_cells_config *cfg, int l);
size_t reference_cells_off_b_hh(const reference_cells_config *cfg, int l);
size_t reference_cells_off_by(const reference_cells_config *cfg);

/* Forward over T steps of B sequences, and backward by BPTT through every layer.
 *   params:    reference_cells_param_count values
 *   state_in:  reference_cells_state_count values (h_{-1} and c_{-1} of every layer and
 *              sequence); NULL means zero
 *   inputs, targets: time-major (T, B) token ids in [0, V)
 *   loss:      receives the loss (sum or mean)
 *   state_out: NULL, or reference_cells_state_count values that receive the state after
 *              step T-1
 *   grads:     NULL (forward only), or reference_cells_param_count values that are
 *              OVERWRITTEN with dL/dparams
 * Returns 0, or -1 (and writes nothing) for a bad config, a token out of range, or an
 * allocation failure. Allocates nothing that outlives the call and prints nothing. */
int reference_cells_forward_backward(const reference_cells_config *cfg, const double *params,
                                     const double *state_in, const int32_t *inputs, const int32_t *targets,
                                     double *loss, double *state_out, double *grads);

#ifdef __cplusplus
}
#endif

#endif
