/* The backend against the float64 reference (tests/reference_rnn.c): loss, the five
 * gradient tensors and the carried state, for several shapes, both reductions, float64
 * and float32. Also checks the reference itself against central differences. */
#include <cmath>

#include "test_util.h"

using namespace gt;

namespace {

struct Shape {
    int V, H, B, T;
};

const Shape kShapes[] = {
    {5, 7, 1, 1},     /* V != H, B = 1, T = 1 */
    {7, 5, 3, 1},     /* B > 1, T = 1 */
    {11, 16, 1, 30},  /* long single sequence */
    {13, 8, 4, 37},   /* B > 1, T >= 30 */
    {3, 1, 2, 9},     /* H = 1 */
    {2, 3, 5, 64},
    {65, 32, 3, 100}, /* tinyshakespeare-sized vocabulary, T = 100 */
};

std::string describe(const Shape &s, gpurnn_loss_reduction red, gpurnn_dtype dt)
{
    return "V=" + std::to_string(s.V) + " H=" + std::to_string(s.H) + " B=" + std::to_string(s.B) +
           " T=" + std::to_string(s.T) + " " + reduction_name(red) + " " + dtype_name(dt);
}

}  // namespace

/* ---------- the oracle itself ---------- */

TEST(ReferenceSelfTest, HandComputedLoss)
{
    /* V=2, H=1, every parameter zero: p = (1/2, 1/2) at every step, h stays 0. */
    const int V = 2, H = 1, B = 2, T = 3;
    std::vector<double> params(ref_param_count(V, H), 0.0);
    const int32_t in[T * B] = {0, 1, 1, 0, 1, 1}, tg[T * B] = {1, 0, 0, 1, 1, 1};
    std::vector<double> grads(params.size()), h(B * H);
    EXPECT_NEAR(ref_forward_backward(V, H, B, T, params.data(), nullptr, in, tg, 0, grads.data(), h.data()),
                T * B * std::log(2.0), 1e-14);
    EXPECT_NEAR(ref_forward_backward(V, H, B, T, params.data(), nullptr, in, tg, 1, nullptr, nullptr),
                std::log(2.0), 1e-15);
    /* dby = sum (p - onehot): targets 1,0,0,1,1,1 -> by0: 6*0.5 - 2 = 1, by1: 3 - 4 = -1 */
    EXPECT_NEAR(grads[ref_off_by(V, H) + 0], 1.0, 1e-15);
    EXPECT_NEAR(grads[ref_off_by(V, H) + 1], -1.0, 1e-15);
    /* by = (1, 0), Why = 0: p0 = e/(e+1) at every step. */
    params[ref_off_by(V, H)] = 1.0;
    const double p0 = std::exp(1.0) / (std::exp(1.0) + 1.0);
    EXPECT_NEAR(ref_forward_backward(V, H, B, T, params.data(), nullptr, in, tg, 0, nullptr, nullptr),
                -2 * std::log(p0) - 4 * std::log(1 - p0), 1e-13);
}

TEST(ReferenceSelfTest, GradientsMatchFiniteDifferences)
{
    /* The reference's backward against central differences of its own forward, on every
     * entry, with a non-zero carried state (validates the oracle, not the library). */
    const Shape shapes[] = {{4, 3, 1, 5}, {3, 5, 2, 7}, {6, 4, 3, 12}};
    for (const Shape &s : shapes) {
        for (int mean = 0; mean <= 1; ++mean) {
            SCOPED_TRACE(describe(s, mean ? GPURNN_LOSS_MEAN : GPURNN_LOSS_SUM, GPURNN_F64));
            Rng rng(100 + s.V * 10 + mean);
            std::vector<double> params = random_normal(ref_param_count(s.V, s.H), rng, 0.4);
            std::vector<double> h0 = random_normal((size_t)s.B * s.H, rng, 0.5);
            std::vector<int32_t> in = random_tokens((size_t)s.T * s.B, s.V, rng);
            std::vector<int32_t> tg = random_tokens((size_t)s.T * s.B, s.V, rng);
            std::vector<double> grads(params.size());
            ref_forward_backward(s.V, s.H, s.B, s.T, params.data(), h0.data(), in.data(), tg.data(), mean,
                                 grads.data(), nullptr);
            const double eps = 1e-5;
            for (size_t i = 0; i < params.size(); ++i) {
                std::vector<double> p = params;
                p[i] = params[i] + eps;
                const double lp = ref_forward_backward(s.V, s.H, s.B, s.T, p.data(), h0.data(), in.data(),
                                                       tg.data(), mean, nullptr, nullptr);
                p[i] = params[i] - eps;
                const double lm = ref_forward_backward(s.V, s.H, s.B, s.T, p.data(), h0.data(), in.data(),
                                                       tg.data(), mean, nullptr, nullptr);
                const double num = (lp - lm) / (2 * eps);
                EXPECT_NEAR(grads[i], num, 1e-8 + 1e-6 * std::fabs(num)) << "entry " << i;
            }
        }
    }
}

