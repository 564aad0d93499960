/* The dispatch layer: every public call that takes a model checks its arguments here,
 * once, then calls the backend's table. Nothing reaches a backend unchecked, and nothing
 * is changed before every check has passed. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "backend_module.h"
#include "bptt_plan.h"
#include "error.h"
#include "model.h"
#include "rng.h"

#ifndef GPURNN_VERSION_STRING
#define GPURNN_VERSION_STRING "0.0.0"
#endif

/* Host staging for float64 views, so that no call allocates in proportion to the model. */
enum { GPURNN_HOST_CHUNK = 4096 };

const char *gpurnn_version(void) { return GPURNN_VERSION_STRING; }

/* ---- backends ------------------------------------------------------------------- */

/* The CUDA module's table when the module loads and a device is usable. */
static gpurnn_status cuda_module_usable(const gpurnn_module **out)
{
    const gpurnn_module *module = NULL;
    gpurnn_status s = gpurnn_cuda_module(&module);
    if (s != GPURNN_OK) return s; /* the message names the module file already */
    s = module->probe();
    if (s != GPURNN_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", gpurnn_last_error());
        return gpurnn_fail(s, "%s (module %s)", why, gpurnn_backend_module(GPURNN_BACKEND_CUDA));
    }
    *out = module;
    return GPURNN_OK;
}

gpurnn_status gpurnn_backend_check(gpurnn_backend b)
{
    const gpurnn_module *module;
    switch (b) {
    case GPURNN_BACKEND_AUTO:
    case GPURNN_BACKEND_CPU: return GPURNN_OK;
    case GPURNN_BACKEND_CUDA: return cuda_module_usable(&module);
    }
    return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                       "backend = %d is not GPURNN_BACKEND_AUTO, _CPU or _CUDA", (int)b);
}

int gpurnn_backend_available(gpurnn_backend b)
{
    /* A query, not a failed call: keep the caller's last error as it was. */
    char saved[512];
    strncpy(saved, gpurnn_last_error(), sizeof saved - 1);
    saved[sizeof saved - 1] = '\0';
    int ok = gpurnn_backend_check(b) == GPURNN_OK;
    gpurnn_fail(GPURNN_OK, "%s", saved);
    return ok;
}

/* Resolves AUTO and finds the table for a backend. AUTO takes CUDA when its module loads
 * and a device is usable, but never an emulated device (a test tool, not a product). */
static gpurnn_status select_backend(gpurnn_backend requested, gpurnn_dtype dtype,
                                    gpurnn_backend *resolved,
                                    const gpurnn_backend_ops **ops)
{
    if (requested != GPURNN_BACKEND_CPU && requested != GPURNN_BACKEND_CUDA && requested != GPURNN_BACKEND_AUTO)
        return gpurnn_backend_check(requested); /* names the unknown value */
    const gpurnn_module *module = NULL;
    if (requested == GPURNN_BACKEND_CUDA) {
        gpurnn_status s = cuda_module_usable(&module);
        if (s != GPURNN_OK) return s;
    } else if (requested == GPURNN_BACKEND_AUTO && gpurnn_backend_available(GPURNN_BACKEND_CUDA)) {
        /* available: loaded and probed already, so this succeeds (the probe is cached) */
        if (cuda_module_usable(&module) != GPURNN_OK || module->is_emulator) module = NULL;
    }
    if (module) {
        *resolved = GPURNN_BACKEND_CUDA;
        *ops = module->ops(dtype);
        return GPURNN_OK;
    }
    *resolved = GPURNN_BACKEND_CPU;
    *ops = gpurnn_cpu_backend(dtype);
    return GPURNN_OK;
}

/* ---- lifecycle ------------------------------------------------------------------ */

