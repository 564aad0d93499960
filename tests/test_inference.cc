/* Using a trained model: gpurnn_infer (distributions equal the reference softmax, log-probs
 * their logs, each-step and last-only agree, the carried state bit-identical to a training
 * forward's), gpurnn_score (one call = pieces = -loss of a SUM forward), priming then
 * sampling equal to the old made-up-target workaround, gpurnn_sample_batch (sequence 0 =
 * gpurnn_sample), the training state left alone (backward after inference still
 * backpropagates the last forward), bad input changing nothing, and the memory report. */
#include <cfloat>
#include <cmath>
#include <cstring>
#include <functional>

#include "test_util.h"

using namespace gt;

namespace {

/* softmax (or log-softmax) of y, in float64, max-subtracted. */
std::vector<double> ref_distribution(const std::vector<double> &y, bool log_probs)
{
    double max = y[0];
    for (double v : y) max = std::max(max, v);
    double sum = 0;
    for (double v : y) sum += std::exp(v - max);
    std::vector<double> out(y.size());
    for (size_t i = 0; i < y.size(); ++i)
        out[i] = log_probs ? (y[i] - max) - std::log(sum) : std::exp(y[i] - max) / sum;
    return out;
}

/* The reference distributions p_t of every step and sequence, (T, B, V), from state h0
 * (B, H), and the reference final state (B, H). */
std::vector<double> ref_each_step(int V, int H, int B, int T, const std::vector<double> &params,
                                  const std::vector<double> &h0, const std::vector<int32_t> &in, bool log_probs,
                                  std::vector<double> *h_last)
{
    std::vector<double> out((size_t)T * B * V), h = h0, h_next(H), y(V);
    for (int b = 0; b < B; ++b) {
        std::vector<double> hb(h.begin() + (size_t)b * H, h.begin() + (size_t)(b + 1) * H);
        for (int t = 0; t < T; ++t) {
            ref_step(V, H, params.data(), hb.data(), in[(size_t)t * B + b], h_next.data(), y.data());
            hb = h_next;
            std::vector<double> d = ref_distribution(y, log_probs);
            std::copy(d.begin(), d.end(), out.begin() + ((size_t)t * B + b) * V);
        }
        std::copy(hb.begin(), hb.end(), h.begin() + (size_t)b * H);
    }
    if (h_last) *h_last = h;
    return out;
}

double max_abs_diff(const std::vector<double> &a, const std::vector<double> &b)
{
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
    return worst;
}

/* A model with random parameters and state on a chosen BPTT policy. */
RandomModel make_model_with_policy(gpurnn_backend backend, gpurnn_dtype dt, int V, int H, int B, int max_T,
                                   int bptt_every, uint64_t seed)
{
    gpurnn_config cfg = make_config(backend, dt, V, H, B, max_T, GPURNN_LOSS_SUM, seed);
    cfg.bptt_checkpoint_every = bptt_every;
    return make_random_model(cfg, seed);
}

}  // namespace

class InferenceTest : public BackendTest {};

