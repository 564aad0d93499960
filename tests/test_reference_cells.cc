/* The float64 reference of every cell and number of layers (tests/reference_cells.c),
 * proved right independently of the library: its layout against src/layout.h, its
 * gradients against finite differences of its own loss, its one tanh layer against
 * tests/reference_rnn.c, and all of it against PyTorch's nn.RNN / nn.GRU / nn.LSTM
 * (tests/torch_reference_check.py) where torch is installed. */
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <tuple>
#include <type_traits>

#include "layout.h"
#include "reference_cells.h"
#include "test_util.h"

using namespace gt;

namespace {

const gpurnn_cell kCells[] = {GPURNN_CELL_TANH, GPURNN_CELL_RELU, GPURNN_CELL_GRU, GPURNN_CELL_LSTM};

const char *cell_name(gpurnn_cell c)
{
    switch (c) {
    case GPURNN_CELL_TANH: return "tanh";
    case GPURNN_CELL_RELU: return "relu";
    case GPURNN_CELL_GRU: return "gru";
    case GPURNN_CELL_LSTM: return "lstm";
    }
    return "?";
}

reference_cells_config make_ref_config(int V, int H, int B, int T, gpurnn_cell cell, int L,
                                       gpurnn_loss_reduction red)
{
    reference_cells_config cfg;
    cfg.V = V;
    cfg.H = H;
    cfg.B = B;
    cfg.T = T;
    cfg.cell = cell;
    cfg.num_layers = L;
    cfg.reduction = red;
    return cfg;
}

std::string describe(const reference_cells_config &c)
{
    return std::string(cell_name(c.cell)) + " L=" + std::to_string(c.num_layers) + " V=" + std::to_string(c.V) +
           " H=" + std::to_string(c.H) + " B=" + std::to_string(c.B) + " T=" + std::to_string(c.T) + " " +
           reduction_name(c.reduction);
}

/* A random case: parameters ~ N(0, 0.5), a nonzero carried state (h and c), tokens. */
struct Case {
    reference_cells_config cfg;
    std::vector<double> params, state;
    std::vector<int32_t> inputs, targets;
};

Case make_case(const reference_cells_config &cfg, uint64_t seed)
{
    Case c;
    c.cfg = cfg;
    Rng rng(seed);
    c.params = random_normal(reference_cells_param_count(&cfg), rng, 0.5);
    c.state = random_normal(reference_cells_state_count(&cfg), rng, 0.5);
    c.inputs = random_tokens((size_t)cfg.T * cfg.B, cfg.V, rng);
    c.targets = random_tokens((size_t)cfg.T * cfg.B, cfg.V, rng);
    return c;
}

struct Result {
    double loss = NAN;
    std::vector<double> state, grads;
};

/* Runs the reference; records a failure when it refuses. */
Result run_reference(const Case &c, const std::vector<double> &params, bool with_grads)
{
    Result r;
    r.state.assign(reference_cells_state_count(&c.cfg), NAN);
    if (with_grads) r.grads.assign(params.size(), NAN);
    const int rc = reference_cells_forward_backward(&c.cfg, params.data(), c.state.data(), c.inputs.data(),
                                                    c.targets.data(), &r.loss, r.state.data(),
                                                    with_grads ? r.grads.data() : nullptr);
    EXPECT_EQ(rc, 0) << describe(c.cfg);
    return r;
}

double loss_at(const Case &c, std::vector<double> &params, size_t i, double value)
{
    const double saved = params[i];
    params[i] = value;
    double loss = NAN;
    EXPECT_EQ(reference_cells_forward_backward(&c.cfg, params.data(), c.state.data(), c.inputs.data(),
                                               c.targets.data(), &loss, nullptr, nullptr),
              0);
    params[i] = saved;
    return loss;
}

/* Names entry i of the flat layout, through the library's own describer. */
std::string entry_name(const reference_cells_config &c, size_t i)
{
    gpurnn_layout lay;
    gpurnn_layout_init(&lay, (size_t)c.V, (size_t)c.H, c.cell, c.num_layers);
    char buf[64];
    gpurnn_layout_describe(&lay, i, buf, sizeof buf);
    return buf;
}

std::string cell_param_name(const ::testing::TestParamInfo<gpurnn_cell> &info) { return cell_name(info.param); }

}  // namespace

/* ---------- the layout ---------- */

