/* The block scheduler: a grid runs block after block on the OS thread that holds the
 * device lock; a block's threads are fibers (Boost.Context's fcontext) from a per-OS-
 * thread pool of stacks reused across blocks and launches. A thread is started when the
 * scheduler first reaches it; one that finishes without blocking hands its fiber to the
 * next, so a kernel without barriers costs two context switches per thread.
 *
 * __syncthreads is a real barrier: it releases when every thread of the block waits at
 * the same call site; threads that exited, or wait at another site, are diagnosed at
 * once. Warp operations are rendezvous over the lanes of their mask, with the real
 * semantics of each shuffle and vote; the last lane to arrive computes every lane's
 * result and goes on without switching. Between barriers the threads run in the order of
 * the schedule (GPURNN_EMU_SCHEDULE), drawn afresh after every barrier. */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <boost/context/detail/fcontext.hpp>
#include <memory>
#include <random>
#include <string>
#include <vector>


#include "gpurnn_emu/device.h"
#include "internal.h"

#ifdef GPURNN_EMU_ASAN
/* ASan's fiber annotations (declared here: GCC 12's sanitizer headers do not have them). */
extern "C" void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
extern "C" void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old, size_t *size_old);
#endif

namespace ctx = boost::context::detail;

/* The static __shared__ variables of the whole program (linker-provided bounds). */
extern "C" char __start_gpurnn_emu_shared[] __attribute__((weak));
extern "C" char __stop_gpurnn_emu_shared[] __attribute__((weak));
/* Keeps the section present (and the bounds defined) in every module with the emulator. */
__shared__ char gpurnn_emu_shared_anchor;

