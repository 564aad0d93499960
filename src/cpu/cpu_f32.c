/* The CPU backend in float32. */
#include <cblas.h>

#include "fast_tanh.h"

#define REAL float
#ifndef SFX
#define SFX f32 /* cpu_f32_avx2.c compiles this file again as f32_avx2 */
#endif
#define CBLAS_GEMM cblas_sgemm
#define CBLAS_GEMV cblas_sgemv
#define TANH gpurnn_fast_tanhf
/* through tanh: vectorises as TANH does, to its accuracy */
#define SIGMOID(x) (0.5f + 0.5f * gpurnn_fast_tanhf(0.5f * (x)))
#define EXP_NONPOSITIVE gpurnn_exp_nonpositive_f32
#define FN_SGD gpurnn_sgd_update_f32
#define FN_ADAGRAD gpurnn_adagrad_update_f32
#define FN_ADAM gpurnn_adam_update_f32
#define FN_TANH_BACKWARD gpurnn_tanh_backward_f32
#include "cpu_impl.h"
