/*
 * The held-out loss: the per-character loss of the validation tail, measured with B
 * parallel streams so that it costs about one forward pass over the tail.
 *
 * Each stream scores its piece of the tail (the layout of streams.h). A stream that began
 * its piece from a zero hidden state would be scored mostly on how fast it recovers from
 * that state, not on how well the model predicts text (two 1.7 KB slices of the same
 * text, started from zero, scored 1.91 and 3.03 nats/char). So before scoring, every
 * stream runs the `warmup` characters just before its piece through the model unscored
 * (for stream 0, the end of the training text): its state at the first scored character
 * is then close to what one pass over the whole text would have there. The positions are
 * the same at every evaluation, so the curve compares like with like. Warm-up and scoring
 * use gpurnn_infer and gpurnn_score: no activations are kept, no gradient is touched.
 */
#ifndef CHARRNN_EVALUATE_H
#define CHARRNN_EVALUATE_H

#include <gpurnn.h>

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Characters each validation stream reads unscored before its piece. A tanh RNN's state
 * forgets its start within tens of characters; 256 leaves a wide margin for ~15% more work
 * at the default sizes. */
enum { CHARRNN_VAL_WARMUP = 256 };

/* The mean loss in nats/char over the validation tail ids[val_start, val_start + val_len)
 * of a text, with the parameters `model` holds now; eval_model (its batch is the number
 * of streams, its max_seq_len at least seq_len) gets a copy of them and its own state.
 * warmup is capped by val_start. Returns 0, or -1 with err set. */
int charrnn_evaluate(gpurnn_model *model, gpurnn_model *eval_model, const int32_t *ids, size_t val_start,
                     size_t val_len, int seq_len, int warmup, double *loss, charrnn_error *err);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_EVALUATE_H */
