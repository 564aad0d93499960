/* libFuzzer target: the checkpoint loaders on arbitrary bytes (CPU backend).
 *
 * Each input is written to a file and loaded with gpurnn_model_load_with_user_data, and
 * loaded from memory with gpurnn_model_load_from_memory: both must give the same status
 * and the same user data. The loader must either return a model or
 * fail with a known status and a message; it must never crash, leak, read out of bounds
 * or allocate without bound. Because nearly every mutation breaks the CRC-64 and so
 * stops at the checksum check, an input whose checksum is wrong is loaded a second time
 * with the checksum repaired, which takes the fuzzer past it into the header and value
 * checks and model creation.
 *
 * A model that loads is exercised a little, with invariants checked:
 *  - it saves with its user data (to a file and to memory: the same bytes), and the saved
 *    file equals the input (byte for byte, apart from init_scale, which the library
 *    canonicalises (0 means 0.01), and the checksum that covers it; a version-1 or -2
 *    input is saved as version 3, whose payload and user data must equal the input's);
 *  - forward, backward, clipping, an optimizer step of the file's kind and sampling
 *    return known statuses, with a message on failure, and leave the parameters finite.
 */
#include "fuzz_common.h"

enum { V1_HEADER_BYTES = 104, V2_HEADER_BYTES = 112, HEADER_BYTES = 120, TRAILER_BYTES = 8,
       OFF_VERSION = 8, OFF_INIT_SCALE = 48, OFF_OPT_STARTED = 56, OFF_OPT_KIND = 60,
       OFF_CELL = 112, OFF_NUM_LAYERS = 116 };

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    FUZZ_CHECK(f != NULL, "cannot open %s", path);
    FUZZ_CHECK(fseek(f, 0, SEEK_END) == 0, "cannot seek %s", path);
    long n = ftell(f);
    FUZZ_CHECK(n >= 0, "cannot size %s", path);
    rewind(f);
    uint8_t *buf = malloc((size_t)n + 1);
    FUZZ_CHECK(buf != NULL, "out of memory in the harness");
    FUZZ_CHECK(fread(buf, 1, (size_t)n, f) == (size_t)n, "cannot read %s", path);
    fclose(f);
    *size = (size_t)n;
    return buf;
}

/* Runs a little training on a loaded model. */
static void exercise(gpurnn_model *m, const uint8_t *data, size_t size)
{
    gpurnn_config cfg;
    FUZZ_CHECK(gpurnn_model_config(m, &cfg) == GPURNN_OK, "model_config failed");
    FUZZ_CHECK(gpurnn_model_backend(m) == GPURNN_BACKEND_CPU, "loaded on CPU, got %d",
               (int)gpurnn_model_backend(m));
    int T = cfg.max_seq_len < 3 ? cfg.max_seq_len : 3;
    size_t n = (size_t)T * (size_t)cfg.batch_size;
    if (n > 4096) return; /* the fuzzer's inputs are small; keep the run cheap */
    int32_t *tok = malloc(2 * n * sizeof *tok);
    FUZZ_CHECK(tok != NULL, "out of memory in the harness");
    for (size_t i = 0; i < 2 * n; i++)
        tok[i] = (int32_t)(data[(i * 7 + 13) % size] % (unsigned)cfg.vocab_size);

    double loss = 0;
    if (FUZZ_CALL(gpurnn_forward(m, tok, tok + n, T, &loss)) == GPURNN_OK) {
        FUZZ_CHECK(isfinite(loss) && loss >= 0, "forward returned loss %g", loss);
        if (FUZZ_CALL(gpurnn_backward(m)) == GPURNN_OK) {
            double norm = 0;
            FUZZ_CALL(gpurnn_clip_grad_norm(m, 1.0, &norm));
            /* the optimizer state belongs to the file's kind once started */
            uint32_t started = le32(data + OFF_OPT_STARTED);
            gpurnn_optimizer opt = {0};
            opt.kind = started ? (gpurnn_optimizer_kind)le32(data + OFF_OPT_KIND) : GPURNN_ADAM;
            opt.learning_rate = 0.01;
            opt.momentum = opt.kind == GPURNN_SGD ? 0.9 : 0;
            gpurnn_status s = FUZZ_CALL(gpurnn_step(m, &opt));
            FUZZ_CHECK(s == GPURNN_OK || s == GPURNN_ERR_NUMERIC,
                       "step of the checkpoint's own kind %d failed with %s", (int)opt.kind,
                       gpurnn_status_string(s));
        }
    }
    fuzz_check_params_finite(m, "training a loaded model");
    int32_t drawn[4];
    if (FUZZ_CALL(gpurnn_sample(m, tok[0], 4, 0.7, 5, drawn)) == GPURNN_OK)
        for (int i = 0; i < 4; i++)
            FUZZ_CHECK(drawn[i] >= 0 && drawn[i] < cfg.vocab_size, "sampled token %d", drawn[i]);
    free(tok);
}

/* Loads path (and the same bytes from memory); on success checks the round trip through
 * save and exercises the model. */