gpurnn_status gpurnn_model_create_empty(const gpurnn_config *resolved, gpurnn_model **out)
{
    gpurnn_config cfg = *resolved;
    const gpurnn_backend_ops *ops = NULL;
    gpurnn_status s = select_backend(cfg.backend, cfg.dtype, &cfg.backend, &ops);
    if (s != GPURNN_OK) return s;

    gpurnn_model *m = gpurnn_calloc(1, sizeof *m);
    if (!m)
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "cannot allocate the model handle (%zu bytes)",
                           sizeof *m);
    m->cfg = cfg;
    m->ops = ops;
    gpurnn_layout_of(&m->layout, &cfg);
    m->param_count = m->layout.count;
    m->state_count = gpurnn_layout_state_count(&m->layout, (size_t)cfg.batch_size);
    s = ops->create(&m->cfg, &m->ctx);
    if (s != GPURNN_OK && resolved->backend == GPURNN_BACKEND_AUTO && cfg.backend != GPURNN_BACKEND_CPU &&
        (s == GPURNN_ERR_INVALID_ARGUMENT || s == GPURNN_ERR_OUT_OF_MEMORY || s == GPURNN_ERR_CUDA ||
         s == GPURNN_ERR_BACKEND_UNAVAILABLE)) {
        /* AUTO means the CPU where CUDA cannot hold this configuration (too many tokens for
         * its int32 indices, too little device memory) or the device fails to set it up */
        m->cfg.backend = GPURNN_BACKEND_CPU;
        m->ops = gpurnn_cpu_backend(cfg.dtype);
        s = m->ops->create(&m->cfg, &m->ctx);
    }
    if (s != GPURNN_OK) {
        gpurnn_free(m);
        return s;
    }
    *out = m;
    return GPURNN_OK;
}

/* N(0, 1) * init_scale for every matrix (they all come before the biases), indexed by
 * flat position so that every backend and dtype starts from the same values; biases stay
 * zero. */
static gpurnn_status init_weights(gpurnn_model *m)
{
    double chunk[GPURNN_HOST_CHUNK];
    size_t end = gpurnn_layout_weights_end(&m->layout);
    for (size_t start = 0; start < end; start += GPURNN_HOST_CHUNK) {
        size_t n = end - start < GPURNN_HOST_CHUNK ? end - start : GPURNN_HOST_CHUNK;
        for (size_t i = 0; i < n; i++)
            chunk[i] = m->cfg.init_scale * gpurnn_normal(m->cfg.seed, GPURNN_STREAM_INIT, start + i);
        gpurnn_status s = m->ops->write(m->ctx, GPURNN_BUF_PARAMS, start, n, chunk);
        if (s != GPURNN_OK) return s;
    }
    return GPURNN_OK;
}

gpurnn_status gpurnn_model_create(const gpurnn_config *cfg, gpurnn_model **out)
{
    if (!out) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_model_create: out is NULL");
    gpurnn_config resolved;
    gpurnn_status s = gpurnn_config_resolve(cfg, &resolved);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, "gpurnn_model_create");
    gpurnn_model *m = NULL;
    s = gpurnn_model_create_empty(&resolved, &m);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, "gpurnn_model_create");
    s = init_weights(m);
    if (s != GPURNN_OK) {
        gpurnn_model_destroy(m);
        return gpurnn_fail_context(s, "gpurnn_model_create");
    }
    *out = m;
    return GPURNN_OK;
}

void gpurnn_model_destroy(gpurnn_model *m)
{
    if (!m) return;
    m->ops->destroy(m->ctx);
    gpurnn_free(m);
}

gpurnn_backend gpurnn_model_backend(const gpurnn_model *m)
{
    return m ? m->cfg.backend : GPURNN_BACKEND_AUTO;
}

gpurnn_status gpurnn_model_config(const gpurnn_model *m, gpurnn_config *out)
{
    if (!m || !out)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_model_config: %s is NULL",
                           !m ? "model" : "out");
    *out = m->cfg;
    return GPURNN_OK;
}

