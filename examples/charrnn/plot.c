#include "plot.h"

#include "fileio.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    WIDTH = 860,
    HEIGHT = 500,
    LEFT = 78, /* room for the y tick labels and the axis title */
    RIGHT = 24,
    TOP = 48,
    BOTTOM = 56,
    MAX_POINTS = 500, /* training-loss points drawn, at most */
};

typedef struct svg {
    char *data;
    size_t len, cap;
} svg;

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void emit(svg *s, const char *format, ...)
{
    for (;;) {
        va_list args;
        va_start(args, format);
        int n = vsnprintf(s->data + s->len, s->cap - s->len, format, args);
        va_end(args);
        if (n >= 0 && (size_t)n < s->cap - s->len) {
            s->len += (size_t)n;
            return;
        }
        s->cap = 2 * s->cap + (n > 0 ? (size_t)n : 0);
        s->data = charrnn_xrealloc(s->data, s->cap);
    }
}

/* Text content with XML's special characters escaped. */
static void emit_text(svg *s, const char *text)
{
    for (; *text; text++) {
        switch (*text) {
        case '&': emit(s, "&amp;"); break;
        case '<': emit(s, "&lt;"); break;
        case '>': emit(s, "&gt;"); break;
        case '"': emit(s, "&quot;"); break;
        default: emit(s, "%c", *text); break;
        }
    }
}

double charrnn_nice_tick(double range, int ticks)
{
    if (!(range > 0) || ticks < 1)
        return 1.0;
    double raw = range / ticks;
    double power = pow(10.0, floor(log10(raw)));
    double f = raw / power;
    double nice = f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0;
    return nice * power;
}

/* A tick label without trailing noise: "0.5", "2", "15k". */
static void tick_label(double v, double tick, char *out, size_t out_len)
{
    if (v == 0)
        snprintf(out, out_len, "0");
    else if (tick >= 1000 && fmod(v, 1000) == 0)
        snprintf(out, out_len, "%gk", v / 1000);
    else if (tick >= 1)
        snprintf(out, out_len, "%.0f", v);
    else
        snprintf(out, out_len, "%.*f", (int)ceil(-log10(tick) - 1e-9), v);
}

