/* Checkpoints: gpurnn_model_save / _load and their user-data and memory-buffer variants.
 *
 * The byte layout is specified in docs/checkpoint-format.md; this file is its only
 * implementation. Every multi-byte value is composed byte by byte in little-endian
 * order, so the format does not depend on the host's byte order or struct padding.
 *
 * Two properties drive the structure:
 *  - Saving is crash-safe: the file is written under a temporary name beside the
 *    target, synced, then renamed over it, so the target always holds a complete old
 *    or new checkpoint.
 *  - Loading trusts nothing in the file: the header is validated and the exact file
 *    size checked before anything is allocated, then the whole file is checksummed
 *    through a fixed buffer, and only then are the model and the user-data buffer
 *    allocated and filled (checking the checksum again on that second read, in case the
 *    file changed meanwhile).
 * Memory use is bounded by one fixed scratch block, never by what a file claims or by
 * the model's size (the user data, whose size the file's own size backs, excepted).
 *
 * Files and memory buffers go through the same reader and writer (a byte source or sink
 * that is a descriptor or a buffer), so a buffer holds exactly the bytes of a file. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "alloc.h"
#include "crc64.h"
#include "error.h"
#include "layout.h"
#include "model.h"

/* Values are stored as IEEE-754 bit patterns; these guarantee that a float or double
 * copied into a same-sized integer gives those bits. */
_Static_assert(sizeof(float) == 4 && FLT_MANT_DIG == 24 && FLT_MAX_EXP == 128,
               "checkpoints need IEEE-754 binary32 floats");
_Static_assert(sizeof(double) == 8 && DBL_MANT_DIG == 53 && DBL_MAX_EXP == 1024,
               "checkpoints need IEEE-754 binary64 doubles");

enum {
    /* The version written. Versions 1 (no user data, a 104-byte header) and 2 (no cell
     * and number of layers, a 112-byte header) are still read, as one tanh layer. */
    CKPT_VERSION = 3,
    CKPT_V1_HEADER_BYTES = 104,
    CKPT_V2_HEADER_BYTES = 112,
    CKPT_HEADER_BYTES = 120,
    CKPT_TRAILER_BYTES = 8,
    /* Values moved per round trip between the backend and the file: 64 KiB of float64. */
    CKPT_CHUNK_VALUES = 8192,
    CKPT_IO_BYTES = CKPT_CHUNK_VALUES * 8,
    /* Attempts at a temporary file before giving up on a directory that keeps losing it
     * to concurrent cleaners (see create_temporary). */
    CKPT_TEMP_ATTEMPTS = 8,
};

/* The largest max_seq_len a checkpoint may hold (GPURNN_MAX_SEQ_LEN = 2^24, which
 * gpurnn_model_create enforces too). V, H and B are backed by the file's own size (it must
 * hold P parameters and B*H state values), but max_seq_len is not: without a limit a tiny
 * checksum-valid file could make the loader allocate (max_seq_len + 1) * B * H
 * hidden-state values for max_seq_len up to 2^31 - 1, tens of GiB for B = H = 1. With it,
 * the per-step buffers stay within 2^24 times the state the file holds (about 400 MiB for
 * B = H = 1). */
#define CKPT_MAX_SEQ_LEN GPURNN_MAX_SEQ_LEN

/* Field offsets in the header; docs/checkpoint-format.md has the same table. */
enum {
    OFF_MAGIC = 0,
    OFF_VERSION = 8,
    OFF_DTYPE = 12,
    OFF_ELEMENT_BYTES = 16,
    OFF_VOCAB = 20,
    OFF_HIDDEN = 24,
    OFF_BATCH = 28,
    OFF_MAX_SEQ_LEN = 32,
    OFF_REDUCTION = 36,
    OFF_SEED = 40,
    OFF_INIT_SCALE = 48,
    OFF_OPT_STARTED = 56,
    OFF_OPT_KIND = 60,
    OFF_OPT_STEPS = 64,
    OFF_OPT_SLOTS = 72,
    OFF_RESERVED = 76,
    OFF_PARAM_COUNT = 80,
    OFF_STATE_COUNT = 88,
    OFF_FILE_SIZE = 96,
    OFF_USER_DATA_BYTES = 104, /* version 2 on */
    OFF_CELL = 112,            /* version 3 on */
    OFF_NUM_LAYERS = 116,      /* version 3 on */
};
_Static_assert(OFF_FILE_SIZE + 8 == CKPT_V1_HEADER_BYTES, "the v1 header table and its size disagree");
_Static_assert(OFF_USER_DATA_BYTES + 8 == CKPT_V2_HEADER_BYTES, "the v2 header table and its size disagree");
_Static_assert(OFF_NUM_LAYERS + 4 == CKPT_HEADER_BYTES, "the header table and its size disagree");

/* PNG's trick: a high-bit first byte and a newline catch 7-bit and text-mode transfers,
 * and the name makes the file recognisable in a hex dump. */
static const unsigned char ckpt_magic[8] = {0x89, 'G', 'P', 'U', 'R', 'N', 'N', '\n'};

/* What messages call a memory buffer where they would name a file. */
static const char *const memory_name = "memory buffer";

/* The header, decoded into host types. */
typedef struct ckpt_header {
    uint32_t version;
    uint32_t dtype, element_bytes;
    uint32_t vocab_size, hidden_size, batch_size, max_seq_len;
    uint32_t reduction;
    uint64_t seed;
    double init_scale;
    uint32_t optimizer_started, optimizer_kind, optimizer_slots, reserved;
    uint64_t optimizer_steps;
    uint64_t param_count, state_count, file_size;
    uint64_t user_data_bytes;   /* 0 in version 1 */
    uint32_t cell, num_layers;  /* TANH and 1 in versions 1 and 2 */
    uint32_t header_bytes;      /* of this version: 104 (v1), 112 (v2) or 120 */
} ckpt_header;

static uint32_t header_bytes_of(uint32_t version)
{
    switch (version) {
    case 1: return CKPT_V1_HEADER_BYTES;
    case 2: return CKPT_V2_HEADER_BYTES;
    default: return CKPT_HEADER_BYTES;
    }
}

/* The parameter layout the header describes; only for a header that header_validate
 * accepted (or one built from a model), whose sizes fit in size_t. */
static void layout_of_header(const ckpt_header *h, gpurnn_layout *lay)
{
    gpurnn_layout_init(lay, h->vocab_size, h->hidden_size, (gpurnn_cell)h->cell, (int)h->num_layers);
}

/* One run of values in the payload, in file order. */
typedef enum { RULE_FINITE, RULE_NONNEGATIVE } value_rule;
typedef struct ckpt_section {
    gpurnn_buffer buffer;
    uint64_t count;
    const char *name;
    value_rule rule;
} ckpt_section;

/* Fixed-size working memory: decoded values and encoded bytes of one chunk. Heap, not
 * stack, so that saving and loading work on threads with small stacks. */
typedef struct ckpt_scratch {
    double values[CKPT_CHUNK_VALUES];
    unsigned char bytes[CKPT_IO_BYTES];
} ckpt_scratch;

/* ---- little-endian encoding ------------------------------------------------------ */

static void store_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void store_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void store_f32(unsigned char *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    store_u32(p, bits);
}

static void store_f64(unsigned char *p, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    store_u64(p, bits);
}

