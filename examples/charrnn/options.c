#include "options.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- names ----------------------------------------------------------------------------- */

/* Indexed by the library's enum values, which is what a choice option stores. */
static const char *const optimizer_names[] = {"sgd", "adagrad", "adam", NULL};
static const char *const backend_names[] = {"auto", "cpu", "cuda", NULL};
static const char *const dtype_names[] = {"f32", "f64", NULL};
static const char *const cell_names[] = {"tanh", "relu", "gru", "lstm", NULL};
_Static_assert(GPURNN_CELL_TANH == 0 && GPURNN_CELL_RELU == 1 && GPURNN_CELL_GRU == 2 &&
                   GPURNN_CELL_LSTM == 3,
               "cell_names is indexed by gpurnn_cell");

/* "1024" for the help text, from the library's own limit. */
#define STRINGIFY_VALUE(x) #x
#define STRINGIFY(x) STRINGIFY_VALUE(x)

const char *charrnn_optimizer_name(int optimizer)
{
    return optimizer >= 0 && optimizer <= 2 ? optimizer_names[optimizer] : "?";
}
const char *charrnn_backend_name(int backend)
{
    return backend >= 0 && backend <= 2 ? backend_names[backend] : "?";
}
const char *charrnn_dtype_name(int dtype)
{
    return dtype >= 0 && dtype <= 1 ? dtype_names[dtype] : "?";
}

const char *charrnn_cell_name(int cell)
{
    return cell >= 0 && cell <= 3 ? cell_names[cell] : "?";
}

void charrnn_format_model(char *out, size_t out_len, int vocab_size, int hidden, int layers,
                          int cell, int dtype, size_t params)
{
    snprintf(out, out_len, "V=%d H=%d L=%d %s %s, %zu parameters", vocab_size, hidden, layers,
             charrnn_cell_name(cell), charrnn_dtype_name(dtype), params);
}

double charrnn_default_learning_rate(int optimizer)
{
    switch (optimizer) {
    case GPURNN_SGD: return 1.0;      /* the loss is a per-character mean: gradients are small */
    case GPURNN_ADAGRAD: return 0.1;  /* min-char-rnn's */
    default: return 0.002;            /* Adam: char-rnn's usual rate */
    }
}

/* ---- the option table ------------------------------------------------------------------ */

typedef enum { VALUE_INT, VALUE_LONG, VALUE_U64, VALUE_REAL, VALUE_TEXT, VALUE_FLAG, VALUE_CHOICE } value_kind;
enum { FOR_TRAIN = 1, FOR_SAMPLE = 2 };

typedef struct option_spec {
    const char *name;
    value_kind kind;
    int commands;     /* FOR_TRAIN and/or FOR_SAMPLE */
    size_t offset;    /* of the field in charrnn_options */
    double min, max;  /* accepted range of numbers, inclusive */
    const char *const *choices;
    unsigned given;   /* GIVEN_* bit, or 0 */
} option_spec;

#define FIELD(f) offsetof(charrnn_options, f)
#define BIG 1e15

