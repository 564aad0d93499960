/* Helpers shared by the libFuzzer targets in fuzz/: invariant checks that abort (so that
 * libFuzzer reports a violation as a crash, with the input that caused it), a scratch
 * directory on tmpfs, and a CRC-64/XZ written from docs/checkpoint-format.md (not the
 * library's), so the checkpoint fuzzer can also feed checksum-valid variants of its
 * input to the loader. */
#ifndef GPURNN_FUZZ_COMMON_H
#define GPURNN_FUZZ_COMMON_H

#include <gpurnn.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A violated invariant: say which and where, then abort so libFuzzer saves the input. */
#define FUZZ_CHECK(cond, ...)                                                                   \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "fuzz invariant violated at %s:%d: %s\n  ", __FILE__, __LINE__,    \
                    #cond);                                                                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fprintf(stderr, "\n  last error: %s\n", gpurnn_last_error());                      \
            abort();                                                                           \
        }                                                                                      \
    } while (0)

/* Every call returns a known status; a failure comes with a message. Returns s. */
static inline gpurnn_status fuzz_status(gpurnn_status s, const char *call)
{
    FUZZ_CHECK(s >= GPURNN_OK && s <= GPURNN_ERR_NUMERIC, "%s returned unknown status %d", call,
               (int)s);
    if (s != GPURNN_OK) {
        const char *msg = gpurnn_last_error();
        FUZZ_CHECK(msg && msg[0], "%s failed with %s but gpurnn_last_error() is empty", call,
                   gpurnn_status_string(s));
    }
    return s;
}
#define FUZZ_CALL(expr) fuzz_status((expr), #expr)

/* The library promises finite parameters after every successful call. */
static inline void fuzz_check_params_finite(const gpurnn_model *m, const char *after)
{
    size_t n = gpurnn_param_count(m);
    double *p = malloc((n ? n : 1) * sizeof *p);
    FUZZ_CHECK(p != NULL, "out of memory in the harness");
    FUZZ_CHECK(gpurnn_params_get(m, p, n) == GPURNN_OK, "params_get failed after %s", after);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(isfinite(p[i]), "parameter %zu is %g after %s", i, p[i], after);
    free(p);
}

static char fuzz_dir[256];

/* At exit: the files the targets write there (and the temporaries of a save that a
 * crash interrupted are left for inspection), then the directory if it is empty. */
static void fuzz_remove_scratch(void)
{
    static const char *const names[] = {"input.ckpt", "saved.ckpt", "api.ckpt"};
    char path[300];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", fuzz_dir, names[i]);
        unlink(path);
    }
    rmdir(fuzz_dir);
}

/* A private directory for this process, on tmpfs where there is one (saves fsync);
 * removed at exit. */
static inline const char *fuzz_scratch_dir(void)
{
    char *dir = fuzz_dir;
    if (!dir[0]) {
        const char *base = getenv("GPURNN_FUZZ_TMPDIR");
        if (!base) base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(dir, sizeof fuzz_dir, "%s/gpurnn-fuzz-XXXXXX", base);
        FUZZ_CHECK(mkdtemp(dir) != NULL, "cannot create a scratch directory under %s", base);
        atexit(fuzz_remove_scratch);
    }
    return dir;
}

static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    FUZZ_CHECK(f != NULL, "cannot create %s", path);
    FUZZ_CHECK(size == 0 || fwrite(data, 1, size, f) == size, "cannot write %s", path);
    FUZZ_CHECK(fclose(f) == 0, "cannot close %s", path);
}

/* CRC-64/XZ: reflected polynomial 0xC96C5795D7870F42, init and final XOR all ones. */
static inline uint64_t fuzz_crc64(const uint8_t *p, size_t n)
{
    uint64_t crc = ~(uint64_t)0;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0xC96C5795D7870F42ull & (0 - (crc & 1)));
    }
    return ~crc;
}

#endif
