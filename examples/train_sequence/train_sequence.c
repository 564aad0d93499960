/*
 * gpurnn-train-sequence: a small, complete tour of the libgpurnn API.
 *
 * It makes a text from a tiny fixed grammar ("the cat sees the ball. a dog likes the
 * sun. ..."), then trains a character-level RNN on it with truncated BPTT:
 *
 *   - the text is cut into B streams that are trained side by side (one batch);
 *   - each step feeds the next window of T characters of every stream, and the hidden
 *     state left by one window is where the next one starts (the library carries it);
 *   - forward -> backward -> clip the gradient norm -> Adam step -> zero the gradients.
 *
 * Then it saves a checkpoint, loads it back into a second model, checks that the
 * parameters survived exactly, samples some text from the loaded model, and ends with
 * one line that says which backend ran and whether CUDA is available here.
 *
 *   gpurnn-train-sequence [--backend cpu|cuda|auto] [--steps N] [--hidden N]
 *                         [--seed N] [--checkpoint PATH]
 *
 * Every library call is checked: on failure the program prints the status and
 * gpurnn_last_error() and exits with status 1.
 */
#include <gpurnn.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    BATCH = 16,          /* B: streams trained side by side */
    WINDOW = 32,         /* T: characters per truncated-BPTT window */
    TEXT_SENTENCES = 1200,
    SAMPLE_CHARS = 160,
};

static const char *program = "gpurnn-train-sequence";

/* ---- error handling --------------------------------------------------------------- */

static void check_status(gpurnn_status s, const char *call)
{
    if (s == GPURNN_OK)
        return;
    fflush(stdout); /* so that the message follows what was printed before it */
    fprintf(stderr, "%s: %s failed\n  %s\n  %s\n", program, call, gpurnn_status_string(s),
            gpurnn_last_error());
    exit(EXIT_FAILURE);
}

/* CHECK(gpurnn_forward(...)) prints the failing call itself. */
#define CHECK(call) check_status((call), #call)

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "%s: out of memory (%zu bytes)\n", program, bytes);
        exit(EXIT_FAILURE);
    }
    return p;
}

/* ---- options ---------------------------------------------------------------------- */

typedef struct options {
    gpurnn_backend backend;
    long steps;
    long hidden;
    unsigned long long seed;
    const char *checkpoint;
} options;

static void usage(FILE *out)
{
    fprintf(out,
            "usage: %s [--backend cpu|cuda|auto] [--steps N] [--hidden N] [--seed N]\n"
            "       [--checkpoint PATH]\n"
            "\n"
            "Trains a character-level RNN on a generated text with truncated BPTT, prints\n"
            "the loss as it falls, saves a checkpoint and samples from it.\n"
            "\n"
            "  --backend B        cpu, cuda or auto (default: auto = CUDA when usable, else CPU)\n"
            "  --steps N          optimizer steps (default: 400)\n"
            "  --hidden N         hidden units H (default: 64)\n"
            "  --seed N           seed of the initial weights and of sampling (default: 1)\n"
            "  --checkpoint PATH  where to save the model (default: train_sequence.ckpt)\n",
            program);
}

static long parse_long(const char *name, const char *text, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "%s: %s wants an integer in [%ld, %ld], got '%s'\n", program, name, min,
                max, text);
        exit(2);
    }
    return v;
}

static unsigned long long parse_seed(const char *text)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        fprintf(stderr, "%s: --seed wants a non-negative integer, got '%s'\n", program, text);
        exit(2);
    }
    return v;
}