static const option_spec option_table[] = {
    {"--hidden", VALUE_INT, FOR_TRAIN, FIELD(hidden), 1, 16384, NULL, GIVEN_HIDDEN},
    {"--cell", VALUE_CHOICE, FOR_TRAIN, FIELD(cell), 0, 0, cell_names, GIVEN_CELL},
    {"--layers", VALUE_INT, FOR_TRAIN, FIELD(layers), 1, GPURNN_MAX_LAYERS, NULL, GIVEN_LAYERS},
    {"--batch", VALUE_INT, FOR_TRAIN, FIELD(batch), 1, 65536, NULL, GIVEN_BATCH},
    {"--seq-len", VALUE_INT, FOR_TRAIN, FIELD(seq_len), 1, 65536, NULL, GIVEN_SEQ_LEN},
    {"--steps", VALUE_LONG, FOR_TRAIN, FIELD(steps), 1, BIG, NULL, GIVEN_STEPS},
    {"--epochs", VALUE_LONG, FOR_TRAIN, FIELD(epochs), 1, 1e9, NULL, GIVEN_EPOCHS},
    {"--optimizer", VALUE_CHOICE, FOR_TRAIN, FIELD(optimizer), 0, 0, optimizer_names, GIVEN_OPTIMIZER},
    {"--lr", VALUE_REAL, FOR_TRAIN, FIELD(learning_rate), 0, 1e6, NULL, GIVEN_LR},
    {"--lr-final", VALUE_REAL, FOR_TRAIN, FIELD(learning_rate_final), 0, 1e6, NULL, GIVEN_LR_FINAL},
    {"--momentum", VALUE_REAL, FOR_TRAIN, FIELD(momentum), 0, 0.999999, NULL, GIVEN_MOMENTUM},
    {"--clip", VALUE_REAL, FOR_TRAIN, FIELD(clip), 0, 1e12, NULL, GIVEN_CLIP},
    {"--init-scale", VALUE_REAL, FOR_TRAIN, FIELD(init_scale), 0, 1e3, NULL, GIVEN_INIT_SCALE},
    {"--dtype", VALUE_CHOICE, FOR_TRAIN, FIELD(dtype), 0, 0, dtype_names, GIVEN_DTYPE},
    {"--val-fraction", VALUE_REAL, FOR_TRAIN, FIELD(val_fraction), 0, 0.5, NULL, GIVEN_VAL_FRACTION},
    {"--checkpoint", VALUE_TEXT, FOR_TRAIN, FIELD(checkpoint_path), 0, 0, NULL, GIVEN_CHECKPOINT},
    {"--every", VALUE_LONG, FOR_TRAIN, FIELD(checkpoint_every), 0, BIG, NULL, 0},
    {"--resume", VALUE_TEXT, FOR_TRAIN, FIELD(resume_path), 0, 0, NULL, 0},
    {"--eval-every", VALUE_LONG, FOR_TRAIN, FIELD(eval_every), 1, BIG, NULL, 0},
    {"--sample-every", VALUE_LONG, FOR_TRAIN, FIELD(sample_every), 0, BIG, NULL, 0},
    {"--sample-length", VALUE_INT, FOR_TRAIN, FIELD(sample_length), 0, 1000000, NULL, 0},
    {"--log", VALUE_TEXT, FOR_TRAIN, FIELD(log_path), 0, 0, NULL, 0},
    {"--plot", VALUE_TEXT, FOR_TRAIN, FIELD(plot_path), 0, 0, NULL, 0},
    {"--time-limit", VALUE_REAL, FOR_TRAIN, FIELD(time_limit), 0, 1e9, NULL, 0},
    {"--compare-speed", VALUE_FLAG, FOR_TRAIN, FIELD(compare_speed), 0, 0, NULL, 0},
    {"--keep-best", VALUE_FLAG, FOR_TRAIN, FIELD(keep_best), 0, 0, NULL, 0},
    {"--backend", VALUE_CHOICE, FOR_TRAIN | FOR_SAMPLE, FIELD(backend), 0, 0, backend_names, 0},
    {"--seed", VALUE_U64, FOR_TRAIN | FOR_SAMPLE, FIELD(seed), 0, 0, NULL, GIVEN_SEED},
    {"--temperature", VALUE_REAL, FOR_TRAIN | FOR_SAMPLE, FIELD(temperature), 0, 100, NULL, 0},
    {"--prime", VALUE_TEXT, FOR_SAMPLE, FIELD(prime), 0, 0, NULL, 0},
    {"--length", VALUE_INT, FOR_SAMPLE, FIELD(length), 1, 100000000, NULL, 0},
};

