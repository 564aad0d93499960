/* Central-difference gradient check. It saves what it disturbs (parameters, gradients,
 * carried state) in host float64, which holds float32 and float64 values exactly, and
 * writes them back bit for bit at the end, on success and on failure alike. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "model.h"
#include "rng.h"

typedef struct {
    double *params, *grads, *state;
} saved_buffers;

static void free_saved(saved_buffers *saved)
{
    gpurnn_free(saved->params);
    gpurnn_free(saved->grads);
    gpurnn_free(saved->state);
}

static gpurnn_status save_buffers(const gpurnn_model *m, saved_buffers *saved)
{
    saved->params = gpurnn_malloc(m->param_count * sizeof(double));
    saved->grads = gpurnn_malloc(m->param_count * sizeof(double));
    saved->state = gpurnn_malloc(m->state_count * sizeof(double));
    if (!saved->params || !saved->grads || !saved->state) {
        free_saved(saved);
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY,
                           "cannot allocate %zu bytes to save the model's buffers",
                           (2 * m->param_count + m->state_count) * sizeof(double));
    }
    gpurnn_status s = m->ops->read(m->ctx, GPURNN_BUF_PARAMS, 0, m->param_count, saved->params);
    if (s == GPURNN_OK) s = m->ops->read(m->ctx, GPURNN_BUF_GRADS, 0, m->param_count, saved->grads);
    if (s == GPURNN_OK) s = m->ops->read(m->ctx, GPURNN_BUF_STATE, 0, m->state_count, saved->state);
    if (s != GPURNN_OK) free_saved(saved);
    return s;
}

static gpurnn_status restore_buffers(gpurnn_model *m, const saved_buffers *saved)
{
    gpurnn_status s = m->ops->write(m->ctx, GPURNN_BUF_PARAMS, 0, m->param_count, saved->params);
    gpurnn_status s2 = m->ops->write(m->ctx, GPURNN_BUF_GRADS, 0, m->param_count, saved->grads);
    gpurnn_status s3 = m->ops->write(m->ctx, GPURNN_BUF_STATE, 0, m->state_count, saved->state);
    return s != GPURNN_OK ? s : (s2 != GPURNN_OK ? s2 : s3);
}

/* Loss from the saved carried state with parameter i set to value; reports the value as
 * stored (rounded to the model's dtype) through *stored. */
static gpurnn_status loss_at(gpurnn_model *m, const saved_buffers *saved, const int32_t *inputs,
                             const int32_t *targets, int T, size_t i, double value, double *stored,
                             double *loss)
{
    gpurnn_status s = m->ops->write(m->ctx, GPURNN_BUF_PARAMS, i, 1, &value);
    if (s == GPURNN_OK) s = m->ops->read(m->ctx, GPURNN_BUF_PARAMS, i, 1, stored);
    if (s == GPURNN_OK) s = m->ops->write(m->ctx, GPURNN_BUF_STATE, 0, m->state_count, saved->state);
    if (s == GPURNN_OK) s = m->ops->forward(m->ctx, inputs, targets, T, loss);
    return s;
}

/* What one tensor's entries gave: the public report, and for gpurnn_gradcheck the
 * plain largest relative error over every entry (no round-off floor). */
typedef struct {
    gpurnn_gradcheck_tensor report;
    double max_plain_rel_error;
    double worst_excess;        /* |a-n| / max(atol, RTOL*max(|a|,|n|)) at worst_index */
} tensor_check;

static double unit_roundoff(gpurnn_dtype dtype)
{
    return dtype == GPURNN_F64 ? 0x1p-53 : 0x1p-24;
}