static void load_and_check(const char *path, const uint8_t *data, size_t size)
{
    gpurnn_model *m = NULL, *from_memory = NULL;
    void *user = NULL, *user_memory = NULL;
    size_t user_size = 0, user_memory_size = 0;
    gpurnn_status s = FUZZ_CALL(gpurnn_model_load_with_user_data(path, GPURNN_BACKEND_CPU, &user, &user_size, &m));
    gpurnn_status sm = FUZZ_CALL(gpurnn_model_load_from_memory(data, size, GPURNN_BACKEND_CPU, &user_memory,
                                                               &user_memory_size, &from_memory));
    FUZZ_CHECK(s == sm, "the file loads with %s, the same bytes in memory with %s", gpurnn_status_string(s),
               gpurnn_status_string(sm));
    if (s != GPURNN_OK) {
        FUZZ_CHECK(m == NULL && user == NULL && user_size == 0, "failed load set an output");
        FUZZ_CHECK(from_memory == NULL && user_memory == NULL, "failed memory load set an output");
        return;
    }
    FUZZ_CHECK(m != NULL && from_memory != NULL, "successful load returned NULL");
    FUZZ_CHECK(size >= V1_HEADER_BYTES + TRAILER_BYTES, "a %zu-byte file loaded", size);
    FUZZ_CHECK(user_size == user_memory_size && (user_size == 0 || !memcmp(user, user_memory, user_size)),
               "the file and memory loads returned different user data");
    FUZZ_CHECK((user == NULL) == (user_size == 0), "user data %p of %zu bytes", user, user_size);
    gpurnn_user_data_free(user_memory);
    gpurnn_model_destroy(from_memory);
    fuzz_check_params_finite(m, "load");

    char saved[300];
    snprintf(saved, sizeof saved, "%s/saved.ckpt", fuzz_scratch_dir());
    s = FUZZ_CALL(gpurnn_model_save_with_user_data(m, user, user_size, saved));
    FUZZ_CHECK(s == GPURNN_OK, "a model fresh from load cannot be saved: %s", gpurnn_last_error());
    size_t out_size = 0;
    uint8_t *out = read_file(saved, &out_size);
    size_t memory_size = 0;
    FUZZ_CHECK(gpurnn_model_save_size(m, user_size, &memory_size) == GPURNN_OK, "save_size failed");
    FUZZ_CHECK(memory_size == out_size, "save_size says %zu, the file has %zu", memory_size, out_size);
    uint8_t *mem = malloc(memory_size);
    FUZZ_CHECK(mem != NULL, "out of memory in the harness");
    FUZZ_CHECK(gpurnn_model_save_to_memory(m, user, user_size, mem, memory_size, NULL) == GPURNN_OK,
               "save_to_memory failed: %s", gpurnn_last_error());
    FUZZ_CHECK(!memcmp(mem, out, out_size), "the memory save differs from the file save");
    free(mem);
    const uint32_t version = le32(data + OFF_VERSION);
    if (version < 3) {
        /* saved as version 3: a longer header that records one tanh layer, the same payload
         * and user data */
        const size_t old_header = version == 1 ? V1_HEADER_BYTES : V2_HEADER_BYTES;
        FUZZ_CHECK(out_size == size + (HEADER_BYTES - old_header), "saved %zu bytes from a v%u file of %zu",
                   out_size, (unsigned)version, size);
        FUZZ_CHECK(le32(out + OFF_CELL) == 0 && le32(out + OFF_NUM_LAYERS) == 1,
                   "a v%u file saved as cell %u, num_layers %u", (unsigned)version, (unsigned)le32(out + OFF_CELL),
                   (unsigned)le32(out + OFF_NUM_LAYERS));
        FUZZ_CHECK(!memcmp(out + HEADER_BYTES, data + old_header, size - old_header - TRAILER_BYTES),
                   "the payload of a v%u file changed through load + save", (unsigned)version);
    } else {
        FUZZ_CHECK(out_size == size, "saved %zu bytes, loaded %zu", out_size, size);
        for (size_t i = 0; i < size - TRAILER_BYTES; i++) {
            if (i >= OFF_INIT_SCALE && i < OFF_INIT_SCALE + 8) continue;
            FUZZ_CHECK(out[i] == data[i], "byte %zu differs after load + save: %02x, was %02x", i, out[i],
                       data[i]);
        }
    }
    free(out);
    gpurnn_user_data_free(user);

    exercise(m, data, size);
    gpurnn_model_destroy(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[300];
    snprintf(path, sizeof path, "%s/input.ckpt", fuzz_scratch_dir());
    fuzz_write_file(path, data, size);
    load_and_check(path, data, size);

    /* The same bytes with a correct checksum, when it was wrong. */
    if (size >= V1_HEADER_BYTES + TRAILER_BYTES) {
        uint64_t crc = fuzz_crc64(data, size - TRAILER_BYTES);
        uint8_t trailer[TRAILER_BYTES];
        for (int i = 0; i < TRAILER_BYTES; i++) trailer[i] = (uint8_t)(crc >> (8 * i));
        if (memcmp(trailer, data + size - TRAILER_BYTES, TRAILER_BYTES) != 0) {
            uint8_t *fixed = malloc(size);
            FUZZ_CHECK(fixed != NULL, "out of memory in the harness");
            memcpy(fixed, data, size - TRAILER_BYTES);
            memcpy(fixed + size - TRAILER_BYTES, trailer, TRAILER_BYTES);
            fuzz_write_file(path, fixed, size);
            load_and_check(path, fixed, size);
            free(fixed);
        }
    }
    return 0;
}
