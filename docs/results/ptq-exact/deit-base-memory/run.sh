#!/usr/bin/env bash
# Peak memory of `vitq quantize --method adfq` on DeiT-Base shapes (issue 18). Writes into ${1:-/tmp/deit-base-memory}.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"; root="$here/../../../.."
out=${1:-/tmp/deit-base-memory}; mkdir -p "$out"
/usr/bin/python3 "$here/make_model.py" "$out"
"$root/vitq" synthesize --model "$out/deit_base" --method gaussian --count 256 --out "$out/calib256.safetensors" --overwrite
/usr/bin/time -v "$root/vitq" quantize --model "$out/deit_base" --method adfq --iters 2 --wbits 4 --abits 4 \
  --calib "$out/calib256.safetensors" --calib-size 256 --dataset folder:"$out/imgs" \
  --out "$out/q.safetensors" --overwrite --json > "$out/quantize.json" 2> "$out/quantize.log"
grep -E "Maximum resident|Elapsed" "$out/quantize.log"
