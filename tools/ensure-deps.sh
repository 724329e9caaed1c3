#!/usr/bin/env bash
# Installs the Debian packages ViTQuant uses at run time, or prints the exact command when not root.
#   libopenblas0-pthread   SGEMM backend (a managed GEMM runs without it, slower)
#   dataset-fashion-mnist  the default dataset (/usr/share/datasets/fashion-mnist)
#   libturbojpeg0, libpng16-16  image decoding for image-folder datasets
#   fonts-dejavu-core      the font ScottPlot (SkiaSharp) draws the vitq analyze figures' text with
# Usage: tools/ensure-deps.sh [extra-package ...]
set -euo pipefail
need=()
have_lib() { ldconfig -p 2>/dev/null | grep -q "$1" || ls /usr/lib/*/"$1"* >/dev/null 2>&1; }
have_lib libopenblas.so.0 || need+=(libopenblas0-pthread)
[ -f /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
have_lib libturbojpeg.so.0 || need+=(libturbojpeg0)
have_lib libpng16.so.16 || need+=(libpng16-16)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing Debian packages; install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
