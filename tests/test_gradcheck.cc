/* gpurnn_gradcheck in float64: every tensor's max relative error below 1e-5, over shapes
 * with V != H, B = 1 and B > 1, T = 1 and T >= 30, zero and non-zero carried state and
 * both reductions; checked[] counts; and the call leaves parameters, gradients and the
 * carried state bit-identical.
 *
 * The relative error |a-n|/max(|a|,|n|) of an entry with a tiny gradient is limited by
 * rounding in L(w+eps) - L(w-eps). The models below (parameters N(0,1)*scale, state
 * N(0,1)*0.5, drawn by the tests' own generator) were chosen so that, with the float64
 * reference in tests/reference_rnn.c and eps = 1e-5, EVERY entry of every tensor has a
 * relative error below 1e-6: a correct backend passes with a 10x margin, and the bar
 * stays at 1e-5. */
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>

#include "test_util.h"

using namespace gt;

namespace {

struct GradcheckCase {
    int V, H, B, T;
    gpurnn_loss_reduction red;
    double param_scale;
    int seed;
    bool zero_state;
    int samples;   /* per tensor; >= every tensor's size means every entry is checked */
};

const GradcheckCase kCases[] = {
    {5, 8, 1, 1, GPURNN_LOSS_SUM, 0.3, 1, true, 1000},     /* T = 1, B = 1, zero state */
    {8, 5, 3, 1, GPURNN_LOSS_MEAN, 0.3, 2, false, 1000},   /* T = 1, B > 1 */
    {6, 10, 1, 30, GPURNN_LOSS_SUM, 0.3, 1, false, 1000},  /* T >= 30, B = 1 */
    {7, 6, 4, 33, GPURNN_LOSS_MEAN, 0.5, 3, false, 1000},  /* T >= 30, B > 1 */
    {12, 9, 2, 40, GPURNN_LOSS_SUM, 0.5, 1, false, 1000},
    {10, 7, 3, 31, GPURNN_LOSS_MEAN, 0.5, 4, false, 1000},
    {12, 9, 2, 40, GPURNN_LOSS_SUM, 0.3, 3, false, 10},    /* sampled entries */
};

const char *kTensorNames[GPURNN_NUM_TENSORS] = {"Wxh", "Whh", "Why", "bh", "by"};

struct Problem {
    std::vector<double> params, state;
    std::vector<int32_t> inputs, targets;
};

Problem make_problem(const GradcheckCase &c)
{
    Rng rng((uint64_t)c.seed * 1000 + (uint64_t)c.V * 100 + (uint64_t)c.T);
    Problem p;
    p.params = random_normal(ref_param_count(c.V, c.H), rng, c.param_scale);
    p.state = random_normal((size_t)c.B * c.H, rng, 0.5);
    p.inputs = random_tokens((size_t)c.T * c.B, c.V, rng);
    p.targets = random_tokens((size_t)c.T * c.B, c.V, rng);
    if (c.zero_state)
        std::fill(p.state.begin(), p.state.end(), 0.0);
    return p;
}

size_t tensor_size(int V, int H, int t)
{
    const size_t sizes[GPURNN_NUM_TENSORS] = {(size_t)H * V, (size_t)H * H, (size_t)V * H, (size_t)H, (size_t)V};
    return sizes[t];
}

}  // namespace

class GradcheckTest : public BackendTest {};

