/* The CUDA backend against the CPU backend on the same parameters and inputs: loss and
 * every gradient tensor agree (1e-10 relative in float64, 1e-4 in float32, B > 1, T up
 * to 1000), CUDA gradients are bit-identical from run to run, optimizer steps, clipping
 * and greedy sampling agree, and a checkpoint saved on one backend loads on the other
 * with identical values; and the same for every cell (tanh, ReLU, GRU, LSTM) and 1 to 3
 * layers. Every test here needs both backends, so on a machine without a
 * usable CUDA device each one is skipped with the reason. */
#include <cmath>
#include <cstring>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

#include "test_util.h"

using namespace gt;

namespace {

class CrossBackendTest : public ::testing::TestWithParam<gpurnn_dtype> {
protected:
    void SetUp() override
    {
        GT_SKIP_WITHOUT_CUDA();
    }
    gpurnn_dtype dtype() const { return GetParam(); }
    double tolerance() const { return dtype() == GPURNN_F64 ? 1e-10 : 1e-4; }
};

struct Case {
    int V, H, B, T;
    gpurnn_loss_reduction reduction;
};

const Case kCases[] = {
    {11, 16, 1, 1, GPURNN_LOSS_SUM},
    {7, 13, 3, 57, GPURNN_LOSS_MEAN},
    {65, 64, 4, 250, GPURNN_LOSS_SUM},
    {33, 32, 8, 1000, GPURNN_LOSS_MEAN},   /* several output chunks and a long recurrence */
};

/* One model per backend holding the same parameters and carried state. */
struct Pair {
    RandomModel cpu;
    ModelPtr cuda;
};

/* A CPU model and its CUDA twin: the same config, parameters and carried state. */
Pair with_cuda_twin(RandomModel cpu)
{
    Pair p;
    p.cpu = std::move(cpu);
    gpurnn_config cfg = p.cpu.cfg;
    cfg.backend = GPURNN_BACKEND_CUDA;
    p.cuda = create_model(cfg);
    if (p.cuda) {
        EXPECT_EQ(GPURNN_OK, gpurnn_params_set(p.cuda.get(), p.cpu.params.data(), p.cpu.params.size()))
            << gpurnn_last_error();
        EXPECT_EQ(GPURNN_OK, gpurnn_state_set(p.cuda.get(), p.cpu.state.data(), p.cpu.state.size()))
            << gpurnn_last_error();
    }
    return p;
}

Pair make_pair(gpurnn_dtype dtype, const Case &c, uint64_t seed)
{
    /* 0.15, not the default 0.3: at 0.3 (H >= 48, or H = 32 with T = 1000) the recurrence is
     * chaotic, and a one-ulp difference in Whh changes the final state and the gradients by
     * O(1), so no two correct backends could agree to 1e-10. */
    return with_cuda_twin(make_random_model(GPURNN_BACKEND_CPU, dtype, c.V, c.H, c.B, c.T, c.reduction, seed, 0.15));
}

/* forward + backward from zeroed gradients; returns the loss. */
double loss_and_grads(gpurnn_model *m, const std::vector<int32_t> &in, const std::vector<int32_t> &tg, int T)
{
    double loss = NAN;
    EXPECT_EQ(GPURNN_OK, gpurnn_zero_grad(m)) << gpurnn_last_error();
    EXPECT_EQ(GPURNN_OK, gpurnn_forward(m, in.data(), tg.data(), T, &loss)) << gpurnn_last_error();
    EXPECT_EQ(GPURNN_OK, gpurnn_backward(m)) << gpurnn_last_error();
    return loss;
}

TEST_P(CrossBackendTest, LossGradientsAndStateMatchCpu)
{
    for (const Case &c : kCases) {
        SCOPED_TRACE("V=" + std::to_string(c.V) + " H=" + std::to_string(c.H) + " B=" +
                     std::to_string(c.B) + " T=" + std::to_string(c.T));
        Pair p = make_pair(dtype(), c, 7);
        ASSERT_TRUE(p.cpu.m && p.cuda);
        Rng rng(99);
        auto in = random_tokens((size_t)c.T * c.B, c.V, rng);
        auto tg = random_tokens((size_t)c.T * c.B, c.V, rng);
        double cpu_loss = loss_and_grads(p.cpu.m.get(), in, tg, c.T);
        double cuda_loss = loss_and_grads(p.cuda.get(), in, tg, c.T);
        EXPECT_LE(std::fabs(cuda_loss - cpu_loss) / std::fabs(cpu_loss), tolerance());
        EXPECT_TRUE(tensors_close(c.V, c.H, get_grads(p.cuda.get()), get_grads(p.cpu.m.get()), tolerance()));
        EXPECT_TRUE(vectors_close(get_state(p.cuda.get()), get_state(p.cpu.m.get()), tolerance()));
    }
}

TEST_P(CrossBackendTest, GradientsAreBitIdenticalAcrossRuns)
{
    const Case c{40, 48, 5, 300, GPURNN_LOSS_SUM};
    Pair p = make_pair(dtype(), c, 11);
    ASSERT_TRUE(p.cuda);
    Rng rng(5);
    /* Repeated tokens make the dWxh scatter add many rows into the same columns. */
    auto in = random_tokens((size_t)c.T * c.B, 3, rng);
    auto tg = random_tokens((size_t)c.T * c.B, c.V, rng);
    std::vector<double> first_grads;
    double first_loss = 0;
    for (int run = 0; run < 3; run++) {
        ASSERT_EQ(GPURNN_OK, gpurnn_state_set(p.cuda.get(), p.cpu.state.data(), p.cpu.state.size()));
        double loss = loss_and_grads(p.cuda.get(), in, tg, c.T);
        auto grads = get_grads(p.cuda.get());
        if (run == 0) {
            first_loss = loss;
            first_grads = grads;
        } else {
            EXPECT_EQ(0, std::memcmp(&loss, &first_loss, sizeof loss)) << "run " << run;
            EXPECT_TRUE(bit_equal(grads, first_grads)) << "run " << run;
        }
    }
}

TEST_P(CrossBackendTest, ClippingAndEveryOptimizerMatchCpu)
{
    const Case c{17, 24, 3, 40, GPURNN_LOSS_SUM};
    const gpurnn_optimizer optimizers[] = {
        {GPURNN_SGD, 0.05, 0.9, 0, 0, 0},
        {GPURNN_ADAGRAD, 0.1, 0, 0, 0, 0},
        {GPURNN_ADAM, 0.01, 0, 0.8, 0.99, 1e-7},
    };
    for (const gpurnn_optimizer &opt : optimizers) {
        SCOPED_TRACE("optimizer kind " + std::to_string((int)opt.kind));
        Pair p = make_pair(dtype(), c, 3);
        ASSERT_TRUE(p.cpu.m && p.cuda);
        Rng rng(17);
        for (int step = 0; step < 3; step++) {
            auto in = random_tokens((size_t)c.T * c.B, c.V, rng);
            auto tg = random_tokens((size_t)c.T * c.B, c.V, rng);
            gpurnn_model *models[2] = {p.cpu.m.get(), p.cuda.get()};
            double norms[2] = {0, 0};
            for (int k = 0; k < 2; k++) {
                loss_and_grads(models[k], in, tg, c.T);
                ASSERT_EQ(GPURNN_OK, gpurnn_clip_grad_value(models[k], 20.0)) << gpurnn_last_error();
                ASSERT_EQ(GPURNN_OK, gpurnn_clip_grad_norm(models[k], 1.0, &norms[k])) << gpurnn_last_error();
                ASSERT_EQ(GPURNN_OK, gpurnn_step(models[k], &opt)) << gpurnn_last_error();
            }
            EXPECT_LE(std::fabs(norms[1] - norms[0]) / norms[0], tolerance());
            EXPECT_TRUE(tensors_close(c.V, c.H, get_params(p.cuda.get()), get_params(p.cpu.m.get()), tolerance()));
        }
    }
}

TEST_P(CrossBackendTest, GreedySamplingMatchesCpu)
{
    const Case c{29, 32, 2, 10, GPURNN_LOSS_SUM};
    Pair p = make_pair(dtype(), c, 21);
    ASSERT_TRUE(p.cpu.m && p.cuda);
    std::vector<int32_t> a(200), b(200);
    ASSERT_EQ(GPURNN_OK, gpurnn_sample(p.cpu.m.get(), 3, (int)a.size(), 0.0, 1, a.data()));
    ASSERT_EQ(GPURNN_OK, gpurnn_sample(p.cuda.get(), 3, (int)b.size(), 0.0, 1, b.data())) << gpurnn_last_error();
    EXPECT_EQ(a, b);
}

TEST_P(CrossBackendTest, InferenceScoringAndBatchSamplingMatchCpu)
{
    const Case c{29, 32, 3, 40, GPURNN_LOSS_SUM};
    Pair p = make_pair(dtype(), c, 22);
    ASSERT_TRUE(p.cpu.m && p.cuda);
    Rng rng(23);
    const std::vector<int32_t> in = random_tokens((size_t)c.T * c.B, c.V, rng), tg = random_tokens((size_t)c.T * c.B, c.V, rng);
    std::vector<double> dist[2], state[2];
    double ll[2];
    gpurnn_model *models[2] = {p.cpu.m.get(), p.cuda.get()};
    for (int k = 0; k < 2; ++k) {
        dist[k].resize((size_t)c.T * c.B * c.V);
        ASSERT_EQ(GPURNN_OK, gpurnn_infer(models[k], in.data(), c.T, GPURNN_INFER_EACH_STEP, GPURNN_LOG_PROBS,
                                          dist[k].data(), dist[k].size())) << gpurnn_last_error();
        state[k] = get_state(models[k]);
        ASSERT_EQ(GPURNN_OK, gpurnn_score(models[k], in.data(), tg.data(), c.T, &ll[k])) << gpurnn_last_error();
    }
    EXPECT_LE(rel_norm_error(dist[1].data(), dist[0].data(), dist[0].size()), tolerance());
    EXPECT_LE(rel_norm_error(state[1].data(), state[0].data(), state[0].size()), tolerance());
    EXPECT_LE(std::fabs(ll[1] - ll[0]), tolerance() * std::fabs(ll[0]));
    const std::vector<int32_t> firsts = {3, 4, 5};
    std::vector<int32_t> a((size_t)60 * c.B), b(a.size());
    ASSERT_EQ(GPURNN_OK, gpurnn_sample_batch(p.cpu.m.get(), firsts.data(), 60, 0.0, 1, a.data()));
    ASSERT_EQ(GPURNN_OK, gpurnn_sample_batch(p.cuda.get(), firsts.data(), 60, 0.0, 1, b.data())) << gpurnn_last_error();
    EXPECT_EQ(a, b);
}

TEST_P(CrossBackendTest, CheckpointMovesBetweenBackendsUnchanged)
{
    const Case c{19, 21, 2, 12, GPURNN_LOSS_MEAN};
    Pair p = make_pair(dtype(), c, 4);
    ASSERT_TRUE(p.cpu.m && p.cuda);
    TempDir dir;
    const gpurnn_backend order[2][2] = {{GPURNN_BACKEND_CPU, GPURNN_BACKEND_CUDA},
                                        {GPURNN_BACKEND_CUDA, GPURNN_BACKEND_CPU}};
    for (const auto &pair : order) {
        gpurnn_model *writer = pair[0] == GPURNN_BACKEND_CPU ? p.cpu.m.get() : p.cuda.get();
        std::string path = dir.file(std::string("from_") + backend_label(pair[0]) + ".ckpt");
        ASSERT_EQ(GPURNN_OK, gpurnn_model_save(writer, path.c_str())) << gpurnn_last_error();
        gpurnn_model *raw = nullptr;
        ASSERT_EQ(GPURNN_OK, gpurnn_model_load(path.c_str(), pair[1], &raw)) << gpurnn_last_error();
        ModelPtr loaded(raw);
        EXPECT_EQ(pair[1], gpurnn_model_backend(loaded.get()));
        EXPECT_TRUE(bit_equal(get_params(loaded.get()), get_params(writer)));
        EXPECT_TRUE(bit_equal(get_state(loaded.get()), get_state(writer)));
    }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CrossBackendTest, ::testing::Values(GPURNN_F32, GPURNN_F64),
                         [](const ::testing::TestParamInfo<gpurnn_dtype> &info) {
                             return std::string(dtype_name(info.param));
                         });

/* ---- every cell and layer count ---------------------------------------------------------
 * The same comparisons for tanh, ReLU, GRU and LSTM stacks of 1 to 3 layers: loss, every
 * tensor of the table (relative norm error), the carried state (h and c), clipping and an
 * Adam step, inference, greedy sampling, and bit-identical CUDA gradients run to run. */
using CellCase = std::tuple<gpurnn_cell, int, gpurnn_dtype>;

class CrossBackendCellsTest : public ::testing::TestWithParam<CellCase> {
protected:
    void SetUp() override { GT_SKIP_WITHOUT_CUDA(); }
    gpurnn_cell cell() const { return std::get<0>(GetParam()); }
    int layers() const { return std::get<1>(GetParam()); }
    gpurnn_dtype dtype() const { return std::get<2>(GetParam()); }
    double tolerance() const { return dtype() == GPURNN_F64 ? 1e-10 : 1e-4; }

