#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

enum { GPURNN_ERROR_CAPACITY = 512 };

static _Thread_local char last_error[GPURNN_ERROR_CAPACITY];

gpurnn_status gpurnn_fail(gpurnn_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}

gpurnn_status gpurnn_fail_context(gpurnn_status status, const char *context)
{
    /* Shift the message right to make room for "context: ", truncating its end. */
    size_t prefix = strnlen(context, GPURNN_ERROR_CAPACITY / 2);
    memmove(last_error + prefix + 2, last_error, GPURNN_ERROR_CAPACITY - prefix - 3);
    memcpy(last_error, context, prefix);
    last_error[prefix] = ':';
    last_error[prefix + 1] = ' ';
    last_error[GPURNN_ERROR_CAPACITY - 1] = '\0';
    return status;
}

const char *gpurnn_last_error(void) { return last_error; }

const char *gpurnn_status_string(gpurnn_status s)
{
    switch (s) {
    case GPURNN_OK: return "GPURNN_OK: success";
    case GPURNN_ERR_INVALID_ARGUMENT: return "GPURNN_ERR_INVALID_ARGUMENT: a bad value from the caller";
    case GPURNN_ERR_INVALID_STATE: return "GPURNN_ERR_INVALID_STATE: the call does not fit the model's state";
    case GPURNN_ERR_OUT_OF_MEMORY: return "GPURNN_ERR_OUT_OF_MEMORY: an allocation failed";
    case GPURNN_ERR_BACKEND_UNAVAILABLE: return "GPURNN_ERR_BACKEND_UNAVAILABLE: the backend cannot be used here";
    case GPURNN_ERR_CUDA: return "GPURNN_ERR_CUDA: a CUDA or cuBLAS call failed";
    case GPURNN_ERR_IO: return "GPURNN_ERR_IO: a file could not be read or written";
    case GPURNN_ERR_FORMAT: return "GPURNN_ERR_FORMAT: the file is not a valid checkpoint";
    case GPURNN_ERR_NUMERIC: return "GPURNN_ERR_NUMERIC: a value is not finite";
    }
    return "unknown gpurnn_status";
}
