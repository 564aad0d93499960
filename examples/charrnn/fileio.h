/* Whole-file reads and atomic whole-file writes. */
#ifndef CHARRNN_FILEIO_H
#define CHARRNN_FILEIO_H

#include "util.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Writes data to path atomically: into "<path>.tmp-XXXXXX" beside it, flushed to disk,
 * then renamed over path (and the directory flushed), so that readers and crashes see
 * either the old file or the new one, never a part. On failure path is left as it was
 * and the temporary file is removed. */
int charrnn_write_file_atomic(const char *path, const void *data, size_t len, charrnn_error *err);

/* Reads a whole regular file into a new buffer (free() it). */
int charrnn_read_file(const char *path, unsigned char **data, size_t *len, charrnn_error *err);

/* CRC-64/XZ (the check of the xz format and of libgpurnn's checkpoints), continuing
 * from crc (start with 0). */
uint64_t charrnn_crc64(uint64_t crc, const void *data, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* CHARRNN_FILEIO_H */