TEST_P(InferenceTest, DistributionsEqualTheReferenceSoftmax)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 11, H = 7, B = 3, T = 5;
        const double tol = dt == GPURNN_F64 ? 1e-12 : 1e-5;
        RandomModel r = make_random_model(backend(), dt, V, H, B, 6, GPURNN_LOSS_SUM, 901, 0.5);
        ASSERT_TRUE(r.m);
        Rng rng(902);
        const std::vector<int32_t> in = random_tokens((size_t)T * B, V, rng);
        std::vector<double> want_h;
        const std::vector<double> want = ref_each_step(V, H, B, T, r.params, r.state, in, false, &want_h);
        const std::vector<double> want_log = ref_each_step(V, H, B, T, r.params, r.state, in, true, nullptr);

        std::vector<double> each((size_t)T * B * V, -1.0);
        ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_EACH_STEP, GPURNN_PROBS, each.data(),
                               each.size()), GPURNN_OK) << gpurnn_last_error();
        EXPECT_LE(max_abs_diff(each, want), tol);
        EXPECT_LE(max_abs_diff(get_state(r.m.get()), want_h), dt == GPURNN_F64 ? 1e-12 : 1e-5);
        for (int t = 0; t < T; ++t)
            for (int b = 0; b < B; ++b) {
                double sum = 0;
                for (int v = 0; v < V; ++v) sum += each[((size_t)t * B + b) * V + v];
                EXPECT_NEAR(sum, 1.0, 1e-12) << "t=" << t << " b=" << b;
            }

        /* log-probabilities: the reference log-softmax, and the logs of the probabilities */
        ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
        std::vector<double> each_log(each.size());
        ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_EACH_STEP, GPURNN_LOG_PROBS, each_log.data(),
                               each_log.size()), GPURNN_OK) << gpurnn_last_error();
        EXPECT_LE(max_abs_diff(each_log, want_log), dt == GPURNN_F64 ? 1e-12 : 1e-4);
        std::vector<double> log_of_probs(each.size());
        for (size_t i = 0; i < each.size(); ++i) log_of_probs[i] = std::log(each[i]);
        EXPECT_LE(max_abs_diff(each_log, log_of_probs), 1e-12);

        /* last-only: the last step's block of each-step, bit for bit, and the same state */
        const std::vector<double> state_after_each = get_state(r.m.get());
        for (gpurnn_prob_kind kind : {GPURNN_PROBS, GPURNN_LOG_PROBS}) {
            ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
            std::vector<double> last((size_t)B * V, -1.0);
            ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_LAST, kind, last.data(), last.size()),
                      GPURNN_OK) << gpurnn_last_error();
            const std::vector<double> &from = kind == GPURNN_PROBS ? each : each_log;
            EXPECT_TRUE(bit_equal(last, std::vector<double>(from.end() - (ptrdiff_t)last.size(), from.end())));
            EXPECT_TRUE(bit_equal(get_state(r.m.get()), state_after_each));
        }
        /* priming only: the same state again */
        ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
        ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_NONE, GPURNN_PROBS, nullptr, 0), GPURNN_OK)
            << gpurnn_last_error();
        EXPECT_TRUE(bit_equal(get_state(r.m.get()), state_after_each));
    }
}

TEST_P(InferenceTest, CarriedStateIsBitIdenticalToATrainingForward)
{
    struct Case {
        int V, H, B, T, max_T, bptt_every;
        const char *what;
    };
    const Case cases[] = {
        {13, 9, 1, 7, 8, GPURNN_BPTT_KEEP_ALL, "B = 1 (GEMV recurrence)"},
        {13, 9, 5, 7, 8, GPURNN_BPTT_KEEP_ALL, "small batch"},
        {2000, 24, 3, 40, 40, GPURNN_BPTT_KEEP_ALL, "several output chunks"},
        {2000, 24, 3, 40, 40, 5, "checkpointed BPTT"},
        {16, 128, 4, 6, 6, GPURNN_BPTT_KEEP_ALL, "batch sliced over threads"},
    };
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        for (const Case &k : cases) {
            SCOPED_TRACE(std::string(dtype_name(dt)) + ", " + k.what);
            RandomModel r = make_model_with_policy(backend(), dt, k.V, k.H, k.B, k.max_T, k.bptt_every, 903);
            ASSERT_TRUE(r.m);
            Rng rng(904);
            const std::vector<int32_t> in = random_tokens((size_t)k.T * k.B, k.V, rng);
            const std::vector<int32_t> tg = random_tokens((size_t)k.T * k.B, k.V, rng);
            double loss;
            ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), k.T, &loss), GPURNN_OK) << gpurnn_last_error();
            const std::vector<double> trained = get_state(r.m.get());
            for (gpurnn_infer_output what : {GPURNN_INFER_NONE, GPURNN_INFER_LAST, GPURNN_INFER_EACH_STEP}) {
                ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
                const size_t count = what == GPURNN_INFER_NONE ? 0
                                     : what == GPURNN_INFER_LAST ? (size_t)k.B * k.V
                                                                 : (size_t)k.T * k.B * k.V;
                std::vector<double> out(count);
                ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), k.T, what, GPURNN_PROBS, out.data(), count), GPURNN_OK)
                    << gpurnn_last_error();
                EXPECT_TRUE(bit_equal(get_state(r.m.get()), trained)) << "what = " << (int)what;
            }
            ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
            double ll;
            ASSERT_EQ(gpurnn_score(r.m.get(), in.data(), tg.data(), k.T, &ll), GPURNN_OK) << gpurnn_last_error();
            EXPECT_TRUE(bit_equal(get_state(r.m.get()), trained)) << "gpurnn_score";
        }
    }
}

