#include "vocab.h"

#include <stdio.h>
#include <string.h>

void charrnn_vocab_build(charrnn_vocab *vocab, const unsigned char *bytes, size_t len)
{
    int present[256] = {0};
    for (size_t i = 0; i < len; i++)
        present[bytes[i]] = 1;
    vocab->size = 0;
    for (int c = 0; c < 256; c++) {
        vocab->id_of[c] = -1;
        if (present[c]) {
            vocab->id_of[c] = vocab->size;
            vocab->chars[vocab->size++] = (unsigned char)c;
        }
    }
}

int charrnn_vocab_from_chars(charrnn_vocab *vocab, const unsigned char *chars, int count,
                             charrnn_error *err)
{
    if (count < 1 || count > 256)
        return charrnn_fail(err, "a vocabulary of %d characters is not possible", count);
    for (int i = 1; i < count; i++)
        if (chars[i] <= chars[i - 1])
            return charrnn_fail(err, "the vocabulary is not a sorted set of distinct bytes");
    vocab->size = count;
    for (int c = 0; c < 256; c++)
        vocab->id_of[c] = -1;
    for (int i = 0; i < count; i++) {
        vocab->chars[i] = chars[i];
        vocab->id_of[chars[i]] = i;
    }
    return 0;
}

void charrnn_char_display(unsigned char c, char *out, size_t out_len)
{
    switch (c) {
    case '\n': snprintf(out, out_len, "'\\n'"); return;
    case '\t': snprintf(out, out_len, "'\\t'"); return;
    case '\r': snprintf(out, out_len, "'\\r'"); return;
    case '\'': snprintf(out, out_len, "'\\''"); return;
    case '\\': snprintf(out, out_len, "'\\\\'"); return;
    default: break;
    }
    if (c >= 0x20 && c < 0x7F)
        snprintf(out, out_len, "'%c'", c);
    else /* control characters and the bytes of multi-byte UTF-8 sequences */
        snprintf(out, out_len, "'\\x%02x'", c);
}

/* Appends the displays of the bytes flagged in `flags` to out: "'a', 'b'", at most
 * `limit` of them, then ", ..." for the rest. */
static void list_chars(const int flags[256], int limit, char *out, size_t out_len)
{
    size_t used = strlen(out);
    int listed = 0, total = 0;
    for (int c = 0; c < 256; c++) {
        if (!flags[c])
            continue;
        total++;
        if (listed == limit)
            continue;
        char shown[16];
        charrnn_char_display((unsigned char)c, shown, sizeof shown);
        used += (size_t)snprintf(out + used, used < out_len ? out_len - used : 0, "%s%s",
                                 listed ? ", " : "", shown);
        listed++;
        if (used >= out_len)
            return;
    }
    if (total > listed && used < out_len)
        snprintf(out + used, out_len - used, " and %d more", total - listed);
}

int charrnn_vocab_encode(const charrnn_vocab *vocab, const unsigned char *bytes, size_t len,
                         int32_t *ids, const char *what, charrnn_error *err)
{
    int unknown[256] = {0}, any = 0;
    for (size_t i = 0; i < len; i++) {
        int id = vocab->id_of[bytes[i]];
        if (id < 0) {
            unknown[bytes[i]] = 1;
            any = 1;
        } else {
            ids[i] = id;
        }
    }
    if (!any)
        return 0;
    char listed[512] = "";
    list_chars(unknown, 12, listed, sizeof listed);
    return charrnn_fail(err, "%s has characters that are not in the model's vocabulary: %s",
                        what, listed);
}

int charrnn_vocab_equal(const charrnn_vocab *a, const charrnn_vocab *b)
{
    return a->size == b->size && memcmp(a->chars, b->chars, (size_t)a->size) == 0;
}

void charrnn_vocab_describe_difference(const charrnn_vocab *vocab, const charrnn_vocab *other,
                                       char *out, size_t out_len)
{
    int missing[256] = {0}, added[256] = {0}, any_missing = 0, any_added = 0;
    for (int c = 0; c < 256; c++) {
        int in_vocab = vocab->id_of[c] >= 0, in_other = other->id_of[c] >= 0;
        missing[c] = in_vocab && !in_other;
        added[c] = in_other && !in_vocab;
        any_missing |= missing[c];
        any_added |= added[c];
    }
    out[0] = '\0';
    if (out_len == 0)
        return;
    if (any_missing) {
        snprintf(out, out_len, "without ");
        list_chars(missing, 8, out, out_len);
    }
    if (any_added) {
        size_t used = strlen(out);
        snprintf(out + used, out_len - used, "%swith new ", any_missing ? "; " : "");
        list_chars(added, 8, out, out_len);
    }
}
