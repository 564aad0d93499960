/* Writes the seed corpora of the fuzzers, committed under fuzz/corpus/:
 *
 *   <dir>/fuzz_checkpoint_load/NAME.ckpt  valid checkpoints of tiny models (V, H <= 8):
 *       several shapes, float32 and float64, sum and mean reduction, no optimizer state,
 *       and the state after SGD (momentum), Adagrad and Adam steps; one (format v2) with
 *       user data. The seeds without it were written in format v1 and are kept as such
 *       (they exercise the v1 reader), as is the v2 one (the v2 reader); this program now
 *       writes v3 files, the format of the "-format3" seed.
 *   <dir>/fuzz_api/NAME.bin               byte strings for fuzz_api that create a model
 *       and run typical training sequences (forward, backward, clip, step, sample, ...)
 *
 * Usage: make_seed_corpus DIR (DIR/fuzz_checkpoint_load and DIR/fuzz_api must exist).
 *        make_seed_corpus --check DIR: every seed checkpoint in DIR loads (what
 *        .ci/fuzz.sh checks of the committed corpus).
 * The fuzz_api seeds are the same bytes on every machine; the trained checkpoints are
 * not (their values depend on the CPU backend's build: baseline or AVX2 + FMA), which is
 * why CI checks that they load rather than that they are the same bytes. */
#include <gpurnn.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what)
{
    fprintf(stderr, "make_seed_corpus: %s: %s\n", what, gpurnn_last_error());
    return 1;
}

typedef struct {
    const char *name;
    int V, H, B, T;
    gpurnn_dtype dtype;
    gpurnn_loss_reduction reduction;
    int optimizer; /* -1: none started; else a gpurnn_optimizer_kind */
    int steps;
    size_t user_data_bytes; /* 0: none; else bytes i * 31 + 7 (format v2's user data) */
} ckpt_seed;

