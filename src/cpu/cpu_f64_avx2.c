/* The CPU backend in float64 again, compiled with -mavx2 -mfma (src/CMakeLists.txt):
 * the library's own loops (tanh, softmax, optimizer, reductions) then use 256-bit vectors
 * and fused multiply-adds. cpu_backend.c chooses it at run time where the CPU has both. */
#define SFX f64_avx2
#include "cpu_f64.c"
