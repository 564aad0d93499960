/* Initialisation (seeded N(0,1)*init_scale weights, zero biases, f32 = rounded f64, the
 * same on every backend), the parameter layout, configuration defaults and resolution,
 * backend availability, status strings, the version, and per-thread error messages. */
#include <cmath>
#include <cstring>
#include <regex>
#include <set>
#include <thread>

#include "test_util.h"

using namespace gt;

namespace {

struct Stats {
    double mean, std, within1, max_abs;
};

Stats stats(const double *x, size_t n, double scale)
{
    double s = 0, s2 = 0, mx = 0;
    size_t in1 = 0;
    for (size_t i = 0; i < n; ++i) {
        s += x[i];
        mx = std::max(mx, std::fabs(x[i]));
        in1 += std::fabs(x[i]) <= scale;
    }
    const double mean = s / n;
    for (size_t i = 0; i < n; ++i)
        s2 += (x[i] - mean) * (x[i] - mean);
    return {mean, std::sqrt(s2 / (n - 1)), (double)in1 / n, mx};
}

double correlation(const double *a, const double *b, size_t n)
{
    double sa = 0, sb = 0, sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; ++i) {
        sa += a[i];
        sb += b[i];
    }
    const double ma = sa / n, mb = sb / n;
    for (size_t i = 0; i < n; ++i) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) * (a[i] - ma);
        sbb += (b[i] - mb) * (b[i] - mb);
    }
    return sab / std::sqrt(saa * sbb);
}

}  // namespace

/* ---------- initialisation ---------- */

class InitTest : public BackendTest {};

TEST_P(InitTest, SameSeedSameParametersDifferentSeedDifferent)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        ModelPtr a = create_model(make_config(backend(), dt, 11, 9, 2, 3, GPURNN_LOSS_SUM, 42, 0.1));
        ModelPtr b = create_model(make_config(backend(), dt, 11, 9, 2, 3, GPURNN_LOSS_SUM, 42, 0.1));
        ModelPtr c = create_model(make_config(backend(), dt, 11, 9, 2, 3, GPURNN_LOSS_SUM, 43, 0.1));
        ASSERT_TRUE(a && b && c);
        const std::vector<double> pa = get_params(a.get()), pb = get_params(b.get()), pc = get_params(c.get());
        EXPECT_TRUE(bit_equal(pa, pb));
        size_t same = 0;
        for (size_t i = 0; i < ref_off_bh(11, 9); ++i)
            same += pa[i] == pc[i];
        EXPECT_LT(same, 5u) << "seeds 42 and 43 gave nearly the same weights";
        /* batch size and max_seq_len do not change the draws */
        ModelPtr d = create_model(make_config(backend(), dt, 11, 9, 5, 40, GPURNN_LOSS_MEAN, 42, 0.1));
        ASSERT_TRUE(d);
        EXPECT_TRUE(bit_equal(get_params(d.get()), pa));
    }
}

TEST_P(InitTest, WeightsAreScaledStandardNormalAndBiasesZero)
{
    const int V = 64, H = 128;
    const double scale = 0.2;
    ModelPtr m = create_model(make_config(backend(), GPURNN_F64, V, H, 1, 1, GPURNN_LOSS_SUM, 7, scale));
    ASSERT_TRUE(m);
    const std::vector<double> p = get_params(m.get());
    struct Part {
        const char *name;
        size_t off, n;
    } parts[] = {{"Wxh", ref_off_wxh(V, H), (size_t)H * V},
                 {"Whh", ref_off_whh(V, H), (size_t)H * H},
                 {"Why", ref_off_why(V, H), (size_t)V * H}};
    for (const Part &part : parts) {
        SCOPED_TRACE(part.name);
        const Stats s = stats(p.data() + part.off, part.n, scale);
        EXPECT_LT(std::fabs(s.mean), 4 * scale / std::sqrt((double)part.n));
        EXPECT_NEAR(s.std, scale, 0.05 * scale);
        EXPECT_NEAR(s.within1, 0.6827, 0.02) << "fraction within one standard deviation";
        EXPECT_LT(s.max_abs, 6.5 * scale);
    }
    /* the three weight matrices are independent draws, not copies of one stream */
    EXPECT_LT(std::fabs(correlation(p.data() + ref_off_wxh(V, H), p.data() + ref_off_why(V, H), (size_t)H * V)), 0.05);
    EXPECT_LT(std::fabs(correlation(p.data() + ref_off_wxh(V, H), p.data() + ref_off_whh(V, H), (size_t)H * V)), 0.05);
    EXPECT_LT(std::fabs(correlation(p.data() + ref_off_whh(V, H), p.data() + ref_off_why(V, H), (size_t)H * V)), 0.05);
    for (size_t i = ref_off_bh(V, H); i < p.size(); ++i)
        ASSERT_EQ(p[i], 0.0) << "bias entry " << i - ref_off_bh(V, H) << " is not zero";
}

