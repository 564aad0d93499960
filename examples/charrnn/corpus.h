/*
 * The training text: a file read as raw bytes, or the built-in corpus (a small play
 * generated from a fixed grammar and a fixed seed, so it is the same on every machine).
 */
#ifndef CHARRNN_CORPUS_H
#define CHARRNN_CORPUS_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct charrnn_text {
    unsigned char *bytes; /* owned; freed by charrnn_text_free */
    size_t len;
} charrnn_text;

/* Reads a whole file as bytes (no encoding is assumed: the model sees bytes).
 * Fails, naming the path and the system's reason, when it cannot be opened or read or is
 * not a regular file. An empty file is read fine (the caller checks lengths). */
int charrnn_text_read_file(const char *path, charrnn_text *out, charrnn_error *err);

/* The built-in corpus, about 110 KB: see corpus.c for what it is. Deterministic. */
void charrnn_text_builtin(charrnn_text *out);

/* A 64-bit FNV-1a hash of the bytes: a checkpoint records the hash of its text so that
 * --resume can tell whether it continues on the same text. */
uint64_t charrnn_text_hash(const unsigned char *bytes, size_t len);

void charrnn_text_free(charrnn_text *text);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_CORPUS_H */