TEST_P(InferenceTest, ScoreIsExactAcrossCallsAndEqualsMinusTheSumLoss)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 17, H = 10, B = 2, T = 12;
        const double tol = dt == GPURNN_F64 ? 1e-12 : 1e-5;
        RandomModel r = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 905, 0.5);
        ASSERT_TRUE(r.m);
        Rng rng(906);
        const std::vector<int32_t> in = random_tokens((size_t)T * B, V, rng), tg = random_tokens((size_t)T * B, V, rng);
        double whole = 0;
        ASSERT_EQ(gpurnn_score(r.m.get(), in.data(), tg.data(), T, &whole), GPURNN_OK) << gpurnn_last_error();
        const std::vector<double> state_whole = get_state(r.m.get());
        EXPECT_LT(whole, 0);

        /* in pieces of 5, 1 and 6 steps, the state carrying the context */
        ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
        double pieces = 0;
        int t0 = 0;
        for (int len : {5, 1, 6}) {
            double part = 0;
            ASSERT_EQ(gpurnn_score(r.m.get(), in.data() + (size_t)t0 * B, tg.data() + (size_t)t0 * B, len, &part),
                      GPURNN_OK) << gpurnn_last_error();
            pieces += part;
            t0 += len;
        }
        EXPECT_LE(std::fabs(pieces - whole), tol * std::fabs(whole)) << pieces << " vs " << whole;
        EXPECT_LE(max_abs_diff(get_state(r.m.get()), state_whole), dt == GPURNN_F64 ? 1e-15 : 1e-6);

        /* minus the loss of a SUM forward from the same state, and the reference's */
        ASSERT_EQ(gpurnn_state_set(r.m.get(), r.state.data(), r.state.size()), GPURNN_OK);
        double loss = 0;
        ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), tg.data(), T, &loss), GPURNN_OK) << gpurnn_last_error();
        EXPECT_LE(std::fabs(whole + loss), tol * std::fabs(loss)) << whole << " vs -" << loss;
        const double ref = ref_forward_backward(V, H, B, T, r.params.data(), r.state.data(), in.data(), tg.data(), 0,
                                                nullptr, nullptr);
        EXPECT_LE(std::fabs(whole + ref), tol * ref) << whole << " vs reference -" << ref;
    }
}

