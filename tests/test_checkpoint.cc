/* Checkpoints: save -> load round trip (bit-exact parameters, state and optimizer state,
 * checked by one more identical step on both models), the byte layout of
 * docs/checkpoint-format.md, damaged files (truncated, every byte flipped, wrong magic,
 * wrong version, absurd sizes: GPURNN_ERR_FORMAT, *out untouched), I/O errors, and the
 * crash-safe save (an existing file survives a failed save; no temporary file is left;
 * a writer killed with SIGKILL at random moments leaves the old or the new checkpoint).
 *
 * The test builds and re-checksums crafted files with its own CRC-64/XZ, so the loader's
 * field checks are exercised behind a valid checksum, not only the checksum. */
#include <fcntl.h>
#include <pwd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <cctype>
#include <cmath>
#include <csignal>
#include <cstring>
#include <functional>
#include <tuple>

#include "test_util.h"

using namespace gt;

namespace {

gpurnn_model *const kSentinel = reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0x5e7711e1));

/* CRC-64/XZ, bit by bit (reflected 0xC96C5795D7870F42, init and xorout all ones). */
uint64_t crc64_xz(const unsigned char *p, size_t n)
{
    uint64_t crc = ~0ULL;
    for (size_t i = 0; i < n; ++i) {
        crc ^= p[i];
        for (int k = 0; k < 8; ++k)
            crc = (crc & 1) ? (crc >> 1) ^ 0xC96C5795D7870F42ULL : crc >> 1;
    }
    return ~crc;
}

uint32_t get_u32(const std::vector<unsigned char> &b, size_t off)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
        v = (v << 8) | b[off + i];
    return v;
}
uint64_t get_u64(const std::vector<unsigned char> &b, size_t off)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | b[off + i];
    return v;
}
void put_u32(std::vector<unsigned char> &b, size_t off, uint32_t v)
{
    for (int i = 0; i < 4; ++i)
        b[off + i] = (unsigned char)(v >> (8 * i));
}
void put_u64(std::vector<unsigned char> &b, size_t off, uint64_t v)
{
    for (int i = 0; i < 8; ++i)
        b[off + i] = (unsigned char)(v >> (8 * i));
}
double get_f64(const std::vector<unsigned char> &b, size_t off)
{
    uint64_t u = get_u64(b, off);
    double d;
    std::memcpy(&d, &u, 8);
    return d;
}
double get_f32(const std::vector<unsigned char> &b, size_t off)
{
    uint32_t u = get_u32(b, off);
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
void put_value(std::vector<unsigned char> &b, size_t off, double v, size_t e)
{
    if (e == 8) {
        uint64_t u;
        std::memcpy(&u, &v, 8);
        put_u64(b, off, u);
    } else {
        float f = (float)v;
        uint32_t u;
        std::memcpy(&u, &f, 4);
        put_u32(b, off, u);
    }
}
/* Rewrites the trailing checksum so that it matches the (edited) bytes before it. */
void fix_crc(std::vector<unsigned char> &b)
{
    put_u64(b, b.size() - 8, crc64_xz(b.data(), b.size() - 8));
}

enum {
    OFF_VERSION = 8, OFF_DTYPE = 12, OFF_ELEMENT_BYTES = 16, OFF_V = 20, OFF_H = 24, OFF_B = 28, OFF_MAXT = 32,
    OFF_RED = 36, OFF_SEED = 40, OFF_INIT_SCALE = 48, OFF_OPT_STARTED = 56, OFF_OPT_KIND = 60, OFF_OPT_STEPS = 64,
    OFF_OPT_SLOTS = 72, OFF_RESERVED = 76, OFF_PARAM_COUNT = 80, OFF_STATE_COUNT = 88, OFF_FILE_SIZE = 96,
    OFF_USER_DATA_BYTES = 104, OFF_CELL = 112, OFF_NUM_LAYERS = 116, HEADER = 120, V1_HEADER = 104, V2_HEADER = 112
};

gpurnn_optimizer opt_of(gpurnn_optimizer_kind kind)
{
    gpurnn_optimizer o;
    std::memset(&o, 0, sizeof o);
    o.kind = kind;
    o.learning_rate = 0.05;
    o.momentum = kind == GPURNN_SGD ? 0.9 : 0.0;
    return o;
}

/* Loads path expecting `want`; *out must stay untouched on failure. */
::testing::AssertionResult load_fails(const std::string &path, gpurnn_backend backend, gpurnn_status want)
{
    gpurnn_model *out = kSentinel;
    gpurnn_status st = gpurnn_model_load(path.c_str(), backend, &out);
    const std::string msg = gpurnn_last_error();
    if (st == GPURNN_OK) {
        gpurnn_model_destroy(out);
        return ::testing::AssertionFailure() << "loaded successfully, expected " << gpurnn_status_string(want);
    }
    if (st != want)
        return ::testing::AssertionFailure() << "status " << gpurnn_status_string(st) << ", expected "
                                             << gpurnn_status_string(want) << ": " << msg;
    if (msg.empty())
        return ::testing::AssertionFailure() << "empty gpurnn_last_error()";
    if (out != kSentinel)
        return ::testing::AssertionFailure() << "*out was changed on failure";
    return ::testing::AssertionSuccess() << msg;
}

}  // namespace

TEST(CheckpointCrc, MatchesTheDocumentedCheckValue)
{
    /* validates the test's own CRC against docs/checkpoint-format.md */
    const unsigned char s[] = "123456789";
    EXPECT_EQ(crc64_xz(s, 9), 0x995DC9BBDF1939FAULL);
}

class CheckpointTest : public BackendTest {
protected:
    static constexpr int V = 6, H = 5, B = 2, T = 8;

    /* A model with random parameters and state that has taken two optimizer steps of
     * `kind` (or none when started is false). */
    RandomModel trained(gpurnn_dtype dt, bool started, gpurnn_optimizer_kind kind, uint64_t seed)
    {
        RandomModel r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_MEAN, seed);
        if (!r.m)
            return r;
        Rng rng(seed + 1);
        const gpurnn_optimizer o = opt_of(kind);
        for (int s = 0; s < (started ? 2 : 1); ++s) {
            std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
            double loss;
            EXPECT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK);
            EXPECT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
            EXPECT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
            if (started) {
                EXPECT_EQ(gpurnn_step(r.m.get(), &o), GPURNN_OK) << gpurnn_last_error();
            }
        }
        /* a carried state that is neither zero nor what forward left */
        std::vector<double> st = random_normal(B * H, rng, 0.6);
        if (dt == GPURNN_F32)
            st = round_to_float(st);
        EXPECT_EQ(gpurnn_state_set(r.m.get(), st.data(), st.size()), GPURNN_OK);
        r.params = get_params(r.m.get());
        r.state = st;
        return r;
    }

    ModelPtr load(const std::string &path, gpurnn_backend b)
    {
        gpurnn_model *m = nullptr;
        gpurnn_status st = gpurnn_model_load(path.c_str(), b, &m);
        if (st != GPURNN_OK) {
            ADD_FAILURE() << "gpurnn_model_load(" << path << "): " << gpurnn_status_string(st) << ": "
                          << gpurnn_last_error();
            return ModelPtr();
        }
        return ModelPtr(m);
    }

    /* A saved Adam-state float64 model and its bytes: the base of the damage tests. */
    std::vector<unsigned char> saved_bytes(const TempDir &dir, gpurnn_dtype dt, bool started = true)
    {
        RandomModel r = trained(dt, started, GPURNN_ADAM, 90);
        if (!r.m)
            return {};
        const std::string path = dir.file("base.ckpt");
        EXPECT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
        return read_file(path);
    }
};

TEST_P(CheckpointTest, RoundTripIsBitExactAndTrainsOn)
{
    TempDir dir;
    struct Case {
        gpurnn_dtype dt;
        bool started;
        gpurnn_optimizer_kind kind;
    };
    const Case cases[] = {
        {GPURNN_F64, false, GPURNN_SGD}, {GPURNN_F64, true, GPURNN_SGD}, {GPURNN_F64, true, GPURNN_ADAGRAD},
        {GPURNN_F64, true, GPURNN_ADAM}, {GPURNN_F32, true, GPURNN_SGD}, {GPURNN_F32, true, GPURNN_ADAGRAD},
        {GPURNN_F32, true, GPURNN_ADAM},
    };
    uint64_t seed = 80;
    for (const Case &c : cases) {
        SCOPED_TRACE(std::string(dtype_name(c.dt)) + (c.started ? " optimizer " + std::to_string(c.kind) : " no optimizer"));
        RandomModel r = trained(c.dt, c.started, c.kind, seed++);
        ASSERT_TRUE(r.m);
        const std::string path = dir.file("model.ckpt");
        const Snapshot orig = Snapshot::take(r.m.get());
        ASSERT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), orig)) << "save changed the model";
        EXPECT_EQ(dir.list().size(), 1u) << "save left extra files beside the checkpoint";

        ModelPtr l = load(path, backend());
        ASSERT_TRUE(l);
        EXPECT_EQ(gpurnn_model_backend(l.get()), backend());
        const gpurnn_config a = get_config(r.m.get()), b = get_config(l.get());
        EXPECT_EQ(b.vocab_size, a.vocab_size);
        EXPECT_EQ(b.hidden_size, a.hidden_size);
        EXPECT_EQ(b.batch_size, a.batch_size);
        EXPECT_EQ(b.max_seq_len, a.max_seq_len);
        EXPECT_EQ(b.dtype, c.dt);
        EXPECT_EQ(b.reduction, a.reduction);
        EXPECT_EQ(b.seed, a.seed);
        EXPECT_EQ(b.init_scale, a.init_scale);
        EXPECT_TRUE(bit_equal(get_params(l.get()), orig.params));
        EXPECT_TRUE(bit_equal(get_state(l.get()), orig.state));
        for (double g : get_grads(l.get()))
            ASSERT_EQ(g, 0.0) << "a loaded model starts with zero gradients";
        EXPECT_TRUE(failed_with(gpurnn_backward(l.get()), GPURNN_ERR_INVALID_STATE))
            << "a loaded model has no forward pass to backpropagate";

        /* One more identical step on both: identical losses and parameters, so the
         * optimizer state (moments, Adam's t) came through too. */
        Rng rng(seed * 3);
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        const gpurnn_optimizer o = opt_of(c.kind);
        double la = 0, lb = 1;
        for (gpurnn_model *m : {r.m.get(), l.get()}) {
            ASSERT_EQ(gpurnn_zero_grad(m), GPURNN_OK);
            ASSERT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, m == r.m.get() ? &la : &lb), GPURNN_OK);
            ASSERT_EQ(gpurnn_backward(m), GPURNN_OK);
            ASSERT_EQ(gpurnn_step(m, &o), GPURNN_OK) << gpurnn_last_error();
        }
        EXPECT_EQ(la, lb);
        EXPECT_TRUE(bit_equal(get_params(l.get()), get_params(r.m.get()))) << "after one more step";
        EXPECT_TRUE(bit_equal(get_state(l.get()), get_state(r.m.get())));
        if (c.started) {
            /* the optimizer state keeps its kind through the file */
            const gpurnn_optimizer other = opt_of(c.kind == GPURNN_ADAM ? GPURNN_SGD : GPURNN_ADAM);
            EXPECT_TRUE(failed_with(gpurnn_step(l.get(), &other), GPURNN_ERR_INVALID_ARGUMENT));
        }
    }
}

