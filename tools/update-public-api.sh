#!/usr/bin/env bash
# Adds every public symbol of the library that the API baseline does not declare yet (build error RS0016)
# to src/ViTQuant/PublicAPI.Unshipped.txt, sorted. Run it after adding public API on purpose; review the
# diff — a line you did not mean to add is a type or member that should be internal.
# (Removed or changed symbols, RS0017, are fixed by hand: delete or edit their lines.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
file="$here/src/ViTQuant/PublicAPI.Unshipped.txt"
# The build fails while symbols are undeclared; its output is what we want.
new="$({ dotnet build "$here/src/ViTQuant" -c Release -nologo -v q --no-incremental 2>&1 || true; } \
  | sed -n "s/.*RS0016: Symbol '\(.*\)' is not part of the declared public API.*/\1/p" | sort -u)"
if [ -z "$new" ]; then echo "public API baseline is up to date"; exit 0; fi
{ head -1 "$file"; { tail -n +2 "$file"; printf '%s\n' "$new"; } | LC_ALL=C sort -u; } > "$file.tmp"
mv "$file.tmp" "$file"
echo "added $(printf '%s\n' "$new" | wc -l) symbol(s) to $file"