static uint32_t load_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint64_t load_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static float load_f32(const unsigned char *p)
{
    uint32_t bits = load_u32(p);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static double load_f64(const unsigned char *p)
{
    uint64_t bits = load_u64(p);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ---- messages -------------------------------------------------------------------- */

/* Paths can be long; keeping the last 200 bytes leaves room in the 512-byte message
 * for the part that says what went wrong. */
typedef struct shown_path {
    char text[208];
} shown_path;

static shown_path show_path(const char *path)
{
    shown_path s;
    size_t n = strlen(path);
    if (n <= 200)
        memcpy(s.text, path, n + 1);
    else
        snprintf(s.text, sizeof s.text, "...%s", path + n - 197);
    return s;
}

/* strerror is not thread-safe. The library is built with _POSIX_C_SOURCE, which selects
 * the XSI strerror_r; glibc's GNU variant (returning the text) is handled in case
 * _GNU_SOURCE ever gets defined. */
typedef struct errno_text {
    char text[128];
} errno_text;

static errno_text describe_errno(int err)
{
    errno_text e;
    e.text[0] = '\0';
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
    const char *msg = strerror_r(err, e.text, sizeof e.text);
    if (msg && msg != e.text) snprintf(e.text, sizeof e.text, "%s", msg);
#else
    if (strerror_r(err, e.text, sizeof e.text) != 0) e.text[0] = '\0';
#endif
    if (!e.text[0]) snprintf(e.text, sizeof e.text, "errno %d", err);
    return e;
}

/* "<fn>: checkpoint '<path>': <detail>", the form of every complaint about a file's
 * contents. */
static gpurnn_status fail_file(gpurnn_status status, const char *fn, const char *path,
                               const char *fmt, ...) GPURNN_PRINTF(4, 5);
static gpurnn_status fail_file(gpurnn_status status, const char *fn, const char *path,
                               const char *fmt, ...)
{
    char detail[320];
    va_list args;
    va_start(args, fmt);
    vsnprintf(detail, sizeof detail, fmt, args);
    va_end(args);
    if (path == memory_name) return gpurnn_fail(status, "%s: checkpoint in memory: %s", fn, detail);
    return gpurnn_fail(status, "%s: checkpoint '%s': %s", fn, show_path(path).text, detail);
}

/* "<fn>: cannot <action> '<path>': <strerror(err)>" */
static gpurnn_status fail_errno(const char *fn, const char *action, const char *path, int err)
{
    return gpurnn_fail(GPURNN_ERR_IO, "%s: cannot %s '%s': %s", fn, action, show_path(path).text,
                       describe_errno(err).text);
}

/* ---- layout of a file ------------------------------------------------------------- */

static int add_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (b > UINT64_MAX - a) return 0;
    *out = a + b;
    return 1;
}

static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a) return 0;
    *out = a * b;
    return 1;
}

static uint32_t slots_for(uint32_t started, uint32_t kind)
{
    if (!started) return 0;
    return kind == GPURNN_ADAM ? 2u : 1u;
}

/* Total file size for the counts in h; 0 if it does not fit in 64 bits. */
static uint64_t expected_file_size(const ckpt_header *h)
{
    uint64_t values, bytes, total;
    if (!mul_u64(h->param_count, 1u + (uint64_t)h->optimizer_slots, &values)) return 0;
    if (!add_u64(values, h->state_count, &values)) return 0;
    if (!mul_u64(values, h->element_bytes, &bytes)) return 0;
    if (!add_u64(bytes, h->user_data_bytes, &bytes)) return 0;
    if (!add_u64(bytes, (uint64_t)h->header_bytes + CKPT_TRAILER_BYTES, &total)) return 0;
    return total;
}

/* The payload's runs, in file order: parameters, the optimizer slots in use, carried
 * state. Returns how many. */
static int payload_sections(const ckpt_header *h, ckpt_section out[4])
{
    int n = 0;
    out[n++] = (ckpt_section){GPURNN_BUF_PARAMS, h->param_count, "parameter", RULE_FINITE};
    if (h->optimizer_slots >= 1) {
        /* Squared-gradient accumulators only grow, and in float32 they may overflow to
         * +inf while every parameter stays finite; accept that, refuse NaN and negatives. */
        switch (h->optimizer_kind) {
        case GPURNN_SGD:
            out[n++] = (ckpt_section){GPURNN_BUF_OPT0, h->param_count, "SGD velocity", RULE_FINITE};
            break;
        case GPURNN_ADAGRAD:
            out[n++] =
                (ckpt_section){GPURNN_BUF_OPT0, h->param_count, "Adagrad memory", RULE_NONNEGATIVE};
            break;
        default:
            out[n++] =
                (ckpt_section){GPURNN_BUF_OPT0, h->param_count, "Adam first moment", RULE_FINITE};
            break;
        }
    }
    if (h->optimizer_slots >= 2)
        out[n++] =
            (ckpt_section){GPURNN_BUF_OPT1, h->param_count, "Adam second moment", RULE_NONNEGATIVE};
    out[n++] = (ckpt_section){GPURNN_BUF_STATE, h->state_count, "carried state", RULE_FINITE};
    return n;
}

/* Checks a chunk of a section against its rule; on the first bad value writes a
 * description ("parameter Whh[2, 3] is nan ...") to why and returns 0. */
static int check_values(const ckpt_header *h, const ckpt_section *s, uint64_t first,
                        const double *v, size_t n, char *why, size_t cap)
{
    for (size_t i = 0; i < n; i++) {
        int ok = s->rule == RULE_FINITE ? isfinite(v[i]) : (v[i] >= 0); /* NaN fails both */
        if (ok) continue;
        size_t at = (size_t)(first + i);
        char where[96];
        where[0] = ' ';
        gpurnn_layout lay;
        layout_of_header(h, &lay);
        if (s->buffer == GPURNN_BUF_STATE)
            gpurnn_layout_describe_state(&lay, h->batch_size, at, where + 1, sizeof where - 1);
        else
            gpurnn_layout_describe(&lay, at, where + 1, sizeof where - 1);
        const char *sep = s->buffer == GPURNN_BUF_PARAMS ? "" : " at";
        snprintf(why, cap, "%s%s%s is %g, but it must be %s", s->name, sep, where, v[i],
                 s->rule == RULE_FINITE ? "finite" : ">= 0");
        return 0;
    }
    return 1;
}

/* ---- the header ------------------------------------------------------------------- */

static void header_from_model(const gpurnn_model *m, size_t user_data_bytes, ckpt_header *h)
{
    const gpurnn_config *c = &m->cfg;
    memset(h, 0, sizeof *h);
    h->version = CKPT_VERSION;
    h->header_bytes = CKPT_HEADER_BYTES;
    h->user_data_bytes = user_data_bytes;
    h->cell = (uint32_t)m->layout.cell;
    h->num_layers = (uint32_t)m->layout.L;
    h->dtype = (uint32_t)c->dtype;
    h->element_bytes = c->dtype == GPURNN_F64 ? 8u : 4u;
    h->vocab_size = (uint32_t)c->vocab_size;
    h->hidden_size = (uint32_t)c->hidden_size;
    h->batch_size = (uint32_t)c->batch_size;
    h->max_seq_len = (uint32_t)c->max_seq_len;
    h->reduction = (uint32_t)c->reduction;
    h->seed = (uint64_t)c->seed;
    h->init_scale = c->init_scale;
    /* Once reset, the kind and count mean nothing; writing zeros keeps one canonical
     * file per model state. */
    h->optimizer_started = m->optimizer_started ? 1u : 0u;
    h->optimizer_kind = m->optimizer_started ? (uint32_t)m->optimizer_kind : 0u;
    h->optimizer_steps = m->optimizer_started ? (uint64_t)m->optimizer_steps : 0u;
    h->optimizer_slots = slots_for(h->optimizer_started, h->optimizer_kind);
    h->param_count = m->param_count;
    h->state_count = m->state_count;
    h->file_size = expected_file_size(h);
}

static void header_encode(const ckpt_header *h, unsigned char *p)
{
    memcpy(p + OFF_MAGIC, ckpt_magic, sizeof ckpt_magic);
    store_u32(p + OFF_VERSION, h->version);
    store_u32(p + OFF_DTYPE, h->dtype);
    store_u32(p + OFF_ELEMENT_BYTES, h->element_bytes);
    store_u32(p + OFF_VOCAB, h->vocab_size);
    store_u32(p + OFF_HIDDEN, h->hidden_size);
    store_u32(p + OFF_BATCH, h->batch_size);
    store_u32(p + OFF_MAX_SEQ_LEN, h->max_seq_len);
    store_u32(p + OFF_REDUCTION, h->reduction);
    store_u64(p + OFF_SEED, h->seed);
    store_f64(p + OFF_INIT_SCALE, h->init_scale);
    store_u32(p + OFF_OPT_STARTED, h->optimizer_started);
    store_u32(p + OFF_OPT_KIND, h->optimizer_kind);
    store_u64(p + OFF_OPT_STEPS, h->optimizer_steps);
    store_u32(p + OFF_OPT_SLOTS, h->optimizer_slots);
    store_u32(p + OFF_RESERVED, h->reserved);
    store_u64(p + OFF_PARAM_COUNT, h->param_count);
    store_u64(p + OFF_STATE_COUNT, h->state_count);
    store_u64(p + OFF_FILE_SIZE, h->file_size);
    if (h->version >= 2) store_u64(p + OFF_USER_DATA_BYTES, h->user_data_bytes);
    if (h->version >= 3) {
        store_u32(p + OFF_CELL, h->cell);
        store_u32(p + OFF_NUM_LAYERS, h->num_layers);
    }
}

