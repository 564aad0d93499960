/* Numeric faults: a forward whose loss is not finite, gradients that are not finite (seen
 * by clip_grad_norm and step), and updates that overflow, all reached from huge but finite
 * parameters set through gpurnn_params_set. Each call returns GPURNN_ERR_NUMERIC with a
 * message naming the tensor, and changes nothing: parameters, gradients and carried state
 * are bit-identical, and so is the optimizer state with its step count (compared through
 * the bytes of a checkpoint and through the next step, against a twin model that never
 * saw the failure). */
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "test_util.h"

using namespace gt;

namespace {

const char *const kTensorNames[GPURNN_NUM_TENSORS] = {"Wxh", "Whh", "Why", "bh", "by"};

/* "Whh[3, 1]" or "bh[2]": how the library names flat index i of the layout for (V, H). */
std::string describe(int V, int H, size_t i)
{
    const size_t offs[6] = {ref_off_wxh(V, H), ref_off_whh(V, H), ref_off_why(V, H),
                            ref_off_bh(V, H),  ref_off_by(V, H),  ref_param_count(V, H)};
    const size_t cols[5] = {(size_t)V, (size_t)H, (size_t)H, 0, 0};
    for (int t = 0; t < 5; ++t) {
        if (i < offs[t + 1]) {
            const size_t local = i - offs[t];
            if (cols[t] == 0)
                return std::string(kTensorNames[t]) + "[" + std::to_string(local) + "]";
            return std::string(kTensorNames[t]) + "[" + std::to_string(local / cols[t]) + ", " +
                   std::to_string(local % cols[t]) + "]";
        }
    }
    return "?";
}


::testing::AssertionResult mentions(const std::string &msg, const std::string &word)
{
    if (msg.find(word) != std::string::npos)
        return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "the message should mention '" << word << "': " << msg;
}

double largest_finite(gpurnn_dtype dt) { return dt == GPURNN_F32 ? 3.0e38 : 1.7e308; }

}  // namespace

class NumericFaultTest : public BackendTest {
protected:
    /* A model in the middle of training with optimizer `kind`: one step taken, then a
     * forward and backward (non-zero gradients, a valid forward pass, a carried state
     * that is not zero). */
    RandomModel training(gpurnn_dtype dt, int V, int H, int B, int T, gpurnn_optimizer_kind kind, uint64_t seed)
    {
        RandomModel r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, seed);
        if (!r.m)
            return r;
        Rng rng(seed + 1);
        const gpurnn_optimizer o = make_optimizer(kind, 0.01, kind == GPURNN_SGD ? 0.9 : 0.0);
        for (int k = 0; k < 2; ++k) {
            std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
            double loss;
            EXPECT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK);
            EXPECT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
            EXPECT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
            if (k == 0) {
                EXPECT_EQ(gpurnn_step(r.m.get(), &o), GPURNN_OK) << gpurnn_last_error();
            }
        }
        return r;
    }
};

