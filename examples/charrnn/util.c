#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

int charrnn_fail(charrnn_error *err, const char *format, ...)
{
    if (err) {
        va_list args;
        va_start(args, format);
        vsnprintf(err->message, sizeof err->message, format, args);
        va_end(args);
    }
    return -1;
}

void *charrnn_xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "gpurnn-charrnn: out of memory (asked for %zu bytes)\n", bytes);
        exit(EXIT_FAILURE);
    }
    return p;
}

void *charrnn_xrealloc(void *p, size_t bytes)
{
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q) {
        fprintf(stderr, "gpurnn-charrnn: out of memory (asked for %zu bytes)\n", bytes);
        exit(EXIT_FAILURE);
    }
    return q;
}

double charrnn_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double charrnn_cpu_seconds(void)
{
    struct rusage usage;
    if (getrusage(RUSAGE_SELF, &usage) != 0)
        return 0.0;
    return (double)(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           1e-6 * (double)(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

void charrnn_format_duration(double seconds, char *out, size_t out_len)
{
    if (!(seconds >= 0.0) || seconds > 1e8) { /* not yet known, or absurd */
        snprintf(out, out_len, "--:--");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(out, out_len, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else
        snprintf(out, out_len, "%ld:%02ld", s / 60, s % 60);
}

void charrnn_format_count(double value, char *out, size_t out_len)
{
    if (value >= 1e6)
        snprintf(out, out_len, "%.2fM", value / 1e6);
    else if (value >= 1e4)
        snprintf(out, out_len, "%.1fk", value / 1e3);
    else
        snprintf(out, out_len, "%.0f", value);
}

double charrnn_training_flops_per_token(const gpurnn_config *cfg)
{
    const double H = cfg->hidden_size, V = cfg->vocab_size;
    const int layers = cfg->num_layers > 0 ? cfg->num_layers : 1;
    const double gates = cfg->cell == GPURNN_CELL_GRU ? 3 : cfg->cell == GPURNN_CELL_LSTM ? 4 : 1;
    double forward_macs = V * H;                          /* Why h */
    forward_macs += gates * H * H;                        /* layer 0: W_hh h_prev */
    forward_macs += (layers - 1) * gates * H * (H + H);   /* above: W_ih x + W_hh h_prev */
    return 3.0 * 2.0 * forward_macs;
}