TEST(ReferenceCellsLayout, OffsetsAgreeWithTheLibraryLayout)
{
    const int sizes[][2] = {{7, 5}, {1, 1}, {65, 32}, {3, 9}};
    for (gpurnn_cell cell : kCells) {
        for (int L : {1, 2, 3, 5}) {
            for (const auto &vh : sizes) {
                const reference_cells_config c = make_ref_config(vh[0], vh[1], 4, 1, cell, L, GPURNN_LOSS_SUM);
                SCOPED_TRACE(describe(c));
                gpurnn_layout lay;
                gpurnn_layout_init(&lay, (size_t)c.V, (size_t)c.H, cell, L);
                EXPECT_EQ(reference_cells_gates(cell), lay.G);
                EXPECT_EQ(reference_cells_param_count(&c), lay.count);
                EXPECT_EQ(reference_cells_state_count(&c), gpurnn_layout_state_count(&lay, (size_t)c.B));
                for (int l = 0; l < L; ++l) {
                    EXPECT_EQ(reference_cells_off_w_ih(&c, l), gpurnn_layout_w_ih(&lay, l)) << "layer " << l;
                    EXPECT_EQ(reference_cells_off_w_hh(&c, l), gpurnn_layout_w_hh(&lay, l)) << "layer " << l;
                    EXPECT_EQ(reference_cells_off_b_ih(&c, l), gpurnn_layout_b_ih(&lay, l)) << "layer " << l;
                    EXPECT_EQ(reference_cells_off_b_hh(&c, l), gpurnn_layout_b_hh(&lay, l)) << "layer " << l;
                }
                EXPECT_EQ(reference_cells_off_why(&c), gpurnn_layout_why(&lay));
                EXPECT_EQ(reference_cells_off_by(&c), gpurnn_layout_by(&lay));
                if (cell == GPURNN_CELL_TANH && L == 1) {
                    /* the vanilla model's five tensors */
                    EXPECT_EQ(reference_cells_param_count(&c), ref_param_count(c.V, c.H));
                    EXPECT_EQ(reference_cells_off_w_ih(&c, 0), ref_off_wxh(c.V, c.H));
                    EXPECT_EQ(reference_cells_off_w_hh(&c, 0), ref_off_whh(c.V, c.H));
                    EXPECT_EQ(reference_cells_off_why(&c), ref_off_why(c.V, c.H));
                    EXPECT_EQ(reference_cells_off_b_ih(&c, 0), ref_off_bh(c.V, c.H));
                    EXPECT_EQ(reference_cells_off_by(&c), ref_off_by(c.V, c.H));
                }
            }
        }
    }
}

/* ---------- the reference against itself and the vanilla reference ---------- */

TEST(ReferenceCellsSelfTest, RefusesBadArgumentsAndWritesNothing)
{
    const Case c = make_case(make_ref_config(4, 3, 2, 3, GPURNN_CELL_LSTM, 2, GPURNN_LOSS_SUM), 7);
    double loss = -1.0;
    std::vector<double> state(c.state.size(), -1.0), grads(c.params.size(), -1.0);
    auto call = [&](const reference_cells_config &cfg, const std::vector<int32_t> &in) {
        return reference_cells_forward_backward(&cfg, c.params.data(), c.state.data(), in.data(),
                                                c.targets.data(), &loss, state.data(), grads.data());
    };
    reference_cells_config bad = c.cfg;
    bad.num_layers = 0;
    EXPECT_EQ(call(bad, c.inputs), -1);
    bad = c.cfg;
    bad.cell = (gpurnn_cell)7;
    EXPECT_EQ(call(bad, c.inputs), -1);
    bad = c.cfg;
    bad.reduction = (gpurnn_loss_reduction)3;
    EXPECT_EQ(call(bad, c.inputs), -1);
    std::vector<int32_t> in = c.inputs;
    in.back() = c.cfg.V;
    EXPECT_EQ(call(c.cfg, in), -1);
    in.back() = -1;
    EXPECT_EQ(call(c.cfg, in), -1);
    EXPECT_EQ(loss, -1.0);
    EXPECT_TRUE(std::all_of(state.begin(), state.end(), [](double v) { return v == -1.0; }));
    EXPECT_TRUE(std::all_of(grads.begin(), grads.end(), [](double v) { return v == -1.0; }));
    EXPECT_EQ(call(c.cfg, c.inputs), 0);
    EXPECT_TRUE(std::isfinite(loss));
}

