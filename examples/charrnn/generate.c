#include "generate.h"

#include <stdlib.h>
#include <string.h>

int charrnn_sampler_create(charrnn_sampler *s, const gpurnn_model *source, charrnn_error *err)
{
    memset(s, 0, sizeof *s);
    gpurnn_config cfg;
    if (gpurnn_model_config(source, &cfg) != GPURNN_OK)
        return charrnn_fail(err, "cannot read the model's configuration: %s", gpurnn_last_error());
    cfg.batch_size = 1;
    cfg.backend = gpurnn_model_backend(source);
    if (gpurnn_model_create(&cfg, &s->model) != GPURNN_OK)
        return charrnn_fail(err, "cannot create the sampling model: %s", gpurnn_last_error());
    s->seq_len = cfg.max_seq_len;
    s->param_count = gpurnn_param_count(s->model);
    s->params = charrnn_xmalloc(s->param_count * sizeof *s->params);
    if (charrnn_sampler_sync(s, source, err) != 0) {
        charrnn_sampler_destroy(s);
        return -1;
    }
    return 0;
}

int charrnn_sampler_sync(charrnn_sampler *s, const gpurnn_model *source, charrnn_error *err)
{
    if (gpurnn_params_get(source, s->params, s->param_count) != GPURNN_OK ||
        gpurnn_params_set(s->model, s->params, s->param_count) != GPURNN_OK)
        return charrnn_fail(err, "cannot copy the parameters for sampling: %s", gpurnn_last_error());
    return 0;
}

void charrnn_sampler_destroy(charrnn_sampler *s)
{
    gpurnn_model_destroy(s->model);
    free(s->params);
    memset(s, 0, sizeof *s);
}

unsigned char charrnn_default_prime(const charrnn_vocab *vocab)
{
    return vocab->id_of['\n'] >= 0 ? '\n' : vocab->chars[0];
}

int charrnn_generate(charrnn_sampler *s, const charrnn_vocab *vocab, const unsigned char *prime,
                     size_t prime_len, int length, double temperature, uint64_t seed,
                     unsigned char *out, charrnn_error *err)
{
    if (prime_len < 1 || length < 1)
        return charrnn_fail(err, "nothing to generate from");
    int32_t *ids = charrnn_xmalloc(prime_len * sizeof *ids);
    int rc = -1;
    int32_t *drawn = NULL;
    if (charrnn_vocab_encode(vocab, prime, prime_len, ids, "the prime text", err) != 0)
        goto done;
    if (gpurnn_state_reset(s->model) != GPURNN_OK) {
        charrnn_fail(err, "cannot reset the sampling state: %s", gpurnn_last_error());
        goto done;
    }
    /* Prime with all but the prime's last character (gpurnn_sample feeds that one), in
     * pieces of at most seq_len steps. */
    for (size_t start = 0; start + 1 < prime_len;) {
        size_t steps = prime_len - 1 - start;
        if (steps > (size_t)s->seq_len)
            steps = (size_t)s->seq_len;
        if (gpurnn_infer(s->model, ids + start, (int)steps, GPURNN_INFER_NONE, GPURNN_PROBS, NULL, 0) !=
            GPURNN_OK) {
            charrnn_fail(err, "cannot read the prime text: %s", gpurnn_last_error());
            goto done;
        }
        start += steps;
    }
    drawn = charrnn_xmalloc((size_t)length * sizeof *drawn);
    if (gpurnn_sample(s->model, ids[prime_len - 1], length, temperature, seed, drawn) != GPURNN_OK) {
        charrnn_fail(err, "sampling failed: %s", gpurnn_last_error());
        goto done;
    }
    for (int i = 0; i < length; i++)
        out[i] = vocab->chars[drawn[i]];
    rc = 0;
done:
    free(drawn);
    free(ids);
    return rc;
}