TEST_P(InitTest, InitScaleIsAFactorAndZeroMeansTheDefault)
{
    ModelPtr half = create_model(make_config(backend(), GPURNN_F64, 13, 10, 1, 1, GPURNN_LOSS_SUM, 5, 0.5));
    ModelPtr quarter = create_model(make_config(backend(), GPURNN_F64, 13, 10, 1, 1, GPURNN_LOSS_SUM, 5, 0.25));
    ModelPtr dflt = create_model(make_config(backend(), GPURNN_F64, 13, 10, 1, 1, GPURNN_LOSS_SUM, 5, 0.0));
    ModelPtr hundredth = create_model(make_config(backend(), GPURNN_F64, 13, 10, 1, 1, GPURNN_LOSS_SUM, 5, 0.01));
    ASSERT_TRUE(half && quarter && dflt && hundredth);
    const std::vector<double> ph = get_params(half.get()), pq = get_params(quarter.get());
    std::vector<double> doubled(pq.size());
    for (size_t i = 0; i < pq.size(); ++i)
        doubled[i] = 2 * pq[i];
    EXPECT_TRUE(bit_equal(ph, doubled)) << "N(0,1) * 0.5 must be exactly twice N(0,1) * 0.25";
    EXPECT_TRUE(bit_equal(get_params(dflt.get()), get_params(hundredth.get()))) << "init_scale 0 means 0.01";
    EXPECT_EQ(get_config(dflt.get()).init_scale, 0.01);
    EXPECT_EQ(get_config(half.get()).init_scale, 0.5);
}

TEST_P(InitTest, Float32IsTheFloat64InitialisationRounded)
{
    ModelPtr a = create_model(make_config(backend(), GPURNN_F64, 17, 12, 1, 1, GPURNN_LOSS_SUM, 9, 0.3));
    ModelPtr b = create_model(make_config(backend(), GPURNN_F32, 17, 12, 1, 1, GPURNN_LOSS_SUM, 9, 0.3));
    ASSERT_TRUE(a && b);
    EXPECT_TRUE(bit_equal(get_params(b.get()), round_to_float(get_params(a.get()))));
}

GPURNN_INSTANTIATE_BACKENDS(InitTest);

TEST(InitAcrossBackends, SameValuesOnEveryAvailableBackend)
{
    /* "the same values on every backend and dtype, up to the dtype's rounding": every
     * usable backend (and AUTO) against the CPU. A device's log/cos may differ from the
     * host's libm in the last bits, so float64 allows a few ulps; float32 one ulp (a
     * rounding that falls the other way). */
    for (gpurnn_backend b : {GPURNN_BACKEND_AUTO, GPURNN_BACKEND_CUDA}) {
        if (!gpurnn_backend_available(b))
            continue;
        SCOPED_TRACE(backend_label(b));
        for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
            ModelPtr cpu = create_model(make_config(GPURNN_BACKEND_CPU, dt, 19, 14, 1, 1, GPURNN_LOSS_SUM, 11, 0.3));
            ModelPtr other = create_model(make_config(b, dt, 19, 14, 1, 1, GPURNN_LOSS_SUM, 11, 0.3));
            ASSERT_TRUE(cpu && other);
            const std::vector<double> pc = get_params(cpu.get()), po = get_params(other.get());
            const double tol = dt == GPURNN_F64 ? 16 * 0x1p-52 : 0x1p-23;
            for (size_t i = 0; i < pc.size(); ++i)
                ASSERT_LE(std::fabs(pc[i] - po[i]), tol * std::fabs(pc[i])) << dtype_name(dt) << " entry " << i;
        }
    }
}


/* ---------- layout and configuration ---------- */

class LayoutTest : public BackendTest {};

