# Finds a CBLAS for the CPU backend and defines the imported target gpurnn_blas.
# The OpenMP build of OpenBLAS comes first: its threads are libgomp's threads, so the
# BLAS calls and the backend's own OpenMP loops share one pool instead of fighting over
# the cores (the pthread build keeps its own spinning threads beside OpenMP's).
set(_gpurnn_blas_arch_dir /usr/lib/${CMAKE_LIBRARY_ARCHITECTURE})
find_package(OpenBLAS CONFIG QUIET
             PATHS ${_gpurnn_blas_arch_dir}/openblas-openmp/cmake/openblas NO_DEFAULT_PATH)
if(NOT OpenBLAS_FOUND)
  find_package(OpenBLAS CONFIG QUIET)
endif()
if(OpenBLAS_FOUND)
  add_library(gpurnn_blas INTERFACE IMPORTED)
  target_include_directories(gpurnn_blas INTERFACE ${OpenBLAS_INCLUDE_DIRS})
  target_link_libraries(gpurnn_blas INTERFACE ${OpenBLAS_LIBRARIES})
  set(GPURNN_BLAS_DESCRIPTION "OpenBLAS ${OpenBLAS_VERSION} (${OpenBLAS_LIBRARIES})")
else()
  message(FATAL_ERROR "libgpurnn needs OpenBLAS with CBLAS: install Debian's libopenblas-openmp-dev "
                      "(or libopenblas-dev), e.g. 'apt-get install libopenblas-openmp-dev'.")
endif()
message(STATUS "libgpurnn CPU backend BLAS: ${GPURNN_BLAS_DESCRIPTION}")
