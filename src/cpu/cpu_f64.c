/* The CPU backend in float64. */
#include <cblas.h>

#define REAL double
#ifndef SFX
#define SFX f64 /* cpu_f64_avx2.c compiles this file again as f64_avx2 */
#endif
#define CBLAS_GEMM cblas_dgemm
#define CBLAS_GEMV cblas_dgemv
#define TANH tanh
#define SIGMOID(x) (1.0 / (1.0 + exp(-(x))))
#define EXP_NONPOSITIVE exp
#define FN_SGD gpurnn_sgd_update_f64
#define FN_ADAGRAD gpurnn_adagrad_update_f64
#define FN_ADAM gpurnn_adam_update_f64
#define FN_TANH_BACKWARD gpurnn_tanh_backward_f64
#include "cpu_impl.h"
