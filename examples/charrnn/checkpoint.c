/* gpurnn-charrnn's checkpoint file: see checkpoint.h, and README.md for the layout. */
#define _POSIX_C_SOURCE 200809L
#include "checkpoint.h"

#include "fileio.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const unsigned char magic[8] = {0x89, 'C', 'H', 'A', 'R', 'R', 'N', '\n'};
/* The first bytes of a bare libgpurnn checkpoint, to say so when one is given instead. */
static const unsigned char library_magic[8] = {0x89, 'G', 'P', 'U', 'R', 'N', 'N', '\n'};
enum { FORMAT_VERSION = 1 };

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

/* ---- the library's part, through a temporary file ------------------------------------
 * libgpurnn saves and loads models by path only, so its checkpoint goes through a
 * temporary file on its way into and out of ours. */

static int library_checkpoint_bytes(const gpurnn_model *model, const char *path,
                                    unsigned char **bytes, size_t *len, charrnn_error *err)
{
    size_t tmp_len = strlen(path) + 16;
    char *tmp = charrnn_xmalloc(tmp_len);
    snprintf(tmp, tmp_len, "%s.model-XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return charrnn_fail(err, "cannot write %s: %s", path, strerror(e));
    }
    close(fd);
    int rc = 0;
    if (gpurnn_model_save(model, tmp) != GPURNN_OK)
        rc = charrnn_fail(err, "cannot save the model: %s", gpurnn_last_error());
    else
        rc = charrnn_read_file(tmp, bytes, len, err);
    unlink(tmp);
    free(tmp);
    return rc;
}

static int load_library_checkpoint(const unsigned char *bytes, size_t len, gpurnn_backend backend,
                                   const char *path, gpurnn_model **model, charrnn_error *err)
{
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s/gpurnn-charrnn-XXXXXX", dir);
    int fd = mkstemp(tmp);
    if (fd < 0)
        return charrnn_fail(err, "cannot load %s: cannot create a temporary file in %s: %s", path,
                            dir, strerror(errno));
    size_t done = 0;
    int e = 0;
    while (done < len && e == 0) {
        ssize_t n = write(fd, bytes + done, len - done);
        if (n < 0) {
            if (errno != EINTR)
                e = errno;
            continue;
        }
        done += (size_t)n;
    }
    close(fd);
    int rc = 0;
    if (e != 0)
        rc = charrnn_fail(err, "cannot load %s: writing %s: %s", path, tmp, strerror(e));
    else if (gpurnn_model_load(tmp, backend, model) != GPURNN_OK)
        rc = charrnn_fail(err, "cannot load the model in %s: %s", path, gpurnn_last_error());
    unlink(tmp);
    return rc;
}

/* ---- save ------------------------------------------------------------------------------ */

