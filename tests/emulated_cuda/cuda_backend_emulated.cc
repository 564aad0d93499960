/* The CUDA backend's own source, unchanged, compiled by the host C++ compiler against the
 * device emulator's cuda_runtime.h and cublas_v2.h (tests/emulator/include). */
#include "cuda/cuda_backend.cu"