TEST_P(GradcheckTest, Float64AllTensorsBelow1e5)
{
    for (const GradcheckCase &c : kCases) {
        SCOPED_TRACE("V=" + std::to_string(c.V) + " H=" + std::to_string(c.H) + " B=" + std::to_string(c.B) +
                     " T=" + std::to_string(c.T) + " " + reduction_name(c.red) +
                     (c.zero_state ? " zero state" : " non-zero state") + " samples=" + std::to_string(c.samples));
        gpurnn_config cfg = make_config(backend(), GPURNN_F64, c.V, c.H, c.B, c.T, c.red, 77);
        ModelPtr m = create_model(cfg);
        ASSERT_TRUE(m);
        Problem p = make_problem(c);
        ASSERT_EQ(gpurnn_params_set(m.get(), p.params.data(), p.params.size()), GPURNN_OK);
        ASSERT_EQ(gpurnn_state_set(m.get(), p.state.data(), p.state.size()), GPURNN_OK);

        gpurnn_gradcheck_result res;
        std::memset(&res, 0xff, sizeof res);
        ASSERT_EQ(gpurnn_gradcheck(m.get(), p.inputs.data(), p.targets.data(), c.T, 1e-5, c.samples, 12345, &res),
                  GPURNN_OK)
            << gpurnn_last_error();
        for (int t = 0; t < GPURNN_NUM_TENSORS; ++t) {
            const size_t size = tensor_size(c.V, c.H, t);
            EXPECT_EQ((size_t)res.checked[t], std::min((size_t)c.samples, size)) << kTensorNames[t];
            EXPECT_GE(res.max_rel_error[t], 0.0) << kTensorNames[t];
            EXPECT_LT(res.max_rel_error[t], 1e-5) << kTensorNames[t];
        }
        char value[64];
        std::snprintf(value, sizeof value, "%.3g",
                      *std::max_element(res.max_rel_error, res.max_rel_error + GPURNN_NUM_TENSORS));
        RecordProperty("max_rel_error_case" + std::to_string(&c - kCases), value);
    }
}

TEST_P(GradcheckTest, LeavesParamsGradsAndStateBitIdentical)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 7, H = 6, B = 2, T = 9;
        RandomModel r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 31);
        ASSERT_TRUE(r.m);
        Rng rng(9);
        std::vector<int32_t> in = random_tokens(T * B, V, rng), tg = random_tokens(T * B, V, rng);
        /* non-zero gradients and a state that is not the model's initial one */
        double loss;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        const Snapshot before = Snapshot::take(r.m.get());

        gpurnn_gradcheck_result res;
        ASSERT_EQ(gpurnn_gradcheck(r.m.get(), in.data(), tg.data(), T, 1e-4, 5, 99, &res), GPURNN_OK)
            << gpurnn_last_error();
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
        for (int t = 0; t < GPURNN_NUM_TENSORS; ++t) {
            EXPECT_EQ((size_t)res.checked[t], std::min((size_t)5, tensor_size(V, H, t))) << kTensorNames[t];
            EXPECT_TRUE(std::isfinite(res.max_rel_error[t])) << kTensorNames[t];
            EXPECT_GE(res.max_rel_error[t], 0.0) << kTensorNames[t];
            EXPECT_LE(res.max_rel_error[t], 1.0) << kTensorNames[t];   /* |a-n|/max(|a|,|n|) <= 2, and
                                                                         a sane backend is far below 1 */
        }
        /* the last forward pass is used up */
        EXPECT_TRUE(failed_with(gpurnn_backward(r.m.get()), GPURNN_ERR_INVALID_STATE));
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    }
}

TEST_P(GradcheckTest, StartsFromTheCarriedState)
{
    /* Gradients that depend on h_{-1} (dWhh gets dz_0 h_{-1}^T) must still pass when the
     * state is large; and the same call with a different state still leaves it alone. */
    const GradcheckCase c = {6, 10, 1, 30, GPURNN_LOSS_SUM, 0.3, 1, false, 1000};
    gpurnn_config cfg = make_config(backend(), GPURNN_F64, c.V, c.H, c.B, 1, c.red, 77);
    ModelPtr m = create_model(cfg);
    ASSERT_TRUE(m);
    Problem p = make_problem(c);
    ASSERT_EQ(gpurnn_params_set(m.get(), p.params.data(), p.params.size()), GPURNN_OK);
    std::vector<double> state(c.H);
    for (int j = 0; j < c.H; ++j)
        state[j] = (j % 2 ? 0.8 : -0.7);
    ASSERT_EQ(gpurnn_state_set(m.get(), state.data(), state.size()), GPURNN_OK);
    gpurnn_gradcheck_result res;
    ASSERT_EQ(gpurnn_gradcheck(m.get(), p.inputs.data(), p.targets.data(), 1, 1e-5, 1000, 3, &res), GPURNN_OK)
        << gpurnn_last_error();
    for (int t = 0; t < GPURNN_NUM_TENSORS; ++t) {
        EXPECT_EQ((size_t)res.checked[t], tensor_size(c.V, c.H, t)) << kTensorNames[t];
        EXPECT_LT(res.max_rel_error[t], 1e-5) << kTensorNames[t];
    }
    EXPECT_TRUE(bit_equal(get_state(m.get()), state));
}

GPURNN_INSTANTIATE_BACKENDS(GradcheckTest);
