/* Every cell (tanh, ReLU, GRU, LSTM) and number of layers, through the public API, against
 * the plain float64 reference of tests/reference_cells.c (itself checked against finite
 * differences and PyTorch in test_reference_cells.cc): loss, carried state (h and c) and
 * gradients; state carried across calls; accumulation; checkpointed BPTT bit-identical to
 * the full history; inference and sampling; the tensor table; bad input changing nothing.
 * Parametrised by backend, cell, L and dtype. */
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "gpurnn.h"
#include "reference_cells.h"
#include "test_util.h"

namespace {

using gt::ModelPtr;
using gt::RandomModel;

const char *cell_label(gpurnn_cell cell)
{
    switch (cell) {
    case GPURNN_CELL_TANH: return "Tanh";
    case GPURNN_CELL_RELU: return "Relu";
    case GPURNN_CELL_GRU: return "Gru";
    default: return "Lstm";
    }
}

/* (backend, cell, L, dtype) */
using CellParam = std::tuple<gpurnn_backend, gpurnn_cell, int, gpurnn_dtype>;

std::string cell_param_name(const ::testing::TestParamInfo<CellParam> &info)
{
    return std::string(gt::backend_label(std::get<0>(info.param))) + "_" + cell_label(std::get<1>(info.param)) +
           "_L" + std::to_string(std::get<2>(info.param)) + "_" + gt::dtype_name(std::get<3>(info.param));
}

class CellTest : public ::testing::TestWithParam<CellParam> {
protected:
    void SetUp() override
    {
        if (backend() == GPURNN_BACKEND_CUDA) GT_SKIP_WITHOUT_CUDA();
    }
    gpurnn_backend backend() const { return std::get<0>(GetParam()); }
    gpurnn_cell cell() const { return std::get<1>(GetParam()); }
    int layers() const { return std::get<2>(GetParam()); }
    gpurnn_dtype dtype() const { return std::get<3>(GetParam()); }
    bool f64() const { return dtype() == GPURNN_F64; }
    /* Agreement with the float64 reference: 1e-12 in float64; float32 computes in float32. */
    double tol() const { return f64() ? 1e-12 : 2e-4; }

    gpurnn_config config(int V, int H, int B, int max_T, gpurnn_loss_reduction reduction = GPURNN_LOSS_SUM) const
    {
        gpurnn_config cfg = gt::make_config(backend(), dtype(), V, H, B, max_T, reduction);
        cfg.cell = cell();
        cfg.num_layers = layers();
        return cfg;
    }

    reference_cells_config reference(const gpurnn_config &cfg, int T) const
    {
        reference_cells_config r;
        r.V = cfg.vocab_size;
        r.H = cfg.hidden_size;
        r.B = cfg.batch_size;
        r.T = T;
        r.cell = cfg.cell;
        r.num_layers = cfg.num_layers;
        r.reduction = cfg.reduction;
        return r;
    }
};

/* The tests that run long on the device emulator (thousands of steps of kernel launches, or
 * a forward pass per parameter): instantiated for a subset of the CUDA cases (below). */
class CellLongTest : public CellTest {};

/* Largest |a - b| / max(1, |b|). */
double max_scaled_error(const std::vector<double> &a, const std::vector<double> &b)
{
    double worst = a.size() == b.size() ? 0 : INFINITY;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) {
        const double e = std::fabs(a[i] - b[i]) / std::fmax(1.0, std::fabs(b[i]));
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

TEST_P(CellTest, ForwardBackwardAgreeWithTheReference)
{
    const int T = 9;
    for (gpurnn_loss_reduction reduction : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN}) {
        RandomModel r = gt::make_random_model(config(7, 5, 3, T, reduction), 11 + (int)reduction, 0.5, 0.5);
        ASSERT_TRUE(r.m);
        gt::Rng rng(29);
        const auto x = gt::random_tokens((size_t)T * 3, 7, rng), y = gt::random_tokens((size_t)T * 3, 7, rng);
        const reference_cells_config rc = reference(r.cfg, T);
        ASSERT_EQ(gpurnn_param_count(r.m.get()), reference_cells_param_count(&rc));
        ASSERT_EQ(gpurnn_state_count(r.m.get()), reference_cells_state_count(&rc));
        double want_loss = 0;
        std::vector<double> want_state(r.state.size()), want_grads(r.params.size());
        ASSERT_EQ(reference_cells_forward_backward(&rc, r.params.data(), r.state.data(), x.data(), y.data(),
                                                   &want_loss, want_state.data(), want_grads.data()),
                  0);
        double loss = 0;
        ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK) << gpurnn_last_error();
        EXPECT_LE(std::fabs(loss - want_loss) / std::fmax(1.0, std::fabs(want_loss)), tol()) << loss << " vs " << want_loss;
        EXPECT_LE(max_scaled_error(gt::get_state(r.m.get()), want_state), tol());
        EXPECT_LE(max_scaled_error(gt::get_grads(r.m.get()), want_grads), tol());
        /* every tensor got a gradient (a layer left out would show as zeros) */
        const std::vector<double> g = gt::get_grads(r.m.get());
        for (size_t k = 0; k < gpurnn_tensor_count(r.m.get()); k++) {
            gpurnn_tensor_info info;
            ASSERT_EQ(gpurnn_tensor_info_get(r.m.get(), k, &info), GPURNN_OK);
            double norm = 0;
            for (size_t i = 0; i < info.size; i++) norm += g[info.offset + i] * g[info.offset + i];
            EXPECT_GT(norm, 0) << info.name;
        }
    }
}

