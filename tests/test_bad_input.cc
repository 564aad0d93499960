/* Bad input: each public function with each kind of bad argument returns its status with
 * a non-empty gpurnn_last_error() (naming the bad value where the contract says so), and
 * changes nothing: a snapshot of parameters, gradients and carried state taken before
 * the call equals the one after, bit for bit; output arguments are not written; the last
 * forward pass and the optimizer state survive. */
#include <cfloat>
#include <climits>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>

#include "test_util.h"

using namespace gt;

namespace {

const double kNaN = std::nan("");
const double kInf = INFINITY;

std::string lower(std::string s)
{
    for (char &c : s)
        c = (char)std::tolower((unsigned char)c);
    return s;
}

}  // namespace

class BadInputTest : public BackendTest {
protected:
    static constexpr int V = 9, H = 6, B = 3, T = 5;

    /* A model in the middle of training: random parameters and state, one forward and
     * one backward done (non-zero gradients), so a snapshot can tell if anything moved. */
    struct Prepared {
        RandomModel r;
        std::vector<int32_t> in, tg;
        std::vector<double> grad1;   /* reference gradients of that forward pass */
    };
    Prepared prepared(gpurnn_dtype dt = GPURNN_F64)
    {
        Prepared p;
        p.r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 500);
        if (!p.r.m)
            return p;
        Rng rng(501);
        p.in = random_tokens(T * B, V, rng);
        p.tg = random_tokens(T * B, V, rng);
        p.grad1.resize(p.r.params.size());
        ref_forward_backward(V, H, B, T, p.r.params.data(), p.r.state.data(), p.in.data(), p.tg.data(), 0,
                             p.grad1.data(), nullptr);
        double loss;
        EXPECT_EQ(gpurnn_forward(p.r.m.get(), p.in.data(), p.tg.data(), T, &loss), GPURNN_OK);
        EXPECT_EQ(gpurnn_backward(p.r.m.get()), GPURNN_OK);
        return p;
    }

    /* Runs call on m; expects `want`, a message (mentioning each of `words`, case-
     * insensitively) and no change to m. */
    void expect_refused(gpurnn_model *m, const std::string &what, gpurnn_status want,
                        const std::function<gpurnn_status()> &call, const std::vector<std::string> &words = {})
    {
        SCOPED_TRACE(what);
        const Snapshot before = Snapshot::take(m);
        const gpurnn_status st = call();
        const std::string msg = gpurnn_last_error();
        EXPECT_TRUE(failed_with(st, want));
        for (const std::string &w : words)
            EXPECT_NE(lower(msg).find(lower(w)), std::string::npos) << "message should mention '" << w << "': " << msg;
        EXPECT_TRUE(snapshots_equal(Snapshot::take(m), before));
    }

    /* The forward pass of prepared() is still there: backward adds its gradients again. */
    void expect_forward_pass_intact(Prepared &p)
    {
        ASSERT_EQ(gpurnn_backward(p.r.m.get()), GPURNN_OK) << gpurnn_last_error();
        std::vector<double> want(p.grad1.size());
        for (size_t i = 0; i < want.size(); ++i)
            want[i] = 2 * p.grad1[i];
        EXPECT_TRUE(tensors_close(V, H, get_grads(p.r.m.get()), want, 1e-12));
    }
};