TEST_P(CheckpointTest, LoadsOnAnyBackendWithIdenticalParameters)
{
    /* written by the CPU backend, loaded on this one (and on AUTO) */
    TempDir dir;
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        RandomModel r = make_random_model(GPURNN_BACKEND_CPU, dt, V, H, B, T, GPURNN_LOSS_SUM, 85);
        ASSERT_TRUE(r.m);
        const std::string path = dir.file(std::string("cpu-") + dtype_name(dt) + ".ckpt");
        ASSERT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
        for (gpurnn_backend b : {backend(), GPURNN_BACKEND_AUTO}) {
            ModelPtr l = load(path, b);
            ASSERT_TRUE(l);
            EXPECT_NE(gpurnn_model_backend(l.get()), GPURNN_BACKEND_AUTO);
            EXPECT_TRUE(bit_equal(get_params(l.get()), r.params));
            EXPECT_TRUE(bit_equal(get_state(l.get()), r.state));
        }
    }
}

TEST_P(CheckpointTest, FileFollowsTheDocumentedLayout)
{
    TempDir dir;
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        for (gpurnn_optimizer_kind kind : {GPURNN_SGD, GPURNN_ADAM}) {
            RandomModel r = trained(dt, true, kind, 86);
            ASSERT_TRUE(r.m);
            const std::string path = dir.file("layout.ckpt");
            ASSERT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK);
            const std::vector<unsigned char> b = read_file(path);
            const size_t e = dt == GPURNN_F64 ? 8 : 4, P = ref_param_count(V, H), S = B * H;
            const size_t slots = kind == GPURNN_ADAM ? 2 : 1;
            ASSERT_EQ(b.size(), HEADER + e * (P * (1 + slots) + S) + 8);
            const unsigned char magic[8] = {0x89, 'G', 'P', 'U', 'R', 'N', 'N', '\n'};
            EXPECT_EQ(std::memcmp(b.data(), magic, 8), 0);
            EXPECT_EQ(get_u32(b, OFF_VERSION), 3u);
            EXPECT_EQ(get_u32(b, OFF_DTYPE), dt == GPURNN_F64 ? 1u : 0u);
            EXPECT_EQ(get_u32(b, OFF_ELEMENT_BYTES), e);
            EXPECT_EQ(get_u32(b, OFF_V), (uint32_t)V);
            EXPECT_EQ(get_u32(b, OFF_H), (uint32_t)H);
            EXPECT_EQ(get_u32(b, OFF_B), (uint32_t)B);
            EXPECT_EQ(get_u32(b, OFF_MAXT), (uint32_t)T);
            EXPECT_EQ(get_u32(b, OFF_RED), 1u);
            EXPECT_EQ(get_u64(b, OFF_SEED), r.cfg.seed);
            EXPECT_EQ(get_f64(b, OFF_INIT_SCALE), r.cfg.init_scale);
            EXPECT_EQ(get_u32(b, OFF_OPT_STARTED), 1u);
            EXPECT_EQ(get_u32(b, OFF_OPT_KIND), (uint32_t)kind);
            EXPECT_EQ(get_u64(b, OFF_OPT_STEPS), 2u);
            EXPECT_EQ(get_u32(b, OFF_OPT_SLOTS), slots);
            EXPECT_EQ(get_u32(b, OFF_RESERVED), 0u);
            EXPECT_EQ(get_u64(b, OFF_PARAM_COUNT), P);
            EXPECT_EQ(get_u64(b, OFF_STATE_COUNT), S);
            EXPECT_EQ(get_u64(b, OFF_FILE_SIZE), b.size());
            EXPECT_EQ(get_u64(b, OFF_USER_DATA_BYTES), 0u);
            EXPECT_EQ(get_u32(b, OFF_CELL), 0u) << "tanh";
            EXPECT_EQ(get_u32(b, OFF_NUM_LAYERS), 1u);
            EXPECT_EQ(get_u64(b, b.size() - 8), crc64_xz(b.data(), b.size() - 8));
            std::vector<double> params(P), state(S);
            for (size_t i = 0; i < P; ++i)
                params[i] = e == 8 ? get_f64(b, HEADER + i * e) : get_f32(b, HEADER + i * e);
            const size_t state_off = HEADER + e * P * (1 + slots);
            for (size_t i = 0; i < S; ++i)
                state[i] = e == 8 ? get_f64(b, state_off + i * e) : get_f32(b, state_off + i * e);
            EXPECT_TRUE(bit_equal(params, r.params));
            EXPECT_TRUE(bit_equal(state, r.state));
        }
        /* no optimizer: no slots */
        RandomModel r0 = trained(dt, false, GPURNN_SGD, 87);
        ASSERT_TRUE(r0.m);
        const std::string path = dir.file("fresh.ckpt");
        ASSERT_EQ(gpurnn_model_save(r0.m.get(), path.c_str()), GPURNN_OK);
        const std::vector<unsigned char> b = read_file(path);
        const size_t e = dt == GPURNN_F64 ? 8 : 4;
        EXPECT_EQ(b.size(), HEADER + e * (ref_param_count(V, H) + B * H) + 8);
        EXPECT_EQ(get_u32(b, OFF_OPT_STARTED), 0u);
        EXPECT_EQ(get_u32(b, OFF_OPT_SLOTS), 0u);
    }
}

TEST_P(CheckpointTest, CraftedFileLoadsWithItsValues)
{
    /* A file edited by hand (a parameter and a state value changed, checksum redone)
     * loads with exactly those values: the loader reads the documented positions. */
    TempDir dir;
    std::vector<unsigned char> b = saved_bytes(dir, GPURNN_F64, false);
    ASSERT_FALSE(b.empty());
    const size_t P = ref_param_count(V, H);
    put_value(b, HEADER + 8 * ref_off_whh(V, H), 0.625, 8);
    put_value(b, HEADER + 8 * P + 8 * (B * H - 1), -0.375, 8);
    fix_crc(b);
    const std::string path = dir.file("edited.ckpt");
    write_file(path, b);
    ModelPtr l = load(path, backend());
    ASSERT_TRUE(l);
    EXPECT_EQ(get_params(l.get())[ref_off_whh(V, H)], 0.625);
    EXPECT_EQ(get_state(l.get())[B * H - 1], -0.375);
}

TEST_P(CheckpointTest, TruncatedFilesAreFormatErrors)
{
    TempDir dir;
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const std::vector<unsigned char> b = saved_bytes(dir, dt);
        ASSERT_GT(b.size(), (size_t)HEADER);
        const std::string path = dir.file("cut.ckpt");
        for (size_t len = 0; len < b.size(); ++len) {
            write_file(path, std::vector<unsigned char>(b.begin(), b.begin() + len));
            ASSERT_TRUE(load_fails(path, backend(), GPURNN_ERR_FORMAT)) << "truncated to " << len << " of "
                                                                        << b.size() << " bytes";
        }
        /* and a byte too many */
        std::vector<unsigned char> longer = b;
        longer.push_back(0);
        write_file(path, longer);
        EXPECT_TRUE(load_fails(path, backend(), GPURNN_ERR_FORMAT)) << "one trailing byte";
        longer = b;
        longer.insert(longer.end(), b.begin(), b.end());
        write_file(path, longer);
        EXPECT_TRUE(load_fails(path, backend(), GPURNN_ERR_FORMAT)) << "the file twice";
    }
}

TEST_P(CheckpointTest, EveryDamagedByteIsDetected)
{
    TempDir dir;
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const std::vector<unsigned char> b = saved_bytes(dir, dt);
        ASSERT_FALSE(b.empty());
        const std::string path = dir.file("flip.ckpt");
        for (size_t i = 0; i < b.size(); ++i) {
            for (unsigned char mask : {0x01, 0x80, 0xff}) {
                std::vector<unsigned char> d = b;
                d[i] ^= mask;
                write_file(path, d);
                ASSERT_TRUE(load_fails(path, backend(), GPURNN_ERR_FORMAT))
                    << "byte " << i << " of " << b.size() << " xor 0x" << std::hex << (int)mask;
            }
        }
        /* random bursts of a few bytes */
        Rng rng(17);
        for (int k = 0; k < 200; ++k) {
            std::vector<unsigned char> d = b;
            const size_t at = (size_t)rng.below((int)b.size() - 8);
            const int len = 1 + rng.below(8);
            bool changed = false;
            for (int j = 0; j < len; ++j) {
                const unsigned char x = (unsigned char)rng.below(256);
                changed |= x != 0;
                d[at + j] ^= x;
            }
            if (!changed)
                continue;
            write_file(path, d);
            ASSERT_TRUE(load_fails(path, backend(), GPURNN_ERR_FORMAT)) << "burst at " << at << " length " << len;
        }
    }
}

