/* Threads: separate models used from separate threads at the same time give the same
 * results, bit for bit, as the same work done one model after another: losses, norms,
 * parameters, gradients, carried state, sampled tokens, checkpoint bytes and the models
 * loaded back. The sizes make the CPU backend use its parallel regions (the recurrence
 * split over batch slices, the output-layer loops) and multi-threaded BLAS calls, so the
 * concurrent runs share OpenMP and OpenBLAS with each other.
 * .ci/tsan.sh runs these tests (and test_init_layout.cc's thread tests) under
 * ThreadSanitizer. */
#include <cstring>
#include <string>
#include <thread>

#include "test_util.h"

using namespace gt;

namespace {

/* Everything one script observes, in order. */
struct Trace {
    std::vector<double> scalars;                 /* losses and norms */
    std::vector<std::vector<double>> buffers;    /* params, grads, state after each step */
    std::vector<int32_t> tokens;                 /* sampled */
    std::vector<unsigned char> checkpoint;
    std::string error;                           /* the first failure, if any */
};

/* A training script on model k: 4 steps (zero_grad, forward, backward, clip_grad_norm,
 * step), a sample, a save, a load, and one more forward/backward/step on the loaded
 * model. Float32 and float64, SGD with momentum and Adam alternate between models. */
Trace run_script(gpurnn_backend backend, int k, const std::string &dir)
{
    const int V = 96, H = 64, B = 16, T = 24;
    Trace tr;
    auto check = [&](gpurnn_status st, const char *what) {
        if (st != GPURNN_OK && tr.error.empty())
            tr.error = std::string(what) + ": " + gpurnn_status_string(st) + ": " + gpurnn_last_error();
        return st == GPURNN_OK;
    };
    const gpurnn_dtype dt = k % 2 ? GPURNN_F32 : GPURNN_F64;
    gpurnn_config cfg = make_config(backend, dt, V, H, B, T, GPURNN_LOSS_MEAN, 1000 + k, 0.2);
    gpurnn_model *raw = nullptr;
    if (!check(gpurnn_model_create(&cfg, &raw), "create"))
        return tr;
    ModelPtr m(raw);
    const gpurnn_optimizer opt = k % 4 < 2 ? make_optimizer(GPURNN_ADAM, 0.01) : make_optimizer(GPURNN_SGD, 0.1, 0.9);
    Rng rng(2000 + k);
    const size_t n = gpurnn_param_count(m.get());
    auto record = [&](gpurnn_model *x) {
        std::vector<double> p(n), g(n), s((size_t)B * H);
        check(gpurnn_params_get(x, p.data(), n), "params_get");
        check(gpurnn_grads_get(x, g.data(), n), "grads_get");
        check(gpurnn_state_get(x, s.data(), s.size()), "state_get");
        tr.buffers.push_back(std::move(p));
        tr.buffers.push_back(std::move(g));
        tr.buffers.push_back(std::move(s));
    };
    auto train_step = [&](gpurnn_model *x) {
        const std::vector<int32_t> in = random_tokens((size_t)T * B, V, rng), tg = random_tokens((size_t)T * B, V, rng);
        double loss = 0, norm = 0;
        check(gpurnn_zero_grad(x), "zero_grad");
        check(gpurnn_forward(x, in.data(), tg.data(), T, &loss), "forward");
        check(gpurnn_backward(x), "backward");
        check(gpurnn_clip_grad_norm(x, 0.5, &norm), "clip_grad_norm");
        check(gpurnn_step(x, &opt), "step");
        tr.scalars.push_back(loss);
        tr.scalars.push_back(norm);
        record(x);
    };
    for (int s = 0; s < 4; ++s)
        train_step(m.get());
    tr.tokens.assign(200, -1);
    check(gpurnn_sample(m.get(), 3, 200, 0.8, 77 + k, tr.tokens.data()), "sample");
    const std::string path = dir + "/model-" + std::to_string(k) + ".ckpt";
    if (check(gpurnn_model_save(m.get(), path.c_str()), "save"))
        tr.checkpoint = read_file(path);
    gpurnn_model *loaded = nullptr;
    if (check(gpurnn_model_load(path.c_str(), backend, &loaded), "load")) {
        ModelPtr l(loaded);
        record(l.get());
        train_step(l.get());
    }
    return tr;
}

::testing::AssertionResult same_trace(const Trace &got, const Trace &want)
{
    if (!got.error.empty())
        return ::testing::AssertionFailure() << got.error;
    auto r = bit_equal(got.scalars, want.scalars);
    if (!r)
        return ::testing::AssertionFailure() << "losses/norms differ: " << r.message();
    if (got.buffers.size() != want.buffers.size())
        return ::testing::AssertionFailure() << "different number of buffers";
    static const char *const kinds[3] = {"parameters", "gradients", "carried state"};
    for (size_t i = 0; i < got.buffers.size(); ++i) {
        r = bit_equal(got.buffers[i], want.buffers[i]);
        if (!r)
            return ::testing::AssertionFailure() << kinds[i % 3] << " after step " << i / 3 << " differ: " << r.message();
    }
    if (got.tokens != want.tokens)
        return ::testing::AssertionFailure() << "sampled tokens differ";
    if (got.checkpoint != want.checkpoint)
        return ::testing::AssertionFailure() << "checkpoint bytes differ";
    return ::testing::AssertionSuccess();
}

}  // namespace