/* Reads the fields of the header from the first avail bytes of a file of actual_size
 * bytes, checking only what is needed to know how to checksum the file: that it is a
 * checkpoint (magic), of this version, and as long as its header says. The other
 * fields are judged by header_validate once the checksum has shown whether the header
 * is damaged, so that a flipped bit is reported as damage, not as an odd value. */
static gpurnn_status header_read(const char *load_fn, const char *path, const unsigned char *p,
                                 size_t avail, uint64_t actual_size, ckpt_header *h)
{
    uint64_t minimum = CKPT_V1_HEADER_BYTES + CKPT_TRAILER_BYTES;
    size_t magic_seen = avail < sizeof ckpt_magic ? avail : sizeof ckpt_magic;
    if (memcmp(p, ckpt_magic, magic_seen) != 0) {
        char first[3 * sizeof ckpt_magic + 1] = "";
        for (size_t i = 0, len = 0; i < magic_seen; i++, len = strlen(first))
            snprintf(first + len, sizeof first - len, i ? " %02x" : "%02x", p[i]);
        return fail_file(GPURNN_ERR_FORMAT, load_fn, path,
                         "bad magic: the file starts with %s, not 89 47 50 55 52 4e 4e 0a "
                         "(\"\\x89GPURNN\\n\"); it is not a libgpurnn checkpoint",
                         first);
    }
    /* The version comes before any size check so that a file from another format
     * version is reported as such, not as truncated. */
    if (avail >= OFF_VERSION + 4) {
        uint32_t version = load_u32(p + OFF_VERSION);
        if (version < 1 || version > CKPT_VERSION)
            return fail_file(GPURNN_ERR_FORMAT, load_fn, path,
                             "checkpoint format version %" PRIu32
                             " is not supported (this library reads versions 1 to %d)",
                             version, CKPT_VERSION);
        minimum = header_bytes_of(version) + CKPT_TRAILER_BYTES;
    }
    if (actual_size < minimum)
        return fail_file(GPURNN_ERR_FORMAT, load_fn, path,
                         "truncated: file has %" PRIu64
                         " bytes, but a checkpoint has at least %" PRIu64,
                         actual_size, minimum);

    memset(h, 0, sizeof *h);
    h->version = load_u32(p + OFF_VERSION);
    h->dtype = load_u32(p + OFF_DTYPE);
    h->element_bytes = load_u32(p + OFF_ELEMENT_BYTES);
    h->vocab_size = load_u32(p + OFF_VOCAB);
    h->hidden_size = load_u32(p + OFF_HIDDEN);
    h->batch_size = load_u32(p + OFF_BATCH);
    h->max_seq_len = load_u32(p + OFF_MAX_SEQ_LEN);
    h->reduction = load_u32(p + OFF_REDUCTION);
    h->seed = load_u64(p + OFF_SEED);
    h->init_scale = load_f64(p + OFF_INIT_SCALE);
    h->optimizer_started = load_u32(p + OFF_OPT_STARTED);
    h->optimizer_kind = load_u32(p + OFF_OPT_KIND);
    h->optimizer_steps = load_u64(p + OFF_OPT_STEPS);
    h->optimizer_slots = load_u32(p + OFF_OPT_SLOTS);
    h->reserved = load_u32(p + OFF_RESERVED);
    h->param_count = load_u64(p + OFF_PARAM_COUNT);
    h->state_count = load_u64(p + OFF_STATE_COUNT);
    h->file_size = load_u64(p + OFF_FILE_SIZE);
    h->header_bytes = header_bytes_of(h->version);
    h->user_data_bytes = h->version >= 2 ? load_u64(p + OFF_USER_DATA_BYTES) : 0;
    h->cell = h->version >= 3 ? load_u32(p + OFF_CELL) : (uint32_t)GPURNN_CELL_TANH;
    h->num_layers = h->version >= 3 ? load_u32(p + OFF_NUM_LAYERS) : 1u;

    if (actual_size < h->file_size)
        return fail_file(GPURNN_ERR_FORMAT, load_fn, path,
                         "truncated: file has %" PRIu64 " bytes, header says %" PRIu64, actual_size,
                         h->file_size);
    if (actual_size > h->file_size)
        return fail_file(GPURNN_ERR_FORMAT, load_fn, path,
                         "file has %" PRIu64 " bytes, header says %" PRIu64 " (%" PRIu64
                         " unexpected bytes at the end)",
                         actual_size, h->file_size, actual_size - h->file_size);
    return GPURNN_OK;
}

/* Parameter and state counts of the header's dimensions, cell and L, computed with
 * overflow checks (the layout's size_t arithmetic has none); 0 if either exceeds 64 bits.
 * The same sums as gpurnn_layout_init: every layer's W_ih and W_hh, Why, the biases, by. */
static int counts_fit(const ckpt_header *h, uint64_t *params, uint64_t *states)
{
    const uint64_t V = h->vocab_size, H = h->hidden_size, B = h->batch_size, L = h->num_layers;
    const uint64_t G = (uint64_t)gpurnn_cell_gates((gpurnn_cell)h->cell);
    const int two_biases = h->cell == GPURNN_CELL_GRU || h->cell == GPURNN_CELL_LSTM;
    uint64_t GH, first, upper, above, output, biases, bias_total, total = 0, per_kind, kinds;
    /* V, H, B < 2^31 and G <= 4, so GH, V + H, 2H and VH fit; the products with L or a
     * second dimension may not. */
    GH = G * H;
    if (!mul_u64(GH, V + H, &first) || !mul_u64(GH, 2 * H, &upper) ||
        !mul_u64(L - 1, upper, &above))
        return 0;
    output = V * H;
    biases = two_biases ? 2 * GH : H;
    if (!mul_u64(L, biases, &bias_total)) return 0;
    if (!add_u64(total, first, &total) || !add_u64(total, above, &total) ||
        !add_u64(total, output, &total) || !add_u64(total, bias_total, &total) ||
        !add_u64(total, V, &total))
        return 0;
    kinds = h->cell == GPURNN_CELL_LSTM ? 2 : 1;
    if (!mul_u64(L * kinds, B * H, &per_kind)) return 0;
    *params = total;
    *states = per_kind;
    return 1;
}

static int dimension_ok(const char *name, uint32_t v, char *why, size_t cap)
{
    /* The config holds ints; the real bound on V, H and B is that the file must hold
     * their buffers, which the exact-size check enforces before anything is allocated. */
    if (v >= 1 && v <= (uint32_t)INT_MAX) return 1;
    snprintf(why, cap, "%s %" PRIu32 " is outside [1, %d]", name, v, INT_MAX);
    return 0;
}

/* Everything the rest of the loader relies on (enum ranges, counts that match the
 * dimensions, sizes that fit, file_size equal to what the dimensions give) is
 * established here. Returns 1 if the header is valid; otherwise writes why. */
