/* gpurnn-bench: times full training steps of libgpurnn on its backends, beside the
 * machine's own GEMM rate and beside peers (PyTorch on the CPU, cuDNN on the GPU).
 *
 * One training step is what a user's loop does per batch:
 *     gpurnn_zero_grad, gpurnn_forward, gpurnn_backward, gpurnn_clip_grad_norm, gpurnn_step
 * (on CUDA followed by a device synchronisation, so the step's queued work is inside its
 * time). The figure reported is the median over the timed repeats after warm-up.
 *
 * Every measurement runs in a child process of its own (fork), so that its peak RSS is
 * its own, a crash or a hang of one does not end the run, and CUDA is initialised only in
 * children. The parent never runs an OpenMP region or a CUDA call; it only parses options,
 * starts children and peers, and prints.
 *
 * Uses only gpurnn.h, libc, CBLAS (for the CPU GEMM rate) and, when built with CUDA, the
 * CUDA runtime and cuBLAS (bench_device.c). See bench/README.md. */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_device.h"
#include "bench_plot.h"
#include "bench_record.h"
#include "gpurnn.h"

#ifndef GPURNN_BENCH_SOURCE_PEERS_DIR
#define GPURNN_BENCH_SOURCE_PEERS_DIR ""
#endif
#ifndef GPURNN_BENCH_CUDNN_PEER
#define GPURNN_BENCH_CUDNN_PEER ""
#endif

/* ---- presets and options ------------------------------------------------------------- */

typedef struct {
    const char *name;
    int V, H, B, T;
    int steps, warmup; /* defaults for this preset */
    const char *what;
    gpurnn_cell cell;
    int layers;        /* 0: 1 */
} preset;

static const preset presets[] = {
    {"min-char-rnn", 65, 100, 1, 25, 200, 20, "Karpathy's min-char-rnn: tiny model, short BPTT window", GPURNN_CELL_TANH, 1},
    {"batched", 128, 512, 32, 1000, 10, 2, "a batch of 32 sequences of 1000 steps, H=512", GPURNN_CELL_TANH, 1},
    {"long", 128, 256, 1, 10000, 5, 1, "one sequence of 10,000 steps", GPURNN_CELL_TANH, 1},
    {"very-long", 128, 256, 1, 100000, 3, 1, "one sequence of 100,000 steps (memory bound check)", GPURNN_CELL_TANH, 1},
    {"gru-batched", 128, 512, 32, 1000, 5, 1, "2 GRU layers, a batch of 32 sequences of 1000 steps", GPURNN_CELL_GRU, 2},
    {"lstm-batched", 128, 512, 32, 1000, 5, 1, "2 LSTM layers, a batch of 32 sequences of 1000 steps", GPURNN_CELL_LSTM, 2},
    {"gru-long", 128, 256, 1, 10000, 5, 1, "1 GRU layer, one sequence of 10,000 steps", GPURNN_CELL_GRU, 1},
    {"lstm-long", 128, 256, 1, 10000, 5, 1, "1 LSTM layer, one sequence of 10,000 steps", GPURNN_CELL_LSTM, 1},
};

static const char *cell_name(gpurnn_cell cell)
{
    static const char *const names[] = {"tanh", "relu", "gru", "lstm"};
    return (unsigned)cell <= GPURNN_CELL_LSTM ? names[cell] : "?";
}
#define NPRESETS ((int)(sizeof presets / sizeof presets[0]))

#define MAX_SEQ 32
#define MAX_CONFIGS 64

typedef struct {
    const char *preset; /* name, or "custom" */
    int V, H, B, T, steps, warmup;
    gpurnn_cell cell;
    int layers;
} config;

enum { BK_CPU = 1, BK_CUDA = 2 };

typedef struct {
    char presets_arg[256];
    int V, H, B; /* -1: from the preset */
    int cell, layers; /* -1: from the preset */
    int seqs[MAX_SEQ], nseq;
    gpurnn_dtype dtype;
    int backends;
    int threads;
    int steps, warmup; /* -1: from the preset */
    int json;
    const char *plot;
    int peers;
    gpurnn_optimizer_kind optimizer;
    double lr, clip;
    gpurnn_loss_reduction reduction;
    double max_time, timeout;
    int gemm_n, cuda_gemm_n;
    const char *python;
    const char *cudnn_algo;
    int torch_max_T;
    unsigned long long seed;
    int bptt_every;                 /* config.bptt_checkpoint_every */
    unsigned long long act_budget;  /* config.activation_budget_bytes */
} options;

static const char *optimizer_name(gpurnn_optimizer_kind k)
{
    return k == GPURNN_ADAGRAD ? "adagrad" : k == GPURNN_ADAM ? "adam" : "sgd";
}

static int optimizer_slots(gpurnn_optimizer_kind k)
{
    return k == GPURNN_ADAM ? 2 : k == GPURNN_ADAGRAD ? 1 : 0; /* SGD here has no momentum */
}

static const char *dtype_name(gpurnn_dtype d) { return d == GPURNN_F64 ? "f64" : "f32"; }

static void usage(FILE *f)
{
    fprintf(f,
            "usage: gpurnn-bench [options]\n"
            "Times one full training step of libgpurnn (zero_grad + forward + backward +\n"
            "clip_grad_norm + optimizer step): median over repeats after warm-up, tokens/s,\n"
            "GFLOP/s against the machine's own GEMM rate, peak memory; with --peers, beside\n"
            "PyTorch (CPU) and cuDNN (GPU) doing the same step on the same model.\n\n"
            "  --preset LIST      comma-separated presets, or 'all' (the default when no model\n"
            "                     flag is given):\n");
    for (int i = 0; i < NPRESETS; i++)
        fprintf(f, "                       %-13s %s L=%d V=%d H=%d B=%d T=%d  (%s)\n", presets[i].name,
                cell_name(presets[i].cell), presets[i].layers, presets[i].V, presets[i].H, presets[i].B, presets[i].T,
                presets[i].what);
    fprintf(f,
            "  --vocab V --hidden H --batch B\n"
            "                     model shape; override the preset's (without --preset, a custom\n"
            "                     model that starts from min-char-rnn's shape)\n"
            "  --cell tanh|relu|gru|lstm --layers L\n"
            "                     the recurrent cell and number of layers; override the preset's\n"
            "  --seq LIST         sequence lengths T, e.g. 100,1000,10000,100000 (overrides the preset's)\n"
            "  --dtype f32|f64    precision (default f32; the peers are f32 only)\n"
            "  --backend cpu|cuda|all   (default all; an unavailable backend prints why and is skipped)\n"
            "  --threads N        OpenMP/OpenBLAS threads for the CPU backend and the PyTorch peer\n"
            "                     (default: OMP_NUM_THREADS, else every online CPU)\n"
            "  --steps N          timed repeats (default: the preset's)\n"
            "  --warmup N         untimed repeats first (default: the preset's)\n"
            "  --max-time SEC     stop repeating once the timed steps took this long (default 60;\n"
            "                     at least one step is timed)\n"
            "  --timeout SEC      kill a measurement or peer that runs longer (default 1800)\n"
            "  --optimizer sgd|adagrad|adam   (default sgd)  --lr X (default 0.01)\n"
            "  --clip X           clip_grad_norm max norm (default 5)\n"
            "  --loss sum|mean    loss reduction (default sum, the library's default)\n"
            "  --seed N           seed of the weights and of the random tokens (default 1)\n"
            "  --bptt-checkpoint K|auto|off\n"
            "                     keep every K-th hidden state and recompute the rest in backward\n"
            "                     (default auto: the library's choice from the activation budget)\n"
            "  --activation-budget MB   the budget for auto (default the library's, 1024 MiB)\n"
            "  --gemm-size N      n of the n*n*n CBLAS GEMM that measures the CPU's rate (default 1024)\n"
            "  --cuda-gemm-size N n of the cuBLAS GEMM that measures the GPU's rate (default 4096)\n"
            "  --peers            also run bench/peers/torch_rnn.py (beside the CPU backend) and\n"
            "                     gpurnn-bench-cudnn (beside the CUDA backend), and print ratios\n"
            "  --python PATH      Python with torch for the peer (default $GPURNN_BENCH_PYTHON or\n"
            "                     /usr/bin/python3)\n"
            "  --torch-max-seq N  run the PyTorch peer only up to T = N (default 20000: its autograd\n"
            "                     takes minutes per step at T = 100000 on a small machine)\n"
            "  --cudnn-algo LIST  cuDNN RNN algorithms to try: standard, persist_static,\n"
            "                     persist_static_small_h, or all (default all; the fastest counts)\n"
            "  --json             print one JSON object per measurement on stdout (the table then\n"
            "                     goes to stderr); fields in bench/README.md\n"
            "  --plot FILE.svg    draw tokens/s against T (log-log), one line per backend and peer\n"
            "  --help\n\n"
            "The table's columns (one row per measured implementation and length):\n"
            "  impl, on, variant  who ran it (gpurnn, or a peer: torch, cudnn), on which device, and\n"
            "                     the peer's variant (e.g. torch's one-hot or embedding input)\n"
            "  median/min/max ms  wall time of one full training step over the timed repeats\n"
            "  tokens/s           T * B / median: characters trained on per second\n"
            "  GFLOP/s            6 T B (H^2 + V H) floating-point operations of the step / median\n"
            "  %%GEMM              that rate as a share of the rate this machine's own GEMM reached\n"
            "                     in this run (CBLAS on the CPU, cuBLAS on the GPU): how close the\n"
            "                     step comes to the hardware's matrix-multiply speed\n"
            "  RSS MB, dev MB     peak resident host memory of the process, device memory in use\n"
            "  ckpt k             the BPTT checkpoint interval the model used: '-' keeps every\n"
            "                     hidden state, k keeps every k-th and recomputes the others\n"
            "  act MB             memory the model holds for activations (gpurnn_model_memory)\n"
            "  reps               timed repeats\n"
            "After the table: speed ratios (e.g. 'CPU 12.3x PyTorch': libgpurnn's tokens/s over the\n"
            "peer's, same shape, threads and dtype), the goals for the CPU backend with whether this\n"
            "run met them, and memory: peak RSS = what was there before the model (libraries) +\n"
            "what the model added; 'theory' is what the model must hold (hidden states (T+1) B H,\n"
            "parameters, gradients, optimizer state), and 'added/theory' the ratio of the two\n"
            "(near 1: the model holds little beyond what it must).\n");
}

