#!/usr/bin/env bash
# Package test steps, run by ctest (see CMakeLists.txt beside this file):
#
#   install    cmake --install the build tree into <work>/prefix, check what landed
#              there, and run the installed gpurnn-train-sequence (if examples are built)
#   cmake      configure and build consumer/ (find_package(gpurnn), gpurnn::gpurnn and
#              gpurnn::gpurnn_static) against <work>/prefix, and run both programs
#   pkgconfig  cc ... $(pkg-config --cflags --libs gpurnn) with PKG_CONFIG_PATH pointing
#              into <work>/prefix, and run the program with LD_LIBRARY_PATH set
#   nocuda     copy the installed library tree, without the CUDA module and then with a
#              module whose dependency cannot be loaded, and run the README's program
#              linked against the copy with an empty LD_LIBRARY_PATH: it must start and
#              train on the CPU, and gpurnn_backend_check must say why CUDA is unavailable
#   readme     check that README.md shows examples/readme_example.c verbatim, and that
#              .ci/run runs README.md's quick-start commands as written
#
# The program built is examples/readme_example.c, the one README.md shows.
# Exit status: 0 passed, 77 skipped (reason printed), anything else failed.
set -euo pipefail

step=$1
shift
build_dir= source_dir= work= libdir=lib bindir=bin cmake=cmake cc=cc pkg_config= config= broken_module=
while [ $# -gt 0 ]; do
    case $1 in
    --build-dir) build_dir=$2 ;;
    --source-dir) source_dir=$2 ;;
    --work-dir) work=$2 ;;
    --libdir) libdir=$2 ;;
    --bindir) bindir=$2 ;;
    --cmake) cmake=$2 ;;
    --cc) cc=$2 ;;
    --pkg-config) pkg_config=$2 ;;
    --config) config=$2 ;;
    --broken-module) broken_module=$2 ;;
    *) echo "run_package_test.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift 2
done

prefix=$work/prefix
example=$source_dir/examples/readme_example.c

run() { # prints a command, then runs it
    echo "+ $*"
    "$@"
}

case $step in
install)
    rm -rf "$work"
    mkdir -p "$work"
    run "$cmake" --install "$build_dir" --prefix "$prefix" ${config:+--config "$config"}
    for f in include/gpurnn.h "$libdir/libgpurnn.so" "$libdir/libgpurnn.a" \
        "$libdir/cmake/gpurnn/gpurnnConfig.cmake" "$libdir/cmake/gpurnn/gpurnnConfigVersion.cmake" \
        "$libdir/cmake/gpurnn/gpurnnTargets.cmake" "$libdir/pkgconfig/gpurnn.pc"; do
        if [ ! -e "$prefix/$f" ]; then
            echo "FAIL: the install did not create $prefix/$f" >&2
            exit 1
        fi
    done
    echo "installed: header, shared and static library, CMake package, pkg-config file"
    if [ -e "$build_dir/src/libgpurnn_cuda.so" ]; then
        if [ ! -e "$prefix/$libdir/libgpurnn_cuda.so" ]; then
            echo "FAIL: the CUDA module was built but not installed beside libgpurnn" >&2
            exit 1
        fi
        echo "installed: the CUDA module $libdir/libgpurnn_cuda.so"
    fi
    bash "$source_dir/tests/module/check_no_cuda_links.sh" "$prefix/$libdir/libgpurnn.so" "$prefix/$libdir/libgpurnn.a"
    trainer=$prefix/$bindir/gpurnn-train-sequence
    if [ -x "$trainer" ]; then
        # Runs from the prefix with no LD_LIBRARY_PATH: its RPATH must find the library.
        (cd "$work" && run env -u LD_LIBRARY_PATH "$trainer" --backend cpu --steps 30 \
            --checkpoint "$work/installed-example.ckpt")
    else
        echo "(no installed gpurnn-train-sequence: examples not built)"
    fi
    ;;
cmake)
    run "$cmake" -S "$source_dir/tests/package/consumer" -B "$work/consumer-build" \
        -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$prefix" -DGPURNN_EXPECTED_PREFIX="$prefix" \
        -DGPURNN_CONSUMER_SOURCE="$example"
    run "$cmake" --build "$work/consumer-build"
    run "$work/consumer-build/readme_example"
    run "$work/consumer-build/readme_example_static"
    ;;