TEST_P(InferenceTest, PrimingThenSamplingEqualsTheMadeUpTargetWorkaround)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 19, H = 12, B = 3, n = 80;
        RandomModel r = make_random_model(backend(), dt, V, H, B, 16, GPURNN_LOSS_SUM, 907, 0.6);
        ASSERT_TRUE(r.m);
        const std::vector<int32_t> prompt = {4, 7, 7, 1, 0, 18, 3, 9, 2, 11};
        const int T = (int)prompt.size() - 1; /* the last token is sample's first_token */
        std::vector<int32_t> in((size_t)T * B), made_up((size_t)T * B, 0);
        for (int t = 0; t < T; ++t)
            for (int b = 0; b < B; ++b) in[(size_t)t * B + b] = prompt[t];
        for (double temperature : {0.0, 0.8}) {
            SCOPED_TRACE("temperature " + std::to_string(temperature));
            /* the old way: a training forward with made-up targets over the prompt, from zero */
            ASSERT_EQ(gpurnn_state_reset(r.m.get()), GPURNN_OK);
            double loss;
            ASSERT_EQ(gpurnn_forward(r.m.get(), in.data(), made_up.data(), T, &loss), GPURNN_OK);
            std::vector<int32_t> old_way(n), new_way(n), batch((size_t)n * B);
            ASSERT_EQ(gpurnn_sample(r.m.get(), prompt.back(), n, temperature, 42, old_way.data()), GPURNN_OK);
            /* the new way */
            ASSERT_EQ(gpurnn_state_reset(r.m.get()), GPURNN_OK);
            ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_NONE, GPURNN_PROBS, nullptr, 0), GPURNN_OK)
                << gpurnn_last_error();
            ASSERT_EQ(gpurnn_sample(r.m.get(), prompt.back(), n, temperature, 42, new_way.data()), GPURNN_OK);
            EXPECT_EQ(new_way, old_way);
            /* every sequence primed with the same prompt: sequence 0 of the batch is sample's */
            const std::vector<int32_t> firsts(B, prompt.back());
            ASSERT_EQ(gpurnn_sample_batch(r.m.get(), firsts.data(), n, temperature, 42, batch.data()), GPURNN_OK)
                << gpurnn_last_error();
            for (int k = 0; k < n; ++k) ASSERT_EQ(batch[(size_t)k * B], old_way[k]) << "draw " << k;
            if (temperature == 0) { /* the same state and token: the same greedy decode */
                for (int k = 0; k < n; ++k)
                    for (int b = 1; b < B; ++b) ASSERT_EQ(batch[(size_t)k * B + b], old_way[k]) << "draw " << k;
            }
        }
    }
}

TEST_P(InferenceTest, SampleBatchDrawsForEverySequenceFromItsOwnState)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 20, H = 12, B = 4, n = 150;
        RandomModel r = make_random_model(backend(), dt, V, H, B, 4, GPURNN_LOSS_SUM, 908, 0.5, 0.9);
        ASSERT_TRUE(r.m);
        const std::vector<int32_t> firsts = {3, 3, 5, 3};
        const Snapshot before = Snapshot::take(r.m.get());
        std::vector<int32_t> batch((size_t)n * B, -1), again((size_t)n * B, -1), single(n, -1);
        ASSERT_EQ(gpurnn_sample_batch(r.m.get(), firsts.data(), n, 1.0, 77, batch.data()), GPURNN_OK)
            << gpurnn_last_error();
        EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
        ASSERT_EQ(gpurnn_sample_batch(r.m.get(), firsts.data(), n, 1.0, 77, again.data()), GPURNN_OK);
        EXPECT_EQ(batch, again) << "the same seed must give the same tokens";
        ASSERT_EQ(gpurnn_sample(r.m.get(), 3, n, 1.0, 77, single.data()), GPURNN_OK);
        std::vector<std::vector<int32_t>> seq(B);
        for (int b = 0; b < B; ++b)
            for (int k = 0; k < n; ++k) {
                const int32_t tok = batch[(size_t)k * B + b];
                ASSERT_GE(tok, 0);
                ASSERT_LT(tok, V);
                seq[b].push_back(tok);
            }
        EXPECT_EQ(seq[0], single) << "sequence 0 must draw gpurnn_sample's tokens";
        for (int b = 1; b < B; ++b) EXPECT_NE(seq[b], seq[0]) << "sequence " << b << " drew sequence 0's tokens";

        /* temperature 0 from identical states and tokens: identical decodes; different
         * states: different ones */
        std::vector<double> same_state = r.state;
        for (int b = 1; b < B; ++b)
            std::copy(r.state.begin(), r.state.begin() + H, same_state.begin() + (size_t)b * H);
        ASSERT_EQ(gpurnn_state_set(r.m.get(), same_state.data(), same_state.size()), GPURNN_OK);
        const std::vector<int32_t> all3(B, 3);
        ASSERT_EQ(gpurnn_sample_batch(r.m.get(), all3.data(), n, 0.0, 1, batch.data()), GPURNN_OK);
        for (int k = 0; k < n; ++k)
            for (int b = 1; b < B; ++b) ASSERT_EQ(batch[(size_t)k * B + b], batch[(size_t)k * B]) << "draw " << k;
    }
}