namespace gpurnn_emu {
namespace detail {

uint3 g_thread_idx;
uint3 g_block_idx;
dim3 g_block_dim;
dim3 g_grid_dim;
const char *g_current_work = nullptr;

namespace {

#ifdef GPURNN_EMU_ASAN
constexpr size_t kStackBytes = 512 * 1024; /* ASan's redzones make frames much larger */
#else
constexpr size_t kStackBytes = 64 * 1024;
#endif
constexpr int kOrdersPerShape = 8; /* precomputed shuffled orders per block size */

struct Fiber {
    ctx::fcontext_t context;
    char *mapping;   /* guard page + stack */
    size_t mapping_size;
};

enum class State : uint8_t { kNotStarted, kReady, kRunning, kAtBarrier, kAtWarpOp, kDone };

struct EmuThread {
    uint3 idx;
    unsigned linear;
    State state;
    Fiber *fiber;
    /* Where it waits (barrier or warp operation). */
    const char *file;
    int line;
    WarpOp op;
    unsigned mask;
    int param;
    int width;
    uint64_t value;
    uint64_t result;
};

struct BlockState {
    unsigned nthreads = 0;
    EmuThread threads[1024];
    const unsigned *order = nullptr;
    unsigned done = 0;
    unsigned at_barrier = 0;
    const char *barrier_file = nullptr;
    int barrier_line = 0;
    unsigned warp_waiting[32] = {}; /* lanes waiting at a warp operation, per warp */
    unsigned warp_exited[32] = {};  /* lanes that have exited, per warp */
    unsigned warp_at_barrier[32] = {}; /* lanes waiting at __syncthreads, per warp */
    bool new_phase = false;
    bool trapped = false;
};

/* One OS thread runs device work at a time (the device lock): plain globals suffice. */
BlockState g_block;
EmuThread *g_current = nullptr;
const KernelBody *g_kernel = nullptr;
std::string g_kernel_name_cache; /* filled on first need */
struct {
    ctx::fcontext_t context;
    const void *stack_bottom;
    size_t stack_size;
} g_scheduler;

Schedule g_schedule = Schedule::kShuffle;
unsigned long long g_seed = 1;
unsigned long long g_launches = 0;

void *const kThreadFinished = (void *)1;
void *const kThreadTrapped = (void *)2;

/* Fibers whose thread finished; per OS thread, so a fiber never migrates between OS
 * threads (thread-local storage and ASan's bookkeeping stay right). */
struct FiberPool {
    std::vector<Fiber *> free;
    ~FiberPool()
    {
        for (Fiber *f : free) {
            asan_forget(f->mapping + getpagesize(), kStackBytes);
            munmap(f->mapping, f->mapping_size);
            delete f;
        }
    }
};
thread_local FiberPool t_pool;

const char *op_name(WarpOp op)
{
    switch (op) {
    case kWarpShfl: return "__shfl_sync";
    case kWarpShflUp: return "__shfl_up_sync";
    case kWarpShflDown: return "__shfl_down_sync";
    case kWarpShflXor: return "__shfl_xor_sync";
    case kWarpSync: return "__syncwarp";
    case kWarpBallot: return "__ballot_sync";
    case kWarpAny: return "__any_sync";
    case kWarpAll: return "__all_sync";
    }
    return "?";
}

const std::string &kernel_display_name()
{
    if (g_kernel_name_cache.empty() && g_kernel) g_kernel_name_cache = kernel_name(*g_kernel);
    return g_kernel_name_cache;
}

std::string thread_name(const EmuThread &t)
{
    char buf[96];
    snprintf(buf, sizeof buf, "thread (%u,%u,%u)", t.idx.x, t.idx.y, t.idx.z);
    return buf;
}

std::string where(const EmuThread &t)
{
    char buf[160];
    snprintf(buf, sizeof buf, "block (%u,%u,%u), ", g_block_idx.x, g_block_idx.y, g_block_idx.z);
    return "kernel " + kernel_display_name() + ", " + buf + thread_name(t);
}

/* ---- context switches ---- */

ctx::transfer_t switch_to_fiber(Fiber *f, void *data)
{
#ifdef GPURNN_EMU_ASAN
    void *fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f->mapping + getpagesize(), kStackBytes);
#endif
    ctx::transfer_t t = ctx::jump_fcontext(f->context, data);
#ifdef GPURNN_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
    f->context = t.fctx;
    return t;
}

ctx::transfer_t switch_to_scheduler(void *data)
{
#ifdef GPURNN_EMU_ASAN
    void *fake_stack = nullptr;
    __sanitizer_start_switch_fiber(data == kThreadTrapped ? nullptr : &fake_stack, g_scheduler.stack_bottom,
                                   g_scheduler.stack_size);
#endif
    ctx::transfer_t t = ctx::jump_fcontext(g_scheduler.context, data);
#ifdef GPURNN_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, &g_scheduler.stack_bottom, &g_scheduler.stack_size);
#endif
    g_scheduler.context = t.fctx;
    return t;
}

void check_exit(EmuThread &t);

void fiber_main(ctx::transfer_t t)
{
#ifdef GPURNN_EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &g_scheduler.stack_bottom, &g_scheduler.stack_size);
#endif
    g_scheduler.context = t.fctx;
    EmuThread *thread = static_cast<EmuThread *>(t.data);
    for (;;) {
        (void)thread;
        g_kernel->run_thread(g_kernel->closure);
        check_exit(*g_current);
        g_current->state = State::kDone;
        g_block.warp_exited[g_current->linear >> 5] |= 1u << (g_current->linear & 31);
        g_block.done++;
        thread = static_cast<EmuThread *>(switch_to_scheduler(kThreadFinished).data);
    }
}

Fiber *take_fiber()
{
    if (!t_pool.free.empty()) {
        Fiber *f = t_pool.free.back();
        t_pool.free.pop_back();
        return f;
    }
    size_t page = (size_t)getpagesize();
    size_t size = kStackBytes + page;
    void *mapping = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mapping == MAP_FAILED) fatal("cannot map a %zu-byte fiber stack for an emulated thread", size);
    mprotect(mapping, page, PROT_NONE); /* stack overflow faults instead of corrupting */
    asan_forget((char *)mapping + page, kStackBytes);
    Fiber *f = new Fiber;
    f->mapping = (char *)mapping;
    f->mapping_size = size;
    f->context = ctx::make_fcontext(f->mapping + size, kStackBytes, fiber_main);
    return f;
}

void discard_fiber(Fiber *f)
{
    asan_forget(f->mapping + getpagesize(), kStackBytes);
    munmap(f->mapping, f->mapping_size);
    delete f;
}

/* ---- schedules ---- */

struct Orders {
    unsigned nthreads = 0;
    std::vector<unsigned> forward, reverse;
    std::vector<std::vector<unsigned>> shuffled;
};
Orders g_orders;
std::mt19937_64 g_rng;

void prepare_orders(unsigned n)
{
    if (g_orders.nthreads == n) return;
    g_orders.nthreads = n;
    g_orders.forward.resize(n);
    g_orders.reverse.resize(n);
    for (unsigned i = 0; i < n; i++) {
        g_orders.forward[i] = i;
        g_orders.reverse[i] = n - 1 - i;
    }
    std::mt19937_64 rng(g_seed * 0x9e3779b97f4a7c15ULL + n);
    g_orders.shuffled.assign(kOrdersPerShape, g_orders.forward);
    for (auto &order : g_orders.shuffled)
        for (unsigned i = n; i > 1; i--) std::swap(order[i - 1], order[rng() % i]);
}

const unsigned *next_order()
{
    switch (g_schedule) {
    case Schedule::kForward: return g_orders.forward.data();
    case Schedule::kReverse: return g_orders.reverse.data();
    case Schedule::kShuffle: break;
    }
    return g_orders.shuffled[g_rng() % kOrdersPerShape].data();
}

/* ---- rules checked when a thread arrives somewhere ---- */

/* Lanes of t's warp that wait at a warp operation whose mask names t. */
unsigned lanes_waiting_for(const EmuThread &t)
{
    if (g_block.warp_waiting[t.linear >> 5] == 0) return 0;
    unsigned base = t.linear & ~31u, lane = t.linear & 31u, waiting = g_block.warp_waiting[t.linear >> 5], found = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((waiting >> l & 1) && (g_block.threads[base + l].mask >> lane & 1)) found |= 1u << l;
    return found;
}

void check_not_awaited(const EmuThread &t, const char *doing)
{
    unsigned waiting = lanes_waiting_for(t);
    if (waiting == 0) return;
    unsigned l = (unsigned)__builtin_ctz(waiting);
    const EmuThread &o = g_block.threads[(t.linear & ~31u) + l];
    fatal("%s %s while lane %u (%s) waits for it at %s at %s:%d (mask 0x%08x): warp operation deadlock",
          where(t).c_str(), doing, l, thread_name(o).c_str(), op_name(o.op), o.file, o.line, o.mask);
}

void check_exit(EmuThread &t)
{
    if (g_block.at_barrier > 0)
        fatal("%s exited while %u other threads of the block wait at __syncthreads at %s:%d: the barrier can never "
              "complete",
              where(t).c_str(), g_block.at_barrier, g_block.barrier_file, g_block.barrier_line);
    check_not_awaited(t, "exited");
}

void compute_warp_results(unsigned base, unsigned mask)
{
    EmuThread *lanes = &g_block.threads[base];
    uint64_t votes = 0;
    for (unsigned l = 0; l < 32; l++)
        if ((mask >> l & 1) && lanes[l].value) votes |= 1ull << l;
    for (unsigned l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        EmuThread &t = lanes[l];
        unsigned w = (unsigned)t.width, segment = l & ~(w - 1), src = l;
        switch (t.op) {
        case kWarpShfl: src = segment + ((unsigned)t.param & (w - 1)); break;
        case kWarpShflUp: src = (l - segment) >= (unsigned)t.param ? l - (unsigned)t.param : l; break;
        case kWarpShflDown: src = (l - segment) + (unsigned)t.param < w ? l + (unsigned)t.param : l; break;
        case kWarpShflXor: src = l ^ (unsigned)t.param; if (src >= segment + w) src = l; break;
        case kWarpBallot: t.result = votes; continue;
        case kWarpAny: t.result = votes != 0; continue;
        case kWarpAll: t.result = votes == (uint64_t)mask; continue;
        case kWarpSync: t.result = 0; continue;
        }
        if (src >= 32 || !(mask >> src & 1))
            fatal("%s: %s at %s:%d (mask 0x%08x) reads lane %u, which is not in the mask (inactive): its value is "
                  "undefined",
                  where(t).c_str(), op_name(t.op), t.file, t.line, mask, src);
        t.result = lanes[src].value;
    }
}

/* ---- running a block ---- */

void resume(EmuThread &t)
{
    if (t.state == State::kNotStarted) t.fiber = take_fiber();
    t.state = State::kRunning;
    g_current = &t;
    g_thread_idx = t.idx;
    void *why = switch_to_fiber(t.fiber, &t).data;
    g_current = nullptr;
    if (why == kThreadFinished) {
        t_pool.free.push_back(t.fiber);
        t.fiber = nullptr;
    }
}

void abandon_block()
{
    /* After __trap: the block's suspended fibers are mid-kernel and are never resumed. */
    for (unsigned i = 0; i < g_block.nthreads; i++) {
        EmuThread &t = g_block.threads[i];
        if (t.fiber) discard_fiber(t.fiber);
        t.fiber = nullptr;
    }
}

[[noreturn]] void deadlock()
{
    for (unsigned i = 0; i < g_block.nthreads; i++) {
        const EmuThread &t = g_block.threads[i];
        if (t.state == State::kAtWarpOp)
            fatal("%s waits forever at %s at %s:%d (mask 0x%08x): lanes 0x%08x never arrived", where(t).c_str(),
                  op_name(t.op), t.file, t.line, t.mask, t.mask & ~g_block.warp_waiting[t.linear >> 5]);
        if (t.state == State::kAtBarrier)
            fatal("%s waits forever at __syncthreads at %s:%d (%u of %u threads arrived)", where(t).c_str(), t.file,
                  t.line, g_block.at_barrier, g_block.nthreads);
    }
    fatal("kernel %s, block (%u,%u,%u): no thread can make progress", kernel_display_name().c_str(), g_block_idx.x,
          g_block_idx.y, g_block_idx.z);
}

/* Returns false when a thread trapped. */
bool run_block(dim3 block)
{
    uintptr_t shared_begin = (uintptr_t)__start_gpurnn_emu_shared, shared_end = (uintptr_t)__stop_gpurnn_emu_shared;
    if (shared_end > shared_begin) memset(__start_gpurnn_emu_shared, 0xFF, shared_end - shared_begin);
    BlockState &b = g_block;
    b.done = 0;
    b.at_barrier = 0;
    b.new_phase = false;
    b.trapped = false;
    memset(b.warp_waiting, 0, sizeof b.warp_waiting);
    memset(b.warp_exited, 0, sizeof b.warp_exited);
    memset(b.warp_at_barrier, 0, sizeof b.warp_at_barrier);
    unsigned n = b.nthreads;
    for (unsigned i = 0; i < n; i++) {
        EmuThread &t = b.threads[i];
        t.idx = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        t.linear = i;
        t.state = State::kNotStarted;
        t.fiber = nullptr;
    }
    b.order = next_order();
    while (b.done < n) {
        bool progressed = false;
        for (unsigned k = 0; k < n; k++) {
            EmuThread &t = b.threads[b.order[k]];
            if (t.state != State::kNotStarted && t.state != State::kReady) continue;
            resume(t);
            progressed = true;
            if (b.trapped) {
                abandon_block();
                return false;
            }
            if (b.new_phase) { /* a barrier released: the next phase, in a fresh order */
                b.new_phase = false;
                b.order = next_order();
                k = (unsigned)-1;
            }
        }
        if (!progressed) deadlock();
    }
    return true;
}

} // namespace