static int write_checkpoint(const char *dir, const ckpt_seed *c)
{
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = c->V;
    cfg.hidden_size = c->H;
    cfg.batch_size = c->B;
    cfg.max_seq_len = c->T;
    cfg.dtype = c->dtype;
    cfg.backend = GPURNN_BACKEND_CPU;
    cfg.reduction = c->reduction;
    cfg.seed = 42;
    cfg.init_scale = 0.5;
    gpurnn_model *m = NULL;
    if (gpurnn_model_create(&cfg, &m) != GPURNN_OK) return fail(c->name);
    int32_t tok[2 * 16 * 8];
    for (int i = 0; i < 2 * c->T * c->B; i++) tok[i] = (int32_t)((i * 5 + 3) % c->V);
    gpurnn_optimizer opt = {.kind = GPURNN_SGD, .learning_rate = 0.1};
    if (c->optimizer >= 0) opt.kind = (gpurnn_optimizer_kind)c->optimizer;
    if (opt.kind == GPURNN_SGD) opt.momentum = 0.9;
    double loss;
    int rc = 0;
    for (int s = 0; s < (c->optimizer >= 0 ? c->steps : 1) && !rc; s++) {
        if (gpurnn_zero_grad(m) != GPURNN_OK ||
            gpurnn_forward(m, tok, tok + c->T * c->B, c->T, &loss) != GPURNN_OK ||
            gpurnn_backward(m) != GPURNN_OK || gpurnn_clip_grad_norm(m, 5, NULL) != GPURNN_OK ||
            (c->optimizer >= 0 && gpurnn_step(m, &opt) != GPURNN_OK))
            rc = fail(c->name);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/fuzz_checkpoint_load/%s.ckpt", dir, c->name);
    unsigned char user[64];
    for (size_t i = 0; i < sizeof user; i++) user[i] = (unsigned char)(i * 31 + 7);
    if (!rc && c->user_data_bytes > sizeof user) rc = fail("user_data_bytes too large");
    if (!rc && gpurnn_model_save_with_user_data(m, user, c->user_data_bytes, path) != GPURNN_OK)
        rc = fail(path);
    gpurnn_model_destroy(m);
    return rc;
}

static int write_bytes(const char *dir, const char *name, const uint8_t *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/fuzz_api/%s.bin", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f) != 0) {
        fprintf(stderr, "make_seed_corpus: cannot write %s\n", path);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const int check = argc == 3 && !strcmp(argv[1], "--check");
    if (argc != 2 && !check) {
        fprintf(stderr, "usage: make_seed_corpus <corpus-dir> | --check <corpus-dir>\n");
        return 2;
    }
    const char *dir = argv[argc - 1];
    static const ckpt_seed seeds[] = {
        {"v1h1b1-f32", 1, 1, 1, 1, GPURNN_F32, GPURNN_LOSS_SUM, -1, 0, 0},
        {"v4h3b2-f32-fresh", 4, 3, 2, 5, GPURNN_F32, GPURNN_LOSS_SUM, -1, 0, 0},
        {"v4h3b2-f64-fresh", 4, 3, 2, 5, GPURNN_F64, GPURNN_LOSS_MEAN, -1, 0, 0},
        {"v5h4b1-f32-sgd", 5, 4, 1, 6, GPURNN_F32, GPURNN_LOSS_SUM, GPURNN_SGD, 2, 0},
        {"v3h8b2-f64-adagrad", 3, 8, 2, 4, GPURNN_F64, GPURNN_LOSS_SUM, GPURNN_ADAGRAD, 2, 0},
        {"v6h5b3-f32-adam", 6, 5, 3, 7, GPURNN_F32, GPURNN_LOSS_MEAN, GPURNN_ADAM, 1, 0},
        {"v8h8b1-f64-adam", 8, 8, 1, 3, GPURNN_F64, GPURNN_LOSS_SUM, GPURNN_ADAM, 3, 0},
        {"v2h2b8-f32-adam", 2, 2, 8, 16, GPURNN_F32, GPURNN_LOSS_MEAN, GPURNN_ADAM, 2, 0},
        {"v4h3b1-f32-adam-user-data", 4, 3, 1, 4, GPURNN_F32, GPURNN_LOSS_SUM, GPURNN_ADAM, 1, 37},
        {"v3h4b2-f64-sgd-format3", 3, 4, 2, 3, GPURNN_F64, GPURNN_LOSS_MEAN, GPURNN_SGD, 2, 5},
    };
    if (check) {
        for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
            char path[512];
            snprintf(path, sizeof path, "%s/fuzz_checkpoint_load/%s.ckpt", dir, seeds[i].name);
            gpurnn_model *m = NULL;
            if (gpurnn_model_load(path, GPURNN_BACKEND_CPU, &m) != GPURNN_OK) return fail(path);
            gpurnn_model_destroy(m);
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++)
        if (write_checkpoint(dir, &seeds[i])) return 1;

    /* fuzz_api: V H B maxT flags seed(8) scale, then ops (see fuzz_api.c's OP_ list:
     * 0 forward, 1 backward, 2 zero_grad, 3 clip norm, 4 clip value, 5 step, 6 sample,
     * 7 state_get, 8 state_set, 9 params_set, 10 gradcheck, 11 optimizer reset,
     * 12 state reset, 13 get with wrong n, 14 save/load). Missing bytes read as 0. */
    static const uint8_t train_adam[] = {
        3, 4, 1, 4, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 50,
        2, 0, 3, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3, 4, 1, 1, 5, 2, 6, 0,
        2, 0, 3, 1, 2, 3, 0, 1, 2, 3, 0, 1, 3, 4, 1, 1, 5, 2, 6, 0, 6, 1, 7, 5, 0, 0, 0, 0, 0, 0, 0, 0,
        14};
    static const uint8_t train_sgd_f64[] = {
        4, 3, 2, 5, 0x03, 9, 9, 9, 9, 9, 9, 9, 9, 20,
        0, 2, 0, 1, 2, 3, 0, 1, 2, 3, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 1, 2, 3, 0, 1,
        1, 4, 4, 5, 0, 6, 1, 9, 11, 5, 1, 7, 0, 14, 10, 1, 0, 0, 0, 0, 5, 6};
    static const uint8_t train_adagrad[] = {
        7, 2, 3, 6, 0x01, 3, 0, 0, 0, 0, 0, 0, 1, 100,
        0, 5, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4,
        5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5,
        1, 3, 14, 5, 1, 6, 0, 12, 8, 0, 200, 8, 5, 1, 6, 0, 13, 0};
    static const uint8_t state_and_params[] = {
        2, 2, 2, 2, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        8, 0, 0, 100, 200, 50, 60, 9, 0, 0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120,
        130, 140, 150, 160, 0, 1, 0, 1, 1, 0, 1, 0, 1, 1};
    static const uint8_t errors[] = {
        0x85, 3, 3, 3, 0xC7, 0, 0, 0, 0, 0, 0, 0, 0, 255, 22};
    if (write_bytes(dir, "train-adam", train_adam, sizeof train_adam) ||
        write_bytes(dir, "train-sgd-f64", train_sgd_f64, sizeof train_sgd_f64) ||
        write_bytes(dir, "train-adagrad", train_adagrad, sizeof train_adagrad) ||
        write_bytes(dir, "state-and-params", state_and_params, sizeof state_and_params) ||
        write_bytes(dir, "bad-config", errors, sizeof errors))
        return 1;
    return 0;
}