gpurnn_status gpurnn_model_memory(const gpurnn_model *m, gpurnn_memory_report *out)
{
    if (!m || !out)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_model_memory: %s is NULL",
                           !m ? "model" : "out");
    gpurnn_memory_report r;
    memset(&r, 0, sizeof r);
    r.host[GPURNN_MEMORY_WORKSPACE] = sizeof *m;
    m->ops->memory(m->ctx, &r);
    for (int kind = 0; kind < GPURNN_MEMORY_KINDS; kind++) {
        r.host_total += r.host[kind];
        r.device_total += r.device[kind];
    }
    r.bptt_checkpoint_every = m->cfg.bptt_checkpoint_every;
    r.chunk_steps = gpurnn_chunk_steps(m->cfg.vocab_size, m->cfg.hidden_size, m->cfg.batch_size,
                                       m->cfg.max_seq_len);
    *out = r;
    return GPURNN_OK;
}

size_t gpurnn_param_count(const gpurnn_model *m) { return m ? m->param_count : 0; }

/* The five ids name the tensors of one tanh/ReLU layer, whose table has them in order. */
static int five_tensor_model(const gpurnn_model *m) { return m->layout.tensor_count == GPURNN_NUM_TENSORS; }

size_t gpurnn_tensor_offset(const gpurnn_model *m, gpurnn_tensor t)
{
    if (!m || (unsigned)t >= GPURNN_NUM_TENSORS || !five_tensor_model(m)) return 0;
    gpurnn_tensor_info info;
    gpurnn_layout_tensor(&m->layout, (size_t)t, &info);
    return info.offset;
}

size_t gpurnn_tensor_size(const gpurnn_model *m, gpurnn_tensor t)
{
    if (!m || (unsigned)t >= GPURNN_NUM_TENSORS || !five_tensor_model(m)) return 0;
    gpurnn_tensor_info info;
    gpurnn_layout_tensor(&m->layout, (size_t)t, &info);
    return info.size;
}

size_t gpurnn_tensor_count(const gpurnn_model *m) { return m ? m->layout.tensor_count : 0; }

gpurnn_status gpurnn_tensor_info_get(const gpurnn_model *m, size_t index, gpurnn_tensor_info *out)
{
    if (!m || !out)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_tensor_info_get: %s is NULL",
                           !m ? "model" : "out");
    if (index >= m->layout.tensor_count)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "gpurnn_tensor_info_get: index %zu is outside [0, %zu), the model's tensors",
                           index, m->layout.tensor_count);
    gpurnn_layout_tensor(&m->layout, index, out);
    return GPURNN_OK;
}

size_t gpurnn_state_count(const gpurnn_model *m) { return m ? m->state_count : 0; }

/* ---- host views of the flat buffers ---------------------------------------------- */

static gpurnn_status check_view(const char *fn, const gpurnn_model *m, const void *buf, size_t n,
                                size_t expected, const char *what)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (!buf) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: buffer is NULL", fn);
    if (n != expected)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: n = %zu, but the model has %zu %s", fn,
                           n, expected, what);
    return GPURNN_OK;
}

/* The first value that is not finite, or that would not be once stored in dtype. */
static gpurnn_status first_nonfinite(const double *v, size_t n, gpurnn_dtype dtype, size_t *index)
{
    const double largest = dtype == GPURNN_F32 ? (double)FLT_MAX : DBL_MAX;
    for (size_t i = 0; i < n; i++) {
        if (!(fabs(v[i]) <= largest)) {
            *index = i;
            return GPURNN_ERR_INVALID_ARGUMENT;
        }
    }
    return GPURNN_OK;
}

gpurnn_status gpurnn_params_get(const gpurnn_model *m, double *dst, size_t n)
{
    gpurnn_status s = check_view("gpurnn_params_get", m, dst, n, gpurnn_param_count(m), "parameters");
    if (s != GPURNN_OK) return s;
    return m->ops->read(m->ctx, GPURNN_BUF_PARAMS, 0, n, dst);
}

