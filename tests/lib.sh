# tests/lib.sh — helpers shared by the shell tests, which source it with
# `. tests/lib.sh` (tests/run.sh runs them from the repository root with
# $TIERTRAIN set). Not a test itself: the Makefile and tests/run.sh take
# tests/test_*.sh only.
#   $T                         the binary under test ($TIERTRAIN, else ./tiertrain)
#   setup NAME                 $dir = a fresh folder tt-NAME.XXXXXX, removed on exit
#   fail MSG                   reports a failed check and counts it in $fails
#   expect_ok NAME CMD...      exit 0, no sanitizer report on stderr
#   expect_error NAME PAT CMD...  exit 1..127, no sanitizer report, exactly one
#                              stderr line, and that line matches PAT
#   wait_caught PID SIG        waits until PID catches SIG (before a kill of a process just started)
#   finish NAME                says "NAME: all checks passed" if none failed; exits 0 / 1
# CMD's stdout and stderr are left in $dir/out and $dir/err. With TT_TEST_TIMES=FILE, expect_ok and expect_error
# append "SECONDS NAME" to FILE for each command they run (where a test spends its time).
T=${TIERTRAIN:-./tiertrain}
fails=0

setup() {
    dir=$(mktemp -d "${TMPDIR:-/tmp}/tt-$1.XXXXXX")
    # the small file systems some tests mount inside $dir are unmounted first, also when the test is killed
    trap 'cleanup' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    trap 'exit 129' HUP
}
cleanup() {
    grep -o " $dir/[^ ]*" /proc/mounts 2>/dev/null | sort -r | while read -r m; do umount "$m" 2>/dev/null; done
    rm -rf "$dir"
}

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# tt_timed NAME CMD...: runs CMD; with TT_TEST_TIMES set, appends its wall seconds and NAME there
tt_timed() {
    [ -z "${TT_TEST_TIMES:-}" ] && { shift; "$@"; return; }
    _n=$1; shift
    _t0=$(date +%s.%N)
    "$@"; _rc=$?
    printf '%s %s\n' "$(echo "$(date +%s.%N) $_t0" | awk '{ printf "%.1f", $1 - $2 }')" "$_n" >>"$TT_TEST_TIMES"
    return $_rc
}

expect_ok() {
    name=$1; shift
    tt_timed "$name" "$@" >"$dir/out" 2>"$dir/err" || { fail "$name: exit $?"; cat "$dir/err"; return; }
    if grep -q -e Sanitizer -e 'runtime error' "$dir/err"; then fail "$name: sanitizer report"; cat "$dir/err"; fi
}

# err_lines FILE: its lines besides progress lines (tools/main.c progress_print, "... (P%), N MB/s, ETA Ns";
# tools/cmd_eval.c eval_progress_show, "eval: a / b requests (P%), ETA Ns"): work that takes over a second prints
# them, as it does on a loaded machine
err_lines() { grep -v -E ' \([ 0-9]+%\)(, [^,]*)*, (ETA|took) [0-9]+s$' "$1" | grep -c .; }

expect_error() {
    name=$1; pat=$2; shift 2
    tt_timed "$name" "$@" >"$dir/out" 2>"$dir/err"; rc=$?
    lines=$(err_lines "$dir/err") # the one line besides progress lines
    if [ $rc -eq 0 ] || [ $rc -ge 128 ]; then fail "$name: exit $rc"; cat "$dir/err"; return; fi
    if grep -q -e Sanitizer -e 'runtime error' "$dir/err"; then fail "$name: sanitizer report"; cat "$dir/err"; return; fi
    if [ "$lines" -ne 1 ]; then fail "$name: $lines lines on stderr, expected one"; cat "$dir/err"; return; fi
    grep -q -e "$pat" "$dir/err" || { fail "$name: stderr lacks '$pat'"; cat "$dir/err"; }
}

# wait_caught PID SIG: until PID catches SIG (HUP, INT or TERM: /proc's SigCgt), a minute at most; 1 if it
# never did or is gone. A signal sent before then is lost where the shell started PID with it ignored (`&` in a
# non-interactive shell ignores SIGINT), and a loaded machine can make "before then" a second or more.
wait_caught() {
    case $2 in HUP) _b=1 ;; INT) _b=2 ;; TERM) _b=16384 ;; *) return 1 ;; esac
    for _i in $(seq 1 600); do
        _m=$(sed -n 's/^SigCgt:[[:space:]]*//p' "/proc/$1/status" 2>/dev/null)
        [ -n "$_m" ] || return 1
        [ $((0x$(printf '%s' "$_m" | cut -c9-16) & _b)) -ne 0 ] && return 0
        sleep 0.1
    done
    return 1
}

finish() {
    [ $fails -eq 0 ] && echo "$1: all checks passed"
    exit $((fails > 0))
}
