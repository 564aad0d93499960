/* Gradient accumulation, zero_grad, the optimizers' formulas (computed here from the
 * parameters and gradients read back), optimizer-kind switching, and both clippings. */
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "test_util.h"

using namespace gt;

namespace {

/* The expected value of an update, checked per entry with a tolerance that scales with
 * the parameter and the size of the update (float32 models compute in float). */
::testing::AssertionResult params_match(const std::vector<double> &got, const std::vector<double> &want,
                                        const std::vector<double> &before, gpurnn_dtype dt)
{
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << "size " << got.size() << " vs " << want.size();
    const double rel_p = dt == GPURNN_F64 ? 1e-14 : 2e-7;
    const double rel_d = dt == GPURNN_F64 ? 1e-11 : 2e-5;
    for (size_t i = 0; i < got.size(); ++i) {
        const double delta = std::fabs(want[i] - before[i]);
        const double tol = rel_p * std::fabs(want[i]) + rel_d * delta + 1e-300;
        if (!(std::fabs(got[i] - want[i]) <= tol)) {
            char buf[200];
            std::snprintf(buf, sizeof buf, "entry %zu: got %.17g, expected %.17g (before %.17g, tol %.3g)", i, got[i],
                          want[i], before[i], tol);
            return ::testing::AssertionFailure() << buf;
        }
    }
    return ::testing::AssertionSuccess();
}

}  // namespace

class TrainingTest : public BackendTest {
protected:
    static constexpr int V = 9, H = 7, B = 2, T = 11;

    RandomModel make(gpurnn_dtype dt, uint64_t seed, gpurnn_loss_reduction red = GPURNN_LOSS_SUM)
    {
        return make_random_model(backend(), dt, V, H, B, T, red, seed);
    }

    /* zero_grad, then forward + backward on a random batch; returns the new gradients. */
    std::vector<double> fresh_grads(gpurnn_model *m, Rng &rng)
    {
        EXPECT_EQ(gpurnn_zero_grad(m), GPURNN_OK);
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        double loss;
        EXPECT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
        return get_grads(m);
    }

    /* One step; checks that it leaves the gradients and the carried state alone. */
    void step_ok(gpurnn_model *m, const gpurnn_optimizer &opt)
    {
        const Snapshot before = Snapshot::take(m);
        ASSERT_EQ(gpurnn_step(m, &opt), GPURNN_OK) << gpurnn_last_error();
        const Snapshot after = Snapshot::take(m);
        EXPECT_TRUE(bit_equal(after.grads, before.grads)) << "step must leave the gradients as they are";
        EXPECT_TRUE(bit_equal(after.state, before.state)) << "step must leave the carried state alone";
    }
};

/* ---------- accumulation ---------- */

TEST_P(TrainingTest, TwoBackwardCallsAdd)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make(dt, 41);
        ASSERT_TRUE(r.m);
        Rng rng(1);
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        std::vector<double> g(r.params.size());
        ref_forward_backward(V, H, B, T, r.params.data(), r.state.data(), in.data(), tg.data(), 0, g.data(), nullptr);
        double loss;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << "backward may be called twice per forward";
        std::vector<double> want(g.size());
        for (size_t i = 0; i < g.size(); ++i)
            want[i] = 2 * g[i];
        EXPECT_TRUE(tensors_close(V, H, get_grads(r.m.get()), want, dt == GPURNN_F64 ? 1e-12 : 1e-4));
    }
}

TEST_P(TrainingTest, TwoForwardBackwardPairsAdd)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make(dt, 42, GPURNN_LOSS_MEAN);
        ASSERT_TRUE(r.m);
        Rng rng(2);
        std::vector<int32_t> in1 = random_tokens(T * B, V, rng), tg1 = random_tokens(T * B, V, rng);
        std::vector<int32_t> in2 = random_tokens(5 * B, V, rng), tg2 = random_tokens(5 * B, V, rng);
        std::vector<double> g1(r.params.size()), g2(r.params.size()), h1(B * H), h2(B * H);
        ref_forward_backward(V, H, B, T, r.params.data(), r.state.data(), in1.data(), tg1.data(), 1, g1.data(),
                             h1.data());
        if (dt == GPURNN_F32)
            h1 = round_to_float(h1);   /* the float32 model carries a float state */
        ref_forward_backward(V, H, B, 5, r.params.data(), h1.data(), in2.data(), tg2.data(), 1, g2.data(), h2.data());
        double loss;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in1.data(), tg1.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        ASSERT_EQ(gpurnn_forward(r.m.get(), in2.data(), tg2.data(), 5, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        std::vector<double> want(g1.size());
        for (size_t i = 0; i < want.size(); ++i)
            want[i] = g1[i] + g2[i];
        EXPECT_TRUE(tensors_close(V, H, get_grads(r.m.get()), want, dt == GPURNN_F64 ? 1e-12 : 1e-4));
    }
}