static int parse_int(const char *s, int lo, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > 1000000000L) return -1;
    *out = (int)v;
    return 0;
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int parse_options(int argc, char **argv, options *o)
{
    memset(o, 0, sizeof *o);
    o->V = o->H = o->B = -1;
    o->cell = o->layers = -1;
    o->dtype = GPURNN_F32;
    o->backends = BK_CPU | BK_CUDA;
    const char *env_threads = getenv("OMP_NUM_THREADS");
    if (!env_threads || parse_int(env_threads, 1, &o->threads)) o->threads = online_cpus();
    o->steps = o->warmup = -1;
    o->optimizer = GPURNN_SGD;
    o->lr = 0.01;
    o->clip = 5.0;
    o->reduction = GPURNN_LOSS_SUM;
    o->max_time = 60;
    o->timeout = 1800;
    o->gemm_n = 1024;
    o->cuda_gemm_n = 4096;
    o->python = getenv("GPURNN_BENCH_PYTHON");
    if (!o->python || !o->python[0]) o->python = "/usr/bin/python3";
    o->cudnn_algo = "all";
    o->torch_max_T = 20000;
    o->seed = 1;
    int model_flag = 0;

    for (int i = 1; i < argc; i++) {
        char name[64];
        const char *arg = argv[i], *val = NULL;
        if (strncmp(arg, "--", 2)) {
            fprintf(stderr, "gpurnn-bench: unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (len >= sizeof name) len = sizeof name - 1;
        memcpy(name, arg, len);
        name[len] = '\0';
        static const char *const known[] = {
            "--json",      "--peers",     "--help",    "-h",           "--preset",     "--vocab",
            "--hidden",    "--batch",     "--seq",     "--dtype",      "--backend",    "--threads",
            "--steps",     "--warmup",    "--max-time", "--timeout",   "--optimizer",  "--lr",
            "--clip",      "--loss",      "--seed",    "--gemm-size",  "--cuda-gemm-size", "--plot",
            "--python",    "--cudnn-algo", "--torch-max-seq", "--bptt-checkpoint", "--activation-budget",
            "--cell",      "--layers"};
        int is_known = 0;
        for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) is_known |= !strcmp(name, known[k]);
        if (!is_known) {
            fprintf(stderr, "gpurnn-bench: unknown option %s (see --help)\n", name);
            return -1;
        }
        int is_flag = !strcmp(name, "--json") || !strcmp(name, "--peers") || !strcmp(name, "--help") ||
                      !strcmp(name, "-h");
        if (!is_flag) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                fprintf(stderr, "gpurnn-bench: %s needs a value\n", name);
                return -1;
            }
        }
        int bad = 0;
        if (!strcmp(name, "--help") || !strcmp(name, "-h")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(name, "--json"))
            o->json = 1;
        else if (!strcmp(name, "--peers"))
            o->peers = 1;
        else if (!strcmp(name, "--preset"))
            bench_set_string(o->presets_arg, sizeof o->presets_arg, val);
        else if (!strcmp(name, "--vocab"))
            bad = parse_int(val, 1, &o->V), model_flag = 1;
        else if (!strcmp(name, "--hidden"))
            bad = parse_int(val, 1, &o->H), model_flag = 1;
        else if (!strcmp(name, "--batch"))
            bad = parse_int(val, 1, &o->B), model_flag = 1;
        else if (!strcmp(name, "--cell")) {
            o->cell = -1;
            for (int k = 0; k <= GPURNN_CELL_LSTM; k++)
                if (!strcmp(val, cell_name((gpurnn_cell)k))) o->cell = k;
            bad = o->cell < 0;
            model_flag = 1;
        } else if (!strcmp(name, "--layers"))
            bad = parse_int(val, 1, &o->layers) || o->layers > GPURNN_MAX_LAYERS, model_flag = 1;
        else if (!strcmp(name, "--seq")) {
            char buf[512];
            bench_set_string(buf, sizeof buf, val);
            o->nseq = 0;
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (o->nseq == MAX_SEQ || parse_int(tok, 1, &o->seqs[o->nseq])) {
                    bad = 1;
                    break;
                }
                o->nseq++;
            }
            bad |= o->nseq == 0;
            model_flag = 1;
        } else if (!strcmp(name, "--dtype")) {
            if (!strcmp(val, "f32"))
                o->dtype = GPURNN_F32;
            else if (!strcmp(val, "f64"))
                o->dtype = GPURNN_F64;
            else
                bad = 1;
        } else if (!strcmp(name, "--backend")) {
            if (!strcmp(val, "cpu"))
                o->backends = BK_CPU;
            else if (!strcmp(val, "cuda"))
                o->backends = BK_CUDA;
            else if (!strcmp(val, "all"))
                o->backends = BK_CPU | BK_CUDA;
            else
                bad = 1;
        } else if (!strcmp(name, "--threads"))
            bad = parse_int(val, 1, &o->threads);
        else if (!strcmp(name, "--steps"))
            bad = parse_int(val, 1, &o->steps);
        else if (!strcmp(name, "--warmup"))
            bad = parse_int(val, 0, &o->warmup);
        else if (!strcmp(name, "--max-time"))
            bad = parse_double(val, &o->max_time) || o->max_time <= 0;
        else if (!strcmp(name, "--timeout"))
            bad = parse_double(val, &o->timeout) || o->timeout <= 0;
        else if (!strcmp(name, "--optimizer")) {
            if (!strcmp(val, "sgd"))
                o->optimizer = GPURNN_SGD;
            else if (!strcmp(val, "adagrad"))
                o->optimizer = GPURNN_ADAGRAD;
            else if (!strcmp(val, "adam"))
                o->optimizer = GPURNN_ADAM;
            else
                bad = 1;
        } else if (!strcmp(name, "--lr"))
            bad = parse_double(val, &o->lr) || o->lr < 0;
        else if (!strcmp(name, "--clip"))
            bad = parse_double(val, &o->clip) || o->clip < 0;
        else if (!strcmp(name, "--loss")) {
            if (!strcmp(val, "sum"))
                o->reduction = GPURNN_LOSS_SUM;
            else if (!strcmp(val, "mean"))
                o->reduction = GPURNN_LOSS_MEAN;
            else
                bad = 1;
        } else if (!strcmp(name, "--seed")) {
            int s;
            bad = parse_int(val, 0, &s);
            o->seed = (unsigned long long)s;
        } else if (!strcmp(name, "--gemm-size"))
            bad = parse_int(val, 16, &o->gemm_n);
        else if (!strcmp(name, "--cuda-gemm-size"))
            bad = parse_int(val, 16, &o->cuda_gemm_n);
        else if (!strcmp(name, "--plot"))
            o->plot = val;
        else if (!strcmp(name, "--python"))
            o->python = val;
        else if (!strcmp(name, "--cudnn-algo"))
            o->cudnn_algo = val;
        else if (!strcmp(name, "--bptt-checkpoint")) {
            if (!strcmp(val, "auto"))
                o->bptt_every = 0;
            else if (!strcmp(val, "off"))
                o->bptt_every = GPURNN_BPTT_KEEP_ALL;
            else
                bad = parse_int(val, 1, &o->bptt_every);
        } else if (!strcmp(name, "--activation-budget")) {
            int mb = 0;
            bad = parse_int(val, 1, &mb);
            o->act_budget = (unsigned long long)mb << 20;
        } else if (!strcmp(name, "--torch-max-seq"))
            bad = parse_int(val, 1, &o->torch_max_T);
        else {
            fprintf(stderr, "gpurnn-bench: unknown option %s (see --help)\n", name);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "gpurnn-bench: bad value '%s' for %s\n", val ? val : "", name);
            return -1;
        }
    }
    if (!o->presets_arg[0]) bench_set_string(o->presets_arg, sizeof o->presets_arg, model_flag ? "custom" : "all");
    return 0;
}