TEST_P(CheckpointTest, BadHeaderFieldsBehindAValidChecksum)
{
    TempDir dir;
    const std::vector<unsigned char> base = saved_bytes(dir, GPURNN_F64);
    ASSERT_FALSE(base.empty());
    const std::string path = dir.file("crafted.ckpt");
    struct Edit {
        const char *what;
        std::function<void(std::vector<unsigned char> &)> apply;
        const char *message_word;   /* the message should mention this (case-insensitive), or "" */
    };
    const uint64_t big = 0x7fffffffULL;
    const Edit edits[] = {
        {"wrong magic", [](std::vector<unsigned char> &b) { std::memcpy(b.data(), "NOTRNN\n\0", 8); }, "magic"},
        {"text-mode damaged magic", [](std::vector<unsigned char> &b) { b[0] = 0x09; }, "magic"},
        {"version 4", [](std::vector<unsigned char> &b) { put_u32(b, OFF_VERSION, 4); }, "version 4"},
        {"version 0", [](std::vector<unsigned char> &b) { put_u32(b, OFF_VERSION, 0); }, "version"},
        {"version 0xffffffff", [](std::vector<unsigned char> &b) { put_u32(b, OFF_VERSION, 0xffffffffu); }, "version"},
        {"dtype 2", [](std::vector<unsigned char> &b) { put_u32(b, OFF_DTYPE, 2); }, ""},
        {"element_bytes 4 for float64", [](std::vector<unsigned char> &b) { put_u32(b, OFF_ELEMENT_BYTES, 4); }, ""},
        {"V = 0", [](std::vector<unsigned char> &b) { put_u32(b, OFF_V, 0); }, ""},
        {"H = 2^31", [](std::vector<unsigned char> &b) { put_u32(b, OFF_H, 0x80000000u); }, ""},
        {"B = 0", [](std::vector<unsigned char> &b) { put_u32(b, OFF_B, 0); }, ""},
        {"max_seq_len = 0", [](std::vector<unsigned char> &b) { put_u32(b, OFF_MAXT, 0); }, ""},
        /* max_seq_len is the one size no bytes of the file back: beyond the format's limit
         * (2^24) it is refused rather than allocated (found by fuzz/fuzz_checkpoint_load) */
        {"max_seq_len = 2^24 + 1",
         [](std::vector<unsigned char> &b) { put_u32(b, OFF_MAXT, (1u << 24) + 1); }, "max_seq_len"},
        {"max_seq_len = 2^31 - 1", [big](std::vector<unsigned char> &b) { put_u32(b, OFF_MAXT, (uint32_t)big); },
         "max_seq_len"},
        {"reduction 2", [](std::vector<unsigned char> &b) { put_u32(b, OFF_RED, 2); }, ""},
        {"init_scale NaN", [](std::vector<unsigned char> &b) { put_value(b, OFF_INIT_SCALE, NAN, 8); }, ""},
        {"init_scale -1", [](std::vector<unsigned char> &b) { put_value(b, OFF_INIT_SCALE, -1.0, 8); }, ""},
        {"optimizer kind 3", [](std::vector<unsigned char> &b) { put_u32(b, OFF_OPT_KIND, 3); }, ""},
        {"optimizer started 2", [](std::vector<unsigned char> &b) { put_u32(b, OFF_OPT_STARTED, 2); }, ""},
        {"Adam with 1 slot", [](std::vector<unsigned char> &b) { put_u32(b, OFF_OPT_SLOTS, 1); }, ""},
        {"reserved 1", [](std::vector<unsigned char> &b) { put_u32(b, OFF_RESERVED, 1); }, ""},
        {"param_count off by one",
         [](std::vector<unsigned char> &b) { put_u64(b, OFF_PARAM_COUNT, get_u64(b, OFF_PARAM_COUNT) + 1); }, ""},
        {"state_count off by one",
         [](std::vector<unsigned char> &b) { put_u64(b, OFF_STATE_COUNT, get_u64(b, OFF_STATE_COUNT) - 1); }, ""},
        {"file_size off by 8",
         [](std::vector<unsigned char> &b) { put_u64(b, OFF_FILE_SIZE, get_u64(b, OFF_FILE_SIZE) + 8); }, ""},
        /* absurd sizes: consistent header fields that describe a model far larger than the
         * file (the loader must answer FORMAT, not try to allocate it) */
        {"V = H = 2^31-1 (sizes overflow 64 bits)",
         [big](std::vector<unsigned char> &b) {
             put_u32(b, OFF_V, (uint32_t)big);
             put_u32(b, OFF_H, (uint32_t)big);
             put_u64(b, OFF_PARAM_COUNT, 2 * big * big + big * big + 2 * big);
         },
         ""},
        {"V = H = 10^6 with consistent counts and file_size",
         [](std::vector<unsigned char> &b) {
             const uint64_t v = 1000000, h = 1000000, B = get_u32(b, OFF_B);
             const uint64_t P = 2 * h * v + h * h + h + v, S = B * h;
             put_u32(b, OFF_V, (uint32_t)v);
             put_u32(b, OFF_H, (uint32_t)h);
             put_u64(b, OFF_PARAM_COUNT, P);
             put_u64(b, OFF_STATE_COUNT, S);
             put_u64(b, OFF_FILE_SIZE, HEADER + 8 * (P * 3 + S) + 8);
         },
         ""},
        {"B = 2^31-1 with consistent counts and file_size",
         [big](std::vector<unsigned char> &b) {
             const uint64_t P = get_u64(b, OFF_PARAM_COUNT), S = big * get_u32(b, OFF_H);
             put_u32(b, OFF_B, (uint32_t)big);
             put_u64(b, OFF_STATE_COUNT, S);
             put_u64(b, OFF_FILE_SIZE, HEADER + 8 * (P * 3 + S) + 8);
         },
         ""},
        /* the cell and the number of layers (format v3) */
        {"cell 4", [](std::vector<unsigned char> &b) { put_u32(b, OFF_CELL, 4); }, "cell 4"},
        {"cell 2^32 - 1", [](std::vector<unsigned char> &b) { put_u32(b, OFF_CELL, 0xffffffffu); }, "cell 4294967295"},
        {"num_layers 0", [](std::vector<unsigned char> &b) { put_u32(b, OFF_NUM_LAYERS, 0); }, "num_layers 0"},
        {"num_layers GPURNN_MAX_LAYERS + 1",
         [](std::vector<unsigned char> &b) { put_u32(b, OFF_NUM_LAYERS, GPURNN_MAX_LAYERS + 1); },
         "num_layers 1025"},
        {"num_layers 2^32 - 1", [](std::vector<unsigned char> &b) { put_u32(b, OFF_NUM_LAYERS, 0xffffffffu); },
         "num_layers 4294967295"},
        /* a valid cell or L whose layout the counts do not match */
        {"cell GRU with the tanh param_count", [](std::vector<unsigned char> &b) { put_u32(b, OFF_CELL, 2); },
         "param_count"},
        {"cell ReLU with a GRU param_count",
         [](std::vector<unsigned char> &b) {
             const uint64_t v = get_u32(b, OFF_V), h = get_u32(b, OFF_H);
             put_u32(b, OFF_CELL, 1);
             put_u64(b, OFF_PARAM_COUNT, 3 * h * (v + h) + v * h + 2 * 3 * h + v);
         },
         "param_count"},
        {"num_layers 2 with the one-layer param_count",
         [](std::vector<unsigned char> &b) { put_u32(b, OFF_NUM_LAYERS, 2); }, "param_count"},
        {"LSTM with its param_count but a one-layer state_count of h only",
         [](std::vector<unsigned char> &b) {
             const uint64_t v = get_u32(b, OFF_V), h = get_u32(b, OFF_H);
             put_u32(b, OFF_CELL, 3);
             put_u64(b, OFF_PARAM_COUNT, 4 * h * (v + h) + v * h + 2 * 4 * h + v);
         },
         "state_count"},
        {"1024 GRU layers with H = 2^31-1 (the parameter count overflows 64 bits)",
         [big](std::vector<unsigned char> &b) {
             put_u32(b, OFF_CELL, 2);
             put_u32(b, OFF_NUM_LAYERS, GPURNN_MAX_LAYERS);
             put_u32(b, OFF_H, (uint32_t)big);
         },
         "absurd"},
        {"1024 LSTM layers with H = 2^23, B = 2^31-1 (only the state count overflows 64 bits)",
         [big](std::vector<unsigned char> &b) {
             put_u32(b, OFF_CELL, 3);
             put_u32(b, OFF_NUM_LAYERS, GPURNN_MAX_LAYERS);
             put_u32(b, OFF_V, 1);
             put_u32(b, OFF_H, 1u << 23);
             put_u32(b, OFF_B, (uint32_t)big);
         },
         "absurd"},
        /* bad values are named by their place in the layout: V = 6, H = 5, B = 2 */
        {"a NaN parameter", [](std::vector<unsigned char> &b) { put_value(b, HEADER + 8 * 3, NAN, 8); },
         "parameter wxh[0, 3] is nan"},
        {"an infinite carried state value",
         [](std::vector<unsigned char> &b) { put_value(b, b.size() - 16, INFINITY, 8); },
         "carried state at b=1, unit 4 is inf"},
        {"a negative Adam second moment",
         [](std::vector<unsigned char> &b) {
             const size_t P = get_u64(b, OFF_PARAM_COUNT);
             put_value(b, HEADER + 8 * (2 * P + 1), -1.0, 8);
         },
         ""},
    };
    for (const Edit &e : edits) {
        std::vector<unsigned char> b = base;
        e.apply(b);
        fix_crc(b);
        write_file(path, b);
        auto r = load_fails(path, backend(), GPURNN_ERR_FORMAT);
        ASSERT_TRUE(r) << e.what;
        if (*e.message_word) {
            std::string msg = r.message(), low;
            for (char ch : msg)
                low += (char)std::tolower((unsigned char)ch);
            EXPECT_NE(low.find(e.message_word), std::string::npos)
                << e.what << ": message should say '" << e.message_word << "': " << msg;
        }
    }
    /* the unedited base (re-checksummed) still loads: the edits, not the helper, failed */
    std::vector<unsigned char> b = base;
    fix_crc(b);
    EXPECT_EQ(b, base) << "the test's CRC differs from the library's";
    write_file(path, b);
    ModelPtr l = load(path, backend());
    EXPECT_TRUE(l);
}

