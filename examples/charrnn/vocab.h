/*
 * The vocabulary: the sorted set of bytes that occur in the text. Token id i is the i-th
 * smallest byte value present, so the same text always gives the same ids.
 */
#ifndef CHARRNN_VOCAB_H
#define CHARRNN_VOCAB_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct charrnn_vocab {
    int size;                /* V, 0..256 */
    unsigned char chars[256]; /* chars[id], increasing */
    int id_of[256];          /* id of a byte, or -1 when the byte is not in the vocabulary */
} charrnn_vocab;

/* The vocabulary of a text. */
void charrnn_vocab_build(charrnn_vocab *vocab, const unsigned char *bytes, size_t len);

/* A vocabulary from its list of characters, as a checkpoint stores it. Fails unless the
 * list is non-empty and strictly increasing (so a damaged list is not taken for another
 * vocabulary). */
int charrnn_vocab_from_chars(charrnn_vocab *vocab, const unsigned char *chars, int count,
                             charrnn_error *err);

/* ids[i] = id of bytes[i]. Fails, naming the characters that are not in the vocabulary
 * (each once, at most a dozen), when there are any; `what` names the text in the message,
 * e.g. "the prime text". */
int charrnn_vocab_encode(const charrnn_vocab *vocab, const unsigned char *bytes, size_t len,
                         int32_t *ids, const char *what, charrnn_error *err);

int charrnn_vocab_equal(const charrnn_vocab *a, const charrnn_vocab *b);

/* Describes how vocabulary `other` differs from `vocab`: "without 'q', 'z'; with new '#'"
 * (the characters in vocab but not in other, then those only in other). */
void charrnn_vocab_describe_difference(const charrnn_vocab *vocab, const charrnn_vocab *other,
                                       char *out, size_t out_len);

/* A byte as it appears in messages: 'a', '\n', ' ', '\x01', '\''. */
void charrnn_char_display(unsigned char c, char *out, size_t out_len);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_VOCAB_H */
