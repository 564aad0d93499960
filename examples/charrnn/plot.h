/* The loss curves as an SVG image, written by the program itself (no plotting tool). */
#ifndef CHARRNN_PLOT_H
#define CHARRNN_PLOT_H

#include "checkpoint.h"
#include "util.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Draws the training loss (averaged over buckets of steps, so that a long run stays a
 * readable line of a few hundred points) and the validation loss against the step, in
 * nats/char, with `title` above, and writes the SVG to path atomically. Fails when there
 * is nothing to draw or the file cannot be written. */
int charrnn_plot_losses(const char *path, const charrnn_history *history, const char *title,
                        charrnn_error *err);

/* A "nice" tick spacing (1, 2 or 5 times a power of ten) giving about `ticks` intervals
 * over range. */
double charrnn_nice_tick(double range, int ticks);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_PLOT_H */
