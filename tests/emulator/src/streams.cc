/* Streams and events with deferred execution. Device work is only queued when the host
 * enqueues it; it runs when the host synchronises (the sync points are listed in
 * README.md), under one process-wide device lock, in stream order. Ordering between
 * streams follows the legacy default stream's rules: work on stream 0 waits for all
 * earlier work on blocking streams and work on a blocking stream waits for earlier work
 * on stream 0; cudaStreamNonBlocking streams do not synchronise with stream 0. Each queued
 * operation carries the (stream, sequence number) pairs it must wait for, so running one
 * stream up to a point runs exactly what that point depends on. */
#include <atomic>
#include <chrono>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "internal.h"

struct CUstream_st {
    unsigned id;
    unsigned flags;
    struct Operation {
        uint64_t seq;
        std::vector<std::pair<unsigned, uint64_t>> after; /* (stream id, seq) to run first */
        std::function<void()> work;
    };
    std::deque<Operation> queue;
    uint64_t last_seq = 0; /* of the last operation enqueued */
};

struct CUevent_st {
    unsigned flags;
    bool recorded = false;
    unsigned stream_id = 0;
    uint64_t seq = 0;      /* the record operation on that stream */
    std::atomic<bool> completed{false}; /* set by the record operation under the device lock */
    double time_ms = 0;
    /* Record operations queued and not yet run (under g_queue_mutex): a destroyed event
     * lives until the last one has run, as the real runtime lets it. */
    int pending_records = 0;
    bool destroyed = false;
};

namespace gpurnn_emu {
namespace detail {
namespace {

std::mutex g_queue_mutex;  /* streams, their queues, events */
std::mutex g_device_mutex; /* held by the one OS thread running device work */
CUstream_st g_legacy_stream{0, cudaStreamDefault, {}, 0};
std::map<unsigned, CUstream_st *> g_streams = {{0u, &g_legacy_stream}};
std::set<const CUevent_st *> g_events;
unsigned g_next_stream_id = 1;
uint64_t g_next_seq = 1;

CUstream_st *resolve_locked(cudaStream_t stream)
{
    if (stream == nullptr || stream == cudaStreamLegacy) return &g_legacy_stream;
    for (auto &entry : g_streams)
        if (entry.second == stream) return stream;
    return nullptr;
}

CUstream_st *stream_by_id_locked(unsigned id)
{
    auto it = g_streams.find(id);
    return it == g_streams.end() ? nullptr : it->second;
}

double now_ms()
{
    using namespace std::chrono;
    return duration<double, std::milli>(steady_clock::now().time_since_epoch()).count();
}

/* Runs the operations of s with seq <= upto, each after what it waits for. The caller
 * holds the device lock (so nobody else drains) and device memory is accessible. */
void drain(CUstream_st *s, uint64_t upto)
{
    for (;;) {
        CUstream_st::Operation op;
        {
            std::lock_guard<std::mutex> lock(g_queue_mutex);
            if (s->queue.empty() || s->queue.front().seq > upto) return;
            op = std::move(s->queue.front());
            s->queue.pop_front();
        }
        for (auto &dep : op.after) {
            CUstream_st *other;
            {
                std::lock_guard<std::mutex> lock(g_queue_mutex);
                other = stream_by_id_locked(dep.first);
            }
            if (other) drain(other, dep.second);
        }
        /* After a fault the context is gone: queued work is dropped, as on a GPU. */
        if (sticky_error() == cudaSuccess) op.work();
    }
}

/* Runs fn under the device lock with device memory accessible. */
template <typename F>
cudaError_t with_device(const char *sync_point, F fn)
{
    std::lock_guard<std::mutex> device(g_device_mutex);
    install_fault_handler(); /* this thread's alternate signal stack */
    begin_device_work();
    g_current_work = "device work";
    fn();
    g_current_work = nullptr;
    end_device_work(sync_point);
    return sticky_error();
}

} // namespace

bool valid_stream(cudaStream_t stream)
{
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    return resolve_locked(stream) != nullptr;
}

cudaError_t enqueue(cudaStream_t stream, std::function<void()> work, const WaitFor *also_after, Enqueued *where)
{
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    CUstream_st *s = resolve_locked(stream);
    if (s == nullptr) {
        report("device work enqueued on %p, which is not a live stream (destroyed, or never created)", (void *)stream);
        return cudaErrorInvalidResourceHandle;
    }
    CUstream_st::Operation op;
    op.seq = g_next_seq++;
    if (s == &g_legacy_stream) {
        for (auto &entry : g_streams)
            if (entry.second != s && !(entry.second->flags & cudaStreamNonBlocking) && entry.second->last_seq)
                op.after.emplace_back(entry.first, entry.second->last_seq);
    } else if (!(s->flags & cudaStreamNonBlocking) && g_legacy_stream.last_seq) {
        op.after.emplace_back(0u, g_legacy_stream.last_seq);
    }
    if (also_after) op.after.emplace_back(also_after->stream_id, also_after->seq);
    op.work = std::move(work);
    if (where) *where = Enqueued{s->id, op.seq};
    s->last_seq = op.seq;
    s->queue.push_back(std::move(op));
    return cudaSuccess;
}

cudaError_t synchronize_stream(cudaStream_t stream, const char *sync_point)
{
    CUstream_st *s;
    uint64_t upto;
    {
        std::lock_guard<std::mutex> lock(g_queue_mutex);
        s = resolve_locked(stream);
        if (s == nullptr) return cudaErrorInvalidResourceHandle;
        upto = s->last_seq;
    }
    return with_device(sync_point, [&] { drain(s, upto); });
}

cudaError_t synchronize_device(const char *sync_point)
{
    return with_device(sync_point, [&] {
        std::vector<std::pair<CUstream_st *, uint64_t>> all;
        {
            std::lock_guard<std::mutex> lock(g_queue_mutex);
            for (auto &entry : g_streams) all.emplace_back(entry.second, entry.second->last_seq);
        }
        for (auto &entry : all) drain(entry.first, entry.second);
    });
}

/* Drops all queued work (cudaDeviceReset). */
void discard_all_work()
{
    std::lock_guard<std::mutex> device(g_device_mutex);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    for (auto &entry : g_streams) entry.second->queue.clear();
}

} // namespace detail
} // namespace gpurnn_emu

