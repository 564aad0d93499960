#!/usr/bin/env bash
# expect_caught.sh BUG REGEX -- COMMAND...: passes when COMMAND (a CUDA test run against a
# module with bug BUG planted) fails AND its output matches REGEX (how the bug must show:
# an emulator diagnostic, a failed comparison with the CPU backend, a cuBLAS error).
set -uo pipefail
bug=$1 regex=$2
shift 3
out=$("$@" 2>&1)
status=$?
if [ $status -eq 0 ]; then
    printf '%s\n' "$out" | tail -20
    echo "MISSED: planted bug $bug: the tests passed with it" >&2
    exit 1
fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then
    printf '%s\n' "$out" | tail -40
    echo "MISSED: planted bug $bug: the run failed (status $status) but not as expected ($regex)" >&2
    exit 1
fi
echo "caught: planted bug $bug (status $status):"
printf '%s\n' "$out" | grep -E -m 3 -- "$regex"