static int header_validate(const ckpt_header *h, char *why, size_t cap)
{
#define REJECT(...)                                                                                \
    do {                                                                                           \
        snprintf(why, cap, __VA_ARGS__);                                                           \
        return 0;                                                                                  \
    } while (0)
    if (h->dtype != GPURNN_F32 && h->dtype != GPURNN_F64)
        REJECT("dtype %" PRIu32 " is not 0 (float32) or 1 (float64)", h->dtype);
    uint32_t element_bytes = h->dtype == GPURNN_F64 ? 8u : 4u;
    if (h->element_bytes != element_bytes)
        REJECT("element size %" PRIu32 " does not match dtype %s (%" PRIu32 " bytes)",
               h->element_bytes, h->dtype == GPURNN_F64 ? "float64" : "float32", element_bytes);
    if (!dimension_ok("vocab_size", h->vocab_size, why, cap) ||
        !dimension_ok("hidden_size", h->hidden_size, why, cap) ||
        !dimension_ok("batch_size", h->batch_size, why, cap))
        return 0;
    if (h->max_seq_len < 1 || h->max_seq_len > CKPT_MAX_SEQ_LEN)
        REJECT("max_seq_len %" PRIu32 " is outside [1, %d] (the format's limit)", h->max_seq_len,
               CKPT_MAX_SEQ_LEN);
    if (h->reduction != GPURNN_LOSS_SUM && h->reduction != GPURNN_LOSS_MEAN)
        REJECT("loss reduction %" PRIu32 " is not 0 (sum) or 1 (mean)", h->reduction);
    if (!isfinite(h->init_scale) || h->init_scale < 0)
        REJECT("init_scale %g is not finite and >= 0", h->init_scale);
    if (h->optimizer_started > 1)
        REJECT("optimizer_started %" PRIu32 " is not 0 or 1", h->optimizer_started);
    if (h->optimizer_kind > GPURNN_ADAM)
        REJECT("optimizer kind %" PRIu32 " is not 0 (SGD), 1 (Adagrad) or 2 (Adam)",
               h->optimizer_kind);
    if (h->optimizer_steps > (uint64_t)INT64_MAX)
        REJECT("optimizer step count %" PRIu64 " is larger than 2^63 - 1", h->optimizer_steps);
    if (!h->optimizer_started && (h->optimizer_kind != 0 || h->optimizer_steps != 0))
        REJECT("optimizer not started, but its kind is %" PRIu32 " and step count %" PRIu64
               " (both must be 0)",
               h->optimizer_kind, h->optimizer_steps);
    uint32_t slots = slots_for(h->optimizer_started, h->optimizer_kind);
    if (h->optimizer_slots != slots)
        REJECT("%" PRIu32 " optimizer slots stored, but this optimizer state has %" PRIu32,
               h->optimizer_slots, slots);
    if (h->reserved != 0) REJECT("reserved field is %" PRIu32 ", not 0", h->reserved);
    if (h->user_data_bytes > GPURNN_USER_DATA_MAX)
        REJECT("user data of %" PRIu64 " bytes is larger than GPURNN_USER_DATA_MAX (%zu)",
               h->user_data_bytes, GPURNN_USER_DATA_MAX);

    if (h->cell > GPURNN_CELL_LSTM)
        REJECT("cell %" PRIu32 " is not 0 (tanh), 1 (relu), 2 (gru) or 3 (lstm)", h->cell);
    if (h->num_layers < 1 || h->num_layers > GPURNN_MAX_LAYERS)
        REJECT("num_layers %" PRIu32 " is outside [1, %d] (GPURNN_MAX_LAYERS)", h->num_layers,
               GPURNN_MAX_LAYERS);

    uint64_t V = h->vocab_size, H = h->hidden_size, B = h->batch_size, L = h->num_layers;
    const char *cell = gpurnn_cell_name((gpurnn_cell)h->cell);
    uint64_t params, states;
    if (!counts_fit(h, &params, &states))
        REJECT("absurd size: vocab_size %" PRIu64 ", hidden_size %" PRIu64 ", batch_size %" PRIu64
               ", cell %s and num_layers %" PRIu64 " give more than 2^64 - 1 values",
               V, H, B, cell, L);
    if (params > SIZE_MAX || states > SIZE_MAX)
        REJECT("%" PRIu64 " parameters and %" PRIu64 " state values do not fit in this machine's "
               "size_t", params, states);
    /* Sizes fit now, so the layout (the library's one definition of it) can be built. */
    gpurnn_layout lay;
    layout_of_header(h, &lay);
    if (h->param_count != lay.count)
        REJECT("param_count %" PRIu64 " does not match vocab_size %" PRIu64 ", hidden_size %" PRIu64
               ", cell %s (G = %d) and num_layers %" PRIu64
               " (GH(V + H) + (L - 1)GH(2H) + VH + %s + V = %zu)",
               h->param_count, V, H, cell, lay.G, L, lay.two_biases ? "2LGH" : "LH", lay.count);
    const size_t state_values = gpurnn_layout_state_count(&lay, (size_t)B);
    if (h->state_count != state_values)
        REJECT("state_count %" PRIu64 " does not match %snum_layers * batch_size * hidden_size = %zu"
               " (cell %s, num_layers %" PRIu64 ", batch_size %" PRIu64 ", hidden_size %" PRIu64 ")",
               h->state_count, lay.cell == GPURNN_CELL_LSTM ? "2 (h and c) * " : "", state_values,
               cell, L, B, H);
    uint64_t expected = expected_file_size(h);
    if (expected == 0 || expected > (uint64_t)INT64_MAX)
        REJECT("absurd size: %" PRIu64 " parameters and %" PRIu64
               " state values do not fit in a file",
               h->param_count, h->state_count);
    if (h->file_size != expected)
        REJECT("header says the file has %" PRIu64 " bytes, but its dimensions give %" PRIu64,
               h->file_size, expected);
    return 1;
#undef REJECT
}

/* ---- byte sink: buffered writer with a running CRC ----------------------------------- */

/* Where a writer's bytes go: a file, a caller's buffer, or nowhere (a dry run that only
 * checks the values, so that a memory save changes the buffer only once it cannot fail). */
typedef enum { SINK_FILE, SINK_MEMORY, SINK_DISCARD } sink_kind;

typedef struct ckpt_writer {
    sink_kind kind;
    int fd;                 /* SINK_FILE */
    unsigned char *mem;     /* SINK_MEMORY: room for mem_cap bytes, mem_len used */
    size_t mem_len, mem_cap;
    unsigned char *buf;
    size_t len, cap;
    uint64_t crc;
    int err; /* errno of the first failed write, 0 if none */
} ckpt_writer;

static int write_all(int fd, const unsigned char *p, size_t n, int *err)
{
    while (n > 0) {
        ssize_t done = write(fd, p, n);
        if (done < 0) {
            if (errno == EINTR) continue;
            *err = errno;
            return 0;
        }
        if (done == 0) { /* not expected of a regular file; do not spin */
            *err = EIO;
            return 0;
        }
        p += done;
        n -= (size_t)done;
    }
    return 1;
}

static int sink_write(ckpt_writer *w, const unsigned char *p, size_t n)
{
    switch (w->kind) {
    case SINK_FILE: return write_all(w->fd, p, n, &w->err);
    case SINK_MEMORY:
        /* The caller sized the buffer from the same header; running out is a bug, but
         * must not write past the end. */
        if (w->mem_cap - w->mem_len < n) {
            w->err = ENOSPC;
            return 0;
        }
        memcpy(w->mem + w->mem_len, p, n);
        w->mem_len += n;
        return 1;
    case SINK_DISCARD: return 1;
    }
    return 0;
}

static int writer_flush(ckpt_writer *w)
{
    if (w->err) return 0;
    w->crc = gpurnn_crc64_update(w->crc, w->buf, w->len);
    if (!sink_write(w, w->buf, w->len)) return 0;
    w->len = 0;
    return 1;
}

/* Room for n (<= cap) bytes, to be filled by the caller; NULL after a write error. */
static unsigned char *writer_reserve(ckpt_writer *w, size_t n)
{
    if (w->cap - w->len < n && !writer_flush(w)) return NULL;
    unsigned char *p = w->buf + w->len;
    w->len += n;
    return p;
}

/* ---- byte source: buffered reader with a running CRC --------------------------------- */

typedef struct ckpt_reader {
    const char *fn;   /* the public function, for messages */
    int fd;           /* -1 when reading from memory */
    const unsigned char *mem;
    const char *path; /* or memory_name */
    uint64_t size;    /* bytes the file had when opened */
    uint64_t crc_end; /* bytes before this offset are covered by the checksum */
    uint64_t filled;  /* file offset just past the last byte read */
    uint64_t crc;
    unsigned char *buf;
    size_t start, end, cap;
} ckpt_reader;

