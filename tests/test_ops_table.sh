#!/bin/sh
# tests/test_ops_table.sh — test_cuda_ops's table (every op, fp32 and bf16
# activations, against the CPU reference) with cpu-async standing in for the
# GPU. Runs here, without a GPU: the table's own logic (uploads, bf16
# conversions, poisoning, the mixed products) and the CPU's bf16 ops against
# its fp32 ones, within the bf16 tolerances the GPU must meet.
. tests/lib.sh
setup ops_table
P="$(dirname "$T")/tests/test_cuda_ops"
[ -x "$P" ] || { fail "$P is not built"; finish test_ops_table; }
expect_ok "table on cpu-async" "$P" --device cpu-async
grep -q "attn_bwd.*bf16" "$dir/err" || fail "the bf16 pass did not run (no attn_bwd bf16 line)"
grep -q "attn_kv.*bf16" "$dir/err" || fail "the KV-cache attention did not run in bf16 (no attn_kv bf16 line)"
finish test_ops_table