TEST_P(BadInputTest, ModelCreate)
{
    struct Case {
        const char *what;
        std::function<void(gpurnn_config &)> edit;
        const char *word;
    };
    const Case cases[] = {
        {"V = 0", [](gpurnn_config &c) { c.vocab_size = 0; }, "vocab_size"},
        {"V = -1", [](gpurnn_config &c) { c.vocab_size = -1; }, "vocab_size"},
        {"H = 0", [](gpurnn_config &c) { c.hidden_size = 0; }, "hidden_size"},
        {"H = INT_MIN", [](gpurnn_config &c) { c.hidden_size = INT_MIN; }, "hidden_size"},
        {"B = 0", [](gpurnn_config &c) { c.batch_size = 0; }, "batch_size"},
        {"max_seq_len = 0", [](gpurnn_config &c) { c.max_seq_len = 0; }, "max_seq_len"},
        {"max_seq_len = -5", [](gpurnn_config &c) { c.max_seq_len = -5; }, "max_seq_len"},
        {"dtype 2", [](gpurnn_config &c) { c.dtype = (gpurnn_dtype)2; }, "dtype"},
        {"dtype -1", [](gpurnn_config &c) { c.dtype = (gpurnn_dtype)-1; }, "dtype"},
        {"backend 3", [](gpurnn_config &c) { c.backend = (gpurnn_backend)3; }, "backend"},
        {"reduction 2", [](gpurnn_config &c) { c.reduction = (gpurnn_loss_reduction)2; }, "reduction"},
        {"init_scale -0.1", [](gpurnn_config &c) { c.init_scale = -0.1; }, "init_scale"},
        {"init_scale NaN", [](gpurnn_config &c) { c.init_scale = kNaN; }, "init_scale"},
        {"init_scale inf", [](gpurnn_config &c) { c.init_scale = kInf; }, "init_scale"},
        {"init_scale -inf", [](gpurnn_config &c) { c.init_scale = -kInf; }, "init_scale"},
        /* finite, but N(0,1) * init_scale weights would overflow (found by fuzz/fuzz_api) */
        {"init_scale 1e308", [](gpurnn_config &c) { c.init_scale = 1e308; }, "init_scale"},
        {"init_scale DBL_MAX", [](gpurnn_config &c) { c.init_scale = DBL_MAX; }, "init_scale"},
        {"V = H = INT_MAX (parameter bytes overflow size_t)",
         [](gpurnn_config &c) { c.vocab_size = c.hidden_size = INT_MAX; }, ""},
        {"B = H = max_seq_len = INT_MAX (activation bytes overflow size_t)",
         [](gpurnn_config &c) { c.batch_size = c.hidden_size = c.max_seq_len = INT_MAX; }, ""},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.what);
        for (gpurnn_dtype dt : {GPURNN_F32, GPURNN_F64}) {
            gpurnn_config cfg = make_config(backend(), dt, 5, 4, 2, 3);
            c.edit(cfg);
            gpurnn_model *out = reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xbad0));
            EXPECT_TRUE(failed_with(gpurnn_model_create(&cfg, &out), GPURNN_ERR_INVALID_ARGUMENT));
            if (*c.word) {
                EXPECT_NE(std::string(gpurnn_last_error()).find(c.word), std::string::npos) << gpurnn_last_error();
            }
            EXPECT_EQ(out, reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xbad0))) << "*out changed";
        }
    }
    gpurnn_config cfg = make_config(backend(), GPURNN_F32, 5, 4, 2, 3);
    gpurnn_model *out = nullptr;
    EXPECT_TRUE(failed_with(gpurnn_model_create(nullptr, &out), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(out, nullptr);
    EXPECT_TRUE(failed_with(gpurnn_model_create(&cfg, nullptr), GPURNN_ERR_INVALID_ARGUMENT));
}

TEST_P(BadInputTest, InitScaleMustKeepWeightsFiniteInTheDtype)
{
    /* A finite init_scale whose N(0,1) * init_scale weights can overflow the dtype is
     * refused (float32: 1e38 and 1e160, the value fuzz_api found); one just below the
     * limit gives finite weights, and the same scales are fine for float64. */
    for (double scale : {1e38, 1e160}) {
        gpurnn_config cfg = make_config(backend(), GPURNN_F32, 5, 4, 2, 3, GPURNN_LOSS_SUM, 1, scale);
        gpurnn_model *out = nullptr;
        EXPECT_TRUE(failed_with(gpurnn_model_create(&cfg, &out), GPURNN_ERR_INVALID_ARGUMENT)) << scale;
        EXPECT_NE(std::string(gpurnn_last_error()).find("init_scale"), std::string::npos) << gpurnn_last_error();
        EXPECT_EQ(out, nullptr);
    }
    const struct {
        gpurnn_dtype dt;
        double scale;
    } fine[] = {{GPURNN_F32, FLT_MAX / 9}, {GPURNN_F64, 1e38}, {GPURNN_F64, 1e160}, {GPURNN_F64, DBL_MAX / 9}};
    for (const auto &f : fine) {
        SCOPED_TRACE(f.scale);
        /* a large model, so that the largest draws (|z| > 4) are among its weights */
        ModelPtr m = create_model(make_config(backend(), f.dt, 64, 64, 1, 1, GPURNN_LOSS_SUM, 7, f.scale));
        ASSERT_TRUE(m);
        for (double p : get_params(m.get()))
            ASSERT_TRUE(std::isfinite(p)) << p;
    }
}

TEST_P(BadInputTest, ModelCreateOutOfMemory)
{
    /* 3 * 2^40 float64 parameters (24 TiB a buffer): a clean OUT_OF_MEMORY whose message
     * gives the bytes asked for, whatever the kernel's overcommit policy (the library
     * judges the total against the machine's memory before allocating; more cases in
     * tests/test_faults.cc). */
    gpurnn_config cfg = make_config(backend(), GPURNN_F64, 1 << 20, 1 << 20, 1, 1);
    gpurnn_model *out = reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xbad0));
    EXPECT_TRUE(failed_with(gpurnn_model_create(&cfg, &out), GPURNN_ERR_OUT_OF_MEMORY));
    const std::string msg = gpurnn_last_error();
    EXPECT_NE(msg.find(std::to_string(((3ULL << 40) + (2ULL << 20)) * 8) + " bytes"), std::string::npos)
        << "the message should give the bytes of the parameter buffer (or a total): " << msg;
    EXPECT_EQ(out, reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xbad0)));
}

