/* Allocation failures and CUDA faults, through the library's test-only fault injection
 * (src/alloc.h, reachable because this program links the static library).
 *
 *  - Configurations whose memory cannot be had fail at creation with OUT_OF_MEMORY and a
 *    message giving the bytes asked for (whatever the kernel's overcommit policy).
 *  - Every allocation of create, forward, backward, clipping, step, sample, save, load and
 *    gradcheck is made to fail in turn (N = 0, 1, 2, ... until a run gets through): each
 *    such run ends in OUT_OF_MEMORY with the bytes named, changes nothing (parameters,
 *    gradients, carried state, optimizer state as seen through a checkpoint's bytes,
 *    files on disk), and leaves the model usable and destroyable. Leaks are checked by
 *    running this program under valgrind (the ctest entry gpurnn_fault_tests_valgrind).
 *  - With a GPU: a model too big for the device fails with OUT_OF_MEMORY naming the bytes
 *    and gives back every byte of device memory; every CUDA call, cuBLAS call and kernel
 *    launch of each operation is made to fail in turn and each becomes a status with a
 *    message, the model stays usable and destroyable, and no device memory leaks.
 *    Skipped, with the reason, where CUDA cannot be used. */
#include <climits>
#include <cstring>
#include <functional>
#include <regex>
#include <string>
#include <thread>

#include "alloc.h"
#include "backend_module.h"
#include "test_util.h"

using namespace gt;

namespace {

gpurnn_model *const kSentinel = reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0x5e7711e1));

/* The largest decimal number in msg followed by " bytes" (0 if none). */
unsigned long long largest_byte_count(const std::string &msg)
{
    static const std::regex re("([0-9]+) bytes");
    unsigned long long best = 0;
    for (auto it = std::sregex_iterator(msg.begin(), msg.end(), re); it != std::sregex_iterator(); ++it)
        best = std::max(best, std::stoull((*it)[1].str()));
    return best;
}

/* Disarms both countdowns however the scope is left. */
struct Disarm {
    ~Disarm()
    {
        gpurnn_fault_fail_allocation(-1);
        gpurnn_fault_fail_device_call(-1);
    }
};

/* The status of op() with allocation n (from now) failing; *fired says whether it did. */
gpurnn_status with_failing_allocation(long long n, const std::function<gpurnn_status()> &op, bool *fired)
{
    Disarm disarm;
    gpurnn_fault_fail_allocation(n);
    const gpurnn_status st = op();
    *fired = gpurnn_fault_allocation_fired() != 0;
    return st;
}

gpurnn_status with_failing_device_call(long long n, const std::function<gpurnn_status()> &op, bool *fired)
{
    Disarm disarm;
    gpurnn_fault_fail_device_call(n);
    const gpurnn_status st = op();
    *fired = gpurnn_fault_device_call_fired() != 0;
    return st;
}


}  // namespace

/* ---------- configurations that cannot be had ---------- */

class OutOfMemoryTest : public BackendTest {};

TEST_P(OutOfMemoryTest, HugeConfigsFailAtCreationNamingTheBytes)
{
    struct Case {
        const char *what;
        gpurnn_config cfg;
        unsigned long long at_least;   /* bytes of the largest buffer the config needs */
    };
    /* the full history, whatever the activation budget would choose */
    gpurnn_config long_seq = make_config(backend(), GPURNN_F32, 16, 1024, 1024, 1 << 20);
    long_seq.bptt_checkpoint_every = GPURNN_BPTT_KEEP_ALL;
    const Case cases[] = {
        /* V = H = 10^6: 3*10^12 parameters, 12 TB per float32 buffer */
        {"V = H = 10^6", make_config(backend(), GPURNN_F32, 1000000, 1000000, 1, 1),
         3000002000000ULL * 4},
        /* max_seq_len * B * H = 2^40 hidden-state values, 4 TiB in float32; V small */
        {"max_seq_len * B * H = 2^40", long_seq, ((1ULL << 20) + 1) * 1024 * 1024 * 4},
        {"V = H = 2^20, float64", make_config(backend(), GPURNN_F64, 1 << 20, 1 << 20, 1, 1),
         (3ULL << 40) * 8},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.what);
        gpurnn_model *out = kSentinel;
        const gpurnn_status st = gpurnn_model_create(&c.cfg, &out);
        const std::string msg = gpurnn_last_error();
        EXPECT_TRUE(failed_with(st, GPURNN_ERR_OUT_OF_MEMORY)) << msg;
        EXPECT_EQ(out, kSentinel) << "*out was written by a failed create";
        EXPECT_GE(largest_byte_count(msg), c.at_least) << "the message should give the bytes asked for: " << msg;
    }
    /* and the library is still fine */
    ModelPtr m = create_model(make_config(backend(), GPURNN_F32, 8, 4, 2, 3));
    EXPECT_TRUE(m);
}

