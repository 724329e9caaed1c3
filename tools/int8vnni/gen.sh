#!/usr/bin/env bash
# Assembles vnni8x32.s (GNU as) and prints its bytes as the C# array of Kernels/Int8GemmVnni.cs (Code).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
as --64 -o "$tmp/k.o" "$here/vnni8x32.s"
objcopy -O binary --only-section=.text "$tmp/k.o" "$tmp/k.bin"
objdump -d -M intel "$tmp/k.o" | grep -c vpdpbusd >/dev/null
python3 - "$tmp/k.bin" <<'PY'
import sys
b = open(sys.argv[1], 'rb').read()
for i in range(0, len(b), 24):
    print('        ' + ', '.join(f'0x{x:02X}' for x in b[i:i+24]) + ',')
PY
