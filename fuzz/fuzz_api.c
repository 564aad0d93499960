/* libFuzzer target: the public API driven by arbitrary bytes (CPU backend).
 *
 * The bytes decode into a small configuration (V, H, B in 1..8, max_seq_len 1..16,
 * dtype, reduction, seed, init_scale; now and then an out-of-range size, enum or scale),
 * then into up to 64 API calls with arguments taken from the bytes: forward (T and
 * tokens, sometimes out of range), backward, zero_grad, clipping and optimizer steps
 * with arbitrary doubles (NaN, inf, negative, huge), sampling, state and parameter
 * get/set with arbitrary values and lengths, gradcheck, optimizer and state resets, and
 * a save/load round trip.
 *
 * Invariants (a violation aborts, which libFuzzer reports with the input):
 *  - every call returns a known status, and a failed call leaves a message;
 *  - a failed call changes nothing observable (parameters, gradients, carried state);
 *  - parameters are finite after every successful call;
 *  - backward succeeds exactly when there is a forward pass to backpropagate (a
 *    successful forward, and since then no params_set, step or gradcheck and no forward
 *    that ran and failed; a call refused for its arguments changes nothing);
 *  - forward's loss is finite and >= 0; sampled tokens lie in [0, V);
 *  - a saved model loads back with the same parameters and state.
 */
#include <float.h>

#include "fuzz_common.h"

typedef struct {
    const uint8_t *p;
    size_t n;
} bytes;

static uint8_t u8(bytes *b)
{
    if (!b->n) return 0;
    b->n--;
    return *b->p++;
}

static uint32_t u32(bytes *b)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)u8(b) << (8 * i);
    return v;
}

static uint64_t u64(bytes *b) { return (uint64_t)u32(b) | (uint64_t)u32(b) << 32; }

/* Mostly values that matter (zero, signs, limits, specials, typical hyperparameters),
 * otherwise any bit pattern. */
