/*
 * Small helpers shared by every gpurnn-charrnn module: error messages that travel back to
 * the caller (so that the modules never print or exit and the tests can check what they
 * say), checked allocation, the 64-bit random generator the program uses, and the
 * model's FLOP count.
 */
#ifndef CHARRNN_UTIL_H
#define CHARRNN_UTIL_H

#include <gpurnn.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The one-line message of the last failure of a module function. Functions that can fail
 * return 0 on success and -1 on failure, after filling err (which may be NULL). */
typedef struct charrnn_error {
    char message[1024];
} charrnn_error;

/* Formats the message into err (if not NULL) and returns -1, so that a failing function
 * can end with `return charrnn_fail(err, "...", ...);`. */
int charrnn_fail(charrnn_error *err, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* malloc that never returns NULL: out of memory on the host is not worth a recovery path
 * in a command-line program, so it prints one line and exits with status 1. */
void *charrnn_xmalloc(size_t bytes);
void *charrnn_xrealloc(void *p, size_t bytes);

/* SplitMix64 (Steele, Lea, Flood 2014): a 64-bit state that is trivially saved in a
 * checkpoint, which is what --resume needs to continue exactly. */
typedef struct charrnn_rng {
    uint64_t state;
} charrnn_rng;

static inline uint64_t charrnn_rng_next(charrnn_rng *rng)
{
    uint64_t z = (rng->state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, n) for n >= 1 (the modulo bias is irrelevant at these sizes). */
static inline uint32_t charrnn_rng_below(charrnn_rng *rng, uint32_t n)
{
    return (uint32_t)(charrnn_rng_next(rng) % n);
}

/* Seconds from a monotonic clock. */
double charrnn_now_seconds(void);

/* Processor time this process has used (user + system, all threads), in seconds: on a
 * machine shared with other jobs it shows how much of the wall time the run really got. */
double charrnn_cpu_seconds(void);

/* "1:05", "12:03", "1:02:03": a duration for progress lines. */
void charrnn_format_duration(double seconds, char *out, size_t out_len);

/* "950", "12.3k", "1.25M": a rate for progress lines. */
void charrnn_format_count(double value, char *out, size_t out_len);

/* The floating-point operations of one training step (forward and backward) per token of
 * a model of configuration cfg (any cell and number of layers; num_layers 0 means 1), a
 * multiply-add counted as 2 and only the matrix products counted, as bench/README.md
 * counts them: forward, per token, a layer of G gates (1 tanh/ReLU, 3 GRU, 4 LSTM) does
 * G*H*(in + H) multiply-adds, where in is H above the first layer and 0 for the first
 * (its input is one-hot: W_ih x is a column lookup, no product), and the output layer
 * V*H; backward does twice the forward's. One tanh layer: 6 (H^2 + V H). */
double charrnn_training_flops_per_token(const gpurnn_config *cfg);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_UTIL_H */