/* ---------- the library against the oracle ---------- */

class ReferenceAgreementTest : public BackendTest {
protected:
    /* One forward + backward on a fresh random model; compares loss, gradients and the
     * carried state with the reference run on the same (rounded) values. */
    void check(const Shape &s, gpurnn_loss_reduction red, gpurnn_dtype dt, uint64_t seed, double tol)
    {
        SCOPED_TRACE(describe(s, red, dt));
        /* param_scale 0.15 keeps the recurrence out of its chaotic regime, where one ulp of
         * difference in Whh (any two correct GEMMs) grows to more than the tolerance. */
        RandomModel r = make_random_model(backend(), dt, s.V, s.H, s.B, s.T + 3, red, seed, 0.15);
        ASSERT_TRUE(r.m);
        Rng rng(seed ^ 0xabcdef);
        std::vector<int32_t> in = random_tokens((size_t)s.T * s.B, s.V, rng);
        std::vector<int32_t> tg = random_tokens((size_t)s.T * s.B, s.V, rng);

        std::vector<double> want_grads(r.params.size()), want_h(r.state.size());
        const double want_loss = ref_forward_backward(s.V, s.H, s.B, s.T, r.params.data(), r.state.data(), in.data(),
                                                      tg.data(), red == GPURNN_LOSS_MEAN, want_grads.data(),
                                                      want_h.data());

        double loss = NAN;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), s.T, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_LE(std::fabs(loss - want_loss), tol * std::fabs(want_loss)) << "loss " << loss << " vs reference "
                                                                           << want_loss;
        EXPECT_TRUE(vectors_close(get_state(r.m.get()), want_h, tol)) << "carried state after forward";
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
        EXPECT_TRUE(tensors_close(s.V, s.H, get_grads(r.m.get()), want_grads, tol));
        /* forward/backward do not touch the parameters */
        EXPECT_TRUE(bit_equal(get_params(r.m.get()), r.params));
    }
};

TEST_P(ReferenceAgreementTest, Float64LossAndGradients)
{
    uint64_t seed = 1;
    for (const Shape &s : kShapes)
        for (gpurnn_loss_reduction red : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN})
            check(s, red, GPURNN_F64, seed++, 1e-12);
}

TEST_P(ReferenceAgreementTest, Float32LossAndGradients)
{
    uint64_t seed = 101;
    for (const Shape &s : kShapes)
        for (gpurnn_loss_reduction red : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN})
            check(s, red, GPURNN_F32, seed++, 1e-4);
}