void charrnn_print_help(FILE *out)
{
    fputs(
        "usage: gpurnn-charrnn train [FILE] [options]\n"
        "       gpurnn-charrnn sample CHECKPOINT [options]\n"
        "       gpurnn-charrnn --help | --version\n"
        "\n"
        "A character-level language model (a recurrent network of tanh, ReLU, GRU or LSTM\n"
        "cells, one or more layers) trained with truncated BPTT on libgpurnn. `train`\n"
        "reads FILE as bytes (without FILE: the built-in corpus, a generated play of\n"
        "about 110 KB); the vocabulary is the set of bytes that occur.\n"
        "B streams read B evenly spaced parts of the text, T characters per step, the\n"
        "hidden state carried from each window to the next; the last part of the text is\n"
        "held out to measure a validation loss, in nats and bits per character: the loss\n"
        "of the whole held-out text, read by parallel streams that each first run the 256\n"
        "characters before their part unscored, at the same positions every time.\n"
        "Ctrl-C finishes the current step, saves the checkpoint and exits.\n"
        "\n",
        out);
    /* In pieces: C11 compilers need not accept string literals over 4095 characters. */
    fputs(
        "train options (defaults in brackets):\n"
        "  --hidden N          hidden units H of every layer [256]\n"
        "  --cell NAME         the recurrent cell: tanh, relu, gru or lstm [tanh]\n"
        "  --layers N          layers of cells L, each reading the one below; 1 to "
        STRINGIFY(GPURNN_MAX_LAYERS) " [1]\n"
        "  --batch N           streams trained side by side, B [32]\n"
        "  --seq-len N         characters per step and stream, T (BPTT length) [64]\n"
        "  --steps N           train until step N [2000]\n"
        "  --epochs N          train for N passes over the training text instead of --steps\n"
        "  --time-limit S      stop after S seconds of training, as if --steps ended there\n"
        "                      (a final validation, checkpoint, plot and sample); 0: none [0]\n"
        "  --optimizer NAME    sgd, adagrad or adam [adam]\n"
        "  --lr X              learning rate [0.002 for adam, 0.1 for adagrad, 1 for sgd]\n"
        "  --lr-final X        the learning rate at the last step, reached along a cosine\n"
        "                      from --lr (a schedule over --steps) [the --lr: constant]\n"
        "  --momentum X        SGD momentum, in [0, 1) [0]\n"
        "  --clip X            clip the gradients' global L2 norm to X; 0: no clipping [5]\n"
        "  --init-scale X      initial weights are N(0,1) * X [0.01]\n"
        "  --dtype NAME        f32 or f64 [f32]\n"
        "  --backend NAME      auto, cpu or cuda; auto uses CUDA when usable [auto]\n"
        "  --seed N            seed of the initial weights and of the samples [1]\n"
        "  --val-fraction X    fraction of the text, at its end, held out for validation,\n"
        "                      in [0, 0.5]; 0: no validation [0.05]\n"
        "  --eval-every N      measure the validation loss (and print a log line) every N\n"
        "                      steps [steps/20]\n"
        "  --sample-every N    print a sample every N steps; 0: only at the end [steps/4]\n"
        "  --sample-length N   characters per sample; 0: no samples [200]\n"
        "  --temperature X     sampling temperature; 0 picks the likeliest character [0.8]\n"
        "  --checkpoint PATH   where to save the checkpoint [charrnn.ckpt, or the --resume\n"
        "                      path]\n"
        "  --every N           also save it every N steps; 0: only at the end and on\n"
        "                      Ctrl-C [500]\n"
        "  --resume PATH       continue the run saved in PATH exactly where it stopped: the\n"
        "                      model, optimizer, data position, step and random state come\n"
        "                      from it, and FILE defaults to the text it was trained on.\n"
        "                      --lr, --lr-final and --clip may change; --hidden, --cell,\n"
        "                      --layers, --batch, --seq-len, --dtype, --optimizer,\n"
        "                      --momentum, --init-scale, --seed and --val-fraction must be\n"
        "                      left out or match. --steps is the total [the checkpoint's]\n"
        "  --log FILE          write a CSV line per step: step, epoch, train loss, validation\n"
        "                      loss (when measured) in nats and bits per character,\n"
        "                      characters per second, elapsed and processor seconds\n"
        "                      (appended to on resume)\n"
        "  --plot FILE         draw training and validation loss against step as SVG\n"
        "  --compare-speed     end with one line comparing CPU and CUDA speed at this size\n"
        "                      (or saying why there is no GPU)\n"
        "  --keep-best         also save, to PATH.best beside the checkpoint, the model of\n"
        "                      the lowest validation loss so far (the checkpoint itself\n"
        "                      holds the last)\n"
        "\n",
        out);
    fputs(
        "sample options:\n"
        "  --prime TEXT        text to start from; its characters must be in the model's\n"
        "                      vocabulary [a newline, if the vocabulary has one]\n"
        "  --length N          characters to generate [500]\n"
        "  --temperature X     sampling temperature; 0 picks the likeliest character [0.8]\n"
        "  --seed N            seed of the sample: the same seed gives the same text [1]\n"
        "  --backend NAME      auto, cpu or cuda [auto]\n"
        "\n"
        "Options take their value as `--name VALUE` or `--name=VALUE`. Exit status: 0 on\n"
        "success (also after Ctrl-C), 1 on errors, 2 on bad usage.\n",
        out);
}

/* ---- parsing --------------------------------------------------------------------------- */

static void set_defaults(charrnn_options *o)
{
    memset(o, 0, sizeof *o);
    o->hidden = 256;
    o->cell = GPURNN_CELL_TANH;
    o->layers = 1;
    o->batch = 32;
    o->seq_len = 64;
    o->steps = 2000;
    o->optimizer = GPURNN_ADAM;
    o->learning_rate = 0; /* filled from the optimizer after parsing */
    o->clip = 5.0;
    o->init_scale = 0.01;
    o->dtype = GPURNN_F32;
    o->val_fraction = 0.05;
    o->checkpoint_every = 500;
    o->eval_every = -1;
    o->sample_every = -1;
    o->sample_length = 200;
    o->backend = GPURNN_BACKEND_AUTO;
    o->seed = 1;
    o->temperature = 0.8;
    o->length = 500;
}