TEST_P(BadInputTest, BufferAccessors)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        Prepared p = prepared(dt);
        ASSERT_TRUE(p.r.m);
        gpurnn_model *m = p.r.m.get();
        const size_t n = gpurnn_param_count(m), s = (size_t)B * H;
        ASSERT_EQ(n, ref_param_count(V, H));
        std::vector<double> buf(n + 1, 12345.0), sbuf(s + 1, 12345.0);
        using Getter = gpurnn_status (*)(const gpurnn_model *, double *, size_t);
        const struct {
            const char *name;
            Getter fn;
            size_t count;
            std::vector<double> *dst;
        } getters[] = {{"params_get", gpurnn_params_get, n, &buf},
                       {"grads_get", gpurnn_grads_get, n, &buf},
                       {"state_get", gpurnn_state_get, s, &sbuf}};
        for (const auto &g : getters) {
            SCOPED_TRACE(g.name);
            EXPECT_TRUE(failed_with(g.fn(nullptr, g.dst->data(), g.count), GPURNN_ERR_INVALID_ARGUMENT));
            expect_refused(m, "NULL dst", GPURNN_ERR_INVALID_ARGUMENT, [&] { return g.fn(m, nullptr, g.count); });
            for (size_t bad : {g.count - 1, g.count + 1, (size_t)0, SIZE_MAX}) {
                expect_refused(m, "n = " + std::to_string(bad), GPURNN_ERR_INVALID_ARGUMENT,
                               [&] { return g.fn(m, g.dst->data(), bad); });
                for (double x : *g.dst)
                    ASSERT_EQ(x, 12345.0) << "the destination was written by a failed call";
            }
        }

        std::vector<double> params = p.r.params, state = p.r.state;
        EXPECT_TRUE(failed_with(gpurnn_params_set(nullptr, params.data(), n), GPURNN_ERR_INVALID_ARGUMENT));
        EXPECT_TRUE(failed_with(gpurnn_state_set(nullptr, state.data(), s), GPURNN_ERR_INVALID_ARGUMENT));
        EXPECT_TRUE(failed_with(gpurnn_state_reset(nullptr), GPURNN_ERR_INVALID_ARGUMENT));
        expect_refused(m, "params_set NULL", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_params_set(m, nullptr, n); });
        expect_refused(m, "state_set NULL", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_state_set(m, nullptr, s); });
        params.push_back(0.0);
        state.push_back(0.0);
        for (size_t bad : {n - 1, n + 1, (size_t)0})
            expect_refused(m, "params_set n = " + std::to_string(bad), GPURNN_ERR_INVALID_ARGUMENT,
                           [&] { return gpurnn_params_set(m, params.data(), bad); });
        for (size_t bad : {s - 1, s + 1, (size_t)0})
            expect_refused(m, "state_set n = " + std::to_string(bad), GPURNN_ERR_INVALID_ARGUMENT,
                           [&] { return gpurnn_state_set(m, state.data(), bad); });
        params.pop_back();
        state.pop_back();

        /* non-finite values: rejected, naming the tensor */
        struct Poison {
            const char *tensor;
            size_t index;
            double value;
        } poisons[] = {{"Whh", ref_off_whh(V, H) + 1 * H + 2, kNaN},
                       {"Wxh", ref_off_wxh(V, H) + 5, kInf},
                       {"by", ref_off_by(V, H) + V - 1, -kInf},
                       {"bh", ref_off_bh(V, H), kNaN},
                       {"Why", ref_off_why(V, H) + 7, kInf}};
        for (const Poison &x : poisons) {
            std::vector<double> bad = params;
            bad[x.index] = x.value;
            expect_refused(m, std::string("params_set with a non-finite ") + x.tensor, GPURNN_ERR_INVALID_ARGUMENT,
                           [&] { return gpurnn_params_set(m, bad.data(), n); }, {x.tensor});
        }
        for (double v : {kNaN, kInf, -kInf}) {
            std::vector<double> bad = state;
            bad[s - 1] = v;
            expect_refused(m, "state_set with a non-finite value", GPURNN_ERR_INVALID_ARGUMENT,
                           [&] { return gpurnn_state_set(m, bad.data(), s); });
        }
        /* nothing above used up the forward pass */
        if (dt == GPURNN_F64) {
            expect_forward_pass_intact(p);
        }
    }
}

