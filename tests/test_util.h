/* Helpers shared by the libgpurnn tests: model ownership, a test-side random generator,
 * snapshots of everything a failed call must leave alone, tolerance checks, temporary
 * directories, and the backend-parametrised fixture every backend-independent test uses. */
#ifndef GPURNN_TESTS_TEST_UTIL_H
#define GPURNN_TESTS_TEST_UTIL_H

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "gpurnn.h"
#include "reference_rnn.h"

namespace gt {

struct ModelDeleter {
    void operator()(gpurnn_model *m) const { gpurnn_model_destroy(m); }
};
using ModelPtr = std::unique_ptr<gpurnn_model, ModelDeleter>;

/* SplitMix64: the tests' own random numbers (independent of the library's generator). */
class Rng {
public:
    explicit Rng(uint64_t seed) : s_(seed) {}
    uint64_t next();
    double uniform();              /* [0, 1) */
    double normal();               /* N(0, 1) */
    int below(int n);              /* [0, n) */
private:
    uint64_t s_;
};

const char *dtype_name(gpurnn_dtype d);
const char *backend_label(gpurnn_backend b);
const char *reduction_name(gpurnn_loss_reduction r);

gpurnn_config make_config(gpurnn_backend backend, gpurnn_dtype dtype, int V, int H, int B,
                          int max_seq_len, gpurnn_loss_reduction reduction = GPURNN_LOSS_SUM,
                          unsigned long long seed = 1, double init_scale = 0.1);

/* Creates a model; on failure records a test failure (with the library's message) and
 * returns nullptr, so callers write ASSERT_TRUE(m). */
ModelPtr create_model(const gpurnn_config &cfg);

/* A gpurnn_optimizer with every other field zero (zero beta/eps mean the defaults). */
gpurnn_optimizer make_optimizer(gpurnn_optimizer_kind kind, double lr, double momentum = 0,
                                double beta1 = 0, double beta2 = 0, double eps = 0);

std::vector<double> random_normal(size_t n, Rng &rng, double scale);
std::vector<int32_t> random_tokens(size_t n, int V, Rng &rng);
/* Each value rounded to float and back (what a float32 model stores). */
std::vector<double> round_to_float(const std::vector<double> &v);
double round_to_float(double x);

/* Reads the model's buffers (records a failure if a read fails). */
std::vector<double> get_params(const gpurnn_model *m);
std::vector<double> get_grads(const gpurnn_model *m);
std::vector<double> get_state(const gpurnn_model *m);
gpurnn_config get_config(const gpurnn_model *m);

/* A model with random parameters and carried state, both set through the public API and
 * already rounded to float for float32 models, so `params` and `state` hold exactly the
 * values the model uses. */
struct RandomModel {
    ModelPtr m;
    gpurnn_config cfg{};
    std::vector<double> params;
    std::vector<double> state;
};
RandomModel make_random_model(gpurnn_backend backend, gpurnn_dtype dtype, int V, int H, int B,
                              int max_seq_len, gpurnn_loss_reduction reduction, uint64_t seed,
                              double param_scale = 0.3, double state_scale = 0.5);
/* The same for a config made by the caller (e.g. with a BPTT checkpoint interval). */
RandomModel make_random_model(const gpurnn_config &cfg, uint64_t seed, double param_scale = 0.3,
                              double state_scale = 0.5);

/* Everything observable about a model that a failed call must leave alone. */
struct Snapshot {
    std::vector<double> params, grads, state;
    static Snapshot take(const gpurnn_model *m);
};

/* Bit-exact equality of two vectors (memcmp: distinguishes -0.0 and NaN payloads). */
::testing::AssertionResult bit_equal(const std::vector<double> &got, const std::vector<double> &want);
::testing::AssertionResult snapshots_equal(const Snapshot &got, const Snapshot &want);

/* ||a - b|| / ||b|| (or ||a|| when ||b|| == 0). */
double rel_norm_error(const double *a, const double *b, size_t n);
/* Per-tensor ||a-b||/||b|| <= tol over the five tensors of the layout for (V, H). */
::testing::AssertionResult tensors_close(int V, int H, const std::vector<double> &got,
                                         const std::vector<double> &want, double tol);
::testing::AssertionResult vectors_close(const std::vector<double> &got,
                                         const std::vector<double> &want, double tol);

/* status == want and gpurnn_last_error() is non-empty. */
::testing::AssertionResult failed_with(gpurnn_status got, gpurnn_status want);
/* Does `msg` contain `key` followed by optional spaces, '=', optional spaces and value? */
bool mentions_assignment(const std::string &msg, const std::string &key, long long value);

/* A fresh directory under $TMPDIR (or /tmp), removed with its files on destruction. */
class TempDir {
public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir &) = delete;
    TempDir &operator=(const TempDir &) = delete;
    const std::string &path() const { return path_; }
    std::string file(const std::string &name) const { return path_ + "/" + name; }
    std::vector<std::string> list() const;   /* names of the entries in it */
private:
    std::string path_;
};

/* Everything a failed call must leave alone, optimizer state and step count included
 * (through the bytes of a checkpoint, which hold them; the probe file in dir is removed). */
struct FullState {
    Snapshot snap;
    std::vector<unsigned char> checkpoint;
    static FullState take(const gpurnn_model *m, const TempDir &dir);
};
::testing::AssertionResult full_states_equal(const FullState &got, const FullState &want);

std::vector<unsigned char> read_file(const std::string &path);
void write_file(const std::string &path, const std::vector<unsigned char> &bytes);

/* The fixture of every backend-parametrised test: skips (reported as skipped by ctest)
 * when the backend cannot be used here. */
class BackendTest : public ::testing::TestWithParam<gpurnn_backend> {
protected:
    void SetUp() override;
    gpurnn_backend backend() const { return GetParam(); }
};

std::string backend_param_name(const ::testing::TestParamInfo<gpurnn_backend> &info);

/* 1 when the environment says CUDA must be usable (GPURNN_TEST_REQUIRE_CUDA=1: the runs
 * against the device emulator or a GPU set it), so that a CUDA test that finds no CUDA
 * fails instead of passing as a skip. */
bool cuda_required();

}  // namespace gt

/* Skips the calling test, with the reason, when CUDA cannot be used here; fails it
 * instead where CUDA is required (gt::cuda_required). */
#define GT_SKIP_WITHOUT_CUDA()                                                                     \
    do {                                                                                           \
        if (gpurnn_backend_check(GPURNN_BACKEND_CUDA) != GPURNN_OK) {                             \
            if (::gt::cuda_required()) FAIL() << "CUDA is required here but " << gpurnn_last_error(); \
            GTEST_SKIP() << "skipped: no CUDA device (" << gpurnn_last_error() << ")";           \
        }                                                                                          \
    } while (0)

/* Runs the parametrised suite once per backend: Backends/<Suite>.<Test>/CPU and /CUDA. */
#define GPURNN_INSTANTIATE_BACKENDS(Suite)                                                          \
    INSTANTIATE_TEST_SUITE_P(Backends, Suite,                                                      \
                             ::testing::Values(GPURNN_BACKEND_CPU, GPURNN_BACKEND_CUDA),           \
                             ::gt::backend_param_name)

#endif