TEST_P(NumericFaultTest, HugeFiniteParametersOverflowTheFloat32Loss)
{
    /* Why[0, :] = 3e38 and h = tanh(1) everywhere: the logit y_0 = 4 * 3e38 * 0.76 is
     * beyond FLT_MAX, so a float32 model's loss is not finite (NUMERIC), while a float64
     * model with the very same parameters computes a finite loss. */
    const int V = 4, H = 4, B = 2, T = 3;
    TempDir dir;
    std::vector<double> params(ref_param_count(V, H), 0.0);
    for (int j = 0; j < H; ++j) {
        params[ref_off_why(V, H) + j] = 3e38;   /* Why[0, j] */
        params[ref_off_bh(V, H) + j] = 1.0;
    }
    std::vector<int32_t> in(T * B), tg(T * B, 1);
    for (int i = 0; i < T * B; ++i)
        in[i] = i % V;

    RandomModel r = training(GPURNN_F32, V, H, B, T, GPURNN_ADAM, 600);
    ASSERT_TRUE(r.m);
    gpurnn_model *m = r.m.get();
    ASSERT_EQ(gpurnn_params_set(m, params.data(), params.size()), GPURNN_OK) << gpurnn_last_error();
    const FullState before = FullState::take(m, dir);
    double loss = -123.0;
    const gpurnn_status st = gpurnn_forward(m, in.data(), tg.data(), T, &loss);
    const std::string msg = gpurnn_last_error();
    EXPECT_TRUE(failed_with(st, GPURNN_ERR_NUMERIC)) << msg;
    EXPECT_TRUE(mentions(msg, "loss"));
    EXPECT_TRUE(mentions(msg, "Why[0, 0]"));
    EXPECT_EQ(loss, -123.0) << "*loss was written by a failed forward";
    EXPECT_TRUE(full_states_equal(FullState::take(m, dir), before));
    EXPECT_TRUE(failed_with(gpurnn_backward(m), GPURNN_ERR_INVALID_STATE)) << "a failed forward leaves nothing to backpropagate";

    /* sampling from the same parameters: NUMERIC, naming the logit and the tensor */
    int32_t out[4] = {-7, -7, -7, -7};
    const gpurnn_status ss = gpurnn_sample(m, 0, 4, 1.0, 3, out);
    EXPECT_TRUE(failed_with(ss, GPURNN_ERR_NUMERIC));
    EXPECT_TRUE(mentions(gpurnn_last_error(), "Why[0, 0]"));
    EXPECT_TRUE(full_states_equal(FullState::take(m, dir), before));

    /* gradcheck: NUMERIC, and the model as it was */
    gpurnn_gradcheck_result res;
    EXPECT_TRUE(failed_with(gpurnn_gradcheck(m, in.data(), tg.data(), T, 1e-3, 2, 1, &res), GPURNN_ERR_NUMERIC));
    EXPECT_TRUE(full_states_equal(FullState::take(m, dir), before));

    /* float64, same parameters: finite */
    RandomModel r64 = training(GPURNN_F64, V, H, B, T, GPURNN_ADAM, 601);
    ASSERT_TRUE(r64.m);
    ASSERT_EQ(gpurnn_params_set(r64.m.get(), params.data(), params.size()), GPURNN_OK);
    ASSERT_EQ(gpurnn_forward(r64.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
    EXPECT_GT(loss, 1e38);
    EXPECT_TRUE(std::isfinite(loss));

    /* and the float32 model recovers with sane parameters */
    ASSERT_EQ(gpurnn_params_set(m, r.params.data(), r.params.size()), GPURNN_OK);
    EXPECT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
}

TEST_P(NumericFaultTest, NonFiniteGradientsAreRefusedByClipAndStep)
{
    /* Why[0, 0] = +big, Why[1, 0] = -big and h_0 = -1e-3: the logits (+-big/1000) and the
     * loss are finite, but dh_0 = Why^T dY = -2 big overflows, so backward leaves
     * non-finite gradients. clip_grad_norm and each optimizer's step then fail with
     * NUMERIC naming the first non-finite gradient, and change nothing, optimizer state
     * and step count included: afterwards the model trains on exactly like a twin that
     * never saw the failures. */
    const int V = 3, H = 2, B = 1, T = 2;
    const std::vector<int32_t> in = {1, 2}, tg = {0, 0};
    for (gpurnn_dtype dt : {GPURNN_F32, GPURNN_F64}) {
        for (gpurnn_optimizer_kind kind : {GPURNN_SGD, GPURNN_ADAGRAD, GPURNN_ADAM}) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + " optimizer " + std::to_string(kind));
            TempDir dir;
            const double big = largest_finite(dt);
            std::vector<double> poison(ref_param_count(V, H), 0.0);
            poison[ref_off_why(V, H) + 0 * H + 0] = big;
            poison[ref_off_why(V, H) + 1 * H + 0] = -big;
            poison[ref_off_bh(V, H) + 0] = std::atanh(-1e-3);
            RandomModel r = training(dt, V, H, B, T, kind, 610 + kind);
            RandomModel twin = training(dt, V, H, B, T, kind, 610 + kind);
            ASSERT_TRUE(r.m);
            ASSERT_TRUE(twin.m);
            gpurnn_model *m = r.m.get();
            const std::vector<double> sane = get_params(m);
            ASSERT_TRUE(bit_equal(get_params(twin.m.get()), sane));

            ASSERT_EQ(gpurnn_params_set(m, poison.data(), poison.size()), GPURNN_OK) << gpurnn_last_error();
            ASSERT_EQ(gpurnn_zero_grad(m), GPURNN_OK);
            double loss;
            ASSERT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
            ASSERT_TRUE(std::isfinite(loss));
            ASSERT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
            const std::vector<double> g = get_grads(m);
            size_t first_bad = g.size();
            for (size_t i = 0; i < g.size() && first_bad == g.size(); ++i)
                if (!std::isfinite(g[i]))
                    first_bad = i;
            ASSERT_LT(first_bad, g.size()) << "test setup: backward should leave a non-finite gradient";
            const std::string bad_name = describe(V, H, first_bad);

            const FullState before = FullState::take(m, dir);
            double norm = -5;
            EXPECT_TRUE(failed_with(gpurnn_clip_grad_norm(m, 1.0, &norm), GPURNN_ERR_NUMERIC));
            EXPECT_TRUE(mentions(gpurnn_last_error(), bad_name));
            EXPECT_EQ(norm, -5.0) << "norm_before was written by a failed call";
            EXPECT_TRUE(full_states_equal(FullState::take(m, dir), before));

            const gpurnn_optimizer o = make_optimizer(kind, 0.01, kind == GPURNN_SGD ? 0.9 : 0.0);
            EXPECT_TRUE(failed_with(gpurnn_step(m, &o), GPURNN_ERR_NUMERIC));
            EXPECT_TRUE(mentions(gpurnn_last_error(), bad_name));
            EXPECT_TRUE(full_states_equal(FullState::take(m, dir), before));

            /* back to the sane parameters and the twin's gradients: the next step must
             * give the twin's result bit for bit (same optimizer state, same t) */
            ASSERT_EQ(gpurnn_params_set(m, sane.data(), sane.size()), GPURNN_OK);
            ASSERT_EQ(gpurnn_state_set(m, r.state.data(), r.state.size()), GPURNN_OK);
            ASSERT_EQ(gpurnn_state_set(twin.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
            for (gpurnn_model *x : {m, twin.m.get()}) {
                ASSERT_EQ(gpurnn_zero_grad(x), GPURNN_OK);
                ASSERT_EQ(gpurnn_forward(x, in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
                ASSERT_EQ(gpurnn_backward(x), GPURNN_OK);
                ASSERT_EQ(gpurnn_step(x, &o), GPURNN_OK) << gpurnn_last_error();
            }
            EXPECT_TRUE(bit_equal(get_params(m), get_params(twin.m.get())))
                << "the failed calls changed the optimizer state";
            EXPECT_EQ(FullState::take(m, dir).checkpoint, FullState::take(twin.m.get(), dir).checkpoint);
        }
    }
}

TEST_P(NumericFaultTest, OverflowingUpdateChangesNothing)
{
    /* Finite gradients, but one parameter within a factor of the dtype's largest value and
     * a learning rate that moves it by a tenth of the range: its new value overflows, for every optimizer
     * and both dtypes (the float64 case for SGD is in test_training.cc). NUMERIC naming
     * that entry; nothing changes. */
    const int V = 6, H = 5, B = 2, T = 4;
    for (gpurnn_dtype dt : {GPURNN_F32, GPURNN_F64}) {
        for (gpurnn_optimizer_kind kind : {GPURNN_SGD, GPURNN_ADAGRAD, GPURNN_ADAM}) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + " optimizer " + std::to_string(kind));
            TempDir dir;
            RandomModel r = training(dt, V, H, B, T, kind, 620 + kind);
            RandomModel twin = training(dt, V, H, B, T, kind, 620 + kind);
            ASSERT_TRUE(r.m);
            ASSERT_TRUE(twin.m);
            gpurnn_model *m = r.m.get();
            /* The twin (same history, same gradients) shows each entry's update per unit of
             * learning rate; the update does not depend on the parameter's value. */
            const std::vector<double> p0 = get_params(twin.m.get());
            const gpurnn_optimizer unit = make_optimizer(kind, 1.0, kind == GPURNN_SGD ? 0.9 : 0.0);
            ASSERT_EQ(gpurnn_step(twin.m.get(), &unit), GPURNN_OK) << gpurnn_last_error();
            const std::vector<double> p1 = get_params(twin.m.get());
            size_t imax = 0;
            for (size_t i = 0; i < p0.size(); ++i)
                if (std::fabs(p1[i] - p0[i]) > std::fabs(p1[imax] - p0[imax]))
                    imax = i;
            const double delta = p1[imax] - p0[imax];
            ASSERT_GT(std::fabs(delta), 1e-3);
            /* imax's update is the largest: 2e37 (2e307) for it, at most that for any other
             * entry, so only imax, placed near the top of the range in the direction of its
             * update, overflows */
            const double top = dt == GPURNN_F32 ? 3.3e38 : 1.7e308;
            const double lr = (dt == GPURNN_F32 ? 2e37 : 2e307) / std::fabs(delta);
            ASSERT_LT(lr, dt == GPURNN_F32 ? 3e38 : 1e308) << "test setup: the learning rate must be finite in the dtype";
            std::vector<double> p = get_params(m);
            ASSERT_TRUE(bit_equal(p, p0));
            p[imax] = delta > 0 ? top : -top;
            ASSERT_EQ(gpurnn_params_set(m, p.data(), p.size()), GPURNN_OK) << gpurnn_last_error();
            const gpurnn_optimizer o = make_optimizer(kind, lr, kind == GPURNN_SGD ? 0.9 : 0.0);
            const FullState before = FullState::take(m, dir);
            EXPECT_TRUE(failed_with(gpurnn_step(m, &o), GPURNN_ERR_NUMERIC));
            EXPECT_TRUE(mentions(gpurnn_last_error(), describe(V, H, imax)));
            EXPECT_TRUE(full_states_equal(FullState::take(m, dir), before));
        }
    }
}

TEST_P(NumericFaultTest, ParamsSetRefusesWhatTheDtypeCannotHold)
{
    /* The way in for the tests above refuses non-finite values, and values beyond the
     * dtype's range, naming the tensor and entry; nothing changes. */
    const int V = 5, H = 3, B = 1, T = 2;
    for (gpurnn_dtype dt : {GPURNN_F32, GPURNN_F64}) {
        SCOPED_TRACE(dtype_name(dt));
        TempDir dir;
        RandomModel r = training(dt, V, H, B, T, GPURNN_ADAM, 630);
        ASSERT_TRUE(r.m);
        const size_t at = ref_off_whh(V, H) + 1 * H + 2;   /* Whh[1, 2] */
        std::vector<double> bads = {NAN, INFINITY, -INFINITY};
        if (dt == GPURNN_F32)
            bads.push_back(1e39);
        for (double bad : bads) {
            std::vector<double> p = r.params;
            p[at] = bad;
            const FullState before = FullState::take(r.m.get(), dir);
            EXPECT_TRUE(failed_with(gpurnn_params_set(r.m.get(), p.data(), p.size()), GPURNN_ERR_INVALID_ARGUMENT));
            EXPECT_TRUE(mentions(gpurnn_last_error(), "Whh[1, 2]"));
            EXPECT_TRUE(full_states_equal(FullState::take(r.m.get(), dir), before));
        }
        /* the largest finite value of the dtype is accepted */
        std::vector<double> p = r.params;
        p[at] = dt == GPURNN_F32 ? (double)FLT_MAX : DBL_MAX;
        EXPECT_EQ(gpurnn_params_set(r.m.get(), p.data(), p.size()), GPURNN_OK) << gpurnn_last_error();
    }
}

GPURNN_INSTANTIATE_BACKENDS(NumericFaultTest);