TEST_P(BadInputTest, Forward)
{
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    double loss = -123.0;
    std::vector<int32_t> in = p.in, tg = p.tg;
    EXPECT_TRUE(failed_with(gpurnn_forward(nullptr, in.data(), tg.data(), T, &loss), GPURNN_ERR_INVALID_ARGUMENT));
    expect_refused(m, "NULL inputs", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_forward(m, nullptr, tg.data(), T, &loss); });
    expect_refused(m, "NULL targets", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_forward(m, in.data(), nullptr, T, &loss); });
    expect_refused(m, "NULL loss", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_forward(m, in.data(), tg.data(), T, nullptr); });
    for (int badT : {0, -1, T + 1, INT_MAX, INT_MIN})
        expect_refused(m, "T = " + std::to_string(badT), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_forward(m, in.data(), tg.data(), badT, &loss); });
    /* a bad token at t = 3, b = 2, in the inputs or in the targets */
    const int t = 3, b = 2;
    for (bool in_targets : {false, true}) {
        for (int32_t bad : {-1, V, V + 300, INT32_MIN, INT32_MAX}) {
            std::vector<int32_t> bi = p.in, bt = p.tg;
            (in_targets ? bt : bi)[t * B + b] = bad;
            const std::string what = std::string(in_targets ? "target " : "input ") + std::to_string(bad);
            expect_refused(m, what, GPURNN_ERR_INVALID_ARGUMENT,
                           [&] { return gpurnn_forward(m, bi.data(), bt.data(), T, &loss); }, {std::to_string(bad)});
            const std::string msg = gpurnn_last_error();
            EXPECT_TRUE(mentions_assignment(msg, "t", t)) << what << ": the message should say t=" << t << ": " << msg;
            EXPECT_TRUE(mentions_assignment(msg, "b", b)) << what << ": the message should say b=" << b << ": " << msg;
        }
    }
    /* a bad token beyond T is not read: the call is valid with a smaller T */
    std::vector<int32_t> tail_bad = p.in;
    tail_bad[(T - 1) * B] = -77;
    EXPECT_EQ(loss, -123.0) << "*loss was written by a failed call";
    /* none of this disturbed the forward pass before it */
    expect_forward_pass_intact(p);
    double l2;
    EXPECT_EQ(gpurnn_forward(m, tail_bad.data(), p.tg.data(), T - 1, &l2), GPURNN_OK) << gpurnn_last_error();
}

