/* Device memory: every cudaMalloc is its own mapping
 *
 *     [guard page][front slack | allocation | back slack (< 256 bytes)][guard page]
 *
 * placed so that its end comes as close to the trailing PROT_NONE guard page as the
 * 256-byte start alignment allows. The slack is poisoned and checked after every
 * synchronisation and on free; the allocation itself is poisoned when allocated. Outside
 * device work every allocation is PROT_NONE, so host code that dereferences a device
 * pointer faults, and the fault handler names the allocation. Pinned host memory
 * (cudaMallocHost) is ordinary memory, recorded so that copies can tell it apart. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>

#include "internal.h"

namespace gpurnn_emu {
namespace detail {
namespace {

constexpr size_t kAlign = 256;                   /* cudaMalloc's guaranteed alignment */
constexpr unsigned char kPoison = 0xFF;          /* NaN in float and double, -1 in integers */
constexpr size_t kFullPoisonLimit = (size_t)256 << 20; /* larger: the first and last MiB only */
constexpr size_t kPartialPoison = (size_t)1 << 20;
constexpr size_t kDefaultCapacity = (size_t)80 << 30; /* an H100's 80 GiB */

struct Allocation {
    unsigned id;
    char *ptr;          /* what cudaMalloc returned */
    size_t size;
    char *map_base;     /* the whole mapping, guard pages included */
    size_t map_size;
    char *data_begin;   /* first byte after the leading guard page */
    char *data_end;     /* the trailing guard page */
    const void *site;   /* cudaMalloc's caller */
};

std::mutex g_mutex; /* the registries below and the protection state */
std::map<uintptr_t, Allocation> g_allocations; /* by map_base */
std::map<uintptr_t, size_t> g_pinned;          /* by start */
unsigned g_next_id = 1;
size_t g_used = 0;
size_t g_capacity = 0; /* 0: not read from the environment yet */
bool g_device_work = false;

size_t page_size()
{
    static const size_t size = (size_t)sysconf(_SC_PAGESIZE);
    return size;
}

size_t parse_bytes(const char *text, bool *ok)
{
    char *end = nullptr;
    unsigned long long value = strtoull(text, &end, 10);
    *ok = end != text;
    if (!*ok) return 0;
    switch (*end) {
    case 'k': case 'K': value <<= 10; end++; break;
    case 'm': case 'M': value <<= 20; end++; break;
    case 'g': case 'G': value <<= 30; end++; break;
    case 't': case 'T': value <<= 40; end++; break;
    default: break;
    }
    if (*end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    *ok = *end == '\0';
    return (size_t)value;
}

size_t capacity_locked()
{
    if (g_capacity == 0) {
        g_capacity = kDefaultCapacity;
        if (const char *env = getenv("GPURNN_EMU_DEVICE_MEMORY")) {
            bool ok = false;
            size_t value = parse_bytes(env, &ok);
            if (ok && value > 0) g_capacity = value;
            else note("GPURNN_EMU_DEVICE_MEMORY=%s is not a size (e.g. 80G, 512M, 1048576); using 80 GiB", env);
        }
    }
    return g_capacity;
}

/* The allocation whose mapping (guard pages included) contains p, or null. */
const Allocation *mapping_containing(const void *p)
{
    uintptr_t a = (uintptr_t)p;
    auto it = g_allocations.upper_bound(a);
    if (it == g_allocations.begin()) return nullptr;
    --it;
    const Allocation &alloc = it->second;
    return a < (uintptr_t)alloc.map_base + alloc.map_size ? &alloc : nullptr;
}

const Allocation *allocation_containing(const void *p)
{
    const Allocation *alloc = mapping_containing(p);
    if (alloc && (const char *)p >= alloc->ptr && (const char *)p < alloc->ptr + alloc->size) return alloc;
    return nullptr;
}

std::string describe(const Allocation &a)
{
    char buf[640];
    snprintf(buf, sizeof buf, "device allocation #%u (%zu bytes at %p, allocated by %s)", a.id, a.size,
             (void *)a.ptr, describe_code_address(a.site).c_str());
    return buf;
}

void poison_range(char *p, size_t bytes)
{
    if (bytes <= kFullPoisonLimit) {
        memset(p, kPoison, bytes);
    } else {
        memset(p, kPoison, kPartialPoison);
        memset(p + bytes - kPartialPoison, kPoison, kPartialPoison);
    }
}

/* Fails with a diagnostic when a kernel (or copy) wrote into the slack around a. */
void check_slack(const Allocation &a, const char *when)
{
    const char *front = a.data_begin, *back = a.ptr + a.size;
    for (const char *p = front; p < a.ptr; p++)
        if ((unsigned char)*p != kPoison)
            fatal("device work wrote %zu bytes before the start of %s (byte at offset -%zu changed), detected %s",
                  (size_t)(a.ptr - p), describe(a).c_str(), (size_t)(a.ptr - p), when);
    for (const char *p = back; p < a.data_end; p++)
        if ((unsigned char)*p != kPoison)
            fatal("device work wrote past the end of %s (byte at offset %zu, %zu bytes past the end, changed), "
                  "detected %s",
                  describe(a).c_str(), (size_t)(p - a.ptr), (size_t)(p - back) + 1, when);
}

void protect(const Allocation &a, bool accessible)
{
    if (mprotect(a.data_begin, (size_t)(a.data_end - a.data_begin), accessible ? PROT_READ | PROT_WRITE : PROT_NONE) != 0)
        fatal("mprotect of %s failed: %s", describe(a).c_str(), strerror(errno));
}

} // namespace

