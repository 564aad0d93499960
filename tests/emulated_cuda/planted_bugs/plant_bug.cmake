# cmake -DBUG=<name> -DSOURCE_DIR=<repo>/src/cuda -DOUTPUT_DIR=<dir> -P plant_bug.cmake
#
# Copies the CUDA backend's sources into OUTPUT_DIR and plants one known bug in the copy,
# the kind the device emulator exists to catch. Each replacement must match exactly once,
# so that a change to the backend that moves the text fails here loudly instead of
# planting nothing.
# Each bug: the file, the text to find and its replacement (bracket arguments, so that
# the C text's semicolons stay text).
if(BUG STREQUAL "index_off_by_one")
  # an index off by one: the thread one past the last element also writes
  set(file kernels.cuh)
  set(from [==[    if (k >= (size_t)B * H) return;]==])
  set(to [==[    if (k > (size_t)B * H) return;]==])
elseif(BUG STREQUAL "missing_barrier")
  # a barrier that matters: warp 0 reads the partial sums before the other warps wrote them
  set(file kernels.cuh)
  set(from [==[    if (lane == 0) scratch[warp] = value;
    __syncthreads();
    if (warp == 0) {
        value = lane < kThreads / 32 ? scratch[lane] : A(0);]==])
  set(to [==[    if (lane == 0) scratch[warp] = value;
    if (warp == 0) {
        value = lane < kThreads / 32 ? scratch[lane] : A(0);]==])
elseif(BUG STREQUAL "host_reads_device_memory")
  # host code reading device memory (the loss) instead of its pinned copy
  set(file cuda_backend.cu)
  set(from [==[    double total = m->host_scalars[0];]==])
  set(to [==[    double total = m->scalars[0];]==])
elseif(BUG STREQUAL "kernel_reads_out_of_bounds")
  # a kernel reading far past the end of its input
  set(file kernels.cuh)
  set(from [==[threadIdx.x; i < n; i += (size_t)kReduceBlocks * kThreads)]==])
  set(to [==[threadIdx.x; i < n + (size_t)kReduceBlocks * kThreads; i += (size_t)kReduceBlocks * kThreads)]==])
elseif(BUG STREQUAL "wrong_cublas_transpose")
  # the wrong cuBLAS transpose for the output layer: h Why instead of h Why^T
  set(file cuda_backend.cu)
  set(from [==[    return gemm_rm<T>(m->blas, false, true, rows, m->V, m->H,]==])
  set(to [==[    return gemm_rm<T>(m->blas, false, false, rows, m->V, m->H,]==])
else()
  message(FATAL_ERROR "no planted bug named ${BUG}")
endif()

file(MAKE_DIRECTORY ${OUTPUT_DIR})
foreach(source cuda_backend.cu kernels.cuh launch.cuh cuda_check.h cuda_backend.h)
  configure_file(${SOURCE_DIR}/${source} ${OUTPUT_DIR}/${source} COPYONLY)
endforeach()
file(READ ${OUTPUT_DIR}/${file} text)
string(FIND "${text}" "${from}" first)
string(FIND "${text}" "${from}" last REVERSE)
if(first EQUAL -1 OR NOT first EQUAL last)
  message(FATAL_ERROR "planted bug ${BUG}: the text to replace is not in ${file} exactly once")
endif()
string(REPLACE "${from}" "${to}" text "${text}")
file(WRITE ${OUTPUT_DIR}/${file} "${text}")