TEST_P(CellTest, StateCarriesAcrossCallsAndNoGradientCrossesThem)
{
    const int T1 = 4, T2 = 5, B = 2;
    RandomModel r = gt::make_random_model(config(6, 4, B, T1 + T2), 5, 0.5, 0.5);
    ASSERT_TRUE(r.m);
    gt::Rng rng(3);
    const auto x = gt::random_tokens((size_t)(T1 + T2) * B, 6, rng), y = gt::random_tokens((size_t)(T1 + T2) * B, 6, rng);
    double loss1 = 0, loss2 = 0;
    ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T1, &loss1), GPURNN_OK) << gpurnn_last_error();
    const std::vector<double> mid = gt::get_state(r.m.get());
    ASSERT_EQ(gpurnn_forward(r.m.get(), x.data() + T1 * B, y.data() + T1 * B, T2, &loss2), GPURNN_OK);
    ASSERT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);

    /* the whole sequence in one reference call: the same final state and total loss */
    reference_cells_config whole = reference(r.cfg, T1 + T2);
    double want_total = 0;
    std::vector<double> want_state(r.state.size());
    ASSERT_EQ(reference_cells_forward_backward(&whole, r.params.data(), r.state.data(), x.data(), y.data(),
                                               &want_total, want_state.data(), nullptr),
              0);
    EXPECT_LE(max_scaled_error(gt::get_state(r.m.get()), want_state), tol());
    EXPECT_LE(std::fabs(loss1 + loss2 - want_total) / want_total, tol());
    /* the second call's gradients start at its carried state (c too, for LSTM) */
    reference_cells_config second = reference(r.cfg, T2);
    double want_loss2 = 0;
    std::vector<double> want_grads(r.params.size());
    ASSERT_EQ(reference_cells_forward_backward(&second, r.params.data(), mid.data(), x.data() + T1 * B,
                                               y.data() + T1 * B, &want_loss2, nullptr, want_grads.data()),
              0);
    EXPECT_LE(max_scaled_error(gt::get_grads(r.m.get()), want_grads), tol());
}