pkgconfig)
    if [ -z "$pkg_config" ]; then
        echo "skipped: pkg-config is not installed (apt-get install pkg-config)"
        exit 77
    fi
    export PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig
    echo "+ PKG_CONFIG_PATH=$PKG_CONFIG_PATH $pkg_config --cflags --libs gpurnn"
    flags=$("$pkg_config" --cflags --libs gpurnn)
    echo "$flags"
    mkdir -p "$work/pkgconfig-build"
    # shellcheck disable=SC2086 # the flags are words
    run "$cc" -std=c11 -Wall -Wextra -Werror -o "$work/pkgconfig-build/readme_example" "$example" $flags
    LD_LIBRARY_PATH=$prefix/$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export LD_LIBRARY_PATH
    echo "+ LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    run "$work/pkgconfig-build/readme_example"
    # It must have run against the installed copy, not one found elsewhere.
    if command -v ldd >/dev/null; then
        lib=$(ldd "$work/pkgconfig-build/readme_example" | awk '/libgpurnn/ {print $3}')
        case $(readlink -f "$lib") in
        "$(readlink -f "$prefix")"/*) echo "linked at run time: $lib" ;;
        *) echo "FAIL: the program loaded libgpurnn from '$lib', not from $prefix" >&2; exit 1 ;;
        esac
    fi
    ;;
nocuda)
    copy=$work/nocuda
    rm -rf "$copy"
    mkdir -p "$copy/build"
    cp -a "$prefix/." "$copy/"
    rm -f "$copy/$libdir/libgpurnn_cuda.so"
    for program in readme_example backend_report; do
        src=$example
        [ $program = backend_report ] && src=$source_dir/tests/package/backend_report.c
        # shellcheck disable=SC2086 # the flags are words
        run "$cc" -std=c11 -Wall -Wextra -Werror -o "$copy/build/$program" "$src" -I"$copy/include" \
            -L"$copy/$libdir" -Wl,-rpath,"$copy/$libdir" -lgpurnn
    done
    check() { # what: the library copy as it is now must train on the CPU and say why not CUDA
        local what=$1 expect=$2 report
        echo "-- $what"
        run env LD_LIBRARY_PATH= GPURNN_CUDA_MODULE= "$copy/build/readme_example" | tee "$copy/out.txt"
        grep -q " on CPU: " "$copy/out.txt" || { echo "FAIL ($what): did not train on the CPU" >&2; exit 1; }
        report=$(env LD_LIBRARY_PATH= GPURNN_CUDA_MODULE= "$copy/build/backend_report")
        echo "$report"
        if ! echo "$report" | grep -Eq "$expect"; then
            echo "FAIL ($what): expected the reason to match: $expect" >&2
            exit 1
        fi
    }
    check "no CUDA module beside the library" "CUDA unavailable: CUDA backend: module libgpurnn_cuda.so not found"
    if [ -n "$broken_module" ]; then
        cp "$broken_module" "$copy/$libdir/libgpurnn_cuda.so"
        check "a CUDA module whose dependency cannot be loaded" \
            "cannot load module $copy/$libdir/libgpurnn_cuda.so: libgpurnn_test_phantom.so: cannot open shared object file"
    fi
    ;;
readme)
    # The fenced C block that follows the "readme-example" marker in README.md.
    shown=$(awk '/<!-- readme-example:/ { m = 1; next }
                 m == 1 && /^```c$/ { m = 2; next }
                 m == 2 && /^```$/ { exit }
                 m == 2 { print }' "$source_dir/README.md")
    if [ -z "$shown" ]; then
        echo "FAIL: README.md has no readme-example block" >&2
        exit 1
    fi
    if ! diff -u "$example" <(printf '%s\n' "$shown"); then
        echo "FAIL: README.md's example differs from examples/readme_example.c (diff above)" >&2
        exit 1
    fi
    echo "README.md shows examples/readme_example.c verbatim"
    # CI must run the quick-start commands as README.md gives them.
    if [ -f "$source_dir/.ci/run" ]; then
        grep '^apt-get update && ' "$source_dir/README.md" | while IFS= read -r line; do
            if ! grep -qF -- "$line" "$source_dir/.ci/run"; then
                echo "FAIL: .ci/run does not run README.md's command: $line" >&2
                exit 1
            fi
        done
        echo ".ci/run runs README.md's quick-start commands"
    fi
    ;;
*)
    echo "run_package_test.sh: unknown step '$step'" >&2
    exit 2
    ;;
esac
echo "package.$step: passed"