gpurnn_status gpurnn_grads_get(const gpurnn_model *m, double *dst, size_t n)
{
    gpurnn_status s = check_view("gpurnn_grads_get", m, dst, n, gpurnn_param_count(m), "parameters");
    if (s != GPURNN_OK) return s;
    return m->ops->read(m->ctx, GPURNN_BUF_GRADS, 0, n, dst);
}

gpurnn_status gpurnn_params_set(gpurnn_model *m, const double *src, size_t n)
{
    gpurnn_status s = check_view("gpurnn_params_set", m, src, n, gpurnn_param_count(m), "parameters");
    if (s != GPURNN_OK) return s;
    size_t bad;
    if (first_nonfinite(src, n, m->cfg.dtype, &bad) != GPURNN_OK) {
        char where[64];
        gpurnn_layout_describe(&m->layout, bad, where, sizeof where);
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "gpurnn_params_set: value %g at index %zu (%s) is not finite in the model's dtype", src[bad],
                           bad, where);
    }
    s = m->ops->write(m->ctx, GPURNN_BUF_PARAMS, 0, n, src);
    if (s != GPURNN_OK) return s;
    m->forward_valid = 0;
    return GPURNN_OK;
}

gpurnn_status gpurnn_state_get(const gpurnn_model *m, double *dst, size_t n)
{
    gpurnn_status s = check_view("gpurnn_state_get", m, dst, n, m ? m->state_count : 0,
                                 "state values (gpurnn_state_count)");
    if (s != GPURNN_OK) return s;
    return m->ops->read(m->ctx, GPURNN_BUF_STATE, 0, n, dst);
}

gpurnn_status gpurnn_state_set(gpurnn_model *m, const double *src, size_t n)
{
    gpurnn_status s = check_view("gpurnn_state_set", m, src, n, m ? m->state_count : 0,
                                 "state values (gpurnn_state_count)");
    if (s != GPURNN_OK) return s;
    size_t bad;
    if (first_nonfinite(src, n, m->cfg.dtype, &bad) != GPURNN_OK) {
        char where[64];
        gpurnn_layout_describe_state(&m->layout, (size_t)m->cfg.batch_size, bad, where, sizeof where);
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "gpurnn_state_set: value %g at index %zu (%s) is not finite in the model's dtype",
                           src[bad], bad, where);
    }
    return m->ops->write(m->ctx, GPURNN_BUF_STATE, 0, n, src);
}

gpurnn_status gpurnn_state_reset(gpurnn_model *m)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_state_reset: model is NULL");
    return m->ops->fill_zero(m->ctx, GPURNN_BUF_STATE);
}

/* ---- training ------------------------------------------------------------------- */

/* Checks a (T, B) token array: every id in [0, V). */
static gpurnn_status check_tokens(const char *fn, const char *what, const int32_t *tokens, int T,
                                  int B, int V)
{
    if (!tokens) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, what);
    size_t count = (size_t)T * (size_t)B;
    for (size_t i = 0; i < count; i++) {
        if (tokens[i] < 0 || tokens[i] >= V)
            return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                               "%s: %s token %d at t=%zu, b=%zu is outside [0, %d)", fn, what,
                               (int)tokens[i], i / (size_t)B, i % (size_t)B, V);
    }
    return GPURNN_OK;
}

/* The model, T and the (T, B) inputs of a call that runs the recurrence. */
static gpurnn_status check_inputs(const char *fn, const gpurnn_model *m, const int32_t *inputs, int T)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (T < 1 || T > m->cfg.max_seq_len)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: T = %d is outside [1, %d] (max_seq_len)",
                           fn, T, m->cfg.max_seq_len);
    return check_tokens(fn, "inputs", inputs, T, m->cfg.batch_size, m->cfg.vocab_size);
}