TEST_P(BadInputTest, ForwardWithNonFiniteLoss)
{
    /* Why = 0, by = (1e308, -1e308, 0, ...): y_1 - max(y) = -inf, so p_1 = 0 and a target
     * of 1 has loss +inf: NUMERIC, the carried state is unchanged and there is no forward
     * pass to backpropagate. Target 0 is fine (loss 0). */
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    std::vector<double> params = p.r.params;
    for (size_t i = ref_off_why(V, H); i < ref_off_bh(V, H); ++i)
        params[i] = 0.0;
    for (int k = 0; k < V; ++k)
        params[ref_off_by(V, H) + k] = 0.0;
    params[ref_off_by(V, H) + 0] = 1e308;
    params[ref_off_by(V, H) + 1] = -1e308;
    ASSERT_EQ(gpurnn_params_set(m, params.data(), params.size()), GPURNN_OK);
    std::vector<int32_t> zeros(T * B, 0), tg(T * B, 0);
    double loss = -1;
    ASSERT_EQ(gpurnn_forward(m, p.in.data(), zeros.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
    EXPECT_EQ(loss, 0.0);
    tg[2 * B + 1] = 1;
    loss = -123;
    expect_refused(m, "loss +inf", GPURNN_ERR_NUMERIC, [&] { return gpurnn_forward(m, p.in.data(), tg.data(), T, &loss); });
    EXPECT_EQ(loss, -123.0);
    expect_refused(m, "backward after a failed forward", GPURNN_ERR_INVALID_STATE, [&] { return gpurnn_backward(m); });
}

TEST_P(BadInputTest, Backward)
{
    EXPECT_TRUE(failed_with(gpurnn_backward(nullptr), GPURNN_ERR_INVALID_ARGUMENT));
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 510);
        ASSERT_TRUE(r.m);
        gpurnn_model *m = r.m.get();
        expect_refused(m, "backward before any forward", GPURNN_ERR_INVALID_STATE, [&] { return gpurnn_backward(m); });
        Rng rng(511);
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        double loss;
        ASSERT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(m), GPURNN_OK);
        ASSERT_EQ(gpurnn_params_set(m, r.params.data(), r.params.size()), GPURNN_OK);
        expect_refused(m, "backward after params_set", GPURNN_ERR_INVALID_STATE, [&] { return gpurnn_backward(m); });
    }
}

TEST_P(BadInputTest, ZeroGradAndClipping)
{
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    EXPECT_TRUE(failed_with(gpurnn_zero_grad(nullptr), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_clip_grad_value(nullptr, 1.0), GPURNN_ERR_INVALID_ARGUMENT));
    double norm = -5;
    EXPECT_TRUE(failed_with(gpurnn_clip_grad_norm(nullptr, 1.0, &norm), GPURNN_ERR_INVALID_ARGUMENT));
    for (double bad : {-1.0, -1e-300, kNaN, kInf, -kInf}) {
        expect_refused(m, "clip_grad_value " + std::to_string(bad), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_clip_grad_value(m, bad); }, {"limit"});
        expect_refused(m, "clip_grad_norm " + std::to_string(bad), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_clip_grad_norm(m, bad, &norm); }, {"max_norm"});
        EXPECT_EQ(norm, -5.0) << "norm_before was written by a failed call";
    }
    expect_forward_pass_intact(p);
}

TEST_P(BadInputTest, ClipGradNormOfHugeGradients)
{
    /* Gradients near 1e160 (Why ~ 1e160): their squares overflow. Either the norm is
     * computed without overflow (then it must be right) or the call fails with NUMERIC
     * and scales nothing. */
    const int v = 4, h = 3;
    RandomModel r = make_random_model(backend(), GPURNN_F64, v, h, 1, 4, GPURNN_LOSS_SUM, 520);
    ASSERT_TRUE(r.m);
    std::vector<double> params = r.params;
    for (size_t i = ref_off_why(v, h); i < ref_off_bh(v, h); ++i)
        params[i] *= 1e160;
    ASSERT_EQ(gpurnn_params_set(r.m.get(), params.data(), params.size()), GPURNN_OK);
    const int32_t in[4] = {0, 1, 2, 3}, tg[4] = {1, 2, 3, 0};
    double loss;
    ASSERT_EQ(gpurnn_forward(r.m.get(), in, tg, 4, &loss), GPURNN_OK) << gpurnn_last_error();
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
    const std::vector<double> g = get_grads(r.m.get());
    double mx = 0;
    for (double x : g)
        mx = std::max(mx, std::fabs(x));
    ASSERT_GT(mx, 1e155) << "test setup: the gradients should be huge";
    double ss = 0;
    for (double x : g)
        ss += (x / mx) * (x / mx);
    const double true_norm = mx * std::sqrt(ss);
    const Snapshot before = Snapshot::take(r.m.get());
    double norm = -5;
    const gpurnn_status st = gpurnn_clip_grad_norm(r.m.get(), 1.0, &norm);
    if (st == GPURNN_OK) {
        EXPECT_NEAR(norm, true_norm, 1e-12 * true_norm);
    } else {
        EXPECT_TRUE(failed_with(st, GPURNN_ERR_NUMERIC));
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    }
}