TEST_P(InferenceTest, LeavesGradientsAndTheLastForwardAlone)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 10, H = 8, B = 2, T = 6;
        RandomModel a = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 909);
        RandomModel b = make_random_model(backend(), dt, V, H, B, T, GPURNN_LOSS_SUM, 909);
        ASSERT_TRUE(a.m && b.m);
        Rng rng(910);
        const std::vector<int32_t> in = random_tokens((size_t)T * B, V, rng), tg = random_tokens((size_t)T * B, V, rng);
        const std::vector<int32_t> other = random_tokens((size_t)T * B, V, rng);
        double la, lb;
        ASSERT_EQ(gpurnn_forward(a.m.get(), in.data(), tg.data(), T, &la), GPURNN_OK);
        ASSERT_EQ(gpurnn_forward(b.m.get(), in.data(), tg.data(), T, &lb), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(a.m.get()), GPURNN_OK);
        ASSERT_EQ(gpurnn_backward(b.m.get()), GPURNN_OK);
        /* model a: inference of other tokens between the forward and a second backward */
        const std::vector<double> grads_before = get_grads(a.m.get());
        std::vector<double> out((size_t)T * B * V);
        ASSERT_EQ(gpurnn_infer(a.m.get(), other.data(), T, GPURNN_INFER_EACH_STEP, GPURNN_LOG_PROBS, out.data(),
                               out.size()), GPURNN_OK) << gpurnn_last_error();
        double ll;
        ASSERT_EQ(gpurnn_score(a.m.get(), other.data(), in.data(), T - 1, &ll), GPURNN_OK) << gpurnn_last_error();
        std::vector<int32_t> drawn((size_t)5 * B), firsts(B, 1);
        ASSERT_EQ(gpurnn_sample_batch(a.m.get(), firsts.data(), 5, 1.0, 3, drawn.data()), GPURNN_OK);
        EXPECT_TRUE(bit_equal(get_grads(a.m.get()), grads_before)) << "inference changed the gradients";
        ASSERT_EQ(gpurnn_backward(a.m.get()), GPURNN_OK) << gpurnn_last_error();
        ASSERT_EQ(gpurnn_backward(b.m.get()), GPURNN_OK) << gpurnn_last_error();
        EXPECT_TRUE(bit_equal(get_grads(a.m.get()), get_grads(b.m.get())))
            << "backward after inference must backpropagate the last training forward";
    }
}

TEST_P(InferenceTest, ANonFiniteLogitIsNumericAndChangesNothing)
{
    const int V = 5, H = 4, B = 2, T = 3;
    RandomModel r = make_random_model(backend(), GPURNN_F32, V, H, B, T, GPURNN_LOSS_SUM, 911);
    ASSERT_TRUE(r.m);
    std::vector<double> p = r.params;
    for (size_t i = ref_off_why(V, H); i < ref_off_bh(V, H); ++i) p[i] = 3e38; /* Why h overflows float */
    for (size_t i = ref_off_bh(V, H); i < ref_off_by(V, H); ++i) p[i] = 2.0;   /* h ~ tanh(2) > 0 */
    for (size_t i = ref_off_wxh(V, H); i < ref_off_bh(V, H) - (size_t)V * H; ++i) p[i] = 0.0;
    ASSERT_EQ(gpurnn_params_set(r.m.get(), p.data(), p.size()), GPURNN_OK) << gpurnn_last_error();
    const Snapshot before = Snapshot::take(r.m.get());
    const std::vector<int32_t> in((size_t)T * B, 1);
    std::vector<double> out((size_t)B * V);
    EXPECT_TRUE(failed_with(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_LAST, GPURNN_PROBS, out.data(),
                                         out.size()), GPURNN_ERR_NUMERIC));
    EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    double ll = 7;
    EXPECT_TRUE(failed_with(gpurnn_score(r.m.get(), in.data(), in.data(), T, &ll), GPURNN_ERR_NUMERIC));
    EXPECT_EQ(ll, 7) << "the output is written only on success";
    EXPECT_TRUE(snapshots_equal(Snapshot::take(r.m.get()), before));
    /* priming alone computes no logits: it succeeds */
    EXPECT_EQ(gpurnn_infer(r.m.get(), in.data(), T, GPURNN_INFER_NONE, GPURNN_PROBS, nullptr, 0), GPURNN_OK);
}

