#!/usr/bin/env bash
# Deployment table: each checkpoint in the simulation, the integer engine and ONNX Runtime, full test set.
set -u
V="${VITQ:-./vitq}"
D=${1:-out/deploy}; mkdir -p $D

q() { name=$1; shift; [ -f $D/$name.safetensors ] || $V quantize "$@" --calib-size 256 --limit 100 --threads 1 --out $D/$name.safetensors --json > $D/$name.quant.json 2> $D/$name.quant.log; }
q minmax-w8a8 --method minmax --wbits 8 --abits 8
q percentile-w8a8 --method percentile --wbits 8 --abits 8
q minmax-w4a4 --method minmax --wbits 4 --abits 4
q percentile-w4a4 --method percentile --wbits 4 --abits 4
q adfq-w4a4 --method adfq --wbits 4 --abits 4 --iters 100
q mimiq-w4a4 --method mimiq --wbits 4 --abits 4 --data fashion-mnist --data-size 1024 --epochs 1
$V export --out $D/float.onnx --overwrite --json > $D/float.export.json 2>/dev/null
$V eval --engine onnx --model $D/float.onnx --threads 1 --json > $D/float.onnx.json 2> $D/float.onnx.log
$V eval --threads 1 --json > $D/float.sim.json 2> $D/float.sim.log
for n in minmax-w8a8 percentile-w8a8 minmax-w4a4 percentile-w4a4 adfq-w4a4 mimiq-w4a4; do
  $V export --model $D/$n.safetensors --out $D/$n.onnx --overwrite --json > $D/$n.export.json 2> $D/$n.export.log
  $V eval --engine onnx --model $D/$n.onnx --agree-with $D/$n.safetensors --threads 1 --json > $D/$n.onnx.json 2> $D/$n.onnx.log
  $V eval --engine int8 --model $D/$n.safetensors --threads 1 --json > $D/$n.int8.json 2> $D/$n.int8.log
  echo "$(date +%T) $n done" >> $D/progress.log
done
echo finished >> $D/progress.log
