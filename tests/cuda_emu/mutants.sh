#!/usr/bin/env bash
# mutants.sh — does the CUDA emulator catch real mistakes in ops_cuda.cu?
# Builds copies of ops_cuda.cu with one deliberate bug each (the kinds that
# pass every CPU test and only show on a GPU), runs build/tests/test_cuda
# against each in the emulator, and reports whether the bug was caught
# ("killed": test_cuda failed or the emulator faulted). Not part of the test
# suite (about a minute); needs `make unit` first.
#
# Usage: bash tests/cuda_emu/mutants.sh      Exit status 1 when a mutant survives.
set -uo pipefail
cd "$(dirname "$0")/../.."
W=build/emu-mutants
mkdir -p "$W"
[ -x build/tests/test_cuda ] && [ -f build/emu/emu.o ] || { echo "run make unit first"; exit 2; }
FLAGS="-std=c++17 -O2 -g -fPIC -w -U_FORTIFY_SOURCE -fno-strict-aliasing -fvisibility=hidden
       -DBFT_CUDA_MODULE -Itests/cuda_emu/include -Isrc/engine -Isrc/engine/cuda"
survived=0

# mutant NAME OLD NEW: replace the first OLD in ops_cuda.cu by NEW
mutant() {
    local name="$1" old="$2" new="$3"
    if ! OLD="$old" NEW="$new" awk 'BEGIN { RS = "^$"; o = ENVIRON["OLD"]; n = ENVIRON["NEW"] }
            { i = index($0, o); if (!i) exit 1; printf "%s%s%s", substr($0, 1, i - 1), n, substr($0, i + length(o)) }' \
            src/engine/cuda/ops_cuda.cu >"$W/$name.cu"; then
        echo "ERROR  $name: the code to mutate was not found (ops_cuda.cu changed: update mutants.sh)"
        survived=$((survived + 1))
        return
    fi
    sed -E -f tests/cuda_emu/convert.sed "$W/$name.cu" >"$W/$name.cpp"
    g++ $FLAGS -c "$W/$name.cpp" -o "$W/$name.o" && g++ -shared -o "$W/$name.so" "$W/$name.o" build/emu/emu.o -lopenblas -lpthread -lm \
        || { echo "ERROR  $name: does not compile"; survived=$((survived + 1)); return; }
    # (in a subshell that reports the crash to /dev/null and exits with its status)
    (BFT_CUDA_MODULE="$PWD/$W/$name.so" timeout 600 build/tests/test_cuda >"$W/$name.log" 2>&1; exit $?) 2>/dev/null
    local rc=$?
    if [ $rc -ne 0 ]; then
        echo "killed   $name (rc $rc): $(grep -m1 -E 'FAIL|bft CUDA emulator' "$W/$name.log" | cut -c1-150)"
    else
        echo "SURVIVED $name"
        survived=$((survived + 1))
    fi
}

mutant block_sum_missing_barrier \
'    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */' \
'    v = warp_sum(v);'
mutant colsum_missing_barrier \
'    s1[threadIdx.y][threadIdx.x] = acc1;
    __syncthreads();' \
'    s1[threadIdx.y][threadIdx.x] = acc1;'
mutant cls_attention_shared_too_small \
'size_t shm = (2 * (size_t)T + (size_t)(C / NH)) * sizeof(float);' \
'size_t shm = (2 * (size_t)T) * sizeof(float);'
mutant host_reads_device_memory \
'    for (int i = 0; i < n; i++)
        s += host[i];' \
'    for (int i = 0; i < n; i++)
        s += x[i];'
mutant gelu_overrun \
'__global__ void k_gelu(float *out, const float *inp, size_t n)
{' \
'__global__ void k_gelu(float *out, const float *inp, size_t n)
{ n += 300;'
mutant gemm_operands_swapped_wrong \
'    blas_ok(cublasGemmEx(G.blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                         M, K, &alpha, B, t, ldb, A, t, lda,' \
'    blas_ok(cublasGemmEx(G.blas, tB ? CUBLAS_OP_T : CUBLAS_OP_N, tA ? CUBLAS_OP_T : CUBLAS_OP_N, N,
                         M, K, &alpha, B, t, ldb, A, t, ldb,'
mutant colsum_grid_too_small \
'    k_colsum_final<<<(unsigned)((C + NT - 1) / NT), NT, 0, G.stream>>>(' \
'    k_colsum_final<<<(unsigned)(C / NT), NT, 0, G.stream>>>('
mutant adamw_mirror_not_updated \
'        if (mir)
            mir[i] = __float2bfloat16(pn);' \
'        (void)mir;'

# every row adds itself to its id's gradient (no first-occurrence owner): the
# right sum in an order that depends on the block schedule (a race on a GPU);
# only the determinism test (a second emulated schedule) can tell
mutant wte_grad_order_dependent \
'    int dup = 0;
    for (int q = threadIdx.x; q < r; q += blockDim.x)
        dup |= ids[q] == id;
    if (__syncthreads_or(dup))
        return;
    for (int c = threadIdx.x; c < C; c += blockDim.x) {
        float *dst = dwte + (size_t)id * C + c;
        float s = *dst;
        for (int q = r; q < N; q++)
            if (ids[q] == id)
                s += dx[(size_t)q * C + c];
        *dst = s;
    }' \
'    for (int c = threadIdx.x; c < C; c += blockDim.x)
        dwte[(size_t)id * C + c] += dx[(size_t)r * C + c];'

echo "$survived mutant(s) survived"
[ "$survived" -eq 0 ]