TEST_P(CheckpointTest, IoErrors)
{
    TempDir dir;
    RandomModel r = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 88);
    ASSERT_TRUE(r.m);
    /* a missing file */
    {
        auto res = load_fails(dir.file("missing.ckpt"), backend(), GPURNN_ERR_IO);
        EXPECT_TRUE(res);
        EXPECT_NE(std::string(res.message()).find("missing.ckpt"), std::string::npos)
            << "the message should name the path: " << res.message();
    }
    /* a directory is not a checkpoint file */
    {
        gpurnn_model *out = kSentinel;
        const gpurnn_status st = gpurnn_model_load(dir.path().c_str(), backend(), &out);
        EXPECT_TRUE(st == GPURNN_ERR_IO || st == GPURNN_ERR_FORMAT) << gpurnn_status_string(st);
        EXPECT_NE(gpurnn_last_error()[0], '\0');
        EXPECT_EQ(out, kSentinel);
    }
    /* saving into a directory that does not exist */
    {
        const std::string bad = dir.file("no/such/dir/model.ckpt");
        const Snapshot before = Snapshot::take(r.m.get());
        EXPECT_TRUE(failed_with(gpurnn_model_save(r.m.get(), bad.c_str()), GPURNN_ERR_IO));
        EXPECT_NE(std::string(gpurnn_last_error()).find("no/such/dir"), std::string::npos)
            << "the message should name the path: " << gpurnn_last_error();
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    }
    /* saving over a directory: IO, the directory stays, no temporary file is left */
    {
        const std::string target = dir.file("adir");
        ASSERT_EQ(mkdir(target.c_str(), 0755), 0);
        EXPECT_TRUE(failed_with(gpurnn_model_save(r.m.get(), target.c_str()), GPURNN_ERR_IO));
        struct stat st;
        ASSERT_EQ(stat(target.c_str(), &st), 0);
        EXPECT_TRUE(S_ISDIR(st.st_mode));
        EXPECT_EQ(dir.list().size(), 1u) << "a failed save left a file behind";
        rmdir(target.c_str());
    }
    /* a path whose parent is a regular file */
    {
        const std::string file = dir.file("plain");
        write_file(file, {1, 2, 3});
        EXPECT_TRUE(failed_with(gpurnn_model_save(r.m.get(), (file + "/inner.ckpt").c_str()), GPURNN_ERR_IO));
        EXPECT_EQ(read_file(file), (std::vector<unsigned char>{1, 2, 3}));
    }
}

TEST_P(CheckpointTest, LimitsOfSaveAreCheckedAtCreation)
{
    /* What a checkpoint cannot hold (max_seq_len > GPURNN_MAX_SEQ_LEN = 2^24) is refused by
     * create, naming the value and the limit; a model at the limit saves and loads. */
    ASSERT_EQ(GPURNN_MAX_SEQ_LEN, 1 << 24);
    gpurnn_model *out = kSentinel;
    const gpurnn_config over = make_config(backend(), GPURNN_F32, 1, 1, 1, GPURNN_MAX_SEQ_LEN + 1);
    const gpurnn_status st = gpurnn_model_create(&over, &out);
    const std::string msg = gpurnn_last_error();
    EXPECT_EQ(st, GPURNN_ERR_INVALID_ARGUMENT) << gpurnn_status_string(st) << ": " << msg;
    EXPECT_NE(msg.find("max_seq_len = 16777217"), std::string::npos) << msg;
    EXPECT_NE(msg.find("16777216"), std::string::npos) << "the message should give the limit: " << msg;
    EXPECT_EQ(out, kSentinel);

    TempDir dir;
    ModelPtr m = create_model(make_config(backend(), GPURNN_F32, 1, 1, 1, GPURNN_MAX_SEQ_LEN));
    ASSERT_TRUE(m);
    const std::string path = dir.file("long.ckpt");
    ASSERT_EQ(gpurnn_model_save(m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    ModelPtr l = load(path, backend());
    ASSERT_TRUE(l);
    EXPECT_EQ(get_config(l.get()).max_seq_len, GPURNN_MAX_SEQ_LEN);
}

TEST_P(CheckpointTest, FailedSaveLeavesTheExistingFileIntact)
{
    /* The write of the new file fails half-way (RLIMIT_FSIZE makes write() fail with
     * EFBIG, even for root): IO, the old checkpoint at the path is untouched and still
     * loads, and the temporary file is removed. */
    TempDir dir;
    RandomModel small = make_random_model(backend(), GPURNN_F32, 2, 2, 1, 2, GPURNN_LOSS_SUM, 93);
    RandomModel large = make_random_model(backend(), GPURNN_F64, 60, 50, 2, 2, GPURNN_LOSS_SUM, 94);
    ASSERT_TRUE(small.m);
    ASSERT_TRUE(large.m);
    const std::string path = dir.file("keep.ckpt");
    ASSERT_EQ(gpurnn_model_save(small.m.get(), path.c_str()), GPURNN_OK);
    const std::vector<unsigned char> old_bytes = read_file(path);
    ASSERT_LT(old_bytes.size(), 4096u);

    struct rlimit saved;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = saved;
    lim.rlim_cur = 4096;   /* the large model's file is ~100 KB */
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const gpurnn_status st = gpurnn_model_save(large.m.get(), path.c_str());
    const std::string msg = gpurnn_last_error();
    setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);

    EXPECT_EQ(st, GPURNN_ERR_IO) << gpurnn_status_string(st) << ": " << msg;
    EXPECT_FALSE(msg.empty());
    EXPECT_EQ(read_file(path), old_bytes) << "the existing checkpoint was changed by a failed save";
    EXPECT_EQ(dir.list(), std::vector<std::string>{"keep.ckpt"}) << "a failed save left a file behind";
    ModelPtr l = load(path, backend());
    ASSERT_TRUE(l);
    EXPECT_TRUE(bit_equal(get_params(l.get()), small.params));
}

TEST_P(CheckpointTest, SaveReplacesAtomically)
{
    TempDir dir;
    RandomModel a = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 91);
    RandomModel b = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 92);
    ASSERT_TRUE(a.m);
    ASSERT_TRUE(b.m);
    const std::string path = dir.file("m.ckpt");
    ASSERT_EQ(gpurnn_model_save(a.m.get(), path.c_str()), GPURNN_OK);
    ASSERT_EQ(chmod(path.c_str(), 0600), 0);
    /* a stale temporary file of a killed save is cleaned up by the next save */
    write_file(path + ".tmp-AbC123", {1, 2, 3});
    ASSERT_EQ(gpurnn_model_save(b.m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    ModelPtr l = load(path, backend());
    ASSERT_TRUE(l);
    EXPECT_TRUE(bit_equal(get_params(l.get()), b.params));
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << "the new file keeps the permission bits of the one it replaces";
    EXPECT_EQ(dir.list(), std::vector<std::string>{"m.ckpt"});

    /* a symbolic link at the path is replaced by the file, not followed */
    const std::string target = dir.file("target.ckpt"), link = dir.file("link.ckpt");
    ASSERT_EQ(gpurnn_model_save(a.m.get(), target.c_str()), GPURNN_OK);
    const std::vector<unsigned char> target_bytes = read_file(target);
    ASSERT_EQ(symlink("target.ckpt", link.c_str()), 0);
    ASSERT_EQ(gpurnn_model_save(b.m.get(), link.c_str()), GPURNN_OK) << gpurnn_last_error();
    ASSERT_EQ(lstat(link.c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode)) << "the link should have been replaced by a regular file";
    EXPECT_EQ(read_file(target), target_bytes) << "the link's target must not be written";
}

/* ---------- user data, memory buffers, version 1 ---------- */

namespace {

/* A blob with every byte value, of odd length: a stand-in for a vocabulary. */
std::vector<unsigned char> sample_blob(size_t n = 301)
{
    std::vector<unsigned char> b(n);
    for (size_t i = 0; i < n; ++i)
        b[i] = (unsigned char)(i * 7 + 3);
    return b;
}

/* Owns a blob returned by the library. */
struct UserData {
    void *data = nullptr;
    size_t size = 0;
    ~UserData() { gpurnn_user_data_free(data); }
    std::vector<unsigned char> bytes() const
    {
        const unsigned char *p = static_cast<const unsigned char *>(data);
        return std::vector<unsigned char>(p, p + size);
    }
};

std::vector<unsigned char> save_to_memory(const gpurnn_model *m, const std::vector<unsigned char> &blob)
{
    size_t size = 0;
    EXPECT_EQ(gpurnn_model_save_size(m, blob.size(), &size), GPURNN_OK) << gpurnn_last_error();
    std::vector<unsigned char> buf(size, 0xA5);
    size_t written = 0;
    EXPECT_EQ(gpurnn_model_save_to_memory(m, blob.data(), blob.size(), buf.data(), buf.size(), &written), GPURNN_OK)
        << gpurnn_last_error();
    EXPECT_EQ(written, size);
    return buf;
}

/* Loads bytes from memory expecting `want`; the outputs must stay untouched. */
::testing::AssertionResult memory_load_fails(const std::vector<unsigned char> &bytes, gpurnn_backend backend,
                                             gpurnn_status want)
{
    gpurnn_model *out = kSentinel;
    void *const data_sentinel = reinterpret_cast<void *>(static_cast<uintptr_t>(0xda7a));
    void *data = data_sentinel;
    size_t size = 12345;
    const gpurnn_status st = gpurnn_model_load_from_memory(bytes.data(), bytes.size(), backend, &data, &size, &out);
    const std::string msg = gpurnn_last_error();
    if (st == GPURNN_OK) {
        gpurnn_model_destroy(out);
        gpurnn_user_data_free(data);
        return ::testing::AssertionFailure() << "loaded successfully, expected " << gpurnn_status_string(want);
    }
    if (st != want)
        return ::testing::AssertionFailure() << "status " << gpurnn_status_string(st) << ": " << msg;
    if (msg.empty())
        return ::testing::AssertionFailure() << "empty gpurnn_last_error()";
    if (out != kSentinel || data != data_sentinel || size != 12345)
        return ::testing::AssertionFailure() << "an output was changed on failure";
    return ::testing::AssertionSuccess() << msg;
}

}  // namespace

TEST_P(CheckpointTest, UserDataRoundTripsAndMemoryEqualsFile)
{
    TempDir dir;
    const std::vector<unsigned char> blob = sample_blob();
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = trained(dt, true, GPURNN_ADAM, 95);
        ASSERT_TRUE(r.m);
        const Snapshot orig = Snapshot::take(r.m.get());
        const std::string path = dir.file("blob.ckpt");
        ASSERT_EQ(gpurnn_model_save_with_user_data(r.m.get(), blob.data(), blob.size(), path.c_str()), GPURNN_OK)
            << gpurnn_last_error();
        const std::vector<unsigned char> file = read_file(path);
        const std::vector<unsigned char> memory = save_to_memory(r.m.get(), blob);
        EXPECT_EQ(memory, file) << "a memory save must hold the bytes of a file save";
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), orig)) << "save changed the model";

        /* the documented layout: user_data_bytes in the header, the blob before the checksum */
        const size_t e = dt == GPURNN_F64 ? 8 : 4, P = ref_param_count(V, H), S = B * H;
        ASSERT_EQ(file.size(), HEADER + e * (P * 3 + S) + blob.size() + 8);
        EXPECT_EQ(get_u64(file, OFF_USER_DATA_BYTES), blob.size());
        EXPECT_EQ(get_u64(file, OFF_FILE_SIZE), file.size());
        EXPECT_TRUE(std::equal(blob.begin(), blob.end(), file.end() - 8 - blob.size()));
        EXPECT_EQ(get_u64(file, file.size() - 8), crc64_xz(file.data(), file.size() - 8));

        /* back from the file and from memory: the same model and the same blob */
        for (bool from_memory : {false, true}) {
            SCOPED_TRACE(from_memory ? "from memory" : "from the file");
            UserData u;
            gpurnn_model *m = nullptr;
            const gpurnn_status st =
                from_memory ? gpurnn_model_load_from_memory(file.data(), file.size(), backend(), &u.data, &u.size, &m)
                            : gpurnn_model_load_with_user_data(path.c_str(), backend(), &u.data, &u.size, &m);
            ASSERT_EQ(st, GPURNN_OK) << gpurnn_last_error();
            ModelPtr l(m);
            EXPECT_EQ(u.bytes(), blob);
            EXPECT_TRUE(bit_equal(get_params(l.get()), orig.params));
            EXPECT_TRUE(bit_equal(get_state(l.get()), orig.state));
            /* saved again with its blob, it gives the same bytes: optimizer state included */
            EXPECT_EQ(save_to_memory(l.get(), u.bytes()), file);
        }
        /* the plain loader and a NULL pair ignore the blob */
        ModelPtr plain = load(path, backend());
        ASSERT_TRUE(plain);
        EXPECT_TRUE(bit_equal(get_params(plain.get()), orig.params));
        gpurnn_model *m = nullptr;
        ASSERT_EQ(gpurnn_model_load_from_memory(file.data(), file.size(), backend(), nullptr, nullptr, &m), GPURNN_OK);
        gpurnn_model_destroy(m);
    }
    /* no user data: size 0, NULL pointer; the plain save writes the same bytes */
    RandomModel r = trained(GPURNN_F32, false, GPURNN_SGD, 96);
    ASSERT_TRUE(r.m);
    const std::string path = dir.file("empty.ckpt");
    ASSERT_EQ(gpurnn_model_save(r.m.get(), path.c_str()), GPURNN_OK);
    EXPECT_EQ(read_file(path), save_to_memory(r.m.get(), {}));
    UserData u;
    u.data = kSentinel;
    u.size = 7;
    gpurnn_model *m = nullptr;
    ASSERT_EQ(gpurnn_model_load_with_user_data(path.c_str(), backend(), &u.data, &u.size, &m), GPURNN_OK);
    gpurnn_model_destroy(m);
    EXPECT_EQ(u.data, nullptr);
    EXPECT_EQ(u.size, 0u);
}

