/* Checkpointed BPTT (config.bptt_checkpoint_every): the loss, the gradients and the carried
 * state are bit-identical to the full history's on the same backend and dtype, for
 * intervals k below, equal to and above the output layer's chunk C, not dividing T,
 * k = 1, k = T and k > T, B = 1 and B > 1 (with the batch split over threads, and with
 * the recurrence and the output layer pipelined on two threads); gradcheck
 * passes with checkpoints; the automatic choice follows the activation budget; and
 * gpurnn_model_memory reports what the model holds. */
#include <cmath>
#include <cstring>
#include <string>

#include "test_util.h"

using namespace gt;

namespace {

struct BpttCase {
    int V, H, B, T, k;
    const char *why;
};

/* C = 2^18 / (B * max(V, H)) time steps per chunk (src/bptt_plan.c): 8 for the first
 * shape, 32 for the second (whose B*H*H = 131072 also splits the batch over threads),
 * the whole sequence for the third. */
const BpttCase kCases[] = {
    {4096, 16, 8, 61, 5, "k < C, T not a multiple of k"},
    {4096, 16, 8, 61, 12, "C < k < 2C, not a multiple of C"},
    {4096, 16, 8, 61, 16, "k a multiple of C (pipelined with two threads)"},
    {4096, 16, 8, 61, 8, "k = C (pipelined, one chunk per interval)"},
    {4096, 16, 8, 61, 1, "k = 1"},
    {4096, 16, 8, 61, 61, "k = T"},
    {4096, 16, 8, 40, 100, "T < k"},
    {1024, 128, 8, 70, 7, "batch split over threads, k < C"},
    {1024, 128, 8, 70, 45, "batch split over threads, k > C"},
    {5, 4, 1, 23, 3, "B = 1, one chunk"},
    {5, 4, 1, 23, 23, "B = 1, k = T"},
};

gpurnn_config case_config(gpurnn_backend backend, gpurnn_dtype dtype, const BpttCase &c, int k)
{
    gpurnn_config cfg = make_config(backend, dtype, c.V, c.H, c.B, c.T < c.k ? c.k : c.T);
    cfg.bptt_checkpoint_every = k;
    return cfg;
}

struct TrainingRun {
    double loss[2];
    std::vector<double> grads_once, grads_twice, state, grads_second_forward;
};

/* Two forwards with carried state; backward twice after the first (it adds again, and the
 * second call must find the same states in the window). */
TrainingRun train(gpurnn_model *m, const std::vector<double> &params, const std::vector<double> &state,
          const std::vector<int32_t> &in, const std::vector<int32_t> &tg, int T)
{
    TrainingRun r{};
    EXPECT_EQ(gpurnn_params_set(m, params.data(), params.size()), GPURNN_OK);
    EXPECT_EQ(gpurnn_state_set(m, state.data(), state.size()), GPURNN_OK);
    EXPECT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &r.loss[0]), GPURNN_OK) << gpurnn_last_error();
    EXPECT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
    r.grads_once = get_grads(m);
    EXPECT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
    r.grads_twice = get_grads(m);
    EXPECT_EQ(gpurnn_zero_grad(m), GPURNN_OK);
    EXPECT_EQ(gpurnn_forward(m, tg.data(), in.data(), T, &r.loss[1]), GPURNN_OK) << gpurnn_last_error();
    EXPECT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
    r.grads_second_forward = get_grads(m);
    r.state = get_state(m);
    return r;
}

}  // namespace

class BpttCheckpointTest : public BackendTest {};

TEST_P(BpttCheckpointTest, BitIdenticalToTheFullHistory)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        for (const BpttCase &c : kCases) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + " V=" + std::to_string(c.V) + " H=" + std::to_string(c.H) +
                         " B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " k=" + std::to_string(c.k) +
                         ": " + c.why);
            ModelPtr full = create_model(case_config(backend(), dt, c, GPURNN_BPTT_KEEP_ALL));
            ModelPtr ckpt = create_model(case_config(backend(), dt, c, c.k));
            ASSERT_TRUE(full && ckpt);
            gpurnn_config resolved = get_config(ckpt.get());
            ASSERT_EQ(resolved.bptt_checkpoint_every, c.k);

            Rng rng(1000 + (uint64_t)c.k * 31 + (uint64_t)c.T);
            /* 0.15: outside the recurrence's chaotic regime, as in test_reference.cc; it does
             * not matter for bit-identity but keeps the losses meaningful */
            std::vector<double> params = random_normal(gpurnn_param_count(full.get()), rng, 0.15);
            std::vector<double> state = random_normal((size_t)c.B * c.H, rng, 0.5);
            if (dt == GPURNN_F32) {
                params = round_to_float(params);
                state = round_to_float(state);
            }
            std::vector<int32_t> in = random_tokens((size_t)c.T * c.B, c.V, rng);
            std::vector<int32_t> tg = random_tokens((size_t)c.T * c.B, c.V, rng);

            TrainingRun want = train(full.get(), params, state, in, tg, c.T);
            TrainingRun got = train(ckpt.get(), params, state, in, tg, c.T);
            EXPECT_TRUE(bit_equal(std::vector<double>{got.loss[0], got.loss[1]}, std::vector<double>{want.loss[0], want.loss[1]}));
            EXPECT_TRUE(bit_equal(got.grads_once, want.grads_once));
            EXPECT_TRUE(bit_equal(got.grads_twice, want.grads_twice));
            EXPECT_TRUE(bit_equal(got.grads_second_forward, want.grads_second_forward));
            EXPECT_TRUE(bit_equal(got.state, want.state));
            /* the test compares something: gradients are not all zero */
            double norm = 0;
            for (double g : want.grads_once) norm += g * g;
            EXPECT_GT(norm, 0.0);
        }
    }
}