TEST_P(ReferenceAgreementTest, SingleClassVocabularyHasZeroLoss)
{
    /* V = 1: p = 1 always, so the loss and every gradient are 0. */
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make_random_model(backend(), dt, 1, 4, 2, 5, GPURNN_LOSS_SUM, 7);
        ASSERT_TRUE(r.m);
        std::vector<int32_t> tok(10, 0);
        double loss = NAN;
        ASSERT_EQ(gpurnn_forward(r.m.get(), tok.data(), tok.data(), 5, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_LE(std::fabs(loss), 1e-6);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
        for (double g : get_grads(r.m.get()))
            ASSERT_LE(std::fabs(g), 1e-6);
    }
}

GPURNN_INSTANTIATE_BACKENDS(ReferenceAgreementTest);

TEST(AutoBackend, ResolvesAndAgreesWithTheReference)
{
    /* AUTO resolves to a concrete backend (never AUTO) and computes the same model. */
    gpurnn_config cfg = make_config(GPURNN_BACKEND_AUTO, GPURNN_F64, 6, 5, 2, 8);
    ModelPtr m = create_model(cfg);
    ASSERT_TRUE(m);
    const gpurnn_backend got = gpurnn_model_backend(m.get());
    EXPECT_TRUE(got == GPURNN_BACKEND_CPU || got == GPURNN_BACKEND_CUDA) << backend_label(got);
    if (!gpurnn_backend_available(GPURNN_BACKEND_CUDA)) {
        EXPECT_EQ(got, GPURNN_BACKEND_CPU);
    }
    EXPECT_EQ(get_config(m.get()).backend, got);
    Rng rng(5);
    std::vector<double> params = random_normal(ref_param_count(6, 5), rng, 0.3);
    ASSERT_EQ(gpurnn_params_set(m.get(), params.data(), params.size()), GPURNN_OK);
    std::vector<int32_t> in = random_tokens(16, 6, rng), tg = random_tokens(16, 6, rng);
    std::vector<double> want(params.size());
    const double want_loss =
        ref_forward_backward(6, 5, 2, 8, params.data(), nullptr, in.data(), tg.data(), 0, want.data(), nullptr);
    double loss = NAN;
    ASSERT_EQ(gpurnn_forward(m.get(), in.data(), tg.data(), 8, &loss), GPURNN_OK);
    EXPECT_NEAR(loss, want_loss, 1e-12 * want_loss);
    ASSERT_EQ(gpurnn_backward(m.get()), GPURNN_OK);
    EXPECT_TRUE(tensors_close(6, 5, get_grads(m.get()), want, 1e-12));
}

/* ---------- carried state ---------- */

class CarriedStateTest : public BackendTest {};

TEST_P(CarriedStateTest, ForwardLeavesLastHiddenState)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 9, H = 6, B = 3, T = 12;
        RandomModel r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 21);
        ASSERT_TRUE(r.m);
        EXPECT_TRUE(bit_equal(get_state(r.m.get()), r.state)) << "state_get returns what state_set stored";
        Rng rng(3);
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        std::vector<double> h_last(B * H);
        ref_forward_backward(V, H, B, T, r.params.data(), r.state.data(), in.data(), tg.data(), 0, nullptr,
                             h_last.data());
        double loss;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
        std::vector<double> got = get_state(r.m.get());
        const double tol = dt == GPURNN_F64 ? 1e-13 : 1e-5;
        for (size_t i = 0; i < got.size(); ++i)
            EXPECT_NEAR(got[i], h_last[i], tol) << "state entry " << i << " (b=" << i / H << ", j=" << i % H << ")";
    }
}

TEST_P(CarriedStateTest, ConsecutiveForwardsContinueFromTheState)
{
    const int V = 8, H = 5, B = 2, T = 10;
    RandomModel r = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_MEAN, 22);
    ASSERT_TRUE(r.m);
    Rng rng(4);
    std::vector<double> h = r.state;
    for (int call = 0; call < 3; ++call) {
        SCOPED_TRACE("call " + std::to_string(call));
        const int Tc = 3 + 3 * call;
        std::vector<int32_t> in = random_tokens(Tc * B, V, rng), tg = random_tokens(Tc * B, V, rng);
        std::vector<double> h_next(B * H);
        const double want = ref_forward_backward(V, H, B, Tc, r.params.data(), h.data(), in.data(), tg.data(), 1,
                                                 nullptr, h_next.data());
        double loss;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), Tc, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_NEAR(loss, want, 1e-12 * want);
        EXPECT_TRUE(vectors_close(get_state(r.m.get()), h_next, 1e-12));
        h = h_next;
    }
}

