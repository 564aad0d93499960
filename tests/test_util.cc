#include "test_util.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <regex>
#include <sstream>

namespace gt {

uint64_t Rng::next()
{
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double Rng::uniform() { return (double)(next() >> 11) * 0x1.0p-53; }

double Rng::normal()
{
    const double u1 = 1.0 - uniform();
    const double u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

int Rng::below(int n) { return (int)(next() % (uint64_t)n); }

const char *dtype_name(gpurnn_dtype d) { return d == GPURNN_F32 ? "F32" : d == GPURNN_F64 ? "F64" : "?"; }

const char *backend_label(gpurnn_backend b)
{
    switch (b) {
    case GPURNN_BACKEND_AUTO: return "AUTO";
    case GPURNN_BACKEND_CPU: return "CPU";
    case GPURNN_BACKEND_CUDA: return "CUDA";
    }
    return "UNKNOWN";
}

const char *reduction_name(gpurnn_loss_reduction r) { return r == GPURNN_LOSS_MEAN ? "MEAN" : "SUM"; }

gpurnn_config make_config(gpurnn_backend backend, gpurnn_dtype dtype, int V, int H, int B,
                          int max_seq_len, gpurnn_loss_reduction reduction,
                          unsigned long long seed, double init_scale)
{
    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = V;
    cfg.hidden_size = H;
    cfg.batch_size = B;
    cfg.max_seq_len = max_seq_len;
    cfg.dtype = dtype;
    cfg.backend = backend;
    cfg.reduction = reduction;
    cfg.seed = seed;
    cfg.init_scale = init_scale;
    return cfg;
}

ModelPtr create_model(const gpurnn_config &cfg)
{
    gpurnn_model *m = nullptr;
    gpurnn_status st = gpurnn_model_create(&cfg, &m);
    if (st != GPURNN_OK) {
        ADD_FAILURE() << "gpurnn_model_create(V=" << cfg.vocab_size << ", H=" << cfg.hidden_size
                      << ", B=" << cfg.batch_size << ", max_seq_len=" << cfg.max_seq_len
                      << ", " << dtype_name(cfg.dtype) << ", " << backend_label(cfg.backend)
                      << ") failed: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
        return ModelPtr();
    }
    return ModelPtr(m);
}

gpurnn_optimizer make_optimizer(gpurnn_optimizer_kind kind, double lr, double momentum, double beta1,
                                double beta2, double eps)
{
    gpurnn_optimizer o;
    std::memset(&o, 0, sizeof o);
    o.kind = kind;
    o.learning_rate = lr;
    o.momentum = momentum;
    o.beta1 = beta1;
    o.beta2 = beta2;
    o.eps = eps;
    return o;
}

std::vector<double> random_normal(size_t n, Rng &rng, double scale)
{
    std::vector<double> v(n);
    for (auto &x : v)
        x = rng.normal() * scale;
    return v;
}

std::vector<int32_t> random_tokens(size_t n, int V, Rng &rng)
{
    std::vector<int32_t> v(n);
    for (auto &x : v)
        x = rng.below(V);
    return v;
}

double round_to_float(double x) { return (double)(float)x; }

std::vector<double> round_to_float(const std::vector<double> &v)
{
    std::vector<double> r(v.size());
    for (size_t i = 0; i < v.size(); ++i)
        r[i] = round_to_float(v[i]);
    return r;
}

std::vector<double> get_params(const gpurnn_model *m)
{
    std::vector<double> v(gpurnn_param_count(m));
    gpurnn_status st = gpurnn_params_get(m, v.data(), v.size());
    if (st != GPURNN_OK)
        ADD_FAILURE() << "gpurnn_params_get: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
    return v;
}

std::vector<double> get_grads(const gpurnn_model *m)
{
    std::vector<double> v(gpurnn_param_count(m));
    gpurnn_status st = gpurnn_grads_get(m, v.data(), v.size());
    if (st != GPURNN_OK)
        ADD_FAILURE() << "gpurnn_grads_get: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
    return v;
}

gpurnn_config get_config(const gpurnn_model *m)
{
    gpurnn_config cfg;
    std::memset(&cfg, 0, sizeof cfg);
    gpurnn_status st = gpurnn_model_config(m, &cfg);
    if (st != GPURNN_OK)
        ADD_FAILURE() << "gpurnn_model_config: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
    return cfg;
}

std::vector<double> get_state(const gpurnn_model *m)
{
    std::vector<double> v(gpurnn_state_count(m));
    gpurnn_status st = gpurnn_state_get(m, v.data(), v.size());
    if (st != GPURNN_OK)
        ADD_FAILURE() << "gpurnn_state_get: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
    return v;
}

RandomModel make_random_model(gpurnn_backend backend, gpurnn_dtype dtype, int V, int H, int B,
                              int max_seq_len, gpurnn_loss_reduction reduction, uint64_t seed,
                              double param_scale, double state_scale)
{
    return make_random_model(make_config(backend, dtype, V, H, B, max_seq_len, reduction, seed), seed, param_scale,
                             state_scale);
}

RandomModel make_random_model(const gpurnn_config &cfg, uint64_t seed, double param_scale, double state_scale)
{
    RandomModel r;
    r.cfg = cfg;
    r.m = create_model(r.cfg);
    if (!r.m)
        return r;
    Rng rng(seed * 7919 + 17);
    r.params = random_normal(gpurnn_param_count(r.m.get()), rng, param_scale);
    r.state = random_normal(gpurnn_state_count(r.m.get()), rng, state_scale);
    if (cfg.dtype == GPURNN_F32) {
        r.params = round_to_float(r.params);
        r.state = round_to_float(r.state);
    }
    gpurnn_status st = gpurnn_params_set(r.m.get(), r.params.data(), r.params.size());
    if (st != GPURNN_OK)
        ADD_FAILURE() << "gpurnn_params_set: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
    st = gpurnn_state_set(r.m.get(), r.state.data(), r.state.size());
    if (st != GPURNN_OK)
        ADD_FAILURE() << "gpurnn_state_set: " << gpurnn_status_string(st) << ": " << gpurnn_last_error();
    return r;
}

Snapshot Snapshot::take(const gpurnn_model *m)
{
    Snapshot s;
    s.params = get_params(m);
    s.grads = get_grads(m);
    s.state = get_state(m);
    return s;
}

::testing::AssertionResult bit_equal(const std::vector<double> &got, const std::vector<double> &want)
{
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << "sizes differ: " << got.size() << " vs " << want.size();
    for (size_t i = 0; i < got.size(); ++i) {
        if (std::memcmp(&got[i], &want[i], sizeof(double)) != 0) {
            char buf[128];
            std::snprintf(buf, sizeof buf, "%.17g vs expected %.17g", got[i], want[i]);
            return ::testing::AssertionFailure() << "first difference at index " << i << ": " << buf;
        }
    }
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult snapshots_equal(const Snapshot &got, const Snapshot &want)
{
    auto r = bit_equal(got.params, want.params);
    if (!r)
        return ::testing::AssertionFailure() << "parameters changed: " << r.message();
    r = bit_equal(got.grads, want.grads);
    if (!r)
        return ::testing::AssertionFailure() << "gradients changed: " << r.message();
    r = bit_equal(got.state, want.state);
    if (!r)
        return ::testing::AssertionFailure() << "carried state changed: " << r.message();
    return ::testing::AssertionSuccess();
}

double rel_norm_error(const double *a, const double *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; ++i) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    if (!(num == num))
        return INFINITY;
    return den > 0.0 ? std::sqrt(num / den) : std::sqrt(num);
}

::testing::AssertionResult tensors_close(int V, int H, const std::vector<double> &got,
                                         const std::vector<double> &want, double tol)
{
    if (got.size() != ref_param_count(V, H) || want.size() != got.size())
        return ::testing::AssertionFailure() << "wrong sizes " << got.size() << ", " << want.size();
    static const char *names[5] = {"Wxh", "Whh", "Why", "bh", "by"};
    const size_t offs[6] = {ref_off_wxh(V, H), ref_off_whh(V, H), ref_off_why(V, H),
                            ref_off_bh(V, H),  ref_off_by(V, H),  ref_param_count(V, H)};
    ::testing::AssertionResult res = ::testing::AssertionSuccess();
    bool ok = true;
    std::ostringstream msg;
    for (int t = 0; t < 5; ++t) {
        const size_t n = offs[t + 1] - offs[t];
        const double e = rel_norm_error(got.data() + offs[t], want.data() + offs[t], n);
        if (!(e <= tol)) {
            ok = false;
            msg << names[t] << ": ||a-b||/||b|| = " << e << " > " << tol << "; ";
        }
    }
    if (!ok)
        return ::testing::AssertionFailure() << msg.str();
    return res;
}

::testing::AssertionResult vectors_close(const std::vector<double> &got,
                                         const std::vector<double> &want, double tol)
{
    if (got.size() != want.size())
        return ::testing::AssertionFailure() << "sizes differ: " << got.size() << " vs " << want.size();
    const double e = rel_norm_error(got.data(), want.data(), got.size());
    if (!(e <= tol))
        return ::testing::AssertionFailure() << "||a-b||/||b|| = " << e << " > " << tol;
    return ::testing::AssertionSuccess();
}

::testing::AssertionResult failed_with(gpurnn_status got, gpurnn_status want)
{
    const char *raw = gpurnn_last_error();
    const std::string msg = raw ? raw : "(NULL)";
    if (got != want)
        return ::testing::AssertionFailure() << "status " << gpurnn_status_string(got) << " (" << (int)got
                                             << "), expected " << gpurnn_status_string(want) << " ("
                                             << (int)want << "); message: \"" << msg << "\"";
    if (raw == nullptr || msg.empty())
        return ::testing::AssertionFailure() << "status " << gpurnn_status_string(got)
                                             << " as expected, but gpurnn_last_error() is empty";
    return ::testing::AssertionSuccess() << "message: \"" << msg << "\"";
}

bool mentions_assignment(const std::string &msg, const std::string &key, long long value)
{
    const std::regex re("(^|[^A-Za-z0-9_])" + key + "\\s*=\\s*" + std::to_string(value) + "($|[^0-9])");
    return std::regex_search(msg, re);
}

TempDir::TempDir()
{
    const char *base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/gpurnn-test-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (mkdtemp(buf.data()) == nullptr) {
        ADD_FAILURE() << "mkdtemp(" << tmpl << ") failed: " << std::strerror(errno);
        return;
    }
    path_ = buf.data();
}

std::vector<std::string> TempDir::list() const
{
    std::vector<std::string> names;
    DIR *d = opendir(path_.c_str());
    if (!d)
        return names;
    while (struct dirent *e = readdir(d)) {
        if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
            names.push_back(e->d_name);
    }
    closedir(d);
    return names;
}

static void remove_tree(const std::string &path)
{
    struct stat st;
    if (lstat(path.c_str(), &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        if (DIR *d = opendir(path.c_str())) {
            std::vector<std::string> names;
            while (struct dirent *e = readdir(d))
                if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0)
                    names.push_back(e->d_name);
            closedir(d);
            for (const auto &n : names)
                remove_tree(path + "/" + n);
        }
        rmdir(path.c_str());
    } else {
        unlink(path.c_str());
    }
}

TempDir::~TempDir()
{
    if (!path_.empty())
        remove_tree(path_);
}

std::vector<unsigned char> read_file(const std::string &path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
        return {};
    return std::vector<unsigned char>(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_file(const std::string &path, const std::vector<unsigned char> &bytes)
{
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(bytes.data()), (std::streamsize)bytes.size());
    if (!f)
        ADD_FAILURE() << "could not write " << path;
}

void BackendTest::SetUp()
{
    const gpurnn_backend b = GetParam();
    if (b == GPURNN_BACKEND_CPU) {
        /* The CPU backend is always available: never let a regression hide as a skip. */
        ASSERT_EQ(gpurnn_backend_available(b), 1) << "the CPU backend must always be available";
        return;
    }
    if (b == GPURNN_BACKEND_CUDA) {
        GT_SKIP_WITHOUT_CUDA();
        return;
    }
    if (!gpurnn_backend_available(b)) {
        gpurnn_status st = gpurnn_backend_check(b);
        std::string why = st == GPURNN_OK ? std::string("gpurnn_backend_check says OK") : gpurnn_last_error();
        GTEST_SKIP() << "skipped: backend " << backend_label(b) << " unavailable (" << why << ")";
    }
}

bool cuda_required()
{
    const char *required = std::getenv("GPURNN_TEST_REQUIRE_CUDA");
    return required && std::string(required) == "1";
}

std::string backend_param_name(const ::testing::TestParamInfo<gpurnn_backend> &info)
{
    return backend_label(info.param);
}


FullState FullState::take(const gpurnn_model *m, const TempDir &dir)
{
    FullState f;
    f.snap = Snapshot::take(m);
    const std::string path = dir.file("full-state-probe.ckpt");
    const gpurnn_status st = gpurnn_model_save(m, path.c_str());
    if (st != GPURNN_OK)
        ADD_FAILURE() << "probe save: " << gpurnn_last_error();
    f.checkpoint = read_file(path);
    std::remove(path.c_str());
    return f;
}

::testing::AssertionResult full_states_equal(const FullState &got, const FullState &want)
{
    auto r = snapshots_equal(got.snap, want.snap);
    if (!r)
        return r;
    if (got.checkpoint != want.checkpoint)
        return ::testing::AssertionFailure() << "the optimizer state or its step count changed (checkpoint bytes differ)";
    return ::testing::AssertionSuccess();
}

}  // namespace gt
