/* Stand-ins for libgpurnn_cuda.so, each broken in one of the ways the dispatch layer
 * must report (tests/module/CMakeLists.txt builds one per way):
 *   STUB_NEEDS_PHANTOM    links a library that is not on the loader's path, so dlopen fails
 *   STUB_NO_ENTRY         exports no entry point
 *   STUB_VERSION_OFFSET   built for another backend interface version
 * None of them has a usable table: the library must never call into it. */
#include <stddef.h>

#include "backend_module.h"

#ifdef STUB_NEEDS_PHANTOM
int gpurnn_test_phantom(void);
#endif

#ifndef STUB_VERSION_OFFSET
#define STUB_VERSION_OFFSET 0
#endif

__attribute__((visibility("default"))) int gpurnn_module_stub_marker(void);
int gpurnn_module_stub_marker(void)
{
#ifdef STUB_NEEDS_PHANTOM
    return gpurnn_test_phantom();
#else
    return 0;
#endif
}

#ifndef STUB_NO_ENTRY
static const gpurnn_module stub = {
    .interface_version = GPURNN_MODULE_INTERFACE_VERSION + STUB_VERSION_OFFSET,
    .description = "a test stub",
};

__attribute__((visibility("default"))) const gpurnn_module *gpurnn_backend_module_entry(
    const gpurnn_module_host *host);
const gpurnn_module *gpurnn_backend_module_entry(const gpurnn_module_host *host)
{
    (void)host;
    return &stub;
}
#endif