void syncthreads_at(const char *file, int line)
{
    EmuThread *t = g_current;
    if (t == nullptr) fatal("__syncthreads() at %s:%d called outside a kernel", file, line);
    BlockState &b = g_block;
    if (b.done > 0) {
        for (unsigned i = 0; i < b.nthreads; i++)
            if (b.threads[i].state == State::kDone)
                fatal("%s reached __syncthreads at %s:%d, but %u threads of the block have exited (first: %s): the "
                      "barrier can never complete",
                      where(*t).c_str(), file, line, b.done, thread_name(b.threads[i]).c_str());
    }
    if (b.at_barrier > 0 && (b.barrier_line != line || (b.barrier_file != file && strcmp(b.barrier_file, file) != 0)))
        fatal("%s reached __syncthreads at %s:%d while %u threads of the block wait at __syncthreads at %s:%d: "
              "divergent barriers",
              where(*t).c_str(), file, line, b.at_barrier, b.barrier_file, b.barrier_line);
    check_not_awaited(*t, "reached __syncthreads");
    b.barrier_file = file;
    b.barrier_line = line;
    t->file = file;
    t->line = line;
    t->state = State::kAtBarrier;
    b.warp_at_barrier[t->linear >> 5] |= 1u << (t->linear & 31);
    if (++b.at_barrier == b.nthreads) {
        for (unsigned i = 0; i < b.nthreads; i++) b.threads[i].state = State::kReady;
        memset(b.warp_at_barrier, 0, sizeof b.warp_at_barrier);
        b.at_barrier = 0;
        b.new_phase = true;
    }
    switch_to_scheduler(nullptr);
}