TEST_P(CellTest, BackwardAccumulatesAndZeroGradClears)
{
    const int T = 6;
    RandomModel r = gt::make_random_model(config(5, 4, 2, T), 8, 0.5, 0.5);
    ASSERT_TRUE(r.m);
    gt::Rng rng(4);
    const auto x = gt::random_tokens((size_t)T * 2, 5, rng), y = gt::random_tokens((size_t)T * 2, 5, rng);
    double loss = 0;
    ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
    const std::vector<double> once = gt::get_grads(r.m.get());
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
    const std::vector<double> twice = gt::get_grads(r.m.get());
    /* the second backward adds each chunk's contribution to what is there: 2g to rounding */
    std::vector<double> doubled(once.size());
    for (size_t i = 0; i < once.size(); i++) doubled[i] = 2 * once[i];
    EXPECT_LE(max_scaled_error(twice, doubled), f64() ? 1e-14 : 1e-6);
    EXPECT_GT(max_scaled_error(twice, once), 1e-3); /* it did add */
    ASSERT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK);
    for (double g : gt::get_grads(r.m.get())) ASSERT_EQ(g, 0.0);
}

/* Gradients, loss and final state of one forward + backward on a model made from cfg with
 * the given parameters and state. */
struct Pass {
    double loss = 0;
    std::vector<double> grads, state;
};

Pass run_pass(gpurnn_config cfg, const std::vector<double> &params, const std::vector<double> &state,
              const std::vector<int32_t> &x, const std::vector<int32_t> &y, int T)
{
    Pass p;
    ModelPtr m = gt::create_model(cfg);
    if (!m) return p;
    EXPECT_EQ(gpurnn_params_set(m.get(), params.data(), params.size()), GPURNN_OK);
    EXPECT_EQ(gpurnn_state_set(m.get(), state.data(), state.size()), GPURNN_OK);
    EXPECT_EQ(gpurnn_forward(m.get(), x.data(), y.data(), T, &p.loss), GPURNN_OK) << gpurnn_last_error();
    EXPECT_EQ(gpurnn_backward(m.get()), GPURNN_OK);
    p.grads = gt::get_grads(m.get());
    p.state = gt::get_state(m.get());
    return p;
}

TEST_P(CellTest, CheckpointedBpttIsBitIdenticalToTheFullHistory)
{
    const int T = 10;
    gpurnn_config full = config(6, 5, 3, T);
    full.bptt_checkpoint_every = GPURNN_BPTT_KEEP_ALL;
    RandomModel r = gt::make_random_model(full, 21, 0.5, 0.5);
    ASSERT_TRUE(r.m);
    gt::Rng rng(6);
    const auto x = gt::random_tokens((size_t)T * 3, 6, rng), y = gt::random_tokens((size_t)T * 3, 6, rng);
    const Pass want = run_pass(full, r.params, r.state, x, y, T);
    for (int k : {1, 3, 4, 9}) {
        gpurnn_config cfg = full;
        cfg.bptt_checkpoint_every = k;
        const Pass got = run_pass(cfg, r.params, r.state, x, y, T);
        EXPECT_EQ(std::memcmp(&got.loss, &want.loss, sizeof got.loss), 0) << "k=" << k;
        EXPECT_TRUE(gt::bit_equal(got.grads, want.grads)) << "k=" << k;
        EXPECT_TRUE(gt::bit_equal(got.state, want.state)) << "k=" << k;
    }
}

/* Long enough for more than one output-layer chunk with one recurrence slice: the CPU
 * backend then pipelines the recurrence and the output layer on two threads, with the full
 * history and with checkpoints at a multiple of the chunk (its segment buffers), and runs
 * a checkpoint interval that is not a multiple unpipelined: all three must agree bit for bit. */
TEST_P(CellLongTest, CheckpointedBpttIsBitIdenticalOverSeveralChunks)
{
    const int V = 64, H = 64, B = 1, T = 4200;
    gpurnn_config full = config(V, H, B, T, GPURNN_LOSS_MEAN);
    full.bptt_checkpoint_every = GPURNN_BPTT_KEEP_ALL;
    /* weights small enough that 4200 ReLU steps do not overflow (spectral radius ~0.6) */
    RandomModel r = gt::make_random_model(full, 31, 0.08, 0.5);
    ASSERT_TRUE(r.m);
    gpurnn_memory_report mem;
    ASSERT_EQ(gpurnn_model_memory(r.m.get(), &mem), GPURNN_OK);
    ASSERT_LT(mem.chunk_steps, T) << "the test needs more than one chunk";
    gt::Rng rng(8);
    const auto x = gt::random_tokens((size_t)T * B, V, rng), y = gt::random_tokens((size_t)T * B, V, rng);
    const Pass want = run_pass(full, r.params, r.state, x, y, T);
    for (int k : {mem.chunk_steps, 97}) {
        gpurnn_config cfg = full;
        cfg.bptt_checkpoint_every = k;
        const Pass got = run_pass(cfg, r.params, r.state, x, y, T);
        EXPECT_TRUE(gt::bit_equal(got.grads, want.grads)) << "k=" << k;
        EXPECT_TRUE(gt::bit_equal(got.state, want.state)) << "k=" << k;
    }
}

