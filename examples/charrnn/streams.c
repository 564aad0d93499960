#include "streams.h"

#include <math.h>

/* The split of n bytes, or 0 when its training part cannot feed every stream a window. */
static int split_fits(size_t n, double val_fraction, size_t needed, charrnn_split *split)
{
    /* A tail of one byte holds no (input, target) pair: then there is no validation. */
    size_t val_len = (size_t)floor((double)n * val_fraction);
    if (val_len < 2)
        val_len = 0;
    split->train_len = n - val_len;
    split->val_len = val_len;
    return split->train_len >= needed;
}

/* The smallest text size from which on every size fits (not monotonic: at the size where
 * the tail first reaches 2 bytes, the training part shrinks by 2). */
static size_t smallest_fitting_size(double val_fraction, size_t needed)
{
    charrnn_split ignored;
    size_t n = (size_t)ceil((double)needed / (1.0 - val_fraction)) + 3;
    while (n > needed && split_fits(n - 1, val_fraction, needed, &ignored))
        n--;
    return n;
}

int charrnn_split_text(size_t n, double val_fraction, int batch, int seq_len,
                       charrnn_split *split, charrnn_error *err)
{
    if (!(val_fraction >= 0.0 && val_fraction <= 0.5))
        return charrnn_fail(err, "--val-fraction must be in [0, 0.5], got %g", val_fraction);
    /* every stream needs a window of T inputs and the character after them */
    size_t needed = (size_t)batch * (size_t)seq_len + 1;
    if (!split_fits(n, val_fraction, needed, split))
        return charrnn_fail(err,
                            "the text has %zu bytes; --batch %d streams of --seq-len %d characters, "
                            "with --val-fraction %g of it held out, need at least %zu: use a "
                            "longer text or a smaller --batch or --seq-len",
                            n, batch, seq_len, val_fraction, smallest_fitting_size(val_fraction, needed));
    return 0;
}

int charrnn_streams_init(charrnn_streams *s, const int32_t *ids, size_t len, int batch,
                         int seq_len, charrnn_error *err)
{
    if (batch < 1 || seq_len < 1 || len < (size_t)batch + 1)
        return charrnn_fail(err, "%zu tokens cannot feed %d streams", len, batch);
    s->ids = ids;
    s->len = len;
    s->batch = batch;
    s->seq_len = seq_len;
    s->stream_len = (len - 1) / (size_t)batch;
    s->windows = s->stream_len / (size_t)seq_len;
    return 0;
}

void charrnn_streams_fill(const charrnn_streams *s, size_t offset, int steps, int32_t *inputs,
                          int32_t *targets)
{
    const int B = s->batch;
    for (int b = 0; b < B; b++) {
        const int32_t *piece = s->ids + (size_t)b * s->stream_len + offset;
        for (int t = 0; t < steps; t++) {
            inputs[t * B + b] = piece[t];
            targets[t * B + b] = piece[t + 1];
        }
    }
}

int charrnn_cursor_advance(charrnn_cursor *c, const charrnn_streams *s)
{
    if (++c->window < s->windows)
        return 0;
    c->window = 0;
    c->epoch++;
    return 1;
}

int charrnn_validation_batch(size_t val_len, int batch, int seq_len)
{
    if (val_len < 2)
        return 1;
    size_t streams = (val_len - 1) / (size_t)seq_len;
    if (streams < 1)
        streams = 1;
    return streams < (size_t)batch ? (int)streams : batch;
}
