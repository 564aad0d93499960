#define _DEFAULT_SOURCE /* TIOCGWINSZ */
#include "console.h"
#include "text_out.h"

#include "util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

void charrnn_console_init(charrnn_console *c)
{
    const char *term = getenv("TERM");
    c->tty = isatty(STDOUT_FILENO) && !(term && strcmp(term, "dumb") == 0);
    c->live = 0;
    c->last_drawn = -1.0;
}

/* The terminal's width, so that the live line never wraps: a wrapped line cannot be
 * redrawn with a carriage return. */
static int terminal_columns(void)
{
#ifdef TIOCGWINSZ
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
#endif
    return 80;
}

static void clear_live(charrnn_console *c)
{
    if (c->live) {
        fputs("\r\033[K", stdout);
        c->live = 0;
    }
}

void charrnn_console_live(charrnn_console *c, const char *line, int force)
{
    if (!c->tty)
        return;
    double now = charrnn_now_seconds();
    if (!force && c->last_drawn >= 0 && now - c->last_drawn < 0.1)
        return;
    c->last_drawn = now;
    int width = terminal_columns() - 1;
    fprintf(stdout, "\r%.*s\033[K", width > 0 ? width : 0, line);
    fflush(stdout);
    c->live = 1;
}

void charrnn_console_print(charrnn_console *c, const char *text, size_t len)
{
    clear_live(c);
    charrnn_write_text(stdout, (const unsigned char *)text, len, c->tty);
    fflush(stdout);
    c->last_drawn = -1.0; /* redraw the live line at the next chance */
}

void charrnn_console_line(charrnn_console *c, const char *format, ...)
{
    clear_live(c);
    va_list args;
    va_start(args, format);
    vfprintf(stdout, format, args);
    va_end(args);
    fputc('\n', stdout);
    fflush(stdout);
    c->last_drawn = -1.0;
}