/* File offset of the next byte reader_take will hand out. */
static uint64_t reader_offset(const ckpt_reader *r) { return r->filled - (r->end - r->start); }

static void reader_rewind(ckpt_reader *r)
{
    r->filled = 0;
    r->crc = 0;
    r->start = r->end = 0;
}

/* Up to want bytes from the source at offset r->filled: the count, 0 at the end of a
 * file, -1 with errno set on a read error. */
static ssize_t source_read(ckpt_reader *r, unsigned char *dst, size_t want)
{
    if (r->fd < 0) {
        memcpy(dst, r->mem + r->filled, want); /* want never passes r->size */
        return (ssize_t)want;
    }
    return read(r->fd, dst, want);
}

/* Points *out at the next n (<= cap) bytes of the file. Reads never go past the size
 * the file had when opened, so the checksum covers exactly the bytes before crc_end. */
static gpurnn_status reader_take(ckpt_reader *r, size_t n, const unsigned char **out)
{
    if (r->end - r->start < n) {
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
        while (r->end < n) {
            uint64_t left = r->size - r->filled;
            size_t want = r->cap - r->end;
            if (want > left) want = (size_t)left;
            if (want == 0)
                return fail_file(GPURNN_ERR_FORMAT, r->fn, r->path,
                                 "unexpected end of data at byte %" PRIu64, r->filled);
            ssize_t got = source_read(r, r->buf + r->end, want);
            if (got < 0) {
                if (errno == EINTR) continue;
                return fail_errno(r->fn, "read", r->path, errno);
            }
            if (got == 0)
                return fail_file(GPURNN_ERR_FORMAT, r->fn, r->path,
                                 "the file shrank to %" PRIu64
                                 " bytes while it was read (it had %" PRIu64 ")",
                                 r->filled, r->size);
            if (r->filled < r->crc_end) {
                uint64_t covered = r->crc_end - r->filled;
                size_t c = (uint64_t)got < covered ? (size_t)got : (size_t)covered;
                r->crc = gpurnn_crc64_update(r->crc, r->buf + r->end, c);
            }
            r->filled += (uint64_t)got;
            r->end += (size_t)got;
        }
    }
    *out = r->buf + r->start;
    r->start += n;
    return GPURNN_OK;
}

/* After the trailer: a file that grew since it was opened was being rewritten. */
static gpurnn_status reader_expect_end(ckpt_reader *r)
{
    if (r->fd < 0) return GPURNN_OK;
    unsigned char extra;
    for (;;) {
        ssize_t got = read(r->fd, &extra, 1);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return fail_errno(r->fn, "read", r->path, errno);
        if (got > 0)
            return fail_file(GPURNN_ERR_FORMAT, r->fn, r->path,
                             "the file grew beyond %" PRIu64 " bytes while it was read", r->size);
        return GPURNN_OK;
    }
}

/* ---- saving: the bytes ----------------------------------------------------------------- */

/* Streams one buffer from the backend into the writer, chunk by chunk. */
static gpurnn_status save_section(const gpurnn_model *m, const ckpt_header *h,
                                  const ckpt_section *s, ckpt_writer *w, double *values,
                                  const char *fn, const char *path)
{
    size_t eb = h->element_bytes;
    for (uint64_t off = 0; off < s->count;) {
        size_t n =
            s->count - off < CKPT_CHUNK_VALUES ? (size_t)(s->count - off) : CKPT_CHUNK_VALUES;
        gpurnn_status st = m->ops->read(m->ctx, s->buffer, (size_t)off, n, values);
        if (st != GPURNN_OK) return gpurnn_fail_context(st, fn);
        /* Refuse to write what load would reject, so the previous checkpoint survives. */
        char why[200];
        if (!check_values(h, s, off, values, n, why, sizeof why)) {
            if (path == memory_name)
                return gpurnn_fail(GPURNN_ERR_NUMERIC, "%s: cannot save: %s", fn, why);
            return gpurnn_fail(GPURNN_ERR_NUMERIC, "%s: cannot save '%s': %s", fn,
                               show_path(path).text, why);
        }
        unsigned char *p = writer_reserve(w, n * eb);
        if (!p) return fail_errno(fn, "write checkpoint", path, w->err);
        if (eb == 4)
            for (size_t i = 0; i < n; i++) store_f32(p + 4 * i, (float)values[i]);
        else
            for (size_t i = 0; i < n; i++) store_f64(p + 8 * i, values[i]);
        off += n;
    }
    return GPURNN_OK;
}

/* Header, payload, user data and checksum into the writer (whose buffer is scratch's). */
static gpurnn_status save_contents(const gpurnn_model *m, const ckpt_header *h,
                                   const unsigned char *user_data, ckpt_writer *w,
                                   ckpt_scratch *scratch, const char *fn, const char *path)
{
    unsigned char *p = writer_reserve(w, CKPT_HEADER_BYTES);
    if (!p) return fail_errno(fn, "write checkpoint", path, w->err);
    header_encode(h, p);

    ckpt_section sections[4];
    int count = payload_sections(h, sections);
    for (int i = 0; i < count; i++) {
        gpurnn_status s = save_section(m, h, &sections[i], w, scratch->values, fn, path);
        if (s != GPURNN_OK) return s;
    }
    for (uint64_t off = 0; off < h->user_data_bytes;) {
        size_t n = h->user_data_bytes - off < w->cap ? (size_t)(h->user_data_bytes - off) : w->cap;
        p = writer_reserve(w, n);
        if (!p) return fail_errno(fn, "write checkpoint", path, w->err);
        memcpy(p, user_data + off, n);
        off += n;
    }
    if (!writer_flush(w)) return fail_errno(fn, "write checkpoint", path, w->err);
    unsigned char trailer[CKPT_TRAILER_BYTES];
    store_u64(trailer, w->crc);
    if (!sink_write(w, trailer, sizeof trailer))
        return fail_errno(fn, "write checkpoint", path, w->err);
    return GPURNN_OK;
}

/* The checks every save makes before it touches a file or buffer; fills *h. */
static gpurnn_status save_prepare(const char *fn, const gpurnn_model *m, const void *user_data,
                                  size_t user_data_size, ckpt_header *h)
{
    if (!m) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: model is NULL", fn);
    if (!user_data && user_data_size > 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: user_data is NULL, but user_data_size is %zu", fn, user_data_size);
    if (user_data_size > GPURNN_USER_DATA_MAX)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: user_data_size = %zu is larger than GPURNN_USER_DATA_MAX = %zu", fn,
                           user_data_size, GPURNN_USER_DATA_MAX);
    header_from_model(m, user_data_size, h);
    /* gpurnn_model_create refuses what a checkpoint cannot hold, and a model that exists
     * fits in memory, so its file size fits in 64 bits; this is defence in depth. */
    if (h->file_size == 0 || m->cfg.max_seq_len > CKPT_MAX_SEQ_LEN)
        return gpurnn_fail(GPURNN_ERR_INVALID_STATE,
                           "%s: the model's size does not fit a checkpoint", fn);
    return GPURNN_OK;
}

static ckpt_scratch *scratch_new(const char *fn, gpurnn_status *status)
{
    ckpt_scratch *scratch = gpurnn_malloc(sizeof *scratch);
    *status = scratch ? GPURNN_OK
                      : gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes", fn,
                                    sizeof *scratch);
    return scratch;
}

/* ---- saving to a file -------------------------------------------------------------------- */

typedef struct save_job {
    const char *fn;
    const char *path;
    char *dir;        /* directory part of path, for the temporary file and the final sync */
    const char *base; /* file name part of path */
    char *tmp;        /* temporary file name; exists on disk while fd >= 0 and !renamed */
    int fd;
    int renamed;
} save_job;

static gpurnn_status split_path(save_job *job)
{
    const char *slash = strrchr(job->path, '/');
    size_t dir_len = !slash ? 1 : slash == job->path ? 1 : (size_t)(slash - job->path);
    const char *dir_src = !slash ? "." : slash == job->path ? "/" : job->path;
    job->base = slash ? slash + 1 : job->path;
    job->dir = gpurnn_malloc(dir_len + 1);
    job->tmp = gpurnn_malloc(strlen(job->path) + sizeof ".tmp-XXXXXX");
    if (!job->dir || !job->tmp)
        return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY, "%s: cannot allocate %zu bytes for file names",
                           job->fn, dir_len + 1 + strlen(job->path) + sizeof ".tmp-XXXXXX");
    memcpy(job->dir, dir_src, dir_len);
    job->dir[dir_len] = '\0';
    return GPURNN_OK;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino;
}

