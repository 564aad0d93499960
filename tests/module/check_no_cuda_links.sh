#!/usr/bin/env bash
# check_no_cuda_links.sh LIBGPURNN_SO LIBGPURNN_A: neither may need a CUDA library, so that
# a program linked with libgpurnn starts on any machine (the CUDA backend is the module
# libgpurnn_cuda.so, loaded at run time).
set -euo pipefail
shared=$1 static=$2
cuda='cuda|cublas|cudnn|nvrtc|nccl'
needed=$(readelf -d "$shared" | awk '/\(NEEDED\)/ {print $NF}')
echo "libgpurnn.so needs: $(echo "$needed" | tr -d '[]' | tr '\n' ' ')"
if echo "$needed" | grep -Eiq "$cuda"; then
    echo "FAIL: $shared needs a CUDA library" >&2
    exit 1
fi
undefined=$(nm -u "$static" | awk '{print $NF}' | sort -u)
if bad=$(echo "$undefined" | grep -E '^(cuda|cublas|cudnn|__cuda)'); then
    echo "FAIL: $static refers to CUDA symbols: $bad" >&2
    exit 1
fi
if ldd "$shared" | grep -Eiq "$cuda"; then
    echo "FAIL: ldd shows a CUDA library loaded with $shared" >&2
    exit 1
fi
echo "libgpurnn.so and libgpurnn.a link no CUDA library"