static void add_config(config *out, int *n, const char *name, gpurnn_cell cell, int layers, int V, int H, int B,
                       int T, int steps, int warmup)
{
    if (*n >= MAX_CONFIGS) return;
    config *c = &out[(*n)++];
    c->preset = name;
    c->cell = cell;
    c->layers = layers;
    c->V = V;
    c->H = H;
    c->B = B;
    c->T = T;
    c->steps = steps;
    c->warmup = warmup;
}

/* Expands the presets (and the model flags over them) into one config per (shape, T). */
static int build_configs(const options *o, config *out)
{
    int n = 0;
    char buf[256];
    bench_set_string(buf, sizeof buf, o->presets_arg);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        const preset *list[NPRESETS];
        int count = 0;
        static const preset custom = {"custom", 65, 100, 1, 25, 20, 3, "custom", GPURNN_CELL_TANH, 1};
        if (!strcmp(tok, "all")) {
            for (int i = 0; i < NPRESETS; i++) list[count++] = &presets[i];
        } else if (!strcmp(tok, "custom")) {
            list[count++] = &custom;
        } else {
            for (int i = 0; i < NPRESETS; i++)
                if (!strcmp(tok, presets[i].name)) list[count++] = &presets[i];
            if (!count) {
                fprintf(stderr, "gpurnn-bench: unknown preset '%s' (see --help)\n", tok);
                return -1;
            }
        }
        for (int k = 0; k < count; k++) {
            const preset *p = list[k];
            int V = o->V > 0 ? o->V : p->V, H = o->H > 0 ? o->H : p->H, B = o->B > 0 ? o->B : p->B;
            int steps = o->steps > 0 ? o->steps : p->steps, warmup = o->warmup >= 0 ? o->warmup : p->warmup;
            gpurnn_cell cell = o->cell >= 0 ? (gpurnn_cell)o->cell : p->cell;
            int layers = o->layers > 0 ? o->layers : p->layers;
            int modified = V != p->V || H != p->H || B != p->B || cell != p->cell || layers != p->layers;
            const char *name = modified ? "custom" : p->name;
            if (o->nseq)
                for (int s = 0; s < o->nseq; s++)
                    add_config(out, &n, name, cell, layers, V, H, B, o->seqs[s], steps, warmup);
            else
                add_config(out, &n, name, cell, layers, V, H, B, p->T, steps, warmup);
        }
    }
    return n;
}

/* The OpenMP runtime and OpenBLAS read their thread counts when they load, before main:
 * to apply --threads the program runs itself again with the variables set. */
static void ensure_threads(int threads, char **argv)
{
    char want[16];
    snprintf(want, sizeof want, "%d", threads);
    const char *omp = getenv("OMP_NUM_THREADS"), *blas = getenv("OPENBLAS_NUM_THREADS");
    if (omp && !strcmp(omp, want) && blas && !strcmp(blas, want)) return;
    if (getenv("GPURNN_BENCH_REEXEC")) {
        fprintf(stderr, "gpurnn-bench: warning: could not set the thread count to %s\n", want);
        return;
    }
    setenv("OMP_NUM_THREADS", want, 1);
    setenv("OPENBLAS_NUM_THREADS", want, 1);
    setenv("GPURNN_BENCH_REEXEC", "1", 1);
    fflush(NULL);
    execv("/proc/self/exe", argv);
    fprintf(stderr, "gpurnn-bench: warning: cannot re-run itself to set the thread count (%s); "
                    "set OMP_NUM_THREADS=%s yourself\n",
            strerror(errno), want);
}

/* ---- small utilities ------------------------------------------------------------------ */

/* A line "Key:   value kB" of /proc/self/status, in bytes; NaN when absent. */
static double proc_status_bytes(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    size_t klen = strlen(key);
    double v = NAN;
    if (!f) return v;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':') {
            v = strtod(line + klen + 1, NULL) * 1024.0;
            break;
        }
    fclose(f);
    return v;
}

static double peak_rss_bytes(void)
{
    double v = proc_status_bytes("VmHWM");
    if (isfinite(v)) return v;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) return (double)ru.ru_maxrss * 1024.0; /* Linux: kB */
    return NAN;
}

static void cpu_model(char *buf, size_t size)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    bench_set_string(buf, size, "unknown CPU");
    if (!f) return;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                p++;
                while (*p == ' ' || *p == '\t') p++;
                p[strcspn(p, "\n")] = '\0';
                bench_set_string(buf, size, p);
            }
            break;
        }
    fclose(f);
    char tmp[160];
    snprintf(tmp, sizeof tmp, "%s, %d CPUs", buf, online_cpus());
    bench_set_string(buf, size, tmp);
}

/* Timings of several threads mean little on a machine busy with other work: say how busy. */
static void print_load(FILE *f, const char *when, int cpus)
{
    double load[3];
    FILE *p = fopen("/proc/loadavg", "r");
    if (!p) return;
    int ok = fscanf(p, "%lf %lf %lf", &load[0], &load[1], &load[2]) == 3;
    fclose(p);
    if (!ok) return;
    fprintf(f, "load average at the %s: %.2f %.2f %.2f on %d CPUs%s\n", when, load[0], load[1], load[2], cpus,
            load[0] > 0.5 * cpus ? " (busy: timings, above all with several threads, are noisy)" : "");
}

/* ---- children ------------------------------------------------------------------------- */

typedef void (*child_fn)(const void *arg, bench_record *out);

static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Runs fn in a forked child and returns the record it made. A child that dies, or runs
 * past timeout_s (then killed), gives an "error" record that says so. */
