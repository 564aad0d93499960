/*
 * Showing generated text: a model trained on bytes can end a sample in the middle of a
 * UTF-8 character, and one trained on a binary file can draw control bytes and NULs that
 * a terminal would act on. Samples are cut at the last whole character, and on a terminal
 * the control bytes are shown escaped.
 */
#ifndef CHARRNN_TEXT_OUT_H
#define CHARRNN_TEXT_OUT_H

#include <stddef.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The length of s[0, len) without a UTF-8 sequence cut off at its end (a lead byte whose
 * continuation bytes are missing); len itself when the text ends on a whole character
 * or is not UTF-8 there. */
size_t charrnn_utf8_whole_length(const unsigned char *s, size_t len);

/* Writes s[0, len) to out; with escape_controls, bytes below 0x20 other than newline and
 * tab, and DEL, are written as \xHH, so that a terminal shows them instead of obeying
 * them (a backslash stays a backslash). */
void charrnn_write_text(FILE *out, const unsigned char *s, size_t len, int escape_controls);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_TEXT_OUT_H */