    /* One model per backend with the same parameters and carried state. */
    Pair pair(const Case &c, uint64_t seed) const
    {
        gpurnn_config cfg = make_config(GPURNN_BACKEND_CPU, dtype(), c.V, c.H, c.B, c.T, c.reduction);
        cfg.cell = cell();
        cfg.num_layers = layers();
        /* weights small enough that the recurrence is not chaotic (see make_pair) */
        return with_cuda_twin(make_random_model(cfg, seed, 0.15, 0.5));
    }
};

/* Every tensor of the table within tol (relative norm error), each named on failure. */
::testing::AssertionResult every_tensor_close(gpurnn_model *m, const std::vector<double> &got,
                                              const std::vector<double> &want, double tol)
{
    std::ostringstream msg;
    for (size_t k = 0; k < gpurnn_tensor_count(m); k++) {
        gpurnn_tensor_info info;
        if (gpurnn_tensor_info_get(m, k, &info) != GPURNN_OK) return ::testing::AssertionFailure() << "tensor " << k;
        const double e = rel_norm_error(got.data() + info.offset, want.data() + info.offset, info.size);
        if (!(e <= tol)) msg << info.name << ": ||a-b||/||b|| = " << e << " > " << tol << "; ";
    }
    if (!msg.str().empty()) return ::testing::AssertionFailure() << msg.str();
    return ::testing::AssertionSuccess();
}

TEST_P(CrossBackendCellsTest, LossGradientsStateAndAStepMatchCpu)
{
    const Case cases[] = {
        {11, 16, 1, 1, GPURNN_LOSS_SUM},
        {7, 13, 3, 57, GPURNN_LOSS_MEAN},
        {33, 32, 4, 200, GPURNN_LOSS_SUM},
    };
    const gpurnn_optimizer adam = {GPURNN_ADAM, 0.01, 0, 0.8, 0.99, 1e-7};
    for (const Case &c : cases) {
        SCOPED_TRACE("V=" + std::to_string(c.V) + " H=" + std::to_string(c.H) + " B=" + std::to_string(c.B) +
                     " T=" + std::to_string(c.T));
        Pair p = pair(c, 7);
        ASSERT_TRUE(p.cpu.m && p.cuda);
        Rng rng(99);
        const auto in = random_tokens((size_t)c.T * c.B, c.V, rng), tg = random_tokens((size_t)c.T * c.B, c.V, rng);
        gpurnn_model *models[2] = {p.cpu.m.get(), p.cuda.get()};
        double loss[2], norm[2];
        for (int k = 0; k < 2; k++) loss[k] = loss_and_grads(models[k], in, tg, c.T);
        EXPECT_LE(std::fabs(loss[1] - loss[0]) / std::fabs(loss[0]), tolerance());
        EXPECT_TRUE(every_tensor_close(p.cpu.m.get(), get_grads(p.cuda.get()), get_grads(p.cpu.m.get()), tolerance()));
        EXPECT_TRUE(vectors_close(get_state(p.cuda.get()), get_state(p.cpu.m.get()), tolerance()));
        for (int k = 0; k < 2; k++) {
            ASSERT_EQ(GPURNN_OK, gpurnn_clip_grad_norm(models[k], 1.0, &norm[k])) << gpurnn_last_error();
            ASSERT_EQ(GPURNN_OK, gpurnn_step(models[k], &adam)) << gpurnn_last_error();
        }
        EXPECT_LE(std::fabs(norm[1] - norm[0]) / norm[0], tolerance());
        EXPECT_TRUE(every_tensor_close(p.cpu.m.get(), get_params(p.cuda.get()), get_params(p.cpu.m.get()), tolerance()));
    }
}

TEST_P(CrossBackendCellsTest, GradientsAreBitIdenticalAcrossRuns)
{
    const Case c{20, 24, 3, 60, GPURNN_LOSS_SUM};
    Pair p = pair(c, 11);
    ASSERT_TRUE(p.cuda);
    Rng rng(5);
    /* repeated tokens make the dW_ih0 scatter add many rows into the same columns */
    const auto in = random_tokens((size_t)c.T * c.B, 3, rng), tg = random_tokens((size_t)c.T * c.B, c.V, rng);
    std::vector<double> first;
    for (int run = 0; run < 2; run++) {
        ASSERT_EQ(GPURNN_OK, gpurnn_state_set(p.cuda.get(), p.cpu.state.data(), p.cpu.state.size()));
        loss_and_grads(p.cuda.get(), in, tg, c.T);
        if (run == 0)
            first = get_grads(p.cuda.get());
        else
            EXPECT_TRUE(bit_equal(get_grads(p.cuda.get()), first));
    }
}

TEST_P(CrossBackendCellsTest, InferenceAndGreedySamplingMatchCpu)
{
    const Case c{29, 32, 3, 30, GPURNN_LOSS_SUM};
    Pair p = pair(c, 22);
    ASSERT_TRUE(p.cpu.m && p.cuda);
    Rng rng(23);
    const auto in = random_tokens((size_t)c.T * c.B, c.V, rng), tg = random_tokens((size_t)c.T * c.B, c.V, rng);
    gpurnn_model *models[2] = {p.cpu.m.get(), p.cuda.get()};
    std::vector<double> dist[2], state[2];
    std::vector<int32_t> drawn[2], batch[2];
    double ll[2];
    const std::vector<int32_t> firsts = {3, 4, 5};
    for (int k = 0; k < 2; ++k) {
        dist[k].resize((size_t)c.T * c.B * c.V);
        ASSERT_EQ(GPURNN_OK, gpurnn_infer(models[k], in.data(), c.T, GPURNN_INFER_EACH_STEP, GPURNN_LOG_PROBS,
                                          dist[k].data(), dist[k].size())) << gpurnn_last_error();
        state[k] = get_state(models[k]);
        ASSERT_EQ(GPURNN_OK, gpurnn_score(models[k], in.data(), tg.data(), c.T, &ll[k])) << gpurnn_last_error();
        drawn[k].resize(100);
        ASSERT_EQ(GPURNN_OK, gpurnn_sample(models[k], 3, 100, 0.0, 1, drawn[k].data())) << gpurnn_last_error();
        batch[k].resize((size_t)40 * c.B);
        ASSERT_EQ(GPURNN_OK, gpurnn_sample_batch(models[k], firsts.data(), 40, 0.0, 1, batch[k].data()))
            << gpurnn_last_error();
    }
    EXPECT_LE(rel_norm_error(dist[1].data(), dist[0].data(), dist[0].size()), tolerance());
    EXPECT_LE(rel_norm_error(state[1].data(), state[0].data(), state[0].size()), tolerance());
    EXPECT_LE(std::fabs(ll[1] - ll[0]), tolerance() * std::fabs(ll[0]));
    EXPECT_EQ(drawn[0], drawn[1]);
    EXPECT_EQ(batch[0], batch[1]);
}

std::string cell_case_name(const ::testing::TestParamInfo<CellCase> &info)
{
    static const char *names[] = {"Tanh", "Relu", "Gru", "Lstm"};
    return std::string(names[std::get<0>(info.param)]) + "_L" + std::to_string(std::get<1>(info.param)) + "_" +
           dtype_name(std::get<2>(info.param));
}

INSTANTIATE_TEST_SUITE_P(Cells, CrossBackendCellsTest,
                         ::testing::Combine(::testing::Values(GPURNN_CELL_TANH, GPURNN_CELL_RELU, GPURNN_CELL_GRU,
                                                              GPURNN_CELL_LSTM),
                                            ::testing::Values(1, 2, 3), ::testing::Values(GPURNN_F64, GPURNN_F32)),
                         cell_case_name);

}  // namespace
