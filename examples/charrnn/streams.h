/*
 * The data pipeline: the split of the text into a training part and a held-out
 * validation tail, and the layout of B parallel streams over a part.
 *
 * Stream b of a part of n tokens reads tokens [b*L, b*L + L] with L = (n - 1) / B: B
 * evenly spaced, equally long pieces (the last (n - 1) % B tokens are not read). A
 * window w gives each stream the T inputs at offsets [w*T, w*T + T) of its piece and, as
 * targets, the tokens one further on. Consecutive windows continue where the previous one
 * ended, so the hidden state left by window w is the right start for window w+1 (the
 * library carries it). An epoch is the L / T full windows; the rest of each piece is
 * skipped, and the next epoch starts again at offset 0 from a zero state.
 *
 *   text:  |------------------ training part ------------------|-- validation --|
 *   B = 3: |stream 0 ........|stream 1 ........|stream 2 ........|
 *           w0 | w1 | w2 |..  w0 | w1 | w2 |..  w0 | w1 | w2 |..
 */
#ifndef CHARRNN_STREAMS_H
#define CHARRNN_STREAMS_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The split of n tokens: the first train_len train, the last val_len validate. */
typedef struct charrnn_split {
    size_t train_len;
    size_t val_len; /* floor(n * val_fraction), or 0 (no validation) if that is < 2 */
} charrnn_split;

/* Splits a text of n bytes for B streams of T-character windows. A validation tail of
 * fewer than 2 bytes (too short for one input and its target) becomes 0: no validation.
 * Fails with a message that says what to change when the text is shorter than T + 1
 * bytes, when the training part cannot give every stream one window (B*T + 1 bytes), or
 * when val_fraction is outside [0, 0.5]. */
int charrnn_split_text(size_t n, double val_fraction, int batch, int seq_len,
                       charrnn_split *split, charrnn_error *err);

typedef struct charrnn_streams {
    const int32_t *ids; /* the part's tokens (not owned) */
    size_t len;         /* tokens in the part */
    int batch;          /* B */
    int seq_len;        /* T */
    size_t stream_len;  /* L = (len - 1) / B: inputs per stream */
    size_t windows;     /* full windows per stream and epoch: L / T */
} charrnn_streams;

/* Lays B streams over ids[0..len). Fails unless every stream gets at least one input
 * (len >= B + 1). `windows` may be 0 (a part for evaluation, read in shorter windows). */
int charrnn_streams_init(charrnn_streams *s, const int32_t *ids, size_t len, int batch,
                         int seq_len, charrnn_error *err);

/* Fills the time-major [t][b] inputs and targets of `steps` steps that start at `offset`
 * in every stream; offset + steps <= stream_len. A training window w is
 * offset = w*T, steps = T. */
void charrnn_streams_fill(const charrnn_streams *s, size_t offset, int steps, int32_t *inputs,
                          int32_t *targets);

/* Where training is in the text: which epoch, and which window of it comes next. */
typedef struct charrnn_cursor {
    uint64_t epoch;  /* 0-based: the number of completed epochs */
    uint64_t window; /* the next window, in [0, windows) */
} charrnn_cursor;

/* Moves to the next window; at the end of an epoch wraps to window 0 of the next epoch
 * and returns 1 (the caller then starts from a zero state), else returns 0. */
int charrnn_cursor_advance(charrnn_cursor *c, const charrnn_streams *s);

/* The number of validation streams for a tail of val_len tokens: as many as the training
 * batch, but no more than leave each of them T tokens (at least 1). */
int charrnn_validation_batch(size_t val_len, int batch, int seq_len);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_STREAMS_H */