gpurnn_status gpurnn_check_sequence(const char *fn, const gpurnn_model *m, const int32_t *inputs,
                                    const int32_t *targets, int T)
{
    gpurnn_status s = check_inputs(fn, m, inputs, T);
    if (s != GPURNN_OK) return s;
    return check_tokens(fn, "targets", targets, T, m->cfg.batch_size, m->cfg.vocab_size);
}

/* For a NUMERIC failure of a computation from the parameters and the carried state:
 * appends the entry of largest magnitude of each to the current message, so that it
 * names the tensor that most likely overflowed ("...; largest parameter Why[2, 0] =
 * 3e+38, largest carried-state value 0.5 at b=0, unit 3"). Returns status. */
static gpurnn_status append_magnitudes(const gpurnn_model *m, gpurnn_status status)
{
    char message[512];
    snprintf(message, sizeof message, "%s", gpurnn_last_error());
    double chunk[GPURNN_HOST_CHUNK];
    size_t sizes[2] = {m->param_count, m->state_count};
    gpurnn_buffer bufs[2] = {GPURNN_BUF_PARAMS, GPURNN_BUF_STATE};
    size_t where[2] = {0, 0};
    double value[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        for (size_t start = 0; start < sizes[k]; start += GPURNN_HOST_CHUNK) {
            size_t n = sizes[k] - start < GPURNN_HOST_CHUNK ? sizes[k] - start : GPURNN_HOST_CHUNK;
            if (m->ops->read(m->ctx, bufs[k], start, n, chunk) != GPURNN_OK)
                return gpurnn_fail(status, "%s", message);
            for (size_t i = 0; i < n; i++) {
                if (!(fabs(chunk[i]) <= fabs(value[k]))) { /* a NaN is kept too */
                    value[k] = chunk[i];
                    where[k] = start + i;
                }
            }
        }
    }
    char param[64], state[64];
    gpurnn_layout_describe(&m->layout, where[0], param, sizeof param);
    gpurnn_layout_describe_state(&m->layout, (size_t)m->cfg.batch_size, where[1], state, sizeof state);
    return gpurnn_fail(status, "%s; largest parameter %s = %g, largest carried-state value %g at %s", message,
                       param, value[0], value[1], state);
}

gpurnn_status gpurnn_forward(gpurnn_model *m, const int32_t *inputs, const int32_t *targets, int T,
                             double *loss)
{
    gpurnn_status s = gpurnn_check_sequence("gpurnn_forward", m, inputs, targets, T);
    if (s != GPURNN_OK) return s;
    if (!loss) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_forward: loss is NULL");
    double value = 0;
    s = m->ops->forward(m->ctx, inputs, targets, T, &value);
    m->forward_valid = s == GPURNN_OK;
    if (s == GPURNN_ERR_NUMERIC) s = append_magnitudes(m, s);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, "gpurnn_forward");
    *loss = value;
    return GPURNN_OK;
}

gpurnn_status gpurnn_backward(gpurnn_model *m)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_backward: model is NULL");
    if (!m->forward_valid)
        return gpurnn_fail(GPURNN_ERR_INVALID_STATE,
                           "gpurnn_backward: no forward pass to backpropagate (none since the model "
                           "was created or loaded, or the parameters changed after it, or it failed)");
    gpurnn_status s = m->ops->backward(m->ctx);
    return s == GPURNN_OK ? s : gpurnn_fail_context(s, "gpurnn_backward");
}

gpurnn_status gpurnn_zero_grad(gpurnn_model *m)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_zero_grad: model is NULL");
    return m->ops->fill_zero(m->ctx, GPURNN_BUF_GRADS);
}

gpurnn_status gpurnn_clip_grad_value(gpurnn_model *m, double limit)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_clip_grad_value: model is NULL");
    if (!isfinite(limit) || limit < 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "gpurnn_clip_grad_value: limit = %g must be finite and >= 0", limit);
    return m->ops->grad_clamp(m->ctx, limit);
}