GPURNN_INSTANTIATE_BACKENDS(OutOfMemoryTest);

/* ---------- every allocation failing in turn ---------- */

class AllocationFaultTest : public BackendTest {
protected:
    static constexpr int V = 7, H = 5, B = 2, T = 4;

    /* A model in the middle of Adam training: optimizer state, non-zero gradients, a
     * valid forward pass and a carried state that is not zero. */
    RandomModel trained(const TempDir &)
    {
        RandomModel r = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 700);
        if (!r.m)
            return r;
        Rng rng(701);
        in_ = random_tokens(T * B, V, rng);
        tg_ = random_tokens(T * B, V, rng);
        const gpurnn_optimizer adam = make_optimizer(GPURNN_ADAM, 0.01);
        double loss;
        for (int k = 0; k < 2; ++k) {
            EXPECT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK);
            EXPECT_EQ(gpurnn_forward(r.m.get(), in_.data(), tg_.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
            EXPECT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
            if (k == 0) {
                EXPECT_EQ(gpurnn_step(r.m.get(), &adam), GPURNN_OK) << gpurnn_last_error();
            }
        }
        return r;
    }

    /* The model still trains: a full step succeeds. */
    void expect_usable(gpurnn_model *m)
    {
        double loss;
        const gpurnn_optimizer adam = make_optimizer(GPURNN_ADAM, 0.01);
        EXPECT_EQ(gpurnn_zero_grad(m), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_forward(m, in_.data(), tg_.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_step(m, &adam), GPURNN_OK) << gpurnn_last_error();
    }

    /* Runs `op` on a fresh trained model with allocation n failing, for n = 0, 1, ...
     * until a run does not reach the failure; returns the number of allocations op made.
     * A failed run must be OUT_OF_MEMORY naming the bytes and change nothing (`check`
     * adds op-specific checks); every run's model must stay usable. */
    long long every_allocation(const char *what, const std::function<gpurnn_status(gpurnn_model *, const TempDir &)> &op,
                               const std::function<void(gpurnn_model *, const TempDir &, bool fired)> &check = {},
                               const std::function<void(gpurnn_model *, const TempDir &)> &prepare = {})
    {
        for (long long n = 0;; ++n) {
            SCOPED_TRACE(std::string(what) + ", allocation " + std::to_string(n) + " failing");
            TempDir dir;
            RandomModel r = trained(dir);
            if (!r.m)
                return -1;
            const FullState before = FullState::take(r.m.get(), dir);
            if (prepare)
                prepare(r.m.get(), dir);
            bool fired = false;
            const gpurnn_status st = with_failing_allocation(n, [&] { return op(r.m.get(), dir); }, &fired);
            const std::string msg = gpurnn_last_error();
            if (check)
                check(r.m.get(), dir, fired);
            if (!fired) {
                EXPECT_EQ(st, GPURNN_OK) << what << " failed without an injected failure: " << msg;
                expect_usable(r.m.get());
                return n;
            }
            EXPECT_TRUE(failed_with(st, GPURNN_ERR_OUT_OF_MEMORY)) << msg;
            EXPECT_GT(largest_byte_count(msg), 0u) << "the message should give the bytes asked for: " << msg;
            EXPECT_TRUE(full_states_equal(FullState::take(r.m.get(), dir), before));
            expect_usable(r.m.get());
            if (n > 10000) {
                ADD_FAILURE() << "more than 10000 allocations";
                return n;
            }
        }
    }

    std::vector<int32_t> in_, tg_;
};

TEST_P(AllocationFaultTest, Create)
{
    const gpurnn_config cfg = make_config(backend(), GPURNN_F32, V, H, B, T);
    long long n = 0;
    for (;; ++n) {
        SCOPED_TRACE("allocation " + std::to_string(n) + " failing");
        gpurnn_model *out = kSentinel;
        bool fired = false;
        const gpurnn_status st = with_failing_allocation(n, [&] { return gpurnn_model_create(&cfg, &out); }, &fired);
        const std::string msg = gpurnn_last_error();
        if (!fired) {
            ASSERT_EQ(st, GPURNN_OK) << msg;
            gpurnn_model_destroy(out);
            break;
        }
        EXPECT_TRUE(failed_with(st, GPURNN_ERR_OUT_OF_MEMORY)) << msg;
        EXPECT_GT(largest_byte_count(msg), 0u) << "the message should give the bytes asked for: " << msg;
        EXPECT_EQ(out, kSentinel) << "*out was written by a failed create";
        ASSERT_LT(n, 10000);
    }
    EXPECT_GE(n, 2) << "create should allocate the handle and the backend's buffers through the hook";
}

TEST_P(AllocationFaultTest, TrainingCallsAllocateNothing)
{
    /* "All memory the model will use during training is allocated at creation": no
     * allocation for the training calls, so the first run already gets through. */
    double loss = 0, norm = 0;
    int32_t tokens[16];
    std::vector<double> dist((size_t)T * B * V);
    const int32_t firsts[B] = {1, 2};
    const gpurnn_optimizer adam = make_optimizer(GPURNN_ADAM, 0.01);
    const struct {
        const char *what;
        std::function<gpurnn_status(gpurnn_model *, const TempDir &)> op;
    } ops[] = {
        {"forward", [&](gpurnn_model *m, const TempDir &) { return gpurnn_forward(m, in_.data(), tg_.data(), T, &loss); }},
        {"backward", [&](gpurnn_model *m, const TempDir &) { return gpurnn_backward(m); }},
        {"zero_grad", [&](gpurnn_model *m, const TempDir &) { return gpurnn_zero_grad(m); }},
        {"clip_grad_norm", [&](gpurnn_model *m, const TempDir &) { return gpurnn_clip_grad_norm(m, 0.1, &norm); }},
        {"clip_grad_value", [&](gpurnn_model *m, const TempDir &) { return gpurnn_clip_grad_value(m, 0.1); }},
        {"step", [&](gpurnn_model *m, const TempDir &) { return gpurnn_step(m, &adam); }},
        {"sample", [&](gpurnn_model *m, const TempDir &) { return gpurnn_sample(m, 1, 16, 1.0, 5, tokens); }},
        {"sample_batch", [&](gpurnn_model *m, const TempDir &) { return gpurnn_sample_batch(m, firsts, 4, 1.0, 5, tokens); }},
        {"infer", [&](gpurnn_model *m, const TempDir &) {
             return gpurnn_infer(m, in_.data(), T, GPURNN_INFER_EACH_STEP, GPURNN_LOG_PROBS, dist.data(), dist.size());
         }},
        {"score", [&](gpurnn_model *m, const TempDir &) { return gpurnn_score(m, in_.data(), tg_.data(), T, &loss); }},
        {"state_reset", [&](gpurnn_model *m, const TempDir &) { return gpurnn_state_reset(m); }},
    };
    for (const auto &o : ops)
        EXPECT_EQ(every_allocation(o.what, o.op), 0) << o.what << " allocated";
}

TEST_P(AllocationFaultTest, Save)
{
    /* A previous checkpoint at the path survives every failed save, and no temporary
     * file is left beside it. */
    std::vector<unsigned char> previous;
    const long long n = every_allocation(
        "save",
        [&](gpurnn_model *m, const TempDir &dir) { return gpurnn_model_save(m, dir.file("m.ckpt").c_str()); },
        [&](gpurnn_model *m, const TempDir &dir, bool fired) {
            const std::string path = dir.file("m.ckpt");
            EXPECT_EQ(dir.list(), std::vector<std::string>{"m.ckpt"}) << "files left beside the checkpoint";
            if (fired) {
                EXPECT_EQ(read_file(path), previous) << "a failed save changed the existing checkpoint";
            } else {
                gpurnn_model *l = nullptr;
                ASSERT_EQ(gpurnn_model_load(path.c_str(), backend(), &l), GPURNN_OK) << gpurnn_last_error();
                EXPECT_TRUE(bit_equal(get_params(l), get_params(m)));
                gpurnn_model_destroy(l);
            }
        },
        [&](gpurnn_model *, const TempDir &dir) {
            ModelPtr other = create_model(make_config(backend(), GPURNN_F32, 3, 2, 1, 1));
            ASSERT_TRUE(other);
            const std::string path = dir.file("m.ckpt");
            ASSERT_EQ(gpurnn_model_save(other.get(), path.c_str()), GPURNN_OK);
            previous = read_file(path);
        });
    EXPECT_GE(n, 2) << "save should allocate its buffers through the hook";
}

TEST_P(AllocationFaultTest, Load)
{
    /* *out is untouched on failure and the file unchanged; the loaded model, once a run
     * gets through, equals the saved one and trains. The allocations of the model that
     * load creates are among those made to fail. */
    gpurnn_model *out = kSentinel;
    TempDir dir;
    RandomModel r = trained(dir);
    ASSERT_TRUE(r.m);
    const std::string path = dir.file("m.ckpt");
    ASSERT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    const std::vector<unsigned char> bytes = read_file(path);
    long long k = 0;
    for (;; ++k) {
        SCOPED_TRACE("load, allocation " + std::to_string(k) + " failing");
        out = kSentinel;
        bool fired = false;
        const gpurnn_status st =
            with_failing_allocation(k, [&] { return gpurnn_model_load(path.c_str(), backend(), &out); }, &fired);
        const std::string msg = gpurnn_last_error();
        EXPECT_EQ(read_file(path), bytes) << "load changed the file";
        if (!fired) {
            ASSERT_EQ(st, GPURNN_OK) << msg;
            ModelPtr l(out);
            EXPECT_TRUE(bit_equal(get_params(l.get()), get_params(r.m.get())));
            EXPECT_TRUE(bit_equal(get_state(l.get()), get_state(r.m.get())));
            expect_usable(l.get());
            break;
        }
        EXPECT_TRUE(failed_with(st, GPURNN_ERR_OUT_OF_MEMORY)) << msg;
        EXPECT_GT(largest_byte_count(msg), 0u) << "the message should give the bytes asked for: " << msg;
        EXPECT_EQ(out, kSentinel) << "*out was written by a failed load";
        ASSERT_LT(k, 10000);
    }
    EXPECT_GE(k, 3) << "load should allocate its scratch, the handle and the backend's buffers through the hook";
}

TEST_P(AllocationFaultTest, LoadFromMemoryWithUserData)
{
    /* As Load, from a memory buffer with a user blob: the blob's buffer is among the
     * allocations made to fail, and a failed load leaves every output untouched and (under
     * valgrind, gpurnn_fault_tests_valgrind) nothing allocated. */
    TempDir dir;
    RandomModel r = trained(dir);
    ASSERT_TRUE(r.m);
    const std::vector<unsigned char> blob(1000, 0x3c);
    size_t size = 0;
    ASSERT_EQ(gpurnn_model_save_size(r.m.get(), blob.size(), &size), GPURNN_OK);
    std::vector<unsigned char> bytes(size);
    ASSERT_EQ(gpurnn_model_save_to_memory(r.m.get(), blob.data(), blob.size(), bytes.data(), size, nullptr),
              GPURNN_OK);
    long long k = 0;
    for (;; ++k) {
        SCOPED_TRACE("load, allocation " + std::to_string(k) + " failing");
        gpurnn_model *out = kSentinel;
        void *data = kSentinel;
        size_t n = 5;
        bool fired = false;
        const gpurnn_status st = with_failing_allocation(
            k, [&] { return gpurnn_model_load_from_memory(bytes.data(), size, backend(), &data, &n, &out); }, &fired);
        const std::string msg = gpurnn_last_error();
        if (!fired) {
            ASSERT_EQ(st, GPURNN_OK) << msg;
            ModelPtr l(out);
            ASSERT_EQ(n, blob.size());
            EXPECT_EQ(std::memcmp(data, blob.data(), n), 0);
            gpurnn_user_data_free(data);
            EXPECT_TRUE(bit_equal(get_params(l.get()), get_params(r.m.get())));
            break;
        }
        EXPECT_TRUE(failed_with(st, GPURNN_ERR_OUT_OF_MEMORY)) << msg;
        EXPECT_EQ(out, kSentinel);
        EXPECT_EQ(data, (void *)kSentinel);
        EXPECT_EQ(n, 5u);
        ASSERT_LT(k, 10000);
    }
    EXPECT_GE(k, 4) << "scratch, blob, handle and the backend's buffers";
}

TEST_P(AllocationFaultTest, Gradcheck)
{
    gpurnn_gradcheck_result res;
    std::memset(&res, 0x5a, sizeof res);
    const gpurnn_gradcheck_result untouched = res;
    const long long n = every_allocation(
        "gradcheck",
        [&](gpurnn_model *m, const TempDir &) {
            std::memcpy(&res, &untouched, sizeof res);
            return gpurnn_gradcheck(m, in_.data(), tg_.data(), T, 1e-5, 3, 9, &res);
        },
        [&](gpurnn_model *, const TempDir &, bool fired) {
            if (fired) {
                EXPECT_EQ(std::memcmp(&res, &untouched, sizeof res), 0) << "the result was written by a failed call";
            } else {
                for (int t = 0; t < GPURNN_NUM_TENSORS; ++t)
                    EXPECT_LT(res.max_rel_error[t], 1e-5) << "tensor " << t;
            }
        });
    EXPECT_GE(n, 3) << "gradcheck should allocate its saved buffers through the hook";
}

TEST_P(AllocationFaultTest, GradcheckTensors)
{
    std::vector<gpurnn_gradcheck_tensor> res(GPURNN_NUM_TENSORS);
    std::memset(res.data(), 0x5a, res.size() * sizeof res[0]);
    const std::vector<gpurnn_gradcheck_tensor> untouched = res;
    const long long n = every_allocation(
        "gradcheck_tensors",
        [&](gpurnn_model *m, const TempDir &) {
            res = untouched;
            return gpurnn_gradcheck_tensors(m, in_.data(), tg_.data(), T, 1e-5, 3, 9, res.data(), res.size());
        },
        [&](gpurnn_model *, const TempDir &, bool fired) {
            if (fired) {
                EXPECT_EQ(std::memcmp(res.data(), untouched.data(), res.size() * sizeof res[0]), 0)
                    << "the result was written by a failed call";
            } else {
                for (int t = 0; t < GPURNN_NUM_TENSORS; ++t) EXPECT_EQ(res[t].failed, 0) << "tensor " << t;
            }
        });
    EXPECT_GE(n, 4) << "gradcheck_tensors should allocate its saved buffers and results through the hook";
}

TEST(AllocationFaultHook, IsPerThreadAndOneShot)
{
    /* Armed on this thread, the countdown does not touch another thread's allocations,
     * and it fails exactly one allocation. */
    const gpurnn_config cfg = make_config(GPURNN_BACKEND_CPU, GPURNN_F32, 5, 3, 1, 2);
    Disarm disarm;
    gpurnn_fault_fail_allocation(0);
    gpurnn_status other = GPURNN_ERR_CUDA;
    std::thread t([&] {
        gpurnn_model *m = nullptr;
        other = gpurnn_model_create(&cfg, &m);
        gpurnn_model_destroy(m);
    });
    t.join();
    EXPECT_EQ(other, GPURNN_OK) << "another thread's allocation failed";
    EXPECT_FALSE(gpurnn_fault_allocation_fired());
    gpurnn_model *m = nullptr;
    EXPECT_EQ(gpurnn_model_create(&cfg, &m), GPURNN_ERR_OUT_OF_MEMORY);
    EXPECT_TRUE(gpurnn_fault_allocation_fired());
    EXPECT_EQ(gpurnn_model_create(&cfg, &m), GPURNN_OK) << "the hook should fail one allocation only";
    gpurnn_model_destroy(m);
}

GPURNN_INSTANTIATE_BACKENDS(AllocationFaultTest);

/* ---------- CUDA faults ---------- */

namespace {

/* Free device memory as the CUDA module's runtime reports it (0 and a test failure if it
 * cannot). */
size_t device_free_bytes()
{
    size_t free_bytes = 0, total = 0;
    if (gpurnn_cuda_device_memory(&free_bytes, &total) != GPURNN_OK) {
        ADD_FAILURE() << "device memory query: " << gpurnn_last_error();
        return 0;
    }
    return free_bytes;
}

}  // namespace

TEST(CudaFaults, ModelTooBigForTheDeviceFailsAndLeaksNothing)
{
    GT_SKIP_WITHOUT_CUDA();
    /* hidden states alone: (2^20 + 1) * 1024 * 1024 float32 values, 4 TiB, more than any
     * device has. The full history, not checkpoints: with automatic checkpointing the
     * model would shrink to a size that an 80-141 GB device can hold. */
    gpurnn_config huge = make_config(GPURNN_BACKEND_CUDA, GPURNN_F32, 16, 1024, 1024, 1 << 20);
    huge.bptt_checkpoint_every = GPURNN_BPTT_KEEP_ALL;
    const unsigned long long hs_bytes = ((1ULL << 20) + 1) * 1024 * 1024 * 4;
    auto fail_once = [&] {
        gpurnn_model *out = kSentinel;
        const gpurnn_status st = gpurnn_model_create(&huge, &out);
        const std::string msg = gpurnn_last_error();
        EXPECT_TRUE(failed_with(st, GPURNN_ERR_OUT_OF_MEMORY)) << msg;
        EXPECT_GE(largest_byte_count(msg), hs_bytes) << "the message should give the bytes asked for: " << msg;
        EXPECT_EQ(out, kSentinel);
        if (st == GPURNN_OK && out != kSentinel) gpurnn_model_destroy(out); /* a wrong success must not leak */
    };
    {
        /* one-time costs (context, cuBLAS's first handle) before the baseline */
        ModelPtr warm = create_model(make_config(GPURNN_BACKEND_CUDA, GPURNN_F32, 8, 4, 2, 3));
        ASSERT_TRUE(warm);
    }
    fail_once();
    const size_t before = device_free_bytes();
    for (int k = 0; k < 3; ++k)
        fail_once();
    EXPECT_EQ(device_free_bytes(), before) << "failed creations leaked device memory";
    ModelPtr m = create_model(make_config(GPURNN_BACKEND_CUDA, GPURNN_F32, 8, 4, 2, 3));
    EXPECT_TRUE(m) << "a small model after the failures";
}

TEST(CudaFaults, EveryFailingDeviceCallIsAStatus)
{
    GT_SKIP_WITHOUT_CUDA();
    const int V = 7, H = 5, B = 2, T = 4;
    Rng rng(800);
    const std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
    const gpurnn_optimizer adam = make_optimizer(GPURNN_ADAM, 0.01);
    TempDir dir;
    const std::string path = dir.file("m.ckpt");
    auto fresh = [&] {
        RandomModel r = make_random_model(GPURNN_BACKEND_CUDA, GPURNN_F32, V, H, B, T, GPURNN_LOSS_SUM, 801);
        double loss;
        if (r.m) {
            EXPECT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
            EXPECT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
        }
        return r;
    };
    auto usable = [&](gpurnn_model *m) {
        double loss;
        EXPECT_EQ(gpurnn_zero_grad(m), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_step(m, &adam), GPURNN_OK) << gpurnn_last_error();
    };
    double loss = 0, norm = 0;
    int32_t tokens[8];
    std::vector<double> buf;
    const gpurnn_config cfg = make_config(GPURNN_BACKEND_CUDA, GPURNN_F32, V, H, B, T);
    const struct {
        const char *what;
        std::function<gpurnn_status(gpurnn_model *)> op;
    } ops[] = {
        {"create",
         [&](gpurnn_model *) {
             gpurnn_model *out = kSentinel;
             gpurnn_status st = gpurnn_model_create(&cfg, &out);
             if (st == GPURNN_OK)
                 gpurnn_model_destroy(out);
             else
                 EXPECT_EQ(out, kSentinel);
             return st;
         }},
        {"forward", [&](gpurnn_model *m) { return gpurnn_forward(m, in.data(), tg.data(), T, &loss); }},
        {"backward", [&](gpurnn_model *m) { return gpurnn_backward(m); }},
        {"zero_grad", [&](gpurnn_model *m) { return gpurnn_zero_grad(m); }},
        {"clip_grad_norm", [&](gpurnn_model *m) { return gpurnn_clip_grad_norm(m, 0.1, &norm); }},
        {"clip_grad_value", [&](gpurnn_model *m) { return gpurnn_clip_grad_value(m, 0.1); }},
        {"step", [&](gpurnn_model *m) { return gpurnn_step(m, &adam); }},
        {"sample", [&](gpurnn_model *m) { return gpurnn_sample(m, 1, 8, 1.0, 3, tokens); }},
        {"sample_batch",
         [&](gpurnn_model *m) {
             const int32_t firsts[B] = {1, 2};
             return gpurnn_sample_batch(m, firsts, 4, 1.0, 3, tokens);
         }},
        {"infer",
         [&](gpurnn_model *m) {
             buf.assign((size_t)T * B * V, 0.0);
             return gpurnn_infer(m, in.data(), T, GPURNN_INFER_EACH_STEP, GPURNN_PROBS, buf.data(), buf.size());
         }},
        {"score", [&](gpurnn_model *m) { return gpurnn_score(m, in.data(), tg.data(), T, &loss); }},
        {"params_get",
         [&](gpurnn_model *m) {
             buf.assign(gpurnn_param_count(m), 0.0);
             return gpurnn_params_get(m, buf.data(), buf.size());
         }},
        {"params_set",
         [&](gpurnn_model *m) {
             buf.assign(gpurnn_param_count(m), 0.25);
             return gpurnn_params_set(m, buf.data(), buf.size());
         }},
        {"save", [&](gpurnn_model *m) { return gpurnn_model_save(m, path.c_str()); }},
    };
    {
        RandomModel warm = fresh();   /* one-time costs before the baseline */
        ASSERT_TRUE(warm.m);
        usable(warm.m.get());
    }
    const size_t baseline = device_free_bytes();
    for (const auto &o : ops) {
        long long n = 0;
        for (;; ++n) {
            SCOPED_TRACE(std::string(o.what) + ", device call " + std::to_string(n) + " failing");
            RandomModel r = fresh();
            ASSERT_TRUE(r.m);
            bool fired = false;
            const gpurnn_status st = with_failing_device_call(n, [&] { return o.op(r.m.get()); }, &fired);
            const std::string msg = gpurnn_last_error();
            if (!fired) {
                EXPECT_EQ(st, GPURNN_OK) << msg;
                break;
            }
            EXPECT_TRUE(st == GPURNN_ERR_CUDA || st == GPURNN_ERR_OUT_OF_MEMORY) << gpurnn_status_string(st) << ": " << msg;
            EXPECT_NE(msg.find("failed"), std::string::npos) << "the message should name the failing call: " << msg;
            usable(r.m.get());
            ASSERT_LT(n, 100000);
        }
        EXPECT_GE(n, 1) << o.what << " made no device call through the checks";
        EXPECT_EQ(device_free_bytes(), baseline) << o.what << ": device memory leaked";
    }
    /* load: every device call of the model it creates and fills */
    RandomModel r = fresh();
    ASSERT_TRUE(r.m);
    ASSERT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    long long n = 0;
    for (;; ++n) {
        SCOPED_TRACE("load, device call " + std::to_string(n) + " failing");
        gpurnn_model *out = kSentinel;
        bool fired = false;
        const gpurnn_status st =
            with_failing_device_call(n, [&] { return gpurnn_model_load(path.c_str(), GPURNN_BACKEND_CUDA, &out); }, &fired);
        const std::string msg = gpurnn_last_error();
        if (!fired) {
            ASSERT_EQ(st, GPURNN_OK) << msg;
            gpurnn_model_destroy(out);
            break;
        }
        EXPECT_TRUE(st == GPURNN_ERR_CUDA || st == GPURNN_ERR_OUT_OF_MEMORY) << gpurnn_status_string(st) << ": " << msg;
        EXPECT_EQ(out, kSentinel);
        ASSERT_LT(n, 100000);
    }
    EXPECT_GE(n, 1);
    r.m.reset();
    EXPECT_EQ(device_free_bytes(), baseline) << "load: device memory leaked";
}
