# convert.sed — rewrites CUDA C++ (ops_cuda.cu) for the bft CUDA emulator:
#   k<<<grid, block, smem, stream>>>(args)  ->  emu_launch(emu_cfg(grid, block, smem, stream), "k", k, args)
#   extern __shared__ T name[];               ->  T *name = (T *)emu_dyn_smem();
# A launch must have its <<<...>>>( on one line; the Makefile fails the build
# when a "<<<" survives.
s/([A-Za-z_][A-Za-z0-9_]*(<[A-Za-z0-9_ ]+>)?)<<<(.*)>>>\(/emu_launch(emu_cfg(\3), "\1", \1, /
s/extern __shared__ ([A-Za-z_][A-Za-z0-9_ ]*[A-Za-z0-9_]) ([A-Za-z_][A-Za-z0-9_]*)\[\];/\1 *\2 = (\1 *)emu_dyn_smem();/
