/* The CPU backend's thread pool (src/cpu/cpu_pool.h): every item runs exactly once, the
 * items really are spread over several threads, nested calls run inline, BLAS is serial
 * inside items, and start-up, shutdown and many short jobs neither lose a wake-up nor hang
 * (a hang fails the test by its ctest timeout). Also run under ThreadSanitizer
 * (.ci/tsan.sh). */
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

extern "C" {
#include "cpu/cpu_pool.h"
}

namespace {

struct Pool {
    gpurnn_cpu_pool *p = gpurnn_cpu_pool_create();
    ~Pool() { gpurnn_cpu_pool_destroy(p); }
};

struct Counts {
    std::vector<std::atomic<int>> hits;
    explicit Counts(size_t n) : hits(n) {}
};

void count_item(void *arg, size_t item) { static_cast<Counts *>(arg)->hits[item]++; }

TEST(CpuPool, EveryItemRunsExactlyOnce)
{
    Pool pool;
    ASSERT_NE(pool.p, nullptr);
    for (int threads : {1, 2, 3, 8})
        for (size_t items : {0, 1, 2, 3, 7, 100, 1000}) {
            Counts counts(items);
            gpurnn_cpu_pool_for(pool.p, threads, items, count_item, &counts);
            for (size_t i = 0; i < items; i++)
                ASSERT_EQ(counts.hits[i].load(), 1) << "item " << i << " of " << items << ", " << threads << " threads";
        }
}

/* Each of two items waits until the other has started: only two threads at once get
 * through; one thread running them in turn would wait for ever (here: 20 s, then fail). */
struct Rendezvous {
    std::atomic<int> arrived{0};
    std::atomic<int> timed_out{0};
};

void meet_item(void *arg, size_t)
{
    auto *r = static_cast<Rendezvous *>(arg);
    r->arrived++;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (r->arrived.load() < 2)
        if (std::chrono::steady_clock::now() > deadline) {
            r->timed_out++;
            return;
        }
}

TEST(CpuPool, ItemsRunOnSeveralThreadsAtOnce)
{
    Pool pool;
    for (int job = 0; job < 20; job++) {
        Rendezvous r;
        gpurnn_cpu_pool_for(pool.p, 2, 2, meet_item, &r);
        ASSERT_EQ(r.timed_out.load(), 0) << "job " << job << ": the two items did not run at the same time";
    }
}

struct Nested {
    gpurnn_cpu_pool *pool;
    std::atomic<int> inner_total{0};
    std::atomic<int> inner_elsewhere{0};
    std::atomic<int> blas_threads_not_one{0};
};

struct Inner {
    Nested *outer;
    std::thread::id runner;
};

void inner_item(void *arg, size_t)
{
    auto *in = static_cast<Inner *>(arg);
    in->outer->inner_total++;
    if (std::this_thread::get_id() != in->runner) in->outer->inner_elsewhere++;
}

void outer_item(void *arg, size_t)
{
    auto *n = static_cast<Nested *>(arg);
    if (omp_get_max_threads() != 1) n->blas_threads_not_one++;
    Inner in{n, std::this_thread::get_id()};
    gpurnn_cpu_pool_for(n->pool, 4, 5, inner_item, &in);
}

TEST(CpuPool, NestedCallsRunInlineAndItemsSeeOneBlasThread)
{
    Pool pool;
    Nested n{pool.p};
    const int before = omp_get_max_threads();
    gpurnn_cpu_pool_for(pool.p, 3, 16, outer_item, &n);
    EXPECT_EQ(n.inner_total.load(), 16 * 5);
    EXPECT_EQ(n.inner_elsewhere.load(), 0) << "a nested call ran items on another thread";
    EXPECT_EQ(n.blas_threads_not_one.load(), 0) << "an item ran with more than one OpenMP/BLAS thread";
    EXPECT_EQ(omp_get_max_threads(), before) << "the caller's OpenMP thread count was not restored";
}

struct Sum {
    std::atomic<long long> total{0};
};

void add_item(void *arg, size_t item) { static_cast<Sum *>(arg)->total += (long long)item + 1; }

TEST(CpuPool, ManyShortJobsLoseNothing)
{
    Pool pool;
    Sum sum;
    long long expected = 0;
    for (int job = 0; job < 20000; job++) {
        const size_t items = 2 + job % 5;
        gpurnn_cpu_pool_for(pool.p, 2 + job % 2, items, add_item, &sum);
        expected += (long long)(items * (items + 1) / 2);
    }
    EXPECT_EQ(sum.total.load(), expected);
}

TEST(CpuPool, DestroyRightAfterTheFirstJobOrWithoutOne)
{
    gpurnn_cpu_pool_destroy(nullptr);
    for (int round = 0; round < 200; round++) {
        gpurnn_cpu_pool *p = gpurnn_cpu_pool_create();
        ASSERT_NE(p, nullptr);
        if (round % 2) {
            Counts counts(3);
            gpurnn_cpu_pool_for(p, 4, 3, count_item, &counts);
            for (int i = 0; i < 3; i++) ASSERT_EQ(counts.hits[i].load(), 1);
        }
        gpurnn_cpu_pool_destroy(p); /* must not hang on a thread that started late */
    }
}

} // namespace