static double any_double(bytes *b)
{
    static const double table[] = {0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 0.01, 1e-3, 1e-8, 0.9,
                                   0.999, 1.0 - DBL_EPSILON, 2.0, 5.0, 100.0, 1e30, 1e300,
                                   -1e300, DBL_MAX, DBL_MIN, 4.9e-324, -1e-8, NAN, -NAN,
                                   INFINITY, -INFINITY, 3.4e38, 3.5e38, 1e-45, 1e-40};
    enum { N = sizeof table / sizeof table[0] };
    uint8_t sel = u8(b);
    if (sel < 4 * N) return table[sel % N];
    uint64_t bits = u64(b);
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* A small in-range value, or (when the top bit of the byte is set) anything from -128..127. */
static int small_int(bytes *b, int lo, int hi)
{
    uint8_t v = u8(b);
    if (v & 0x80) return (int)(int8_t)v;
    return lo + v % (hi - lo + 1);
}

/* Everything observable that a failed call must leave alone. */
typedef struct {
    double *params, *grads, *state;
} snapshot;

static void snap(const gpurnn_model *m, size_t np, size_t ns, snapshot *s)
{
    FUZZ_CHECK(gpurnn_params_get(m, s->params, np) == GPURNN_OK, "params_get");
    FUZZ_CHECK(gpurnn_grads_get(m, s->grads, np) == GPURNN_OK, "grads_get");
    FUZZ_CHECK(gpurnn_state_get(m, s->state, ns) == GPURNN_OK, "state_get");
}

static int same_bits(const double *a, const double *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

enum { OP_FORWARD, OP_BACKWARD, OP_ZERO_GRAD, OP_CLIP_NORM, OP_CLIP_VALUE, OP_STEP, OP_SAMPLE,
       OP_STATE_GET, OP_STATE_SET, OP_PARAMS_SET, OP_GRADCHECK, OP_OPT_RESET, OP_STATE_RESET,
       OP_GET_WRONG_N, OP_SAVE_LOAD, OP_COUNT };

static const char *const op_names[OP_COUNT] = {
    "forward", "backward", "zero_grad", "clip_grad_norm", "clip_grad_value", "step", "sample",
    "state_get", "state_set", "params_set", "gradcheck", "optimizer_reset", "state_reset",
    "get with a wrong n", "save/load"};

/* T from the bytes (sometimes outside [1, max_seq_len]) and 2*T*B tokens (sometimes out
 * of range). Returns the token buffer (inputs, then targets), never NULL. */
static int32_t *tokens(bytes *b, const gpurnn_config *cfg, int *T_out)
{
    int T = small_int(b, 1, cfg->max_seq_len);
    if (T > cfg->max_seq_len + 2) T = cfg->max_seq_len + 2;
    size_t n = T > 0 ? (size_t)T * (size_t)cfg->batch_size : 1;
    int32_t *tok = malloc(2 * n * sizeof *tok);
    FUZZ_CHECK(tok != NULL, "out of memory in the harness");
    int wild = u8(b) < 16; /* now and then, tokens from anywhere in int32 */
    for (size_t i = 0; i < 2 * n; i++)
        tok[i] = wild && u8(b) < 32 ? (int32_t)u32(b) : (int32_t)(u8(b) % cfg->vocab_size);
    *T_out = T;
    return tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bytes b = {data, size};
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = small_int(&b, 1, 8);
    cfg.hidden_size = small_int(&b, 1, 8);
    cfg.batch_size = small_int(&b, 1, 8);
    cfg.max_seq_len = small_int(&b, 1, 16);
    uint8_t flags = u8(&b);
    cfg.dtype = (flags & 0x40) ? (gpurnn_dtype)(flags & 0x7) : (gpurnn_dtype)(flags & 1);
    cfg.reduction =
        (flags & 0x80) ? (gpurnn_loss_reduction)((flags >> 3) & 0x7) : (gpurnn_loss_reduction)((flags >> 1) & 1);
    cfg.backend = GPURNN_BACKEND_CPU;
    cfg.seed = u64(&b);
    /* checkpointed BPTT too: keep-all, automatic, k = 1..3 (taken from the seed's bits so
     * that the committed corpus decodes as before) */
    cfg.bptt_checkpoint_every = (int)(cfg.seed % 5) - 1;
    uint8_t scale = u8(&b);
    cfg.init_scale = scale < 200 ? scale / 100.0 : any_double(&b);

    gpurnn_model *m = NULL;
    gpurnn_status s = FUZZ_CALL(gpurnn_model_create(&cfg, &m));
    int in_range = cfg.vocab_size >= 1 && cfg.hidden_size >= 1 && cfg.batch_size >= 1 &&
                   cfg.max_seq_len >= 1 && (unsigned)cfg.dtype <= 1 &&
                   (unsigned)cfg.reduction <= 1 && isfinite(cfg.init_scale) &&
                   cfg.init_scale >= 0 &&
                   /* weights N(0,1) * init_scale must stay finite (|N(0,1)| < 9) */
                   cfg.init_scale <= (cfg.dtype == GPURNN_F64 ? DBL_MAX : FLT_MAX) / 9.0;
    FUZZ_CHECK((s == GPURNN_OK) == in_range, "create returned %s for V=%d H=%d B=%d T=%d dtype=%d "
               "reduction=%d init_scale=%g", gpurnn_status_string(s), cfg.vocab_size,
               cfg.hidden_size, cfg.batch_size, cfg.max_seq_len, (int)cfg.dtype,
               (int)cfg.reduction, cfg.init_scale);
    if (s != GPURNN_OK) {
        FUZZ_CHECK(m == NULL, "failed create set *out");
        return 0;
    }
    fuzz_check_params_finite(m, "create");

    const size_t np = gpurnn_param_count(m), ns = (size_t)cfg.batch_size * cfg.hidden_size;
    snapshot before, after;
    double *buf = malloc((np + ns + 2) * sizeof *buf);
    double *mem = malloc(2 * (2 * np + ns) * sizeof *mem);
    FUZZ_CHECK(buf && mem, "out of memory in the harness");
    before = (snapshot){mem, mem + np, mem + 2 * np};
    after = (snapshot){mem + 2 * np + ns, mem + 3 * np + ns, mem + 4 * np + ns};
    int have_forward = 0; /* 1 yes, 0 no, -1 unknown */

    for (int call = 0; call < 64 && b.n > 0; call++) {
        int op = u8(&b) % OP_COUNT;
        snap(m, np, ns, &before);
        int T = 0;
        int32_t *tok = NULL;
        double loss = -1, norm = -1;
        switch (op) {
        case OP_FORWARD:
            tok = tokens(&b, &cfg, &T);
            s = FUZZ_CALL(gpurnn_forward(m, tok, tok + (T > 0 ? (size_t)T * cfg.batch_size : 1),
                                         T, &loss));
            if (s == GPURNN_OK) FUZZ_CHECK(isfinite(loss) && loss >= 0, "loss %g", loss);
            /* a forward that runs and fails (NUMERIC) leaves no pass to backpropagate; one
             * refused for its arguments changes nothing */
            if (s != GPURNN_ERR_INVALID_ARGUMENT) have_forward = s == GPURNN_OK;
            break;
        case OP_BACKWARD:
            s = FUZZ_CALL(gpurnn_backward(m));
            FUZZ_CHECK(have_forward < 0   ? s == GPURNN_OK || s == GPURNN_ERR_NUMERIC ||
                                                  s == GPURNN_ERR_INVALID_STATE
                       : have_forward ? s == GPURNN_OK || s == GPURNN_ERR_NUMERIC
                                      : s == GPURNN_ERR_INVALID_STATE,
                       "backward returned %s with%s a forward pass to backpropagate",
                       gpurnn_status_string(s), have_forward ? "" : "out");
            if (s == GPURNN_OK) have_forward = 1;
            break;
        case OP_ZERO_GRAD: s = FUZZ_CALL(gpurnn_zero_grad(m)); break;
        case OP_CLIP_NORM: {
            double max_norm = any_double(&b);
            s = FUZZ_CALL(gpurnn_clip_grad_norm(m, max_norm, (u8(&b) & 1) ? &norm : NULL));
            break;
        }
        case OP_CLIP_VALUE: s = FUZZ_CALL(gpurnn_clip_grad_value(m, any_double(&b))); break;
        case OP_STEP: {
            gpurnn_optimizer opt;
            memset(&opt, 0, sizeof opt);
            uint8_t k = u8(&b);
            opt.kind = (gpurnn_optimizer_kind)(k < 240 ? k % 3 : (int)(int8_t)k);
            opt.learning_rate = any_double(&b);
            uint8_t which = u8(&b); /* which of the others to set; unset ones mean defaults */
            if (which & 1) opt.momentum = any_double(&b);
            if (which & 2) opt.beta1 = any_double(&b);
            if (which & 4) opt.beta2 = any_double(&b);
            if (which & 8) opt.eps = any_double(&b);
            s = FUZZ_CALL(gpurnn_step(m, &opt));
            if (s == GPURNN_OK) have_forward = 0;
            break;
        }
        case OP_SAMPLE: {
            int32_t first = u8(&b) < 32 ? (int32_t)u32(&b) : (int32_t)(u8(&b) % cfg.vocab_size);
            int n = small_int(&b, 1, 20);
            double temperature = any_double(&b);
            unsigned long long seed = u64(&b);
            int32_t out[32];
            s = FUZZ_CALL(gpurnn_sample(m, first, n, temperature, seed, out));
            if (s == GPURNN_OK)
                for (int i = 0; i < n; i++)
                    FUZZ_CHECK(out[i] >= 0 && out[i] < cfg.vocab_size, "sampled token %d at %d",
                               out[i], i);
            break;
        }
        case OP_STATE_GET: s = FUZZ_CALL(gpurnn_state_get(m, buf, ns)); break;
        case OP_STATE_SET:
        case OP_PARAMS_SET: {
            size_t want = op == OP_STATE_SET ? ns : np;
            uint8_t len = u8(&b); /* now and then one value too many or too few */
            size_t n = len == 0xff ? want + 1 : len == 0xfe ? want - 1 : want;
            uint8_t wild = u8(&b);
            for (size_t i = 0; i < n; i++)
                buf[i] = wild < 64 ? any_double(&b) : ((int)u8(&b) - 128) / 64.0;
            s = op == OP_STATE_SET ? FUZZ_CALL(gpurnn_state_set(m, buf, n))
                                   : FUZZ_CALL(gpurnn_params_set(m, buf, n));
            if (s == GPURNN_OK && op == OP_PARAMS_SET) have_forward = 0;
            break;
        }
        case OP_GRADCHECK: {
            tok = tokens(&b, &cfg, &T);
            double eps = u8(&b) < 200 ? 1e-3 : any_double(&b);
            int samples = small_int(&b, 1, 3);
            unsigned long long seed = u64(&b);
            gpurnn_gradcheck_result r;
            s = FUZZ_CALL(gpurnn_gradcheck(m, tok, tok + (T > 0 ? (size_t)T * cfg.batch_size : 1),
                                           T, eps, samples, seed, &r));
            if (s == GPURNN_OK) {
                have_forward = 0; /* used up */
                snap(m, np, ns, &after);
                FUZZ_CHECK(same_bits(before.params, after.params, np) &&
                               same_bits(before.grads, after.grads, np) &&
                               same_bits(before.state, after.state, ns),
                           "gradcheck changed the model");
            } else if (s != GPURNN_ERR_INVALID_ARGUMENT) {
                have_forward = -1; /* not documented either way */
            }
            break;
        }
        case OP_OPT_RESET: s = FUZZ_CALL(gpurnn_optimizer_reset(m)); break;
        case OP_STATE_RESET: s = FUZZ_CALL(gpurnn_state_reset(m)); break;
        case OP_GET_WRONG_N: {
            size_t n = np + 1 + u8(&b) % 3;
            s = FUZZ_CALL(gpurnn_params_get(m, buf, n > np + ns ? np - 1 : n));
            FUZZ_CHECK(s == GPURNN_ERR_INVALID_ARGUMENT, "params_get with a wrong n: %s",
                       gpurnn_status_string(s));
            break;
        }
        case OP_SAVE_LOAD: {
            char path[300];
            snprintf(path, sizeof path, "%s/api.ckpt", fuzz_scratch_dir());
            s = FUZZ_CALL(gpurnn_model_save(m, path));
            if (s == GPURNN_OK) {
                gpurnn_model *l = NULL;
                gpurnn_status ls = FUZZ_CALL(gpurnn_model_load(path, GPURNN_BACKEND_CPU, &l));
                FUZZ_CHECK(ls == GPURNN_OK, "a saved model does not load");
                snap(l, np, ns, &after);
                FUZZ_CHECK(same_bits(before.params, after.params, np) &&
                               same_bits(before.state, after.state, ns),
                           "the loaded model differs from the saved one");
                gpurnn_model_destroy(l);
            }
            break;
        }
        }
        free(tok);
        if (s == GPURNN_OK) {
            fuzz_check_params_finite(m, op_names[op]);
        } else {
            snap(m, np, ns, &after);
            FUZZ_CHECK(same_bits(before.params, after.params, np), "failed %s changed parameters",
                       op_names[op]);
            FUZZ_CHECK(same_bits(before.grads, after.grads, np), "failed %s changed gradients",
                       op_names[op]);
            FUZZ_CHECK(same_bits(before.state, after.state, ns), "failed %s changed the state",
                       op_names[op]);
        }
    }
    free(buf);
    free(mem);
    gpurnn_model_destroy(m);
    return 0;
}