TEST_P(CellTest, InferenceLeavesTheForwardStateAndScoresTheLoss)
{
    const int T = 7, B = 3, V = 6;
    RandomModel r = gt::make_random_model(config(V, 5, B, T), 13, 0.5, 0.5);
    ASSERT_TRUE(r.m);
    gt::Rng rng(9);
    const auto x = gt::random_tokens((size_t)T * B, V, rng), y = gt::random_tokens((size_t)T * B, V, rng);
    double loss = 0, log_likelihood = 0;
    ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK);
    const std::vector<double> after_forward = gt::get_state(r.m.get());
    ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
    std::vector<double> last((size_t)B * V);
    ASSERT_EQ(gpurnn_infer(r.m.get(), x.data(), T, GPURNN_INFER_LAST, GPURNN_PROBS, last.data(), last.size()),
              GPURNN_OK)
        << gpurnn_last_error();
    EXPECT_TRUE(gt::bit_equal(gt::get_state(r.m.get()), after_forward));
    for (int b = 0; b < B; b++) {
        double sum = 0;
        for (int v = 0; v < V; v++) sum += last[(size_t)b * V + v];
        EXPECT_NEAR(sum, 1.0, 1e-12);
    }
    ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
    ASSERT_EQ(gpurnn_score(r.m.get(), x.data(), y.data(), T, &log_likelihood), GPURNN_OK);
    EXPECT_LE(std::fabs(-log_likelihood - loss) / loss, f64() ? 1e-12 : 1e-5);
    /* sequence 0 of a batch draws what gpurnn_sample draws from sequence 0 */
    std::vector<int32_t> one(20), batch((size_t)20 * B);
    const int32_t first[3] = {1, 2, 3};
    ASSERT_EQ(gpurnn_sample(r.m.get(), first[0], 20, 0.8, 77, one.data()), GPURNN_OK) << gpurnn_last_error();
    ASSERT_EQ(gpurnn_sample_batch(r.m.get(), first, 20, 0.8, 77, batch.data()), GPURNN_OK);
    for (int k = 0; k < 20; k++) EXPECT_EQ(batch[(size_t)k * B], one[k]) << "draw " << k;
}

/* Greedy sampling feeds each drawn token back: the reference's forward over the tokens the
 * model drew must put its largest probability on each next one. */
TEST_P(CellTest, GreedySamplingFollowsTheReference)
{
    const int V = 6, n = 12;
    RandomModel r = gt::make_random_model(config(V, 5, 1, n), 17, 0.8, 0.5);
    ASSERT_TRUE(r.m);
    std::vector<int32_t> drawn(n), again(n);
    ASSERT_EQ(gpurnn_sample(r.m.get(), 2, n, 0.0, 1, drawn.data()), GPURNN_OK);
    ASSERT_EQ(gpurnn_sample(r.m.get(), 2, n, 0.0, 1, again.data()), GPURNN_OK);
    EXPECT_EQ(drawn, again);
    /* float32 rounding could flip a near tie of the float64 reference: float64 only below */
    if (!f64()) return;
    std::vector<int32_t> fed(n);
    fed[0] = 2;
    for (int k = 1; k < n; k++) fed[k] = drawn[k - 1];
    reference_cells_config rc = reference(r.cfg, 1);
    std::vector<double> state = r.state, next(state.size());
    for (int k = 0; k < n; k++) {
        /* the argmax of p_k is the target with the smallest loss */
        double best = INFINITY;
        int32_t best_v = -1;
        for (int32_t v = 0; v < V; v++) {
            double loss = 0;
            ASSERT_EQ(reference_cells_forward_backward(&rc, r.params.data(), state.data(), &fed[k], &v, &loss,
                                                       next.data(), nullptr),
                      0);
            if (loss < best) best = loss, best_v = v;
        }
        EXPECT_EQ(drawn[k], best_v) << "draw " << k;
        state = next;
    }
}