TEST_P(TrainingTest, ZeroGradZeroesAndKeepsTheForwardPass)
{
    RandomModel r = make(GPURNN_F64, 43);
    ASSERT_TRUE(r.m);
    Rng rng(3);
    std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
    std::vector<double> g(r.params.size());
    ref_forward_backward(V, H, B, T, r.params.data(), r.state.data(), in.data(), tg.data(), 0, g.data(), nullptr);
    double loss;
    ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
    const Snapshot before = Snapshot::take(r.m.get());
    ASSERT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK) << gpurnn_last_error();
    const Snapshot after = Snapshot::take(r.m.get());
    for (double x : after.grads)
        ASSERT_EQ(x, 0.0);
    EXPECT_TRUE(bit_equal(after.params, before.params));
    EXPECT_TRUE(bit_equal(after.state, before.state));
    /* zero_grad does not use up the forward pass: backward gives the gradients again */
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
    EXPECT_TRUE(tensors_close(V, H, get_grads(r.m.get()), g, 1e-12));
}

TEST_P(TrainingTest, FreshModelHasZeroGradientsAndState)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        ModelPtr m = create_model(make_config(backend(), dt, 5, 4, 3, 2));
        ASSERT_TRUE(m);
        for (double x : get_grads(m.get()))
            ASSERT_EQ(x, 0.0);
        for (double x : get_state(m.get()))
            ASSERT_EQ(x, 0.0);
    }
}

/* ---------- optimizers ---------- */

TEST_P(TrainingTest, SgdWithoutMomentum)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make(dt, 51);
        ASSERT_TRUE(r.m);
        Rng rng(5);
        const double lr = 0.05;
        for (int s = 0; s < 2; ++s) {
            const std::vector<double> g = fresh_grads(r.m.get(), rng);
            const std::vector<double> p0 = get_params(r.m.get());
            step_ok(r.m.get(), make_optimizer(GPURNN_SGD, lr));
            std::vector<double> want(p0.size());
            for (size_t i = 0; i < p0.size(); ++i)
                want[i] = p0[i] - lr * g[i];
            EXPECT_TRUE(params_match(get_params(r.m.get()), want, p0, dt)) << "step " << s;
        }
    }
}

TEST_P(TrainingTest, SgdWithMomentum)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make(dt, 52);
        ASSERT_TRUE(r.m);
        Rng rng(6);
        const double lr = 0.03, mu = 0.9;
        std::vector<double> v(r.params.size(), 0.0);
        for (int s = 0; s < 3; ++s) {
            const std::vector<double> g = fresh_grads(r.m.get(), rng);
            const std::vector<double> p0 = get_params(r.m.get());
            step_ok(r.m.get(), make_optimizer(GPURNN_SGD, lr, mu));
            std::vector<double> want(p0.size());
            for (size_t i = 0; i < p0.size(); ++i) {
                v[i] = mu * v[i] + g[i];
                want[i] = p0[i] - lr * v[i];
            }
            EXPECT_TRUE(params_match(get_params(r.m.get()), want, p0, dt)) << "step " << s;
        }
    }
}

