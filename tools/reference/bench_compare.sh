#!/usr/bin/env bash
# Side-by-side throughput: vitq bench vs PyTorch 1.13 (Debian python3-torch), same architecture,
# batch and thread count, one after the other on this machine. Prints the ratios.
#   tools/reference/bench_compare.sh [threads]
set -euo pipefail
cd "$(dirname "$0")/../.."
threads=${1:-$(nproc)}
for spec in "vit_fmnist 64" "deit_tiny_patch16_224 8"; do
  set -- $spec
  ours=$(./vitq bench --arch "$1" --batch "$2" --threads "$threads" --iters 5 --json 2>/dev/null)
  torch=$(/usr/bin/python3 tools/reference/bench_torch.py --arch "$1" --batch "$2" --threads "$threads" --iters 5)
  python3 - "$ours" "$torch" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{o['architecture']} batch {o['batch']} threads {o['threads']} (ViTQuant GEMM: {o['gemm_backend']}; {t['framework']})")
for k in ("forward_img_per_s", "train_img_per_s", "input_grad_img_per_s"):
    print(f"  {k:22s} vitq {o[k]:9.1f}  torch {t[k]:9.1f}  ratio {o[k]/t[k]:5.2f}x")
print(f"  forward GFLOP/s (vitq) {o['forward_gflop_per_s']:.1f}; peak memory {o['peak_memory_mb']:.0f} MB; "
      f"train alloc {o['train_alloc_mb_per_step']:.1f} MB/step")
PY
done