TEST_P(CellTest, EveryOptimizerStepsEveryTensor)
{
    const int T = 5;
    for (gpurnn_optimizer_kind kind : {GPURNN_SGD, GPURNN_ADAGRAD, GPURNN_ADAM}) {
        RandomModel r = gt::make_random_model(config(5, 4, 2, T), 19, 0.5, 0.5);
        ASSERT_TRUE(r.m);
        gt::Rng rng(10);
        const auto x = gt::random_tokens((size_t)T * 2, 5, rng), y = gt::random_tokens((size_t)T * 2, 5, rng);
        double loss = 0, norm = 0;
        ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        ASSERT_EQ(gpurnn_clip_grad_norm(r.m.get(), 1.0, &norm), GPURNN_OK);
        const std::vector<double> g = gt::get_grads(r.m.get());
        gpurnn_optimizer opt = gt::make_optimizer(kind, 0.1);
        ASSERT_EQ(gpurnn_step(r.m.get(), &opt), GPURNN_OK) << gpurnn_last_error();
        const std::vector<double> p = gt::get_params(r.m.get());
        for (size_t i = 0; i < p.size(); i++) {
            if (kind == GPURNN_SGD) { /* p - lr g, in the model's dtype */
                const double want = f64() ? r.params[i] - 0.1 * g[i]
                                          : (double)((float)r.params[i] - (float)0.1 * (float)g[i]);
                ASSERT_NEAR(p[i], want, f64() ? 1e-15 : 1e-6) << "entry " << i;
            } else if (g[i] != 0) {
                ASSERT_NE(p[i], r.params[i]) << "entry " << i << " did not move";
            }
        }
    }
}

/* gpurnn_gradcheck_tensors over every entry of every tensor. In float64 every entry
 * passes the header's bar (relative error < 1e-5 above the round-off floor). Float32
 * cannot meet a 1e-5 bar: its backpropagated gradients are themselves good to ~1e-6
 * relative, and at eps = 1e-3 the step's truncation error is of order eps^2; so there
 * every entry must be within 0.5% of the tensor's largest gradient plus the round-off
 * floor the check reports. Either way the model comes back bit for bit. */