int charrnn_checkpoint_save(const char *path, const charrnn_checkpoint *ck,
                            const gpurnn_model *model, charrnn_error *err)
{
    unsigned char *model_bytes = NULL;
    size_t model_len = 0;
    if (library_checkpoint_bytes(model, path, &model_bytes, &model_len, err) != 0)
        return -1;

    writer w = {0};
    const charrnn_run_config *c = &ck->config;
    put_bytes(&w, magic, sizeof magic);
    put_u32(&w, FORMAT_VERSION);
    put_u32(&w, 0); /* reserved */
    put_u32(&w, (uint32_t)ck->vocab.size);
    put_bytes(&w, ck->vocab.chars, (size_t)ck->vocab.size);
    put_u32(&w, (uint32_t)c->hidden);
    put_u32(&w, (uint32_t)c->batch);
    put_u32(&w, (uint32_t)c->seq_len);
    put_u32(&w, (uint32_t)c->dtype);
    put_u32(&w, (uint32_t)c->optimizer);
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
    put_u64(&w, model_len);
    put_bytes(&w, model_bytes, model_len);
    free(model_bytes);
    put_u64(&w, charrnn_crc64(0, w.data, w.len));

    int rc = charrnn_write_file_atomic(path, w.data, w.len, err);
    free(w.data);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------ */

/* Parses everything but the model; on failure the caller frees ck's history. */
static int parse(reader *r, const char *path, charrnn_checkpoint *ck, charrnn_error *err)
{
    (void)get_u32(r); /* the format version, checked by the caller */
    if (get_u32(r) != 0)
        return charrnn_fail(err, "%s: damaged checkpoint (reserved field is not 0)", path);

    uint32_t V = get_u32(r);
    const unsigned char *chars = take(r, V <= 256 ? V : 0);
    if (r->truncated || V < 1 || V > 256 ||
        charrnn_vocab_from_chars(&ck->vocab, chars, (int)V, NULL) != 0)
        return charrnn_fail(err, "%s: damaged checkpoint (bad vocabulary)", path);

    charrnn_run_config *c = &ck->config;
    uint32_t hidden = get_u32(r), batch = get_u32(r), seq_len = get_u32(r);
    uint32_t dtype = get_u32(r), optimizer = get_u32(r);
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
        !(c->learning_rate >= 0 && isfinite(c->learning_rate)) ||
        !(c->learning_rate_final >= 0 && isfinite(c->learning_rate_final)) ||
        !(c->momentum >= 0 && c->momentum < 1) || !(c->clip >= 0 && isfinite(c->clip)) ||
        !(c->init_scale >= 0 && isfinite(c->init_scale)) ||
        !(c->val_fraction >= 0 && c->val_fraction <= 0.5))
        return charrnn_fail(err, "%s: damaged checkpoint (bad settings)", path);
    c->hidden = (int)hidden;
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
    if (len >= 8 && memcmp(data, library_magic, 8) == 0) {
        charrnn_fail(err, "%s is a bare libgpurnn model checkpoint, not a gpurnn-charrnn one (it "
                     "has no vocabulary)", path);
        goto done;
    }
    if (len < 8 || memcmp(data, magic, 8) != 0) {
        charrnn_fail(err, "%s is not a gpurnn-charrnn checkpoint", path);
        goto done;
    }
    /* The smallest file is the fixed fields with an empty history and model: far more
     * than 20 bytes; anything shorter cannot even hold its checksum. */
    if (len < 20) {
        charrnn_fail(err, "%s: truncated checkpoint (%zu bytes)", path, len);
        goto done;
    }
    uint64_t stored = 0;
    for (int i = 0; i < 8; i++)
        stored |= (uint64_t)data[len - 8 + (size_t)i] << (8 * i);
    uint64_t computed = charrnn_crc64(0, data, len - 8);

    reader r = {data, len - 8, 8, 0};
    /* The version comes before the checksum, so that a file of a later version is named
     * as such rather than reported as damaged. */
    uint32_t version = get_u32(&r);
    r.pos = 8;
    if (version != FORMAT_VERSION) {
        charrnn_fail(err, "%s: checkpoint format version %u is not supported (this program "
                     "reads version %d)", path, version, FORMAT_VERSION);
        goto done;
    }
    if (stored != computed) {
        charrnn_fail(err, "%s: checksum mismatch (the file is damaged or truncated)", path);
        goto done;
    }
    if (parse(&r, path, ck, err) != 0)
        goto done;
    uint64_t model_len = get_u64(&r);
    if (r.truncated || model_len != r.len - r.pos) {
        charrnn_fail(err, "%s: damaged checkpoint (bad model size)", path);
        goto done;
    }
    if (load_library_checkpoint(data + r.pos, (size_t)model_len, backend, path, model, err) != 0)
        goto done;

    /* The model must be the one the settings and the vocabulary describe. */
    gpurnn_config mc;
    const charrnn_run_config *c = &ck->config;
    if (gpurnn_model_config(*model, &mc) != GPURNN_OK || mc.vocab_size != ck->vocab.size ||
        mc.hidden_size != c->hidden || mc.batch_size != c->batch || mc.max_seq_len != c->seq_len ||
        mc.dtype != c->dtype || mc.reduction != GPURNN_LOSS_MEAN) {
        charrnn_fail(err, "%s: damaged checkpoint (the model does not match its settings)", path);
        goto done;
    }
    rc = 0;

done:
    free(data);
    if (rc != 0) {
        gpurnn_model_destroy(*model);
        *model = NULL;
        charrnn_checkpoint_free(ck);
    }
    return rc;
}