int charrnn_plot_losses(const char *path, const charrnn_history *h, const char *title,
                        charrnn_error *err)
{
    size_t n = h->train_count;
    if (n == 0)
        return charrnn_fail(err, "cannot plot %s: no training steps yet", path);

    /* Training loss: the mean of each bucket of consecutive steps, at the bucket's middle. */
    size_t bucket = (n + MAX_POINTS - 1) / MAX_POINTS;
    size_t points = (n + bucket - 1) / bucket;
    double *px = charrnn_xmalloc(points * sizeof *px), *py = charrnn_xmalloc(points * sizeof *py);
    for (size_t p = 0; p < points; p++) {
        size_t first = p * bucket, last = first + bucket < n ? first + bucket : n;
        double sum = 0;
        for (size_t i = first; i < last; i++)
            sum += h->train_loss[i];
        py[p] = sum / (double)(last - first);
        px[p] = 0.5 * (double)(first + 1 + last); /* steps are 1-based */
    }

    double y_min = INFINITY, y_max = -INFINITY;
    for (size_t p = 0; p < points; p++) {
        y_min = fmin(y_min, py[p]);
        y_max = fmax(y_max, py[p]);
    }
    for (size_t i = 0; i < h->val_count; i++) {
        y_min = fmin(y_min, h->val_loss[i]);
        y_max = fmax(y_max, h->val_loss[i]);
    }
    double x_max = (double)n;
    for (size_t i = 0; i < h->val_count; i++)
        x_max = fmax(x_max, (double)h->val_step[i]);
    if (x_max < 2)
        x_max = 2;
    /* Round the y range out to whole ticks; give a flat curve some height. */
    if (y_max - y_min < 1e-6) {
        y_min -= 0.5;
        y_max += 0.5;
    }
    double y_tick = charrnn_nice_tick(y_max - y_min, 6);
    y_min = floor(y_min / y_tick) * y_tick;
    y_max = ceil(y_max / y_tick) * y_tick;
    double x_tick = charrnn_nice_tick(x_max, 8);

    const double plot_w = WIDTH - LEFT - RIGHT, plot_h = HEIGHT - TOP - BOTTOM;
#define X(v) (LEFT + plot_w * (v) / x_max)
#define Y(v) (TOP + plot_h * (1.0 - ((v)-y_min) / (y_max - y_min)))

    svg s = {charrnn_xmalloc(1 << 16), 0, 1 << 16};
    emit(&s,
         "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
         "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
         "viewBox=\"0 0 %d %d\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" "
         "font-size=\"13\">\n",
         WIDTH, HEIGHT, WIDTH, HEIGHT);
    emit(&s, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", WIDTH, HEIGHT);
    emit(&s, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">", WIDTH / 2);
    emit_text(&s, title);
    emit(&s, "</text>\n");

    /* Grid lines and tick labels. */
    emit(&s, "<g stroke=\"#e3e3e3\" stroke-width=\"1\">\n");
    for (double v = y_min; v <= y_max + 1e-9 * y_tick; v += y_tick)
        emit(&s, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", LEFT, Y(v),
             WIDTH - RIGHT, Y(v));
    for (double v = 0; v <= x_max + 1e-9; v += x_tick)
        emit(&s, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", X(v), TOP, X(v),
             HEIGHT - BOTTOM);
    emit(&s, "</g>\n<g fill=\"#333\">\n");
    char label[32];
    for (double v = y_min; v <= y_max + 1e-9 * y_tick; v += y_tick) {
        tick_label(v, y_tick, label, sizeof label);
        emit(&s, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", LEFT - 8, Y(v) + 4,
             label);
    }
    for (double v = 0; v <= x_max + 1e-9; v += x_tick) {
        tick_label(v, x_tick, label, sizeof label);
        emit(&s, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>\n", X(v),
             HEIGHT - BOTTOM + 18, label);
    }
    emit(&s, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">step</text>\n",
         LEFT + plot_w / 2, HEIGHT - 12);
    emit(&s, "<text transform=\"translate(20 %.1f) rotate(-90)\" text-anchor=\"middle\">"
             "loss (nats per character)</text>\n</g>\n", TOP + plot_h / 2);
    emit(&s, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" "
             "stroke=\"#888\"/>\n", LEFT, TOP, plot_w, plot_h);

    /* The curves. */
    emit(&s, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.6\" points=\"");
    for (size_t p = 0; p < points; p++)
        emit(&s, "%s%.1f,%.1f", p ? " " : "", X(px[p]), Y(py[p]));
    emit(&s, "\"/>\n");
    if (h->val_count > 0) {
        emit(&s, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
        for (size_t i = 0; i < h->val_count; i++)
            emit(&s, "%s%.1f,%.1f", i ? " " : "", X((double)h->val_step[i]), Y(h->val_loss[i]));
        emit(&s, "\"/>\n");
        if (h->val_count <= 60) {
            emit(&s, "<g fill=\"#d62728\">\n");
            for (size_t i = 0; i < h->val_count; i++)
                emit(&s, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\"/>\n", X((double)h->val_step[i]),
                     Y(h->val_loss[i]));
            emit(&s, "</g>\n");
        }
    }

    /* Legend, top right, where the curves have already fallen away. */
    int lx = WIDTH - RIGHT - 250, ly = TOP + 14;
    emit(&s, "<rect x=\"%d\" y=\"%d\" width=\"240\" height=\"%d\" fill=\"white\" "
             "stroke=\"#bbb\"/>\n", lx - 8, ly - 10, h->val_count > 0 ? 48 : 26);
    emit(&s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" "
             "stroke-width=\"2\"/>\n", lx, ly + 4, lx + 24, ly + 4);
    if (bucket > 1)
        emit(&s, "<text x=\"%d\" y=\"%d\">training (mean of %zu steps)</text>\n", lx + 32, ly + 8,
             bucket);
    else
        emit(&s, "<text x=\"%d\" y=\"%d\">training</text>\n", lx + 32, ly + 8);
    if (h->val_count > 0) {
        emit(&s, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#d62728\" "
                 "stroke-width=\"2\"/>\n", lx, ly + 26, lx + 24, ly + 26);
        emit(&s, "<text x=\"%d\" y=\"%d\">validation (last: %.3f)</text>\n", lx + 32, ly + 30,
             h->val_loss[h->val_count - 1]);
    }
    emit(&s, "</svg>\n");
#undef X
#undef Y

    int rc = charrnn_write_file_atomic(path, s.data, s.len, err);
    free(s.data);
    free(px);
    free(py);
    return rc;
}