TEST(ReferenceCellsSelfTest, ForwardOnlyAgreesWithForwardBackward)
{
    for (gpurnn_cell cell : kCells) {
        const Case c = make_case(make_ref_config(6, 4, 2, 5, cell, 2, GPURNN_LOSS_MEAN), 11);
        SCOPED_TRACE(describe(c.cfg));
        const Result full = run_reference(c, c.params, true);
        const Result fwd = run_reference(c, c.params, false);
        EXPECT_EQ(full.loss, fwd.loss);
        EXPECT_TRUE(bit_equal(full.state, fwd.state));
        /* a NULL state_in is the zero state */
        std::vector<double> zero(c.state.size(), 0.0);
        double l_null = NAN, l_zero = NAN;
        ASSERT_EQ(reference_cells_forward_backward(&c.cfg, c.params.data(), nullptr, c.inputs.data(),
                                                   c.targets.data(), &l_null, nullptr, nullptr),
                  0);
        ASSERT_EQ(reference_cells_forward_backward(&c.cfg, c.params.data(), zero.data(), c.inputs.data(),
                                                   c.targets.data(), &l_zero, nullptr, nullptr),
                  0);
        EXPECT_EQ(l_null, l_zero);
        EXPECT_NE(l_zero, fwd.loss) << "the carried state must matter";
    }
}

TEST(ReferenceCellsSelfTest, OneTanhLayerEqualsTheVanillaReference)
{
    const int shapes[][4] = {{7, 5, 3, 6}, {5, 7, 1, 1}, {3, 1, 2, 9}, {13, 8, 4, 37}};
    double worst = 0.0;
    for (const auto &s : shapes) {
        for (gpurnn_loss_reduction red : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN}) {
            const Case c = make_case(make_ref_config(s[0], s[1], s[2], s[3], GPURNN_CELL_TANH, 1, red),
                                     1000 + (uint64_t)s[0] * 7 + red);
            SCOPED_TRACE(describe(c.cfg));
            const Result got = run_reference(c, c.params, true);
            std::vector<double> want_grads(c.params.size()), want_h(c.state.size());
            const double want_loss =
                ref_forward_backward(c.cfg.V, c.cfg.H, c.cfg.B, c.cfg.T, c.params.data(), c.state.data(),
                                     c.inputs.data(), c.targets.data(), red == GPURNN_LOSS_MEAN,
                                     want_grads.data(), want_h.data());
            auto close = [&](double a, double b, const std::string &what) {
                const double err = std::fabs(a - b) / std::max(1.0, std::fabs(b));
                worst = std::max(worst, err);
                EXPECT_LE(err, 1e-12) << what << ": " << a << " vs vanilla reference " << b;
            };
            close(got.loss, want_loss, "loss");
            for (size_t i = 0; i < want_h.size(); ++i) close(got.state[i], want_h[i], "state " + std::to_string(i));
            for (size_t i = 0; i < want_grads.size(); ++i)
                close(got.grads[i], want_grads[i], "grad " + entry_name(c.cfg, i));
        }
    }
    std::printf("largest difference from reference_rnn.c (relative to max(1, |value|)): %.3g\n", worst);
}

/* The reference's backward against central differences of its own loss, on every entry.
 * The fourth-order stencil (f(-2e) - 8f(-e) + 8f(e) - f(2e)) / 12e with e = 1e-3 has a
 * truncation error of order e^4 and a rounding error of order 1e-16 |loss| / e, both far
 * below the tolerances, where the two-point (f(e) - f(-e)) / 2e at e = 1e-5 has a
 * rounding error of up to 1e-16 * 40 / 1e-5 = 4e-10 on the summed loss.
 * A ReLU model's loss has kinks (a pre-activation crossing 0), and a stencil that spans
 * one measures no derivative. Such entries are found from the loss alone, without the
 * gradient under test: there the stencils of width e and e/2 disagree (on smooth
 * stretches they agree to ~1e-11). They are left out, and must be rare. */
double central_difference(const Case &c, std::vector<double> &p, size_t i, double eps)
{
    const double x = c.params[i];
    return (loss_at(c, p, i, x - 2 * eps) - 8 * loss_at(c, p, i, x - eps) + 8 * loss_at(c, p, i, x + eps) -
            loss_at(c, p, i, x + 2 * eps)) /
           (12 * eps);
}

class ReferenceCellsGradientTest : public ::testing::TestWithParam<std::tuple<gpurnn_cell, int>> {};

