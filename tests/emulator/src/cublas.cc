/* cuBLAS on CBLAS. Every call is validated as cuBLAS documents it (status codes in the
 * real order of checks: handle, then the enums and sizes), each operand's column-major
 * extent must lie inside one device allocation (a fatal diagnostic otherwise), host-mode
 * alpha/beta are read at the call, and the operation is queued on the handle's stream,
 * where it runs as cblas_?gemm/?gemv(CblasColMajor, ...). Results are CBLAS's, not
 * cuBLAS's (summation order, no TF32). */
#include <cblas.h>
#include <string.h>

#include <mutex>
#include <set>

#include "cublas_v2.h"
#include "internal.h"

struct cublasContext {
    cudaStream_t stream = nullptr;
    void *workspace = nullptr;
    size_t workspace_bytes = 0;
    cublasPointerMode_t pointer_mode = CUBLAS_POINTER_MODE_HOST;
};

using namespace gpurnn_emu::detail;

namespace {

std::mutex g_handles_mutex;
std::set<const cublasContext *> g_handles;

bool valid_handle(cublasHandle_t handle, const char *call)
{
    if (handle == nullptr) return false;
    std::lock_guard<std::mutex> lock(g_handles_mutex);
    if (g_handles.count(handle)) return true;
    report("%s: handle %p is not a live cuBLAS handle (destroyed, or never created)", call, (void *)handle);
    return false;
}

bool valid_op(cublasOperation_t op) { return op == CUBLAS_OP_N || op == CUBLAS_OP_T || op == CUBLAS_OP_C; }

/* Fails with a diagnostic unless the column-major matrix (rows x cols, leading dimension
 * ld) at p lies inside one device allocation. */
void check_matrix(const char *call, const char *name, const void *p, int rows, int cols, int ld, size_t elem)
{
    if (rows == 0 || cols == 0) return;
    size_t elements = (size_t)ld * (size_t)(cols - 1) + (size_t)rows;
    char what[160];
    snprintf(what, sizeof what, "%s operand %s (%d x %d, leading dimension %d, %zu elements)", call, name, rows, cols,
             ld, elements);
    if (check_device_range(p, elements * elem, what) != RangeCheck::kDevice)
        fatal("%s: %p is not device memory", what, p);
}

void check_vector(const char *call, const char *name, const void *p, int len, int inc, size_t elem)
{
    if (len == 0) return;
    size_t elements = 1 + (size_t)(len - 1) * (size_t)(inc < 0 ? -(long)inc : inc);
    char what[160];
    snprintf(what, sizeof what, "%s operand %s (%d elements, increment %d)", call, name, len, inc);
    if (check_device_range(p, elements * elem, what) != RangeCheck::kDevice)
        fatal("%s: %p is not device memory", what, p);
}

template <typename T>
bool read_scalar(cublasHandle_t handle, const char *call, const char *name, const T *p, T *out)
{
    if (p == nullptr) {
        report("%s: %s is null", call, name);
        return false;
    }
    if (handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE) return true; /* read when it runs */
    if (is_device_pointer(p))
        fatal("%s: %s (%p) is device memory but the handle's pointer mode is CUBLAS_POINTER_MODE_HOST", call, name,
              (const void *)p);
    *out = *p;
    return true;
}

CBLAS_TRANSPOSE to_cblas(cublasOperation_t op)
{
    return op == CUBLAS_OP_N ? CblasNoTrans : op == CUBLAS_OP_T ? CblasTrans : CblasConjTrans;
}

void sgemm_cblas(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc)
{
    cblas_sgemm(CblasColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
void sgemm_cblas(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, double alpha, const double *A, int lda,
                 const double *B, int ldb, double beta, double *C, int ldc)
{
    cblas_dgemm(CblasColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}
void gemv_cblas(CBLAS_TRANSPOSE t, int m, int n, float alpha, const float *A, int lda, const float *x, int incx,
                float beta, float *y, int incy)
{
    cblas_sgemv(CblasColMajor, t, m, n, alpha, A, lda, x, incx, beta, y, incy);
}
void gemv_cblas(CBLAS_TRANSPOSE t, int m, int n, double alpha, const double *A, int lda, const double *x, int incx,
                double beta, double *y, int incy)
{
    cblas_dgemv(CblasColMajor, t, m, n, alpha, A, lda, x, incx, beta, y, incy);
}

cublasStatus_t enqueue_on(cublasHandle_t handle, std::function<void()> work)
{
    cudaError_t err = enqueue(handle->stream, std::move(work));
    return err == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_EXECUTION_FAILED;
}

template <typename T>
cublasStatus_t gemm(const char *call, cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                    int n, int k, const T *alpha, const T *A, int lda, const T *B, int ldb, const T *beta, T *C,
                    int ldc)
{
    if (!valid_handle(handle, call)) return CUBLAS_STATUS_NOT_INITIALIZED;
    int a_rows = transa == CUBLAS_OP_N ? m : k, a_cols = transa == CUBLAS_OP_N ? k : m;
    int b_rows = transb == CUBLAS_OP_N ? k : n, b_cols = transb == CUBLAS_OP_N ? n : k;
    const char *bad = nullptr;
    if (!valid_op(transa)) bad = "transa is not a cublasOperation_t";
    else if (!valid_op(transb)) bad = "transb is not a cublasOperation_t";
    else if (m < 0 || n < 0 || k < 0) bad = "m, n or k is negative";
    else if (lda < (a_rows > 1 ? a_rows : 1)) bad = "lda < max(1, rows of A)";
    else if (ldb < (b_rows > 1 ? b_rows : 1)) bad = "ldb < max(1, rows of B)";
    else if (ldc < (m > 1 ? m : 1)) bad = "ldc < max(1, m)";
    if (bad) {
        report("%s(transa %d, transb %d, m %d, n %d, k %d, lda %d, ldb %d, ldc %d): %s (CUBLAS_STATUS_INVALID_VALUE)",
               call, (int)transa, (int)transb, m, n, k, lda, ldb, ldc, bad);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (cudaError_t sticky = runtime_entry()) {
        (void)sticky;
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    T a = 0, b = 0;
    if (!read_scalar(handle, call, "alpha", alpha, &a) || !read_scalar(handle, call, "beta", beta, &b))
        return CUBLAS_STATUS_INVALID_VALUE;
    check_matrix(call, "A", A, a_rows, a_cols, lda, sizeof(T));
    check_matrix(call, "B", B, b_rows, b_cols, ldb, sizeof(T));
    check_matrix(call, "C", C, m, n, ldc, sizeof(T));
    bool device_scalars = handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    CBLAS_TRANSPOSE ta = to_cblas(transa), tb = to_cblas(transb);
    return enqueue_on(handle, [=] {
        g_current_work = call;
        T av = device_scalars ? *alpha : a, bv = device_scalars ? *beta : b;
        sgemm_cblas(ta, tb, m, n, k, av, A, lda, B, ldb, bv, C, ldc);
        g_current_work = "device work";
    });
}

template <typename T>
cublasStatus_t gemv(const char *call, cublasHandle_t handle, cublasOperation_t trans, int m, int n, const T *alpha,
                    const T *A, int lda, const T *x, int incx, const T *beta, T *y, int incy)
{
    if (!valid_handle(handle, call)) return CUBLAS_STATUS_NOT_INITIALIZED;
    const char *bad = nullptr;
    if (!valid_op(trans)) bad = "trans is not a cublasOperation_t";
    else if (m < 0 || n < 0) bad = "m or n is negative";
    else if (lda < (m > 1 ? m : 1)) bad = "lda < max(1, m)";
    else if (incx == 0) bad = "incx is 0";
    else if (incy == 0) bad = "incy is 0";
    if (bad) {
        report("%s(trans %d, m %d, n %d, lda %d, incx %d, incy %d): %s (CUBLAS_STATUS_INVALID_VALUE)", call,
               (int)trans, m, n, lda, incx, incy, bad);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    if (runtime_entry() != cudaSuccess) return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m == 0 || n == 0) return CUBLAS_STATUS_SUCCESS;
    T a = 0, b = 0;
    if (!read_scalar(handle, call, "alpha", alpha, &a) || !read_scalar(handle, call, "beta", beta, &b))
        return CUBLAS_STATUS_INVALID_VALUE;
    int x_len = trans == CUBLAS_OP_N ? n : m, y_len = trans == CUBLAS_OP_N ? m : n;
    check_matrix(call, "A", A, m, n, lda, sizeof(T));
    check_vector(call, "x", x, x_len, incx, sizeof(T));
    check_vector(call, "y", y, y_len, incy, sizeof(T));
    bool device_scalars = handle->pointer_mode == CUBLAS_POINTER_MODE_DEVICE;
    CBLAS_TRANSPOSE t = to_cblas(trans);
    return enqueue_on(handle, [=] {
        g_current_work = call;
        T av = device_scalars ? *alpha : a, bv = device_scalars ? *beta : b;
        gemv_cblas(t, m, n, av, A, lda, x, incx, bv, y, incy);
        g_current_work = "device work";
    });
}

} // namespace

extern "C" cublasStatus_t cublasCreate(cublasHandle_t *handle)
{
    if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    if (runtime_entry() != cudaSuccess) return CUBLAS_STATUS_NOT_INITIALIZED;
    cublasContext *h = new cublasContext;
    std::lock_guard<std::mutex> lock(g_handles_mutex);
    g_handles.insert(h);
    *handle = h;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasDestroy(cublasHandle_t handle)
{
    if (!valid_handle(handle, "cublasDestroy")) return CUBLAS_STATUS_NOT_INITIALIZED;
    /* The real cublasDestroy synchronises: queued operations still use the handle's
     * workspace. */
    (void)synchronize_device("cublasDestroy");
    std::lock_guard<std::mutex> lock(g_handles_mutex);
    g_handles.erase(handle);
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream)
{
    if (!valid_handle(handle, "cublasSetStream")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!valid_stream(stream)) {
        report("cublasSetStream: stream %p is not a live stream", (void *)stream);
        return CUBLAS_STATUS_INVALID_VALUE;
    }
    handle->stream = stream;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasGetStream(cublasHandle_t handle, cudaStream_t *stream)
{
    if (!valid_handle(handle, "cublasGetStream")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (stream == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *stream = handle->stream;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSetWorkspace(cublasHandle_t handle, void *workspace, size_t workspace_bytes)
{
    if (!valid_handle(handle, "cublasSetWorkspace")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (workspace_bytes > 0) {
        if (workspace == nullptr || ((uintptr_t)workspace % 256) != 0) {
            report("cublasSetWorkspace: workspace %p must be a non-null, 256-byte aligned device pointer", workspace);
            return CUBLAS_STATUS_INVALID_VALUE;
        }
        if (check_device_range(workspace, workspace_bytes, "cublasSetWorkspace workspace") != RangeCheck::kDevice)
            fatal("cublasSetWorkspace: workspace %p (%zu bytes) is not device memory", workspace, workspace_bytes);
    }
    handle->workspace = workspace;
    handle->workspace_bytes = workspace_bytes;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSetPointerMode(cublasHandle_t handle, cublasPointerMode_t mode)
{
    if (!valid_handle(handle, "cublasSetPointerMode")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode != CUBLAS_POINTER_MODE_HOST && mode != CUBLAS_POINTER_MODE_DEVICE) return CUBLAS_STATUS_INVALID_VALUE;
    handle->pointer_mode = mode;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasGetPointerMode(cublasHandle_t handle, cublasPointerMode_t *mode)
{
    if (!valid_handle(handle, "cublasGetPointerMode")) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->pointer_mode;
    return CUBLAS_STATUS_SUCCESS;
}

extern "C" cublasStatus_t cublasSgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                      int n, int k, const float *alpha, const float *A, int lda, const float *B,
                                      int ldb, const float *beta, float *C, int ldc)
{
    return gemm("cublasSgemm", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

extern "C" cublasStatus_t cublasDgemm(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                                      int n, int k, const double *alpha, const double *A, int lda, const double *B,
                                      int ldb, const double *beta, double *C, int ldc)
{
    return gemm("cublasDgemm", handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

extern "C" cublasStatus_t cublasSgemv(cublasHandle_t handle, cublasOperation_t trans, int m, int n, const float *alpha,
                                      const float *A, int lda, const float *x, int incx, const float *beta, float *y,
                                      int incy)
{
    return gemv("cublasSgemv", handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy);
}

extern "C" cublasStatus_t cublasDgemv(cublasHandle_t handle, cublasOperation_t trans, int m, int n,
                                      const double *alpha, const double *A, int lda, const double *x, int incx,
                                      const double *beta, double *y, int incy)
{
    return gemv("cublasDgemv", handle, trans, m, n, alpha, A, lda, x, incx, beta, y, incy);
}
