/* The float32 CPU backend's tanh (src/cpu/fast_tanh.h) against float64 tanh: at most 6
 * float ulps anywhere, exact at 0 and in saturation, odd, and NaN in gives NaN out (a
 * fault must stay visible to the loss check). Built twice, as the backend is: baseline
 * x86-64 and AVX2 + FMA (gpurnn_internal_tests_avx2, skipped on a CPU without them). */
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu/fast_tanh.h"

namespace {

class FastTanh : public ::testing::Test {
protected:
    void SetUp() override
    {
#if defined(__AVX2__) && defined(__FMA__)
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma"))
            GTEST_SKIP() << "skipped: this CPU has no AVX2 + FMA (the library uses the baseline build here)";
#endif
    }
};

double ulps(float got, double want)
{
    float rounded = (float)want;
    float step = std::nextafter(std::fabs(rounded), std::numeric_limits<float>::infinity()) - std::fabs(rounded);
    return std::fabs((double)got - want) / step;
}

TEST_F(FastTanh, WithinSixUlpsOfFloat64Tanh)
{
    double worst = 0;
    float worst_x = 0;
    /* Every 61st positive float below infinity, and its negative. */
    for (uint32_t bits = 0; bits < 0x7f800000u; bits += 61) {
        float x;
        std::memcpy(&x, &bits, sizeof x);
        for (float v : {x, -x}) {
            double e = ulps(gpurnn_fast_tanhf(v), std::tanh((double)v));
            if (e > worst) {
                worst = e;
                worst_x = v;
            }
        }
    }
    EXPECT_LE(worst, 6.0) << "at x = " << worst_x;
}

TEST_F(FastTanh, SpecialValues)
{
    EXPECT_EQ(0.0f, gpurnn_fast_tanhf(0.0f));
    EXPECT_EQ(1.0f, gpurnn_fast_tanhf(20.0f));
    EXPECT_EQ(-1.0f, gpurnn_fast_tanhf(-20.0f));
    EXPECT_EQ(1.0f, gpurnn_fast_tanhf(std::numeric_limits<float>::infinity()));
    EXPECT_EQ(-1.0f, gpurnn_fast_tanhf(-std::numeric_limits<float>::infinity()));
    EXPECT_TRUE(std::isnan(gpurnn_fast_tanhf(std::numeric_limits<float>::quiet_NaN())));
    for (float x : {1e-30f, 0.1f, 0.2499f, 0.25f, 0.7f, 3.0f, 8.9f})
        EXPECT_EQ(-gpurnn_fast_tanhf(x), gpurnn_fast_tanhf(-x)) << x;
}

TEST_F(FastTanh, SoftmaxExpWithinTwoUlpsOfFloat64Exp)
{
    double worst = 0;
    float worst_x = 0;
    /* every 61st float in [-87, 0) (bits 0x80000000 up to -87's), and some just above 0 */
    uint32_t bits_87;
    const float minus_87 = -87.0f;
    std::memcpy(&bits_87, &minus_87, sizeof bits_87);
    std::vector<float> xs = {0x1p-24f, 0x1p-20f, 1e-7f};
    for (uint32_t bits = 0x80000001u; bits < bits_87; bits += 61) {
        float x;
        std::memcpy(&x, &bits, sizeof x);
        xs.push_back(x);
    }
    for (float x : xs) {
        double e = ulps(gpurnn_exp_nonpositive_f32(x), std::exp((double)x));
        if (e > worst) {
            worst = e;
            worst_x = x;
        }
    }
    EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
    EXPECT_EQ(1.0f, gpurnn_exp_nonpositive_f32(0.0f));
    EXPECT_EQ(0.0f, gpurnn_exp_nonpositive_f32(-88.0f));
    EXPECT_EQ(0.0f, gpurnn_exp_nonpositive_f32(-std::numeric_limits<float>::infinity()));
    EXPECT_TRUE(std::isnan(gpurnn_exp_nonpositive_f32(std::numeric_limits<float>::quiet_NaN())));
}

}  // namespace
