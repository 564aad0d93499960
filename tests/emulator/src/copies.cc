/* cudaMemcpy / cudaMemset and their Async forms. The direction is checked against the
 * pointers (the real runtime's cudaErrorInvalidValue, plus a diagnostic line), device
 * ranges must lie inside one allocation (a fatal diagnostic otherwise), and the copy is
 * queued on the stream. Host memory is touched when the real runtime would touch it:
 * pageable sources are snapshotted at the call, pinned sources are read when the copy
 * runs, pinned destinations of a device-to-host copy are poisoned at the call (reading
 * them before synchronising is the host's bug), and a device-to-host copy into pageable
 * memory completes before the call returns. A pinned source that a queued copy has yet
 * to read is snapshotted before a later device-to-host copy into it is poisoned: in
 * stream order the earlier copy reads it first, so poisoning it then would report a bug
 * the program does not have. */
#include <string.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <vector>

#include "internal.h"

using namespace gpurnn_emu::detail;

namespace {

const char *kind_name(cudaMemcpyKind kind)
{
    switch (kind) {
    case cudaMemcpyHostToHost: return "cudaMemcpyHostToHost";
    case cudaMemcpyHostToDevice: return "cudaMemcpyHostToDevice";
    case cudaMemcpyDeviceToHost: return "cudaMemcpyDeviceToHost";
    case cudaMemcpyDeviceToDevice: return "cudaMemcpyDeviceToDevice";
    case cudaMemcpyDefault: return "cudaMemcpyDefault";
    }
    return "an invalid cudaMemcpyKind";
}

const char *memory_kind(bool device) { return device ? "device memory" : "host memory"; }

/* A queued host-to-device copy from pinned memory, which reads its source when it runs,
 * unless a later device-to-host copy into that source made it take a snapshot first. */
struct PinnedRead {
    const unsigned char *src;
    size_t count;
    std::vector<unsigned char> snapshot; /* empty until taken */
    bool snapshotted = false;
};
std::mutex g_pinned_reads_mutex;
std::vector<std::weak_ptr<PinnedRead>> g_pinned_reads; /* queued, not yet run */

std::shared_ptr<PinnedRead> queue_pinned_read(const void *src, size_t count)
{
    auto read = std::make_shared<PinnedRead>();
    read->src = static_cast<const unsigned char *>(src);
    read->count = count;
    std::lock_guard<std::mutex> lock(g_pinned_reads_mutex);
    g_pinned_reads.erase(std::remove_if(g_pinned_reads.begin(), g_pinned_reads.end(),
                                        [](const std::weak_ptr<PinnedRead> &w) { return w.expired(); }),
                         g_pinned_reads.end());
    g_pinned_reads.push_back(read);
    return read;
}

/* Before [dst, dst + count) is poisoned: queued reads of it keep what they would read. */
void snapshot_pinned_reads_of(const void *dst, size_t count)
{
    const unsigned char *lo = static_cast<const unsigned char *>(dst), *hi = lo + count;
    std::lock_guard<std::mutex> lock(g_pinned_reads_mutex);
    for (auto &weak : g_pinned_reads) {
        std::shared_ptr<PinnedRead> read = weak.lock();
        if (!read || read->snapshotted || read->src + read->count <= lo || hi <= read->src) continue;
        read->snapshot.assign(read->src, read->src + read->count);
        read->snapshotted = true;
    }
}

cudaError_t copy(void *dst, const void *src, size_t count, cudaMemcpyKind kind, cudaStream_t stream, bool synchronous,
                 const char *call)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_stream(stream)) {
        report("%s: stream %p is not a live stream", call, (void *)stream);
        return record_error(cudaErrorInvalidResourceHandle);
    }
    if ((unsigned)kind > (unsigned)cudaMemcpyDefault) {
        report("%s: kind %d is not a cudaMemcpyKind", call, (int)kind);
        return record_error(cudaErrorInvalidMemcpyDirection);
    }
    if (count == 0) return cudaSuccess;
    if (dst == nullptr || src == nullptr) {
        report("%s: null %s pointer for %zu bytes", call, dst == nullptr ? "destination" : "source", count);
        return record_error(cudaErrorInvalidValue);
    }
    bool dst_device = is_device_pointer(dst), src_device = is_device_pointer(src);
    cudaMemcpyKind actual = dst_device ? (src_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                       : (src_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
    if (kind != cudaMemcpyDefault && kind != actual) {
        report("%s(dst %p, src %p, %zu bytes, %s): the destination is %s and the source is %s", call, dst, src, count,
               kind_name(kind), memory_kind(dst_device), memory_kind(src_device));
        return record_error(cudaErrorInvalidValue);
    }
    char what[128];
    if (dst_device) {
        snprintf(what, sizeof what, "%s destination", call);
        check_device_range(dst, count, what);
    }
    if (src_device) {
        snprintf(what, sizeof what, "%s source", call);
        check_device_range(src, count, what);
    }
    std::function<void()> work;
    if (actual == cudaMemcpyHostToDevice && !is_pinned_host_pointer(src)) {
        /* Pageable source: the runtime stages it before returning. */
        auto snapshot = std::make_shared<std::vector<unsigned char>>((const unsigned char *)src,
                                                                     (const unsigned char *)src + count);
        work = [dst, snapshot] {
            g_current_work = "a host-to-device copy";
            memcpy(dst, snapshot->data(), snapshot->size());
            g_current_work = "device work";
        };
    } else if (actual == cudaMemcpyHostToDevice) {
        std::shared_ptr<PinnedRead> read = queue_pinned_read(src, count);
        work = [dst, read] {
            g_current_work = "a host-to-device copy";
            std::lock_guard<std::mutex> lock(g_pinned_reads_mutex);
            memcpy(dst, read->snapshotted ? read->snapshot.data() : read->src, read->count);
            read->count = 0; /* done: no later poisoning concerns it */
            g_current_work = "device work";
        };
    } else {
        if (actual == cudaMemcpyDeviceToHost) {
            if (is_pinned_host_pointer(dst)) {
                snapshot_pinned_reads_of(dst, count);
                poison_host(dst, count);
            } else {
                synchronous = true;
            }
        }
        work = [dst, src, count] {
            g_current_work = "a memory copy";
            memcpy(dst, src, count);
            g_current_work = "device work";
        };
    }
    if (cudaError_t err = enqueue(stream, std::move(work))) return record_error(err);
    return synchronous ? record_error(synchronize_stream(stream, call)) : cudaSuccess;
}

cudaError_t set(void *dev_ptr, int value, size_t count, cudaStream_t stream, bool synchronous, const char *call)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_stream(stream)) {
        report("%s: stream %p is not a live stream", call, (void *)stream);
        return record_error(cudaErrorInvalidResourceHandle);
    }
    if (count == 0) return cudaSuccess;
    char what[128];
    snprintf(what, sizeof what, "%s", call);
    if (check_device_range(dev_ptr, count, what) != RangeCheck::kDevice) {
        report("%s(%p, %d, %zu bytes): %p is not device memory", call, dev_ptr, value, count, dev_ptr);
        return record_error(cudaErrorInvalidValue);
    }
    cudaError_t err = enqueue(stream, [dev_ptr, value, count] {
        g_current_work = "a memset";
        memset(dev_ptr, value & 0xFF, count);
        g_current_work = "device work";
    });
    if (err != cudaSuccess) return record_error(err);
    return synchronous ? record_error(synchronize_stream(stream, call)) : cudaSuccess;
}

} // namespace

extern "C" cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, cudaMemcpyKind kind)
{
    return copy(dst, src, count, kind, nullptr, true, "cudaMemcpy");
}

extern "C" cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                                       cudaStream_t stream)
{
    return copy(dst, src, count, kind, stream, false, "cudaMemcpyAsync");
}

extern "C" cudaError_t cudaMemset(void *dev_ptr, int value, size_t count)
{
    return set(dev_ptr, value, count, nullptr, true, "cudaMemset");
}

extern "C" cudaError_t cudaMemsetAsync(void *dev_ptr, int value, size_t count, cudaStream_t stream)
{
    return set(dev_ptr, value, count, stream, false, "cudaMemsetAsync");
}