/* Scores one entry; a NaN anywhere fails it and stays visible in the errors. */
static void score_entry(tensor_check *tc, size_t index, double a, double n, double atol)
{
    gpurnn_gradcheck_tensor *r = &tc->report;
    double diff = fabs(a - n);
    double scale = fmax(fabs(a), fabs(n));
    double plain_rel = scale == 0 ? 0 : diff / scale;
    if (isnan(a) || isnan(n)) diff = plain_rel = NAN;
    if (!(plain_rel <= tc->max_plain_rel_error)) tc->max_plain_rel_error = plain_rel;
    if (!(diff <= r->max_abs_error)) r->max_abs_error = diff;
    if (!(atol <= r->max_atol)) r->max_atol = atol;
    if (!(scale < atol / GPURNN_GRADCHECK_RTOL) && !(plain_rel <= r->max_rel_error))
        r->max_rel_error = plain_rel;
    const int passes = diff <= atol || diff <= GPURNN_GRADCHECK_RTOL * scale;
    if (!passes) r->failed++;
    double excess = diff / fmax(atol, GPURNN_GRADCHECK_RTOL * scale);
    if (isnan(excess)) excess = INFINITY;
    if (r->checked == 0 || excess > tc->worst_excess) {
        tc->worst_excess = excess;
        r->worst_index = index;
        r->worst_analytic = a;
        r->worst_numeric = n;
    }
    r->checked++;
}

static gpurnn_status run_check(gpurnn_model *m, const saved_buffers *saved, const int32_t *inputs,
                               const int32_t *targets, int T, double eps, int samples,
                               unsigned long long seed, double *analytic, tensor_check *checks)
{
    double loss;
    gpurnn_status s = m->ops->fill_zero(m->ctx, GPURNN_BUF_GRADS);
    if (s == GPURNN_OK) s = m->ops->forward(m->ctx, inputs, targets, T, &loss);
    if (s == GPURNN_OK) s = m->ops->backward(m->ctx);
    if (s == GPURNN_OK) s = m->ops->read(m->ctx, GPURNN_BUF_GRADS, 0, m->param_count, analytic);
    if (s != GPURNN_OK) return s;

    const double u = unit_roundoff(m->cfg.dtype);
    for (size_t t = 0; t < m->layout.tensor_count; t++) {
        gpurnn_tensor_info info;
        gpurnn_layout_tensor(&m->layout, t, &info);
        size_t offset = info.offset, size = info.size;
        size_t count = size < (size_t)samples ? size : (size_t)samples;
        tensor_check *tc = &checks[t];
        memset(tc, 0, sizeof *tc);
        for (size_t k = 0; k < count; k++) {
            size_t local = size <= (size_t)samples
                               ? k
                               : (size_t)(gpurnn_random_bits(seed, GPURNN_STREAM_GRADCHECK,
                                                             (uint64_t)t << 32 | k) %
                                          size);
            size_t i = offset + local;
            double w = saved->params[i], w_plus, w_minus, l_plus, l_minus;
            s = loss_at(m, saved, inputs, targets, T, i, w + eps, &w_plus, &l_plus);
            if (s == GPURNN_OK)
                s = loss_at(m, saved, inputs, targets, T, i, w - eps, &w_minus, &l_minus);
            if (s == GPURNN_OK)
                s = m->ops->write(m->ctx, GPURNN_BUF_PARAMS, i, 1, &saved->params[i]);
            if (s != GPURNN_OK) return s;
            /* eps below the weight's spacing in the dtype leaves w+ == w-: no difference
             * can be formed, and the entry fails rather than dividing by zero */
            double step = w_plus - w_minus;
            double numeric = step > 0 ? (l_plus - l_minus) / step : NAN;
            double atol = GPURNN_GRADCHECK_ROUNDOFF * u *
                          fmax(fmax(fabs(l_plus), fabs(l_minus)), 1.0) / step;
            score_entry(tc, i, analytic[i], numeric, step > 0 ? atol : 0);
        }
    }
    return GPURNN_OK;
}

/* The shared body of both checks: validates, saves, checks, restores. checks holds
 * one entry per tensor of m. */
