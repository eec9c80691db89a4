#!/bin/sh
# tests/test_async_dropwait.sh — the cpu-async emulation catches a missing
# event wait (issue 10's proof that it can fail): with TT_TEST_DROP_WAIT=slot
# the layer loads no longer wait for the compute queue to be done with a slot,
# with TT_TEST_DROP_WAIT=decode an lz4 layer's decode no longer waits for the
# last copy out of the decode buffer, and for each
#   1. the streamed runs of tests/test_stream_async.c no longer equal the
#      resident run (TT_TEST_EXPECT_FAIL=1 turns "some seed differs" into a pass);
#   2. the ThreadSanitizer build reports the data race (the copy into the slot
#      against the compute queue's read of it; the decode against the copy out
#      of the buffer) when make test built it.
# Without the switch both runs are clean: tests/test_stream_async.c itself.
. tests/lib.sh
# (tests/run.sh runs every shell test for both builds: what this one proves — that a dropped wait changes the values
# and that ThreadSanitizer reports it — is the release run's; the ASan build runs test_stream_async's own cases)
case "$T" in */asan/*) echo "SKIP: the release build's run proves the dropped waits are caught"; exit 77 ;; esac
setup async_dropwait
bin=$(dirname "$T")/tests/test_stream_async
[ -x "$bin" ] || { echo "SKIP: $bin not built"; exit 77; }

for w in slot decode; do
    TT_TEST_DROP_WAIT=$w TT_TEST_EXPECT_FAIL=1 TT_TEST_SEEDS=1 "$bin" >"$dir/out" 2>"$dir/err" ||
        { fail "a dropped $w wait went unnoticed by the bit-for-bit comparison"; tail -5 "$dir/err"; }
    grep -q "the dropped event wait was caught" "$dir/err" || fail "$w: no verdict line from test_stream_async"
done

tsan=${TSAN_DIR:-}/tests/test_stream_async
if [ -n "${TSAN_DIR:-}" ] && [ -x "$tsan" ]; then
    for w in slot decode; do
        OPENBLAS_NUM_THREADS=1 TSAN_OPTIONS="halt_on_error=1:exitcode=66" TT_TEST_DROP_WAIT=$w TT_TEST_SEEDS=1 \
            "$tsan" >"$dir/out" 2>"$dir/err"
        rc=$?
        [ $rc -eq 66 ] || fail "ThreadSanitizer build with a dropped $w wait: exit $rc, expected 66 (a race report)"
        grep -q "ThreadSanitizer: data race" "$dir/err" || fail "ThreadSanitizer reported no race for a dropped $w wait"
    done
else
    echo "note: no ThreadSanitizer build (TSAN_DIR unset): only the comparison was checked"
fi
finish test_async_dropwait