TEST_P(BadInputTest, Step)
{
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    const gpurnn_optimizer ok = make_optimizer(GPURNN_SGD, 0.1);
    EXPECT_TRUE(failed_with(gpurnn_step(nullptr, &ok), GPURNN_ERR_INVALID_ARGUMENT));
    expect_refused(m, "NULL optimizer", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_step(m, nullptr); });
    struct Case {
        const char *what;
        gpurnn_optimizer o;
        const char *word;
    };
    const Case cases[] = {
        {"kind 3", make_optimizer((gpurnn_optimizer_kind)3, 0.1), "kind"},
        {"kind -1", make_optimizer((gpurnn_optimizer_kind)-1, 0.1), "kind"},
        {"lr -0.1", make_optimizer(GPURNN_SGD, -0.1), "learning_rate"},
        {"lr NaN", make_optimizer(GPURNN_ADAGRAD, kNaN), "learning_rate"},
        {"lr inf", make_optimizer(GPURNN_ADAM, kInf), "learning_rate"},
        {"momentum 1", make_optimizer(GPURNN_SGD, 0.1, 1.0), "momentum"},
        {"momentum 1.5", make_optimizer(GPURNN_SGD, 0.1, 1.5), "momentum"},
        {"momentum -0.1", make_optimizer(GPURNN_SGD, 0.1, -0.1), "momentum"},
        {"momentum NaN", make_optimizer(GPURNN_SGD, 0.1, kNaN), "momentum"},
        {"beta1 1", make_optimizer(GPURNN_ADAM, 0.1, 0, 1.0), "beta1"},
        {"beta1 -0.5", make_optimizer(GPURNN_ADAM, 0.1, 0, -0.5), "beta1"},
        {"beta1 NaN", make_optimizer(GPURNN_ADAM, 0.1, 0, kNaN), "beta1"},
        {"beta2 1", make_optimizer(GPURNN_ADAM, 0.1, 0, 0.9, 1.0), "beta2"},
        {"beta2 2", make_optimizer(GPURNN_ADAM, 0.1, 0, 0.9, 2.0), "beta2"},
        {"Adam eps -1e-8", make_optimizer(GPURNN_ADAM, 0.1, 0, 0, 0, -1e-8), "eps"},
        {"Adam eps NaN", make_optimizer(GPURNN_ADAM, 0.1, 0, 0, 0, kNaN), "eps"},
        {"Adagrad eps -1", make_optimizer(GPURNN_ADAGRAD, 0.1, 0, 0, 0, -1.0), "eps"},
    };
    for (const Case &c : cases)
        expect_refused(m, c.what, GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_step(m, &c.o); }, {c.word});
    EXPECT_TRUE(failed_with(gpurnn_optimizer_reset(nullptr), GPURNN_ERR_INVALID_ARGUMENT));
    /* the failed Adam/Adagrad steps did not claim the optimizer state, and backward is
     * still possible (a failed step does not change the parameters) */
    expect_forward_pass_intact(p);
    const std::vector<double> g = get_grads(m), p0 = get_params(m);
    const gpurnn_optimizer sgd = make_optimizer(GPURNN_SGD, 0.1, 0.5);
    ASSERT_EQ(gpurnn_step(m, &sgd), GPURNN_OK) << "refused after failed steps of other kinds: " << gpurnn_last_error();
    std::vector<double> want(p0.size());
    for (size_t i = 0; i < p0.size(); ++i)
        want[i] = p0[i] - 0.1 * g[i];   /* a fresh velocity: v = g */
    EXPECT_TRUE(vectors_close(get_params(m), want, 1e-14));
}

