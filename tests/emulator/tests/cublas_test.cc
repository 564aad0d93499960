/* cuBLAS: argument validation, operand extents, and results against naive loops. */
#include <cublas_v2.h>

#include <vector>

#include "test_support.h"

namespace {

template <typename T>
T *to_device(const std::vector<T> &v)
{
    T *d = nullptr;
    EXPECT_EQ(cudaSuccess, cudaMalloc((void **)&d, v.size() * sizeof(T)));
    EXPECT_EQ(cudaSuccess, cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

template <typename T>
std::vector<T> to_host(const T *d, size_t n)
{
    std::vector<T> v(n);
    EXPECT_EQ(cudaSuccess, cudaMemcpy(v.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return v;
}

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *al,
                    const float *A, int lda, const float *B, int ldb, const float *be, float *C, int ldc)
{
    return cublasSgemm(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}
cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const double *al,
                    const double *A, int lda, const double *B, int ldb, const double *be, double *C, int ldc)
{
    return cublasDgemm(h, ta, tb, m, n, k, al, A, lda, B, ldb, be, C, ldc);
}
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t t, int m, int n, const float *al, const float *A, int lda,
                    const float *x, int incx, const float *be, float *y, int incy)
{
    return cublasSgemv(h, t, m, n, al, A, lda, x, incx, be, y, incy);
}
cublasStatus_t gemv(cublasHandle_t h, cublasOperation_t t, int m, int n, const double *al, const double *A, int lda,
                    const double *x, int incx, const double *be, double *y, int incy)
{
    return cublasDgemv(h, t, m, n, al, A, lda, x, incx, be, y, incy);
}

template <typename T>
void check_gemm(cublasHandle_t h)
{
    const int m = 7, n = 5, k = 6;
    for (auto ta : {CUBLAS_OP_N, CUBLAS_OP_T})
        for (auto tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
            int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
            int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
            int lda = a_rows + 2, ldb = b_rows + 1, ldc = m + 3;
            std::vector<T> A((size_t)lda * a_cols), B((size_t)ldb * b_cols), C((size_t)ldc * n);
            for (size_t i = 0; i < A.size(); i++) A[i] = (T)((i * 7) % 11) - 5;
            for (size_t i = 0; i < B.size(); i++) B[i] = (T)((i * 3) % 7) - 3;
            for (size_t i = 0; i < C.size(); i++) C[i] = (T)(i % 5);
            T alpha = 2, beta = -1;
            T *dA = to_device(A), *dB = to_device(B), *dC = to_device(C);
            ASSERT_EQ(CUBLAS_STATUS_SUCCESS, gemm(h, ta, tb, m, n, k, &alpha, dA, lda, dB, ldb, &beta, dC, ldc));
            cudaDeviceSynchronize(); /* the handle's stream does not sync with stream 0 */
            std::vector<T> got = to_host(dC, C.size());
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++) {
                    T s = 0;
                    for (int p = 0; p < k; p++) {
                        T a = ta == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda];
                        T b = tb == CUBLAS_OP_N ? B[p + (size_t)j * ldb] : B[j + (size_t)p * ldb];
                        s += a * b;
                    }
                    EXPECT_EQ(alpha * s + beta * C[i + (size_t)j * ldc], got[i + (size_t)j * ldc]);
                }
            cudaFree(dA);
            cudaFree(dB);
            cudaFree(dC);
        }
}

template <typename T>
void check_gemv(cublasHandle_t h)
{
    const int m = 6, n = 4, lda = 8;
    for (auto t : {CUBLAS_OP_N, CUBLAS_OP_T}) {
        int xl = t == CUBLAS_OP_N ? n : m, yl = t == CUBLAS_OP_N ? m : n;
        std::vector<T> A((size_t)lda * n), x((size_t)xl * 2), y((size_t)yl);
        for (size_t i = 0; i < A.size(); i++) A[i] = (T)((i * 5) % 9) - 4;
        for (size_t i = 0; i < x.size(); i++) x[i] = (T)(i % 4) - 1;
        for (size_t i = 0; i < y.size(); i++) y[i] = (T)i;
        T alpha = 3, beta = 2;
        T *dA = to_device(A), *dx = to_device(x), *dy = to_device(y);
        ASSERT_EQ(CUBLAS_STATUS_SUCCESS, gemv(h, t, m, n, &alpha, dA, lda, dx, 2, &beta, dy, 1));
        cudaDeviceSynchronize();
        std::vector<T> got = to_host(dy, y.size());
        for (int i = 0; i < yl; i++) {
            T s = 0;
            for (int p = 0; p < xl; p++) s += (t == CUBLAS_OP_N ? A[i + (size_t)p * lda] : A[p + (size_t)i * lda]) * x[2 * p];
            EXPECT_EQ(alpha * s + beta * y[i], got[i]);
        }
        cudaFree(dA);
        cudaFree(dx);
        cudaFree(dy);
    }
}

} // namespace