static void run_in_child(child_fn fn, const void *arg, double timeout_s, const bench_record *identity,
                         bench_record *out)
{
    int fds[2];
    *out = *identity;
    fflush(NULL);
    if (pipe(fds)) {
        BENCH_SET(out->kind, "skip");
        BENCH_SET(out->status, "error");
        snprintf(out->reason, sizeof out->reason, "pipe: %s", strerror(errno));
        return;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        BENCH_SET(out->kind, "skip");
        BENCH_SET(out->status, "error");
        snprintf(out->reason, sizeof out->reason, "fork: %s", strerror(errno));
        return;
    }
    if (pid == 0) {
        close(fds[0]);
        bench_record r;
        bench_record_init(&r);
        fn(arg, &r);
        if (strcmp(r.status, "ok")) BENCH_SET(r.kind, "skip"); /* skipped or failed */
        int rc = write_all(fds[1], &r, sizeof r) ? 1 : 0;
        _exit(rc);
    }
    close(fds[1]);
    size_t got = 0;
    char *dst = (char *)out;
    double deadline = bench_now_s() + timeout_s;
    int timed_out = 0;
    while (got < sizeof *out) {
        double left = deadline - bench_now_s();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        struct pollfd p = {fds[0], POLLIN, 0};
        int pr = poll(&p, 1, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) continue;
        ssize_t k = read(fds[0], dst + got, sizeof *out - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fds[0]);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (got == sizeof *out) return;
    *out = *identity; /* what was measured, and why there is no result */
    BENCH_SET(out->kind, "skip");
    BENCH_SET(out->status, "error");
    if (timed_out)
        snprintf(out->reason, sizeof out->reason, "killed after the %.0f s timeout (--timeout)", timeout_s);
    else if (WIFSIGNALED(status))
        snprintf(out->reason, sizeof out->reason, "the measurement process died of signal %d (%s)",
                 WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out->reason, sizeof out->reason, "the measurement process exited with status %d",
                 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

typedef struct {
    const options *o;
    const config *c;
    gpurnn_backend backend;
} step_job;

static void fail_record(bench_record *r, const char *what, gpurnn_status s)
{
    BENCH_SET(r->kind, "step");
    BENCH_SET(r->status, "error");
    snprintf(r->reason, sizeof r->reason, "%s: %s: %s", what, gpurnn_status_string(s), gpurnn_last_error());
}

/* What a measurement is of, for the record that reports its failure. */
static void identity_record(bench_record *r, const char *impl, const char *backend, const options *o,
                            const config *c)
{
    bench_record_init(r);
    BENCH_SET(r->impl, impl);
    BENCH_SET(r->backend, backend);
    BENCH_SET(r->dtype, dtype_name(o->dtype));
    r->threads = o->threads;
    if (!c) return;
    BENCH_SET(r->preset, c->preset);
    BENCH_SET(r->cell, cell_name(c->cell));
    r->layers = c->layers;
    r->V = c->V;
    r->H = c->H;
    r->B = c->B;
    r->T = c->T;
}

/* Child: times training steps of one model on one backend. */
static void measure_gpurnn(const void *arg, bench_record *r)
{
    const step_job *j = arg;
    const options *o = j->o;
    const config *c = j->c;
    const int cuda = j->backend == GPURNN_BACKEND_CUDA;
    char msg[256];
    BENCH_SET(r->kind, "step");
    BENCH_SET(r->impl, "gpurnn");
    BENCH_SET(r->backend, cuda ? "cuda" : "cpu");
    BENCH_SET(r->preset, c->preset);
    BENCH_SET(r->dtype, dtype_name(o->dtype));
    BENCH_SET(r->optimizer, optimizer_name(o->optimizer));
    BENCH_SET(r->reduction, o->reduction == GPURNN_LOSS_MEAN ? "mean" : "sum");
    BENCH_SET(r->cell, cell_name(c->cell));
    r->layers = c->layers;
    r->V = c->V;
    r->H = c->H;
    r->B = c->B;
    r->T = c->T;
    r->threads = o->threads;
    r->warmup = c->warmup;
    r->flops_per_step = bench_model_flops(r->cell, c->layers, c->V, c->H, c->B, c->T);
    r->theory_bytes = bench_theory_bytes(r->cell, c->layers, c->V, c->H, c->B, c->T, optimizer_slots(o->optimizer),
                                         o->dtype == GPURNN_F64 ? sizeof(double) : sizeof(float));

    gpurnn_status s = gpurnn_backend_check(j->backend);
    if (s != GPURNN_OK) {
        BENCH_SET(r->kind, "skip");
        BENCH_SET(r->status, "skipped");
        BENCH_SET(r->reason, gpurnn_last_error());
        return;
    }
    if (cuda) {
        if (bench_cuda_device_name(r->device, sizeof r->device, msg, sizeof msg))
            BENCH_SET(r->device, "CUDA device");
    } else {
        cpu_model(r->device, sizeof r->device);
    }

    size_t ntok = (size_t)c->T * (size_t)c->B;
    int32_t *inputs = malloc(ntok * sizeof *inputs), *targets = malloc(ntok * sizeof *targets);
    double *times = malloc((size_t)c->steps * sizeof *times);
    if (!inputs || !targets || !times) {
        BENCH_SET(r->status, "error");
        BENCH_SET(r->reason, "out of host memory for the tokens");
        return;
    }
    /* Random tokens: the work of a step does not depend on them. */
    uint64_t x = o->seed * 0x9e3779b97f4a7c15ULL + 12345;
    for (size_t i = 0; i < ntok; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        inputs[i] = (int32_t)(x % (uint64_t)c->V);
        targets[i] = (int32_t)((x >> 32) % (uint64_t)c->V);
    }

    size_t free0 = 0, free1 = 0, total = 0;
    if (cuda && bench_cuda_meminfo(&free0, &total, msg, sizeof msg)) {
        BENCH_SET(r->status, "error");
        BENCH_SET(r->reason, msg);
        return;
    }
    r->base_rss_bytes = proc_status_bytes("VmRSS");

    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = c->V;
    cfg.hidden_size = c->H;
    cfg.batch_size = c->B;
    cfg.max_seq_len = c->T;
    cfg.dtype = o->dtype;
    cfg.backend = j->backend;
    cfg.reduction = o->reduction;
    cfg.seed = o->seed;
    cfg.cell = c->cell;
    cfg.num_layers = c->layers;
    cfg.bptt_checkpoint_every = o->bptt_every;
    cfg.activation_budget_bytes = o->act_budget;
    gpurnn_model *m = NULL;
    s = gpurnn_model_create(&cfg, &m);
    if (s != GPURNN_OK) {
        fail_record(r, "gpurnn_model_create", s);
        return;
    }
    gpurnn_memory_report mem;
    if (gpurnn_model_memory(m, &mem) == GPURNN_OK) {
        r->bptt_checkpoint_every = mem.bptt_checkpoint_every;
        r->model_host_bytes = (double)mem.host_total;
        r->model_device_bytes = (double)mem.device_total;
        r->activation_bytes = (double)(mem.host[GPURNN_MEMORY_ACTIVATIONS] + mem.device[GPURNN_MEMORY_ACTIVATIONS]);
    }
    gpurnn_optimizer opt;
    memset(&opt, 0, sizeof opt);
    opt.kind = o->optimizer;
    opt.learning_rate = o->lr;

    int n = 0;
    double timed = 0, loss = NAN;
    for (int i = -c->warmup; i < c->steps; i++) {
        double t0 = bench_now_s();
        const char *what = "gpurnn_zero_grad";
        s = gpurnn_zero_grad(m);
        if (s == GPURNN_OK) what = "gpurnn_forward", s = gpurnn_forward(m, inputs, targets, c->T, &loss);
        if (s == GPURNN_OK) what = "gpurnn_backward", s = gpurnn_backward(m);
        if (s == GPURNN_OK) what = "gpurnn_clip_grad_norm", s = gpurnn_clip_grad_norm(m, o->clip, NULL);
        if (s == GPURNN_OK) what = "gpurnn_step", s = gpurnn_step(m, &opt);
        if (s != GPURNN_OK) {
            fail_record(r, what, s);
            gpurnn_model_destroy(m);
            return;
        }
        if (cuda && bench_cuda_sync(msg, sizeof msg)) {
            BENCH_SET(r->status, "error");
            BENCH_SET(r->reason, msg);
            gpurnn_model_destroy(m);
            return;
        }
        double dt = bench_now_s() - t0;
        if (i < 0) continue;
        times[n++] = dt;
        timed += dt;
        if (timed > o->max_time) break;
    }
    if (cuda && bench_cuda_meminfo(&free1, &total, msg, sizeof msg) == 0) {
        r->dev_mem_bytes = free0 >= free1 ? (double)(free0 - free1) : 0;
        r->dev_total_bytes = (double)total;
    }
    gpurnn_model_destroy(m);
    r->peak_rss_bytes = peak_rss_bytes();
    bench_summarize_times(times, n, r);
    r->tokens_per_s = (double)ntok / r->median_s;
    r->gflops = r->flops_per_step / r->median_s * 1e-9;
    double per_token = o->reduction == GPURNN_LOSS_MEAN ? 1.0 : 1.0 / (double)ntok;
    r->loss = loss * per_token;
    BENCH_SET(r->status, "ok");
    free(inputs);
    free(targets);
    free(times);
}

typedef struct {
    const options *o;
} gemm_job;

/* Child: the CPU's GEMM rate through the CBLAS the library links: n×n×n, the fastest of
 * up to 30 calls or 2 s after two calls of warm-up. */
static void measure_cpu_gemm(const void *arg, bench_record *r)
{
    const options *o = ((const gemm_job *)arg)->o;
    const int n = o->gemm_n, dbl = o->dtype == GPURNN_F64;
    const size_t elem = dbl ? sizeof(double) : sizeof(float), count = (size_t)n * (size_t)n;
    BENCH_SET(r->kind, "gemm");
    BENCH_SET(r->impl, "openblas");
    BENCH_SET(r->backend, "cpu");
    BENCH_SET(r->dtype, dtype_name(o->dtype));
    cpu_model(r->device, sizeof r->device);
    r->M = r->N = r->K = n;
    r->threads = o->threads;
    r->warmup = 2;
    r->flops_per_step = 2.0 * n * (double)n * (double)n;
    void *a = malloc(count * elem), *b = malloc(count * elem), *c = malloc(count * elem);
    if (!a || !b || !c) {
        BENCH_SET(r->status, "error");
        BENCH_SET(r->reason, "out of host memory");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        double v = (double)((i * 7919) % 1000) * 1e-3 - 0.5;
        if (dbl) {
            ((double *)a)[i] = v;
            ((double *)b)[i] = -v;
        } else {
            ((float *)a)[i] = (float)v;
            ((float *)b)[i] = (float)-v;
        }
    }
    double times[30], total = 0; /* the fastest of many calls: the machine may be busy */
    int reps = 0;
    for (int i = -2; i < 30; i++) {
        double t0 = bench_now_s();
        if (dbl)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, a, n, b, n, 0.0, c, n);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        double dt = bench_now_s() - t0;
        if (i < 0) continue;
        times[reps++] = dt;
        total += dt;
        if (total > 2.0 && reps >= 3) break;
    }
    bench_summarize_times(times, reps, r);
    /* The machine's limit: the fastest call (the steps are reported by their median). */
    r->gflops = r->flops_per_step / r->min_s * 1e-9;
    r->peak_rss_bytes = peak_rss_bytes();
    BENCH_SET(r->status, "ok");
    free(a);
    free(b);
    free(c);
}

/* Child: is the CUDA backend usable here, and if so the GPU's GEMM rate through cuBLAS. */
static void measure_cuda_gemm(const void *arg, bench_record *r)
{
    const options *o = ((const gemm_job *)arg)->o;
    const int n = o->cuda_gemm_n, dbl = o->dtype == GPURNN_F64;
    char msg[256];
    BENCH_SET(r->impl, "gpurnn");
    BENCH_SET(r->backend, "cuda");
    BENCH_SET(r->dtype, dtype_name(o->dtype));
    if (gpurnn_backend_check(GPURNN_BACKEND_CUDA) != GPURNN_OK) {
        BENCH_SET(r->kind, "skip");
        BENCH_SET(r->status, "skipped");
        BENCH_SET(r->reason, gpurnn_last_error());
        return;
    }
    BENCH_SET(r->kind, "gemm");
    BENCH_SET(r->impl, "cublas");
    r->M = r->N = r->K = n;
    r->warmup = 2;
    r->flops_per_step = 2.0 * n * (double)n * (double)n;
    if (bench_cuda_device_name(r->device, sizeof r->device, msg, sizeof msg)) BENCH_SET(r->device, "CUDA device");
    double med, mn, mx;
    if (bench_cublas_gemm(n, dbl, 10, &med, &mn, &mx, msg, sizeof msg)) {
        BENCH_SET(r->status, "error");
        BENCH_SET(r->reason, msg);
        return;
    }
    r->median_s = med;
    r->min_s = mn;
    r->max_s = mx;
    r->repeats = 10;
    r->gflops = r->flops_per_step / mn * 1e-9; /* the fastest call, as for the CPU */
    size_t free_b, total_b;
    if (bench_cuda_meminfo(&free_b, &total_b, msg, sizeof msg) == 0) r->dev_total_bytes = (double)total_b;
    BENCH_SET(r->status, "ok");
}

/* ---- peers ---------------------------------------------------------------------------- */

typedef struct {
    bench_record *items;
    size_t count, cap;
} record_list;

static bench_record *list_add(record_list *l, const bench_record *r)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        bench_record *p = realloc(l->items, cap * sizeof *p);
        if (!p) {
            fprintf(stderr, "gpurnn-bench: out of memory\n");
            exit(1);
        }
        l->items = p;
        l->cap = cap;
    }
    l->items[l->count] = *r;
    return &l->items[l->count++];
}