TEST_P(CheckpointTest, UserDataArgumentsAreChecked)
{
    TempDir dir;
    RandomModel r = trained(GPURNN_F64, true, GPURNN_SGD, 97);
    ASSERT_TRUE(r.m);
    const std::vector<unsigned char> blob = sample_blob(10);
    const std::string path = dir.file("m.ckpt");
    const Snapshot orig = Snapshot::take(r.m.get());
    /* refused before anything is written: no file appears */
    EXPECT_TRUE(failed_with(gpurnn_model_save_with_user_data(r.m.get(), nullptr, 5, path.c_str()),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_NE(std::string(gpurnn_last_error()).find("user_data"), std::string::npos) << gpurnn_last_error();
    EXPECT_TRUE(failed_with(
        gpurnn_model_save_with_user_data(r.m.get(), blob.data(), GPURNN_USER_DATA_MAX + 1, path.c_str()),
        GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_NE(std::string(gpurnn_last_error()).find(std::to_string(GPURNN_USER_DATA_MAX)), std::string::npos)
        << "the message should give the limit: " << gpurnn_last_error();
    EXPECT_TRUE(dir.list().empty()) << "a refused save left a file";
    size_t size = 99;
    EXPECT_TRUE(failed_with(gpurnn_model_save_size(r.m.get(), GPURNN_USER_DATA_MAX + 1, &size),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_save_size(nullptr, 0, &size), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_save_size(r.m.get(), 0, nullptr), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(size, 99u);

    /* a buffer one byte too small: refused, naming the size needed, and left as it was */
    ASSERT_EQ(gpurnn_model_save_size(r.m.get(), blob.size(), &size), GPURNN_OK);
    std::vector<unsigned char> buf(size, 0x5A);
    size_t written = 77;
    EXPECT_TRUE(failed_with(
        gpurnn_model_save_to_memory(r.m.get(), blob.data(), blob.size(), buf.data(), size - 1, &written),
        GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_NE(std::string(gpurnn_last_error()).find(std::to_string(size)), std::string::npos) << gpurnn_last_error();
    EXPECT_EQ(buf, std::vector<unsigned char>(size, 0x5A));
    EXPECT_EQ(written, 77u);
    EXPECT_TRUE(failed_with(gpurnn_model_save_to_memory(r.m.get(), blob.data(), blob.size(), nullptr, size, &written),
                            GPURNN_ERR_INVALID_ARGUMENT));
    /* a larger buffer is fine; only the checkpoint's bytes are written */
    std::vector<unsigned char> big(size + 16, 0x5A);
    ASSERT_EQ(gpurnn_model_save_to_memory(r.m.get(), blob.data(), blob.size(), big.data(), big.size(), nullptr),
              GPURNN_OK);
    EXPECT_EQ(std::vector<unsigned char>(big.end() - 16, big.end()), std::vector<unsigned char>(16, 0x5A));
    EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), orig));

    /* loading: half a user-data pair, NULL data, NULL out, a bad backend */
    big.resize(size);
    gpurnn_model *out = kSentinel;
    void *data = kSentinel;
    size_t n = 3;
    EXPECT_TRUE(failed_with(gpurnn_model_load_from_memory(big.data(), size, backend(), &data, nullptr, &out),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_load_from_memory(big.data(), size, backend(), nullptr, &n, &out),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_load_from_memory(nullptr, size, backend(), &data, &n, &out),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_load_from_memory(big.data(), size, backend(), &data, &n, nullptr),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_load_from_memory(big.data(), size, (gpurnn_backend)7, &data, &n, &out),
                            GPURNN_ERR_INVALID_ARGUMENT));
    write_file(path, big);
    EXPECT_TRUE(failed_with(gpurnn_model_load_with_user_data(path.c_str(), backend(), &data, nullptr, &out),
                            GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(out, kSentinel);
    EXPECT_EQ(data, (void *)kSentinel);
    EXPECT_EQ(n, 3u);
    gpurnn_user_data_free(nullptr);
}

TEST_P(CheckpointTest, EveryDamagedByteOfAFileWithUserDataIsDetected)
{
    /* A small float32 model with Adam state and a blob: every byte flipped, every
     * truncation and a byte too many, loaded from memory (the outputs stay untouched) and,
     * for every byte flipped, from a file. */
    TempDir dir;
    RandomModel r = make_random_model(backend(), GPURNN_F32, 3, 2, 1, 3, GPURNN_LOSS_SUM, 98);
    ASSERT_TRUE(r.m);
    Rng rng(5);
    std::vector<int32_t> in = random_tokens(3, 3, rng), tg = random_tokens(3, 3, rng);
    double loss;
    ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), 3, &loss), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
    const gpurnn_optimizer adam = opt_of(GPURNN_ADAM);
    ASSERT_EQ(gpurnn_step(r.m.get(), &adam), GPURNN_OK);
    const std::vector<unsigned char> b = save_to_memory(r.m.get(), sample_blob(40));
    ASSERT_GT(b.size(), (size_t)HEADER + 40);
    const std::string path = dir.file("flip.ckpt");
    for (size_t i = 0; i < b.size(); ++i) {
        for (unsigned char mask : {0x01, 0x80, 0xff}) {
            std::vector<unsigned char> d = b;
            d[i] ^= mask;
            ASSERT_TRUE(memory_load_fails(d, backend(), GPURNN_ERR_FORMAT))
                << "byte " << i << " of " << b.size() << " xor 0x" << std::hex << (int)mask;
            write_file(path, d);
            void *data = kSentinel;
            size_t n = 3;
            gpurnn_model *out = kSentinel;
            ASSERT_TRUE(failed_with(gpurnn_model_load_with_user_data(path.c_str(), backend(), &data, &n, &out),
                                    GPURNN_ERR_FORMAT))
                << "file, byte " << i << " xor 0x" << std::hex << (int)mask;
            ASSERT_TRUE(out == kSentinel && data == (void *)kSentinel && n == 3) << "an output changed";
        }
    }
    for (size_t len = 0; len < b.size(); ++len)
        ASSERT_TRUE(memory_load_fails(std::vector<unsigned char>(b.begin(), b.begin() + len), backend(),
                                      GPURNN_ERR_FORMAT))
            << "truncated to " << len;
    std::vector<unsigned char> longer = b;
    longer.push_back(0);
    EXPECT_TRUE(memory_load_fails(longer, backend(), GPURNN_ERR_FORMAT));
    /* behind a valid checksum: a user-data size that disagrees with the file */
    std::vector<unsigned char> d = b;
    put_u64(d, OFF_USER_DATA_BYTES, 41);
    fix_crc(d);
    EXPECT_TRUE(memory_load_fails(d, backend(), GPURNN_ERR_FORMAT));
    d = b;
    put_u64(d, OFF_USER_DATA_BYTES, (uint64_t)GPURNN_USER_DATA_MAX + 1);
    put_u64(d, OFF_FILE_SIZE, get_u64(d, OFF_FILE_SIZE) + GPURNN_USER_DATA_MAX + 1 - 40);
    fix_crc(d);
    EXPECT_TRUE(memory_load_fails(d, backend(), GPURNN_ERR_FORMAT));
}

TEST_P(CheckpointTest, FailedSaveWithUserDataLeavesTheExistingFileIntact)
{
    /* As FailedSaveLeavesTheExistingFileIntact, with a 100 KB blob making the file too
     * large for RLIMIT_FSIZE: IO, the old checkpoint and its blob intact, no temporary. */
    TempDir dir;
    RandomModel small = make_random_model(backend(), GPURNN_F32, 2, 2, 1, 2, GPURNN_LOSS_SUM, 99);
    ASSERT_TRUE(small.m);
    const std::string path = dir.file("keep.ckpt");
    const std::vector<unsigned char> old_blob = sample_blob(16), new_blob = sample_blob(100000);
    ASSERT_EQ(gpurnn_model_save_with_user_data(small.m.get(), old_blob.data(), old_blob.size(), path.c_str()),
              GPURNN_OK);
    const std::vector<unsigned char> old_bytes = read_file(path);
    struct rlimit saved;
    ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*old_handler)(int) = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = saved;
    lim.rlim_cur = 4096;
    ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
    const gpurnn_status st =
        gpurnn_model_save_with_user_data(small.m.get(), new_blob.data(), new_blob.size(), path.c_str());
    const std::string msg = gpurnn_last_error();
    setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);
    EXPECT_EQ(st, GPURNN_ERR_IO) << gpurnn_status_string(st) << ": " << msg;
    EXPECT_EQ(read_file(path), old_bytes);
    EXPECT_EQ(dir.list(), std::vector<std::string>{"keep.ckpt"});
    UserData u;
    gpurnn_model *m = nullptr;
    ASSERT_EQ(gpurnn_model_load_with_user_data(path.c_str(), backend(), &u.data, &u.size, &m), GPURNN_OK);
    gpurnn_model_destroy(m);
    EXPECT_EQ(u.bytes(), old_blob);
}

TEST_P(CheckpointTest, Version1FileWrittenByTheEarlierLibraryLoads)
{
    /* tests/data/v1-f64-v3h2b2-adam.ckpt, written by gpurnn_model_save in format v1
     * (tests/data/README.md): its configuration, exact parameters and state, Adam state of
     * one step, and no user data; saved again it becomes a v3 file with the same values. */
    const std::string path = std::string(GPURNN_TEST_DATA_DIR) + "/v1-f64-v3h2b2-adam.ckpt";
    const std::vector<unsigned char> v1 = read_file(path);
    ASSERT_EQ(v1.size(), 648u);
    ASSERT_EQ(get_u32(v1, OFF_VERSION), 1u);
    std::vector<double> params(21), state = {0.5, 0.25, 0.0, -0.25};
    for (int i = 0; i < 21; ++i)
        params[i] = (i - 10.0) / 8.0;
    for (bool from_memory : {false, true}) {
        SCOPED_TRACE(from_memory ? "from memory" : "from the file");
        UserData u;
        u.data = kSentinel;
        gpurnn_model *m = nullptr;
        const gpurnn_status st =
            from_memory ? gpurnn_model_load_from_memory(v1.data(), v1.size(), backend(), &u.data, &u.size, &m)
                        : gpurnn_model_load_with_user_data(path.c_str(), backend(), &u.data, &u.size, &m);
        ASSERT_EQ(st, GPURNN_OK) << gpurnn_last_error();
        ModelPtr l(m);
        EXPECT_EQ(u.data, nullptr);
        EXPECT_EQ(u.size, 0u);
        const gpurnn_config c = get_config(l.get());
        EXPECT_EQ(c.vocab_size, 3);
        EXPECT_EQ(c.hidden_size, 2);
        EXPECT_EQ(c.batch_size, 2);
        EXPECT_EQ(c.max_seq_len, 4);
        EXPECT_EQ(c.dtype, GPURNN_F64);
        EXPECT_EQ(c.reduction, GPURNN_LOSS_MEAN);
        EXPECT_EQ(c.seed, 1234u);
        EXPECT_EQ(c.init_scale, 0.25);
        EXPECT_EQ(c.cell, GPURNN_CELL_TANH);
        EXPECT_EQ(c.num_layers, 1);
        EXPECT_TRUE(bit_equal(get_params(l.get()), params));
        EXPECT_TRUE(bit_equal(get_state(l.get()), state));
        /* the optimizer state kept its kind: another kind is refused, Adam steps on */
        const gpurnn_optimizer sgd = opt_of(GPURNN_SGD), adam = opt_of(GPURNN_ADAM);
        EXPECT_TRUE(failed_with(gpurnn_step(l.get(), &sgd), GPURNN_ERR_INVALID_ARGUMENT));
        /* saved now: format v3, the same payload bytes after the longer header */
        const std::vector<unsigned char> v3 = save_to_memory(l.get(), {});
        EXPECT_EQ(get_u32(v3, OFF_VERSION), 3u);
        ASSERT_EQ(v3.size(), v1.size() + (HEADER - V1_HEADER));
        EXPECT_EQ(get_u64(v3, OFF_USER_DATA_BYTES), 0u);
        EXPECT_EQ(get_u32(v3, OFF_CELL), 0u);
        EXPECT_EQ(get_u32(v3, OFF_NUM_LAYERS), 1u);
        EXPECT_TRUE(std::equal(v1.begin() + V1_HEADER, v1.end() - 8, v3.begin() + HEADER));
        EXPECT_EQ(gpurnn_step(l.get(), &adam), GPURNN_OK) << gpurnn_last_error();
    }
    /* every truncation and damaged byte of the v1 file is still detected */
    for (size_t i = 0; i < v1.size(); ++i) {
        std::vector<unsigned char> d = v1;
        d[i] ^= 0x01;
        ASSERT_TRUE(memory_load_fails(d, backend(), GPURNN_ERR_FORMAT)) << "byte " << i;
        ASSERT_TRUE(memory_load_fails(std::vector<unsigned char>(v1.begin(), v1.begin() + i), backend(),
                                      GPURNN_ERR_FORMAT))
            << "truncated to " << i;
    }
}

TEST_P(CheckpointTest, Version2FileWrittenByTheEarlierLibraryLoads)
{
    /* tests/data/v2-f32-v4h3b2-sgd-user-data.ckpt, written by gpurnn_model_save_with_user_data
     * in format v2, before checkpoints recorded the cell and the number of layers
     * (tests/data/README.md): it loads as one tanh layer with its configuration, exact
     * parameters and state, SGD state of one step and its user data; saved again it becomes
     * a v3 file with the same payload and user data. */
    const std::string path = std::string(GPURNN_TEST_DATA_DIR) + "/v2-f32-v4h3b2-sgd-user-data.ckpt";
    const std::vector<unsigned char> v2 = read_file(path);
    const size_t P = 40, S = 6, e = 4;
    const std::string user = "libgpurnn v2";
    ASSERT_EQ(v2.size(), V2_HEADER + e * (2 * P + S) + user.size() + 8);
    ASSERT_EQ(get_u32(v2, OFF_VERSION), 2u);
    std::vector<double> params(P), state(S);
    for (size_t i = 0; i < P; ++i)
        params[i] = ((double)i - 20.0) / 16.0;
    for (size_t i = 0; i < S; ++i)
        state[i] = 0.5 - 0.125 * (double)i;
    for (bool from_memory : {false, true}) {
        SCOPED_TRACE(from_memory ? "from memory" : "from the file");
        UserData u;
        gpurnn_model *m = nullptr;
        const gpurnn_status st =
            from_memory ? gpurnn_model_load_from_memory(v2.data(), v2.size(), backend(), &u.data, &u.size, &m)
                        : gpurnn_model_load_with_user_data(path.c_str(), backend(), &u.data, &u.size, &m);
        ASSERT_EQ(st, GPURNN_OK) << gpurnn_last_error();
        ModelPtr l(m);
        EXPECT_EQ(u.bytes(), std::vector<unsigned char>(user.begin(), user.end()));
        const gpurnn_config c = get_config(l.get());
        EXPECT_EQ(c.vocab_size, 4);
        EXPECT_EQ(c.hidden_size, 3);
        EXPECT_EQ(c.batch_size, 2);
        EXPECT_EQ(c.max_seq_len, 5);
        EXPECT_EQ(c.dtype, GPURNN_F32);
        EXPECT_EQ(c.reduction, GPURNN_LOSS_SUM);
        EXPECT_EQ(c.seed, 99u);
        EXPECT_EQ(c.init_scale, 0.125);
        EXPECT_EQ(c.cell, GPURNN_CELL_TANH);
        EXPECT_EQ(c.num_layers, 1);
        EXPECT_EQ(gpurnn_param_count(l.get()), P);
        EXPECT_EQ(gpurnn_state_count(l.get()), S);
        EXPECT_TRUE(bit_equal(get_params(l.get()), params));
        EXPECT_TRUE(bit_equal(get_state(l.get()), state));
        /* saved now: format v3, the header's first 112 bytes as before (but the version and
         * file_size), the cell and L of one tanh layer, then the same payload (SGD velocity
         * included) and user data */
        const std::vector<unsigned char> v3 = save_to_memory(l.get(), u.bytes());
        ASSERT_EQ(v3.size(), v2.size() + (HEADER - V2_HEADER));
        EXPECT_EQ(get_u32(v3, OFF_VERSION), 3u);
        EXPECT_TRUE(std::equal(v2.begin() + OFF_DTYPE, v2.begin() + OFF_FILE_SIZE, v3.begin() + OFF_DTYPE));
        EXPECT_EQ(get_u64(v3, OFF_FILE_SIZE), v3.size());
        EXPECT_EQ(get_u64(v3, OFF_USER_DATA_BYTES), user.size());
        EXPECT_EQ(get_u32(v3, OFF_CELL), 0u);
        EXPECT_EQ(get_u32(v3, OFF_NUM_LAYERS), 1u);
        EXPECT_TRUE(std::equal(v2.begin() + V2_HEADER, v2.end() - 8, v3.begin() + HEADER));
        /* the optimizer state kept its kind: another kind is refused, SGD steps on */
        const gpurnn_optimizer adam = opt_of(GPURNN_ADAM), sgd = opt_of(GPURNN_SGD);
        EXPECT_TRUE(failed_with(gpurnn_step(l.get(), &adam), GPURNN_ERR_INVALID_ARGUMENT));
        EXPECT_EQ(gpurnn_step(l.get(), &sgd), GPURNN_OK) << gpurnn_last_error();
    }
    /* every truncation and damaged byte of the v2 file is still detected */
    for (size_t i = 0; i < v2.size(); ++i) {
        std::vector<unsigned char> d = v2;
        d[i] ^= 0x01;
        ASSERT_TRUE(memory_load_fails(d, backend(), GPURNN_ERR_FORMAT)) << "byte " << i;
        ASSERT_TRUE(memory_load_fails(std::vector<unsigned char>(v2.begin(), v2.begin() + i), backend(),
                                      GPURNN_ERR_FORMAT))
            << "truncated to " << i;
    }
    /* a v2 file padded to the v3 header length (file_size too) is still read as v2: its
     * dimensions give eight bytes fewer */
    std::vector<unsigned char> padded = v2;
    padded.insert(padded.begin() + V2_HEADER, 8, 0);
    put_u64(padded, OFF_FILE_SIZE, padded.size());
    fix_crc(padded);
    EXPECT_TRUE(memory_load_fails(padded, backend(), GPURNN_ERR_FORMAT));
}

GPURNN_INSTANTIATE_BACKENDS(CheckpointTest);

/* ---------- cells and layers (format v3) ---------- */

namespace {

const char *const kCellNames[] = {"tanh", "relu", "gru", "lstm"};

/* The flat layout of gpurnn.h's gpurnn_cell comment, written out here independently of
 * src/layout.c: G gates, every layer's W_ih (G*H, V or H) and W_hh (G*H, H), Why, then
 * per layer b (H) or b_ih, b_hh (G*H each), then by. */
struct TestLayout {
    size_t V, H, L, G;
    bool two_biases;
    TestLayout(size_t v, size_t h, gpurnn_cell cell, size_t l)
        : V(v), H(h), L(l), G(cell == GPURNN_CELL_GRU ? 3 : cell == GPURNN_CELL_LSTM ? 4 : 1),
          two_biases(cell == GPURNN_CELL_GRU || cell == GPURNN_CELL_LSTM)
    {
    }
    size_t weights_end() const { return G * H * (V + H) + (L - 1) * G * H * 2 * H + V * H; }
    size_t layer_biases() const { return two_biases ? 2 * G * H : H; }
    size_t count() const { return weights_end() + L * layer_biases() + V; }
};

gpurnn_config cell_config(gpurnn_dtype dt, gpurnn_cell cell, int L)
{
    gpurnn_config cfg = make_config(GPURNN_BACKEND_CPU, dt, 5, 3, 2, 4, GPURNN_LOSS_MEAN, 31, 0.2);
    cfg.cell = cell;
    cfg.num_layers = L;
    return cfg;
}

}  // namespace

/* Every cell and L in {1, 2, 3} on the CPU backend (the one that builds them all). */
class CheckpointCells : public ::testing::TestWithParam<std::tuple<gpurnn_cell, int>> {};

TEST_P(CheckpointCells, RoundTripIsBitExactAndRecordsCellAndLayers)
{
    /* For both dtypes: a model trained two Adam steps with a carried state set by hand
     * saves with its cell and L at bytes 112..119 and the counts of its layout, loads with
     * that cell and L, the same parameters and carried state, and saves again to the same
     * bytes (optimizer state included); one more identical step on both gives identical
     * results. Bad values are named by the general layout. */
    TempDir dir;
    const int V = 5, H = 3, B = 2, T = 4;
    const gpurnn_cell cell = std::get<0>(GetParam());
    const int L = std::get<1>(GetParam());
    uint64_t seed = 300 + 10 * (uint64_t)cell + (uint64_t)L;
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        ++seed;
        ModelPtr m = create_model(cell_config(dt, cell, L));
        ASSERT_TRUE(m);
        const TestLayout lay(V, H, cell, (size_t)L);
        const size_t P = lay.count(), S = (cell == GPURNN_CELL_LSTM ? 2 : 1) * (size_t)L * B * H;
        ASSERT_EQ(gpurnn_param_count(m.get()), P);
        ASSERT_EQ(gpurnn_state_count(m.get()), S);
        Rng rng(seed);
        std::vector<double> params = random_normal(P, rng, 0.3);
        if (dt == GPURNN_F32)
            params = round_to_float(params);
        ASSERT_EQ(gpurnn_params_set(m.get(), params.data(), P), GPURNN_OK) << gpurnn_last_error();
        const gpurnn_optimizer adam = opt_of(GPURNN_ADAM);
        for (int step = 0; step < 2; ++step) {
            std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
            double loss;
            ASSERT_EQ(gpurnn_zero_grad(m.get()), GPURNN_OK);
            ASSERT_EQ(gpurnn_forward(m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
            ASSERT_EQ(gpurnn_backward(m.get()), GPURNN_OK) << gpurnn_last_error();
            ASSERT_EQ(gpurnn_step(m.get(), &adam), GPURNN_OK) << gpurnn_last_error();
        }
        std::vector<double> state = random_normal(S, rng, 0.5);
        if (dt == GPURNN_F32)
            state = round_to_float(state);
        ASSERT_EQ(gpurnn_state_set(m.get(), state.data(), S), GPURNN_OK) << gpurnn_last_error();
        std::vector<double> trained(P), got_state(S);
        ASSERT_EQ(gpurnn_params_get(m.get(), trained.data(), P), GPURNN_OK);

        const std::string path = dir.file("cell.ckpt");
        ASSERT_EQ(gpurnn_model_save(m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
        const std::vector<unsigned char> b = read_file(path);
        const size_t e = dt == GPURNN_F64 ? 8 : 4;
        ASSERT_EQ(b.size(), HEADER + e * (3 * P + S) + 8);
        EXPECT_EQ(get_u32(b, OFF_VERSION), 3u);
        EXPECT_EQ(get_u32(b, OFF_CELL), (uint32_t)cell);
        EXPECT_EQ(get_u32(b, OFF_NUM_LAYERS), (uint32_t)L);
        EXPECT_EQ(get_u64(b, OFF_PARAM_COUNT), P);
        EXPECT_EQ(get_u64(b, OFF_STATE_COUNT), S);
        EXPECT_EQ(get_u64(b, OFF_FILE_SIZE), b.size());
        std::vector<double> stored(P);
        for (size_t i = 0; i < P; ++i)
            stored[i] = e == 8 ? get_f64(b, HEADER + i * e) : get_f32(b, HEADER + i * e);
        EXPECT_TRUE(bit_equal(stored, trained)) << "the parameters, in the model's flat order";

        gpurnn_model *raw = nullptr;
        ASSERT_EQ(gpurnn_model_load(path.c_str(), GPURNN_BACKEND_CPU, &raw), GPURNN_OK) << gpurnn_last_error();
        ModelPtr l(raw);
        const gpurnn_config c = get_config(l.get());
        EXPECT_EQ(c.cell, cell);
        EXPECT_EQ(c.num_layers, L);
        EXPECT_EQ(c.vocab_size, V);
        EXPECT_EQ(c.hidden_size, H);
        EXPECT_EQ(c.batch_size, B);
        EXPECT_EQ(c.dtype, dt);
        std::vector<double> loaded(P);
        ASSERT_EQ(gpurnn_params_get(l.get(), loaded.data(), P), GPURNN_OK);
        ASSERT_EQ(gpurnn_state_get(l.get(), got_state.data(), S), GPURNN_OK);
        EXPECT_TRUE(bit_equal(loaded, trained));
        EXPECT_TRUE(bit_equal(got_state, state));
        EXPECT_EQ(save_to_memory(l.get(), {}), b) << "saved again: other bytes (optimizer state?)";

        /* one more identical step on both: the same loss and parameters */
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        double la = 0, lb = 1;
        for (gpurnn_model *x : {m.get(), l.get()}) {
            ASSERT_EQ(gpurnn_zero_grad(x), GPURNN_OK);
            ASSERT_EQ(gpurnn_forward(x, in.data(), tg.data(), T, x == m.get() ? &la : &lb), GPURNN_OK);
            ASSERT_EQ(gpurnn_backward(x), GPURNN_OK);
            ASSERT_EQ(gpurnn_step(x, &adam), GPURNN_OK) << gpurnn_last_error();
        }
        EXPECT_EQ(la, lb);
        EXPECT_EQ(save_to_memory(l.get(), {}), save_to_memory(m.get(), {})) << "after one more step";

        /* a bad value is named by the general layout: the last layer's last bias
         * vector, and the last carried value (c of the top layer for LSTM) */
        const size_t top = (size_t)L - 1;
        const size_t bias_at = lay.weights_end() + top * lay.layer_biases() + (lay.two_biases ? lay.G * H : 0) + 1;
        const bool plain = L == 1 && !lay.two_biases;
        const std::string bias_name = plain ? "bh[1]"
                                      : lay.two_biases ? "b_hh_l" + std::to_string(top) + "[1]"
                                                       : "b_l" + std::to_string(top) + "[1]";
        std::vector<unsigned char> d = b;
        put_value(d, HEADER + e * bias_at, NAN, e);
        fix_crc(d);
        auto r = memory_load_fails(d, GPURNN_BACKEND_CPU, GPURNN_ERR_FORMAT);
        ASSERT_TRUE(r);
        EXPECT_NE(std::string(r.message()).find("parameter " + bias_name + " is nan"), std::string::npos)
            << r.message();
        const std::string state_name =
            L == 1 && cell != GPURNN_CELL_LSTM
                ? "b=1, unit 2"
                : "layer " + std::to_string(top) + (cell == GPURNN_CELL_LSTM ? " c" : " h") + ", b=1, unit 2";
        d = b;
        put_value(d, b.size() - 8 - e, INFINITY, e);
        fix_crc(d);
        r = memory_load_fails(d, GPURNN_BACKEND_CPU, GPURNN_ERR_FORMAT);
        ASSERT_TRUE(r);
        EXPECT_NE(std::string(r.message()).find("carried state at " + state_name + " is inf"), std::string::npos)
            << r.message();
        /* the file's L or cell changed alone: the counts no longer match */
        d = b;
        put_u32(d, OFF_NUM_LAYERS, (uint32_t)L % 3 + 1);
        fix_crc(d);
        r = memory_load_fails(d, GPURNN_BACKEND_CPU, GPURNN_ERR_FORMAT);
        EXPECT_TRUE(r);
        EXPECT_NE(std::string(r.message()).find("param_count"), std::string::npos) << r.message();
    }
}

INSTANTIATE_TEST_SUITE_P(CellsAndLayers, CheckpointCells,
                         ::testing::Combine(::testing::Values(GPURNN_CELL_TANH, GPURNN_CELL_RELU, GPURNN_CELL_GRU,
                                                              GPURNN_CELL_LSTM),
                                            ::testing::Values(1, 2, 3)),
                         [](const ::testing::TestParamInfo<std::tuple<gpurnn_cell, int>> &info) {
                             return std::string(kCellNames[std::get<0>(info.param)]) + "_L" +
                                    std::to_string(std::get<1>(info.param));
                         });

TEST(CheckpointBackend, LoadOnUnavailableCudaIsRefused)
{
    if (gpurnn_backend_available(GPURNN_BACKEND_CUDA))
        GTEST_SKIP() << "CUDA is available here";
    TempDir dir;
    ModelPtr m = create_model(make_config(GPURNN_BACKEND_CPU, GPURNN_F32, 4, 3, 1, 2));
    ASSERT_TRUE(m);
    const std::string path = dir.file("m.ckpt");
    ASSERT_EQ(gpurnn_model_save(m.get(), path.c_str()), GPURNN_OK);
    EXPECT_TRUE(load_fails(path, GPURNN_BACKEND_CUDA, GPURNN_ERR_BACKEND_UNAVAILABLE));
}

/* ---------- crash safety ---------- */

namespace {

/* Generation g of the crash test's parameters: g + (i mod 1024) / 1024, exact in float64,
 * so a loaded file tells which save wrote it and whether every value belongs to it. */
void fill_generation(std::vector<double> &p, long long g)
{
    for (size_t i = 0; i < p.size(); ++i)
        p[i] = (double)g + (double)(i % 1024) / 1024.0;
}

size_t count_temporaries(const TempDir &dir, const std::string &base)
{
    size_t n = 0;
    for (const std::string &name : dir.list())
        n += name.rfind(base + ".tmp-", 0) == 0;
    return n;
}

}  // namespace

TEST(CheckpointCrash, SigkillDuringSaveLeavesTheOldOrTheNewCheckpoint)
{
    /* A forked writer saves a 12 MB model in a loop, each save with new parameter values
     * (generation g), and reports each completed save through a pipe; it is killed with
     * SIGKILL after a random delay, 50 times (about 10-20 s in all). After each kill the path must hold a complete,
     * checksum-valid checkpoint (it loads) of the last reported generation or of the one
     * being written when the kill came, every value of that generation; at most one
     * temporary file may be left, and the next save removes it.
     * CPU backend: a forked child cannot use CUDA, and the file code is the same for every
     * backend. The writer runs no OpenMP region (params_set and save are plain loops). */
    const int kKills = 50;
    TempDir dir;
    const std::string path = dir.file("m.ckpt");
    ModelPtr m = create_model(make_config(GPURNN_BACKEND_CPU, GPURNN_F64, 700, 700, 1, 1));
    ASSERT_TRUE(m);
    const size_t n = gpurnn_param_count(m.get());
    std::vector<double> values(n), got(n);

    /* one save cycle, timed, sets the range of the random delays */
    long long gen = 0;
    auto t0 = std::chrono::steady_clock::now();
    fill_generation(values, gen);
    ASSERT_EQ(gpurnn_params_set(m.get(), values.data(), n), GPURNN_OK);
    ASSERT_EQ(gpurnn_model_save(m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    const double cycle = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    long long on_disk = gen++;
    Rng rng(4242);
    int changed = 0, newest = 0, max_temporaries = 0;
    for (int kill_no = 0; kill_no < kKills; ++kill_no) {
        SCOPED_TRACE("kill " + std::to_string(kill_no));
        int fds[2];
        ASSERT_EQ(pipe(fds), 0);
        const long long first = gen;
        const pid_t pid = fork();
        ASSERT_GE(pid, 0);
        if (pid == 0) {
            close(fds[0]);
            for (long long g = first;; ++g) {
                fill_generation(values, g);
                if (gpurnn_params_set(m.get(), values.data(), n) != GPURNN_OK)
                    _exit(2);
                if (gpurnn_model_save(m.get(), path.c_str()) != GPURNN_OK)
                    _exit(3);
                if (write(fds[1], &g, sizeof g) != (ssize_t)sizeof g)
                    _exit(4);
            }
        }
        close(fds[1]);
        /* Even kills: a delay from the fork (the kill may come before, during or after the
         * child's first save). Odd kills: a delay from the end of the child's first save,
         * so that the file has just been replaced and the kill hits the next save at any
         * point, its rename included. */
        long long reported = -1, g;
        if (kill_no % 2 == 1 && read(fds[0], &g, sizeof g) == (ssize_t)sizeof g)
            reported = g;
        std::this_thread::sleep_for(std::chrono::duration<double>(rng.uniform() * (kill_no % 2 ? 1.2 : 2.5) * cycle));
        ASSERT_EQ(kill(pid, SIGKILL), 0);
        int status = 0;
        ASSERT_EQ(waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
            << "the writer stopped by itself (exit " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1)
            << ": 2 = params_set, 3 = save, 4 = pipe failed)";
        while (read(fds[0], &g, sizeof g) == (ssize_t)sizeof g)
            reported = g;
        close(fds[0]);
        /* completed for sure: the last reported save (or what was there before); possibly
         * completed: the save in flight when the kill came */
        const long long done = reported >= 0 ? reported : on_disk;
        const long long in_flight = reported >= 0 ? reported + 1 : first;

        gpurnn_model *l = nullptr;
        ASSERT_EQ(gpurnn_model_load(path.c_str(), GPURNN_BACKEND_CPU, &l), GPURNN_OK)
            << "after the kill the checkpoint does not load: " << gpurnn_last_error();
        ModelPtr loaded(l);
        ASSERT_EQ(gpurnn_params_get(loaded.get(), got.data(), n), GPURNN_OK);
        const long long file_gen = (long long)got[0];
        ASSERT_TRUE(file_gen == done || file_gen == in_flight)
            << "the file holds generation " << file_gen << ", expected " << done << " or " << in_flight;
        fill_generation(values, file_gen);
        ASSERT_TRUE(bit_equal(got, values)) << "the file mixes generations";
        changed += file_gen != on_disk;
        newest += file_gen == in_flight;
        on_disk = file_gen;
        gen = in_flight + 1;
        const size_t temporaries = count_temporaries(dir, "m.ckpt");
        max_temporaries = std::max(max_temporaries, (int)temporaries);
        EXPECT_LE(temporaries, 1u) << "temporary files pile up";
    }
    /* a last save in this process cleans up after the killed ones */
    fill_generation(values, gen);
    ASSERT_EQ(gpurnn_params_set(m.get(), values.data(), n), GPURNN_OK);
    ASSERT_EQ(gpurnn_model_save(m.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    EXPECT_EQ(dir.list(), std::vector<std::string>{"m.ckpt"}) << "temporary files were left";
    RecordProperty("kills", kKills);
    RecordProperty("kills_after_which_the_file_had_changed", changed);
    RecordProperty("kills_that_found_the_save_in_flight_completed", newest);
    RecordProperty("most_temporaries_seen", max_temporaries);
    std::printf("%d kills: the file changed across %d of them, %d found the save in flight completed; at most %d "
                "temporary file(s) seen\n",
                kKills, changed, newest, max_temporaries);
}

TEST(CheckpointCrash, SaveIntoAnUnwritableDirectoryKeepsTheOldFile)
{
    /* A directory the saving process may not write to: IO naming the path, and the
     * checkpoint already there is untouched. Root ignores permission bits, so when the
     * test runs as root the save runs in a forked child that first switches to the
     * unprivileged user "nobody" (the directory is then read-only to it, as to any
     * ordinary user). Where that user cannot reach the directory at all the test is
     * skipped with the reason, since the failure would then not be about writing. */
    TempDir dir;
    const std::string sub = dir.file("ro"), path = sub + "/m.ckpt";
    ASSERT_EQ(mkdir(sub.c_str(), 0755), 0);
    ModelPtr old_model = create_model(make_config(GPURNN_BACKEND_CPU, GPURNN_F64, 6, 5, 2, 3, GPURNN_LOSS_SUM, 31));
    ModelPtr new_model = create_model(make_config(GPURNN_BACKEND_CPU, GPURNN_F64, 6, 5, 2, 3, GPURNN_LOSS_SUM, 32));
    ASSERT_TRUE(old_model && new_model);
    ASSERT_EQ(gpurnn_model_save(old_model.get(), path.c_str()), GPURNN_OK) << gpurnn_last_error();
    const std::vector<unsigned char> old_bytes = read_file(path);
    ASSERT_EQ(chmod(sub.c_str(), 0555), 0);
    ASSERT_EQ(chmod(dir.path().c_str(), 0755), 0);   /* mkdtemp made it 0700 */

    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        if (geteuid() == 0) {
            const struct passwd *pw = getpwnam("nobody");
            if (!pw || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
                _exit(10);
        }
        if (access(sub.c_str(), R_OK | X_OK) != 0 || access(path.c_str(), R_OK) != 0)
            _exit(11);
        if (access(sub.c_str(), W_OK) == 0)
            _exit(12);
        const gpurnn_status st = gpurnn_model_save(new_model.get(), path.c_str());
        const std::string msg = gpurnn_last_error();
        if (write(fds[1], msg.c_str(), msg.size()) < 0)
            _exit(13);
        _exit((int)st);
    }
    close(fds[1]);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    std::string msg;
    char buf[256];
    ssize_t got;
    while ((got = read(fds[0], buf, sizeof buf)) > 0)
        msg.append(buf, (size_t)got);
    close(fds[0]);
    chmod(sub.c_str(), 0755);   /* so that TempDir can remove it */
    ASSERT_TRUE(WIFEXITED(status));
    const int code = WEXITSTATUS(status);
    if (code == 10 || code == 11)
        GTEST_SKIP() << (code == 10 ? "cannot switch to the user nobody" : "the user nobody cannot reach " + sub);
    ASSERT_NE(code, 12) << "the directory is writable to the saving process; the test proves nothing";
    EXPECT_EQ(code, (int)GPURNN_ERR_IO) << gpurnn_status_string((gpurnn_status)code) << ": " << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << "the message should name the path: " << msg;
    EXPECT_EQ(read_file(path), old_bytes) << "the existing checkpoint was changed";
    EXPECT_EQ(dir.list(), std::vector<std::string>{"ro"});
}