TEST_P(InferenceTest, BadInputChangesNothing)
{
    const int V = 9, H = 6, B = 3, T = 5;
    RandomModel r = make_random_model(backend(), GPURNN_F64, V, H, B, T, GPURNN_LOSS_SUM, 912);
    ASSERT_TRUE(r.m);
    gpurnn_model *m = r.m.get();
    Rng rng(913);
    const std::vector<int32_t> in = random_tokens((size_t)T * B, V, rng), tg = random_tokens((size_t)T * B, V, rng);
    double loss;
    ASSERT_EQ(gpurnn_forward(m, in.data(), tg.data(), T, &loss), GPURNN_OK);
    ASSERT_EQ(gpurnn_backward(m), GPURNN_OK);
    const Snapshot before = Snapshot::take(m);
    std::vector<int32_t> bad_in = in;
    bad_in[(size_t)3 * B + 2] = V; /* t=3, b=2 */
    std::vector<double> last((size_t)B * V), each((size_t)T * B * V);
    std::vector<int32_t> firsts = {1, 2, 3}, bad_firsts = {1, -1, 3}, drawn((size_t)4 * B, -5);
    double ll = 123;

    struct Bad {
        const char *what;
        std::function<gpurnn_status()> call;
        std::vector<std::string> words; /* the message mentions each */
    };
    const std::vector<Bad> bad = {
        {"infer NULL model", [&] { return gpurnn_infer(nullptr, in.data(), T, GPURNN_INFER_LAST, GPURNN_PROBS, last.data(), last.size()); }, {"model"}},
        {"infer NULL inputs", [&] { return gpurnn_infer(m, nullptr, T, GPURNN_INFER_LAST, GPURNN_PROBS, last.data(), last.size()); }, {"inputs"}},
        {"infer T = 0", [&] { return gpurnn_infer(m, in.data(), 0, GPURNN_INFER_NONE, GPURNN_PROBS, nullptr, 0); }, {"T = 0"}},
        {"infer T > max", [&] { return gpurnn_infer(m, in.data(), T + 1, GPURNN_INFER_NONE, GPURNN_PROBS, nullptr, 0); }, {"T = 6"}},
        {"infer token", [&] { return gpurnn_infer(m, bad_in.data(), T, GPURNN_INFER_NONE, GPURNN_PROBS, nullptr, 0); }, {"token 9", "t=3", "b=2"}},
        {"infer what", [&] { return gpurnn_infer(m, in.data(), T, (gpurnn_infer_output)7, GPURNN_PROBS, last.data(), last.size()); }, {"what = 7"}},
        {"infer kind", [&] { return gpurnn_infer(m, in.data(), T, GPURNN_INFER_LAST, (gpurnn_prob_kind)5, last.data(), last.size()); }, {"kind = 5"}},
        {"infer count LAST", [&] { return gpurnn_infer(m, in.data(), T, GPURNN_INFER_LAST, GPURNN_PROBS, each.data(), each.size()); }, {"out_count = 135", "27"}},
        {"infer count EACH", [&] { return gpurnn_infer(m, in.data(), T, GPURNN_INFER_EACH_STEP, GPURNN_PROBS, last.data(), last.size()); }, {"out_count = 27", "135"}},
        {"infer count NONE", [&] { return gpurnn_infer(m, in.data(), T, GPURNN_INFER_NONE, GPURNN_PROBS, last.data(), last.size()); }, {"out_count = 27", "0"}},
        {"infer NULL out", [&] { return gpurnn_infer(m, in.data(), T, GPURNN_INFER_LAST, GPURNN_PROBS, nullptr, last.size()); }, {"out"}},
        {"score NULL targets", [&] { return gpurnn_score(m, in.data(), nullptr, T, &ll); }, {"targets"}},
        {"score NULL result", [&] { return gpurnn_score(m, in.data(), tg.data(), T, nullptr); }, {"log_likelihood"}},
        {"score target", [&] { return gpurnn_score(m, in.data(), bad_in.data(), T, &ll); }, {"token 9", "t=3", "b=2"}},
        {"score T", [&] { return gpurnn_score(m, in.data(), tg.data(), -1, &ll); }, {"T = -1"}},
        {"batch NULL firsts", [&] { return gpurnn_sample_batch(m, nullptr, 4, 1.0, 1, drawn.data()); }, {"first_tokens"}},
        {"batch NULL out", [&] { return gpurnn_sample_batch(m, firsts.data(), 4, 1.0, 1, nullptr); }, {"out"}},
        {"batch first token", [&] { return gpurnn_sample_batch(m, bad_firsts.data(), 4, 1.0, 1, drawn.data()); }, {"-1", "b=1"}},
        {"batch n", [&] { return gpurnn_sample_batch(m, firsts.data(), 0, 1.0, 1, drawn.data()); }, {"n = 0"}},
        {"batch temperature", [&] { return gpurnn_sample_batch(m, firsts.data(), 4, -0.5, 1, drawn.data()); }, {"temperature"}},
        {"batch NaN temperature", [&] { return gpurnn_sample_batch(m, firsts.data(), 4, std::nan(""), 1, drawn.data()); }, {"temperature"}},
    };
    for (const Bad &b : bad) {
        SCOPED_TRACE(b.what);
        EXPECT_TRUE(failed_with(b.call(), GPURNN_ERR_INVALID_ARGUMENT));
        const std::string msg = gpurnn_last_error();
        for (const std::string &w : b.words) EXPECT_NE(msg.find(w), std::string::npos) << msg << " lacks " << w;
        EXPECT_TRUE(snapshots_equal(Snapshot::take(m), before));
    }
    EXPECT_EQ(ll, 123);
    for (int32_t t : drawn) EXPECT_EQ(t, -5);
    /* the last forward survived every failed call */
    ASSERT_EQ(gpurnn_backward(m), GPURNN_OK) << gpurnn_last_error();
}

