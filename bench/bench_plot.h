/* The --plot output: tokens/s against sequence length on log-log axes, one line per
 * series (a backend or a peer on one model shape), written as a standalone SVG file. */
#ifndef GPURNN_BENCH_PLOT_H
#define GPURNN_BENCH_PLOT_H

#include "bench_record.h"

/* Draws every "step" record with status "ok"; records with the same impl, backend,
 * variant, V, H, B and dtype form one series. title goes above the plot.
 * Returns 0, or -1 (errno set) when the file cannot be written. */
int bench_plot_svg(const char *path, const bench_record *records, size_t count, const char *title);

#endif
