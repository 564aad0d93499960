/* The binary interface between libgpurnn and a backend module: the CUDA backend is a
 * shared object of its own (libgpurnn_cuda.so, or the device emulator's
 * libgpurnn_cuda_emu.so) that the dispatch layer loads with dlopen the first time CUDA
 * is asked for, so that libgpurnn itself links no CUDA library and starts anywhere.
 *
 * A module exports one C function, GPURNN_MODULE_ENTRY. The library passes it the
 * services a backend needs from the library (its thread-local error message and its
 * test-only fault countdowns, so that both live in one place whichever library the
 * caller linked) and gets back the module's table. The table's first field is the
 * interface version the module was built for: the library checks it before it touches
 * anything else, and refuses a module of another version with a message naming both.
 * Change GPURNN_MODULE_INTERFACE_VERSION whenever either struct below, or
 * gpurnn_backend_ops, changes. */
#ifndef GPURNN_BACKEND_MODULE_H
#define GPURNN_BACKEND_MODULE_H

#include <stddef.h>

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define GPURNN_MODULE_INTERFACE_VERSION 2u /* 2: infer and sample_batch */
#define GPURNN_MODULE_ENTRY "gpurnn_backend_module_entry"

/* What the library lends a module; valid for the life of the process. */
typedef struct gpurnn_module_host {
    unsigned interface_version;
    /* Sets the calling thread's gpurnn_last_error() message; returns status. */
    gpurnn_status (*set_error)(gpurnn_status status, const char *message);
    const char *(*last_error)(void);
    /* src/alloc.h's countdowns: nonzero when this allocation / device call must fail. */
    int (*fault_allocation)(void);
    int (*fault_device_call)(void);
} gpurnn_module_host;

typedef struct gpurnn_module {
    unsigned interface_version; /* first, so that a library of any version can read it */
    const char *description;    /* e.g. "CUDA 13.0 runtime, cuBLAS" */
    int is_emulator;            /* a test device: never chosen by GPURNN_BACKEND_AUTO */
    /* OK when the current device can run this module's kernels; otherwise
     * BACKEND_UNAVAILABLE with the reason (no driver, no device, ...) set. */
    gpurnn_status (*probe)(void);
    const gpurnn_backend_ops *(*ops)(gpurnn_dtype dtype);
    /* Free and total bytes of the current device (the tests' leak checks). */
    gpurnn_status (*device_memory)(size_t *free_bytes, size_t *total_bytes);
} gpurnn_module;

/* The exported entry point's type. Returns the module's table, or NULL when it cannot
 * work with this host (the version is then not checked: the library says so). */
typedef const gpurnn_module *(*gpurnn_module_entry_fn)(const gpurnn_module_host *host);

/* Library side (src/backend_module.c). Loads the CUDA module once per process, from
 * GPURNN_CUDA_MODULE when set, else beside libgpurnn, else from the install libdir, and
 * gives its table; BACKEND_UNAVAILABLE with a message naming the file and the reason
 * (not found, not loadable with the loader's words, not a module, another interface
 * version) otherwise. The outcome of loading is fixed for the life of the process. */
gpurnn_status gpurnn_cuda_module(const gpurnn_module **out);
/* Free and total bytes of the CUDA module's current device (tests only). */
gpurnn_status gpurnn_cuda_device_memory(size_t *free_bytes, size_t *total_bytes);

#ifdef __cplusplus
}
#endif

#endif
