#include "text_out.h"

size_t charrnn_utf8_whole_length(const unsigned char *s, size_t len)
{
    /* Look back over at most 3 continuation bytes (10xxxxxx) for the sequence's lead. */
    size_t i = len, continuations = 0;
    while (i > 0 && continuations < 3 && (s[i - 1] & 0xC0) == 0x80) {
        i--;
        continuations++;
    }
    if (i == 0) return len;
    unsigned char lead = s[i - 1];
    size_t need = (lead & 0xE0) == 0xC0 ? 1 : (lead & 0xF0) == 0xE0 ? 2 : (lead & 0xF8) == 0xF0 ? 3 : 0;
    if (need == 0) return len; /* ASCII, or not UTF-8 here: leave it */
    return continuations < need ? i - 1 : len;
}

void charrnn_write_text(FILE *out, const unsigned char *s, size_t len, int escape_controls)
{
    if (!escape_controls) {
        fwrite(s, 1, len, out);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = s[i];
        if ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7F)
            fprintf(out, "\\x%02x", c);
        else
            fputc(c, out);
    }
}
