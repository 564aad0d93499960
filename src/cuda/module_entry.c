/* The CUDA module's side of backend_module.h: its one exported entry point, and the
 * library services the backend's sources call (error messages, fault countdowns),
 * forwarded to the library that loaded the module so that a message set here is the
 * caller's gpurnn_last_error() and a countdown armed by a test counts device calls too.
 * The same file serves the real module and the device emulator's
 * (GPURNN_MODULE_IS_EMULATOR). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "../alloc.h"
#include "../backend_module.h"
#include "../error.h"
#include "cuda_backend.h"

#ifndef GPURNN_MODULE_IS_EMULATOR
#define GPURNN_MODULE_IS_EMULATOR 0
#endif
#ifndef GPURNN_MODULE_BUILT_INTERFACE_VERSION
#define GPURNN_MODULE_BUILT_INTERFACE_VERSION GPURNN_MODULE_INTERFACE_VERSION
#endif

/* Set once by the entry point, before the library calls anything else here. */
static const gpurnn_module_host *library;

gpurnn_status gpurnn_fail(gpurnn_status status, const char *fmt, ...)
{
    char message[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof message, fmt, args);
    va_end(args);
    return library->set_error(status, message);
}

const char *gpurnn_last_error(void) { return library->last_error(); }
int gpurnn_fault_allocation(void) { return library->fault_allocation(); }
int gpurnn_fault_device_call(void) { return library->fault_device_call(); }
void *gpurnn_malloc(size_t bytes) { return gpurnn_fault_allocation() ? NULL : malloc(bytes ? bytes : 1); }
void gpurnn_free(void *p) { free(p); }

static gpurnn_status probe(void) { return gpurnn_cuda_probe(); }

static const gpurnn_module cuda_module = {
    .interface_version = GPURNN_MODULE_BUILT_INTERFACE_VERSION,
    .description = GPURNN_MODULE_IS_EMULATOR ? "the device emulator (tests/emulator), not a GPU"
                                             : "CUDA runtime (static) and cuBLAS",
    .is_emulator = GPURNN_MODULE_IS_EMULATOR,
    .probe = probe,
    .ops = gpurnn_cuda_backend,
    .device_memory = gpurnn_cuda_memory_info,
};

__attribute__((visibility("default"))) const gpurnn_module *gpurnn_backend_module_entry(
    const gpurnn_module_host *host);

const gpurnn_module *gpurnn_backend_module_entry(const gpurnn_module_host *host)
{
    if (!host || host->interface_version != GPURNN_MODULE_INTERFACE_VERSION) return &cuda_module;
    library = host;
    return &cuda_module;
}
