/* Command-line options of gpurnn-charrnn: parsing (table-driven) and --help. */
#ifndef CHARRNN_OPTIONS_H
#define CHARRNN_OPTIONS_H

#include "util.h"

#include <gpurnn.h>

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CHARRNN_TRAIN, CHARRNN_SAMPLE, CHARRNN_HELP, CHARRNN_VERSION } charrnn_command;

/* Options whose values a resumed run takes from its checkpoint: giving one of them with
 * --resume is an error unless the value is the checkpoint's. */
enum {
    GIVEN_HIDDEN = 1 << 0,
    GIVEN_BATCH = 1 << 1,
    GIVEN_SEQ_LEN = 1 << 2,
    GIVEN_DTYPE = 1 << 3,
    GIVEN_OPTIMIZER = 1 << 4,
    GIVEN_MOMENTUM = 1 << 5,
    GIVEN_INIT_SCALE = 1 << 6,
    GIVEN_VAL_FRACTION = 1 << 7,
    GIVEN_SEED = 1 << 8,
    GIVEN_LR = 1 << 9,
    GIVEN_CLIP = 1 << 10,
    GIVEN_STEPS = 1 << 11,
    GIVEN_EPOCHS = 1 << 12,
    GIVEN_CHECKPOINT = 1 << 13,
    GIVEN_LR_FINAL = 1 << 14,
    GIVEN_CELL = 1 << 15,
    GIVEN_LAYERS = 1 << 16,
};

typedef struct charrnn_options {
    charrnn_command command;
    unsigned given; /* GIVEN_* of the options on the command line */

    /* train */
    const char *text_path;       /* NULL: the built-in corpus */
    int hidden, batch, seq_len;
    int cell;                    /* gpurnn_cell */
    int layers;                  /* L, in [1, GPURNN_MAX_LAYERS] */
    long long steps;             /* total steps to train to */
    long long epochs;            /* 0: use steps */
    int optimizer;               /* gpurnn_optimizer_kind */
    double learning_rate;        /* 0 before defaults: the optimizer's default */
    double learning_rate_final;  /* the rate at the last step; before defaults: --lr's */
    double momentum, clip, init_scale, val_fraction;
    int dtype;                   /* gpurnn_dtype */
    const char *checkpoint_path; /* NULL: charrnn.ckpt, or the --resume path */
    long long checkpoint_every;  /* 0: only at the end and on Ctrl-C */
    const char *resume_path;
    long long eval_every;        /* -1: steps / 20 */
    long long sample_every;      /* -1: steps / 4; 0: only at the end */
    int sample_length;           /* characters of each sample during training */
    const char *log_path, *plot_path;
    int compare_speed;
    int keep_best;               /* also keep the checkpoint of the best validation loss */
    double time_limit;           /* seconds of training in this session; 0: none */

    /* train and sample */
    int backend; /* gpurnn_backend */
    unsigned long long seed;
    double temperature;

    /* sample */
    const char *sample_checkpoint;
    const char *prime; /* NULL: "\n" when it is in the vocabulary, else its first char */
    int length;
} charrnn_options;

/* Parses argv (argv[1] is the command). Fills every default, then what is given.
 * Fails with a one-line message for an unknown command or option, a missing or bad
 * value, or a missing or extra operand. */
int charrnn_parse_options(int argc, char **argv, charrnn_options *o, charrnn_error *err);

/* The default learning rate of an optimizer kind. */
double charrnn_default_learning_rate(int optimizer);

/* Names used in messages and files. */
const char *charrnn_optimizer_name(int optimizer);
const char *charrnn_backend_name(int backend);
const char *charrnn_dtype_name(int dtype);
const char *charrnn_cell_name(int cell);

/* "V=21 H=16 L=2 gru f32, 2134 parameters": the model as the banner of `train` shows it
 * (params: gpurnn_param_count of the model). */
void charrnn_format_model(char *out, size_t out_len, int vocab_size, int hidden, int layers,
                          int cell, int dtype, size_t params);

void charrnn_print_help(FILE *out);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_OPTIONS_H */