static gpurnn_status check_model(const char *fn, gpurnn_model *m, const int32_t *inputs,
                                 const int32_t *targets, int T, double eps, int samples_per_tensor,
                                 unsigned long long seed, tensor_check *checks)
{
    saved_buffers saved = {0};
    gpurnn_status s = save_buffers(m, &saved);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, fn);
    double *analytic = gpurnn_malloc(m->param_count * sizeof(double));
    if (!analytic) {
        free_saved(&saved);
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", fn,
                           m->param_count * sizeof(double));
    }
    s = run_check(m, &saved, inputs, targets, T, eps, samples_per_tensor, seed, analytic, checks);
    gpurnn_status restored = restore_buffers(m, &saved);
    m->forward_valid = 0;
    gpurnn_free(analytic);
    free_saved(&saved);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, fn);
    if (restored != GPURNN_OK) return gpurnn_fail_context(restored, fn);
    return GPURNN_OK;
}

static gpurnn_status check_arguments(const char *fn, const gpurnn_model *m, const int32_t *inputs,
                                     const int32_t *targets, int T, double eps,
                                     int samples_per_tensor, const void *out)
{
    gpurnn_status s = gpurnn_check_sequence(fn, m, inputs, targets, T);
    if (s != GPURNN_OK) return s;
    if (!out) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!isfinite(eps) || eps <= 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: eps = %g must be finite and > 0", fn, eps);
    if (samples_per_tensor < 1)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: samples_per_tensor = %d must be >= 1",
                           fn, samples_per_tensor);
    return GPURNN_OK;
}

gpurnn_status gpurnn_gradcheck(gpurnn_model *m, const int32_t *inputs, const int32_t *targets,
                               int T, double eps, int samples_per_tensor, unsigned long long seed,
                               gpurnn_gradcheck_result *out)
{
    const char *fn = "gpurnn_gradcheck";
    gpurnn_status s = check_arguments(fn, m, inputs, targets, T, eps, samples_per_tensor, out);
    if (s != GPURNN_OK) return s;
    if (m->layout.tensor_count != GPURNN_NUM_TENSORS)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: the model has %zu tensors (%d layers of %s), more than its result holds; "
                           "use gpurnn_gradcheck_tensors",
                           fn, m->layout.tensor_count, m->layout.L, gpurnn_cell_name(m->layout.cell));

    tensor_check checks[GPURNN_NUM_TENSORS];
    s = check_model(fn, m, inputs, targets, T, eps, samples_per_tensor, seed, checks);
    if (s != GPURNN_OK) return s;
    for (int t = 0; t < GPURNN_NUM_TENSORS; t++) {
        out->max_rel_error[t] = checks[t].max_plain_rel_error;
        out->checked[t] = checks[t].report.checked;
    }
    return GPURNN_OK;
}

gpurnn_status gpurnn_gradcheck_tensors(gpurnn_model *m, const int32_t *inputs, const int32_t *targets,
                                       int T, double eps, int samples_per_tensor,
                                       unsigned long long seed, gpurnn_gradcheck_tensor *out,
                                       size_t out_count)
{
    const char *fn = "gpurnn_gradcheck_tensors";
    gpurnn_status s = check_arguments(fn, m, inputs, targets, T, eps, samples_per_tensor, out);
    if (s != GPURNN_OK) return s;
    if (out_count != m->layout.tensor_count)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: out_count = %zu, but the model has %zu tensors (gpurnn_tensor_count)",
                           fn, out_count, m->layout.tensor_count);

    tensor_check *checks = gpurnn_malloc(out_count * sizeof *checks);
    if (!checks)
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", fn,
                           out_count * sizeof *checks);
    s = check_model(fn, m, inputs, targets, T, eps, samples_per_tensor, seed, checks);
    if (s == GPURNN_OK)
        for (size_t t = 0; t < out_count; t++) out[t] = checks[t].report;
    gpurnn_free(checks);
    return s;
}
