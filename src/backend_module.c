/* Finds and loads the CUDA backend module (backend_module.h): once per process, on the
 * first call that asks for CUDA, so that a program that never does pays nothing and a
 * machine without CUDA libraries still runs everything else. */
#define _GNU_SOURCE /* dladdr */
#include "backend_module.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"

#ifndef GPURNN_MODULE_INSTALL_DIR
#define GPURNN_MODULE_INSTALL_DIR "/usr/local/lib"
#endif
#ifndef GPURNN_CUDA_MODULE_BUILT
#define GPURNN_CUDA_MODULE_BUILT 0
#endif

#define CUDA_MODULE_FILE "libgpurnn_cuda.so"

enum { MESSAGE_CAPACITY = 512, PATH_CAPACITY = 4096 };

/* Written once under pthread_once, read-only afterwards. */
static struct {
    pthread_once_t once;
    gpurnn_status status;
    const gpurnn_module *module;
    char path[PATH_CAPACITY];
    char message[MESSAGE_CAPACITY];
} cuda_module = {.once = PTHREAD_ONCE_INIT};

static gpurnn_status host_set_error(gpurnn_status status, const char *message)
{
    return gpurnn_fail(status, "%s", message);
}

static const gpurnn_module_host module_host = {
    .interface_version = GPURNN_MODULE_INTERFACE_VERSION,
    .set_error = host_set_error,
    .last_error = gpurnn_last_error,
    .fault_allocation = gpurnn_fault_allocation,
    .fault_device_call = gpurnn_fault_device_call,
};

static int file_exists(const char *path) { return access(path, F_OK) == 0; }

/* The directory of the shared library this code is part of, when it is one (a program
 * linked with libgpurnn.a gets 0: there is no "beside libgpurnn" then). */
static int library_directory(char *dir, size_t cap)
{
    Dl_info info;
    if (!dladdr((const void *)&gpurnn_cuda_module, &info) || !info.dli_fname) return 0;
    const char *slash = strrchr(info.dli_fname, '/');
    const char *base = slash ? slash + 1 : info.dli_fname;
    if (strncmp(base, "libgpurnn", 9) != 0 || !strstr(base, ".so")) return 0;
    size_t len = slash ? (size_t)(slash - info.dli_fname) : 0;
    if (len == 0 || len >= cap) return 0;
    memcpy(dir, info.dli_fname, len);
    dir[len] = '\0';
    return 1;
}

static void record(gpurnn_status status, const char *fmt, ...) GPURNN_PRINTF(2, 3);
static void record(gpurnn_status status, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    cuda_module.status = status;
    vsnprintf(cuda_module.message, sizeof cuda_module.message, fmt, args);
    va_end(args);
}

/* Where to look, in order: $GPURNN_CUDA_MODULE alone when it is set; otherwise beside
 * libgpurnn, then the directory it was installed to. Returns 0 with the message set
 * when no candidate file exists. */
static int find_module(char *path, size_t cap)
{
    const char *chosen = getenv("GPURNN_CUDA_MODULE");
    if (chosen && *chosen) {
        if (!file_exists(chosen)) {
            record(GPURNN_ERR_BACKEND_UNAVAILABLE,
                   "CUDA backend: module %s (from GPURNN_CUDA_MODULE) not found", chosen);
            return 0;
        }
        snprintf(path, cap, "%s", chosen);
        return 1;
    }
    char dir[PATH_CAPACITY], beside[PATH_CAPACITY + sizeof CUDA_MODULE_FILE + 1] = "";
    if (library_directory(dir, sizeof dir)) {
        snprintf(beside, sizeof beside, "%s/" CUDA_MODULE_FILE, dir);
        if (file_exists(beside)) {
            snprintf(path, cap, "%s", beside);
            return 1;
        }
    }
    const char *installed = GPURNN_MODULE_INSTALL_DIR "/" CUDA_MODULE_FILE;
    if (file_exists(installed)) {
        snprintf(path, cap, "%s", installed);
        return 1;
    }
    char looked[3 * PATH_CAPACITY];
    if (*beside)
        snprintf(looked, sizeof looked, "%s and %s", beside, installed);
    else
        snprintf(looked, sizeof looked, "%s", installed);
    record(GPURNN_ERR_BACKEND_UNAVAILABLE,
           "CUDA backend: module " CUDA_MODULE_FILE " not found (looked for %s; %s)", looked,
           GPURNN_CUDA_MODULE_BUILT ? "set GPURNN_CUDA_MODULE to its path"
                                    : "this libgpurnn was configured without a CUDA compiler, so it built none");
    return 0;
}

static void load_cuda_module(void)
{
    char path[PATH_CAPACITY];
    if (!find_module(path, sizeof path)) return;
    snprintf(cuda_module.path, sizeof cuda_module.path, "%s", path);
    /* RTLD_LOCAL: the module's CUDA runtime and cuBLAS symbols stay its own. It is never
     * unloaded: the CUDA runtime it carries keeps state until the process exits. */
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        record(GPURNN_ERR_BACKEND_UNAVAILABLE, "CUDA backend: cannot load module %s: %s", path,
               why ? why : "unknown loader error");
        return;
    }
    dlerror();
    void *symbol = dlsym(handle, GPURNN_MODULE_ENTRY);
    if (!symbol) {
        record(GPURNN_ERR_BACKEND_UNAVAILABLE,
               "CUDA backend: %s is not a libgpurnn backend module (it exports no %s)", path,
               GPURNN_MODULE_ENTRY);
        dlclose(handle);
        return;
    }
    gpurnn_module_entry_fn entry;
    memcpy(&entry, &symbol, sizeof entry); /* ISO C has no object-to-function pointer cast */
    const gpurnn_module *module = entry(&module_host);
    if (!module) {
        record(GPURNN_ERR_BACKEND_UNAVAILABLE,
               "CUDA backend: module %s refused this libgpurnn (its %s returned no table)", path,
               GPURNN_MODULE_ENTRY);
        return;
    }
    if (module->interface_version != GPURNN_MODULE_INTERFACE_VERSION) {
        record(GPURNN_ERR_BACKEND_UNAVAILABLE,
               "CUDA backend: module %s has backend interface version %u; this libgpurnn (%s) "
               "needs version %u",
               path, module->interface_version, gpurnn_version(), GPURNN_MODULE_INTERFACE_VERSION);
        return;
    }
    cuda_module.module = module;
    cuda_module.status = GPURNN_OK;
}

gpurnn_status gpurnn_cuda_module(const gpurnn_module **out)
{
    pthread_once(&cuda_module.once, load_cuda_module);
    if (cuda_module.status != GPURNN_OK) return gpurnn_fail(cuda_module.status, "%s", cuda_module.message);
    *out = cuda_module.module;
    return GPURNN_OK;
}

gpurnn_status gpurnn_cuda_device_memory(size_t *free_bytes, size_t *total_bytes)
{
    const gpurnn_module *module = NULL;
    gpurnn_status s = gpurnn_cuda_module(&module);
    if (s != GPURNN_OK) return s;
    return module->device_memory(free_bytes, total_bytes);
}

const char *gpurnn_backend_module(gpurnn_backend b)
{
    if (b != GPURNN_BACKEND_CUDA) return NULL;
    pthread_once(&cuda_module.once, load_cuda_module);
    return cuda_module.path[0] ? cuda_module.path : NULL;
}
