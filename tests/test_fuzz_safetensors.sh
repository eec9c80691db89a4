#!/bin/sh
# tests/test_fuzz_safetensors.sh — a short libFuzzer run of the safetensors
# header parser (tests/fuzz_safetensors.c), seeded with tests/corpus/safetensors.
# Any crash, sanitizer report or leak fails the test. Longer runs:
#   build/fuzz/fuzz_safetensors DIR tests/corpus/safetensors
F=${FUZZ_SAFETENSORS:-build/fuzz/fuzz_safetensors}
[ -x "$F" ] || { echo "SKIP: $F not built (needs clang; run make fuzz)"; exit 77; }
new=$(mktemp -d "${TMPDIR:-/tmp}/tt-fuzz.XXXXXX")
trap 'rm -rf "$new"' EXIT
"$F" -runs=30000 -max_len=65536 -seed=1 "$new" tests/corpus/safetensors