/* A save killed before its rename leaves "<path>.tmp-XXXXXX" behind. A live save holds
 * an flock on its temporary file for as long as the name exists (see
 * create_temporary), and the kernel drops it when the process dies, so a temporary
 * file of this path that can be locked belongs to no running save and is removed.
 * flock, unlike fcntl locks, also excludes another thread of this process. Best effort:
 * whatever fails here is left alone. */
static void remove_stale_temporaries(const save_job *job)
{
    DIR *d = opendir(job->dir);
    if (!d) return;
    int dfd = dirfd(d);
    size_t base_len = strlen(job->base);
    const char *suffix = ".tmp-";
    size_t suffix_len = strlen(suffix);
    struct dirent *e;
    while (dfd >= 0 && (e = readdir(d)) != NULL) {
        const char *name = e->d_name;
        if (strlen(name) != base_len + suffix_len + 6 || strncmp(name, job->base, base_len) != 0 ||
            strncmp(name + base_len, suffix, suffix_len) != 0)
            continue;
        int fd = openat(dfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) continue;
        struct stat held, named;
        if (fstat(fd, &held) == 0 && S_ISREG(held.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            fstatat(dfd, name, &named, AT_SYMLINK_NOFOLLOW) == 0 && same_file(&held, &named))
            unlinkat(dfd, name, 0);
        close(fd);
    }
    closedir(d);
}

/* Creates and locks the temporary file. A concurrent save of the same path may be
 * removing stale temporaries: if it got to our fresh file before we locked it, the
 * name no longer leads to our file (or we cannot lock it), and we try a new name. */
static gpurnn_status create_temporary(save_job *job)
{
    for (int attempt = 0; attempt < CKPT_TEMP_ATTEMPTS; attempt++) {
        sprintf(job->tmp, "%s.tmp-XXXXXX", job->path);
        int fd = mkstemp(job->tmp);
        if (fd < 0) return fail_errno(job->fn, "create temporary file for", job->path, errno);
        (void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* a child of ours must not hold the lock */
        int locked = flock(fd, LOCK_EX | LOCK_NB) == 0;
        /* A file system without flock: save unlocked; cleaners cannot lock it either,
         * so they leave it alone. */
        int lockable = locked || (errno != EWOULDBLOCK && errno != EAGAIN);
        struct stat held, named;
        if (lockable && fstat(fd, &held) == 0 && lstat(job->tmp, &named) == 0 &&
            same_file(&held, &named)) {
            job->fd = fd;
            return GPURNN_OK;
        }
        close(fd); /* the cleaner that holds or removed it unlinks it */
    }
    return gpurnn_fail(GPURNN_ERR_IO,
                       "%s: cannot create temporary file for '%s': it was removed %d times by "
                       "concurrent saves",
                       job->fn, show_path(job->path).text, CKPT_TEMP_ATTEMPTS);
}

/* The temporary file is private to mkstemp (0600); give the checkpoint the permissions
 * of the file it replaces, or 0644 for a new one. Best effort: some file systems have
 * no permissions to set. */
static void set_permissions(const save_job *job)
{
    struct stat old;
    mode_t mode = 0644;
    if (stat(job->path, &old) == 0 && S_ISREG(old.st_mode)) mode = old.st_mode & 0777;
    (void)fchmod(job->fd, mode);
}

static int fsync_retrying(int fd)
{
    int r;
    do r = fsync(fd);
    while (r != 0 && errno == EINTR);
    return r;
}

/* Makes the new file durable, then atomically visible. The descriptor (and with it the
 * lock that protects the temporary name) is kept until after the rename. */
static gpurnn_status save_commit(save_job *job)
{
    if (fsync_retrying(job->fd) != 0) return fail_errno(job->fn, "sync to disk", job->path, errno);
    if (rename(job->tmp, job->path) != 0)
        return fail_errno(job->fn, "rename the temporary file over", job->path, errno);
    job->renamed = 1;

    /* The rename is durable only once the directory is synced. Some file systems do not
     * sync directories (EINVAL, ENOTSUP) or cannot open them for reading; the file is
     * already in place then, so only real I/O errors are reported. */
    int err = 0;
    int dfd = open(job->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync_retrying(dfd) != 0 && errno != EINVAL && errno != ENOTSUP &&
            errno != EOPNOTSUPP && errno != EBADF && errno != EROFS)
            err = errno;
        close(dfd);
    }
    int fd = job->fd;
    job->fd = -1;
    if (close(fd) != 0 && errno != EINTR && !err) err = errno;
    if (err)
        return gpurnn_fail(GPURNN_ERR_IO,
                           "%s: the checkpoint '%s' was written, but syncing its directory '%s' "
                           "failed: %s",
                           job->fn, show_path(job->path).text, show_path(job->dir).text,
                           describe_errno(err).text);
    return GPURNN_OK;
}

static gpurnn_status save_to_path(const char *fn, const gpurnn_model *m, const void *user_data,
                                  size_t user_data_size, const char *path)
{
    ckpt_header h;
    gpurnn_status s = save_prepare(fn, m, user_data, user_data_size, &h);
    if (s != GPURNN_OK) return s;
    if (!path) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
    if (!path[0]) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: path is empty", fn);

    save_job job = {.fn = fn, .path = path, .fd = -1};
    ckpt_scratch *scratch = scratch_new(fn, &s);
    if (s == GPURNN_OK) s = split_path(&job);
    if (s == GPURNN_OK) {
        remove_stale_temporaries(&job);
        s = create_temporary(&job);
    }
    if (s == GPURNN_OK) {
        set_permissions(&job);
        ckpt_writer w = {.kind = SINK_FILE, .fd = job.fd, .buf = scratch->bytes,
                         .cap = sizeof scratch->bytes};
        s = save_contents(m, &h, user_data, &w, scratch, fn, path);
    }
    if (s == GPURNN_OK) s = save_commit(&job);
    if (job.fd >= 0) {
        /* Unlink before close: the name must not outlive the lock that marks it live. */
        if (!job.renamed) unlink(job.tmp);
        close(job.fd);
    }
    gpurnn_free(job.tmp);
    gpurnn_free(job.dir);
    gpurnn_free(scratch);
    return s;
}

gpurnn_status gpurnn_model_save(const gpurnn_model *m, const char *path)
{
    return save_to_path("gpurnn_model_save", m, NULL, 0, path);
}

gpurnn_status gpurnn_model_save_with_user_data(const gpurnn_model *m, const void *user_data,
                                               size_t user_data_size, const char *path)
{
    return save_to_path("gpurnn_model_save_with_user_data", m, user_data, user_data_size, path);
}

/* ---- saving to memory ----------------------------------------------------------------------- */

gpurnn_status gpurnn_model_save_size(const gpurnn_model *m, size_t user_data_size, size_t *size)
{
    const char *fn = "gpurnn_model_save_size";
    if (!size) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: size is NULL", fn);
    /* The size does not depend on the bytes, only on their count: any non-NULL pointer
     * passes save_prepare's check. */
    ckpt_header h;
    gpurnn_status s = save_prepare(fn, m, fn, user_data_size, &h);
    if (s != GPURNN_OK) return s;
    if (h.file_size > SIZE_MAX)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: the checkpoint has %" PRIu64 " bytes, more than a size_t holds", fn,
                           h.file_size);
    *size = (size_t)h.file_size;
    return GPURNN_OK;
}