/* Names the first gradient entry that is not finite, for a NUMERIC message. */
static void describe_first_nonfinite_grad(const gpurnn_model *m, char *buf, size_t cap)
{
    double chunk[GPURNN_HOST_CHUNK];
    for (size_t start = 0; start < m->param_count; start += GPURNN_HOST_CHUNK) {
        size_t n = m->param_count - start < GPURNN_HOST_CHUNK ? m->param_count - start
                                                              : GPURNN_HOST_CHUNK;
        if (m->ops->read(m->ctx, GPURNN_BUF_GRADS, start, n, chunk) != GPURNN_OK) break;
        size_t bad;
        if (first_nonfinite(chunk, n, GPURNN_F64, &bad) != GPURNN_OK) {
            char where[64];
            gpurnn_layout_describe(&m->layout, start + bad, where, sizeof where);
            snprintf(buf, cap, "the gradient of %s is %g", where, chunk[bad]);
            return;
        }
    }
    snprintf(buf, cap, "the sum of squared gradients overflows");
}

gpurnn_status gpurnn_clip_grad_norm(gpurnn_model *m, double max_norm, double *norm_before)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_clip_grad_norm: model is NULL");
    if (!isfinite(max_norm) || max_norm < 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "gpurnn_clip_grad_norm: max_norm = %g must be finite and >= 0", max_norm);
    double sumsq = 0;
    gpurnn_status s = m->ops->grad_sumsq(m->ctx, &sumsq);
    if (s != GPURNN_OK) return s;
    double norm = sqrt(sumsq);
    if (!isfinite(norm)) {
        char why[128];
        describe_first_nonfinite_grad(m, why, sizeof why);
        return gpurnn_fail(GPURNN_ERR_NUMERIC,
                           "gpurnn_clip_grad_norm: the gradient norm is not finite (%s); nothing "
                           "was scaled",
                           why);
    }
    /* torch.nn.utils.clip_grad_norm_'s rule, so results match PyTorch's. */
    double coef = max_norm / (norm + 1e-6);
    if (coef < 1) {
        s = m->ops->grad_scale(m->ctx, coef);
        if (s != GPURNN_OK) return s;
    }
    if (norm_before) *norm_before = norm;
    return GPURNN_OK;
}

static const char *optimizer_name(gpurnn_optimizer_kind k)
{
    switch (k) {
    case GPURNN_SGD: return "SGD";
    case GPURNN_ADAGRAD: return "Adagrad";
    case GPURNN_ADAM: return "Adam";
    }
    return "?";
}

/* Checks the hyper-parameters and fills defaults and Adam's bias corrections. */
static gpurnn_status resolve_update_rule(const gpurnn_model *m, const gpurnn_optimizer *opt,
                                         gpurnn_update_rule *rule)
{
    const char *fn = "gpurnn_step";
    if (opt->kind != GPURNN_SGD && opt->kind != GPURNN_ADAGRAD && opt->kind != GPURNN_ADAM)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: kind = %d is not GPURNN_SGD, GPURNN_ADAGRAD or GPURNN_ADAM", fn,
                           (int)opt->kind);
    if (!isfinite(opt->learning_rate) || opt->learning_rate < 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: learning_rate = %g must be finite and >= 0",
                           fn, opt->learning_rate);
    if (!(opt->momentum >= 0 && opt->momentum < 1))
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: momentum = %g is outside [0, 1)", fn,
                           opt->momentum);
    if (!(opt->beta1 >= 0 && opt->beta1 < 1))
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: beta1 = %g is outside [0, 1)", fn,
                           opt->beta1);
    if (!(opt->beta2 >= 0 && opt->beta2 < 1))
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: beta2 = %g is outside [0, 1)", fn,
                           opt->beta2);
    if (!isfinite(opt->eps) || opt->eps < 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: eps = %g must be finite and >= 0", fn,
                           opt->eps);
    if (m->optimizer_started && opt->kind != m->optimizer_kind)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: kind is %s, but the optimizer state belongs to %s; call "
                           "gpurnn_optimizer_reset to switch",
                           fn, optimizer_name(opt->kind), optimizer_name(m->optimizer_kind));
    rule->kind = opt->kind;
    rule->learning_rate = opt->learning_rate;
    rule->momentum = opt->momentum;
    rule->beta1 = opt->beta1 != 0 ? opt->beta1 : 0.9;
    rule->beta2 = opt->beta2 != 0 ? opt->beta2 : 0.999;
    rule->eps = opt->eps != 0 ? opt->eps : 1e-8;
    double t = (double)(m->optimizer_steps + 1);
    rule->bias_correction1 = 1 - pow(rule->beta1, t);
    rule->bias_correction2 = 1 - pow(rule->beta2, t);
    return GPURNN_OK;
}

