/* What cuda_backend.cu gives the module's entry point (module_entry.c). */
#ifndef GPURNN_CUDA_BACKEND_H
#define GPURNN_CUDA_BACKEND_H

#include <stddef.h>

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

const gpurnn_backend_ops *gpurnn_cuda_backend(gpurnn_dtype dtype);
/* OK when the current device can run this build's kernels; otherwise
 * BACKEND_UNAVAILABLE with the reason set. */
gpurnn_status gpurnn_cuda_probe(void);
gpurnn_status gpurnn_cuda_memory_info(size_t *free_bytes, size_t *total_bytes);

#ifdef __cplusplus
}
#endif

#endif
