/* The element-wise math of the optimizers and the tanh derivative, written once for
 * every backend: the CPU loops and the CUDA kernels call these, and the tests check
 * them against the formulas in gpurnn.h. */
#ifndef GPURNN_UPDATE_MATH_H
#define GPURNN_UPDATE_MATH_H

#include "rng.h" /* GPURNN_HD */

/* One element of an optimizer update. p, s0, s1 are in/out (parameter, optimizer slots);
 * the new values are returned through them. Scalars are in the model's precision. */
#define GPURNN_DEFINE_UPDATE(real, suffix, sqrt_fn)                                                      \
    GPURNN_HD void gpurnn_sgd_update_##suffix(real *p, real *v, real g, real lr, real momentum)    \
    {                                                                                              \
        if (momentum != (real)0) {                                                                 \
            *v = momentum * *v + g;                                                                \
            *p -= lr * *v;                                                                         \
        } else {                                                                                   \
            *p -= lr * g;                                                                          \
        }                                                                                          \
    }                                                                                              \
    GPURNN_HD void gpurnn_adagrad_update_##suffix(real *p, real *mem, real g, real lr, real eps)   \
    {                                                                                              \
        *mem += g * g;                                                                             \
        *p -= lr * g / sqrt_fn(*mem + eps);                                                     \
    }                                                                                              \
    GPURNN_HD void gpurnn_adam_update_##suffix(real *p, real *m, real *v, real g, real lr,         \
                                               real beta1, real beta2, real eps, real bc1,         \
                                               real bc2)                                           \
    {                                                                                              \
        *m = beta1 * *m + ((real)1 - beta1) * g;                                                   \
        *v = beta2 * *v + ((real)1 - beta2) * g * g;                                               \
        real m_hat = *m / bc1;                                                                     \
        real v_hat = *v / bc2;                                                                     \
        *p -= lr * m_hat / (sqrt_fn(v_hat) + eps);                                              \
    }                                                                                              \
    /* dz = (1 - h^2) * (dh_out + dh_next): the fused tanh-derivative step */                      \
    GPURNN_HD real gpurnn_tanh_backward_##suffix(real h, real dh) { return ((real)1 - h * h) * dh; }

GPURNN_DEFINE_UPDATE(float, f32, sqrtf)
GPURNN_DEFINE_UPDATE(double, f64, sqrt)

#undef GPURNN_DEFINE_UPDATE

#endif
