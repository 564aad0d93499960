/* Learns to continue "hello" with a tiny RNN (h e l l o -> e l l o h), then continues a
 * prompt with it. */
#include <gpurnn.h>
#include <stdio.h>

#define CHECK(call)                                                               \
    do {                                                                          \
        if ((call) != GPURNN_OK) {                                                \
            fprintf(stderr, "%s failed: %s\n", #call, gpurnn_last_error());       \
            goto fail;                                                            \
        }                                                                         \
    } while (0)

int main(void)
{
    const int32_t inputs[] = {0, 1, 2, 2, 3};  /* h e l l o  (h=0 e=1 l=2 o=3) */
    const int32_t targets[] = {1, 2, 2, 3, 0}; /* e l l o h */
    gpurnn_optimizer adam = {.kind = GPURNN_ADAM, .learning_rate = 0.05};
    gpurnn_model *m = NULL;
    double first = 0.0, loss = 0.0;

    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = 4;   /* V */
    cfg.hidden_size = 16; /* H */
    cfg.batch_size = 1;   /* B */
    cfg.max_seq_len = 5;  /* T */
    cfg.reduction = GPURNN_LOSS_MEAN;
    CHECK(gpurnn_model_create(&cfg, &m)); /* backend AUTO: CUDA if usable, else CPU */

    for (int step = 0; step < 100; step++) {
        CHECK(gpurnn_state_reset(m)); /* each step starts "hello" from h = 0 */
        CHECK(gpurnn_zero_grad(m));
        CHECK(gpurnn_forward(m, inputs, targets, 5, &loss));
        CHECK(gpurnn_backward(m));
        CHECK(gpurnn_clip_grad_norm(m, 5.0, NULL));
        CHECK(gpurnn_step(m, &adam));
        if (step == 0)
            first = loss;
    }
    printf("libgpurnn %s on %s: loss %.3f -> %.3f\n", gpurnn_version(),
           gpurnn_model_backend(m) == GPURNN_BACKEND_CUDA ? "CUDA" : "CPU", first, loss);

    /* Continue the prompt "hel": prime the state with "he", then sample from its last
     * token 'l' (gpurnn_sample feeds it itself); temperature 0 takes the likeliest. */
    const int32_t prompt[] = {0, 1, 2}; /* h e l */
    int32_t next[2];
    CHECK(gpurnn_state_reset(m));
    CHECK(gpurnn_infer(m, prompt, 2, GPURNN_INFER_NONE, GPURNN_PROBS, NULL, 0));
    CHECK(gpurnn_sample(m, prompt[2], 2, 0.0, 1, next));
    printf("\"hel\" continues as \"%c%c\"\n", "helo"[next[0]], "helo"[next[1]]);
    gpurnn_model_destroy(m);
    return loss < first ? 0 : 1;

fail:
    gpurnn_model_destroy(m);
    return 1;
}