TEST_P(CellLongTest, GradientCheckCoversEveryTensor)
{
    const int T = 7, B = 2, V = 6, H = 5;
    for (gpurnn_loss_reduction reduction : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN}) {
        SCOPED_TRACE(gt::reduction_name(reduction));
        RandomModel r = gt::make_random_model(config(V, H, B, T, reduction), 41 + (int)reduction, 0.5, 0.5);
        ASSERT_TRUE(r.m);
        gt::Rng rng(17);
        const auto x = gt::random_tokens((size_t)T * B, V, rng), y = gt::random_tokens((size_t)T * B, V, rng);
        double loss = 0;
        ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        const gt::Snapshot before = gt::Snapshot::take(r.m.get());

        const size_t n = gpurnn_tensor_count(r.m.get());
        std::vector<gpurnn_gradcheck_tensor> out(n);
        const double eps = f64() ? 1e-5 : 1e-3;
        ASSERT_EQ(gpurnn_gradcheck_tensors(r.m.get(), x.data(), y.data(), T, eps, 1 << 20, 5, out.data(), n),
                  GPURNN_OK)
            << gpurnn_last_error();
        EXPECT_TRUE(gt::snapshots_equal(gt::Snapshot::take(r.m.get()), before));
        EXPECT_TRUE(gt::failed_with(gpurnn_backward(r.m.get()), GPURNN_ERR_INVALID_STATE))
            << "the last forward pass is used up";
        /* the gradients the check compared: from the carried state it started at */
        ASSERT_EQ(gpurnn_zero_grad(r.m.get()), GPURNN_OK);
        ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
        const std::vector<double> grads = gt::get_grads(r.m.get());

        for (size_t k = 0; k < n; k++) {
            gpurnn_tensor_info info;
            ASSERT_EQ(gpurnn_tensor_info_get(r.m.get(), k, &info), GPURNN_OK);
            SCOPED_TRACE(info.name);
            const gpurnn_gradcheck_tensor &c = out[k];
            EXPECT_EQ((size_t)c.checked, info.size);
            EXPECT_GE(c.worst_index, info.offset);
            EXPECT_LT(c.worst_index, info.offset + info.size);
            EXPECT_TRUE(std::isfinite(c.max_abs_error));
            EXPECT_GT(c.max_atol, 0);
            if (f64()) {
                EXPECT_EQ(c.failed, 0) << "worst entry " << c.worst_index << ": backprop " << c.worst_analytic
                                       << ", central difference " << c.worst_numeric;
                EXPECT_LT(c.max_rel_error, GPURNN_GRADCHECK_RTOL);
                /* the worst entry's analytic value is the gradient the model reported */
                EXPECT_EQ(c.worst_analytic, grads[c.worst_index]);
            } else {
                double largest = 0;
                for (size_t i = 0; i < info.size; i++) largest = std::fmax(largest, std::fabs(grads[info.offset + i]));
                EXPECT_LE(c.max_abs_error, 5e-3 * largest + c.max_atol) << "failed " << c.failed << " of " << c.checked
                    << "worst entry " << c.worst_index << ": backprop " << c.worst_analytic << ", central difference "
                    << c.worst_numeric;
            }
        }
    }
}