TEST_P(ReferenceCellsGradientTest, MatchesFiniteDifferencesOfItsOwnLoss)
{
    const gpurnn_cell cell = std::get<0>(GetParam());
    const int L = std::get<1>(GetParam());
    const double eps = 1e-3, rel_tol = 1e-7, abs_tol = 1e-10, tiny = abs_tol / rel_tol, kink = 1e-9;
    double worst_rel = 0.0, worst_abs = 0.0;
    size_t kinks = 0, entries = 0;
    for (gpurnn_loss_reduction red : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN}) {
        Case c = make_case(make_ref_config(7, 5, 3, 6, cell, L, red), 500 + 10 * (uint64_t)cell + 100 * L + red);
        SCOPED_TRACE(describe(c.cfg));
        const Result r = run_reference(c, c.params, true);
        ASSERT_TRUE(std::isfinite(r.loss));
        std::vector<double> p = c.params;
        size_t checked = 0, substantial = 0, case_kinks = 0;
        for (size_t i = 0; i < p.size(); ++i) {
            const double num = central_difference(c, p, i, eps);
            if (cell == GPURNN_CELL_RELU && std::fabs(num - central_difference(c, p, i, eps / 2)) > kink) {
                ++case_kinks;
                continue;
            }
            ++checked;
            const double g = r.grads[i], err = std::fabs(g - num);
            if (std::fabs(g) > 1e-6) ++substantial;
            if (std::fabs(g) > tiny) {
                worst_rel = std::max(worst_rel, err / std::fabs(g));
                EXPECT_LE(err, rel_tol * std::fabs(g))
                    << entry_name(c.cfg, i) << ": backward " << g << ", finite differences " << num;
            } else {
                worst_abs = std::max(worst_abs, err);
                EXPECT_LE(err, abs_tol) << entry_name(c.cfg, i) << ": backward " << g << ", finite differences "
                                        << num;
            }
        }
        EXPECT_LE(case_kinks, p.size() / 20) << "too many entries next to a ReLU kink to check";
        /* most entries must carry a real gradient, or the check proves little */
        EXPECT_GT(substantial, checked / 2);
        kinks += case_kinks;
        entries += p.size();
    }
    std::printf("%s L=%d: largest relative error %.3g, largest absolute error where |grad| <= %g: %.3g",
                cell_name(cell), L, worst_rel, tiny, worst_abs);
    if (cell == GPURNN_CELL_RELU) std::printf(" (%zu of %zu entries next to a kink, left out)", kinks, entries);
    std::printf("\n");
}

INSTANTIATE_TEST_SUITE_P(CellsAndLayers, ReferenceCellsGradientTest,
                         ::testing::Combine(::testing::ValuesIn(kCells), ::testing::Values(1, 2, 3)),
                         [](const ::testing::TestParamInfo<std::tuple<gpurnn_cell, int>> &info) {
                             return std::string(cell_name(std::get<0>(info.param))) + "_L" +
                                    std::to_string(std::get<1>(info.param));
                         });

/* ---------- the reference against PyTorch ---------- */

namespace {

bool python_has_torch(const std::string &python)
{
    const std::string cmd = python + " -c 'import torch' >/dev/null 2>&1";
    return std::system(cmd.c_str()) == 0;
}

/* /usr/bin/python3 first, then python3 on PATH; "" when neither can import torch. */
std::string find_torch_python()
{
    if (access("/usr/bin/python3", X_OK) == 0 && python_has_torch("/usr/bin/python3")) return "/usr/bin/python3";
    if (python_has_torch("python3")) return "python3";
    return "";
}

template <typename T>
void write_array(std::ostream &out, const char *name, const std::vector<T> &v)
{
    out << name << ' ' << v.size();
    char buf[32];
    for (const T &x : v) {
        std::snprintf(buf, sizeof buf, std::is_integral<T>::value ? " %.0f" : " %.17g", (double)x);
        out << buf;
    }
    out << '\n';
}

bool read_array(std::istream &in, const char *name, std::vector<double> &v)
{
    std::string label;
    size_t n = 0;
    if (!(in >> label >> n) || label != name) return false;
    v.resize(n);
    for (double &x : v) {
        std::string word;
        if (!(in >> word)) return false;
        x = std::strtod(word.c_str(), nullptr); /* reads "nan" and "inf" too, unlike >> */
    }
    return true;
}

}  // namespace

class ReferenceCellsTorchTest : public ::testing::TestWithParam<gpurnn_cell> {};

