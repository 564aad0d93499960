/*
 * gpurnn-charrnn train: the training loop, validation, samples, checkpoints, the log and
 * the plot, and the closing CPU/GPU speed comparison.
 *
 * One step: fill the next window of every stream -> forward (from the carried state) ->
 * backward -> clip the gradient norm -> optimizer step -> zero the gradients. Everything
 * that decides the next step (the model with its optimizer and carried state, the data
 * position, the step, the random generator) is in the checkpoint, so a resumed run takes
 * exactly the steps the uninterrupted one would have.
 */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"
#include "commands.h"
#include "console.h"
#include "corpus.h"
#include "generate.h"
#include "plot.h"
#include "evaluate.h"
#include "streams.h"
#include "text_out.h"
#include "util.h"
#include "vocab.h"

#include <gpurnn.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The smoothed loss of the progress line: an exponential moving average over about the
 * last 10 steps (short, so that it does not lag behind a loss that is falling fast),
 * bias-corrected as Adam's moments are, so that it is right from step 1. */
#define SMOOTHING_DECAY 0.9
#define M_PI_VALUE 3.14159265358979323846 /* M_PI is not in C11 */

static const char *const default_checkpoint = "charrnn.ckpt";

/* ---- Ctrl-C ---------------------------------------------------------------------------- */

static volatile sig_atomic_t stop_requested = 0;

/* Only sets a flag (the loop saves and exits after the current step) and says so, with
 * write(), the one output call a signal handler may make. SA_RESETHAND restores the
 * default action, so a second Ctrl-C ends the program at once. */
static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
    static const char msg[] = "\n[stopping after this step: Ctrl-C again to quit at once]\n";
    ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)ignored;
}