TEST_P(TrainingTest, Adagrad)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        for (double eps_arg : {0.0, 1e-3}) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + " eps " + std::to_string(eps_arg));
            RandomModel r = make(dt, 53);
            ASSERT_TRUE(r.m);
            Rng rng(7);
            const double lr = 0.1, eps = eps_arg == 0.0 ? 1e-8 : eps_arg;
            std::vector<double> mem(r.params.size(), 0.0);
            for (int s = 0; s < 3; ++s) {
                const std::vector<double> g = fresh_grads(r.m.get(), rng);
                const std::vector<double> p0 = get_params(r.m.get());
                step_ok(r.m.get(), make_optimizer(GPURNN_ADAGRAD, lr, 0, 0, 0, eps_arg));
                std::vector<double> want(p0.size());
                for (size_t i = 0; i < p0.size(); ++i) {
                    mem[i] += g[i] * g[i];
                    want[i] = p0[i] - lr * g[i] / std::sqrt(mem[i] + eps);
                }
                EXPECT_TRUE(params_match(get_params(r.m.get()), want, p0, dt)) << "step " << s;
            }
        }
    }
}

TEST_P(TrainingTest, AdamWithBiasCorrection)
{
    struct Hyper {
        double beta1, beta2, eps;     /* as passed (0 = default) */
    };
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        for (Hyper hp : {Hyper{0, 0, 0}, Hyper{0.8, 0.99, 1e-3}}) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + " beta1 " + std::to_string(hp.beta1));
            RandomModel r = make(dt, 54);
            ASSERT_TRUE(r.m);
            Rng rng(8);
            const double lr = 0.01;
            const double b1 = hp.beta1 == 0 ? 0.9 : hp.beta1, b2 = hp.beta2 == 0 ? 0.999 : hp.beta2;
            const double eps = hp.eps == 0 ? 1e-8 : hp.eps;
            std::vector<double> mo(r.params.size(), 0.0), ve(r.params.size(), 0.0);
            for (int s = 1; s <= 3; ++s) {
                const std::vector<double> g = fresh_grads(r.m.get(), rng);
                const std::vector<double> p0 = get_params(r.m.get());
                step_ok(r.m.get(), make_optimizer(GPURNN_ADAM, lr, 0, hp.beta1, hp.beta2, hp.eps));
                std::vector<double> want(p0.size());
                for (size_t i = 0; i < p0.size(); ++i) {
                    mo[i] = b1 * mo[i] + (1 - b1) * g[i];
                    ve[i] = b2 * ve[i] + (1 - b2) * g[i] * g[i];
                    const double m_hat = mo[i] / (1 - std::pow(b1, s));
                    const double v_hat = ve[i] / (1 - std::pow(b2, s));
                    want[i] = p0[i] - lr * m_hat / (std::sqrt(v_hat) + eps);
                }
                EXPECT_TRUE(params_match(get_params(r.m.get()), want, p0, dt)) << "step " << s;
            }
        }
    }
}

TEST_P(TrainingTest, SwitchingKindIsRefusedUntilReset)
{
    RandomModel r = make(GPURNN_F64, 55);
    ASSERT_TRUE(r.m);
    Rng rng(9);
    fresh_grads(r.m.get(), rng);
    step_ok(r.m.get(), make_optimizer(GPURNN_SGD, 0.1, 0.5));
    const std::vector<double> g = fresh_grads(r.m.get(), rng);
    const Snapshot before = Snapshot::take(r.m.get());
    for (gpurnn_optimizer_kind other : {GPURNN_ADAM, GPURNN_ADAGRAD}) {
        const gpurnn_optimizer o = make_optimizer(other, 0.1);
        EXPECT_TRUE(failed_with(gpurnn_step(r.m.get(), &o), GPURNN_ERR_INVALID_ARGUMENT)) << "kind " << other;
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    }
    ASSERT_EQ(gpurnn_optimizer_reset(r.m.get()), GPURNN_OK) << gpurnn_last_error();
    EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before)) << "optimizer_reset touches only optimizer state";
    /* after the reset Adam starts from zero moments and t = 1: m_hat = g, v_hat = g^2 */
    const std::vector<double> p0 = get_params(r.m.get());
    step_ok(r.m.get(), make_optimizer(GPURNN_ADAM, 0.01));
    std::vector<double> want(p0.size());
    for (size_t i = 0; i < p0.size(); ++i) {
        const double m_hat = (0.1 * g[i]) / (1 - 0.9), v_hat = (0.001 * g[i] * g[i]) / (1 - 0.999);
        want[i] = p0[i] - 0.01 * m_hat / (std::sqrt(v_hat) + 1e-8);
    }
    EXPECT_TRUE(params_match(get_params(r.m.get()), want, p0, GPURNN_F64));
    /* and now SGD is the one refused */
    const gpurnn_optimizer sgd = make_optimizer(GPURNN_SGD, 0.1);
    EXPECT_TRUE(failed_with(gpurnn_step(r.m.get(), &sgd), GPURNN_ERR_INVALID_ARGUMENT));
}

