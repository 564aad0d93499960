/* The interface every backend implements: a table of functions plus a context.
 * The dispatch layer (src/model.c) has checked every argument before it calls one, so
 * backends check only what they alone can know (device failures, non-finite results).
 * All host buffers crossing this interface are float64; backends convert. */
#ifndef GPURNN_BACKEND_H
#define GPURNN_BACKEND_H

#include "gpurnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Flat buffers a backend holds. PARAMS, GRADS and the two optimizer slots have the
 * parameter layout (n values); STATE is the carried hidden state (B, H). */
typedef enum {
    GPURNN_BUF_PARAMS,
    GPURNN_BUF_GRADS,
    GPURNN_BUF_OPT0,   /* SGD velocity, Adagrad memory, Adam first moment */
    GPURNN_BUF_OPT1,   /* Adam second moment */
    GPURNN_BUF_STATE,
    GPURNN_NUM_BUFFERS
} gpurnn_buffer;

/* One optimizer update, with everything that is the same for every element resolved by
 * the dispatch layer (defaults filled in, Adam's bias corrections for this step). */
typedef struct gpurnn_update_rule {
    gpurnn_optimizer_kind kind;
    double learning_rate;
    double momentum;
    double beta1, beta2, eps;
    double bias_correction1, bias_correction2; /* 1 - beta^t, Adam only */
} gpurnn_update_rule;

typedef struct gpurnn_backend_ops {
    const char *name;
    /* Allocates everything (sized by cfg), parameters/buffers zero. */
    gpurnn_status (*create)(const gpurnn_config *cfg, void **ctx);
    void (*destroy)(void *ctx);
    /* Copies n values starting at offset of a buffer to/from host float64. */
    gpurnn_status (*read)(void *ctx, gpurnn_buffer buf, size_t offset, size_t n, double *dst);
    gpurnn_status (*write)(void *ctx, gpurnn_buffer buf, size_t offset, size_t n, const double *src);
    gpurnn_status (*fill_zero)(void *ctx, gpurnn_buffer buf);
    /* inputs, targets: host (T, B), already range-checked. On GPURNN_ERR_NUMERIC the
     * carried state must be left unchanged. */
    gpurnn_status (*forward)(void *ctx, const int32_t *inputs, const int32_t *targets, int T,
                             double *loss);
    gpurnn_status (*backward)(void *ctx);
    /* Sum of squares of every gradient (float64 accumulation). */
    gpurnn_status (*grad_sumsq)(void *ctx, double *sumsq);
    gpurnn_status (*grad_scale)(void *ctx, double factor);
    gpurnn_status (*grad_clamp)(void *ctx, double limit);
    /* All or nothing: returns GPURNN_ERR_NUMERIC with *bad_index set to the first
     * parameter index whose gradient or new value is not finite, having changed nothing. */
    gpurnn_status (*step)(void *ctx, const gpurnn_update_rule *rule, size_t *bad_index);
    gpurnn_status (*sample)(void *ctx, int32_t first_token, int n, double temperature,
                            unsigned long long seed, int32_t *out);
    /* Advances the carried state over T steps of inputs (host (T, B), range-checked) with
     * buffers of its own: the training buffers (activations, tokens, gradients) are not
     * touched, and the state ends bit-identical to forward's. Writes the distributions
     * `what` asks for to out (float64, (T, B, V) or (B, V), of `kind`); with targets (NULL
     * unless scoring) also *log_likelihood = sum of log p_t[target]. On GPURNN_ERR_NUMERIC
     * (a logit is not finite) the carried state is left unchanged. */
    gpurnn_status (*infer)(void *ctx, const int32_t *inputs, const int32_t *targets, int T,
                           gpurnn_infer_output what, gpurnn_prob_kind kind, double *out,
                           double *log_likelihood);
    /* sample for every sequence b from its own state row, first_tokens (B), out (n, B)
     * time-major; draw k of sequence b uses gpurnn_sample_draw_index(b, k) (src/rng.h), so
     * sequence 0 gets sample's tokens. */
    gpurnn_status (*sample_batch)(void *ctx, const int32_t *first_tokens, int n, double temperature,
                                  unsigned long long seed, int32_t *out);
    /* Adds the bytes the backend holds to report's host[] and device[] (totals are the
     * dispatch layer's). */
    void (*memory)(void *ctx, gpurnn_memory_report *report);
} gpurnn_backend_ops;

/* Each backend has one table per dtype. The CUDA backend's come from its module
 * (backend_module.h). */
const gpurnn_backend_ops *gpurnn_cpu_backend(gpurnn_dtype dtype);

#ifdef __cplusplus
}
#endif

#endif
