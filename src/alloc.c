#include "alloc.h"

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