gpurnn_status gpurnn_step(gpurnn_model *m, const gpurnn_optimizer *opt)
{
    if (!m || !opt)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_step: %s is NULL",
                           !m ? "model" : "optimizer");
    gpurnn_update_rule rule;
    gpurnn_status s = resolve_update_rule(m, opt, &rule);
    if (s != GPURNN_OK) return s;
    size_t bad = 0;
    s = m->ops->step(m->ctx, &rule, &bad);
    if (s == GPURNN_ERR_NUMERIC) {
        char where[64];
        double g = NAN;
        gpurnn_layout_describe(&m->layout, bad, where, sizeof where);
        m->ops->read(m->ctx, GPURNN_BUF_GRADS, bad, 1, &g);
        return gpurnn_fail(GPURNN_ERR_NUMERIC,
                           "gpurnn_step: the update of %s is not finite (gradient %g); no parameter "
                           "or optimizer state was changed",
                           where, g);
    }
    if (s != GPURNN_OK) return gpurnn_fail_context(s, "gpurnn_step");
    m->optimizer_started = 1;
    m->optimizer_kind = opt->kind;
    m->optimizer_steps++;
    m->forward_valid = 0;
    return GPURNN_OK;
}

gpurnn_status gpurnn_optimizer_reset(gpurnn_model *m)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "gpurnn_optimizer_reset: model is NULL");
    gpurnn_status s = m->ops->fill_zero(m->ctx, GPURNN_BUF_OPT0);
    if (s == GPURNN_OK) s = m->ops->fill_zero(m->ctx, GPURNN_BUF_OPT1);
    if (s != GPURNN_OK) return s;
    m->optimizer_started = 0;
    m->optimizer_steps = 0;
    return GPURNN_OK;
}

/* The draw count and temperature of gpurnn_sample and gpurnn_sample_batch. */
static gpurnn_status check_draws(const char *fn, int n, double temperature)
{
    if (n < 1) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: n = %d must be >= 1", fn, n);
    if (!isfinite(temperature) || temperature < 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: temperature = %g must be finite and >= 0",
                           fn, temperature);
    return GPURNN_OK;
}

gpurnn_status gpurnn_sample(gpurnn_model *m, int32_t first_token, int n, double temperature,
                            unsigned long long seed, int32_t *out)
{
    const char *fn = "gpurnn_sample";
    if (!m || !out)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !m ? "model" : "out");
    if (first_token < 0 || first_token >= m->cfg.vocab_size)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: first_token %d is outside [0, %d)", fn,
                           (int)first_token, m->cfg.vocab_size);
    gpurnn_status checked = check_draws(fn, n, temperature);
    if (checked != GPURNN_OK) return checked;
    gpurnn_status s = m->ops->sample(m->ctx, first_token, n, temperature, seed, out);
    if (s == GPURNN_ERR_NUMERIC) s = append_magnitudes(m, s);
    return s == GPURNN_OK ? s : gpurnn_fail_context(s, fn);
}

/* ---- using a trained model ------------------------------------------------------- */