uint64_t warp_op(WarpOp op, const char *file, int line, unsigned mask, uint64_t value, int param, int width)
{
    EmuThread *t = g_current;
    if (t == nullptr) fatal("%s at %s:%d called outside a kernel", op_name(op), file, line);
    BlockState &b = g_block;
    unsigned lane = t->linear & 31u, warp = t->linear >> 5, base = warp * 32;
    unsigned lanes = b.nthreads - base < 32 ? b.nthreads - base : 32;
    unsigned existing = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1;
    if (!(mask >> lane & 1))
        fatal("%s: %s at %s:%d with mask 0x%08x, which does not include the calling lane %u", where(*t).c_str(),
              op_name(op), file, line, mask, lane);
    if (mask & ~existing)
        fatal("%s: %s at %s:%d with mask 0x%08x names lanes 0x%08x that do not exist (the block has %u threads, so "
              "warp %u has %u lanes)",
              where(*t).c_str(), op_name(op), file, line, mask, mask & ~existing, b.nthreads, warp, lanes);
    if (op <= kWarpShflXor && (width < 1 || width > 32 || (width & (width - 1))))
        fatal("%s: %s at %s:%d with width %d: must be a power of 2 from 1 to 32", where(*t).c_str(), op_name(op), file,
              line, width);
    /* Every other lane of the mask must be on its way here, or here already. */
    if (unsigned gone = mask & b.warp_exited[warp]) {
        unsigned l = (unsigned)__builtin_ctz(gone);
        fatal("%s: %s at %s:%d with mask 0x%08x names lane %u (%s), which has exited", where(*t).c_str(), op_name(op),
              file, line, mask, l, thread_name(b.threads[base + l]).c_str());
    }
    if (unsigned elsewhere = mask & b.warp_at_barrier[warp]) {
        unsigned l = (unsigned)__builtin_ctz(elsewhere);
        const EmuThread &o = b.threads[base + l];
        fatal("%s: %s at %s:%d with mask 0x%08x names lane %u (%s), which waits at __syncthreads at %s:%d",
              where(*t).c_str(), op_name(op), file, line, mask, l, thread_name(o).c_str(), o.file, o.line);
    }
    /* Lanes already waiting that this call concerns must wait at the very same operation.
     * Those in the mask were checked against each other on arrival, so one stands for all;
     * lanes outside the mask are looked at one by one (rare: partial masks). */
    unsigned waiting = b.warp_waiting[warp];
    unsigned concerned = waiting & mask;
    unsigned others = waiting & ~mask;
    while (concerned || others) {
        unsigned l;
        if (concerned) {
            l = (unsigned)__builtin_ctz(concerned);
            concerned = 0;
        } else {
            l = (unsigned)__builtin_ctz(others);
            others &= others - 1;
            if (!(b.threads[base + l].mask >> lane & 1)) continue;
        }
        const EmuThread &o = b.threads[base + l];
        if (o.op != op || o.mask != mask || o.line != line || (o.file != file && strcmp(o.file, file) != 0))
            fatal("%s: %s at %s:%d (mask 0x%08x) while lane %u (%s) waits at %s at %s:%d (mask 0x%08x): divergent warp "
                  "operations",
                  where(*t).c_str(), op_name(op), file, line, mask, l, thread_name(o).c_str(), op_name(o.op), o.file,
                  o.line, o.mask);
    }
    t->op = op;
    t->file = file;
    t->line = line;
    t->mask = mask;
    t->value = value;
    t->param = param;
    t->width = width;
    waiting |= 1u << lane;
    if ((waiting & mask) == mask) {
        compute_warp_results(base, mask);
        b.warp_waiting[warp] = waiting & ~mask;
        for (unsigned l = 0; l < 32; l++)
            if ((mask >> l & 1) && l != lane) b.threads[base + l].state = State::kReady;
        return t->result;
    }
    b.warp_waiting[warp] = waiting;
    t->state = State::kAtWarpOp;
    switch_to_scheduler(nullptr);
    return t->result;
}

