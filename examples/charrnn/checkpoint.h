/*
 * gpurnn-charrnn's checkpoint: a libgpurnn checkpoint (parameters, optimizer state,
 * carried hidden state) whose user data holds what only the program knows: the
 * vocabulary, the run's settings, the position in the text, the step, the random
 * generator's state and the loss history. The library writes it atomically under one
 * checksum; the user data's byte layout is in README.md beside this file, so that other
 * programs can write checkpoints this one samples. Files of the program's earlier format
 * (its own file around the library's checkpoint) still load.
 */
#ifndef CHARRNN_CHECKPOINT_H
#define CHARRNN_CHECKPOINT_H

#include "streams.h"
#include "util.h"
#include "vocab.h"

#include <gpurnn.h>

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The settings a run starts with and keeps for its life. */
typedef struct charrnn_run_config {
    int hidden;     /* H, of every layer */
    gpurnn_cell cell;
    int layers;     /* L >= 1 */
    int batch;      /* B */
    int seq_len;    /* T */
    gpurnn_dtype dtype;
    gpurnn_optimizer_kind optimizer;
    double learning_rate;       /* at step 1 ... */
    double learning_rate_final; /* ... and at target_steps, along a cosine */
    double momentum;      /* SGD only */
    double clip;          /* global gradient-norm limit, 0 = none */
    double init_scale;    /* initial weights N(0,1) * init_scale */
    double val_fraction;  /* held-out tail */
    uint64_t seed;        /* initial weights, and the generator of sampling seeds */
    uint64_t target_steps; /* the step the run trains to (--steps, or --epochs converted) */
} charrnn_run_config;

/* Losses so far: one training loss per step (nats/char, the mean over the step's B*T
 * characters), and the validation losses with the steps they were measured at. */
typedef struct charrnn_history {
    double *train_loss;
    size_t train_count, train_cap;
    uint64_t *val_step;
    double *val_loss;
    size_t val_count, val_cap;
} charrnn_history;

void charrnn_history_add_train(charrnn_history *h, double loss);
void charrnn_history_add_val(charrnn_history *h, uint64_t step, double loss);
void charrnn_history_free(charrnn_history *h);

typedef struct charrnn_checkpoint {
    charrnn_vocab vocab;
    charrnn_run_config config;
    uint64_t step;            /* optimizer steps taken */
    charrnn_cursor cursor;    /* the next window to train on */
    charrnn_rng rng;          /* the generator of sampling seeds */
    double elapsed_seconds;   /* training wall time so far, over all sessions ... */
    double cpu_seconds;       /* ... and the processor time it used */
    double smoothed_loss;     /* exponential moving average of the training loss ... */
    double smoothing_weight;  /* ... and its bias correction, 1 - decay^step */
    uint64_t text_len;        /* the training text's length and FNV-1a hash */
    uint64_t text_hash;
    char text_source[4096];   /* the path given for the text; "" for the built-in corpus */
    charrnn_history history;
    /* 0 when the checkpoint holds only a vocabulary (written by another program, README.md):
     * it can be sampled but not resumed, and the fields above but vocab mean nothing. */
    int has_training_state;
} charrnn_checkpoint;

/* Writes the checkpoint and the model to path, atomically. */
int charrnn_checkpoint_save(const char *path, const charrnn_checkpoint *ck,
                            const gpurnn_model *model, charrnn_error *err);

/* Reads a checkpoint (written by charrnn_checkpoint_save, by another program with a
 * vocabulary in the documented user data, or in the earlier wrapper format) and creates
 * its model on `backend`. Checks the file completely (the library's checks, then every
 * field, and that the model matches the vocabulary and settings) before it returns; on
 * failure *ck holds nothing to free and *model is NULL. */
int charrnn_checkpoint_load(const char *path, gpurnn_backend backend, charrnn_checkpoint *ck,
                            gpurnn_model **model, charrnn_error *err);

void charrnn_checkpoint_free(charrnn_checkpoint *ck);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_CHECKPOINT_H */