using namespace gpurnn_emu::detail;

extern "C" cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned int flags)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (stream == nullptr || (flags & ~(unsigned)cudaStreamNonBlocking)) return record_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    CUstream_st *s = new CUstream_st{g_next_stream_id++, flags, {}, 0};
    g_streams.emplace(s->id, s);
    *stream = s;
    return cudaSuccess;
}

extern "C" cudaError_t cudaStreamCreate(cudaStream_t *stream) { return cudaStreamCreateWithFlags(stream, 0); }

extern "C" cudaError_t cudaStreamDestroy(cudaStream_t stream)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (stream == nullptr || stream == cudaStreamLegacy || !valid_stream(stream)) {
        report("cudaStreamDestroy(%p): not a stream this process created, or destroyed already", (void *)stream);
        return record_error(cudaErrorInvalidResourceHandle);
    }
    /* The real call returns at once and the work still completes: run it now. */
    cudaError_t err = synchronize_stream(stream, "cudaStreamDestroy");
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    g_streams.erase(stream->id);
    delete stream;
    return err == cudaSuccess ? cudaSuccess : record_error(err);
}

extern "C" cudaError_t cudaStreamSynchronize(cudaStream_t stream)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_stream(stream)) return record_error(cudaErrorInvalidResourceHandle);
    return record_error(synchronize_stream(stream, "cudaStreamSynchronize"));
}