TEST_P(TrainingTest, ResetClearsSgdVelocity)
{
    RandomModel r = make(GPURNN_F64, 56);
    ASSERT_TRUE(r.m);
    Rng rng(10);
    fresh_grads(r.m.get(), rng);
    step_ok(r.m.get(), make_optimizer(GPURNN_SGD, 0.1, 0.9));
    ASSERT_EQ(gpurnn_optimizer_reset(r.m.get()), GPURNN_OK);
    const std::vector<double> g = fresh_grads(r.m.get(), rng);
    const std::vector<double> p0 = get_params(r.m.get());
    step_ok(r.m.get(), make_optimizer(GPURNN_SGD, 0.1, 0.9));
    std::vector<double> want(p0.size());
    for (size_t i = 0; i < p0.size(); ++i)
        want[i] = p0[i] - 0.1 * g[i];   /* v = 0.9*0 + g */
    EXPECT_TRUE(params_match(get_params(r.m.get()), want, p0, GPURNN_F64));
}

TEST_P(TrainingTest, StepInvalidatesTheForwardPass)
{
    RandomModel r = make(GPURNN_F64, 57);
    ASSERT_TRUE(r.m);
    Rng rng(11);
    fresh_grads(r.m.get(), rng);
    step_ok(r.m.get(), make_optimizer(GPURNN_SGD, 0.1));
    const Snapshot before = Snapshot::take(r.m.get());
    EXPECT_TRUE(failed_with(gpurnn_backward(r.m.get()), GPURNN_ERR_INVALID_STATE));
    EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
}

TEST_P(TrainingTest, NonFiniteUpdateChangesNothing)
{
    /* A parameter near DBL_MAX and a huge learning rate: the update overflows. The step
     * is all or nothing: NUMERIC, and no parameter or optimizer state changes. */
    RandomModel r = make(GPURNN_F64, 58);
    ASSERT_TRUE(r.m);
    Rng rng(12);
    const std::vector<double> g = fresh_grads(r.m.get(), rng);
    size_t imax = 0;
    for (size_t i = 0; i < g.size(); ++i)
        if (std::fabs(g[i]) > std::fabs(g[imax]))
            imax = i;
    ASSERT_GT(std::fabs(g[imax]), 0.2);
    std::vector<double> p = r.params;
    p[imax] = g[imax] > 0 ? -1.7e308 : 1.7e308;
    ASSERT_EQ(gpurnn_params_set(r.m.get(), p.data(), p.size()), GPURNN_OK);
    const Snapshot before = Snapshot::take(r.m.get());
    const gpurnn_optimizer huge = make_optimizer(GPURNN_SGD, 1e308, 0.5);
    EXPECT_TRUE(failed_with(gpurnn_step(r.m.get(), &huge), GPURNN_ERR_NUMERIC));
    EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    /* the velocity was not written: a sane step now behaves like the first one */
    ASSERT_EQ(gpurnn_params_set(r.m.get(), r.params.data(), r.params.size()), GPURNN_OK);
    step_ok(r.m.get(), make_optimizer(GPURNN_SGD, 0.1, 0.5));
    std::vector<double> want(r.params.size());
    for (size_t i = 0; i < want.size(); ++i)
        want[i] = r.params[i] - 0.1 * g[i];
    EXPECT_TRUE(params_match(get_params(r.m.get()), want, r.params, GPURNN_F64));
}

/* ---------- clipping ---------- */

