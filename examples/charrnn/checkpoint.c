/* gpurnn-charrnn's checkpoint file: see checkpoint.h, and README.md for the layout. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include "fileio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The first bytes of a libgpurnn checkpoint, in which the program's data is the user data. */
static const unsigned char library_magic[8] = {0x89, 'G', 'P', 'U', 'R', 'N', 'N', '\n'};
/* The program's own file around a library checkpoint, written before version 0.2: still read. */
static const unsigned char wrapped_magic[8] = {0x89, 'C', 'H', 'A', 'R', 'R', 'N', '\n'};
enum { WRAPPED_FORMAT_VERSION = 1 };

/* ---- history -------------------------------------------------------------------------- */

void charrnn_history_add_train(charrnn_history *h, double loss)
{
    if (h->train_count == h->train_cap) {
        h->train_cap = h->train_cap ? 2 * h->train_cap : 1024;
        h->train_loss = charrnn_xrealloc(h->train_loss, h->train_cap * sizeof *h->train_loss);
    }
    h->train_loss[h->train_count++] = loss;
}

void charrnn_history_add_val(charrnn_history *h, uint64_t step, double loss)
{
    if (h->val_count == h->val_cap) {
        h->val_cap = h->val_cap ? 2 * h->val_cap : 64;
        h->val_step = charrnn_xrealloc(h->val_step, h->val_cap * sizeof *h->val_step);
        h->val_loss = charrnn_xrealloc(h->val_loss, h->val_cap * sizeof *h->val_loss);
    }
    h->val_step[h->val_count] = step;
    h->val_loss[h->val_count++] = loss;
}

void charrnn_history_free(charrnn_history *h)
{
    free(h->train_loss);
    free(h->val_step);
    free(h->val_loss);
    memset(h, 0, sizeof *h);
}

void charrnn_checkpoint_free(charrnn_checkpoint *ck)
{
    charrnn_history_free(&ck->history);
}

/* ---- little-endian writer ----------------------------------------------------------- */

typedef struct writer {
    unsigned char *data;
    size_t len, cap;
} writer;

static void put_bytes(writer *w, const void *bytes, size_t n)
{
    if (w->len + n > w->cap) {
        while (w->len + n > w->cap)
            w->cap = w->cap ? 2 * w->cap : 4096;
        w->data = charrnn_xrealloc(w->data, w->cap);
    }
    memcpy(w->data + w->len, bytes, n);
    w->len += n;
}

static void put_u64(writer *w, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put_bytes(w, b, 8);
}