static void install_stop_handlers(void)
{
    struct sigaction sa, previous;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    /* A shell without job control starts background commands with SIGINT ignored, so
     * that Ctrl-C meant for the foreground leaves them running: keep it that way. */
    if (sigaction(SIGINT, NULL, &previous) == 0 && previous.sa_handler != SIG_IGN)
        sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

/* ---- the state of a run ---------------------------------------------------------------- */

typedef struct run {
    const charrnn_options *opt;
    charrnn_console console;
    charrnn_error err;

    charrnn_text text;
    const char *text_name; /* for messages: the path, or "the built-in corpus" */
    int32_t *ids;
    charrnn_split split;
    charrnn_streams train;
    int val_batch; /* streams of the validation model, 0 without validation */

    charrnn_checkpoint ck; /* settings, vocabulary, progress and history */
    const char *checkpoint_path;
    int resumed;

    gpurnn_model *model;      /* the one being trained */
    gpurnn_model *eval_model; /* validation: a copy of the parameters, its own state */
    charrnn_sampler sampler;  /* samples: a B = 1 copy */
    gpurnn_optimizer optimizer;
    int32_t *inputs, *targets;
    size_t param_count;
    double *params;

    FILE *log;
    long long eval_every, sample_every, checkpoint_every;

    double session_start;     /* wall clock when this process began training */
    double elapsed_before;    /* training wall time of earlier sessions (resume) */
    double cpu_before;        /* and their processor time */
    double cpu_start;         /* processor time when this session began training */
    double train_seconds;     /* time in train_step this session, for the rate */
    uint64_t session_steps;
    double last_val;          /* last validation loss, NAN before the first */
} run;

/* ---- setting up -------------------------------------------------------------------------- */

static int load_text(run *r, const char *path)
{
    if (!path) {
        charrnn_text_builtin(&r->text);
        r->text_name = "the built-in corpus";
        return 0;
    }
    r->text_name = path;
    return charrnn_text_read_file(path, &r->text, &r->err);
}

static gpurnn_status create_model(const run *r, int batch, gpurnn_backend backend,
                                  gpurnn_model **out)
{
    const charrnn_run_config *c = &r->ck.config;
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = r->ck.vocab.size;
    cfg.hidden_size = c->hidden;
    cfg.cell = c->cell;
    cfg.num_layers = c->layers;
    cfg.batch_size = batch;
    cfg.max_seq_len = c->seq_len;
    cfg.dtype = c->dtype;
    cfg.backend = backend;
    cfg.reduction = GPURNN_LOSS_MEAN; /* losses in nats per character */
    cfg.seed = c->seed;
    cfg.init_scale = c->init_scale;
    return gpurnn_model_create(&cfg, out);
}

static int start_fresh(run *r)
{
    const charrnn_options *o = r->opt;
    if (load_text(r, o->text_path) != 0)
        return -1;
    charrnn_checkpoint *ck = &r->ck;
    charrnn_vocab_build(&ck->vocab, r->text.bytes, r->text.len);
    charrnn_run_config *c = &ck->config;
    c->hidden = o->hidden;
    c->cell = (gpurnn_cell)o->cell;
    c->layers = o->layers;
    c->batch = o->batch;
    c->seq_len = o->seq_len;
    c->dtype = (gpurnn_dtype)o->dtype;
    c->optimizer = (gpurnn_optimizer_kind)o->optimizer;
    c->learning_rate = o->learning_rate;
    c->learning_rate_final = o->learning_rate_final;
    c->momentum = o->momentum;
    c->clip = o->clip;
    c->init_scale = o->init_scale;
    c->val_fraction = o->val_fraction;
    c->seed = o->seed;
    ck->rng.state = o->seed ^ 0x5A4D504C45524E47ULL; /* its own stream, apart from the weights' */
    ck->text_len = r->text.len;
    ck->text_hash = charrnn_text_hash(r->text.bytes, r->text.len);
    if (o->text_path && strlen(o->text_path) >= sizeof ck->text_source)
        return charrnn_fail(&r->err, "the path %s is too long", o->text_path);
    snprintf(ck->text_source, sizeof ck->text_source, "%s", o->text_path ? o->text_path : "");
    r->checkpoint_path = o->checkpoint_path ? o->checkpoint_path : default_checkpoint;
    return 0;
}

/* The settings a resumed run keeps: each one given on the command line must match. */
static int check_resume_settings(run *r)
{
    const charrnn_options *o = r->opt;
    const charrnn_run_config *c = &r->ck.config;
    const char *path = o->resume_path;
    char given[64], saved[64];
#define MUST_MATCH(bit, name, differs, fmt, given_value, saved_value)                           \
    if ((o->given & (bit)) && (differs)) {                                                      \
        snprintf(given, sizeof given, fmt, given_value);                                        \
        snprintf(saved, sizeof saved, fmt, saved_value);                                        \
        return charrnn_fail(&r->err, "%s %s differs from %s's %s (a resumed run keeps its "    \
                            "settings; leave %s out)", name, given, path, saved, name);         \
    }
    MUST_MATCH(GIVEN_HIDDEN, "--hidden", o->hidden != c->hidden, "%d", o->hidden, c->hidden)
    MUST_MATCH(GIVEN_CELL, "--cell", o->cell != (int)c->cell, "%s", charrnn_cell_name(o->cell),
               charrnn_cell_name((int)c->cell))
    MUST_MATCH(GIVEN_LAYERS, "--layers", o->layers != c->layers, "%d", o->layers, c->layers)
    MUST_MATCH(GIVEN_BATCH, "--batch", o->batch != c->batch, "%d", o->batch, c->batch)
    MUST_MATCH(GIVEN_SEQ_LEN, "--seq-len", o->seq_len != c->seq_len, "%d", o->seq_len, c->seq_len)
    MUST_MATCH(GIVEN_DTYPE, "--dtype", o->dtype != (int)c->dtype, "%s",
               charrnn_dtype_name(o->dtype), charrnn_dtype_name((int)c->dtype))
    MUST_MATCH(GIVEN_OPTIMIZER, "--optimizer", o->optimizer != (int)c->optimizer, "%s",
               charrnn_optimizer_name(o->optimizer), charrnn_optimizer_name((int)c->optimizer))
    MUST_MATCH(GIVEN_MOMENTUM, "--momentum", o->momentum != c->momentum, "%g", o->momentum,
               c->momentum)
    MUST_MATCH(GIVEN_INIT_SCALE, "--init-scale", o->init_scale != c->init_scale, "%g",
               o->init_scale, c->init_scale)
    MUST_MATCH(GIVEN_VAL_FRACTION, "--val-fraction", o->val_fraction != c->val_fraction, "%g",
               o->val_fraction, c->val_fraction)
    MUST_MATCH(GIVEN_SEED, "--seed", o->seed != c->seed, "%llu", o->seed,
               (unsigned long long)c->seed)
#undef MUST_MATCH
    return 0;
}

static int start_resumed(run *r)
{
    const charrnn_options *o = r->opt;
    charrnn_checkpoint *ck = &r->ck;
    if (charrnn_checkpoint_load(o->resume_path, (gpurnn_backend)o->backend, ck, &r->model,
                                &r->err) != 0)
        return -1;
    r->resumed = 1;
    if (!ck->has_training_state)
        return charrnn_fail(&r->err, "%s holds a model and its vocabulary but no training state "
                            "(it was not written by gpurnn-charrnn train): it can be sampled, not "
                            "resumed", o->resume_path);
    if (check_resume_settings(r) != 0)
        return -1;
    if (o->given & GIVEN_LR)
        ck->config.learning_rate = o->learning_rate;
    if (o->given & (GIVEN_LR | GIVEN_LR_FINAL))
        ck->config.learning_rate_final = o->learning_rate_final;
    if (o->given & GIVEN_CLIP)
        ck->config.clip = o->clip;

    /* The text: the one given, else the one the checkpoint was trained on. */
    const char *path = o->text_path ? o->text_path : ck->text_source[0] ? ck->text_source : NULL;
    if (load_text(r, path) != 0)
        return -1;
    charrnn_vocab vocab;
    charrnn_vocab_build(&vocab, r->text.bytes, r->text.len);
    if (!charrnn_vocab_equal(&ck->vocab, &vocab)) {
        char difference[512];
        charrnn_vocab_describe_difference(&ck->vocab, &vocab, difference, sizeof difference);
        return charrnn_fail(&r->err,
                            "%s was trained on another vocabulary: %d characters, while %s has %d "
                            "(%s)", o->resume_path, ck->vocab.size, r->text_name, vocab.size,
                            difference);
    }
    if (ck->text_len != r->text.len ||
        ck->text_hash != charrnn_text_hash(r->text.bytes, r->text.len)) {
        /* Same characters, other text: fine-tuning. The data position means nothing here. */
        charrnn_console_line(&r->console,
                             "note: %s is not the text %s was trained on; training continues "
                             "on it from its start",
                             r->text_name, o->resume_path);
        ck->text_len = r->text.len;
        ck->text_hash = charrnn_text_hash(r->text.bytes, r->text.len);
        ck->cursor.window = 0;
        if (gpurnn_state_reset(r->model) != GPURNN_OK)
            return charrnn_fail(&r->err, "cannot reset the state: %s", gpurnn_last_error());
    }
    if (o->text_path && strlen(o->text_path) >= sizeof ck->text_source)
        return charrnn_fail(&r->err, "the path %s is too long", o->text_path);
    if (o->text_path)
        snprintf(ck->text_source, sizeof ck->text_source, "%s", o->text_path);
    r->checkpoint_path = o->checkpoint_path ? o->checkpoint_path : o->resume_path;
    r->elapsed_before = ck->elapsed_seconds;
    r->cpu_before = ck->cpu_seconds;
    return 0;
}

/* Encodes the text and lays out the training and validation streams. */
static int prepare_data(run *r)
{
    const charrnn_run_config *c = &r->ck.config;
    if (charrnn_split_text(r->text.len, c->val_fraction, c->batch, c->seq_len, &r->split,
                           &r->err) != 0) {
        /* Say which text: the split itself does not know its name. */
        charrnn_error inner = r->err;
        return charrnn_fail(&r->err, "%s: %s", r->text_name, inner.message);
    }
    r->ids = charrnn_xmalloc(r->text.len * sizeof *r->ids);
    if (charrnn_vocab_encode(&r->ck.vocab, r->text.bytes, r->text.len, r->ids, r->text_name,
                             &r->err) != 0)
        return -1;
    if (charrnn_streams_init(&r->train, r->ids, r->split.train_len, c->batch, c->seq_len,
                             &r->err) != 0)
        return -1;
    if (r->ck.cursor.window >= r->train.windows)
        return charrnn_fail(&r->err, "%s: the data position is outside the text", r->opt->resume_path);
    if (r->split.val_len >= 2) {
        r->val_batch = charrnn_validation_batch(r->split.val_len, c->batch, c->seq_len);
        /* charrnn_evaluate lays the same streams out each time; fail here, before training */
        charrnn_streams val;
        if (charrnn_streams_init(&val, r->ids + r->split.train_len, r->split.val_len,
                                 r->val_batch, c->seq_len, &r->err) != 0)
            return -1;
    }
    return 0;
}

/* The step to train to: --steps, --epochs, or (resuming) the checkpoint's. */
static int decide_target(run *r)
{
    const charrnn_options *o = r->opt;
    uint64_t target;
    if (o->given & GIVEN_EPOCHS)
        target = (uint64_t)o->epochs * r->train.windows;
    else if ((o->given & GIVEN_STEPS) || !r->resumed)
        target = (uint64_t)o->steps;
    else
        target = r->ck.config.target_steps;
    if (r->resumed && target <= r->ck.step) {
        char more[64];
        snprintf(more, sizeof more, "%llu", (unsigned long long)r->ck.step + 1);
        return charrnn_fail(&r->err, "%s is already at step %llu, and the run was to end at "
                            "step %llu: give --steps %s or more to train further",
                            o->resume_path, (unsigned long long)r->ck.step,
                            (unsigned long long)target, more);
    }
    r->ck.config.target_steps = target;
    long long auto_interval = (long long)(target / 20);
    r->eval_every = o->eval_every > 0 ? o->eval_every : (auto_interval > 0 ? auto_interval : 1);
    long long auto_samples = (long long)(target / 4);
    r->sample_every = o->sample_every >= 0 ? o->sample_every : (auto_samples > 0 ? auto_samples : 1);
    r->checkpoint_every = o->checkpoint_every;
    return 0;
}

static int create_models(run *r)
{
    const charrnn_run_config *c = &r->ck.config;
    if (!r->model && create_model(r, c->batch, (gpurnn_backend)r->opt->backend, &r->model) != GPURNN_OK)
        return charrnn_fail(&r->err, "cannot create the model: %s", gpurnn_last_error());
    gpurnn_backend backend = gpurnn_model_backend(r->model);
    if (r->val_batch > 0 && create_model(r, r->val_batch, backend, &r->eval_model) != GPURNN_OK)
        return charrnn_fail(&r->err, "cannot create the validation model: %s", gpurnn_last_error());
    if (charrnn_sampler_create(&r->sampler, r->model, &r->err) != 0)
        return -1;
    r->param_count = gpurnn_param_count(r->model);
    r->params = charrnn_xmalloc(r->param_count * sizeof *r->params);
    size_t window = (size_t)c->batch * (size_t)c->seq_len;
    r->inputs = charrnn_xmalloc(window * sizeof *r->inputs);
    r->targets = charrnn_xmalloc(window * sizeof *r->targets);
    memset(&r->optimizer, 0, sizeof r->optimizer);
    r->optimizer.kind = c->optimizer;
    r->optimizer.learning_rate = c->learning_rate;
    r->optimizer.momentum = c->momentum; /* beta1, beta2, eps: the library's defaults */
    return 0;
}

static int open_log(run *r)
{
    const char *path = r->opt->log_path;
    if (!path)
        return 0;
    /* A resumed run continues its log; a new run starts one. */
    struct stat st;
    int append = r->resumed && stat(path, &st) == 0 && st.st_size > 0;
    r->log = fopen(path, append ? "a" : "w");
    if (!r->log)
        return charrnn_fail(&r->err, "cannot write %s: %s", path, strerror(errno));
    if (!append)
        fprintf(r->log,
                "step,epoch,train_loss,val_loss,val_bits_per_char,chars_per_s,elapsed_s,cpu_s\n");
    return 0;
}

/* ---- training -------------------------------------------------------------------------- */

#define TRY(call, what)                                                                        \
    do {                                                                                       \
        if ((call) != GPURNN_OK)                                                               \
            return charrnn_fail(&r->err, "%s failed at step %llu: %s", what,                   \
                                (unsigned long long)r->ck.step + 1, gpurnn_last_error());      \
    } while (0)

/* The learning rate of the step after `step`: --lr at the start, --lr-final at the
 * target, along half a cosine between them (flat at both ends, steepest midway). */
static double scheduled_learning_rate(const charrnn_run_config *c, uint64_t step)
{
    double progress = c->target_steps > 1 ? (double)step / (double)(c->target_steps - 1) : 1.0;
    if (progress > 1.0)
        progress = 1.0;
    return c->learning_rate_final +
           (c->learning_rate - c->learning_rate_final) * 0.5 * (1.0 + cos(M_PI_VALUE * progress));
}

static int train_step(run *r, double *loss)
{
    const charrnn_run_config *c = &r->ck.config;
    r->optimizer.learning_rate = scheduled_learning_rate(c, r->ck.step);
    if (r->ck.cursor.window == 0) /* a new epoch starts every stream from a zero state */
        TRY(gpurnn_state_reset(r->model), "resetting the state");
    charrnn_streams_fill(&r->train, r->ck.cursor.window * (size_t)c->seq_len, c->seq_len,
                         r->inputs, r->targets);
    gpurnn_status s = gpurnn_forward(r->model, r->inputs, r->targets, c->seq_len, loss);
    if (s == GPURNN_ERR_NUMERIC)
        return charrnn_fail(&r->err, "training diverged at step %llu (%s); try a smaller --lr "
                            "or --clip", (unsigned long long)r->ck.step + 1, gpurnn_last_error());
    TRY(s, "the forward pass");
    TRY(gpurnn_backward(r->model), "the backward pass");
    if (c->clip > 0)
        TRY(gpurnn_clip_grad_norm(r->model, c->clip, NULL), "clipping");
    s = gpurnn_step(r->model, &r->optimizer);
    if (s == GPURNN_ERR_NUMERIC)
        return charrnn_fail(&r->err, "training diverged at step %llu (%s); try a smaller --lr "
                            "or --clip", (unsigned long long)r->ck.step + 1, gpurnn_last_error());
    TRY(s, "the optimizer step");
    TRY(gpurnn_zero_grad(r->model), "zeroing the gradients");
    return 0;
}

/* The validation loss in nats/char (evaluate.h: warmed-up streams over the held-out tail,
 * with a copy of the parameters, so that the model being trained keeps its carried state). */
static int evaluate(run *r, double *loss_out)
{
    return charrnn_evaluate(r->model, r->eval_model, r->ids, r->split.train_len, r->split.val_len,
                            r->ck.config.seq_len, CHARRNN_VAL_WARMUP, loss_out, &r->err);
}
#undef TRY

static double epoch_position(const run *r)
{
    return (double)r->ck.cursor.epoch + (double)r->ck.cursor.window / (double)r->train.windows;
}

static double elapsed(const run *r)
{
    return r->elapsed_before + (charrnn_now_seconds() - r->session_start);
}

static double cpu_used(const run *r)
{
    return r->cpu_before + (charrnn_cpu_seconds() - r->cpu_start);
}

static double chars_per_second(const run *r)
{
    double chars = (double)r->session_steps * r->ck.config.batch * r->ck.config.seq_len;
    return r->train_seconds > 0 ? chars / r->train_seconds : 0.0;
}

/* "step 1200/2000  epoch 3.42  loss 1.8734  val 1.9210 (2.7713 bits/char)  52.1k chars/s
 *  0:41  ETA 0:27" */
static void progress_text(const run *r, char *out, size_t out_len)
{
    const charrnn_checkpoint *ck = &r->ck;
    char val[64] = "", rate[32], spent[32], eta[32];
    if (!isnan(r->last_val))
        snprintf(val, sizeof val, "  val %.4f (%.4f bits/char)", r->last_val, r->last_val / log(2.0));
    charrnn_format_count(chars_per_second(r), rate, sizeof rate);
    charrnn_format_duration(elapsed(r), spent, sizeof spent);
    double session = elapsed(r) - r->elapsed_before;
    double left = r->session_steps
                      ? session / (double)r->session_steps * (double)(ck->config.target_steps - ck->step)
                      : -1;
    if (r->opt->time_limit > 0 && left > r->opt->time_limit - session)
        left = fmax(r->opt->time_limit - session, 0.0);
    charrnn_format_duration(left, eta, sizeof eta);
    snprintf(out, out_len, "step %llu/%llu  epoch %.2f  loss %.4f%s  %s chars/s  %s  ETA %s",
             (unsigned long long)ck->step, (unsigned long long)ck->config.target_steps,
             epoch_position(r), ck->smoothed_loss / ck->smoothing_weight, val, rate, spent, eta);
}

static void print_sample(run *r, const char *when)
{
    int n = r->opt->sample_length;
    if (n <= 0)
        return;
    if (charrnn_sampler_sync(&r->sampler, r->model, &r->err) != 0) {
        charrnn_console_line(&r->console, "(no sample: %s)", r->err.message);
        return;
    }
    unsigned char prime = charrnn_default_prime(&r->ck.vocab);
    unsigned char *text = charrnn_xmalloc((size_t)n + 2);
    uint64_t seed = charrnn_rng_next(&r->ck.rng);
    if (charrnn_generate(&r->sampler, &r->ck.vocab, &prime, 1, n, r->opt->temperature, seed,
                         text + 1, &r->err) != 0) {
        charrnn_console_line(&r->console, "(no sample: %s)", r->err.message);
        free(text);
        return;
    }
    charrnn_console_line(&r->console, "---- sample %s (temperature %g) ----", when,
                         r->opt->temperature);
    /* Starting from a newline, the sample is shown without it; it ends at a whole
     * character, and with a newline. */
    size_t len = 1 + charrnn_utf8_whole_length(text + 1, (size_t)n);
    size_t start = prime == '\n' ? 1 : 0;
    text[0] = prime;
    if (text[len - 1] != '\n')
        text[len++] = '\n';
    charrnn_console_print(&r->console, (const char *)text + start, len - start);
    charrnn_console_line(&r->console, "----");
    free(text);
}

/* 1 when the validation loss just added is below every earlier one. */
static int is_best_validation(const charrnn_history *h)
{
    const double latest = h->val_loss[h->val_count - 1];
    for (size_t i = 0; i + 1 < h->val_count; i++)
        if (!(latest < h->val_loss[i]))
            return 0;
    return 1;
}

/* --keep-best: the model of the lowest validation loss, at PATH.best. */
static int save_best_checkpoint(run *r)
{
    size_t len = strlen(r->checkpoint_path) + sizeof ".best";
    char *path = charrnn_xmalloc(len);
    snprintf(path, len, "%s.best", r->checkpoint_path);
    int rc = charrnn_checkpoint_save(path, &r->ck, r->model, &r->err);
    free(path);
    return rc;
}

static int save_checkpoint(run *r)
{
    r->ck.elapsed_seconds = elapsed(r);
    r->ck.cpu_seconds = cpu_used(r);
    return charrnn_checkpoint_save(r->checkpoint_path, &r->ck, r->model, &r->err);
}

static void write_log_row(run *r, double loss, double step_seconds, int measured_val)
{
    if (!r->log)
        return;
    const charrnn_run_config *c = &r->ck.config;
    char val[80] = ",";
    if (measured_val)
        snprintf(val, sizeof val, "%.17g,%.17g", r->last_val, r->last_val / log(2.0));
    fprintf(r->log, "%llu,%.6f,%.17g,%s,%.1f,%.3f,%.3f\n", (unsigned long long)r->ck.step,
            epoch_position(r), loss, val,
            step_seconds > 0 ? (double)c->batch * c->seq_len / step_seconds : 0.0, elapsed(r),
            cpu_used(r));
    fflush(r->log);
}

/* "0.002", or "0.002 -> 0.0001 (cosine)" with a schedule. */
static void format_learning_rate(const charrnn_run_config *c, char *out, size_t out_len)
{
    if (c->learning_rate_final != c->learning_rate)
        snprintf(out, out_len, "%g -> %g (cosine)", c->learning_rate, c->learning_rate_final);
    else
        snprintf(out, out_len, "%g", c->learning_rate);
}

static void print_header(run *r)
{
    const charrnn_run_config *c = &r->ck.config;
    gpurnn_backend backend = gpurnn_model_backend(r->model);
    char why[512] = "";
    if (backend == GPURNN_BACKEND_CPU && r->opt->backend == GPURNN_BACKEND_AUTO &&
        gpurnn_backend_check(GPURNN_BACKEND_CUDA) != GPURNN_OK)
        snprintf(why, sizeof why, " (not CUDA: %s)", gpurnn_last_error());
    charrnn_console_line(&r->console, "gpurnn-charrnn, libgpurnn %s, backend %s%s",
                         gpurnn_version(), charrnn_backend_name((int)backend), why);
    char validation[96] = "none (--val-fraction leaves fewer than 2 bytes)";
    if (r->split.val_len > 0)
        snprintf(validation, sizeof validation, "the last %zu bytes, %d streams", r->split.val_len,
                 r->val_batch);
    charrnn_console_line(&r->console, "text: %s, %zu bytes, %d distinct; validation: %s",
                         r->text_name, r->text.len, r->ck.vocab.size, validation);
    char model[160];
    charrnn_format_model(model, sizeof model, r->ck.vocab.size, c->hidden, c->layers,
                         (int)c->cell, (int)c->dtype, r->param_count);
    charrnn_console_line(&r->console, "model: %s; B=%d streams x T=%d characters a step, %zu "
                         "steps an epoch", model, c->batch, c->seq_len, r->train.windows);
    char clip[32] = "off", lr[64];
    if (c->clip > 0)
        snprintf(clip, sizeof clip, "%g", c->clip);
    format_learning_rate(c, lr, sizeof lr);
    if (r->resumed)
        charrnn_console_line(&r->console, "resuming %s at step %llu (epoch %.2f): %s lr %s, clip "
                             "%s, to step %llu",
                             r->opt->resume_path, (unsigned long long)r->ck.step,
                             epoch_position(r), charrnn_optimizer_name((int)c->optimizer), lr,
                             clip, (unsigned long long)c->target_steps);
    else
        charrnn_console_line(&r->console, "training: %s lr %s, clip %s, %llu steps; an untrained "
                             "model scores ln(V) = %.4f nats/char",
                             charrnn_optimizer_name((int)c->optimizer), lr, clip,
                             (unsigned long long)c->target_steps, log((double)r->ck.vocab.size));
}

/* Times steps of a fresh model of this size on a backend: characters per second. */
static double measure_speed(run *r, gpurnn_backend backend)
{
    const charrnn_run_config *c = &r->ck.config;
    gpurnn_model *m = NULL;
    if (create_model(r, c->batch, backend, &m) != GPURNN_OK)
        return -1;
    charrnn_streams_fill(&r->train, 0, c->seq_len, r->inputs, r->targets);
    gpurnn_optimizer opt = r->optimizer;
    double loss, start = 0, seconds = 0;
    int steps = 0;
    for (int i = 0; seconds < 1.0 && steps < 200; i++) {
        if (i == 2) /* the first steps warm up caches, threads and (CUDA) the device */
            start = charrnn_now_seconds();
        if (gpurnn_forward(m, r->inputs, r->targets, c->seq_len, &loss) != GPURNN_OK ||
            gpurnn_backward(m) != GPURNN_OK || gpurnn_step(m, &opt) != GPURNN_OK ||
            gpurnn_zero_grad(m) != GPURNN_OK) {
            gpurnn_model_destroy(m);
            return -1;
        }
        if (i >= 2) {
            steps++;
            seconds = charrnn_now_seconds() - start;
        }
    }
    gpurnn_model_destroy(m);
    return (double)steps * c->batch * c->seq_len / seconds;
}

static void compare_speed(run *r)
{
    const charrnn_run_config *c = &r->ck.config;
    char size[96], cpu_rate[32], gpu_rate[32];
    snprintf(size, sizeof size, "H=%d L=%d %s B=%d T=%d %s", c->hidden, c->layers,
             charrnn_cell_name((int)c->cell), c->batch, c->seq_len,
             charrnn_dtype_name((int)c->dtype));
    double cpu = measure_speed(r, GPURNN_BACKEND_CPU);
    charrnn_format_count(cpu, cpu_rate, sizeof cpu_rate);
    if (gpurnn_backend_check(GPURNN_BACKEND_CUDA) != GPURNN_OK) {
        charrnn_console_line(&r->console, "speed at %s: CPU %s chars/s; no GPU to compare with: %s",
                             size, cpu_rate, gpurnn_last_error());
        return;
    }
    double gpu = measure_speed(r, GPURNN_BACKEND_CUDA);
    if (gpu <= 0) {
        charrnn_console_line(&r->console, "speed at %s: CPU %s chars/s; CUDA failed: %s", size,
                             cpu_rate, gpurnn_last_error());
        return;
    }
    charrnn_format_count(gpu, gpu_rate, sizeof gpu_rate);
    charrnn_console_line(&r->console, "speed at %s: CPU %s chars/s, CUDA %s chars/s: the GPU is %.1fx %s",
                         size, cpu_rate, gpu_rate, gpu >= cpu ? gpu / cpu : cpu / gpu,
                         gpu >= cpu ? "faster" : "slower");
}

/* A step big enough to take seconds says so before it starts, so that a large model
 * does not look hung until its first progress line. */
static void announce_first_step(run *r)
{
    const charrnn_run_config *c = &r->ck.config;
    gpurnn_config cfg;
    if (gpurnn_model_config(r->model, &cfg) != GPURNN_OK)
        return;
    const double flop = charrnn_training_flops_per_token(&cfg) * c->seq_len * c->batch;
    if (flop < 5e10)
        return;
    charrnn_console_line(&r->console,
                         "step %llu/%llu: running (each step: %d streams x %d characters at H=%d "
                         "L=%d %s, about %.0f GFLOP; a progress line follows every step)",
                         (unsigned long long)r->ck.step + 1, (unsigned long long)c->target_steps, c->batch,
                         c->seq_len, c->hidden, c->layers, charrnn_cell_name((int)c->cell), flop / 1e9);
}

/* The loop. Returns 0 when it reached the target or was stopped, -1 on failure. */
static int train_loop(run *r)
{
    charrnn_checkpoint *ck = &r->ck;
    char line[512];
    const double time_limit = r->opt->time_limit;
    announce_first_step(r);
    while (ck->step < ck->config.target_steps && !stop_requested) {
        double loss = 0.0, t0 = charrnn_now_seconds();
        if (train_step(r, &loss) != 0)
            return -1;
        double step_seconds = charrnn_now_seconds() - t0;
        r->train_seconds += step_seconds;
        r->session_steps++;
        ck->step++;
        charrnn_cursor_advance(&ck->cursor, &r->train);
        charrnn_history_add_train(&ck->history, loss);
        ck->smoothed_loss = SMOOTHING_DECAY * ck->smoothed_loss + (1 - SMOOTHING_DECAY) * loss;
        ck->smoothing_weight = SMOOTHING_DECAY * ck->smoothing_weight + (1 - SMOOTHING_DECAY);

        /* Out of time: this step becomes the last one, with the last one's report. */
        if (time_limit > 0 && charrnn_now_seconds() - r->session_start >= time_limit)
            ck->config.target_steps = ck->step;
        int last = ck->step == ck->config.target_steps;
        int report = last || ck->step % (uint64_t)r->eval_every == 0 || ck->step == 1;
        int measured_val = 0;
        if (report && r->eval_model) {
            if (evaluate(r, &r->last_val) != 0)
                return -1;
            charrnn_history_add_val(&ck->history, ck->step, r->last_val);
            measured_val = 1;
            if (r->opt->keep_best && is_best_validation(&ck->history) && save_best_checkpoint(r) != 0)
                return -1;
        }
        write_log_row(r, loss, step_seconds, measured_val);
        progress_text(r, line, sizeof line);
        if (report)
            charrnn_console_line(&r->console, "%s", line);
        else
            charrnn_console_live(&r->console, line, 0);
        if (r->sample_every > 0 && ck->step % (uint64_t)r->sample_every == 0 && !last) {
            char when[64];
            snprintf(when, sizeof when, "at step %llu", (unsigned long long)ck->step);
            print_sample(r, when);
        }
        if (r->checkpoint_every > 0 && ck->step % (uint64_t)r->checkpoint_every == 0 && !last &&
            save_checkpoint(r) != 0)
            return -1;
    }
    return 0;
}

static void free_run(run *r)
{
    if (r->log)
        fclose(r->log);
    charrnn_sampler_destroy(&r->sampler);
    gpurnn_model_destroy(r->eval_model);
    gpurnn_model_destroy(r->model);
    charrnn_checkpoint_free(&r->ck);
    charrnn_text_free(&r->text);
    free(r->ids);
    free(r->inputs);
    free(r->targets);
    free(r->params);
}

int charrnn_command_train(const charrnn_options *options)
{
    run r;
    memset(&r, 0, sizeof r);
    r.opt = options;
    r.last_val = NAN;
    charrnn_console_init(&r.console);

    int setup = options->resume_path ? start_resumed(&r) : start_fresh(&r);
    if (setup == 0)
        setup = prepare_data(&r);
    if (setup == 0)
        setup = decide_target(&r);
    if (setup == 0)
        setup = create_models(&r);
    if (setup == 0)
        setup = open_log(&r);
    if (setup != 0) {
        fflush(stdout);
        fprintf(stderr, "gpurnn-charrnn: %s\n", r.err.message);
        free_run(&r);
        return CHARRNN_EXIT_FAILURE;
    }

    print_header(&r);
    install_stop_handlers();
    r.session_start = charrnn_now_seconds();
    r.cpu_start = charrnn_cpu_seconds();
    int rc = train_loop(&r);
    if (rc == 0 && save_checkpoint(&r) != 0)
        rc = -1;
    if (rc != 0) {
        fflush(stdout);
        fprintf(stderr, "gpurnn-charrnn: %s\n", r.err.message);
        free_run(&r);
        return CHARRNN_EXIT_FAILURE;
    }

    const charrnn_checkpoint *ck = &r.ck;
    char rate[32], spent[32];
    charrnn_format_count(chars_per_second(&r), rate, sizeof rate);
    charrnn_format_duration(elapsed(&r), spent, sizeof spent);
    if (stop_requested) {
        charrnn_console_line(&r.console,
                             "interrupted at step %llu of %llu: checkpoint saved to %s (continue "
                             "with: gpurnn-charrnn train --resume %s)",
                             (unsigned long long)ck->step, (unsigned long long)ck->config.target_steps,
                             r.checkpoint_path, r.checkpoint_path);
    } else {
        char val[96] = "";
        if (!isnan(r.last_val))
            snprintf(val, sizeof val, ", validation %.4f nats/char = %.4f bits/char", r.last_val,
                     r.last_val / log(2.0));
        charrnn_console_line(&r.console, "done: step %llu in %s at %s chars/s; training loss %.4f%s",
                             (unsigned long long)ck->step, spent, rate,
                             ck->smoothed_loss / ck->smoothing_weight, val);
        charrnn_console_line(&r.console, "checkpoint saved to %s (sample with: gpurnn-charrnn "
                             "sample %s)", r.checkpoint_path, r.checkpoint_path);
    }
    if (options->plot_path) {
        /* The file's name without its directories: the plot may be shown anywhere. */
        const char *slash = strrchr(r.text_name, '/');
        char title[512], lr[64];
        format_learning_rate(&ck->config, lr, sizeof lr);
        snprintf(title, sizeof title, "gpurnn-charrnn on %s: H=%d, L=%d %s, B=%d, T=%d, %s lr %s",
                 slash ? slash + 1 : r.text_name, ck->config.hidden, ck->config.layers,
                 charrnn_cell_name((int)ck->config.cell), ck->config.batch, ck->config.seq_len,
                 charrnn_optimizer_name((int)ck->config.optimizer), lr);
        if (charrnn_plot_losses(options->plot_path, &ck->history, title, &r.err) != 0)
            fprintf(stderr, "gpurnn-charrnn: %s\n", r.err.message);
        else
            charrnn_console_line(&r.console, "loss plot written to %s", options->plot_path);
    }
    if (!stop_requested) {
        char when[64];
        snprintf(when, sizeof when, "after %llu steps", (unsigned long long)ck->step);
        print_sample(&r, when);
        if (options->compare_speed)
            compare_speed(&r);
    }
    free_run(&r);
    return CHARRNN_EXIT_OK;
}
