/* See bench_plot.h. Plain SVG 1.1, no scripts or external resources, so it opens in any
 * browser and converts with rsvg-convert or Inkscape. */
#include "bench_plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SERIES 32

typedef struct {
    char label[160];
    const bench_record *key;
    size_t n;
    double x[64], y[64];
} series;

static int same_series(const bench_record *a, const bench_record *b)
{
    return !strcmp(a->impl, b->impl) && !strcmp(a->backend, b->backend) &&
           !strcmp(a->variant, b->variant) && !strcmp(a->dtype, b->dtype) && a->V == b->V &&
           a->H == b->H && a->B == b->B;
}

static void xml_escape(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

/* "1e5" style tick labels: 10, 100, 1k, 10k, 100k, 1M, ... */
static void tick_label(char *buf, size_t size, int decade)
{
    static const char *const suffix[] = {"", "k", "M", "G", "T"};
    if (decade < 0) {
        snprintf(buf, size, "1e%d", decade);
        return;
    }
    int group = decade / 3;
    if (group > 4) {
        snprintf(buf, size, "1e%d", decade);
        return;
    }
    int mant = 1;
    for (int k = 0; k < decade % 3; k++) mant *= 10;
    snprintf(buf, size, "%d%s", mant, suffix[group]);
}

static void sort_points(series *s)
{
    for (size_t i = 1; i < s->n; i++)
        for (size_t j = i; j > 0 && s->x[j - 1] > s->x[j]; j--) {
            double tx = s->x[j], ty = s->y[j];
            s->x[j] = s->x[j - 1];
            s->y[j] = s->y[j - 1];
            s->x[j - 1] = tx;
            s->y[j - 1] = ty;
        }
}

int bench_plot_svg(const char *path, const bench_record *records, size_t count, const char *title)
{
    static series all[MAX_SERIES];
    size_t ns = 0;
    for (size_t i = 0; i < count; i++) {
        const bench_record *r = &records[i];
        if (strcmp(r->kind, "step") || strcmp(r->status, "ok") || !(r->tokens_per_s > 0) || r->T < 1)
            continue;
        size_t k = 0;
        while (k < ns && !same_series(all[k].key, r)) k++;
        if (k == ns) {
            if (ns == MAX_SERIES) continue;
            memset(&all[k], 0, sizeof all[k]);
            all[k].key = r;
            snprintf(all[k].label, sizeof all[k].label, "%s %s%s%s  V%lld H%lld B%lld %s", r->impl,
                     r->backend, r->variant[0] ? " " : "", r->variant, r->V, r->H, r->B, r->dtype);
            ns++;
        }
        series *s = &all[k];
        if (s->n < sizeof s->x / sizeof s->x[0]) {
            s->x[s->n] = (double)r->T;
            s->y[s->n] = r->tokens_per_s;
            s->n++;
        }
    }
    for (size_t k = 0; k < ns; k++) sort_points(&all[k]);

    /* Axis ranges in whole decades, at least one decade wide. */
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t k = 0; k < ns; k++)
        for (size_t i = 0; i < all[k].n; i++) {
            xmin = fmin(xmin, all[k].x[i]);
            xmax = fmax(xmax, all[k].x[i]);
            ymin = fmin(ymin, all[k].y[i]);
            ymax = fmax(ymax, all[k].y[i]);
        }
    if (!ns) {
        xmin = 10;
        xmax = 1e5;
        ymin = 1e3;
        ymax = 1e6;
    }
    int dx0 = (int)floor(log10(xmin)), dx1 = (int)ceil(log10(xmax));
    int dy0 = (int)floor(log10(ymin)), dy1 = (int)ceil(log10(ymax));
    if (dx1 <= dx0) dx1 = dx0 + 1;
    if (dy1 <= dy0) dy1 = dy0 + 1;

    const double W = 900, Hh = 560, left = 90, right = 30, top = 50, bottom = 70;
    const double legend_h = 20.0 * (double)ns + 10;
    const double total_h = Hh + legend_h;
    const double pw = W - left - right, ph = Hh - top - bottom;
#define PX(v) (left + (log10(v) - dx0) / (double)(dx1 - dx0) * pw)
#define PY(v) (top + ph - (log10(v) - dy0) / (double)(dy1 - dy0) * ph)

    static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                         "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" height=\"%.0f\" "
            "viewBox=\"0 0 %.0f %.0f\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"13\">\n",
            W, total_h, W, total_h);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%.0f\" height=\"%.0f\" fill=\"white\"/>\n", W, total_h);
    fprintf(f, "<text x=\"%.1f\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", left + pw / 2);
    xml_escape(f, title ? title : "gpurnn-bench");
    fputs("</text>\n", f);

    /* grid, ticks and labels */
    fputs("<g stroke=\"#dddddd\" stroke-width=\"1\">\n", f);
    for (int d = dx0; d <= dx1; d++)
        for (int m = 1; m <= 9 && (d < dx1 || m == 1); m++) {
            double x = PX(m * pow(10, d));
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"%s/>\n", x, top, x, top + ph,
                    m == 1 ? " stroke=\"#bbbbbb\"" : "");
        }
    for (int d = dy0; d <= dy1; d++)
        for (int m = 1; m <= 9 && (d < dy1 || m == 1); m++) {
            double y = PY(m * pow(10, d));
            fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"%s/>\n", left, y, left + pw, y,
                    m == 1 ? " stroke=\"#bbbbbb\"" : "");
        }
    fputs("</g>\n", f);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"black\"/>\n",
            left, top, pw, ph);
    char buf[32];
    for (int d = dx0; d <= dx1; d++) {
        tick_label(buf, sizeof buf, d);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", PX(pow(10, d)),
                top + ph + 20, buf);
    }
    for (int d = dy0; d <= dy1; d++) {
        tick_label(buf, sizeof buf, d);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", left - 8,
                PY(pow(10, d)) + 4, buf);
    }
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">sequence length T (time steps per "
               "training step, log scale)</text>\n",
            left + pw / 2, top + ph + 48);
    fprintf(f, "<text transform=\"translate(24 %.1f) rotate(-90)\" text-anchor=\"middle\">training "
               "throughput (tokens/s, log scale)</text>\n",
            top + ph / 2);

    /* series */
    for (size_t k = 0; k < ns; k++) {
        const series *s = &all[k];
        const char *color = colors[k % (sizeof colors / sizeof colors[0])];
        int dashed = strcmp(s->key->impl, "gpurnn") != 0; /* peers dashed */
        if (s->n > 1) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\"%s points=\"", color,
                    dashed ? " stroke-dasharray=\"6 4\"" : "");
            for (size_t i = 0; i < s->n; i++) fprintf(f, "%s%.1f,%.1f", i ? " " : "", PX(s->x[i]), PY(s->y[i]));
            fputs("\"/>\n", f);
        }
        for (size_t i = 0; i < s->n; i++) {
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"><title>", PX(s->x[i]), PY(s->y[i]),
                    color);
            xml_escape(f, s->label);
            fprintf(f, ": T=%.0f, %.4g tokens/s</title></circle>\n", s->x[i], s->y[i]);
        }
        /* legend entry below the plot */
        double ly = Hh + 20.0 * (double)k;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"2\"%s/>\n",
                left, ly, left + 30, ly, color, dashed ? " stroke-dasharray=\"6 4\"" : "");
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>\n", left + 15, ly, color);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", left + 40, ly + 4);
        xml_escape(f, s->label);
        fputs("</text>\n", f);
    }
    if (!ns)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">no successful measurement</text>\n",
                left + pw / 2, top + ph / 2);
    fputs("</svg>\n", f);
#undef PX
#undef PY
    return fclose(f) == 0 ? 0 : -1;
}
