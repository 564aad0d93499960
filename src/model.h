/* What the dispatch layer knows about a model: shared by the files of src/, not by backends. */
#ifndef GPURNN_MODEL_H
#define GPURNN_MODEL_H

#include "backend.h"
#include "gpurnn.h"
#include "layout.h"

#ifdef __cplusplus
extern "C" {
#endif

struct gpurnn_model {
    gpurnn_config cfg;               /* resolved: defaults filled, backend never AUTO */
    const gpurnn_backend_ops *ops;
    void *ctx;
    gpurnn_layout layout;            /* of cfg: where each tensor sits */
    size_t param_count;              /* layout.count */
    size_t state_count;              /* L*B*H, twice that for LSTM */
    int forward_valid;               /* the backend holds activations backward may use */
    int optimizer_started;           /* the optimizer slots hold state of optimizer_kind */
    gpurnn_optimizer_kind optimizer_kind;
    long long optimizer_steps;       /* Adam's t */
};

/* Checks a config and fills in its defaults (backend left as asked). */
gpurnn_status gpurnn_config_resolve(const gpurnn_config *in, gpurnn_config *out);

/* Checks a sequence call's model, T and (T, B) token arrays; fn prefixes the message. */
gpurnn_status gpurnn_check_sequence(const char *fn, const gpurnn_model *m, const int32_t *inputs,
                                    const int32_t *targets, int T);

/* Creates a model on an exact backend with every buffer zero (no initialisation). */
gpurnn_status gpurnn_model_create_empty(const gpurnn_config *resolved, gpurnn_model **out);

#ifdef __cplusplus
}
#endif

#endif