/* Runs argv (a peer), reading JSON records from its stdout into out; its stderr is kept
 * (the last 2 kB) for the message when it fails. Returns the number of records read, or
 * -1 when it could not run or failed without any (*why filled). */
static int run_peer(char *const argv[], double timeout_s, record_list *out, char *why, size_t why_size)
{
    int ofd[2], efd[2];
    why[0] = '\0';
    fflush(NULL);
    if (pipe(ofd)) {
        snprintf(why, why_size, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pipe(efd)) {
        close(ofd[0]);
        close(ofd[1]);
        snprintf(why, why_size, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, why_size, "fork: %s", strerror(errno));
        close(ofd[0]);
        close(ofd[1]);
        close(efd[0]);
        close(efd[1]);
        return -1;
    }
    if (pid == 0) {
        dup2(ofd[1], 1);
        dup2(efd[1], 2);
        close(ofd[0]);
        close(ofd[1]);
        close(efd[0]);
        close(efd[1]);
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(ofd[1]);
    close(efd[1]);
    char line[8192], err[2048];
    size_t llen = 0, elen = 0;
    int records = 0, open_fds = 2, timed_out = 0;
    double deadline = bench_now_s() + timeout_s;
    struct pollfd p[2] = {{ofd[0], POLLIN, 0}, {efd[0], POLLIN, 0}};
    while (open_fds) {
        double left = deadline - bench_now_s();
        if (left <= 0) {
            timed_out = 1;
            break;
        }
        int pr = poll(p, 2, left > 1e6 ? 1000000000 : (int)(left * 1000) + 1);
        if (pr < 0 && errno != EINTR) break;
        if (pr <= 0) continue;
        for (int k = 0; k < 2; k++) {
            if (p[k].fd < 0 || !(p[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            ssize_t n = read(p[k].fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) {
                close(p[k].fd);
                p[k].fd = -1;
                open_fds--;
                continue;
            }
            if (k == 1) { /* stderr: keep the tail */
                for (ssize_t i = 0; i < n; i++) {
                    if (elen == sizeof err - 1) {
                        memmove(err, err + sizeof err / 2, sizeof err / 2 - 1);
                        elen = sizeof err / 2 - 1;
                    }
                    err[elen++] = buf[i];
                }
                continue;
            }
            for (ssize_t i = 0; i < n; i++) {
                if (buf[i] != '\n') {
                    if (llen < sizeof line - 1) line[llen++] = buf[i];
                    continue;
                }
                line[llen] = '\0';
                llen = 0;
                bench_record r;
                if (line[0] == '{' && bench_record_parse_json(line, &r) == 0) {
                    list_add(out, &r);
                    records++;
                }
            }
        }
    }
    for (int k = 0; k < 2; k++)
        if (p[k].fd >= 0) close(p[k].fd);
    if (timed_out) kill(pid, SIGKILL);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    err[elen] = '\0';
    /* the last non-empty line of stderr */
    while (elen && (err[elen - 1] == '\n' || err[elen - 1] == ' ')) err[--elen] = '\0';
    char *last = strrchr(err, '\n');
    last = last ? last + 1 : err;
    if (timed_out)
        snprintf(why, why_size, "killed after the %.0f s timeout (--timeout)", timeout_s);
    else if (WIFSIGNALED(status))
        bench_format(why, why_size, "died of signal %d (%s)%s%s", WTERMSIG(status), strsignal(WTERMSIG(status)),
                 *last ? ": " : "", last);
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        bench_format(why, why_size, "exited with status %d%s%s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
                 *last ? ": " : "", last);
    else if (!records)
        bench_format(why, why_size, "printed no result%s%s", *last ? ": " : "", last);
    return records ? records : (why[0] ? -1 : 0);
}

static int file_exists(const char *path, int exec)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && (!exec || access(path, X_OK) == 0);
}

static void exe_dir(char *buf, size_t size)
{
    ssize_t n = readlink("/proc/self/exe", buf, size - 1);
    if (n <= 0) {
        bench_set_string(buf, size, ".");
        return;
    }
    buf[n] = '\0';
    char *slash = strrchr(buf, '/');
    if (slash) *slash = '\0';
}

/* bench/peers/torch_rnn.py: $GPURNN_BENCH_PEERS_DIR, beside the executable (the build
 * copies it there), the installed share directory, then the source tree. */
static int find_torch_peer(char *path, size_t size)
{
    char dir[1024], cand[1200];
    const char *env = getenv("GPURNN_BENCH_PEERS_DIR");
    exe_dir(dir, sizeof dir);
    const char *fmt[4][2] = {{env ? env : "", "%s/torch_rnn.py"},
                             {dir, "%s/peers/torch_rnn.py"},
                             {dir, "%s/../share/gpurnn/bench/peers/torch_rnn.py"},
                             {GPURNN_BENCH_SOURCE_PEERS_DIR, "%s/torch_rnn.py"}};
    for (int i = 0; i < 4; i++) {
        if (!fmt[i][0][0]) continue;
        snprintf(cand, sizeof cand, fmt[i][1], fmt[i][0]);
        if (file_exists(cand, 0)) {
            bench_set_string(path, size, cand);
            return 0;
        }
    }
    return -1;
}

static int find_cudnn_peer(char *path, size_t size)
{
    char dir[1024], cand[1200];
    exe_dir(dir, sizeof dir);
    snprintf(cand, sizeof cand, "%s/gpurnn-bench-cudnn", dir);
    if (file_exists(cand, 1)) {
        bench_set_string(path, size, cand);
        return 0;
    }
    if (GPURNN_BENCH_CUDNN_PEER[0] && file_exists(GPURNN_BENCH_CUDNN_PEER, 1)) {
        bench_set_string(path, size, GPURNN_BENCH_CUDNN_PEER);
        return 0;
    }
    return -1;
}

/* ---- output --------------------------------------------------------------------------- */

typedef struct {
    const options *o;
    FILE *table; /* stdout, or stderr with --json */
    record_list all;
    int header_done;
    int failures;
    char plot_title[256];
} bench_out;

static void print_table_header(bench_out *b)
{
    if (b->header_done) return;
    b->header_done = 1;
    fprintf(b->table, "\n%-8s %-5s %-10s %-13s %4s %4s %3s %7s %10s %10s %10s %12s %8s %6s %8s %8s %6s %8s %4s\n",
            "impl", "on", "variant", "preset", "V", "H", "B", "T", "median ms", "min ms", "max ms", "tokens/s",
            "GFLOP/s", "%GEMM", "RSS MB", "dev MB", "ckpt k", "act MB", "reps");
}

static void fmt_or_dash(char *buf, size_t size, const char *fmt, double v)
{
    if (isfinite(v))
        snprintf(buf, size, fmt, v);
    else
        bench_set_string(buf, size, "-");
}

static void print_record(bench_out *b, bench_record *r)
{
    FILE *f = b->table;
    if (b->o->json) {
        bench_record_write_json(stdout, r);
        fflush(stdout);
    }
    if (!strcmp(r->kind, "gemm")) {
        if (!strcmp(r->status, "ok")) {
            char thr[32] = "";
            if (r->threads > 0) snprintf(thr, sizeof thr, ", %lld thread%s", r->threads, r->threads == 1 ? "" : "s");
            fprintf(f, "%s %s GEMM rate (%s, %lldx%lldx%lld%s): %.1f GFLOP/s, fastest of %lld calls (%s)\n",
                    r->impl, r->backend, r->dtype, r->M, r->N, r->K, thr, r->gflops, r->repeats, r->device);
        } else
            fprintf(f, "%s %s GEMM rate: %s: %s\n", r->impl, r->backend, r->status, r->reason);
        fflush(f);
        return;
    }
    if (!strcmp(r->kind, "ratio")) {
        fprintf(f, "  ratio %s %s / %s at %s T=%lld: %.2fx (medians), %.2fx (fastest repeats)\n", r->impl,
                r->backend, r->peer, r->preset, r->T, r->ratio, r->ratio_best);
        fflush(f);
        return;
    }
    if (strcmp(r->status, "ok")) {
        fprintf(f, "%s %s%s%s %s T=%lld: %s: %s\n", r->impl[0] ? r->impl : "?", r->backend,
                r->variant[0] ? " " : "", r->variant, r->preset, r->T, r->status, r->reason);
        fflush(f);
        return;
    }
    print_table_header(b);
    char med[16], mn[16], mx[16], tps[16], gf[16], frac[16], rss[16], dev[16], every[24], act[16];
    fmt_or_dash(med, sizeof med, "%.3f", r->median_s * 1e3);
    fmt_or_dash(mn, sizeof mn, "%.3f", r->min_s * 1e3);
    fmt_or_dash(mx, sizeof mx, "%.3f", r->max_s * 1e3);
    fmt_or_dash(tps, sizeof tps, "%.4g", r->tokens_per_s);
    fmt_or_dash(gf, sizeof gf, "%.2f", r->gflops);
    fmt_or_dash(frac, sizeof frac, "%.1f%%", r->gemm_fraction * 100);
    fmt_or_dash(rss, sizeof rss, "%.1f", r->peak_rss_bytes / 1048576.0);
    fmt_or_dash(dev, sizeof dev, "%.1f", r->dev_mem_bytes / 1048576.0);
    fmt_or_dash(act, sizeof act, "%.1f", r->activation_bytes / 1048576.0);
    if (r->bptt_checkpoint_every > 0)
        snprintf(every, sizeof every, "%lld", r->bptt_checkpoint_every);
    else
        bench_set_string(every, sizeof every, "-");
    fprintf(f, "%-8s %-5s %-10s %-13s %4lld %4lld %3lld %7lld %10s %10s %10s %12s %8s %6s %8s %8s %6s %8s %4lld\n",
            r->impl, r->backend, r->variant[0] ? r->variant : "-", r->preset, r->V, r->H, r->B, r->T, med, mn, mx,
            tps, gf, frac, rss, dev, every, act, r->repeats);
    fflush(f);
}

/* Adds r to the results, completing the fields the bench computes the same way for
 * everyone (model FLOPs, GFLOP/s, the fraction of this run's GEMM rate), and prints it. */
static bench_record *emit(bench_out *b, bench_record *r, double gemm_gflops)
{
    if (!strcmp(r->kind, "step") && !strcmp(r->status, "ok")) {
        r->flops_per_step = bench_model_flops(r->cell, r->layers, r->V, r->H, r->B, r->T);
        if (r->median_s > 0) {
            r->gflops = r->flops_per_step / r->median_s * 1e-9;
            r->tokens_per_s = (double)r->T * (double)r->B / r->median_s;
        }
        if (gemm_gflops > 0) {
            r->gemm_gflops = gemm_gflops;
            r->gemm_fraction = r->gflops / gemm_gflops;
        }
    }
    if (!strcmp(r->status, "error") && !strcmp(r->impl, "gpurnn")) b->failures++;
    bench_record *kept = list_add(&b->all, r);
    print_record(b, kept);
    if (b->o->plot && !strcmp(r->kind, "step")) /* redrawn as results come, so a killed run keeps its plot */
        bench_plot_svg(b->o->plot, b->all.items, b->all.count, b->plot_title);
    return kept;
}

static const bench_record *best_of(const record_list *l, size_t from, const char *impl, const char *backend)
{
    const bench_record *best = NULL;
    for (size_t i = from; i < l->count; i++) {
        const bench_record *r = &l->items[i];
        if (strcmp(r->kind, "step") || strcmp(r->status, "ok") || strcmp(r->impl, impl) ||
            strcmp(r->backend, backend))
            continue;
        if (!best || r->tokens_per_s > best->tokens_per_s) best = r;
    }
    return best;
}

static void emit_ratio(bench_out *b, const bench_record *ours, const bench_record *peer)
{
    if (!ours || !peer || !(peer->tokens_per_s > 0)) return;
    bench_record r;
    bench_record_init(&r);
    BENCH_SET(r.kind, "ratio");
    BENCH_SET(r.impl, ours->impl);
    BENCH_SET(r.backend, ours->backend);
    BENCH_SET(r.preset, ours->preset);
    BENCH_SET(r.dtype, ours->dtype);
    BENCH_SET(r.cell, ours->cell);
    r.layers = ours->layers;
    bench_format(r.peer, sizeof r.peer, "%s %s%s%s", peer->impl, peer->backend, peer->variant[0] ? " " : "",
             peer->variant);
    r.V = ours->V;
    r.H = ours->H;
    r.B = ours->B;
    r.T = ours->T;
    r.threads = ours->threads;
    r.ratio = ours->tokens_per_s / peer->tokens_per_s;
    if (ours->min_s > 0 && peer->min_s > 0) r.ratio_best = peer->min_s / ours->min_s;
    emit(b, &r, NAN);
}

/* ---- main ----------------------------------------------------------------------------- */

enum { PEER_ARGS = 48, PEER_ARG_LEN = 128 };

typedef struct {
    char store[PEER_ARGS][PEER_ARG_LEN];
    char *argv[PEER_ARGS + 1];
    int n;
} arg_list;

static void arg_add(arg_list *a, const char *fmt, ...)
{
    if (a->n >= PEER_ARGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->store[a->n], PEER_ARG_LEN, fmt, ap);
    va_end(ap);
    a->argv[a->n] = a->store[a->n];
    a->n++;
    a->argv[a->n] = NULL;
}

static void add_common_peer_args(arg_list *a, const options *o, const config *c)
{
    arg_add(a, "--vocab");
    arg_add(a, "%d", c->V);
    arg_add(a, "--hidden");
    arg_add(a, "%d", c->H);
    arg_add(a, "--batch");
    arg_add(a, "%d", c->B);
    arg_add(a, "--seq");
    arg_add(a, "%d", c->T);
    arg_add(a, "--steps");
    arg_add(a, "%d", c->steps);
    arg_add(a, "--warmup");
    arg_add(a, "%d", c->warmup);
    arg_add(a, "--max-time");
    arg_add(a, "%g", o->max_time);
    arg_add(a, "--optimizer");
    arg_add(a, "%s", optimizer_name(o->optimizer));
    arg_add(a, "--lr");
    arg_add(a, "%.17g", o->lr);
    arg_add(a, "--clip");
    arg_add(a, "%.17g", o->clip);
    arg_add(a, "--loss");
    arg_add(a, "%s", o->reduction == GPURNN_LOSS_MEAN ? "mean" : "sum");
    arg_add(a, "--seed");
    arg_add(a, "%llu", o->seed);
    arg_add(a, "--preset");
    arg_add(a, "%s", c->preset);
    arg_add(a, "--cell");
    arg_add(a, "%s", cell_name(c->cell));
    arg_add(a, "--layers");
    arg_add(a, "%d", c->layers);
}

static void check_goals(bench_out *b)
{
    /* The CPU backend's speed and memory goals (float32, ratios from this run). */
    FILE *f = b->table;
    int printed = 0;
    for (size_t i = 0; i < b->all.count; i++) {
        const bench_record *r = &b->all.items[i];
        if (strcmp(r->kind, "step") || strcmp(r->status, "ok") || strcmp(r->impl, "gpurnn") ||
            strcmp(r->backend, "cpu") || strcmp(r->dtype, "f32"))
            continue;
        const preset *p = NULL;
        for (int k = 0; k < NPRESETS; k++)
            if (!strcmp(r->preset, presets[k].name) && r->T == presets[k].T) p = &presets[k];
        if (!p) continue;
        const bench_record *ratio = NULL;
        for (size_t k = 0; k < b->all.count; k++) {
            const bench_record *q = &b->all.items[k];
            if (!strcmp(q->kind, "ratio") && !strcmp(q->backend, "cpu") && !strcmp(q->preset, r->preset) &&
                q->T == r->T && !strncmp(q->peer, "torch", 5))
                ratio = q;
        }
        if (!printed++) fprintf(f, "\ngoals of the CPU backend (float32, measured in this run):\n");
        char rbuf[48];
        if (ratio)
            snprintf(rbuf, sizeof rbuf, "%.2fx PyTorch", ratio->ratio);
        else
            snprintf(rbuf, sizeof rbuf, "no PyTorch ratio (run with --peers)");
        if (!strcmp(p->name, "min-char-rnn") || !strcmp(p->name, "long"))
            fprintf(f, "  %-13s speed: %s (goal >= 20x PyTorch): %s\n", p->name, rbuf,
                    ratio ? (ratio->ratio >= 20 ? "met" : "NOT met") : "not judged");
        else if (!strcmp(p->name, "gru-long") || !strcmp(p->name, "lstm-long"))
            fprintf(f, "  %-13s speed: %s (goal >= 3x PyTorch): %s\n", p->name, rbuf,
                    ratio ? (ratio->ratio >= 3 ? "met" : "NOT met") : "not judged");
        else if (!strcmp(p->name, "gru-batched") || !strcmp(p->name, "lstm-batched"))
            fprintf(f, "  %-13s speed: %s (goal >= 1.3x PyTorch): %s; %.1f%% of this machine's SGEMM rate (goal >= 60%%): %s\n",
                    p->name, rbuf, ratio ? (ratio->ratio >= 1.3 ? "met" : "NOT met") : "not judged",
                    r->gemm_fraction * 100,
                    isfinite(r->gemm_fraction) ? (r->gemm_fraction >= 0.6 ? "met" : "NOT met") : "not judged");
        else if (!strcmp(p->name, "batched"))
            fprintf(f, "  %-13s speed: %s (goal >= 5x PyTorch): %s; %.1f%% of this machine's SGEMM rate (goal >= 50%%): %s\n", p->name, rbuf,
                    ratio ? (ratio->ratio >= 5 ? "met" : "NOT met") : "not judged", r->gemm_fraction * 100,
                    isfinite(r->gemm_fraction) ? (r->gemm_fraction >= 0.5 ? "met" : "NOT met") : "not judged");
        else {
            double added = r->peak_rss_bytes - r->base_rss_bytes;
            fprintf(f,
                    "  %-13s memory: peak RSS %.1f MB, of which %.1f MB were there before the model was created "
                    "(libraries); the model added %.1f MB = %.2fx the %.1f MB of hidden states + parameters + "
                    "gradients + optimizer state (goal < 2x): %s (whole process: %.2fx)\n",
                    p->name, r->peak_rss_bytes / 1048576.0, r->base_rss_bytes / 1048576.0, added / 1048576.0,
                    added / r->theory_bytes, r->theory_bytes / 1048576.0, added < 2 * r->theory_bytes ? "met" : "NOT met",
                    r->peak_rss_bytes / r->theory_bytes);
        }
    }
}

int main(int argc, char **argv)
{
    options o;
    if (parse_options(argc, argv, &o)) {
        usage(stderr);
        return 2;
    }
    ensure_threads(o.threads, argv);
    config configs[MAX_CONFIGS];
    int nconf = build_configs(&o, configs);
    if (nconf < 0) return 2;

    bench_out b;
    memset(&b, 0, sizeof b);
    b.o = &o;
    b.table = o.json ? stderr : stdout;
    char machine[160];
    cpu_model(machine, sizeof machine);
    snprintf(b.plot_title, sizeof b.plot_title, "gpurnn-bench: training tokens/s vs sequence length (%s, %d thread%s)",
             machine, o.threads, o.threads == 1 ? "" : "s");
    fprintf(b.table, "gpurnn-bench: libgpurnn %s; %s; %d thread%s (OMP_NUM_THREADS=%s); %s; optimizer %s lr %g, "
                     "clip_grad_norm %g, loss %s\n",
            gpurnn_version(), machine, o.threads, o.threads == 1 ? "" : "s", getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "unset",
            dtype_name(o.dtype), optimizer_name(o.optimizer), o.lr, o.clip,
            o.reduction == GPURNN_LOSS_MEAN ? "mean" : "sum");
    print_load(b.table, "start", online_cpus());
    fprintf(b.table, "one step = zero_grad + forward + backward + clip_grad_norm + %s step; model FLOPs = "
                     "6*T*B*(H^2 + V*H) per step for one tanh layer; 6*T*B*(G*H^2 + (L-1)*2*G*H^2 + V*H) "
                     "for L layers of G gates (GRU 3, LSTM 4)\n",
            optimizer_name(o.optimizer));

    int want_cpu = o.backends & BK_CPU, want_cuda = o.backends & BK_CUDA;
    double cpu_gemm = NAN, cuda_gemm = NAN;
    gemm_job gj = {&o};
    bench_record r, id;
    if (want_cpu) {
        identity_record(&id, "openblas", "cpu", &o, NULL);
        run_in_child(measure_cpu_gemm, &gj, o.timeout, &id, &r);
        if (!strcmp(r.status, "ok")) {
            cpu_gemm = r.gflops;
            r.threads = o.threads;
        }
        emit(&b, &r, NAN);
    }
    int cuda_ok = 0;
    if (want_cuda) {
        identity_record(&id, "cublas", "cuda", &o, NULL);
        run_in_child(measure_cuda_gemm, &gj, o.timeout, &id, &r);
        if (!strcmp(r.kind, "skip")) {
            fprintf(b.table, "gpurnn cuda: unavailable, skipped: %s\n", r.reason);
            if (o.json) bench_record_write_json(stdout, &r);
            list_add(&b.all, &r);
        } else {
            cuda_ok = 1;
            if (!strcmp(r.status, "ok")) cuda_gemm = r.gflops;
            emit(&b, &r, NAN);
        }
    }

    /* peers */
    char torch_path[1200] = "", cudnn_path[1200] = "", why[512];
    int torch_ok = 0, cudnn_ok = 0;
    if (o.peers && want_cpu) {
        if (o.dtype != GPURNN_F32)
            fprintf(b.table, "torch peer: skipped: it runs in float32 only (use --dtype f32)\n");
        else if (find_torch_peer(torch_path, sizeof torch_path))
            fprintf(b.table, "torch peer: skipped: bench/peers/torch_rnn.py not found (set GPURNN_BENCH_PEERS_DIR)\n");
        else if (!file_exists(o.python, 1))
            fprintf(b.table, "torch peer: skipped: %s not found (install python3-torch, or --python PATH)\n",
                    o.python);
        else
            torch_ok = 1;
    }
    if (o.peers && want_cuda && cuda_ok) {
        if (o.dtype != GPURNN_F32)
            fprintf(b.table, "cudnn peer: skipped: it runs in float32 only (use --dtype f32)\n");
        else if (find_cudnn_peer(cudnn_path, sizeof cudnn_path))
            fprintf(b.table, "cudnn peer: skipped: gpurnn-bench-cudnn was not built (needs CUDA and cuDNN at "
                             "configure time)\n");
        else
            cudnn_ok = 1;
    }

    for (int ci = 0; ci < nconf; ci++) {
        const config *c = &configs[ci];
        size_t first = b.all.count;
        /* records are found again by best_of: a pointer into the list moves when it grows */
        if (want_cpu) {
            step_job job = {&o, c, GPURNN_BACKEND_CPU};
            identity_record(&id, "gpurnn", "cpu", &o, c);
            run_in_child(measure_gpurnn, &job, o.timeout, &id, &r);
            emit(&b, &r, cpu_gemm);
        }
        if (want_cuda && cuda_ok) {
            step_job job = {&o, c, GPURNN_BACKEND_CUDA};
            identity_record(&id, "gpurnn", "cuda", &o, c);
            run_in_child(measure_gpurnn, &job, o.timeout, &id, &r);
            emit(&b, &r, cuda_gemm);
        }
        if (cudnn_ok) {
            arg_list a = {0};
            arg_add(&a, "%s", cudnn_path);
            add_common_peer_args(&a, &o, c);
            arg_add(&a, "--algo");
            arg_add(&a, "%s", o.cudnn_algo);
            record_list got = {0};
            int n = run_peer(a.argv, o.timeout, &got, why, sizeof why);
            if (n < 0) fprintf(b.table, "cudnn peer at %s T=%d: failed: %s\n", c->preset, c->T, why);
            for (int k = 0; k < n; k++) {
                bench_record *pr = &got.items[k];
                if (!strcmp(pr->kind, "skip")) {
                    fprintf(b.table, "cudnn peer%s%s: %s: %s\n", pr->variant[0] ? " " : "", pr->variant,
                            pr->status, pr->reason);
                    if (o.json) bench_record_write_json(stdout, pr);
                    list_add(&b.all, pr);
                    continue;
                }
                emit(&b, pr, cuda_gemm);
            }
            free(got.items);
        }
        if (torch_ok && c->T > o.torch_max_T)
            fprintf(b.table, "torch peer at %s T=%d: not run (T > --torch-max-seq %d)\n", c->preset, c->T,
                    o.torch_max_T);
        else if (torch_ok) {
            static const char *const fronts[] = {"onehot", "embedding"};
            for (int v = 0; v < 2 && torch_ok; v++) {
                arg_list a = {0};
                arg_add(&a, "%s", o.python);
                arg_add(&a, "%s", torch_path);
                add_common_peer_args(&a, &o, c);
                arg_add(&a, "--threads");
                arg_add(&a, "%d", o.threads);
                arg_add(&a, "--frontend");
                arg_add(&a, "%s", fronts[v]);
                record_list got = {0};
                int n = run_peer(a.argv, o.timeout, &got, why, sizeof why);
                if (n < 0) {
                    fprintf(b.table, "torch peer (%s) at %s T=%d: failed: %s\n", fronts[v], c->preset, c->T, why);
                    if (v == 0 && !strstr(why, "timeout")) /* broken, not just slow */
                        torch_ok = 0, fprintf(b.table, "torch peer: not run again in this run\n");
                }
                for (int k = 0; k < n; k++) {
                    bench_record *pr = &got.items[k];
                    if (!strcmp(pr->kind, "skip") && !strcmp(pr->status, "skipped")) {
                        fprintf(b.table, "torch peer: skipped: %s\n", pr->reason);
                        if (o.json) bench_record_write_json(stdout, pr);
                        torch_ok = 0;
                        continue;
                    }
                    emit(&b, pr, cpu_gemm);
                }
                free(got.items);
            }
            emit_ratio(&b, best_of(&b.all, first, "gpurnn", "cpu"), best_of(&b.all, first, "torch", "cpu"));
        }
        if (cudnn_ok)
            emit_ratio(&b, best_of(&b.all, first, "gpurnn", "cuda"), best_of(&b.all, first, "cudnn", "cuda"));
        {
            bench_record cpu_copy, cuda_copy; /* copies: emit_ratio adds to the list */
            const bench_record *pc = best_of(&b.all, first, "gpurnn", "cpu");
            const bench_record *pg = best_of(&b.all, first, "gpurnn", "cuda");
            if (pc && pg) {
                cpu_copy = *pc;
                cuda_copy = *pg;
                emit_ratio(&b, &cuda_copy, &cpu_copy);
            }
        }
    }

    /* memory of our own measurements */
    int mem_header = 0;
    for (size_t i = 0; i < b.all.count; i++) {
        const bench_record *q = &b.all.items[i];
        if (strcmp(q->kind, "step") || strcmp(q->status, "ok") || strcmp(q->impl, "gpurnn")) continue;
        if (!mem_header++)
            fprintf(b.table, "\nmemory (theory = hidden states (T+1)*B*H + parameters + gradients + optimizer "
                             "state, in the model's dtype):\n");
        fprintf(b.table, "  gpurnn %-4s %-13s T=%-7lld peak RSS %7.1f MB = %6.1f MB before the model + %7.1f MB "
                         "added; theory %7.1f MB; added/theory %.2f (1 = nothing beyond what it must hold)",
                q->backend, q->preset, q->T, q->peak_rss_bytes / 1048576.0, q->base_rss_bytes / 1048576.0,
                (q->peak_rss_bytes - q->base_rss_bytes) / 1048576.0, q->theory_bytes / 1048576.0,
                (q->peak_rss_bytes - q->base_rss_bytes) / q->theory_bytes);
        if (isfinite(q->dev_mem_bytes))
            fprintf(b.table, "; device %.1f MB (%.2fx theory)", q->dev_mem_bytes / 1048576.0,
                    q->dev_mem_bytes / q->theory_bytes);
        fputc('\n', b.table);
    }
    check_goals(&b);
    fputc('\n', b.table);
    print_load(b.table, "end", online_cpus());

    if (o.plot) {
        if (bench_plot_svg(o.plot, b.all.items, b.all.count, b.plot_title))
            fprintf(stderr, "gpurnn-bench: cannot write %s: %s\n", o.plot, strerror(errno)), b.failures++;
        else
            fprintf(b.table, "\nplot written to %s\n", o.plot);
    }
    free(b.all.items);
    return b.failures ? 1 : 0;
}
