#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>

/* Countdowns: -1 disarmed, otherwise the number of calls to let through before one fails. */
static _Thread_local long long allocation_countdown = -1;
static _Thread_local int allocation_fired;
static _Thread_local long long device_countdown = -1;
static _Thread_local int device_fired;

static int count_down(long long *countdown, int *fired)
{
    if (*countdown < 0) return 0;
    if (*countdown > 0) {
        --*countdown;
        return 0;
    }
    *countdown = -1;
    *fired = 1;
    return 1;
}

int gpurnn_fault_allocation(void) { return count_down(&allocation_countdown, &allocation_fired); }
int gpurnn_fault_device_call(void) { return count_down(&device_countdown, &device_fired); }

void gpurnn_fault_fail_allocation(long long n)
{
    allocation_countdown = n < 0 ? -1 : n;
    allocation_fired = 0;
}

int gpurnn_fault_allocation_fired(void) { return allocation_fired; }

void gpurnn_fault_fail_device_call(long long n)
{
    device_countdown = n < 0 ? -1 : n;
    device_fired = 0;
}

int gpurnn_fault_device_call_fired(void) { return device_fired; }

void *gpurnn_malloc(size_t bytes)
{
    if (gpurnn_fault_allocation()) return NULL;
    return malloc(bytes ? bytes : 1);
}

void *gpurnn_calloc(size_t count, size_t size)
{
    if (gpurnn_fault_allocation()) return NULL;
    return calloc(count ? count : 1, size ? size : 1);
}

void gpurnn_free(void *p) { free(p); }

void *gpurnn_aligned_calloc(size_t count, size_t size, size_t align)
{
    if (count == 0) count = 1;
    if (size == 0) size = 1;
    if (count > (SIZE_MAX - align - sizeof(void *)) / size) return NULL;
    /* calloc, not posix_memalign + memset, so that untouched pages cost nothing; the
     * block calloc returned is kept just before the aligned pointer */
    void *raw = gpurnn_calloc(count * size + align + sizeof(void *), 1);
    if (!raw) return NULL;
    uintptr_t first = (uintptr_t)raw + sizeof(void *);
    void **aligned = (void **)((first + align - 1) & ~(uintptr_t)(align - 1));
    aligned[-1] = raw;
    return aligned;
}

void gpurnn_aligned_free(void *p)
{
    if (p) free(((void **)p)[-1]);
}
