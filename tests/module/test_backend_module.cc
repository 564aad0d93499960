/* How libgpurnn behaves when its CUDA module cannot be used: run once per broken module by
 * ctest (tests/module/CMakeLists.txt), each time in a fresh process because a process
 * loads its module once. The environment says which module (GPURNN_CUDA_MODULE) and what
 * the reason must say (GPURNN_TEST_MODULE_EXPECT, an ECMAScript regex). In every case CUDA
 * is unavailable with that reason, asking for it fails with it, and AUTO trains on the
 * CPU. */
#include <gtest/gtest.h>

#include <cstdlib>
#include <regex>
#include <string>
#include <vector>

#include "gpurnn.h"

namespace {

std::string expected_reason()
{
    const char *e = std::getenv("GPURNN_TEST_MODULE_EXPECT");
    return e ? e : "";
}

TEST(ModuleLoading, CudaIsUnavailableWithTheReasonAndAutoTrainsOnTheCpu)
{
    const std::string expect = expected_reason();
    ASSERT_FALSE(expect.empty()) << "run through ctest: GPURNN_TEST_MODULE_EXPECT is not set";
    if (expect == "driver-or-device" && gpurnn_backend_check(GPURNN_BACKEND_CUDA) == GPURNN_OK)
        GTEST_SKIP() << "skipped: a CUDA device is usable here, so its absence cannot be tested";
    const std::regex reason(expect == "driver-or-device" ? "no NVIDIA driver|no CUDA device" : expect);

    ASSERT_EQ(gpurnn_backend_check(GPURNN_BACKEND_CUDA), GPURNN_ERR_BACKEND_UNAVAILABLE);
    const std::string why = gpurnn_last_error();
    EXPECT_TRUE(std::regex_search(why, reason)) << "reason: " << why << "\nexpected to match: " << expect;
    EXPECT_EQ(why.rfind("CUDA backend: ", 0), 0u) << why;
    EXPECT_EQ(gpurnn_backend_available(GPURNN_BACKEND_CUDA), 0);
    /* the outcome is fixed for the process: asked again, the same answer */
    ASSERT_EQ(gpurnn_backend_check(GPURNN_BACKEND_CUDA), GPURNN_ERR_BACKEND_UNAVAILABLE);
    EXPECT_EQ(why, gpurnn_last_error());

    const char *module = std::getenv("GPURNN_CUDA_MODULE");
    const char *tried = gpurnn_backend_module(GPURNN_BACKEND_CUDA);
    if (module && tried) {
        EXPECT_STREQ(tried, module);
        EXPECT_NE(why.find(module), std::string::npos) << "the reason should name the module file: " << why;
    }
    EXPECT_EQ(gpurnn_backend_module(GPURNN_BACKEND_CPU), nullptr);

    gpurnn_config cfg;
    gpurnn_config_init(&cfg);
    cfg.vocab_size = 5;
    cfg.hidden_size = 8;
    cfg.batch_size = 2;
    cfg.max_seq_len = 6;
    cfg.backend = GPURNN_BACKEND_CUDA;
    gpurnn_model *m = nullptr;
    ASSERT_EQ(gpurnn_model_create(&cfg, &m), GPURNN_ERR_BACKEND_UNAVAILABLE);
    EXPECT_EQ(m, nullptr);
    EXPECT_NE(std::string(gpurnn_last_error()).find(why), std::string::npos)
        << "creating a CUDA model should fail with the same reason: " << gpurnn_last_error();

    cfg.backend = GPURNN_BACKEND_AUTO;
    ASSERT_EQ(gpurnn_model_create(&cfg, &m), GPURNN_OK) << gpurnn_last_error();
    EXPECT_EQ(gpurnn_model_backend(m), GPURNN_BACKEND_CPU);
    const std::vector<int32_t> inputs = {0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1};
    const std::vector<int32_t> targets = {1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1, 2};
    const gpurnn_optimizer adam = {GPURNN_ADAM, 0.05, 0, 0, 0, 0};
    double first = 0, loss = 0;
    for (int step = 0; step < 30; step++) {
        ASSERT_EQ(gpurnn_state_reset(m), GPURNN_OK);
        ASSERT_EQ(gpurnn_zero_grad(m), GPURNN_OK);
        ASSERT_EQ(gpurnn_forward(m, inputs.data(), targets.data(), 6, &loss), GPURNN_OK) << gpurnn_last_error();
        ASSERT_EQ(gpurnn_backward(m), GPURNN_OK);
        ASSERT_EQ(gpurnn_step(m, &adam), GPURNN_OK);
        if (step == 0) first = loss;
    }
    EXPECT_LT(loss, first / 2) << "AUTO's CPU model should learn the cycle";
    gpurnn_model_destroy(m);
}

} // namespace
