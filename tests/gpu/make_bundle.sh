#!/usr/bin/env bash
# Build, on a machine WITHOUT a GPU (nvcc is enough), the binaries the GPU check
# needs, so that a GPU machine lacking bft's build dependencies (json-c, ICU,
# OpenBLAS, libcsv, pg_config) can still run tests/gpu/run_gpu_checks.sh:
#
#   bash tests/gpu/make_bundle.sh        → build/gpu-bundle/{bin,lib,data} (~45 MB)
#   then copy build/gpu-bundle to the GPU machine beside a checkout and run
#   bash tests/gpu/run_gpu_checks.sh there
#
# bin/bft-cli and bin/test_cuda are the portable USE_CUDA=1 build (any x86-64;
# the GPU host's CPU may differ from this one) with json-c, libcsv and the
# reference BLAS (Debian's libblas.a: small; the CPU side of these checks only
# runs tiny models, every GEMM of the GPU runs is cuBLAS) linked statically;
# ICU (libicuuc/libicudata 72) and libgfortran are copied into lib/ and found
# through RPATH $ORIGIN/../lib; bin/bft_cuda.so (the CUDA module the engine
# dlopen()s) needs cudart and cuBLAS 13 from the GPU machine's
# /usr/local/cuda/lib64 (or the nvidia-* pip packages next to PyTorch; the run
# script adds those to LD_LIBRARY_PATH). data/ holds the training CSV and the
# bert-base-cased vocabulary from $BFT_SHARED_DATA (see tests/lib/shared_data.sh),
# so that the GPU machine needs no copy of the shared data.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -x /usr/local/cuda/bin/nvcc ] || { echo "make_bundle: nvcc not found at /usr/local/cuda/bin/nvcc"; exit 1; }
BUILD=build/gpu
OUTB=build/gpu-bundle
source tests/lib/shared_data.sh
shared_data_need make_bundle topic_train.csv vocab/bert-base-cased-vocab.txt
make -s -j"$(nproc)" USE_CUDA=1 BUILD=$BUILD $BUILD/bft-cli $BUILD/bft_cuda.so
rm -rf "$OUTB"
mkdir -p "$OUTB/bin" "$OUTB/lib" "$OUTB/data"
CFLAGS="-std=c11 -O3 -g -Wall -Wextra -D_GNU_SOURCE -fno-math-errno -Isrc/engine $(pkg-config --cflags json-c icu-uc)"
# the engine asks OpenBLAS for one thread; the reference BLAS has no threads
echo 'void openblas_set_num_threads(int n) { (void)n; }' >"$BUILD/refblas_stub.c"
gcc -O2 -c -o "$BUILD/refblas_stub.o" "$BUILD/refblas_stub.c"
LIBS="$BUILD/refblas_stub.o /usr/lib/x86_64-linux-gnu/blas/libblas.a
      -Wl,-Bstatic -ljson-c -lcsv -Wl,-Bdynamic -licuuc -licudata -lgfortran -lm -lpthread
      -Wl,-rpath,\$ORIGIN/../lib"
# bft-cli: the CLI objects of the build above, relinked
gcc -o "$OUTB/bin/bft-cli" $BUILD/cli/*.o $BUILD/libbftengine.a $LIBS
gcc $CFLAGS -Itests/lib -o "$OUTB/bin/test_cuda" tests/engine/test_cuda.c $BUILD/libbftengine.a $LIBS
cp $BUILD/bft_cuda.so "$OUTB/bin/"
for l in libicuuc.so.72 libicudata.so.72 libgfortran.so.5 libquadmath.so.0; do
    cp -L "/usr/lib/x86_64-linux-gnu/$l" "$OUTB/lib/"
done
cp "$BFT_SHARED_DATA/topic_train.csv" "$OUTB/data/"
cp "$BFT_SHARED_DATA/vocab/bert-base-cased-vocab.txt" "$OUTB/data/"
strip --strip-debug "$OUTB/bin/"*
du -sh "$OUTB"
ldd "$OUTB/bin/bft-cli" "$OUTB/bin/bft_cuda.so" | sed 's/^/  /'