TEST_P(LayoutTest, CountsOffsetsAndSizesFollowTheTable)
{
    const int shapes[][2] = {{1, 1}, {3, 5}, {5, 3}, {65, 128}, {1000, 7}};
    for (const auto &s : shapes) {
        const size_t V = s[0], H = s[1];
        SCOPED_TRACE("V=" + std::to_string(V) + " H=" + std::to_string(H));
        ModelPtr m = create_model(make_config(backend(), GPURNN_F32, (int)V, (int)H, 2, 3));
        ASSERT_TRUE(m);
        EXPECT_EQ(gpurnn_param_count(m.get()), 2 * H * V + H * H + H + V);
        const size_t want_off[5] = {0, H * V, H * V + H * H, H * V + H * H + V * H, 2 * H * V + H * H + H};
        const size_t want_size[5] = {H * V, H * H, V * H, H, V};
        for (int t = 0; t < GPURNN_NUM_TENSORS; ++t) {
            EXPECT_EQ(gpurnn_tensor_offset(m.get(), (gpurnn_tensor)t), want_off[t]) << "tensor " << t;
            EXPECT_EQ(gpurnn_tensor_size(m.get(), (gpurnn_tensor)t), want_size[t]) << "tensor " << t;
        }
        EXPECT_EQ(gpurnn_tensor_offset(m.get(), GPURNN_NUM_TENSORS), 0u);
        EXPECT_EQ(gpurnn_tensor_size(m.get(), GPURNN_NUM_TENSORS), 0u);
        EXPECT_EQ(gpurnn_tensor_size(m.get(), (gpurnn_tensor)-1), 0u);
        EXPECT_EQ(gpurnn_tensor_offset(m.get(), (gpurnn_tensor)77), 0u);
    }
    EXPECT_EQ(gpurnn_param_count(nullptr), 0u);
    EXPECT_EQ(gpurnn_tensor_offset(nullptr, GPURNN_WHH), 0u);
    EXPECT_EQ(gpurnn_tensor_size(nullptr, GPURNN_WHH), 0u);
}

TEST_P(LayoutTest, ModelConfigIsTheResolvedConfig)
{
    gpurnn_config cfg = make_config(backend(), GPURNN_F64, 7, 4, 3, 9, GPURNN_LOSS_MEAN, 0xfeedfacecafebeefULL, 0.0);
    ModelPtr m = create_model(cfg);
    ASSERT_TRUE(m);
    const gpurnn_config got = get_config(m.get());
    EXPECT_EQ(got.vocab_size, 7);
    EXPECT_EQ(got.hidden_size, 4);
    EXPECT_EQ(got.batch_size, 3);
    EXPECT_EQ(got.max_seq_len, 9);
    EXPECT_EQ(got.dtype, GPURNN_F64);
    EXPECT_EQ(got.backend, backend());
    EXPECT_EQ(got.reduction, GPURNN_LOSS_MEAN);
    EXPECT_EQ(got.seed, 0xfeedfacecafebeefULL);
    EXPECT_EQ(got.init_scale, 0.01);
    EXPECT_EQ(gpurnn_model_backend(m.get()), backend());
}

GPURNN_INSTANTIATE_BACKENDS(LayoutTest);

TEST(ConfigTest, InitFillsTheDocumentedDefaults)
{
    gpurnn_config cfg;
    std::memset(&cfg, 0x5a, sizeof cfg);
    gpurnn_config_init(&cfg);
    EXPECT_EQ(cfg.vocab_size, 0);
    EXPECT_EQ(cfg.hidden_size, 0);
    EXPECT_EQ(cfg.batch_size, 0);
    EXPECT_EQ(cfg.max_seq_len, 0);
    EXPECT_EQ(cfg.dtype, GPURNN_F32);
    EXPECT_EQ(cfg.backend, GPURNN_BACKEND_AUTO);
    EXPECT_EQ(cfg.reduction, GPURNN_LOSS_SUM);
    EXPECT_EQ(cfg.seed, 0u);
    EXPECT_EQ(cfg.init_scale, 0.01);
}