void trap_at(const char *file, int line)
{
    EmuThread *t = g_current;
    if (t == nullptr) fatal("__trap() at %s:%d called outside a kernel", file, line);
    note("__trap() at %s:%d in %s: the launch fails and the context is unusable (cudaErrorLaunchFailure from now on)",
         file, line, where(*t).c_str());
    g_block.trapped = true;
    switch_to_scheduler(kThreadTrapped);
    __builtin_unreachable();
}

std::string current_thread_description()
{
    if (g_current) return where(*g_current);
    if (g_kernel) return "kernel " + kernel_display_name();
    return std::string();
}

void run_grid(const KernelBody &body, dim3 grid, dim3 block)
{
    g_kernel = &body;
    g_kernel_name_cache.clear();
    g_current_work = "a kernel";
    g_grid_dim = grid;
    g_block_dim = block;
    g_block.nthreads = block.x * block.y * block.z;
    prepare_orders(g_block.nthreads);
    g_rng.seed(g_seed ^ (0x9e3779b97f4a7c15ULL * ++g_launches));
    unsigned long long nblocks = (unsigned long long)grid.x * grid.y * grid.z;
    /* Block order: ascending, descending, or an affine permutation i -> (a i + c) mod n. */
    unsigned long long stride = 1, offset = 0;
    if (g_schedule == Schedule::kShuffle && nblocks > 1) {
        do {
            stride = g_rng() % nblocks | 1;
        } while (std::__gcd(stride, nblocks) != 1);
        offset = g_rng() % nblocks;
    }
    for (unsigned long long i = 0; i < nblocks; i++) {
        unsigned long long linear = g_schedule == Schedule::kReverse ? nblocks - 1 - i
                                    : g_schedule == Schedule::kShuffle ? (stride * i + offset) % nblocks
                                                                       : i;
        g_block_idx = uint3{(unsigned)(linear % grid.x), (unsigned)(linear / grid.x % grid.y),
                            (unsigned)(linear / ((unsigned long long)grid.x * grid.y))};
        if (!run_block(block)) {
            set_sticky_error(cudaErrorLaunchFailure);
            break;
        }
    }
    g_kernel = nullptr;
    g_current_work = "device work";
}

void set_schedule_from_environment()
{
    if (const char *s = getenv("GPURNN_EMU_SCHEDULE")) {
        if (strcmp(s, "forward") == 0) g_schedule = Schedule::kForward;
        else if (strcmp(s, "reverse") == 0) g_schedule = Schedule::kReverse;
        else if (strcmp(s, "shuffle") == 0) g_schedule = Schedule::kShuffle;
        else note("GPURNN_EMU_SCHEDULE=%s: expected forward, reverse or shuffle; using shuffle", s);
    }
    if (const char *s = getenv("GPURNN_EMU_SEED")) g_seed = strtoull(s, nullptr, 0);
    g_orders.nthreads = 0;
}

} // namespace detail

void set_schedule(Schedule schedule, unsigned long long seed)
{
    detail::runtime_entry(); /* reads the environment first, so this wins */
    detail::g_schedule = schedule;
    detail::g_seed = seed;
    detail::g_orders.nthreads = 0;
}

Schedule schedule() { return detail::g_schedule; }

} // namespace gpurnn_emu