TEST_P(BadInputTest, Gradcheck)
{
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    gpurnn_gradcheck_result res;
    std::vector<int32_t> in = p.in, tg = p.tg;
    EXPECT_TRUE(failed_with(gpurnn_gradcheck(nullptr, in.data(), tg.data(), T, 1e-5, 3, 1, &res),
                            GPURNN_ERR_INVALID_ARGUMENT));
    expect_refused(m, "NULL inputs", GPURNN_ERR_INVALID_ARGUMENT,
                   [&] { return gpurnn_gradcheck(m, nullptr, tg.data(), T, 1e-5, 3, 1, &res); });
    expect_refused(m, "NULL targets", GPURNN_ERR_INVALID_ARGUMENT,
                   [&] { return gpurnn_gradcheck(m, in.data(), nullptr, T, 1e-5, 3, 1, &res); });
    expect_refused(m, "NULL result", GPURNN_ERR_INVALID_ARGUMENT,
                   [&] { return gpurnn_gradcheck(m, in.data(), tg.data(), T, 1e-5, 3, 1, nullptr); });
    for (int badT : {0, -2, T + 1})
        expect_refused(m, "T = " + std::to_string(badT), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_gradcheck(m, in.data(), tg.data(), badT, 1e-5, 3, 1, &res); });
    std::vector<int32_t> bad_in = in;
    bad_in[4 * B + 1] = V;
    expect_refused(m, "token V", GPURNN_ERR_INVALID_ARGUMENT,
                   [&] { return gpurnn_gradcheck(m, bad_in.data(), tg.data(), T, 1e-5, 3, 1, &res); },
                   {std::to_string(V)});
    for (double eps : {0.0, -1e-5, kNaN, kInf})
        expect_refused(m, "eps " + std::to_string(eps), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_gradcheck(m, in.data(), tg.data(), T, eps, 3, 1, &res); }, {"eps"});
    for (int samples : {0, -1, INT_MIN})
        expect_refused(m, "samples " + std::to_string(samples), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_gradcheck(m, in.data(), tg.data(), T, 1e-5, samples, 1, &res); });
    expect_forward_pass_intact(p);
}

TEST_P(BadInputTest, Sample)
{
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    std::vector<int32_t> out(8, -42);
    EXPECT_TRUE(failed_with(gpurnn_sample(nullptr, 0, 8, 1.0, 1, out.data()), GPURNN_ERR_INVALID_ARGUMENT));
    expect_refused(m, "NULL out", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_sample(m, 0, 8, 1.0, 1, nullptr); });
    for (int32_t first : {-1, V, INT32_MIN})
        expect_refused(m, "first_token " + std::to_string(first), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_sample(m, first, 8, 1.0, 1, out.data()); }, {std::to_string(first)});
    for (int n : {0, -1})
        expect_refused(m, "n " + std::to_string(n), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_sample(m, 0, n, 1.0, 1, out.data()); });
    for (double temp : {-0.5, -kInf, kNaN, kInf})
        expect_refused(m, "temperature " + std::to_string(temp), GPURNN_ERR_INVALID_ARGUMENT,
                       [&] { return gpurnn_sample(m, 0, 8, temp, 1, out.data()); }, {"temperature"});
    for (int32_t x : out)
        ASSERT_EQ(x, -42) << "out was written by a failed call";
    expect_forward_pass_intact(p);
}

TEST_P(BadInputTest, SaveLoadAndConfig)
{
    Prepared p = prepared();
    ASSERT_TRUE(p.r.m);
    gpurnn_model *m = p.r.m.get();
    TempDir dir;
    const std::string path = dir.file("m.ckpt");
    EXPECT_TRUE(failed_with(gpurnn_model_save(nullptr, path.c_str()), GPURNN_ERR_INVALID_ARGUMENT));
    expect_refused(m, "save to NULL path", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_model_save(m, nullptr); });
    EXPECT_TRUE(dir.list().empty());
    ASSERT_EQ(gpurnn_model_save(m, path.c_str()), GPURNN_OK) << gpurnn_last_error();
    gpurnn_model *out = reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xbad0));
    EXPECT_TRUE(failed_with(gpurnn_model_load(nullptr, backend(), &out), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_load(path.c_str(), backend(), nullptr), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(failed_with(gpurnn_model_load(path.c_str(), (gpurnn_backend)3, &out), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(out, reinterpret_cast<gpurnn_model *>(static_cast<uintptr_t>(0xbad0)));

    gpurnn_config cfg;
    EXPECT_TRUE(failed_with(gpurnn_model_config(nullptr, &cfg), GPURNN_ERR_INVALID_ARGUMENT));
    expect_refused(m, "model_config NULL out", GPURNN_ERR_INVALID_ARGUMENT, [&] { return gpurnn_model_config(m, nullptr); });
    EXPECT_TRUE(failed_with(gpurnn_backend_check((gpurnn_backend)42), GPURNN_ERR_INVALID_ARGUMENT));
    /* saving does not use up the forward pass */
    expect_forward_pass_intact(p);
}

GPURNN_INSTANTIATE_BACKENDS(BadInputTest);
