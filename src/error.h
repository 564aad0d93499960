/* The thread-local error message behind gpurnn_last_error(). */
#ifndef GPURNN_ERROR_H
#define GPURNN_ERROR_H

#include "gpurnn.h"

#if defined(__GNUC__)
#define GPURNN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define GPURNN_PRINTF(a, b)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Records the message and returns status, so a failure reads
 *     return gpurnn_fail(GPURNN_ERR_INVALID_ARGUMENT, "T = %d is outside [1, %d]", T, max); */
gpurnn_status gpurnn_fail(gpurnn_status status, const char *fmt, ...) GPURNN_PRINTF(2, 3);

/* Prefixes the current message with context ("gpurnn_forward: ..."), returns status. */
gpurnn_status gpurnn_fail_context(gpurnn_status status, const char *context);

#ifdef __cplusplus
}
#endif

#endif