static options parse_options(int argc, char **argv)
{
    options o = {GPURNN_BACKEND_AUTO, 400, 64, 1, "train_sequence.ckpt"};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        /* every other option takes a value: "--name value" or "--name=value" */
        const char *value = NULL;
        size_t name_len = strlen(arg);
        const char *eq = strchr(arg, '=');
        if (eq) {
            name_len = (size_t)(eq - arg);
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        }
#define IS(name) (name_len == strlen(name) && strncmp(arg, name, name_len) == 0)
        if (!IS("--backend") && !IS("--steps") && !IS("--hidden") && !IS("--seed") &&
            !IS("--checkpoint")) {
            fprintf(stderr, "%s: unknown option '%s'\n", program, arg);
            usage(stderr);
            exit(2);
        }
        if (!value) {
            fprintf(stderr, "%s: %s needs a value\n", program, arg);
            exit(2);
        }
        if (IS("--backend")) {
            if (strcmp(value, "cpu") == 0)
                o.backend = GPURNN_BACKEND_CPU;
            else if (strcmp(value, "cuda") == 0)
                o.backend = GPURNN_BACKEND_CUDA;
            else if (strcmp(value, "auto") == 0)
                o.backend = GPURNN_BACKEND_AUTO;
            else {
                fprintf(stderr, "%s: --backend wants cpu, cuda or auto, got '%s'\n", program, value);
                exit(2);
            }
        } else if (IS("--steps")) {
            o.steps = parse_long("--steps", value, 1, 100000000L);
        } else if (IS("--hidden")) {
            o.hidden = parse_long("--hidden", value, 1, 4096);
        } else if (IS("--seed")) {
            o.seed = parse_seed(value);
        } else {
            o.checkpoint = value;
        }
#undef IS
    }
    return o;
}

/* ---- the training text ------------------------------------------------------------ */

/* Sentences "subject verb object. " from a tiny grammar, the words chosen by a fixed
 * linear congruential generator, so the text is the same on every run. What a model can
 * learn is the spelling of each word and their order; the choice of each word stays
 * uncertain, which sets the lowest loss reachable (text_entropy). */
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
static const char *const subjects[] = {"the cat", "a dog", "my bird", "the fish"};
static const char *const verbs[] = {"sees", "chases", "likes"};
static const char *const objects[] = {"the ball", "a mouse", "the sun"};

static char *make_text(size_t *len_out)
{
    size_t cap = (size_t)TEXT_SENTENCES * 32, len = 0;
    char *text = xmalloc(cap);
    unsigned long long lcg = 12345;
    for (int i = 0; i < TEXT_SENTENCES; i++) {
        const char *words[3];
        for (int w = 0; w < 3; w++) {
            lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
            unsigned r = (unsigned)(lcg >> 33);
            words[w] = w == 0   ? subjects[r % COUNT(subjects)]
                       : w == 1 ? verbs[r % COUNT(verbs)]
                                : objects[r % COUNT(objects)];
        }
        len += (size_t)snprintf(text + len, cap - len, "%s %s %s. ", words[0], words[1], words[2]);
    }
    *len_out = len;
    return text;
}