extern "C" cudaError_t cudaStreamQuery(cudaStream_t stream)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    CUstream_st *s = resolve_locked(stream);
    if (s == nullptr) return record_error(cudaErrorInvalidResourceHandle);
    /* Work never runs by itself here: a host that polls must synchronise eventually. */
    return s->queue.empty() ? cudaSuccess : cudaErrorNotReady;
}

extern "C" cudaError_t cudaDeviceSynchronize(void)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    return record_error(synchronize_device("cudaDeviceSynchronize"));
}

extern "C" cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned int flags)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (event == nullptr || (flags & ~3u)) return record_error(cudaErrorInvalidValue);
    CUevent_st *e = new CUevent_st;
    e->flags = flags;
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    g_events.insert(e);
    *event = e;
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventCreate(cudaEvent_t *event) { return cudaEventCreateWithFlags(event, 0); }

static bool valid_event(cudaEvent_t event)
{
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    return g_events.count(event) != 0;
}

extern "C" cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_event(event)) return record_error(cudaErrorInvalidResourceHandle);
    CUevent_st *e = event;
    e->completed = false;
    {
        std::lock_guard<std::mutex> lock(g_queue_mutex);
        e->pending_records++;
    }
    Enqueued where;
    cudaError_t err = enqueue(
        stream,
        [e] {
            e->time_ms = now_ms();
            e->completed = true;
            std::lock_guard<std::mutex> lock(g_queue_mutex);
            if (--e->pending_records == 0 && e->destroyed) delete e;
        },
        nullptr, &where);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    if (err != cudaSuccess) {
        e->pending_records--;
        return record_error(err);
    }
    e->recorded = true;
    e->stream_id = where.stream_id;
    e->seq = where.seq;
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventSynchronize(cudaEvent_t event)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_event(event)) return record_error(cudaErrorInvalidResourceHandle);
    CUstream_st *s;
    uint64_t seq;
    {
        std::lock_guard<std::mutex> lock(g_queue_mutex);
        if (!event->recorded) return cudaSuccess;
        s = stream_by_id_locked(event->stream_id);
        seq = event->seq;
    }
    if (s == nullptr) return cudaSuccess; /* its stream was destroyed, so its work has run */
    return record_error(with_device("cudaEventSynchronize", [&] { drain(s, seq); }));
}

extern "C" cudaError_t cudaEventQuery(cudaEvent_t event)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (!valid_event(event)) return record_error(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    return !event->recorded || event->completed ? cudaSuccess : cudaErrorNotReady;
}

extern "C" cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (ms == nullptr) return record_error(cudaErrorInvalidValue);
    if (!valid_event(start) || !valid_event(end)) return record_error(cudaErrorInvalidResourceHandle);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    if ((start->flags | end->flags) & cudaEventDisableTiming) return record_error(cudaErrorInvalidResourceHandle);
    if (!start->recorded || !end->recorded) return record_error(cudaErrorInvalidResourceHandle);
    if (!start->completed || !end->completed) return record_error(cudaErrorNotReady);
    *ms = (float)(end->time_ms - start->time_ms);
    return cudaSuccess;
}

extern "C" cudaError_t cudaEventDestroy(cudaEvent_t event)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    std::lock_guard<std::mutex> lock(g_queue_mutex);
    if (g_events.erase(event) == 0) return record_error(cudaErrorInvalidResourceHandle);
    if (event->pending_records == 0)
        delete event;
    else
        event->destroyed = true; /* the last queued record deletes it */
    return cudaSuccess;
}

extern "C" cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int flags)
{
    if (cudaError_t sticky = runtime_entry()) return record_error(sticky);
    if (flags != 0) return record_error(cudaErrorInvalidValue);
    if (!valid_event(event)) return record_error(cudaErrorInvalidResourceHandle);
    WaitFor wait;
    {
        std::lock_guard<std::mutex> lock(g_queue_mutex);
        if (!event->recorded) return cudaSuccess; /* waits for nothing, as documented */
        wait = WaitFor{event->stream_id, event->seq};
    }
    return record_error(enqueue(stream, [] {}, &wait));
}
