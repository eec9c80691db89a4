#!/bin/sh
# tests/test_fuzz_tier.sh — a short libFuzzer run of the store header parser
# (tests/fuzz_tier.c), seeded with tests/corpus/tier. Any crash, sanitizer
# report or leak fails the test. Longer runs: build/fuzz/fuzz_tier DIR tests/corpus/tier
F=${FUZZ_TIER:-build/fuzz/fuzz_tier}
[ -x "$F" ] || { echo "SKIP: $F not built (needs clang; run make fuzz)"; exit 77; }
new=$(mktemp -d "${TMPDIR:-/tmp}/tt-fuzz.XXXXXX")
trap 'rm -rf "$new"' EXIT
"$F" -runs=30000 -max_len=65536 -seed=1 "$new" tests/corpus/tier