gpurnn_status gpurnn_model_save_to_memory(const gpurnn_model *m, const void *user_data,
                                          size_t user_data_size, void *buffer, size_t buffer_size,
                                          size_t *written)
{
    const char *fn = "gpurnn_model_save_to_memory";
    ckpt_header h;
    gpurnn_status s = save_prepare(fn, m, user_data, user_data_size, &h);
    if (s != GPURNN_OK) return s;
    if (!buffer) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: buffer is NULL", fn);
    if (h.file_size > (uint64_t)buffer_size)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: buffer_size = %zu, but the checkpoint needs %" PRIu64
                           " bytes (gpurnn_model_save_size)",
                           fn, buffer_size, h.file_size);

    ckpt_scratch *scratch = scratch_new(fn, &s);
    if (s == GPURNN_OK) {
        /* A dry run first: every value is checked before the first byte lands in the
         * caller's buffer, so a refused save leaves it as it was. */
        ckpt_writer dry = {.kind = SINK_DISCARD, .buf = scratch->bytes, .cap = sizeof scratch->bytes};
        s = save_contents(m, &h, user_data, &dry, scratch, fn, memory_name);
    }
    if (s == GPURNN_OK) {
        ckpt_writer w = {.kind = SINK_MEMORY, .mem = buffer, .mem_cap = buffer_size,
                         .buf = scratch->bytes, .cap = sizeof scratch->bytes};
        s = save_contents(m, &h, user_data, &w, scratch, fn, memory_name);
        if (s == GPURNN_OK && written) *written = w.mem_len;
    }
    gpurnn_free(scratch);
    return s;
}

/* ---- loading ------------------------------------------------------------------------- */

typedef struct load_job {
    const char *fn;
    const char *path; /* or memory_name */
    ckpt_reader reader;
    ckpt_scratch *scratch;
    ckpt_header header;
    unsigned char header_bytes[CKPT_HEADER_BYTES];
    uint64_t stored_crc;
    unsigned char *user_data; /* filled by the second pass; NULL when there is none */
    char problem[256]; /* the first bad value seen, reported once the checksum is known good */
} load_job;

/* Reads the payload sections, the user data and the trailer. With m == NULL only checks
 * the values; otherwise also writes them into the model (and the user data into
 * job->user_data). Leaves the stored checksum in *stored. */
static gpurnn_status read_payload(load_job *job, gpurnn_model *m, uint64_t *stored)
{
    const ckpt_header *h = &job->header;
    size_t eb = h->element_bytes;
    double *values = job->scratch->values;
    ckpt_section sections[4];
    int count = payload_sections(h, sections);
    const unsigned char *p;
    for (int k = 0; k < count; k++) {
        const ckpt_section *s = &sections[k];
        for (uint64_t off = 0; off < s->count;) {
            size_t n =
                s->count - off < CKPT_CHUNK_VALUES ? (size_t)(s->count - off) : CKPT_CHUNK_VALUES;
            gpurnn_status st = reader_take(&job->reader, n * eb, &p);
            if (st != GPURNN_OK) return st;
            if (eb == 4)
                for (size_t i = 0; i < n; i++) values[i] = (double)load_f32(p + 4 * i);
            else
                for (size_t i = 0; i < n; i++) values[i] = load_f64(p + 8 * i);
            if (!job->problem[0])
                (void)check_values(h, s, off, values, n, job->problem, sizeof job->problem);
            if (m) {
                st = m->ops->write(m->ctx, s->buffer, (size_t)off, n, values);
                if (st != GPURNN_OK) return gpurnn_fail_context(st, job->fn);
            }
            off += n;
        }
    }
    for (uint64_t off = 0; off < h->user_data_bytes;) {
        size_t cap = job->reader.cap;
        size_t n = h->user_data_bytes - off < cap ? (size_t)(h->user_data_bytes - off) : cap;
        gpurnn_status st = reader_take(&job->reader, n, &p);
        if (st != GPURNN_OK) return st;
        if (job->user_data) memcpy(job->user_data + off, p, n);
        off += n;
    }
    gpurnn_status st = reader_take(&job->reader, CKPT_TRAILER_BYTES, &p);
    if (st != GPURNN_OK) return st;
    *stored = load_u64(p);
    return GPURNN_OK;
}

/* Checksums the payload without interpreting it, for a file whose header is invalid. */
static gpurnn_status read_raw(load_job *job, uint64_t *stored)
{
    ckpt_reader *r = &job->reader;
    const unsigned char *p;
    while (reader_offset(r) < r->crc_end) {
        uint64_t left = r->crc_end - reader_offset(r);
        gpurnn_status st = reader_take(r, left < r->cap ? (size_t)left : r->cap, &p);
        if (st != GPURNN_OK) return st;
    }
    gpurnn_status st = reader_take(r, CKPT_TRAILER_BYTES, &p);
    if (st != GPURNN_OK) return st;
    *stored = load_u64(p);
    return GPURNN_OK;
}

/* Reads the header's bytes into job->header_bytes: the magic and version first, since
 * the version says how long the header is. Returns how many bytes there were. */
static gpurnn_status read_header_bytes(load_job *job, size_t *got)
{
    ckpt_reader *r = &job->reader;
    const unsigned char *p;
    size_t first = r->size < OFF_VERSION + 4 ? (size_t)r->size : OFF_VERSION + 4;
    if (first > 0) {
        gpurnn_status st = reader_take(r, first, &p);
        if (st != GPURNN_OK) return st;
        memcpy(job->header_bytes, p, first);
    }
    size_t total = first;
    if (first == OFF_VERSION + 4) {
        /* An unknown version is refused by header_read; read no further for it. */
        uint32_t version = load_u32(job->header_bytes + OFF_VERSION);
        size_t want = version >= 1 && version <= CKPT_VERSION ? header_bytes_of(version) : first;
        if (want > r->size) want = (size_t)r->size;
        if (want > first) {
            gpurnn_status st = reader_take(r, want - first, &p);
            if (st != GPURNN_OK) return st;
            memcpy(job->header_bytes + first, p, want - first);
            total = want;
        }
    }
    *got = total;
    return GPURNN_OK;
}

/* First pass: header, exact size, checksum and values, all before any allocation the
 * file could influence. Damage is reported as such (checksum mismatch) before any
 * complaint about a field or value, which a checksum-valid file alone can earn. */
static gpurnn_status load_verify(load_job *job)
{
    ckpt_reader *r = &job->reader;
    size_t head = 0;
    gpurnn_status st = read_header_bytes(job, &head);
    if (st != GPURNN_OK) return st;
    st = header_read(job->fn, job->path, job->header_bytes, head, r->size, &job->header);
    if (st != GPURNN_OK) return st;

    char header_problem[256];
    int header_ok = header_validate(&job->header, header_problem, sizeof header_problem);
    st = header_ok ? read_payload(job, NULL, &job->stored_crc) : read_raw(job, &job->stored_crc);
    if (st != GPURNN_OK) return st;
    if (job->stored_crc != r->crc)
        return fail_file(GPURNN_ERR_FORMAT, job->fn, job->path,
                         "checksum mismatch: stored 0x%016" PRIX64 ", computed 0x%016" PRIX64
                         " (the file is damaged)",
                         job->stored_crc, r->crc);
    if (!header_ok) return fail_file(GPURNN_ERR_FORMAT, job->fn, job->path, "%s", header_problem);
    if (job->problem[0])
        return fail_file(GPURNN_ERR_FORMAT, job->fn, job->path, "%s", job->problem);
    return reader_expect_end(r);
}

/* Creates an empty model for the file's configuration on the caller's backend, and the
 * buffer for its user data when the caller wants it. */
