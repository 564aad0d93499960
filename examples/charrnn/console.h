/*
 * Output while training. On a terminal a live progress line is redrawn in place; lines
 * that should stay (log lines, samples, messages) first clear it. When stdout is not a
 * terminal (a file, a pipe, CI) nothing is redrawn and only the lasting lines appear.
 */
#ifndef CHARRNN_CONSOLE_H
#define CHARRNN_CONSOLE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct charrnn_console {
    int tty;       /* stdout is a terminal that understands \r and "erase line" */
    int live;      /* a live line is on the screen */
    double last_drawn;
} charrnn_console;

void charrnn_console_init(charrnn_console *c);

/* Redraws the live line (terminal only), at most ten times a second unless force. */
void charrnn_console_live(charrnn_console *c, const char *line, int force);

/* Prints text that stays (it should end with a newline), clearing the live line first; on
 * a terminal its control bytes are shown escaped (text_out.h). */
void charrnn_console_print(charrnn_console *c, const char *text, size_t len);

/* printf of a lasting line; a newline is added. */
void charrnn_console_line(charrnn_console *c, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_CONSOLE_H */
