/* JSON lines for bench_record: one table of fields drives both the writer and the
 * parser, so the programs of the benchmark cannot disagree on a name. */
#include "bench_record.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum field_type { F_STR, F_INT, F_REAL };

typedef struct {
    const char *name;
    enum field_type type;
    size_t offset, size;
} field;

#define S(name) {#name, F_STR, offsetof(bench_record, name), sizeof(((bench_record *)0)->name)}
#define I(name) {#name, F_INT, offsetof(bench_record, name), 0}
#define R(name) {#name, F_REAL, offsetof(bench_record, name), 0}

static const field fields[] = {
    S(kind),      S(impl),     S(backend),  S(variant),   S(preset),        S(device),
    S(dtype),     S(optimizer), S(reduction), S(status),  S(reason),        S(peer),
    I(V),         I(H),        I(B),        I(T),         I(threads),       I(warmup),
    I(repeats),   I(M),        I(N),        I(K),         R(median_s),      R(min_s),
    R(max_s),     R(tokens_per_s), R(flops_per_step), R(gflops), R(gemm_gflops),
    R(gemm_fraction), R(loss), R(peak_rss_bytes), R(base_rss_bytes), R(theory_bytes),
    R(dev_mem_bytes), R(dev_total_bytes), R(ratio), R(ratio_best), I(bptt_checkpoint_every),
    R(model_host_bytes), R(model_device_bytes), R(activation_bytes), S(cell), I(layers),
};

#undef S
#undef I
#undef R

#define NFIELDS (sizeof fields / sizeof fields[0])

void bench_set_string(char *dst, size_t size, const char *src)
{
    if (!size) return;
    if (!src) src = "";
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void bench_format(char *dst, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, size, fmt, ap);
    va_end(ap);
}

void bench_record_init(bench_record *r)
{
    memset(r, 0, sizeof *r);
    for (size_t i = 0; i < NFIELDS; i++) {
        char *p = (char *)r + fields[i].offset;
        if (fields[i].type == F_INT) *(long long *)p = -1;
        if (fields[i].type == F_REAL) *(double *)p = NAN;
    }
}

int bench_cell_gates(const char *cell)
{
    if (cell && !strcmp(cell, "gru")) return 3;
    if (cell && !strcmp(cell, "lstm")) return 4;
    return 1;
}

/* Model FLOPs of one training step, a multiply-add counted as 2. Only the matrix products
 * that any dense implementation of the model has to do are counted, not what a given
 * implementation chooses to recompute. For the vanilla model (one tanh layer):
 *   forward,  per token:  Whh·h_{t-1}          2H²
 *                         Why·h_t              2VH   (Wxh·x_t is a column gather: 0)
 *   backward, per token:  dWhy += dy_t h_tᵀ    2VH
 *                         Whyᵀ·dy_t            2VH
 *                         dWhh += dz_t h_{t-1}ᵀ 2H²
 *                         Whhᵀ·dz_t            2H²
 *   one step:             6·T·B·(H² + V·H)
 * With L layers of G gates (G = 1 tanh/ReLU, 3 GRU, 4 LSTM), every product of a layer has
 * G·H rows, and layers above the first also multiply their input (H) by W_ih, forward and
 * twice backward: 6·T·B·(G·H² + (L-1)·2·G·H² + V·H).
 * The element-wise work (activations and their derivatives, softmax, biases, the gradient
 * norm, the optimizer update) is O(T·B·(G·H·L+V) + P) and is left out. */
double bench_model_flops(const char *cell, long long L, long long V, long long H, long long B, long long T)
{
    const double G = bench_cell_gates(cell), layers = L < 1 ? 1 : (double)L;
    const double h = (double)H, per_token = G * h * h + (layers - 1) * 2 * G * h * h + (double)V * h;
    return 6.0 * (double)T * (double)B * per_token;
}