TEST_P(BpttCheckpointTest, ShorterSequencesThanMaxSeqLen)
{
    /* A model sized for T = 90 trains on T = 13 and then T = 90: checkpoints and the window
     * depend on the forward's T, not the model's. */
    const BpttCase c = {4096, 16, 8, 90, 10, "max_seq_len 90"};
    ModelPtr full = create_model(case_config(backend(), GPURNN_F64, c, GPURNN_BPTT_KEEP_ALL));
    ModelPtr ckpt = create_model(case_config(backend(), GPURNN_F64, c, c.k));
    ASSERT_TRUE(full && ckpt);
    Rng rng(5);
    std::vector<double> params = random_normal(gpurnn_param_count(full.get()), rng, 0.15);
    std::vector<double> state = random_normal((size_t)c.B * c.H, rng, 0.5);
    for (int T : {13, 90}) {
        SCOPED_TRACE("T=" + std::to_string(T));
        std::vector<int32_t> in = random_tokens((size_t)T * c.B, c.V, rng);
        std::vector<int32_t> tg = random_tokens((size_t)T * c.B, c.V, rng);
        TrainingRun want = train(full.get(), params, state, in, tg, T);
        TrainingRun got = train(ckpt.get(), params, state, in, tg, T);
        EXPECT_TRUE(bit_equal(std::vector<double>{got.loss[0], got.loss[1]}, std::vector<double>{want.loss[0], want.loss[1]}));
        EXPECT_TRUE(bit_equal(got.grads_twice, want.grads_twice));
        EXPECT_TRUE(bit_equal(got.grads_second_forward, want.grads_second_forward));
        EXPECT_TRUE(bit_equal(got.state, want.state));
    }
}

TEST_P(BpttCheckpointTest, GradcheckFloat64Below1e5)
{
    const int V = 6, H = 7, B = 2, T = 20;
    for (int k : {1, 3, 20}) {
        SCOPED_TRACE("k=" + std::to_string(k));
        gpurnn_config cfg = make_config(backend(), GPURNN_F64, V, H, B, T);
        cfg.bptt_checkpoint_every = k;
        ModelPtr m = create_model(cfg);
        ASSERT_TRUE(m);
        Rng rng(42);
        std::vector<double> params = random_normal(gpurnn_param_count(m.get()), rng, 0.3);
        std::vector<double> state = random_normal((size_t)B * H, rng, 0.5);
        ASSERT_EQ(gpurnn_params_set(m.get(), params.data(), params.size()), GPURNN_OK);
        ASSERT_EQ(gpurnn_state_set(m.get(), state.data(), state.size()), GPURNN_OK);
        std::vector<int32_t> in = random_tokens((size_t)T * B, V, rng), tg = random_tokens((size_t)T * B, V, rng);
        gpurnn_gradcheck_result res;
        ASSERT_EQ(gpurnn_gradcheck(m.get(), in.data(), tg.data(), T, 1e-5, 1000, 7, &res), GPURNN_OK)
            << gpurnn_last_error();
        for (int t = 0; t < GPURNN_NUM_TENSORS; ++t) {
            EXPECT_GT(res.checked[t], 0);
            EXPECT_LT(res.max_rel_error[t], 1e-5) << "tensor " << t;
        }
    }
}

