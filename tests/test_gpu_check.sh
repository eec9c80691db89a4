#!/bin/sh
# tests/test_gpu_check.sh — tools/gpu_check.sh runs only on a GPU machine, and
# a GPU session is rare: its mistakes must show here. The script parses, every
# check it runs has its function, every function it runs is exported to the
# per-check shells, and its header lists every check.
. tests/lib.sh
setup gpu_check
S=tools/gpu_check.sh
bash -n "$S" || fail "$S does not parse"
checks=$(sed -n 's/^run \([a-z0-9-]*\) [0-9]* \(c_[a-z0-9_]*\)$/\1:\2/p' "$S")
[ -n "$checks" ] || fail "no 'run NAME LIMIT FUNCTION' lines in $S"
exported=$(sed -n 's/^export -f //p' "$S")
for c in $checks; do
    name=${c%%:*} fn=${c#*:}
    grep -q "^$fn() {" "$S" || fail "$S runs $fn (check $name) but does not define it"
    echo " $exported " | grep -q " $fn " || fail "$S runs $fn (check $name) but does not export it"
    grep -q "^#   $name " "$S" || fail "$S's header does not list the check $name"
done
if command -v python3 >/dev/null; then # not among the project's Debian packages: checked where it is installed
    python3 -c 'import sys; [compile(open(f).read(), f, "exec") for f in sys.argv[1:]]' tools/peer_peft.py \
        tools/hf_crosscheck.py 2>"$dir/err" || { fail "a Python script does not compile"; cat "$dir/err"; }
fi
finish test_gpu_check