static gpurnn_status load_create(load_job *job, gpurnn_backend backend, int want_user_data,
                                 gpurnn_model **out)
{
    const ckpt_header *h = &job->header;
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = (int)h->vocab_size;
    cfg.hidden_size = (int)h->hidden_size;
    cfg.batch_size = (int)h->batch_size;
    cfg.max_seq_len = (int)h->max_seq_len;
    cfg.dtype = (gpurnn_dtype)h->dtype;
    cfg.backend = backend;
    cfg.reduction = (gpurnn_loss_reduction)h->reduction;
    cfg.seed = (unsigned long long)h->seed;
    cfg.init_scale = h->init_scale;
    cfg.cell = (gpurnn_cell)h->cell;
    cfg.num_layers = (int)h->num_layers;

    /* The caller's arguments are already checked, so a configuration the library
     * refuses is a fault of the file. */
    char context[300];
    if (job->path == memory_name)
        snprintf(context, sizeof context, "%s: checkpoint in memory: its configuration is invalid",
                 job->fn);
    else
        snprintf(context, sizeof context, "%s: checkpoint '%s': its configuration is invalid",
                 job->fn, show_path(job->path).text);
    gpurnn_config resolved;
    gpurnn_status s = gpurnn_config_resolve(&cfg, &resolved);
    if (s == GPURNN_ERR_INVALID_ARGUMENT) return gpurnn_fail_context(GPURNN_ERR_FORMAT, context);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, job->fn);
    if (want_user_data && h->user_data_bytes > 0) {
        job->user_data = gpurnn_malloc((size_t)h->user_data_bytes);
        if (!job->user_data)
            return gpurnn_fail(GPURNN_ERR_OUT_OF_MEMORY,
                               "%s: cannot allocate %" PRIu64 " bytes for the user data", job->fn,
                               h->user_data_bytes);
    }
    gpurnn_model *m = NULL;
    s = gpurnn_model_create_empty(&resolved, &m);
    if (s == GPURNN_ERR_INVALID_ARGUMENT) return gpurnn_fail_context(GPURNN_ERR_FORMAT, context);
    if (s != GPURNN_OK) return gpurnn_fail_context(s, job->fn);
    if (m->param_count != h->param_count || m->state_count != h->state_count) {
        s = fail_file(GPURNN_ERR_FORMAT, job->fn, job->path,
                      "the model built from it has %zu parameters and %zu state values, the file "
                      "%" PRIu64 " and %" PRIu64,
                      m->param_count, m->state_count, h->param_count, h->state_count);
        gpurnn_model_destroy(m);
        return s;
    }
    *out = m;
    return GPURNN_OK;
}

/* Second pass: the same bytes again, now into the model. Any difference from the first
 * pass means the file was replaced or rewritten in between. */
static gpurnn_status load_fill(load_job *job, gpurnn_model *m)
{
    ckpt_reader *r = &job->reader;
    if (r->fd >= 0 && lseek(r->fd, 0, SEEK_SET) != 0)
        return fail_errno(job->fn, "seek in", job->path, errno);
    reader_rewind(r);
    job->problem[0] = '\0';
    const unsigned char *p;
    size_t hb = job->header.header_bytes;
    gpurnn_status st = reader_take(r, hb, &p);
    if (st != GPURNN_OK) return st;
    uint64_t stored = 0;
    if (memcmp(p, job->header_bytes, hb) == 0) st = read_payload(job, m, &stored);
    if (st != GPURNN_OK) return st;
    if (stored != job->stored_crc || r->crc != job->stored_crc || job->problem[0])
        return fail_file(GPURNN_ERR_FORMAT, job->fn, job->path,
                         "the file changed while it was being loaded");
    return reader_expect_end(r);
}

static gpurnn_status check_load_outputs(const char *fn, gpurnn_backend backend, void **user_data,
                                        size_t *user_data_size, gpurnn_model **out)
{
    if (!out) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: out is NULL", fn);
    if (!user_data != !user_data_size)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: %s is NULL but %s is not (give both, or neither to ignore the "
                           "user data)",
                           fn, user_data ? "user_data_size" : "user_data",
                           user_data ? "user_data" : "user_data_size");
    if (backend != GPURNN_BACKEND_AUTO && backend != GPURNN_BACKEND_CPU &&
        backend != GPURNN_BACKEND_CUDA)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT,
                           "%s: backend = %d is not GPURNN_BACKEND_AUTO, _CPU or _CUDA", fn,
                           (int)backend);
    return GPURNN_OK;
}

/* Both passes over the reader's source; sets the outputs only on success. */
static gpurnn_status load_run(load_job *job, gpurnn_backend backend, void **user_data,
                              size_t *user_data_size, gpurnn_model **out)
{
    gpurnn_model *m = NULL;
    gpurnn_status s = load_verify(job);
    if (s == GPURNN_OK) s = load_create(job, backend, user_data != NULL, &m);
    if (s == GPURNN_OK) s = load_fill(job, m);
    if (s != GPURNN_OK) {
        gpurnn_model_destroy(m);
        gpurnn_free(job->user_data);
        job->user_data = NULL;
        return s;
    }
    m->optimizer_started = (int)job->header.optimizer_started;
    m->optimizer_kind = (gpurnn_optimizer_kind)job->header.optimizer_kind;
    m->optimizer_steps = (long long)job->header.optimizer_steps;
    m->forward_valid = 0;
    if (user_data) {
        *user_data = job->user_data;
        *user_data_size = (size_t)job->header.user_data_bytes;
    }
    *out = m;
    return GPURNN_OK;
}

static gpurnn_status load_from_path(const char *fn, const char *path, gpurnn_backend backend,
                                    void **user_data, size_t *user_data_size, gpurnn_model **out)
{
    if (!path) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: path is NULL", fn);
    gpurnn_status s = check_load_outputs(fn, backend, user_data, user_data_size, out);
    if (s != GPURNN_OK) return s;
    if (!path[0]) return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: path is empty", fn);

    /* O_NONBLOCK so that a FIFO named as a checkpoint is refused, not waited on. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return fail_errno(fn, "open", path, errno);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return fail_errno(fn, "examine", path, err);
    }
    if (!S_ISREG(st.st_mode) || st.st_size < 0) {
        close(fd);
        return gpurnn_fail(GPURNN_ERR_IO, "%s: cannot load '%s': %s", fn, show_path(path).text,
                           S_ISDIR(st.st_mode) ? "it is a directory" : "it is not a regular file");
    }

    load_job job;
    memset(&job, 0, sizeof job);
    job.fn = fn;
    job.path = path;
    job.scratch = scratch_new(fn, &s);
    if (!job.scratch) {
        close(fd);
        return s;
    }
    uint64_t size = (uint64_t)st.st_size;
    job.reader = (ckpt_reader){
        .fn = fn,
        .fd = fd,
        .path = path,
        .size = size,
        .crc_end = size >= CKPT_TRAILER_BYTES ? size - CKPT_TRAILER_BYTES : 0,
        .buf = job.scratch->bytes,
        .cap = sizeof job.scratch->bytes,
    };
    s = load_run(&job, backend, user_data, user_data_size, out);
    close(fd);
    gpurnn_free(job.scratch);
    return s;
}

gpurnn_status gpurnn_model_load(const char *path, gpurnn_backend backend, gpurnn_model **out)
{
    return load_from_path("gpurnn_model_load", path, backend, NULL, NULL, out);
}

gpurnn_status gpurnn_model_load_with_user_data(const char *path, gpurnn_backend backend,
                                               void **user_data, size_t *user_data_size,
                                               gpurnn_model **out)
{
    return load_from_path("gpurnn_model_load_with_user_data", path, backend, user_data,
                          user_data_size, out);
}

gpurnn_status gpurnn_model_load_from_memory(const void *data, size_t size, gpurnn_backend backend,
                                            void **user_data, size_t *user_data_size,
                                            gpurnn_model **out)
{
    const char *fn = "gpurnn_model_load_from_memory";
    /* An empty buffer (NULL, 0) is an empty checkpoint: a format error, as an empty file is. */
    if (!data && size > 0)
        return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "%s: data is NULL, but size is %zu", fn, size);
    gpurnn_status s = check_load_outputs(fn, backend, user_data, user_data_size, out);
    if (s != GPURNN_OK) return s;

    load_job job;
    memset(&job, 0, sizeof job);
    job.fn = fn;
    job.path = memory_name;
    job.scratch = scratch_new(fn, &s);
    if (!job.scratch) return s;
    job.reader = (ckpt_reader){
        .fn = fn,
        .fd = -1,
        .mem = data,
        .path = memory_name,
        .size = (uint64_t)size,
        .crc_end = size >= CKPT_TRAILER_BYTES ? (uint64_t)size - CKPT_TRAILER_BYTES : 0,
        .buf = job.scratch->bytes,
        .cap = sizeof job.scratch->bytes,
    };
    s = load_run(&job, backend, user_data, user_data_size, out);
    gpurnn_free(job.scratch);
    return s;
}

void gpurnn_user_data_free(void *user_data) { gpurnn_free(user_data); }