size_t device_memory_capacity()
{
    std::lock_guard<std::mutex> lock(g_mutex);
    return capacity_locked();
}

void poison_host(void *p, size_t bytes) { memset(p, kPoison, bytes); }

RangeCheck check_device_range(const void *p, size_t bytes, const char *what)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    const Allocation *a = allocation_containing(p);
    if (a == nullptr) {
        const Allocation *near = mapping_containing(p);
        if (near)
            fatal("%s: %p is %s the %s, in its guard pages", what, p,
                  (const char *)p < near->ptr ? "before the start of" : "past the end of", describe(*near).c_str());
        return RangeCheck::kNotDevice;
    }
    size_t offset = (size_t)((const char *)p - a->ptr);
    if (bytes > a->size - offset)
        fatal("%s: %zu bytes at offset %zu of %s run %zu bytes past its end", what, bytes, offset,
              describe(*a).c_str(), bytes - (a->size - offset));
    return RangeCheck::kDevice;
}

bool is_device_pointer(const void *p)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    return mapping_containing(p) != nullptr;
}

bool is_pinned_host_pointer(const void *p)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    uintptr_t a = (uintptr_t)p;
    auto it = g_pinned.upper_bound(a);
    if (it == g_pinned.begin()) return false;
    --it;
    return a < it->first + it->second;
}

void begin_device_work()
{
    std::lock_guard<std::mutex> lock(g_mutex);
    g_device_work = true;
    for (auto &entry : g_allocations) protect(entry.second, true);
}

void end_device_work(const char *sync_point)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    char when[256];
    snprintf(when, sizeof when, "at %s", sync_point);
    for (auto &entry : g_allocations) check_slack(entry.second, when);
    for (auto &entry : g_allocations) protect(entry.second, false);
    g_device_work = false;
}

bool describe_memory_fault(const void *addr, bool in_device_work, char *buf, size_t size)
{
    /* Called from the signal handler: take the lock if we can, read regardless (we abort). */
    bool locked = g_mutex.try_lock();
    const Allocation *a = mapping_containing(addr);
    bool found = a != nullptr;
    if (found) {
        const char *p = (const char *)addr;
        std::string what = describe(*a);
        std::string who = in_device_work ? current_thread_description() : std::string();
        const char *work = in_device_work && g_current_work ? g_current_work : "host code";
        if (p >= a->ptr && p < a->ptr + a->size)
            snprintf(buf, size, "host access to %s at offset %zu: device memory is not accessible from host code",
                     what.c_str(), (size_t)(p - a->ptr));
        else if (p >= a->ptr + a->size)
            snprintf(buf, size, "%s accessed offset %zu of %s, past its end (address %p)",
                     who.empty() ? work : who.c_str(), (size_t)(p - a->ptr), what.c_str(), addr);
        else
            snprintf(buf, size, "%s accessed %zu bytes before the start of %s (address %p)",
                     who.empty() ? work : who.c_str(), (size_t)(a->ptr - p), what.c_str(), addr);
    }
    if (locked) g_mutex.unlock();
    return found;
}

void set_device_memory(size_t bytes)
{
    std::lock_guard<std::mutex> lock(g_mutex);
    g_capacity = bytes;
}

} // namespace detail

void set_device_memory(size_t bytes) { detail::set_device_memory(bytes); }

} // namespace gpurnn_emu

using namespace gpurnn_emu::detail;