TEST_P(CarriedStateTest, ResetZeroesAndForwardStartsFromZero)
{
    const int V = 7, H = 4, B = 3, T = 6;
    RandomModel r = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 23);
    ASSERT_TRUE(r.m);
    Rng rng(6);
    std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
    double loss;
    ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
    const Snapshot before = Snapshot::take(r.m.get());
    ASSERT_EQ(gpurnn_state_reset(r.m.get()), GPURNN_OK) << gpurnn_last_error();
    const Snapshot after = Snapshot::take(r.m.get());
    for (double x : after.state)
        EXPECT_EQ(x, 0.0);
    EXPECT_TRUE(bit_equal(after.params, before.params));
    EXPECT_TRUE(bit_equal(after.grads, before.grads));

    std::vector<double> h_last(B * H);
    const double want =
        ref_forward_backward(V, H, B, T, r.params.data(), nullptr, in.data(), tg.data(), 0, nullptr, h_last.data());
    ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
    EXPECT_NEAR(loss, want, 1e-12 * want);
    EXPECT_TRUE(vectors_close(get_state(r.m.get()), h_last, 1e-12));
}

TEST_P(CarriedStateTest, StateSetChangesOnlyTheState)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        RandomModel r = make_random_model(backend(), dt, 5, 4, 2, 3, GPURNN_LOSS_SUM, 24);
        ASSERT_TRUE(r.m);
        const Snapshot before = Snapshot::take(r.m.get());
        Rng rng(8);
        std::vector<double> s = random_normal(8, rng, 0.7);
        ASSERT_EQ(gpurnn_state_set(r.m.get(), s.data(), s.size()), GPURNN_OK);
        const Snapshot after = Snapshot::take(r.m.get());
        EXPECT_TRUE(bit_equal(after.state, dt == GPURNN_F64 ? s : round_to_float(s)));
        EXPECT_TRUE(bit_equal(after.params, before.params));
        EXPECT_TRUE(bit_equal(after.grads, before.grads));
    }
}

TEST_P(CarriedStateTest, BatchRowsAreSequences)
{
    /* B = 3, identical tokens in every sequence, only sequence 1 starts from a non-zero
     * state: rows 0 and 2 must come out equal (from zero), row 1 different, each as the
     * reference computes it for one sequence. */
    const int V = 6, H = 5, B = 3, T = 4;
    RandomModel r = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 25);
    ASSERT_TRUE(r.m);
    std::vector<double> state(B * H, 0.0);
    for (int j = 0; j < H; ++j)
        state[1 * H + j] = 0.9 - 0.3 * j;
    ASSERT_EQ(gpurnn_state_set(r.m.get(), state.data(), state.size()), GPURNN_OK);
    const int32_t seq_in[T] = {1, 4, 0, 2}, seq_tg[T] = {3, 3, 5, 1};
    std::vector<int32_t> in(T * B), tg(T * B);
    for (int t = 0; t < T; ++t)
        for (int b = 0; b < B; ++b) {
            in[t * B + b] = seq_in[t];
            tg[t * B + b] = seq_tg[t];
        }
    double loss;
    ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
    std::vector<double> got = get_state(r.m.get());
    std::vector<double> h_zero(H), h_one(H);
    ref_forward_backward(V, H, 1, T, r.params.data(), nullptr, seq_in, seq_tg, 0, nullptr, h_zero.data());
    ref_forward_backward(V, H, 1, T, r.params.data(), state.data() + H, seq_in, seq_tg, 0, nullptr, h_one.data());
    for (int j = 0; j < H; ++j) {
        EXPECT_NEAR(got[0 * H + j], h_zero[j], 1e-13) << "b=0 j=" << j;
        EXPECT_NEAR(got[1 * H + j], h_one[j], 1e-13) << "b=1 j=" << j;
        EXPECT_NEAR(got[2 * H + j], h_zero[j], 1e-13) << "b=2 j=" << j;
    }
}

GPURNN_INSTANTIATE_BACKENDS(CarriedStateTest);
