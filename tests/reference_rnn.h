/* A plain float64 reference implementation of the model in DESIGN.md, used by the tests
 * as an oracle. It is written for obviousness, not speed: plain loops, no BLAS, and the
 * backward pass is the six BPTT steps of DESIGN.md, per sequence and per time step, with
 * per-time-step outer products. It shares no code with the library (src/ is not
 * included); it only uses the parameter layout of the contract:
 *
 *   Wxh (H, V) at 0, Whh (H, H) at H*V, Why (V, H) at H*V + H*H,
 *   bh (H) at 2*H*V + H*H, by (V) at 2*H*V + H*H + H       (row-major)
 */
#ifndef GPURNN_TESTS_REFERENCE_RNN_H
#define GPURNN_TESTS_REFERENCE_RNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Layout of the flat parameter buffer for (V, H). */
size_t ref_param_count(int V, int H);
size_t ref_off_wxh(int V, int H);
size_t ref_off_whh(int V, int H);
size_t ref_off_why(int V, int H);
size_t ref_off_bh(int V, int H);
size_t ref_off_by(int V, int H);

/* One recurrence step for one sequence:
 *   h_out = tanh(Wxh[:, token] + Whh h_prev + bh),  y_out = Why h_out + by.
 * h_prev: H values, h_out: H values, y_out: V values (may be NULL). */
void ref_step(int V, int H, const double *params, const double *h_prev, int token, double *h_out,
              double *y_out);

/* Forward (and optionally backward) over T steps of B sequences.
 *   params:  ref_param_count(V, H) values
 *   h0:      B*H carried state (sequence b at [b*H, (b+1)*H)); NULL means zero
 *   inputs, targets: time-major [T][B]
 *   mean:    0 for the sum of the losses, 1 for the sum / (T*B)
 *   grads:   NULL, or ref_param_count(V, H) values that are OVERWRITTEN with dL/dparams
 *   h_last:  NULL, or B*H values that receive h_{T-1} of every sequence
 * Returns the loss, or NaN on allocation failure. */
double ref_forward_backward(int V, int H, int B, int T, const double *params, const double *h0,
                            const int32_t *inputs, const int32_t *targets, int mean,
                            double *grads, double *h_last);

#ifdef __cplusplus
}
#endif

#endif