TEST_P(BpttCheckpointTest, AutomaticChoiceFollowsTheBudget)
{
    const int V = 16, H = 256, B = 8, T = 400; /* C = 2^18 / (8 * 256) = 128 */
    const size_t history = (size_t)(T + 1) * B * H * sizeof(float);

    gpurnn_config cfg = make_config(backend(), GPURNN_F32, V, H, B, T);
    cfg.activation_budget_bytes = history; /* fits exactly */
    ModelPtr fits = create_model(cfg);
    ASSERT_TRUE(fits);
    EXPECT_EQ(get_config(fits.get()).bptt_checkpoint_every, GPURNN_BPTT_KEEP_ALL);

    cfg.activation_budget_bytes = history - 1;
    ModelPtr over = create_model(cfg);
    ASSERT_TRUE(over);
    const int k = get_config(over.get()).bptt_checkpoint_every;
    gpurnn_memory_report mem;
    ASSERT_EQ(gpurnn_model_memory(over.get(), &mem), GPURNN_OK);
    /* about sqrt(T) = 20, rounded up to a multiple of the chunk C */
    EXPECT_GE(k, 20);
    EXPECT_LT(k, T);
    EXPECT_EQ(k % mem.chunk_steps, 0) << "k=" << k << " C=" << mem.chunk_steps;
    EXPECT_EQ(mem.bptt_checkpoint_every, k);

    /* zero means the default budget, 1 GiB: this model's history fits it */
    cfg.activation_budget_bytes = 0;
    ModelPtr deflt = create_model(cfg);
    ASSERT_TRUE(deflt);
    EXPECT_EQ(get_config(deflt.get()).bptt_checkpoint_every, GPURNN_BPTT_KEEP_ALL);
    EXPECT_EQ(get_config(deflt.get()).activation_budget_bytes, GPURNN_DEFAULT_ACTIVATION_BUDGET);

    /* an explicit interval is kept whatever the budget */
    cfg.activation_budget_bytes = 1;
    cfg.bptt_checkpoint_every = GPURNN_BPTT_KEEP_ALL;
    ModelPtr keep = create_model(cfg);
    ASSERT_TRUE(keep);
    EXPECT_EQ(get_config(keep.get()).bptt_checkpoint_every, GPURNN_BPTT_KEEP_ALL);
}

TEST_P(BpttCheckpointTest, RejectsIntervalsBelowMinusOne)
{
    gpurnn_config cfg = make_config(backend(), GPURNN_F32, 5, 4, 1, 10);
    cfg.bptt_checkpoint_every = -2;
    gpurnn_model *m = nullptr;
    EXPECT_TRUE(failed_with(gpurnn_model_create(&cfg, &m), GPURNN_ERR_INVALID_ARGUMENT));
    EXPECT_EQ(m, nullptr);
    EXPECT_TRUE(mentions_assignment(gpurnn_last_error(), "bptt_checkpoint_every", -2)) << gpurnn_last_error();
}

TEST_P(BpttCheckpointTest, MemoryReportAddsUpAndShrinksWithCheckpoints)
{
    const int V = 32, H = 256, B = 8, T = 2000; /* C = 2^18 / (8 * 256) = 128 */
    gpurnn_memory_report full_mem, ckpt_mem;
    for (int k : {GPURNN_BPTT_KEEP_ALL, 45}) {
        gpurnn_config cfg = make_config(backend(), GPURNN_F32, V, H, B, T);
        cfg.bptt_checkpoint_every = k;
        ModelPtr m = create_model(cfg);
        ASSERT_TRUE(m);
        gpurnn_memory_report &mem = k == 45 ? ckpt_mem : full_mem;
        ASSERT_EQ(gpurnn_model_memory(m.get(), &mem), GPURNN_OK);
        const size_t n = gpurnn_param_count(m.get());
        const bool cuda = backend() == GPURNN_BACKEND_CUDA;
        const size_t *where = cuda ? mem.device : mem.host;
        EXPECT_EQ(where[GPURNN_MEMORY_PARAMETERS], n * sizeof(float));
        EXPECT_EQ(where[GPURNN_MEMORY_GRADIENTS], n * sizeof(float));
        EXPECT_EQ(where[GPURNN_MEMORY_OPTIMIZER], 2 * n * sizeof(float));
        size_t host = 0, device = 0;
        for (int kind = 0; kind < GPURNN_MEMORY_KINDS; ++kind) {
            host += mem.host[kind];
            device += mem.device[kind];
        }
        EXPECT_EQ(mem.host_total, host);
        EXPECT_EQ(mem.device_total, device);
        if (!cuda) {
            EXPECT_EQ(device, 0u);
        }
        EXPECT_EQ(mem.bptt_checkpoint_every, k);
    }
    const size_t history = (size_t)(T + 1) * B * H * sizeof(float);
    const bool cuda = backend() == GPURNN_BACKEND_CUDA;
    const size_t full_act = (cuda ? full_mem.device : full_mem.host)[GPURNN_MEMORY_ACTIVATIONS];
    const size_t ckpt_act = (cuda ? ckpt_mem.device : ckpt_mem.host)[GPURNN_MEMORY_ACTIVATIONS];
    EXPECT_GE(full_act, history);
    /* 2000/45 + 1 checkpoints and a window of 45 - 1 + C (+ alignment) states instead of
     * 2001 states */
    EXPECT_LT(ckpt_act, full_act - history / 2) << "full " << full_act << " checkpointed " << ckpt_act;

    gpurnn_memory_report unused;
    EXPECT_TRUE(failed_with(gpurnn_model_memory(nullptr, &unused), GPURNN_ERR_INVALID_ARGUMENT));
}

GPURNN_INSTANTIATE_BACKENDS(BpttCheckpointTest);
