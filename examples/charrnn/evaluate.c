/* The held-out loss with warmed-up streams (evaluate.h). */
#include "evaluate.h"

#include "streams.h"

#include <stdlib.h>

int charrnn_evaluate(gpurnn_model *model, gpurnn_model *eval_model, const int32_t *ids, size_t val_start,
                     size_t val_len, int seq_len, int warmup, double *loss_out, charrnn_error *err)
{
    gpurnn_config cfg;
    if (gpurnn_model_config(eval_model, &cfg) != GPURNN_OK)
        return charrnn_fail(err, "the validation model: %s", gpurnn_last_error());
    const int B = cfg.batch_size;
    charrnn_streams val;
    if (charrnn_streams_init(&val, ids + val_start, val_len, B, seq_len, err) != 0)
        return -1;
    size_t count = gpurnn_param_count(model);
    double *params = charrnn_xmalloc(count * sizeof *params);
    int32_t *inputs = charrnn_xmalloc((size_t)B * (size_t)seq_len * sizeof *inputs);
    int32_t *targets = charrnn_xmalloc((size_t)B * (size_t)seq_len * sizeof *targets);
    int rc = 0;
    if (gpurnn_params_get(model, params, count) != GPURNN_OK ||
        gpurnn_params_set(eval_model, params, count) != GPURNN_OK ||
        gpurnn_state_reset(eval_model) != GPURNN_OK) {
        rc = charrnn_fail(err, "copying the parameters for validation: %s", gpurnn_last_error());
        goto done;
    }
    /* Warm-up: the characters before each stream's piece, run through the model unscored.
     * Stream b's piece starts at val_start + b * stream_len. */
    size_t W = (size_t)warmup < val_start ? (size_t)warmup : val_start;
    for (size_t done = 0; done < W && rc == 0;) {
        int steps = W - done < (size_t)seq_len ? (int)(W - done) : seq_len;
        for (int t = 0; t < steps; t++)
            for (int b = 0; b < B; b++)
                inputs[(size_t)t * B + b] = ids[val_start + (size_t)b * val.stream_len - W + done + (size_t)t];
        if (gpurnn_infer(eval_model, inputs, steps, GPURNN_INFER_NONE, GPURNN_PROBS, NULL, 0) != GPURNN_OK)
            rc = charrnn_fail(err, "the validation warm-up failed: %s", gpurnn_last_error());
        done += (size_t)steps;
    }
    double sum = 0.0;
    for (size_t offset = 0; offset < val.stream_len && rc == 0;) {
        size_t left = val.stream_len - offset;
        int steps = left < (size_t)seq_len ? (int)left : seq_len;
        charrnn_streams_fill(&val, offset, steps, inputs, targets);
        double log_likelihood;
        if (gpurnn_score(eval_model, inputs, targets, steps, &log_likelihood) != GPURNN_OK)
            rc = charrnn_fail(err, "the validation pass failed: %s", gpurnn_last_error());
        sum -= log_likelihood;
        offset += (size_t)steps;
    }
    if (rc == 0) *loss_out = sum / ((double)val.stream_len * B);
done:
    free(params);
    free(inputs);
    free(targets);
    return rc;
}