gpurnn_status gpurnn_infer(gpurnn_model *m, const int32_t *inputs, int T, gpurnn_infer_output what,
                           gpurnn_prob_kind kind, double *out, size_t out_count)
{
    const char *fn = "gpurnn_infer";
    gpurnn_status s = check_inputs(fn, m, inputs, T);
    if (s != GPURNN_OK) return s;
    if (what != GPURNN_INFER_NONE && what != GPURNN_INFER_LAST && what != GPURNN_INFER_EACH_STEP)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: what = %d is not GPURNN_INFER_NONE, _LAST or _EACH_STEP", fn, (int)what);
    if (kind != GPURNN_PROBS && kind != GPURNN_LOG_PROBS)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: kind = %d is not GPURNN_PROBS or GPURNN_LOG_PROBS",
                           fn, (int)kind);
    /* B*V is the size of buffers allocated at creation; T*B*V may not fit a size_t, and
     * then no out_count can be right */
    const size_t per_step = (size_t)m->cfg.batch_size * (size_t)m->cfg.vocab_size;
    const size_t all_steps = (size_t)T > SIZE_MAX / per_step ? SIZE_MAX : (size_t)T * per_step;
    const size_t required = what == GPURNN_INFER_NONE ? 0 : what == GPURNN_INFER_LAST ? per_step : all_steps;
    if (out_count != required)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: out_count = %zu, but %s needs %zu values (%s)", fn, out_count,
                           what == GPURNN_INFER_NONE ? "GPURNN_INFER_NONE"
                           : what == GPURNN_INFER_LAST ? "GPURNN_INFER_LAST"
                                                       : "GPURNN_INFER_EACH_STEP",
                           required,
                           what == GPURNN_INFER_NONE ? "none" : what == GPURNN_INFER_LAST ? "B*V" : "T*B*V");
    if (required > 0 && !out) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    s = m->ops->infer(m->ctx, inputs, NULL, T, what, kind, out, NULL);
    if (s == GPURNN_ERR_NUMERIC) s = append_magnitudes(m, s);
    return s == GPURNN_OK ? s : gpurnn_fail_context(s, fn);
}

gpurnn_status gpurnn_score(gpurnn_model *m, const int32_t *inputs, const int32_t *targets, int T,
                           double *log_likelihood)
{
    const char *fn = "gpurnn_score";
    gpurnn_status s = gpurnn_check_sequence(fn, m, inputs, targets, T);
    if (s != GPURNN_OK) return s;
    if (!log_likelihood) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: log_likelihood is NULL", fn);
    double total = 0;
    s = m->ops->infer(m->ctx, inputs, targets, T, GPURNN_INFER_NONE, GPURNN_LOG_PROBS, NULL, &total);
    if (s == GPURNN_ERR_NUMERIC) s = append_magnitudes(m, s);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, fn);
    *log_likelihood = total;
    return GPURNN_OK;
}

gpurnn_status gpurnn_sample_batch(gpurnn_model *m, const int32_t *first_tokens, int n, double temperature,
                                  unsigned long long seed, int32_t *out)
{
    const char *fn = "gpurnn_sample_batch";
    if (!m || !first_tokens || !out)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                           !m ? "model" : !first_tokens ? "first_tokens" : "out");
    for (int b = 0; b < m->cfg.batch_size; b++)
        if (first_tokens[b] < 0 || first_tokens[b] >= m->cfg.vocab_size)
            return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: first_tokens[%d] = %d (b=%d) is outside [0, %d)",
                               fn, b, (int)first_tokens[b], b, m->cfg.vocab_size);
    gpurnn_status checked = check_draws(fn, n, temperature);
    if (checked != GPURNN_OK) return checked;
    gpurnn_status s = m->ops->sample_batch(m->ctx, first_tokens, n, temperature, seed, out);
    if (s == GPURNN_ERR_NUMERIC) s = append_magnitudes(m, s);
    return s == GPURNN_OK ? s : gpurnn_fail_context(s, fn);
}