TEST_P(CellTest, TheTensorTableCoversTheBufferInOrder)
{
    RandomModel r = gt::make_random_model(config(7, 5, 2, 4), 1);
    ASSERT_TRUE(r.m);
    const int L = layers(), G = cell() == GPURNN_CELL_GRU ? 3 : cell() == GPURNN_CELL_LSTM ? 4 : 1;
    const bool gated = G > 1;
    const size_t count = gpurnn_tensor_count(r.m.get());
    ASSERT_EQ(count, (size_t)(2 * L + 1 + L * (gated ? 2 : 1) + 1));
    size_t next = 0;
    for (size_t k = 0; k < count; k++) {
        gpurnn_tensor_info t;
        ASSERT_EQ(gpurnn_tensor_info_get(r.m.get(), k, &t), GPURNN_OK);
        EXPECT_EQ(t.offset, next) << t.name;
        EXPECT_EQ(t.size, t.shape[0] * t.shape[1]) << t.name;
        next = t.offset + t.size;
        if (k < (size_t)(2 * L)) {
            EXPECT_EQ(t.layer, (int)k / 2);
            EXPECT_EQ(t.shape[0], (size_t)(G * 5));
            EXPECT_EQ(t.shape[1], k % 2 == 0 && k == 0 ? 7u : 5u) << t.name;
        } else if (k == (size_t)(2 * L)) {
            EXPECT_STREQ(t.name, "Why");
            EXPECT_EQ(t.layer, -1);
        }
    }
    EXPECT_EQ(next, gpurnn_param_count(r.m.get()));
    gpurnn_tensor_info t;
    EXPECT_TRUE(gt::failed_with(gpurnn_tensor_info_get(r.m.get(), count, &t), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_NE(std::string(gpurnn_last_error()).find(std::to_string(count)), std::string::npos);
    const bool five = L == 1 && !gated;
    ASSERT_EQ(gpurnn_tensor_info_get(r.m.get(), 0, &t), GPURNN_OK);
    EXPECT_STREQ(t.name, five ? "Wxh" : "W_ih_l0");
    /* the five ids name one tanh/ReLU layer's tensors; other models have none of them */
    EXPECT_EQ(gpurnn_tensor_size(r.m.get(), GPURNN_WHH), five ? 25u : 0u);
    EXPECT_EQ(gpurnn_state_count(r.m.get()), (size_t)(cell() == GPURNN_CELL_LSTM ? 2 : 1) * L * 2 * 5);
}

TEST_P(CellTest, BadInputChangesNothing)
{
    const int T = 4;
    RandomModel r = gt::make_random_model(config(5, 4, 2, T), 23, 0.5, 0.5);
    ASSERT_TRUE(r.m);
    gt::Rng rng(12);
    auto x = gt::random_tokens((size_t)T * 2, 5, rng), y = gt::random_tokens((size_t)T * 2, 5, rng);
    double loss = 0;
    ASSERT_EQ(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
    const gt::Snapshot before = gt::Snapshot::take(r.m.get());
    x[5] = 5; /* out of [0, V) */
    EXPECT_TRUE(gt::failed_with(gpurnn_forward(r.m.get(), x.data(), y.data(), T, &loss), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(gt::snapshots_equal(gt::Snapshot::take(r.m.get()), before));
    /* a value that is not finite in the last entry of the state: for LSTM that is c of the top layer */
    std::vector<double> bad = before.state;
    bad.back() = NAN;
    EXPECT_TRUE(gt::failed_with(gpurnn_state_set(r.m.get(), bad.data(), bad.size()), GPURNN_ERR_INVALID_ARGUMENT));
    const std::string msg = gpurnn_last_error();
    if (layers() > 1 || cell() == GPURNN_CELL_LSTM) {
        EXPECT_NE(msg.find(std::string("layer ") + std::to_string(layers() - 1) +
                           (cell() == GPURNN_CELL_LSTM ? " c" : " h")),
                  std::string::npos)
            << msg;
    }
    EXPECT_TRUE(gt::failed_with(gpurnn_state_set(r.m.get(), bad.data(), bad.size() - 1), GPURNN_ERR_INVALID_ARGUMENT));
    std::vector<double> params = before.params;
    params.back() = INFINITY; /* by */
    EXPECT_TRUE(gt::failed_with(gpurnn_params_set(r.m.get(), params.data(), params.size()), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_NE(std::string(gpurnn_last_error()).find("by["), std::string::npos) << gpurnn_last_error();
    EXPECT_TRUE(gt::snapshots_equal(gt::Snapshot::take(r.m.get()), before));
    /* the backward of the last good forward still works */
    EXPECT_EQ(gpurnn_backward(r.m.get()), GPURNN_OK);
}

TEST_P(CellTest, MemoryReportCountsEveryLayersActivations)
{
    gpurnn_config cfg = config(8, 6, 2, 20);
    cfg.bptt_checkpoint_every = GPURNN_BPTT_KEEP_ALL;
    ModelPtr m = gt::create_model(cfg);
    ASSERT_TRUE(m);
    gpurnn_memory_report mem;
    ASSERT_EQ(gpurnn_model_memory(m.get(), &mem), GPURNN_OK);
    const size_t elem = f64() ? 8 : 4;
    const size_t streams = (size_t)layers() * (cell() == GPURNN_CELL_LSTM ? 6 : cell() == GPURNN_CELL_GRU ? 5 : 1);
    const size_t history = (size_t)(20 + 1) * 2 * 6 * streams * elem;
    const size_t kind = backend() == GPURNN_BACKEND_CUDA ? mem.device[GPURNN_MEMORY_ACTIVATIONS]
                                                         : mem.host[GPURNN_MEMORY_ACTIVATIONS];
    EXPECT_GE(kind, history);
    EXPECT_EQ(backend() == GPURNN_BACKEND_CUDA ? mem.device[GPURNN_MEMORY_PARAMETERS] : mem.host[GPURNN_MEMORY_PARAMETERS],
              gpurnn_param_count(m.get()) * elem);
}

const auto kEveryCell = ::testing::Values(GPURNN_CELL_TANH, GPURNN_CELL_RELU, GPURNN_CELL_GRU, GPURNN_CELL_LSTM);

INSTANTIATE_TEST_SUITE_P(Cells, CellTest,
                         ::testing::Combine(::testing::Values(GPURNN_BACKEND_CPU, GPURNN_BACKEND_CUDA), kEveryCell,
                                            ::testing::Values(1, 2, 3), ::testing::Values(GPURNN_F64, GPURNN_F32)),
                         cell_param_name);
INSTANTIATE_TEST_SUITE_P(Cells, CellLongTest,
                         ::testing::Combine(::testing::Values(GPURNN_BACKEND_CPU), kEveryCell, ::testing::Values(1, 2, 3),
                                            ::testing::Values(GPURNN_F64, GPURNN_F32)),
                         cell_param_name);
/* On the emulator these two take 5-20 s an instance on an idle 2-core machine (all 48 CUDA
 * cases: about 6 minutes, and again under ASan in CI), so the CUDA backend runs them for
 * every cell at L = 1 and 2 in float64;
 * its agreement with the CPU backend at every L and dtype is test_cross_backend.cc's
 * CrossBackendCellsTest. */
INSTANTIATE_TEST_SUITE_P(CellsCuda, CellLongTest,
                         ::testing::Combine(::testing::Values(GPURNN_BACKEND_CUDA), kEveryCell, ::testing::Values(1, 2),
                                            ::testing::Values(GPURNN_F64)),
                         cell_param_name);

/* Config values the library must refuse, each naming the value. */
TEST(CellConfig, BadCellsAndLayerCountsAreRefusedNamingTheValue)
{
    gpurnn_config cfg = gt::make_config(GPURNN_BACKEND_CPU, GPURNN_F64, 5, 4, 1, 3);
    gpurnn_model *m = nullptr;
    cfg.cell = (gpurnn_cell)7;
    EXPECT_TRUE(gt::failed_with(gpurnn_model_create(&cfg, &m), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_TRUE(gt::mentions_assignment(gpurnn_last_error(), "cell", 7)) << gpurnn_last_error();
    cfg.cell = GPURNN_CELL_GRU;
    for (int L : {-1, GPURNN_MAX_LAYERS + 1}) {
        cfg.num_layers = L;
        EXPECT_TRUE(gt::failed_with(gpurnn_model_create(&cfg, &m), GPURNN_ERR_INVALID_ARGUMENT));
        EXPECT_TRUE(gt::mentions_assignment(gpurnn_last_error(), "num_layers", L)) << gpurnn_last_error();
    }
    /* sizes whose buffers overflow size_t */
    cfg.vocab_size = cfg.hidden_size = 1 << 30;
    cfg.num_layers = GPURNN_MAX_LAYERS;
    EXPECT_TRUE(gt::failed_with(gpurnn_model_create(&cfg, &m), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_NE(std::string(gpurnn_last_error()).find("overflows"), std::string::npos) << gpurnn_last_error();
    EXPECT_EQ(m, nullptr);
    /* 0 layers means 1, and the resolved config says so */
    cfg = gt::make_config(GPURNN_BACKEND_CPU, GPURNN_F64, 5, 4, 1, 3);
    cfg.num_layers = 0;
    ModelPtr one = gt::create_model(cfg);
    ASSERT_TRUE(one);
    EXPECT_EQ(gt::get_config(one.get()).num_layers, 1);
    EXPECT_EQ(gpurnn_tensor_count(one.get()), 5u);
}

/* AUTO creates every cell: on CUDA where a device is usable, else on the CPU. */
TEST(CellConfig, AutoCreatesEveryCell)
{
    for (gpurnn_cell cell : {GPURNN_CELL_TANH, GPURNN_CELL_RELU, GPURNN_CELL_GRU, GPURNN_CELL_LSTM}) {
        gpurnn_config cfg = gt::make_config(GPURNN_BACKEND_AUTO, GPURNN_F32, 5, 4, 2, 3);
        cfg.cell = cell;
        cfg.num_layers = 2;
        ModelPtr m = gt::create_model(cfg);
        ASSERT_TRUE(m) << cell_label(cell);
        EXPECT_NE(gpurnn_model_backend(m.get()), GPURNN_BACKEND_AUTO);
    }
}

}  // namespace