double bench_theory_bytes(const char *cell, long long L, long long V, long long H, long long B, long long T,
                          int opt_slots, size_t elem_size)
{
    const double G = bench_cell_gates(cell), layers = L < 1 ? 1 : (double)L, h = (double)H, v = (double)V;
    const double biases = G == 1 ? h : 2 * G * h;
    const double P = G * h * v + G * h * h + (layers - 1) * 2 * G * h * h + v * h + layers * biases + v;
    const double streams = layers * ((cell && !strcmp(cell, "lstm") ? 2 : 1) + (G > 1 ? 4 : 0));
    const double activations = ((double)T + 1.0) * (double)B * h * streams;
    return (activations + (2.0 + opt_slots) * P) * (double)elem_size;
}

static void write_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

void bench_record_write_json(FILE *f, const bench_record *r)
{
    int first = 1;
    fputc('{', f);
    for (size_t i = 0; i < NFIELDS; i++) {
        const char *p = (const char *)r + fields[i].offset;
        switch (fields[i].type) {
        case F_STR:
            if (!p[0]) continue;
            break;
        case F_INT:
            if (*(const long long *)p < 0) continue;
            break;
        case F_REAL:
            if (!isfinite(*(const double *)p)) continue;
            break;
        }
        fprintf(f, "%s\"%s\":", first ? "" : ",", fields[i].name);
        first = 0;
        switch (fields[i].type) {
        case F_STR: write_string(f, p); break;
        case F_INT: fprintf(f, "%lld", *(const long long *)p); break;
        case F_REAL: {
            double v = *(const double *)p;
            if (v == floor(v) && fabs(v) < 1e15)
                fprintf(f, "%.0f", v);
            else
                fprintf(f, "%.6g", v);
            break;
        }
        }
    }
    fputs("}\n", f);
}

static const char *skip_space(const char *s)
{
    while (*s && isspace((unsigned char)*s)) s++;
    return s;
}

/* Parses a JSON string at s (at its opening quote) into out (may be NULL); returns the
 * position after the closing quote, or NULL. */
static const char *parse_string(const char *s, char *out, size_t size)
{
    size_t n = 0;
    if (*s != '"') return NULL;
    s++;
    while (*s && *s != '"') {
        char c = *s++;
        if (c == '\\') {
            char e = *s++;
            switch (e) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u':
                for (int k = 0; k < 4; k++)
                    if (!isxdigit((unsigned char)*s++)) return NULL;
                c = '?';
                break;
            case '\0': return NULL;
            default: c = e; break; /* \" \\ \/ */
            }
        }
        if (out && n + 1 < size) out[n++] = c;
    }
    if (*s != '"') return NULL;
    if (out && size) out[n] = '\0';
    return s + 1;
}

int bench_record_parse_json(const char *line, bench_record *r)
{
    bench_record_init(r);
    const char *s = skip_space(line);
    if (*s++ != '{') return -1;
    s = skip_space(s);
    if (*s == '}') return 0;
    for (;;) {
        char key[64];
        s = parse_string(skip_space(s), key, sizeof key);
        if (!s) return -1;
        s = skip_space(s);
        if (*s++ != ':') return -1;
        s = skip_space(s);
        const field *fd = NULL;
        for (size_t i = 0; i < NFIELDS; i++)
            if (!strcmp(fields[i].name, key)) fd = &fields[i];
        char *p = fd ? (char *)r + fd->offset : NULL;
        if (*s == '"') {
            int want = fd && fd->type == F_STR;
            s = parse_string(s, want ? p : NULL, want ? fd->size : 0);
            if (!s) return -1;
        } else if (!strncmp(s, "null", 4) || !strncmp(s, "true", 4)) {
            s += 4;
        } else if (!strncmp(s, "false", 5)) {
            s += 5;
        } else if (*s == '{' || *s == '[') {
            return -1; /* the records are flat */
        } else {
            char *end;
            double v = strtod(s, &end);
            if (end == s) return -1;
            s = end;
            if (fd && fd->type == F_INT) *(long long *)p = (long long)v;
            if (fd && fd->type == F_REAL) *(double *)p = v;
        }
        s = skip_space(s);
        if (*s == ',') {
            s++;
            continue;
        }
        if (*s == '}') return 0;
        return -1;
    }
}

double bench_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

void bench_summarize_times(double *t, int n, bench_record *r)
{
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    r->median_s = n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]);
    r->min_s = t[0];
    r->max_s = t[n - 1];
    r->repeats = n;
}