TEST_P(InferenceTest, MemoryReportCountsTheInferenceBuffers)
{
    for (gpurnn_dtype dt : {GPURNN_F64, GPURNN_F32}) {
        SCOPED_TRACE(dtype_name(dt));
        const int V = 4000, H = 4, B = 16;
        RandomModel r = make_random_model(backend(), dt, V, H, B, 2, GPURNN_LOSS_SUM, 914);
        ASSERT_TRUE(r.m);
        gpurnn_memory_report rep;
        ASSERT_EQ(gpurnn_model_memory(r.m.get(), &rep), GPURNN_OK);
        const size_t real = dt == GPURNN_F64 ? 8 : 4;
        /* at least one step's (B, V) logits in the dtype and its (B, V) float64 distributions
         * (CPU: the batch sampler's weights), taken at creation, as workspace */
        const size_t least = (size_t)B * V * (real + sizeof(double));
        const size_t workspace = backend() == GPURNN_BACKEND_CPU ? rep.host[GPURNN_MEMORY_WORKSPACE]
                                                                 : rep.device[GPURNN_MEMORY_WORKSPACE];
        EXPECT_GE(workspace, least);
        if (backend() == GPURNN_BACKEND_CUDA) { /* the pinned staging of one step's distributions */
            EXPECT_GE(rep.host[GPURNN_MEMORY_WORKSPACE], (size_t)B * V * sizeof(double));
        }
        /* nothing is allocated by the calls: the report is the same after them */
        std::vector<double> out((size_t)2 * B * V);
        const std::vector<int32_t> in((size_t)2 * B, 7);
        ASSERT_EQ(gpurnn_infer(r.m.get(), in.data(), 2, GPURNN_INFER_EACH_STEP, GPURNN_PROBS, out.data(), out.size()),
                  GPURNN_OK) << gpurnn_last_error();
        gpurnn_memory_report after;
        ASSERT_EQ(gpurnn_model_memory(r.m.get(), &after), GPURNN_OK);
        EXPECT_EQ(after.host_total, rep.host_total);
        EXPECT_EQ(after.device_total, rep.device_total);
    }
}

GPURNN_INSTANTIATE_BACKENDS(InferenceTest);