static int parse_value(const option_spec *spec, const char *text, charrnn_options *o,
                       charrnn_error *err)
{
    void *field = (char *)o + spec->offset;
    char *end = NULL;
    errno = 0;
    switch (spec->kind) {
    case VALUE_INT:
    case VALUE_LONG: {
        long long v = strtoll(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || (double)v < spec->min ||
            (double)v > spec->max)
            return charrnn_fail(err, "%s wants an integer in [%.0f, %.0f], got '%s'", spec->name,
                                spec->min, spec->max, text);
        if (spec->kind == VALUE_INT)
            *(int *)field = (int)v;
        else
            *(long long *)field = v;
        return 0;
    }
    case VALUE_U64: {
        unsigned long long v = strtoull(text, &end, 10);
        if (errno != 0 || end == text || *end != '\0' || text[0] == '-')
            return charrnn_fail(err, "%s wants a non-negative integer, got '%s'", spec->name, text);
        *(unsigned long long *)field = v;
        return 0;
    }
    case VALUE_REAL: {
        double v = strtod(text, &end);
        if (errno != 0 || end == text || *end != '\0' || !isfinite(v) || v < spec->min ||
            v > spec->max)
            return charrnn_fail(err, "%s wants a number in [%g, %g], got '%s'", spec->name,
                                spec->min, spec->max, text);
        *(double *)field = v;
        return 0;
    }
    case VALUE_TEXT:
        if (text[0] == '\0')
            return charrnn_fail(err, "%s wants a non-empty value", spec->name);
        *(const char **)field = text;
        return 0;
    case VALUE_CHOICE:
        for (int i = 0; spec->choices[i]; i++)
            if (strcmp(text, spec->choices[i]) == 0) {
                *(int *)field = i;
                return 0;
            }
        {
            char listed[128] = "";
            for (int i = 0; spec->choices[i]; i++) {
                strcat(listed, i ? (spec->choices[i + 1] ? ", " : " or ") : "");
                strcat(listed, spec->choices[i]);
            }
            return charrnn_fail(err, "%s wants %s, got '%s'", spec->name, listed, text);
        }
    case VALUE_FLAG:
        break;
    }
    return charrnn_fail(err, "%s takes no value", spec->name);
}

int charrnn_parse_options(int argc, char **argv, charrnn_options *o, charrnn_error *err)
{
    set_defaults(o);
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            o->command = CHARRNN_HELP;
            return 0;
        }
    if (argc < 2)
        return charrnn_fail(err, "no command given: use `train` or `sample` (see --help)");
    const char *command = argv[1];
    int allowed;
    if (strcmp(command, "train") == 0) {
        o->command = CHARRNN_TRAIN;
        allowed = FOR_TRAIN;
    } else if (strcmp(command, "sample") == 0) {
        o->command = CHARRNN_SAMPLE;
        allowed = FOR_SAMPLE;
    } else if (strcmp(command, "--version") == 0) {
        o->command = CHARRNN_VERSION;
        return 0;
    } else {
        return charrnn_fail(err, "unknown command '%s': use `train` or `sample` (see --help)",
                            command);
    }

    int operands = 0, options_ended = 0;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (options_ended || arg[0] != '-' || arg[1] == '\0') { /* an operand ("-" too) */
            if (operands++ > 0)
                return charrnn_fail(err, "unexpected extra operand '%s' (see --help)", arg);
            if (o->command == CHARRNN_TRAIN)
                o->text_path = arg;
            else
                o->sample_checkpoint = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_ended = 1;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const option_spec *spec = NULL;
        for (size_t k = 0; k < sizeof option_table / sizeof option_table[0]; k++)
            if (strlen(option_table[k].name) == name_len &&
                strncmp(option_table[k].name, arg, name_len) == 0)
                spec = &option_table[k];
        if (!spec || !(spec->commands & allowed))
            return charrnn_fail(err, "unknown option '%.*s' for %s (see --help)", (int)name_len,
                                arg, command);
        if (spec->kind == VALUE_FLAG) {
            if (eq)
                return charrnn_fail(err, "%s takes no value", spec->name);
            *(int *)((char *)o + spec->offset) = 1;
            continue;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc)
                return charrnn_fail(err, "%s needs a value (see --help)", spec->name);
            value = argv[++i];
        }
        if (parse_value(spec, value, o, err) != 0)
            return -1;
        o->given |= spec->given;
    }

    if (o->command == CHARRNN_SAMPLE && !o->sample_checkpoint)
        return charrnn_fail(err, "sample needs a CHECKPOINT (see --help)");
    if ((o->given & GIVEN_STEPS) && (o->given & GIVEN_EPOCHS))
        return charrnn_fail(err, "give --steps or --epochs, not both");
    if (!(o->given & GIVEN_LR))
        o->learning_rate = charrnn_default_learning_rate(o->optimizer);
    if (!(o->given & GIVEN_LR_FINAL))
        o->learning_rate_final = o->learning_rate;
    return 0;
}
