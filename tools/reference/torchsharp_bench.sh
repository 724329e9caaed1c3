#!/usr/bin/env bash
# TorchSharp 0.107 / LibTorch 2.10 side of `make bench-compare` (tools/reference/TorchSharpBench): prints the
# same JSON as bench_torch.py. A benchmark anchor only: nothing in the library, the CLI or the tests uses it.
#   tools/reference/torchsharp_bench.sh --arch vit_fmnist --batch 64 --threads 2 --iters 5 [--attention sdpa|explicit]
# Exits 3 with one line on stderr where TorchSharp cannot be restored or loaded.
#
# Why the two steps below: TorchSharp's own native library, libLibTorchSharp.so, was built with GCC 13 and
# asks libstdc++ for version GLIBCXX_3.4.32, which Debian 12's libstdc++ (GCC 12) lacks, so the loader refuses
# it. It needs that version for one symbol only, std::ios_base_library_init, which GCC 13's <iostream>
# references so that the newer libstdc++ initialises the standard streams. So, in this build's own copy of the
# library (never the NuGet cache's), the requirement is marked weak (weaken_version.py: VER_FLG_WEAK in
# .gnu.version_r, which glibc's loader lets pass when the version is missing), and a preloaded shim
# (ios_init_shim.cpp) defines the symbol under that version, doing what GCC 12's ios_base::Init does.
# LibTorch's own libraries need nothing newer than Debian 12 has.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/TorchSharpBench"
out="$src/bin/Release/net10.0"
fail() { echo "torchsharp_bench: $*" >&2; exit 3; }
# Built every time (incremental): it also compiles our engine for --interleave.
dotnet build "$src/TorchSharpBench.csproj" -c Release -nologo -v q -clp:ErrorsOnly >&2 \
  || fail "could not build TorchSharpBench (is TorchSharp-cpu 0.107.0 served by the NuGet source?)"
native="$out/runtimes/linux-x64/native"
[ -f "$native/libLibTorchSharp.so" ] || fail "no $native/libLibTorchSharp.so after the build"
if ldd "$native/libLibTorchSharp.so" 2>&1 | grep -q "GLIBCXX_3.4.32.*not found"; then
  python3 "$src/weaken_version.py" "$native/libLibTorchSharp.so" GLIBCXX_3.4.32 || fail "could not patch libLibTorchSharp.so"
fi
shim="$out/libios_init_shim.so"
if [ ! -f "$shim" ] || [ "$src/ios_init_shim.cpp" -nt "$shim" ]; then
  printf 'GLIBCXX_3.4.32 { global: _ZSt21ios_base_library_initv; local: *; };\n' > "$out/ios_init_shim.map"
  g++ -O2 -shared -fPIC -Wl,--version-script="$out/ios_init_shim.map" -o "$shim" "$src/ios_init_shim.cpp" \
    || fail "could not build the libstdc++ shim (g++ missing?)"
fi
# LibTorch's OpenMP pool follows OMP_NUM_THREADS unless set_num_threads overrides it; keep both at --threads.
threads=2
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[$i]}" = "--threads" ] && threads="${args[$((i + 1))]}"; done
OMP_NUM_THREADS="$threads" LD_PRELOAD="$shim${LD_PRELOAD:+:$LD_PRELOAD}" dotnet "$out/TorchSharpBench.dll" "$@" \
  || fail "TorchSharp did not run (see above)"
