/* How BPTT walks time and what it keeps: decided once, in one place, so that both backends
 * and both activation policies (full history, checkpoints) cut time at the same steps.
 * Every sum over time steps (dWhy, dby, dWhh, dbh, dWxh, the loss) is taken one chunk of
 * C = chunk_steps at a time on the grid t = 0, C, 2C, ...; a checkpointed run keeps that
 * grid, which is why its gradients are bit-identical to the full history's. */
#ifndef GPURNN_BPTT_PLAN_H
#define GPURNN_BPTT_PLAN_H

#include <stddef.h>

#include "gpurnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* C: time steps per output-layer chunk. Enough rows for efficient GEMMs, few enough that
 * the (C*B, V) and (C*B, H) chunk buffers stay small whatever T is. */
int gpurnn_chunk_steps(int V, int H, int B, int max_T);

/* Bytes of the full activation history, (max_T + 1, streams, B, H) values of the dtype,
 * streams as gpurnn_layout_step_streams (config sizes already checked against overflow). */
size_t gpurnn_history_bytes(const gpurnn_config *cfg);

/* The checkpoint interval k a config resolves to (GPURNN_BPTT_KEEP_ALL or >= 1), given
 * an already-checked bptt_checkpoint_every and a resolved activation budget. */
int gpurnn_resolve_checkpoint_every(const gpurnn_config *cfg);

/* Hidden states j = t+1 (j = 0 is the carried state h_{-1}) kept as checkpoints: every
 * multiple of k in [0, max_T]. */
size_t gpurnn_checkpoint_count(int k, int max_T);

/* States the recomputation window must hold: backward needs states [t0, t0+C] of a chunk
 * and recomputes from the checkpoint at or before t0, at most k-1 steps earlier. */
size_t gpurnn_window_states(int k, int chunk_steps, int max_T);

/* A window place for state j that has the alignment (modulo align_bytes) it would have
 * in a full history allocated at an align_bytes boundary, so that BLAS sees operands of
 * the same alignment in both policies: some kernels choose their code path by it.
 * Returns the number of extra states to leave, after the first base states of the window
 * (a region starting there; 0 for the window's start), before state first_j. */
size_t gpurnn_window_pad(size_t first_j, size_t base, size_t state_bytes, size_t align_bytes);
/* The most pad can be for a state size, to size the window's allocation. */
size_t gpurnn_window_pad_max(size_t state_bytes, size_t align_bytes);

#ifdef __cplusplus
}
#endif

#endif