TEST_P(TrainingTest, ClipGradValueClampsEachEntry)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make(dt, 61);
        ASSERT_TRUE(r.m);
        Rng rng(13);
        const std::vector<double> g = fresh_grads(r.m.get(), rng);
        std::vector<double> mags;
        for (double x : g)
            mags.push_back(std::fabs(x));
        std::sort(mags.begin(), mags.end());
        const double limit = mags[mags.size() / 2] * 1.0001;   /* about half the entries are clipped */
        const Snapshot before = Snapshot::take(r.m.get());
        ASSERT_EQ(gpurnn_clip_grad_value(r.m.get(), limit), GPURNN_OK) << gpurnn_last_error();
        const Snapshot after = Snapshot::take(r.m.get());
        const double lim = dt == GPURNN_F64 ? limit : round_to_float(limit);
        size_t clipped = 0;
        for (size_t i = 0; i < g.size(); ++i) {
            const double want = g[i] > limit ? lim : g[i] < -limit ? -lim : g[i];
            clipped += want != g[i];
            EXPECT_NEAR(after.grads[i], want, dt == GPURNN_F64 ? 0.0 : 1e-7 * limit) << "entry " << i;
        }
        EXPECT_GT(clipped, g.size() / 4);
        EXPECT_TRUE(bit_equal(after.params, before.params));
        EXPECT_TRUE(bit_equal(after.state, before.state));
        /* a limit above every entry changes nothing */
        ASSERT_EQ(gpurnn_clip_grad_value(r.m.get(), mags.back() * 2), GPURNN_OK);
        EXPECT_TRUE(bit_equal(get_grads(r.m.get()), after.grads));
        /* limit 0 zeroes every gradient */
        ASSERT_EQ(gpurnn_clip_grad_value(r.m.get(), 0.0), GPURNN_OK);
        for (double x : get_grads(r.m.get()))
            ASSERT_EQ(x, 0.0);
    }
}

TEST_P(TrainingTest, ClipGradNormScalesOnlyAboveTheLimit)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make(dt, 62);
        ASSERT_TRUE(r.m);
        Rng rng(14);
        const std::vector<double> g = fresh_grads(r.m.get(), rng);
        double sumsq = 0;
        for (double x : g)
            sumsq += x * x;
        const double norm = std::sqrt(sumsq);
        ASSERT_GT(norm, 0.1);
        const double tol = dt == GPURNN_F64 ? 1e-12 : 1e-6;

        /* under the limit: the norm is reported and nothing changes */
        double reported = -1;
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), norm * 1.5, &reported), GPURNN_OK) << gpurnn_last_error();
        EXPECT_NEAR(reported, norm, tol * norm);
        EXPECT_TRUE(bit_equal(get_grads(r.m.get()), g));
        /* norm_before may be NULL */
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), norm * 1.5, nullptr), GPURNN_OK) << gpurnn_last_error();
        EXPECT_TRUE(bit_equal(get_grads(r.m.get()), g));

        /* above the limit: scaled by max_norm / (norm + 1e-6) */
        const double max_norm = norm / 3;
        const Snapshot before = Snapshot::take(r.m.get());
        reported = -1;
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), max_norm, &reported), GPURNN_OK) << gpurnn_last_error();
        EXPECT_NEAR(reported, norm, tol * norm);
        const double scale = max_norm / (norm + 1e-6);
        std::vector<double> want(g.size());
        for (size_t i = 0; i < g.size(); ++i)
            want[i] = g[i] * scale;
        const Snapshot after = Snapshot::take(r.m.get());
        EXPECT_TRUE(vectors_close(after.grads, want, tol));
        for (size_t i = 0; i < g.size(); ++i)
            ASSERT_NEAR(after.grads[i], want[i], tol * std::fabs(want[i]) + 1e-300) << "entry " << i;
        EXPECT_TRUE(bit_equal(after.params, before.params));
        EXPECT_TRUE(bit_equal(after.state, before.state));
        /* the second call sees the clipped norm */
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), 1e300, &reported), GPURNN_OK);
        EXPECT_NEAR(reported, max_norm * norm / (norm + 1e-6), tol * max_norm);

        /* max_norm 0 zeroes the gradients */
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), 0.0, &reported), GPURNN_OK);
        for (double x : get_grads(r.m.get()))
            ASSERT_EQ(x, 0.0);
        /* zero gradients: norm 0, nothing to scale */
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), 0.0, &reported), GPURNN_OK);
        EXPECT_EQ(reported, 0.0);
    }
}

GPURNN_INSTANTIATE_BACKENDS(TrainingTest);