TEST_P(ReferenceCellsTorchTest, MatchesPyTorch)
{
    const gpurnn_cell cell = GetParam();
    const std::string python = find_torch_python();
    if (python.empty())
        GTEST_SKIP() << "skipped: PyTorch is not importable by /usr/bin/python3 nor by python3 on PATH";
    const std::string script = std::string(GPURNN_TEST_SOURCE_DIR) + "/torch_reference_check.py";

    std::vector<Case> cases;
    for (int L : {1, 2, 3})
        for (gpurnn_loss_reduction red : {GPURNN_LOSS_SUM, GPURNN_LOSS_MEAN})
            cases.push_back(make_case(make_ref_config(7, 5, 3, 6, cell, L, red), 9000 + 10 * (uint64_t)cell + 100 * L + red));

    TempDir dir;
    ASSERT_FALSE(dir.path().empty());
    {
        std::ofstream out(dir.file("cases.txt"));
        out << cases.size() << '\n';
        for (const Case &c : cases) {
            out << cell_name(cell) << ' ' << c.cfg.num_layers << ' ' << c.cfg.V << ' ' << c.cfg.H << ' ' << c.cfg.B
                << ' ' << c.cfg.T << ' ' << (c.cfg.reduction == GPURNN_LOSS_MEAN ? "mean" : "sum") << '\n';
            write_array(out, "params", c.params);
            write_array(out, "state", c.state);
            write_array(out, "inputs", c.inputs);
            write_array(out, "targets", c.targets);
        }
        ASSERT_TRUE(out.good());
    }
    const std::string cmd = "OMP_NUM_THREADS=1 " + python + " '" + script + "' '" + dir.file("cases.txt") + "' '" +
                            dir.file("results.txt") + "' 2>'" + dir.file("stderr.txt") + "'";
    const int rc = std::system(cmd.c_str());
    if (rc != 0) {
        const std::vector<unsigned char> err = read_file(dir.file("stderr.txt"));
        FAIL() << cmd << " exited with " << rc << ":\n" << std::string(err.begin(), err.end());
    }

    std::ifstream in(dir.file("results.txt"));
    double worst_loss = 0.0, worst_state = 0.0, worst_grad = 0.0;
    auto err_of = [](double a, double b) { return std::fabs(a - b) / std::max(1.0, std::fabs(b)); };
    for (const Case &c : cases) {
        SCOPED_TRACE(describe(c.cfg));
        std::vector<double> torch_loss, torch_state, torch_grads;
        std::string label;
        double loss = NAN;
        ASSERT_TRUE(in >> label >> loss && label == "loss") << "malformed results.txt";
        ASSERT_TRUE(read_array(in, "state", torch_state)) << "malformed results.txt";
        ASSERT_TRUE(read_array(in, "grads", torch_grads)) << "malformed results.txt";
        const Result r = run_reference(c, c.params, true);
        ASSERT_EQ(torch_state.size(), r.state.size());
        ASSERT_EQ(torch_grads.size(), r.grads.size());

        worst_loss = std::max(worst_loss, err_of(r.loss, loss));
        EXPECT_LE(err_of(r.loss, loss), 1e-10) << "loss " << r.loss << ", PyTorch " << loss;
        for (size_t i = 0; i < r.state.size(); ++i) {
            char where[64];
            gpurnn_layout lay;
            gpurnn_layout_init(&lay, (size_t)c.cfg.V, (size_t)c.cfg.H, cell, c.cfg.num_layers);
            gpurnn_layout_describe_state(&lay, (size_t)c.cfg.B, i, where, sizeof where);
            worst_state = std::max(worst_state, err_of(r.state[i], torch_state[i]));
            EXPECT_LE(err_of(r.state[i], torch_state[i]), 1e-10)
                << "state " << where << ": " << r.state[i] << ", PyTorch " << torch_state[i];
        }
        for (size_t i = 0; i < r.grads.size(); ++i) {
            worst_grad = std::max(worst_grad, err_of(r.grads[i], torch_grads[i]));
            EXPECT_LE(err_of(r.grads[i], torch_grads[i]), 1e-10)
                << "grad " << entry_name(c.cfg, i) << ": " << r.grads[i] << ", PyTorch " << torch_grads[i];
        }
    }
    std::printf("%s vs PyTorch (|a - b| / max(1, |b|)): loss %.3g, state %.3g, gradients %.3g\n", cell_name(cell),
                worst_loss, worst_state, worst_grad);
}

INSTANTIATE_TEST_SUITE_P(Cells, ReferenceCellsTorchTest, ::testing::ValuesIn(kCells), cell_param_name);
