#!/bin/sh
# tests/test_gpu_check.sh — tools/gpu_check.sh runs only on a GPU machine, and
# a GPU session is rare: its mistakes must show here. The script parses, every
# check it runs has its function, every function it runs is exported to the
# per-check shells (the helpers they call too), and its header lists every check;
# a bundle built from other sources is refused.
. tests/lib.sh
case "$T" in # (tests/run.sh runs every shell test for both builds)
*/asan/*) echo "SKIP: it runs the GPU bundle's binaries, not the build under test: the release build's run checks it"; exit 77 ;;
esac
setup gpu_check
S=tools/gpu_check.sh
bash -n "$S" || fail "$S does not parse"
checks=$(sed -n 's/^run \([a-z0-9-]*\) [0-9]* \(c_[a-z0-9_]*\)$/\1:\2/p' "$S")
[ -n "$checks" ] || fail "no 'run NAME LIMIT FUNCTION' lines in $S"
exported=$(sed -n '/^export -f /{:a;/\\$/{N;ba};s/\\\n//g;s/^export -f //p}' "$S") # continuation lines joined
for c in $checks; do
    name=${c%%:*} fn=${c#*:}
    grep -q "^$fn() {" "$S" || fail "$S runs $fn (check $name) but does not define it"
    echo " $exported " | grep -q " $fn " || fail "$S runs $fn (check $name) but does not export it"
    grep -q "^#   $name " "$S" || fail "$S's header does not list the check $name"
done
# the checks run in their own shells: every function the checks' part defines (helpers too) must be exported
for fn in $(sed -n '/^# ---- the checks/,/^export -f/s/^\([a-z0-9_]*\)() {.*/\1/p' "$S"); do
    echo " $exported " | grep -q " $fn " || fail "$S defines $fn among the checks but does not export it"
done
# the rehearsal on the emulated GPU (tools/gpu_rehearse.sh) parses, and every knob it exports is one the script
# reads: a knob renamed on one side would leave the rehearsal at the real shapes (hours on the emulator)
R=tools/gpu_rehearse.sh
bash -n "$R" || fail "$R does not parse"
knobs=$(sed -n '/^export /{:a;/\\$/{N;ba};s/\\\n//g;p}' "$R" | grep -o '[A-Z][A-Z0-9_]*=' | tr -d = | sort -u)
[ -n "$knobs" ] || fail "no knobs read from $R's export lines"
for v in $knobs; do
    [ "$v" = PATH ] && continue
    grep -qE "\\\$\\{?$v([^A-Za-z0-9_]|\$)" "$S" || fail "$R exports $v, which $S does not read"
done
if command -v python3 >/dev/null; then # not among the project's Debian packages: checked where it is installed
    python3 -c 'import sys; [compile(open(f).read(), f, "exec") for f in sys.argv[1:]]' tools/peer_peft.py \
        tools/hf_crosscheck.py 2>"$dir/err" || { fail "a Python script does not compile"; cat "$dir/err"; }
fi
# Where the bundle was built (.ci/run builds it): the script runs here, exits 0, and on a machine without
# a GPU runs the op table on cpu-async and lists every GPU check it skipped; QUICK=1 keeps the first five.
if [ -f build/gpu-bundle.tar.xz ] && command -v bash >/dev/null; then
    # a bundle built from other sources is refused before anything runs, naming both hashes
    mkdir -p "$dir/stale"
    tar -C "$dir/stale" -xJf build/gpu-bundle.tar.xz
    sed -i 's/, sources [0-9a-f]*/, sources 0123456789abcdef/' "$dir/stale/gpu/BUILD"
    grep -q 'sources 0123456789abcdef' "$dir/stale/gpu/BUILD" || echo "built before hashes, sources 0123456789abcdef" >>"$dir/stale/gpu/BUILD"
    tar -C "$dir/stale" -cJf "$dir/stale.tar.xz" gpu
    GPU_CHECK_BUNDLE="$dir/stale.tar.xz" GPU_CHECK_WORK="$dir/w" bash "$S" "$dir/gs" >"$dir/gs.out" 2>&1
    rc=$?
    [ "$rc" = 2 ] && grep -q "was built from other sources (0123456789abcdef) than this tree ($(sh tools/src_hash.sh))" "$dir/gs.out" ||
        { fail "a stale bundle was not refused (exit $rc)"; cat "$dir/gs.out"; }
    [ -s "$dir/gs/summary.txt" ] && fail "a stale bundle's run wrote a summary"
    # the bundle here may predate the last change to the sources (CI builds it first; a developer may not)
    any=0
    grep -q "sources $(sh tools/src_hash.sh)" build/gpu/BUILD 2>/dev/null || { any=1; echo "note: build/gpu-bundle.tar.xz is older than the sources; run anyway"; }
    GPU_CHECK_ANY_BUNDLE=$any GPU_CHECK_WORK="$dir/w" bash "$S" "$dir/gc" >"$dir/gc.out" 2>&1 || { fail "gpu_check.sh exited $?"; tail -20 "$dir/gc.out"; }
    if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
        grep -q "^ops  *PASS" "$dir/gc/summary.txt" || { fail "no GPU: the ops row is not a PASS"; cat "$dir/gc/summary.txt"; }
        grep -q "^skipped: cpu-cuda stream kernels" "$dir/gc.out" || { fail "no GPU: no list of skipped checks"; tail -5 "$dir/gc.out"; }
    fi
    QUICK=1 GPU_CHECK_ANY_BUNDLE=$any GPU_CHECK_WORK="$dir/w" bash "$S" "$dir/gq" >/dev/null 2>&1
    [ "$(wc -l <"$dir/gq/summary.txt")" -eq 5 ] || { fail "QUICK=1: expected 5 rows"; cat "$dir/gq/summary.txt"; }
fi
finish test_gpu_check
