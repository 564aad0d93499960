/* The public header compiles as strict C11 (-Wall -Wextra -Werror -pedantic) and its
 * functions link and run from C: create a tiny model, take one training step, clean up.
 * Exit status 0 on success. */
#include "gpurnn.h"

#include <stdio.h>
#include <string.h>

static int fail(const char *what, gpurnn_status st)
{
    fprintf(stderr, "%s failed: %s: %s\n", what, gpurnn_status_string(st), gpurnn_last_error());
    return 1;
}

int main(void)
{
    gpurnn_config cfg;
    gpurnn_model *m = NULL;
    gpurnn_optimizer opt;
    gpurnn_status st;
    const int32_t inputs[3] = {0, 1, 2};
    const int32_t targets[3] = {1, 2, 0};
    double loss = -1.0;
    const char *v = gpurnn_version();

    if (v == NULL || v[0] == '\0') {
        fprintf(stderr, "gpurnn_version() is empty\n");
        return 1;
    }
    gpurnn_config_init(&cfg);
    cfg.vocab_size = 3;
    cfg.hidden_size = 4;
    cfg.batch_size = 1;
    cfg.max_seq_len = 3;
    cfg.dtype = GPURNN_F64;
    cfg.backend = GPURNN_BACKEND_CPU;
    st = gpurnn_model_create(&cfg, &m);
    if (st != GPURNN_OK)
        return fail("gpurnn_model_create", st);
    if (gpurnn_param_count(m) != (size_t)(2 * 4 * 3 + 4 * 4 + 4 + 3)) {
        fprintf(stderr, "gpurnn_param_count: %zu\n", gpurnn_param_count(m));
        gpurnn_model_destroy(m);
        return 1;
    }
    st = gpurnn_forward(m, inputs, targets, 3, &loss);
    if (st != GPURNN_OK) {
        gpurnn_model_destroy(m);
        return fail("gpurnn_forward", st);
    }
    if (!(loss > 0.0)) {
        fprintf(stderr, "loss %g is not positive\n", loss);
        gpurnn_model_destroy(m);
        return 1;
    }
    st = gpurnn_backward(m);
    if (st != GPURNN_OK) {
        gpurnn_model_destroy(m);
        return fail("gpurnn_backward", st);
    }
    memset(&opt, 0, sizeof opt);
    opt.kind = GPURNN_SGD;
    opt.learning_rate = 0.1;
    st = gpurnn_step(m, &opt);
    if (st != GPURNN_OK) {
        gpurnn_model_destroy(m);
        return fail("gpurnn_step", st);
    }
    /* Inference from C: the next-token distribution and a score. */
    {
        double probs[3], log_likelihood = 0.0;
        st = gpurnn_infer(m, inputs, 3, GPURNN_INFER_LAST, GPURNN_PROBS, probs, 3);
        if (st != GPURNN_OK) {
            gpurnn_model_destroy(m);
            return fail("gpurnn_infer", st);
        }
        st = gpurnn_score(m, inputs, targets, 3, &log_likelihood);
        if (st != GPURNN_OK || !(log_likelihood < 0.0) || !(probs[0] + probs[1] + probs[2] > 0.999)) {
            gpurnn_model_destroy(m);
            return fail("gpurnn_score", st);
        }
    }
    /* A failing call from C: status and message. */
    st = gpurnn_forward(m, inputs, targets, 0, &loss);
    if (st != GPURNN_ERR_INVALID_ARGUMENT || gpurnn_last_error()[0] == '\0') {
        fprintf(stderr, "forward with T=0 returned %s\n", gpurnn_status_string(st));
        gpurnn_model_destroy(m);
        return 1;
    }
    gpurnn_model_destroy(m);
    gpurnn_model_destroy(NULL);
    printf("libgpurnn %s: header compiles as C11, loss %.6f\n", v, loss);
    return 0;
}