static void put_u32(writer *w, uint32_t v)
{
    unsigned char b[4];
    for (int i = 0; i < 4; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    put_bytes(w, b, 4);
}

static void put_f64(writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u64(w, bits);
}

/* ---- bounds-checked little-endian reader -------------------------------------------- */

typedef struct reader {
    const unsigned char *data;
    size_t len, pos;
    int truncated; /* set when a read would pass the end; reads then return 0 */
} reader;

static const unsigned char *take(reader *r, size_t n)
{
    if (r->truncated || n > r->len - r->pos) {
        r->truncated = 1;
        return NULL;
    }
    const unsigned char *p = r->data + r->pos;
    r->pos += n;
    return p;
}

static uint64_t get_u64(reader *r)
{
    const unsigned char *p = take(r, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint32_t get_u32(reader *r)
{
    const unsigned char *p = take(r, 4);
    uint32_t v = 0;
    for (int i = 0; p && i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static double get_f64(reader *r)
{
    uint64_t bits = get_u64(r);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ---- save ------------------------------------------------------------------------------
 * The program's data is the user data of the library's own checkpoint (README.md, "The
 * checkpoint file"): the library writes it with the model, under one checksum and one
 * atomic rename. */

/* Version 2 added the cell and the number of layers to the training state; version 1
 * (and the wrapper format) stand for one tanh layer. */
enum { BLOB_VERSION = 2, BLOB_VERSION_BEFORE_CELLS = 1, BLOB_VOCABULARY_ONLY = 0,
       BLOB_WITH_TRAINING_STATE = 1 };
static const unsigned char blob_magic[8] = {'C', 'H', 'A', 'R', 'R', 'N', 'N', 0};

int charrnn_checkpoint_save(const char *path, const charrnn_checkpoint *ck,
                            const gpurnn_model *model, charrnn_error *err)
{
    writer w = {0};
    const charrnn_run_config *c = &ck->config;
    put_bytes(&w, blob_magic, sizeof blob_magic);
    put_u32(&w, BLOB_VERSION);
    put_u32(&w, BLOB_WITH_TRAINING_STATE);
    put_u32(&w, (uint32_t)ck->vocab.size);
    put_bytes(&w, ck->vocab.chars, (size_t)ck->vocab.size);
    put_u32(&w, (uint32_t)c->hidden);
    put_u32(&w, (uint32_t)c->batch);
    put_u32(&w, (uint32_t)c->seq_len);
    put_u32(&w, (uint32_t)c->dtype);
    put_u32(&w, (uint32_t)c->optimizer);
    put_u32(&w, (uint32_t)c->cell);
    put_u32(&w, (uint32_t)c->layers);
    put_f64(&w, c->learning_rate);
    put_f64(&w, c->learning_rate_final);
    put_f64(&w, c->momentum);
    put_f64(&w, c->clip);
    put_f64(&w, c->init_scale);
    put_f64(&w, c->val_fraction);
    put_u64(&w, c->seed);
    put_u64(&w, c->target_steps);
    put_u64(&w, ck->step);
    put_u64(&w, ck->cursor.epoch);
    put_u64(&w, ck->cursor.window);
    put_u64(&w, ck->rng.state);
    put_f64(&w, ck->elapsed_seconds);
    put_f64(&w, ck->cpu_seconds);
    put_f64(&w, ck->smoothed_loss);
    put_f64(&w, ck->smoothing_weight);
    put_u64(&w, ck->text_len);
    put_u64(&w, ck->text_hash);
    size_t source_len = strnlen(ck->text_source, sizeof ck->text_source - 1);
    put_u32(&w, (uint32_t)source_len);
    put_bytes(&w, ck->text_source, source_len);
    const charrnn_history *h = &ck->history;
    put_u64(&w, h->train_count);
    for (size_t i = 0; i < h->train_count; i++)
        put_f64(&w, h->train_loss[i]);
    put_u64(&w, h->val_count);
    for (size_t i = 0; i < h->val_count; i++) {
        put_u64(&w, h->val_step[i]);
        put_f64(&w, h->val_loss[i]);
    }
    int rc = 0;
    if (w.len > GPURNN_USER_DATA_MAX)
        rc = charrnn_fail(err, "cannot save %s: the loss history of %zu steps is too long for a "
                          "checkpoint", path, h->train_count);
    else if (gpurnn_model_save_with_user_data(model, w.data, w.len, path) != GPURNN_OK)
        rc = charrnn_fail(err, "cannot save the checkpoint: %s", gpurnn_last_error());
    free(w.data);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------ */

/* The vocabulary: vocab_size, then the characters. */
static int parse_vocabulary(reader *r, const char *path, charrnn_checkpoint *ck, charrnn_error *err)
{
    uint32_t V = get_u32(r);
    const unsigned char *chars = take(r, V <= 256 ? V : 0);
    if (r->truncated || V < 1 || V > 256 ||
        charrnn_vocab_from_chars(&ck->vocab, chars, (int)V, NULL) != 0)
        return charrnn_fail(err, "%s: damaged checkpoint (bad vocabulary)", path);
    return 0;
}

/* The training state, from hidden to the loss history (the same fields in both formats,
 * and in every version but for the cell and layers, which came with version 2); on
 * failure the caller frees ck's history. */
static int parse_training_state(reader *r, uint32_t version, const char *path,
                                charrnn_checkpoint *ck, charrnn_error *err)
{
    ck->has_training_state = 1;
    charrnn_run_config *c = &ck->config;
    uint32_t hidden = get_u32(r), batch = get_u32(r), seq_len = get_u32(r);
    uint32_t dtype = get_u32(r), optimizer = get_u32(r);
    uint32_t cell = GPURNN_CELL_TANH, layers = 1;
    if (version >= 2) {
        cell = get_u32(r);
        layers = get_u32(r);
    }
    c->learning_rate = get_f64(r);
    c->learning_rate_final = get_f64(r);
    c->momentum = get_f64(r);
    c->clip = get_f64(r);
    c->init_scale = get_f64(r);
    c->val_fraction = get_f64(r);
    c->seed = get_u64(r);
    c->target_steps = get_u64(r);
    if (hidden < 1 || hidden > INT32_MAX || batch < 1 || batch > INT32_MAX || seq_len < 1 ||
        seq_len > INT32_MAX || dtype > GPURNN_F64 || optimizer > GPURNN_ADAM ||
        cell > GPURNN_CELL_LSTM || layers < 1 || layers > GPURNN_MAX_LAYERS ||
        !(c->learning_rate >= 0 && isfinite(c->learning_rate)) ||
        !(c->learning_rate_final >= 0 && isfinite(c->learning_rate_final)) ||
        !(c->momentum >= 0 && c->momentum < 1) || !(c->clip >= 0 && isfinite(c->clip)) ||
        !(c->init_scale >= 0 && isfinite(c->init_scale)) ||
        !(c->val_fraction >= 0 && c->val_fraction <= 0.5))
        return charrnn_fail(err, "%s: damaged checkpoint (bad settings)", path);
    c->hidden = (int)hidden;
    c->cell = (gpurnn_cell)cell;
    c->layers = (int)layers;
    c->batch = (int)batch;
    c->seq_len = (int)seq_len;
    c->dtype = (gpurnn_dtype)dtype;
    c->optimizer = (gpurnn_optimizer_kind)optimizer;

    ck->step = get_u64(r);
    ck->cursor.epoch = get_u64(r);
    ck->cursor.window = get_u64(r);
    ck->rng.state = get_u64(r);
    ck->elapsed_seconds = get_f64(r);
    ck->cpu_seconds = get_f64(r);
    ck->smoothed_loss = get_f64(r);
    ck->smoothing_weight = get_f64(r);
    ck->text_len = get_u64(r);
    ck->text_hash = get_u64(r);
    uint32_t source_len = get_u32(r);
    const unsigned char *source = take(r, source_len < sizeof ck->text_source ? source_len : 0);
    if (r->truncated || source_len >= sizeof ck->text_source ||
        memchr(source, '\0', source_len) != NULL || !(ck->elapsed_seconds >= 0) || !(ck->cpu_seconds >= 0) ||
        !isfinite(ck->smoothed_loss) || !(ck->smoothing_weight >= 0 && ck->smoothing_weight <= 1))
        return charrnn_fail(err, "%s: damaged checkpoint (bad progress fields)", path);
    memcpy(ck->text_source, source, source_len);
    ck->text_source[source_len] = '\0';

    /* One training loss per step taken; validation losses at steps taken. The counts are
     * checked against what is left of the file before anything is allocated. */
    uint64_t train_count = get_u64(r);
    if (r->truncated || train_count != ck->step || train_count > (r->len - r->pos) / 8)
        return charrnn_fail(err, "%s: damaged checkpoint (bad loss history)", path);
    for (uint64_t i = 0; i < train_count; i++)
        charrnn_history_add_train(&ck->history, get_f64(r));
    uint64_t val_count = get_u64(r);
    if (r->truncated || val_count > (r->len - r->pos) / 16)
        return charrnn_fail(err, "%s: damaged checkpoint (bad loss history)", path);
    for (uint64_t i = 0; i < val_count; i++) {
        uint64_t step = get_u64(r);
        double loss = get_f64(r);
        if (step > ck->step)
            return charrnn_fail(err, "%s: damaged checkpoint (bad loss history)", path);
        charrnn_history_add_val(&ck->history, step, loss);
    }
    if (r->truncated)
        return charrnn_fail(err, "%s: damaged checkpoint (bad loss history)", path);
    return 0;
}

/* The model must be the one the vocabulary (and the training settings, when there are
 * any) describe. */
static int check_model(const char *path, const charrnn_checkpoint *ck, const gpurnn_model *model,
                       charrnn_error *err)
{
    gpurnn_config mc;
    const charrnn_run_config *c = &ck->config;
    if (gpurnn_model_config(model, &mc) != GPURNN_OK)
        return charrnn_fail(err, "cannot read the model's configuration: %s", gpurnn_last_error());
    if (mc.vocab_size != ck->vocab.size)
        return charrnn_fail(err, "%s: the model has %d classes, but the vocabulary %d characters",
                            path, mc.vocab_size, ck->vocab.size);
    if (ck->has_training_state &&
        (mc.hidden_size != c->hidden || mc.cell != c->cell || mc.num_layers != c->layers ||
         mc.batch_size != c->batch || mc.max_seq_len != c->seq_len ||
         mc.dtype != c->dtype || mc.reduction != GPURNN_LOSS_MEAN))
        return charrnn_fail(err, "%s: damaged checkpoint (the model does not match its settings)",
                            path);
    return 0;
}

/* The program's data in the user data of a library checkpoint. */
static int parse_user_data(const unsigned char *blob, size_t len, const char *path,
                           charrnn_checkpoint *ck, charrnn_error *err)
{
    if (len == 0)
        return charrnn_fail(err, "%s is a bare libgpurnn model checkpoint, not a gpurnn-charrnn one "
                            "(it has no vocabulary)", path);
    if (len < 16 || memcmp(blob, blob_magic, sizeof blob_magic) != 0)
        return charrnn_fail(err, "%s is a libgpurnn checkpoint whose user data is not "
                            "gpurnn-charrnn's (no \"CHARRNN\\0\" at its start)", path);
    reader r = {blob, len, sizeof blob_magic, 0};
    uint32_t version = get_u32(&r), parts = get_u32(&r);
    if (version != BLOB_VERSION && version != BLOB_VERSION_BEFORE_CELLS)
        return charrnn_fail(err, "%s: gpurnn-charrnn data format version %u is not supported (this "
                            "program reads versions %d and %d)", path, version,
                            BLOB_VERSION_BEFORE_CELLS, BLOB_VERSION);
    if (parts != BLOB_VOCABULARY_ONLY && parts != BLOB_WITH_TRAINING_STATE)
        return charrnn_fail(err, "%s: damaged checkpoint (parts %u is not 0 or 1)", path, parts);
    if (parse_vocabulary(&r, path, ck, err) != 0)
        return -1;
    if (parts == BLOB_WITH_TRAINING_STATE && parse_training_state(&r, version, path, ck, err) != 0)
        return -1;
    if (r.pos != r.len)
        return charrnn_fail(err, "%s: damaged checkpoint (%zu unexpected bytes after the "
                            "gpurnn-charrnn data)", path, r.len - r.pos);
    return 0;
}

/* The format before the program used the library's user data: its own file around the
 * library's checkpoint (README.md, "Checkpoints of earlier versions"). */
static int load_wrapped(const unsigned char *data, size_t len, const char *path,
                        gpurnn_backend backend, charrnn_checkpoint *ck, gpurnn_model **model,
                        charrnn_error *err)
{
    /* The smallest file is the fixed fields with an empty history and model: far more
     * than 20 bytes; anything shorter cannot even hold its checksum. */
    if (len < 20)
        return charrnn_fail(err, "%s: truncated checkpoint (%zu bytes)", path, len);
    uint64_t stored = 0;
    for (int i = 0; i < 8; i++)
        stored |= (uint64_t)data[len - 8 + (size_t)i] << (8 * i);
    uint64_t computed = charrnn_crc64(0, data, len - 8);

    reader r = {data, len - 8, 8, 0};
    /* The version comes before the checksum, so that a file of a later version is named
     * as such rather than reported as damaged. */
    uint32_t version = get_u32(&r);
    if (version != WRAPPED_FORMAT_VERSION)
        return charrnn_fail(err, "%s: checkpoint format version %u is not supported (this program "
                            "reads version %d)", path, version, WRAPPED_FORMAT_VERSION);
    if (stored != computed)
        return charrnn_fail(err, "%s: checksum mismatch (the file is damaged or truncated)", path);
    if (get_u32(&r) != 0)
        return charrnn_fail(err, "%s: damaged checkpoint (reserved field is not 0)", path);
    if (parse_vocabulary(&r, path, ck, err) != 0 ||
        parse_training_state(&r, BLOB_VERSION_BEFORE_CELLS, path, ck, err) != 0)
        return -1;
    uint64_t model_len = get_u64(&r);
    if (r.truncated || model_len != r.len - r.pos)
        return charrnn_fail(err, "%s: damaged checkpoint (bad model size)", path);
    if (gpurnn_model_load_from_memory(data + r.pos, (size_t)model_len, backend, NULL, NULL, model) !=
        GPURNN_OK)
        return charrnn_fail(err, "cannot load the model in %s: %s", path, gpurnn_last_error());
    return 0;
}

int charrnn_checkpoint_load(const char *path, gpurnn_backend backend, charrnn_checkpoint *ck,
                            gpurnn_model **model, charrnn_error *err)
{
    memset(ck, 0, sizeof *ck);
    *model = NULL;
    unsigned char *data = NULL;
    size_t len = 0;
    if (charrnn_read_file(path, &data, &len, err) != 0)
        return -1;

    int rc = -1;
    if (len >= 8 && memcmp(data, wrapped_magic, 8) == 0) {
        rc = load_wrapped(data, len, path, backend, ck, model, err);
    } else if (len >= 8 && memcmp(data, library_magic, 8) == 0) {
        void *blob = NULL;
        size_t blob_len = 0;
        if (gpurnn_model_load_from_memory(data, len, backend, &blob, &blob_len, model) != GPURNN_OK)
            charrnn_fail(err, "cannot load %s: %s", path, gpurnn_last_error());
        else
            rc = parse_user_data(blob, blob_len, path, ck, err);
        gpurnn_user_data_free(blob);
    } else {
        charrnn_fail(err, "%s is not a gpurnn-charrnn checkpoint", path);
    }
    if (rc == 0)
        rc = check_model(path, ck, *model, err);
    free(data);
    if (rc != 0) {
        gpurnn_model_destroy(*model);
        *model = NULL;
        charrnn_checkpoint_free(ck);
    }
    return rc;
}