extern "C" cudaError_t cudaMalloc(void **dev_ptr, size_t size)
{
    const void *site = __builtin_return_address(0);
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (dev_ptr == nullptr) return record_error(cudaErrorInvalidValue);
    *dev_ptr = nullptr;
    if (size == 0) return cudaSuccess; /* as the real runtime: success, null pointer */
    size_t page = page_size();
    size_t rounded = (size + kAlign - 1) / kAlign * kAlign;
    size_t data_pages = (rounded + page - 1) / page * page;
    size_t map_size = data_pages + 2 * page;
    if (size > ((size_t)1 << 48)) return record_error(cudaErrorMemoryAllocation);
    std::lock_guard<std::mutex> lock(g_mutex);
    size_t capacity = capacity_locked();
    if (rounded > capacity - std::min(capacity, g_used)) return record_error(cudaErrorMemoryAllocation);
    void *map = mmap(nullptr, map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) return record_error(cudaErrorMemoryAllocation);
    Allocation a;
    a.id = g_next_id++;
    a.map_base = (char *)map;
    a.map_size = map_size;
    a.data_begin = a.map_base + page;
    a.data_end = a.data_begin + data_pages;
    a.ptr = a.data_end - rounded;
    a.size = size;
    a.site = site;
    if (mprotect(a.data_begin, data_pages, PROT_READ | PROT_WRITE) != 0) {
        munmap(map, map_size);
        return record_error(cudaErrorMemoryAllocation);
    }
    asan_forget(a.data_begin, data_pages);
    memset(a.data_begin, kPoison, (size_t)(a.ptr - a.data_begin)); /* front slack */
    poison_range(a.ptr, rounded);                                   /* the allocation and the back slack */
    if (!g_device_work) protect(a, false);
    g_allocations.emplace((uintptr_t)a.map_base, a);
    g_used += rounded;
    *dev_ptr = a.ptr;
    return cudaSuccess;
}

extern "C" cudaError_t cudaFree(void *dev_ptr)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (dev_ptr == nullptr) return cudaSuccess;
    /* The real cudaFree synchronises the device: pending work may still use the memory. */
    if (cudaError_t err = synchronize_device("cudaFree")) return record_error(err);
    std::lock_guard<std::mutex> lock(g_mutex);
    const Allocation *a = mapping_containing(dev_ptr);
    if (a == nullptr || a->ptr != dev_ptr) {
        if (a)
            report("cudaFree(%p): not the start of %s (offset %ld)", dev_ptr, describe(*a).c_str(),
                   (long)((char *)dev_ptr - a->ptr));
        else
            report("cudaFree(%p): not a device allocation (already freed, or host memory), called by %s", dev_ptr,
                   describe_code_address(__builtin_return_address(0)).c_str());
        return record_error(cudaErrorInvalidValue);
    }
    protect(*a, true);
    check_slack(*a, "by cudaFree");
    g_used -= (a->size + kAlign - 1) / kAlign * kAlign;
    munmap(a->map_base, a->map_size);
    g_allocations.erase((uintptr_t)a->map_base);
    return cudaSuccess;
}

extern "C" cudaError_t cudaMallocHost(void **ptr, size_t size)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (ptr == nullptr) return record_error(cudaErrorInvalidValue);
    *ptr = nullptr;
    if (size == 0) return cudaSuccess;
    void *p = nullptr;
    if (posix_memalign(&p, 4096, size) != 0) return record_error(cudaErrorMemoryAllocation);
    memset(p, kPoison, size); /* pinned memory is uninitialised too */
    std::lock_guard<std::mutex> lock(g_mutex);
    g_pinned.emplace((uintptr_t)p, size);
    *ptr = p;
    return cudaSuccess;
}

extern "C" cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned int flags)
{
    (void)flags;
    return cudaMallocHost(ptr, size);
}

extern "C" cudaError_t cudaFreeHost(void *ptr)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (ptr == nullptr) return cudaSuccess;
    /* Pending copies may still read or write it. */
    if (cudaError_t err = synchronize_device("cudaFreeHost")) return record_error(err);
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_pinned.find((uintptr_t)ptr);
    if (it == g_pinned.end()) {
        report("cudaFreeHost(%p): not a pinned host allocation (already freed, or not from cudaMallocHost), "
               "called by %s",
               ptr, describe_code_address(__builtin_return_address(0)).c_str());
        return record_error(cudaErrorInvalidValue);
    }
    g_pinned.erase(it);
    free(ptr);
    return cudaSuccess;
}

extern "C" cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (free_bytes == nullptr || total_bytes == nullptr) return record_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mutex);
    size_t capacity = capacity_locked();
    *total_bytes = capacity;
    *free_bytes = capacity - std::min(capacity, g_used);
    return cudaSuccess;
}