class ConcurrentModelsTest : public BackendTest {};

TEST_P(ConcurrentModelsTest, MatchSequentialRunsBitForBit)
{
    const int N = 4;
    TempDir seq_dir, par_dir;
    std::vector<Trace> sequential(N), concurrent(N);
    for (int k = 0; k < N; ++k) {
        sequential[k] = run_script(backend(), k, seq_dir.path());
        ASSERT_TRUE(sequential[k].error.empty()) << "model " << k << ": " << sequential[k].error;
    }
    for (int round = 0; round < 2; ++round) {
        SCOPED_TRACE("concurrent round " + std::to_string(round));
        std::vector<std::thread> threads;
        for (int k = 0; k < N; ++k)
            threads.emplace_back([&, k] { concurrent[k] = run_script(backend(), k, par_dir.path()); });
        for (auto &t : threads)
            t.join();
        for (int k = 0; k < N; ++k)
            EXPECT_TRUE(same_trace(concurrent[k], sequential[k])) << "model " << k;
    }
}

TEST_P(ConcurrentModelsTest, ConcurrentSavesToOnePathLeaveOneCompleteCheckpoint)
{
    /* Four models saved to the same path at the same time, several times: the file is
     * always one of the four complete checkpoints, and no temporary file is left. */
    const int N = 4, rounds = 5;
    TempDir dir;
    const std::string path = dir.file("shared.ckpt");
    std::vector<ModelPtr> models;
    std::vector<std::vector<unsigned char>> files;
    for (int k = 0; k < N; ++k) {
        models.push_back(create_model(make_config(backend(), GPURNN_F32, 40, 30, 2, 4, GPURNN_LOSS_SUM, 50 + k)));
        ASSERT_TRUE(models.back());
        const std::string own = dir.file("own-" + std::to_string(k));
        ASSERT_EQ(gpurnn_model_save(models.back().get(), own.c_str()), GPURNN_OK) << gpurnn_last_error();
        files.push_back(read_file(own));
        std::remove(own.c_str());
    }
    for (int round = 0; round < rounds; ++round) {
        std::vector<gpurnn_status> st(N, GPURNN_ERR_CUDA);
        std::vector<std::string> msg(N);
        std::vector<std::thread> threads;
        for (int k = 0; k < N; ++k)
            threads.emplace_back([&, k] {
                for (int rep = 0; rep < 3; ++rep) {
                    st[k] = gpurnn_model_save(models[k].get(), path.c_str());
                    if (st[k] != GPURNN_OK) {
                        msg[k] = gpurnn_last_error();
                        break;
                    }
                }
            });
        for (auto &t : threads)
            t.join();
        for (int k = 0; k < N; ++k)
            EXPECT_EQ(st[k], GPURNN_OK) << "model " << k << ": " << msg[k];
        const std::vector<unsigned char> now = read_file(path);
        bool known = false;
        for (const auto &f : files)
            known |= f == now;
        EXPECT_TRUE(known) << "round " << round << ": the file is none of the saved checkpoints";
        EXPECT_EQ(dir.list(), std::vector<std::string>{"shared.ckpt"}) << "round " << round;
    }
}

GPURNN_INSTANTIATE_BACKENDS(ConcurrentModelsTest);