TEST(ConfigTest, ZeroInitialisedConfigWorks)
{
    gpurnn_config cfg;
    std::memset(&cfg, 0, sizeof cfg);
    cfg.vocab_size = 5;
    cfg.hidden_size = 4;
    cfg.batch_size = 1;
    cfg.max_seq_len = 3;
    ModelPtr m = create_model(cfg);
    ASSERT_TRUE(m);
    const gpurnn_config got = get_config(m.get());
    EXPECT_EQ(got.dtype, GPURNN_F32);
    EXPECT_NE(got.backend, GPURNN_BACKEND_AUTO);
    EXPECT_EQ(got.reduction, GPURNN_LOSS_SUM);
    EXPECT_EQ(got.init_scale, 0.01);
    const int32_t in[3] = {0, 1, 2}, tg[3] = {1, 2, 3};
    double loss = -1;
    ASSERT_EQ(gpurnn_forward(m.get(), in, tg, 3, &loss), GPURNN_OK) << gpurnn_last_error();
    /* weights ~ N(0, 0.01^2): the loss is close to 3 log 5 */
    EXPECT_NEAR(loss, 3 * std::log(5.0), 0.1);
}

/* ---------- backends, statuses, version ---------- */

TEST(BackendAvailability, CpuAndAutoAlwaysAvailable)
{
    EXPECT_EQ(gpurnn_backend_available(GPURNN_BACKEND_CPU), 1);
    EXPECT_EQ(gpurnn_backend_available(GPURNN_BACKEND_AUTO), 1);
    EXPECT_EQ(gpurnn_backend_check(GPURNN_BACKEND_CPU), GPURNN_OK);
    EXPECT_EQ(gpurnn_backend_check(GPURNN_BACKEND_AUTO), GPURNN_OK);
    EXPECT_EQ(gpurnn_backend_available((gpurnn_backend)3), 0);
    EXPECT_EQ(gpurnn_backend_available((gpurnn_backend)-1), 0);
    EXPECT_TRUE(failed_with(gpurnn_backend_check((gpurnn_backend)3), GPURNN_ERR_INVALID_ARGUMENT));
    const int cuda = gpurnn_backend_available(GPURNN_BACKEND_CUDA);
    EXPECT_TRUE(cuda == 0 || cuda == 1);
    EXPECT_EQ(gpurnn_backend_check(GPURNN_BACKEND_CUDA) == GPURNN_OK, cuda == 1);
}

TEST(BackendAvailability, UnavailableCudaIsRefusedWithAReason)
{
    if (gpurnn_backend_available(GPURNN_BACKEND_CUDA))
        GTEST_SKIP() << "CUDA is available here";
    EXPECT_TRUE(failed_with(gpurnn_backend_check(GPURNN_BACKEND_CUDA), GPURNN_ERR_BACKEND_UNAVAILABLE));
    const std::string why = gpurnn_last_error();
    EXPECT_NE(why.find("CUDA"), std::string::npos) << why;
    gpurnn_config cfg = make_config(GPURNN_BACKEND_CUDA, GPURNN_F32, 4, 3, 1, 2);
    gpurnn_model *out = reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xdead0));
    EXPECT_TRUE(failed_with(gpurnn_model_create(&cfg, &out), GPURNN_ERR_BACKEND_UNAVAILABLE));
    EXPECT_EQ(out, reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xdead0)));
    /* AUTO falls back to the CPU */
    cfg.backend = GPURNN_BACKEND_AUTO;
    ModelPtr m = create_model(cfg);
    ASSERT_TRUE(m);
    EXPECT_EQ(gpurnn_model_backend(m.get()), GPURNN_BACKEND_CPU);
}

TEST(BackendAvailability, ModelBackendOfNullIsAuto)
{
    EXPECT_EQ(gpurnn_model_backend(nullptr), GPURNN_BACKEND_AUTO);
    gpurnn_model_destroy(nullptr);
}

TEST(StatusStrings, EveryStatusHasADistinctName)
{
    const gpurnn_status all[] = {GPURNN_OK,
                                 GPURNN_ERR_INVALID_ARGUMENT,
                                 GPURNN_ERR_INVALID_STATE,
                                 GPURNN_ERR_OUT_OF_MEMORY,
                                 GPURNN_ERR_BACKEND_UNAVAILABLE,
                                 GPURNN_ERR_CUDA,
                                 GPURNN_ERR_IO,
                                 GPURNN_ERR_FORMAT,
                                 GPURNN_ERR_NUMERIC};
    std::set<std::string> seen;
    for (gpurnn_status s : all) {
        const char *str = gpurnn_status_string(s);
        ASSERT_NE(str, nullptr) << "status " << (int)s;
        EXPECT_NE(str[0], '\0') << "status " << (int)s;
        EXPECT_TRUE(seen.insert(str).second) << "duplicate name " << str;
    }
    EXPECT_NE(std::string(gpurnn_status_string(GPURNN_ERR_FORMAT)).find("FORMAT"), std::string::npos);
    EXPECT_NE(std::string(gpurnn_status_string(GPURNN_OK)).find("OK"), std::string::npos);
    /* unknown values still give a string */
    EXPECT_NE(gpurnn_status_string((gpurnn_status)999), nullptr);
    EXPECT_NE(gpurnn_status_string((gpurnn_status)-1), nullptr);
}