TEST_F(EmulatorTest, GemmAndGemvMatchNaiveLoops)
{
    cublasHandle_t h;
    ASSERT_EQ(CUBLAS_STATUS_SUCCESS, cublasCreate(&h));
    cudaStream_t s;
    CUDA_OK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    ASSERT_EQ(CUBLAS_STATUS_SUCCESS, cublasSetStream(h, s));
    check_gemm<float>(h);
    check_gemm<double>(h);
    check_gemv<float>(h);
    check_gemv<double>(h);
    cublasDestroy(h);
    cudaStreamDestroy(s);
}

TEST_F(EmulatorTest, CublasInvalidValues)
{
    cublasHandle_t h;
    ASSERT_EQ(CUBLAS_STATUS_SUCCESS, cublasCreate(&h));
    float *d, one = 1;
    CUDA_OK(cudaMalloc((void **)&d, 1024 * sizeof(float)));
    EXPECT_EQ(CUBLAS_STATUS_NOT_INITIALIZED, cublasSgemm(nullptr, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d, 2, d, 2, &one, d, 2));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 2, 2, &one, d, 2, d, 2, &one, d, 2));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 2, &one, d, 3, d, 2, &one, d, 4));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, 4, 2, 3, &one, d, 2, d, 3, &one, d, 4));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_T, 4, 2, 3, &one, d, 4, d, 1, &one, d, 4));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 4, 2, 3, &one, d, 4, d, 3, &one, d, 3));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemm(h, (cublasOperation_t)7, CUBLAS_OP_N, 2, 2, 2, &one, d, 2, d, 2, &one, d, 2));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemv(h, CUBLAS_OP_N, 4, 2, &one, d, 4, d, 0, &one, d, 1));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemv(h, CUBLAS_OP_N, 4, 2, &one, d, 4, d, 1, &one, d, 0));
    EXPECT_EQ(CUBLAS_STATUS_INVALID_VALUE, cublasSgemv(h, CUBLAS_OP_N, 4, 2, &one, d, 3, d, 1, &one, d, 1));
    /* quick return: nothing is checked past the sizes */
    EXPECT_EQ(CUBLAS_STATUS_SUCCESS, cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 0, 2, 2, &one, nullptr, 1, nullptr, 2, &one, nullptr, 1));
    cudaFree(d);
    cublasDestroy(h);
}

TEST_F(EmulatorTest, CublasOperandOutsideAllocationIsDiagnosed)
{
    EXPECT_DEATH(([] {
                     cublasHandle_t h;
                     cublasCreate(&h);
                     float *A, *B, *C, one = 1;
                     cudaMalloc((void **)&A, 16 * 16 * sizeof(float));
                     cudaMalloc((void **)&B, 16 * 16 * sizeof(float));
                     cudaMalloc((void **)&C, 16 * 15 * sizeof(float)); /* one column short */
                     cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, 16, 16, 16, &one, A, 16, B, 16, &one, C, 16);
                 })(),
                 "gpurnn-emu: error: cublasSgemm operand C \\(16 x 16, leading dimension 16, 256 elements\\): 1024 "
                 "bytes at offset 0 of device allocation #[0-9]+ \\(960 bytes.* run 64 bytes past its end");
}

TEST_F(EmulatorTest, CublasHostOperandIsDiagnosed)
{
    EXPECT_DEATH(([] {
                     cublasHandle_t h;
                     cublasCreate(&h);
                     static float host[64];
                     float one = 1, *y;
                     cudaMalloc((void **)&y, 8 * sizeof(float));
                     cublasSgemv(h, CUBLAS_OP_N, 8, 8, &one, host, 8, y, 1, &one, y, 1);
                 })(),
                 "gpurnn-emu: error: cublasSgemv operand A .* is not device memory");
}