/* ---- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    options opt = parse_options(argc, argv);

    /* The text and its vocabulary: token id = rank of the character among those used. */
    size_t n = 0;
    char *text = make_text(&n);
    int used[256] = {0}, id_of[256] = {0};
    char char_of[256];
    int V = 0;
    for (size_t i = 0; i < n; i++)
        used[(unsigned char)text[i]] = 1;
    for (int c = 0; c < 256; c++)
        if (used[c]) {
            id_of[c] = V;
            char_of[V++] = (char)c;
        }
    int32_t *ids = xmalloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = id_of[(unsigned char)text[i]];

    /* The model. Unset fields keep gpurnn_config_init's defaults (float32, init 0.01). */
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = V;
    cfg.hidden_size = (int)opt.hidden;
    cfg.batch_size = BATCH;
    cfg.max_seq_len = WINDOW;
    cfg.backend = opt.backend;
    cfg.reduction = GPURNN_LOSS_MEAN; /* loss in nats per character */
    cfg.seed = opt.seed;
    gpurnn_model *model = NULL;
    CHECK(gpurnn_model_create(&cfg, &model));
    const char *backend_name = gpurnn_model_backend(model) == GPURNN_BACKEND_CUDA ? "cuda" : "cpu";
    printf("libgpurnn %s, backend %s: V=%d H=%d B=%d T=%d, %zu parameters, %zu characters of text\n",
           gpurnn_version(), backend_name, V, cfg.hidden_size, BATCH, WINDOW,
           gpurnn_param_count(model), n);

    gpurnn_optimizer adam = {0};
    adam.kind = GPURNN_ADAM;
    adam.learning_rate = 0.01; /* beta1, beta2 and eps left 0: their defaults */

    /* Stream b is text[b*L .. b*L + L]; each window reads WINDOW inputs from every stream
     * and the characters one further on as targets, laid out time-major: [t][b]. */
    const size_t L = (n - 1) / BATCH;
    int32_t inputs[WINDOW * BATCH], targets[WINDOW * BATCH];
    size_t pos = 0;
    const long every = opt.steps >= 10 ? opt.steps / 10 : 1;
    double loss_sum = 0.0; /* over the steps since the last line printed */
    long loss_count = 0;
    printf("an untrained model's loss is about ln(V) = %.3f nats/char\n", log((double)V));
    for (long step = 1; step <= opt.steps; step++) {
        if (pos + WINDOW > L) { /* end of the streams: start again from a zero state */
            pos = 0;
            CHECK(gpurnn_state_reset(model));
        }
        for (int t = 0; t < WINDOW; t++)
            for (int b = 0; b < BATCH; b++) {
                size_t i = (size_t)b * L + pos + (size_t)t;
                inputs[t * BATCH + b] = ids[i];
                targets[t * BATCH + b] = ids[i + 1];
            }
        pos += WINDOW;

        double loss = 0.0;
        CHECK(gpurnn_forward(model, inputs, targets, WINDOW, &loss)); /* from the carried state */
        CHECK(gpurnn_backward(model));
        CHECK(gpurnn_clip_grad_norm(model, 5.0, NULL));
        CHECK(gpurnn_step(model, &adam));
        CHECK(gpurnn_zero_grad(model));

        loss_sum += loss;
        loss_count++;
        if (step == 1 || step % every == 0 || step == opt.steps) {
            printf("step %6ld  loss %.4f nats/char\n", step, loss_sum / (double)loss_count);
            loss_sum = 0.0;
            loss_count = 0;
        }
    }

    /* The text's only randomness is the choice of words: one of S*V*O sentences each. */
    double sentence_choices = (double)(COUNT(subjects) * COUNT(verbs) * COUNT(objects));
    printf("the text's own entropy is %.4f nats/char: no model can go below it\n",
           TEXT_SENTENCES * log(sentence_choices) / (double)(n - 1));

    /* Save, load into a second model on the same backend, and compare the parameters. */
    CHECK(gpurnn_model_save(model, opt.checkpoint));
    gpurnn_model *loaded = NULL;
    CHECK(gpurnn_model_load(opt.checkpoint, gpurnn_model_backend(model), &loaded));
    size_t P = gpurnn_param_count(model);
    double *a = xmalloc(P * sizeof *a), *b = xmalloc(P * sizeof *b);
    CHECK(gpurnn_params_get(model, a, P));
    CHECK(gpurnn_params_get(loaded, b, P));
    if (gpurnn_param_count(loaded) != P || memcmp(a, b, P * sizeof *a) != 0) {
        fprintf(stderr, "%s: the checkpoint %s did not restore the parameters\n", program,
                opt.checkpoint);
        return EXIT_FAILURE;
    }
    printf("saved checkpoint %s and loaded it back: %zu parameters identical\n", opt.checkpoint, P);

    /* Sample from the loaded model, starting from a zero state and the text's first
     * character. Sampling leaves the carried training state as it is. */
    int32_t drawn[SAMPLE_CHARS];
    CHECK(gpurnn_state_reset(loaded));
    CHECK(gpurnn_sample(loaded, ids[0], SAMPLE_CHARS, 0.5, opt.seed, drawn));
    printf("sample (temperature 0.5):\n%c", char_of[ids[0]]);
    for (int i = 0; i < SAMPLE_CHARS; i++)
        putchar(char_of[drawn[i]]);
    printf("\n");

    /* Which backend ran, and why CUDA is or is not usable here. */
    gpurnn_status cuda = gpurnn_backend_check(GPURNN_BACKEND_CUDA);
    if (cuda == GPURNN_OK)
        printf("backend: %s; CUDA available: yes\n", backend_name);
    else
        printf("backend: %s; CUDA available: no (%s)\n", backend_name, gpurnn_last_error());

    gpurnn_model_destroy(loaded);
    gpurnn_model_destroy(model);
    free(a);
    free(b);
    free(ids);
    free(text);
    return EXIT_SUCCESS;
}