TEST(Version, IsMajorMinorPatchOfTheHeader)
{
    const char *v = gpurnn_version();
    ASSERT_NE(v, nullptr);
    EXPECT_TRUE(std::regex_match(v, std::regex("[0-9]+\\.[0-9]+\\.[0-9]+"))) << v;
    EXPECT_EQ(std::string(v), std::to_string(GPURNN_VERSION_MAJOR) + "." + std::to_string(GPURNN_VERSION_MINOR) +
                                  "." + std::to_string(GPURNN_VERSION_PATCH));
}

/* ---------- threads ---------- */

TEST(ThreadLocalErrors, EachThreadHasItsOwnMessage)
{
    ASSERT_EQ(gpurnn_forward(nullptr, nullptr, nullptr, 1, nullptr), GPURNN_ERR_INVALID_ARGUMENT);
    const std::string mine = gpurnn_last_error();
    ASSERT_FALSE(mine.empty());
    std::string fresh = "unset", other;
    std::thread t([&] {
        fresh = gpurnn_last_error();
        gpurnn_config cfg = make_config(GPURNN_BACKEND_CPU, GPURNN_F32, -3, 4, 1, 1);
        gpurnn_model *m = nullptr;
        gpurnn_model_create(&cfg, &m);
        other = gpurnn_last_error();
    });
    t.join();
    EXPECT_EQ(fresh, "") << "a new thread has no message yet";
    EXPECT_FALSE(other.empty());
    EXPECT_NE(other, mine);
    EXPECT_EQ(std::string(gpurnn_last_error()), mine) << "another thread's failure replaced this thread's message";
}

class ThreadsTest : public BackendTest {};

TEST_P(ThreadsTest, DifferentModelsOnDifferentThreads)
{
    /* four models trained at the same time from four threads each match the reference */
    const int V = 10, H = 8, B = 2, T = 20, N = 4;
    std::vector<RandomModel> models;
    for (int k = 0; k < N; ++k) {
        models.push_back(make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 300 + k));
        ASSERT_TRUE(models.back().m);
    }
    std::vector<std::vector<int32_t>> in(N), tg(N);
    std::vector<int> ok(N, 0);
    for (int k = 0; k < N; ++k) {
        Rng rng(400 + k);
        in[k] = random_tokens(T * B, V, rng);
        tg[k] = random_tokens(T * B, V, rng);
    }
    std::vector<std::thread> threads;
    for (int k = 0; k < N; ++k)
        threads.emplace_back([&, k] {
            bool good = true;
            for (int rep = 0; rep < 5; ++rep) {
                double loss;
                good &= gpurnn_state_set(models[k].m.get(), models[k].state.data(), models[k].state.size()) == GPURNN_OK;
                good &= gpurnn_forward(models[k].m.get(), in[k].data(), tg[k].data(), T, &loss) == GPURNN_OK;
                good &= gpurnn_backward(models[k].m.get()) == GPURNN_OK;
            }
            ok[k] = good;
        });
    for (auto &t : threads)
        t.join();
    for (int k = 0; k < N; ++k) {
        ASSERT_TRUE(ok[k]) << "model " << k;
        std::vector<double> g(models[k].params.size());
        ref_forward_backward(V, H, B, T, models[k].params.data(), models[k].state.data(), in[k].data(), tg[k].data(),
                             0, g.data(), nullptr);
        for (double &x : g)
            x *= 5;
        EXPECT_TRUE(tensors_close(V, H, get_grads(models[k].m.get()), g, 1e-12)) << "model " << k;
    }
}

GPURNN_INSTANTIATE_BACKENDS(ThreadsTest);
