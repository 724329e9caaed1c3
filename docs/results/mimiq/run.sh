#!/usr/bin/env bash
# Issue 15 part 2: MimiQ synthesis ablations (augmentation, initialisation) under the lead's fine-tuning
# (W3A3, 8 epochs, lr 1e-3, --threads 1) plus W4A4 min-max PTQ on every set (--calib-size 128).
set -u
cd /work/wt-mimiqdata
V="nice -n 19 dotnet /tmp/mqd/bin/vitq.dll"
S=/tmp/mqd/sets; Q=/tmp/mqd/q
ptq() { # set name seed
  local q=$Q/$2-s$3-w4a4-minmax.safetensors
  [ -f $q ] || $V quantize --method minmax --wbits 4 --abits 4 --calib $1 --calib-size 128 --seed $3 --threads 1 --json --out $q > $Q/ptq-$2-s$3.json 2>$Q/ptq-$2-s$3.log
  echo "$(date +%T) ptq-w4a4-minmax $2 s$3 $(python3 -c "import json;print(json.load(open('$Q/ptq-$2-s$3.json'))['quant_top1'])" 2>/dev/null)"
}
ft() { # set name seed
  local q=$Q/$2-s$3-w3a3.safetensors
  [ -f $q ] || $V quantize --method mimiq --wbits 3 --abits 3 --data $1 --epochs 8 --lr 1e-3 --seed $3 --threads 1 --json --out $q > $Q/ft-$2-s$3.json 2>$Q/ft-$2-s$3.log
  echo "$(date +%T) ft-w3a3 $2 s$3 $(python3 -c "import json;print(json.load(open('$Q/ft-$2-s$3.json'))['quant_top1'])" 2>/dev/null)"
}
for variant in roll black-roll psaq; do
  for seed in 0 1 2; do
    set_=$S/$variant-s$seed.safetensors
    case $variant in
      roll)       args="--method mimiq --augment roll --iterations 200" ;;
      black-roll) args="--method mimiq --init black --augment roll --iterations 200" ;;
      psaq)       args="--method psaq --iterations 200" ;;
    esac
    [ -f $set_ ] || $V synthesize $args --count 128 --seed $seed --threads 1 --json --out $set_ > $Q/synth-$variant-s$seed.json 2>$Q/synth-$variant-s$seed.log
    echo "$(date +%T) synth $variant s$seed $(python3 -c "import json;print(round(json.load(open('$Q/synth-$variant-s$seed.json'))['seconds']))" 2>/dev/null) s"
    ft $set_ $variant $seed
    ptq $set_ $variant $seed
  done
done
for variant in full gaussian; do
  for seed in 0 1 2; do ptq /work/exp/sets/$variant-s$seed.safetensors $variant $seed; done
done
echo "$(date +%T) all done"
