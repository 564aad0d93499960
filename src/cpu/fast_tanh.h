/* tanh and the softmax's exp in float32 without a libm call per element: glibc's tanhf
 * (via expm1f) was a fifth of a min-char-rnn step, expf a twentieth. These are plain
 * arithmetic, so the loops that call them vectorise. Accuracy: within 6 float ulps over the whole range (the worst case is just
 * above 0.25, where the two formulas meet; tests/test_fast_tanh.cc checks it against
 * float64 tanh), far inside what float32 training needs; the float64 backend keeps libm's
 * tanh. */
#ifndef GPURNN_CPU_FAST_TANH_H
#define GPURNN_CPU_FAST_TANH_H

#include <stdint.h>
#include <string.h>

/* e^x for x in [-87, 88] (finite, normal results): 2^k e^r with k = round(x / ln 2),
 * |r| <= ln2 / 2, and a degree-7 Taylor polynomial for e^r (truncation below 1e-8
 * relative). */
static inline float gpurnn_exp_core_f32(float x)
{
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723e-6f;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float k = (x * log2e + round_magic) - round_magic;
    float r = (x - k * ln2_hi) - k * ln2_lo;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* e^x for the softmax's exponents, x <= 0 (a rounding's worth above 0 is fine): within 2
 * float ulps of e^x down to -87, 0 below (e^-87 is 1.6e-38: what it adds to a sum that
 * holds e^0 = 1 is nothing), NaN for NaN. Unlike expf it vectorises. */
static inline float gpurnn_exp_nonpositive_f32(float x)
{
    float e = gpurnn_exp_core_f32(x > -87.0f ? x : -87.0f);
    return x > -87.0f ? e : (x == x ? 0.0f : x);
}

static inline float gpurnn_fast_tanhf(float x)
{
    float a = x < 0 ? -x : x;
    /* Near 0, 1 - 2/(e^2a + 1) cancels: use the odd Taylor series (error < 1e-10 there). */
    float a2 = a * a;
    float series = -1382.0f / 155925;
    series = series * a2 + 62.0f / 2835;
    series = series * a2 - 17.0f / 315;
    series = series * a2 + 2.0f / 15;
    series = series * a2 - 1.0f / 3;
    series = a + a * a2 * series;
    /* Beyond 10, tanh rounds to 1 in float; clamping keeps e^2a finite. */
    float e = gpurnn_exp_core_f32(2.0f * (a < 10.0f ? a : 10.0f));
    float far = 1.0f - 2.0f / (e + 1.0f);
    float t = a < 0.25f ? series : far;
    return x < 0 ? -t : (x >= 0 ? t : x); /* NaN stays NaN, so numeric faults still show */
}

#endif
