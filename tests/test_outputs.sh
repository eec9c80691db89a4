#!/bin/sh
# tests/test_outputs.sh — the output rule (tools/outputs.c) on every command
# with an output: an output that is an input (also through another path or a
# link), an existing output without --force, a derived name (OUT.val) that
# collides or is stale, a --trace onto an input or into a run's own files, a
# missing or read-only folder (as root: run as the user nobody), and a second
# `train` on a run folder in use (also when the first one ends between the
# second one's open of the lock and its lock, and a third takes it) — each refused
# up front with one line naming the flag, exit 2, and every input and
# earlier output byte-identical afterwards (checksums before and after). A
# second writer of one output while the first holds OUT.partial is refused,
# the first one's file untouched; a stale OUT.partial is reused; an output another
# process wrote after the check, before the command's own write, is not replaced.
# Inputs that are FIFOs (a store, tokens, a tokenizer, config.json, an
# adapter's config, a checkpoint) are refused at once, never waited on. A
# write ended by SIGTERM or SIGHUP, or past the file size limit (ulimit -f), leaves no partial file behind. An output
# name too long for a ".partial" after it is still written.
. tests/lib.sh
setup outputs

"$T" synth --preset tiny --quant f32 -o "$dir/f32.tier" >/dev/null 2>&1 || fail "synth f32"
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 -o "$dir/pruned.tier" >/dev/null 2>&1 || fail "synth pruned"
awk 'NR <= 2000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null 2>&1 || fail "tokenize"
"$T" export "$dir/f32.tier" -o "$dir/hf" >/dev/null 2>&1 || fail "export"
FLAGS="--model $dir/pruned.tier --data $dir/t.tok --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --eval-every 0 --eval-tokens 128"
"$T" train $FLAGS --steps 4 --stop-after 2 --out "$dir/run" >/dev/null 2>&1 || fail "train"
"$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/rec" >/dev/null 2>&1 || fail "recover"
ln -s "$dir/f32.tier" "$dir/link.tier"

# every file but the lock and this test's own (out, err, the snapshots)
snap() { (cd "$dir" && find . -type f ! -name '*.lock' ! -name out ! -name err ! -name 'before*' ! -name 'after*' | sort |
    xargs md5sum) >"$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1"; }
snap before
unchanged() { snap after; cmp -s "$dir/before" "$dir/after" || { fail "$1 changed a file"; diff "$dir/before" "$dir/after"; }; }

# an output that is an input
expect_error "prune onto its input via a link" "-o .*link.tier is the input" "$T" prune "$dir/f32.tier" --method unst --ratio 0.5 -o "$dir/link.tier" --force
expect_error "quantize onto its input" "is the input" "$T" quantize "$dir/f32.tier" -o "$dir/./f32.tier" --force
# "-o -" is standard output's usual name: a command that writes a file refuses it rather than make a file named "-"
Tabs=$(cd "$(dirname "$T")" && pwd)/$(basename "$T")
cd "$dir" || fail "cd $dir"
expect_error "-o -" "-o - would be a file named '-'" "$Tabs" synth --preset tiny -o -
expect_error "export -o -" "-o - would be a folder named '-'" "$Tabs" export "$dir/f32.tier" -o -
cd "$OLDPWD" || fail "cd back"
[ -e "$dir/-" ] && fail "synth or export -o - made a file or folder named '-'"
expect_error "import onto a file of its folder" "is the input .*hf/config.json" "$T" import "$dir/hf" -o "$dir/hf/config.json" --force
mkdir -p "$dir/hf2" && ln -sf "$dir/f32.tier" "$dir/hf2/model.safetensors"
expect_error "export over its input through a link" "would replace the input" "$T" export "$dir/f32.tier" -o "$dir/hf2" --force
rm -rf "$dir/hf2"
expect_error "merge onto its model" "is the input" "$T" merge --model "$dir/f32.tier" --adapter "$dir/rec" -o "$dir/f32.tier" --force
expect_error "tokenize onto its input" "is the input" "$T" tokenize -i "$dir/text.txt" -o "$dir/text.txt" --force
cp "$dir/text.txt" "$dir/y.val"
expect_error "tokenize: OUT.val is the input" "validation file) .*y.val is the input" "$T" tokenize -i "$dir/y.val" -o "$dir/y" --force
rm "$dir/y.val"
expect_error "train --full onto its model" "--out .*f32.tier is the input" "$T" train --full --model "$dir/f32.tier" --data "$dir/t.tok" --seq 32 --micro-batch 2 --batch-tokens 64 --steps 1 --out "$dir/f32.tier" --force
expect_error "train --trace onto the model" "--trace .*pruned.tier is the input" "$T" train $FLAGS --steps 1 --out "$dir/run2" --trace "$dir/pruned.tier" --force
expect_error "train --trace onto the data" "--trace .*t.tok is the input" "$T" train $FLAGS --steps 1 --out "$dir/run2" --trace "$dir/t.tok" --force
expect_error "train --trace onto the run's checkpoint" "would replace a file of the run" "$T" train $FLAGS --steps 1 --out "$dir/run" --trace "$dir/run/checkpoint.bin" --force
expect_error "bench overlap --trace onto the model" "--trace .*pruned.tier is the input" "$T" bench overlap --model "$dir/pruned.tier" --seq 32 --micro-batch 2 --batch-tokens 64 --steps 1 --trace "$dir/pruned.tier" --force
# an output whose temporary name (OUT.partial, truncated when the write starts) is an input
cp "$dir/f32.tier" "$dir/in.tier.partial"
expect_error "quantize whose OUT.partial is its input" "-o .*in.tier is written as .*in.tier.partial first, which is the input" "$T" quantize "$dir/in.tier.partial" -o "$dir/in.tier"
expect_error "prune whose OUT.partial is its input" "which is the input" "$T" prune "$dir/in.tier.partial" --ratio 0.5 -o "$dir/in.tier"
mkdir -p "$dir/hf3" && cp "$dir/f32.tier" "$dir/hf3/model.safetensors.partial"
expect_error "export whose model.safetensors.partial is its input" "would replace the input .*hf3/model.safetensors.partial" "$T" export "$dir/hf3/model.safetensors.partial" -o "$dir/hf3"
cmp -s "$dir/f32.tier" "$dir/in.tier.partial" && cmp -s "$dir/f32.tier" "$dir/hf3/model.safetensors.partial" || fail "an input named OUT.partial changed"
[ ! -e "$dir/in.tier" ] || fail "in.tier written from its own .partial"
rm -rf "$dir/in.tier.partial" "$dir/hf3"
unchanged "an output onto an input"

# an existing output without --force
expect_error "synth over a store" "-o .*f32.tier exists; pass --force" "$T" synth --preset tiny -o "$dir/f32.tier"
expect_error "prune over a store" "exists; pass --force" "$T" prune "$dir/f32.tier" --method unst --ratio 0.5 -o "$dir/pruned.tier"
expect_error "quantize over a store" "exists; pass --force" "$T" quantize "$dir/f32.tier" -o "$dir/pruned.tier"
expect_error "import over a store" "exists; pass --force" "$T" import "$dir/hf" -o "$dir/pruned.tier"
expect_error "export over a checkpoint" "already holds a checkpoint (model.safetensors); pass --force" "$T" export "$dir/f32.tier" -o "$dir/hf"
expect_error "recover over an adapter" "already holds an adapter (adapter_model.safetensors); pass --force" "$T" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/rec"
expect_error "recover into a run" "is a training run" "$T" recover --adapter "$dir/rec" --pruned "$dir/pruned.tier" -o "$dir/run" --force
expect_error "merge over a store" "exists; pass --force" "$T" merge --model "$dir/f32.tier" --adapter "$dir/rec" -o "$dir/pruned.tier"
expect_error "tokenize over tokens" "-o .*t.tok exists; pass --force" "$T" tokenize -i "$dir/text.txt" -o "$dir/t.tok"
expect_error "train over a run" "holds a run (checkpoint.bin); pass --resume" "$T" train $FLAGS --steps 1 --out "$dir/run"
: >"$dir/old.json"
snap before
expect_error "train over a trace" "--trace .*old.json exists; pass --force" "$T" train $FLAGS --steps 1 --out "$dir/run3" --trace "$dir/old.json"
expect_error "bench over a trace" "--trace .*old.json exists; pass --force" "$T" bench overlap --model "$dir/pruned.tier" --seq 32 --micro-batch 2 --batch-tokens 64 --steps 1 --trace "$dir/old.json"
unchanged "an existing output without --force"
[ -e "$dir/run3/checkpoint.bin" ] && fail "train wrote a run though its --trace was refused"

# where nothing can be written: found before any work
expect_error "no such folder" "the folder .*nodir does not exist" "$T" synth --preset tiny -o "$dir/nodir/x.tier"
expect_error "trace in no folder" "--trace .*the folder .*nodir does not exist" "$T" train $FLAGS --steps 1 --out "$dir/run4" --trace "$dir/nodir/t.json"
[ -e "$dir/run4/checkpoint.bin" ] && fail "train ran though its --trace could not be written"
expect_error "empty output" "-o is empty" "$T" synth --preset tiny -o ""

# a folder the user cannot write: every command refuses before any work, nothing is written, and
# --trace is found unwritable before training. Root writes anywhere, so as root (CI) these commands run as
# the unprivileged user nobody (setpriv), who can read the inputs but not write the folder.
as_user() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; else "$@"; fi; }
chmod 755 "$dir"
mkdir "$dir/ro" "$dir/rw" && chmod 555 "$dir/ro" && chmod 777 "$dir/rw"
TU=$T
if ! as_user test -x "$T"; then # the binary sits where nobody cannot reach it: a copy in $dir
    cp "$T" "$dir/tiertrain-copy" && chmod 755 "$dir/tiertrain-copy" && TU=$dir/tiertrain-copy
fi
if as_user "$TU" --help >/dev/null 2>&1; then
    snap before
    RO="the folder .*ro is not writable"
    RD="cannot create .*ro/[a-z]*: its parent directory is not writable" # a folder output
    expect_error "synth into a read-only folder" "$RO" as_user "$TU" synth --preset tiny -o "$dir/ro/x.tier"
    expect_error "tokenize into a read-only folder" "$RO" as_user "$TU" tokenize -i "$dir/text.txt" -o "$dir/ro/x.tok"
    expect_error "import into a read-only folder" "$RO" as_user "$TU" import "$dir/hf" -o "$dir/ro/x.tier"
    expect_error "export into a read-only folder" "$RD" as_user "$TU" export "$dir/f32.tier" -o "$dir/ro/hf"
    expect_error "prune into a read-only folder" "$RO" as_user "$TU" prune "$dir/f32.tier" --ratio 0.5 -o "$dir/ro/p.tier"
    expect_error "quantize into a read-only folder" "$RO" as_user "$TU" quantize "$dir/f32.tier" -o "$dir/ro/q.tier"
    expect_error "train --out in a read-only folder" "$RD" as_user "$TU" train $FLAGS --steps 1 --out "$dir/ro/run"
    expect_error "train --trace in a read-only folder" "--trace .*$RO" \
        as_user "$TU" train $FLAGS --steps 1 --out "$dir/rw/run" --trace "$dir/ro/t.json"
    [ -e "$dir/rw/run/checkpoint.bin" ] && fail "train ran though its --trace could not be written"
    expect_error "recover into a read-only folder" "$RD" \
        as_user "$TU" recover --adapter "$dir/run" --pruned "$dir/pruned.tier" -o "$dir/ro/rec"
    expect_error "merge into a read-only folder" "$RO" as_user "$TU" merge --model "$dir/f32.tier" --adapter "$dir/rec" -o "$dir/ro/m.tier"
    expect_error "bench overlap --trace in a read-only folder" "--trace .*$RO" as_user "$TU" bench overlap \
        --model "$dir/pruned.tier" --seq 32 --micro-batch 2 --batch-tokens 64 --steps 1 --trace "$dir/ro/t.json"
    [ -z "$(ls -A "$dir/ro")" ] || fail "a refused command wrote into the read-only folder: $(ls -A "$dir/ro")"
    unchanged "a read-only output folder"
else
    fail "cannot run $TU as an unprivileged user (setpriv); the read-only checks did not run"
fi
rm -rf "$dir/rw" "$dir/tiertrain-copy"

# --force replaces; --resume continues the same folder
expect_ok "synth --force" "$T" synth --preset tiny --seed 7 -o "$dir/f32.tier" --force
cmp -s "$dir/f32.tier" "$dir/link.tier" || fail "the link no longer reaches the replaced store"
# an output that is a symbolic link: the link is replaced (said), the file it points to left as it was
cp "$dir/f32.tier" "$dir/keep.tier" && ln -s "$dir/keep.tier" "$dir/via.tier"
expect_ok "synth --force onto a link" "$T" synth --preset tiny --seed 8 -o "$dir/via.tier" --force
grep -q "note: -o .*via.tier is a symbolic link (to .*keep.tier); the new file replaces the link" "$dir/err" ||
    fail "synth onto a link: no note saying the link is replaced: $(cat "$dir/err")"
[ -f "$dir/via.tier" ] && [ ! -L "$dir/via.tier" ] && cmp -s "$dir/f32.tier" "$dir/keep.tier" ||
    fail "synth onto a link: the link is not a new file, or the file it pointed to changed"
rm -f "$dir/keep.tier" "$dir/via.tier"
expect_ok "train --resume on its own --out" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/run"

# a stale OUT.val: refused without --force, removed with it (train would take it as OUT's validation set)
"$T" tokenize -i "$dir/text.txt" -o "$dir/v.tok" >/dev/null 2>&1 || fail "tokenize with a validation split"
[ -e "$dir/v.tok.val" ] || fail "tokenize wrote no v.tok.val"
cp "$dir/v.tok.val" "$dir/w.tok.val" # an earlier run's, next to an OUT that does not exist yet
expect_error "stale OUT.val" "validation file) .*w.tok.val exists; pass --force" "$T" tokenize -i "$dir/text.txt" --val-frac 0 -o "$dir/w.tok"
[ -e "$dir/w.tok" ] && fail "a refused tokenize wrote its OUT"
expect_ok "no split with --force" "$T" tokenize -i "$dir/text.txt" --val-frac 0 -o "$dir/w.tok" --force
[ -e "$dir/w.tok.val" ] && fail "a stale w.tok.val survived a run without a validation split"
grep -q "removed .*w.tok.val" "$dir/err" || fail "tokenize did not say it removed the stale w.tok.val"

# stopped PID NAME: the train run PID, sent Ctrl-C, stops cleanly: a checkpoint, exit 130 (Ctrl-C's)
stopped() {
    wait "$1"
    _r=$?
    [ $_r -eq 130 ] || { fail "$2 did not stop cleanly (exit $_r, not Ctrl-C's 130)"; return 1; }
}
# two writers on one run folder: the second is refused, naming the first
"$T" train $FLAGS --steps 100000 --save-every 0 --out "$dir/busy" >"$dir/busy.out" 2>&1 &
pid=$!
i=0
while [ $i -lt 100 ] && ! grep -q '^step' "$dir/busy.out"; do sleep 0.1; i=$((i + 1)); done
expect_error "second writer" "another tiertrain (process $pid) is writing .*busy" "$T" train $FLAGS --steps 1 --out "$dir/busy" --force
kill -INT $pid 2>/dev/null
stopped $pid "the first writer"
[ -s "$dir/busy/checkpoint.bin" ] || fail "the first writer's checkpoint is missing"
# its lock is gone with it, and the folder takes the next run (which takes the lock anew)
[ -e "$dir/busy/.tiertrain.lock" ] && fail "a finished run left its lock file"
expect_ok "the next writer" "$T" train $FLAGS --steps 1 --out "$dir/busy" --force
[ -e "$dir/busy/.tiertrain.lock" ] && fail "a finished run left its lock file"
# the race the lock's inode check closes: B opens A's lock file, A ends (removing it), C takes a new one, and only
# then B locks what it opened. B must see that the path names C's file now and be refused, naming C.
"$T" train $FLAGS --steps 100000 --save-every 0 --out "$dir/race" >"$dir/a.out" 2>&1 &
pa=$!
i=0
while [ $i -lt 100 ] && ! grep -q '^step' "$dir/a.out"; do sleep 0.1; i=$((i + 1)); done
TT_TEST_LOCK_PAUSE="$dir/paused" "$T" train $FLAGS --steps 1 --out "$dir/race" --force >"$dir/b.out" 2>"$dir/b.err" &
pb=$!
i=0
while [ $i -lt 200 ] && [ ! -e "$dir/paused" ]; do sleep 0.05; i=$((i + 1)); done
[ -e "$dir/paused" ] || fail "lock race: B never reached its lock"
kill -INT $pa 2>/dev/null
stopped $pa "lock race: A"
[ -e "$dir/race/.tiertrain.lock" ] && fail "lock race: A left its lock file"
"$T" train $FLAGS --steps 100000 --save-every 0 --out "$dir/race" --force >"$dir/c.out" 2>&1 &
pc=$!
i=0
while [ $i -lt 100 ] && ! grep -q '^step' "$dir/c.out"; do sleep 0.1; i=$((i + 1)); done
grep -q '^step' "$dir/c.out" || fail "lock race: C did not start"
rm -f "$dir/paused"
wait $pb
rb=$?
[ $rb -ne 0 ] && grep -q "another tiertrain (process $pc) is writing .*race" "$dir/b.err" ||
    { fail "lock race: B (exit $rb) was not refused naming C ($pc)"; cat "$dir/b.err"; }
kill -INT $pc 2>/dev/null
stopped $pc "lock race: C"
# B creates the folder, A locks it first: B, refused, must leave A's lock file and folder alone (it removes a
# folder it made only while the folder is still its own)
rm -f "$dir/paused"
TT_TEST_LOCK_PAUSE="$dir/paused" "$T" train $FLAGS --steps 1 --out "$dir/made" >"$dir/mb.out" 2>"$dir/mb.err" &
pb=$!
i=0
while [ $i -lt 200 ] && [ ! -e "$dir/paused" ]; do sleep 0.05; i=$((i + 1)); done
[ -e "$dir/paused" ] || fail "made race: B never reached its lock"
: >"$dir/ma.out"
"$T" train $FLAGS --steps 100000 --save-every 0 --out "$dir/made" >"$dir/ma.out" 2>&1 &
pa=$!
i=0
while [ $i -lt 100 ] && ! grep -q '^step' "$dir/ma.out"; do sleep 0.1; i=$((i + 1)); done
rm -f "$dir/paused"
wait $pb
rb=$?
[ $rb -ne 0 ] && grep -q "another tiertrain (process $pa) is writing .*made" "$dir/mb.err" ||
    { fail "made race: B (exit $rb) was not refused naming A ($pa)"; cat "$dir/mb.err"; }
[ -e "$dir/made/.tiertrain.lock" ] || fail "made race: the refused B removed A's lock file"
kill -INT $pa 2>/dev/null
stopped $pa "made race: A" || cat "$dir/ma.out"
[ -s "$dir/made/checkpoint.bin" ] || fail "made race: A's checkpoint is missing"
# B checks an empty folder, then A runs a whole run there before B takes the lock: B, locked, must find A's run
# and refuse to start over in it without --force
mkdir "$dir/late"
TT_TEST_LOCK_PAUSE="$dir/paused" "$T" train $FLAGS --steps 1 --out "$dir/late" >"$dir/mb.out" 2>"$dir/mb.err" &
pb=$!
i=0
while [ $i -lt 200 ] && [ ! -e "$dir/paused" ]; do sleep 0.05; i=$((i + 1)); done
[ -e "$dir/paused" ] || fail "late race: B never reached its lock"
expect_ok "late race: A" "$T" train $FLAGS --steps 1 --out "$dir/late"
cp "$dir/late/checkpoint.bin" "$dir/late.ckpt"
rm -f "$dir/paused"
wait $pb
rb=$?
[ $rb -ne 0 ] && grep -q "late holds a run" "$dir/mb.err" ||
    { fail "late race: B (exit $rb) started over in A's finished run"; cat "$dir/mb.err"; }
cmp -s "$dir/late/checkpoint.bin" "$dir/late.ckpt" || fail "late race: A's checkpoint was replaced"
# inputs that are FIFOs: refused in one line within the time limit (an open would wait for a writer)
mkfifo "$dir/fifo" || fail "mkfifo"
mkdir "$dir/hf3" "$dir/ad3" "$dir/ck3"
mkfifo "$dir/hf3/config.json" "$dir/ad3/adapter_config.json" "$dir/ck3/checkpoint.bin"
cp "$dir/run/adapter_model.safetensors" "$dir/ad3/"
fifo_refused() {
    name=$1; shift
    timeout 20 "$@" >"$dir/out" 2>"$dir/err"; rc=$?
    [ $rc -eq 124 ] && { fail "$name: hung on a FIFO"; return; }
    [ $rc -eq 0 ] && { fail "$name: a FIFO was accepted"; return; }
    grep -q "not a regular file" "$dir/err" || { fail "$name: the message does not say what is wrong"; cat "$dir/err"; }
}
fifo_refused "tokenize --input FIFO" "$T" tokenize -i "$dir/fifo" -o "$dir/f.tok"
fifo_refused "tokenize --tokenizer FIFO" "$T" tokenize -i "$dir/text.txt" --tokenizer "$dir/fifo" -o "$dir/f.tok"
fifo_refused "train --model FIFO" "$T" train --model "$dir/fifo" --data "$dir/t.tok" --out "$dir/f1"
fifo_refused "train --data FIFO" "$T" train --model "$dir/pruned.tier" --data "$dir/fifo" --out "$dir/f2"
fifo_refused "train --resume, checkpoint FIFO" "$T" train $FLAGS --steps 4 --out "$dir/f3" --resume "$dir/ck3"
fifo_refused "import, config.json FIFO" "$T" import "$dir/hf3" -o "$dir/f.tier"
fifo_refused "eval --adapter, config FIFO" "$T" eval --model "$dir/pruned.tier" --adapter "$dir/ad3" --data "$dir/t.tok" --seq 32
fifo_refused "info FIFO" "$T" info "$dir/fifo"

# Two writers of one output: the second finds OUT.partial locked by the first (core/base/common.h
# tt_partial_open) and is refused in one line naming OUT, the first one's file untouched and nothing of its own
# left; a stale OUT.partial (a kill -9: no lock) is reused. The first writer here: flock(1) holding the lock.
hold() { # PARTIAL: written and locked until release
    printf 'the first writer wrote this\n' >"$1"
    rm -f "$dir/held"
    : >"$dir/holding"
    flock -n -o "$1" sh -c ': >"$0/held"; while [ -e "$0/holding" ]; do sleep 0.05; done' "$dir" &
    hp=$!
    i=0
    while [ $i -lt 200 ] && [ ! -e "$dir/held" ]; do sleep 0.05; i=$((i + 1)); done
    [ -e "$dir/held" ] || fail "flock did not take the lock on $1"
}
release() { # PARTIAL
    rm -f "$dir/holding"
    wait $hp
    [ "$(cat "$1" 2>/dev/null)" = 'the first writer wrote this' ] || fail "a refused writer changed or removed $1"
    rm -f "$1" "$dir/held"
}
BUSY="another process is writing"
hold "$dir/l.tier.partial"
expect_error "synth while another writes its -o" "$BUSY .*l.tier (.*l.tier.partial is locked)" "$T" synth --preset tiny -o "$dir/l.tier"
release "$dir/l.tier.partial"
hold "$dir/l.tok.partial"
expect_error "tokenize while another writes its -o" "$BUSY .*l.tok (" "$T" tokenize -i "$dir/text.txt" -o "$dir/l.tok"
release "$dir/l.tok.partial"
[ -n "$(ls "$dir" | grep '^l\.tok')" ] && fail "a refused tokenize left $(ls "$dir" | grep '^l\.tok')"
mkdir "$dir/hfl"
hold "$dir/hfl/model.safetensors.partial"
expect_error "export while another writes its model.safetensors" "$BUSY .*hfl/model.safetensors (" "$T" export "$dir/f32.tier" -o "$dir/hfl"
release "$dir/hfl/model.safetensors.partial"
[ -z "$(ls -A "$dir/hfl")" ] || fail "a refused export left $(ls -A "$dir/hfl")"
BENCH="bench overlap --model $dir/pruned.tier --seq 32 --micro-batch 2 --batch-tokens 64 --steps 1"
"$T" $BENCH --trace "$dir/tr.json" >/dev/null 2>&1 || fail "bench overlap --trace"
hold "$dir/l.json.partial"
expect_error "--trace while another writes it" "$BUSY .*l.json (" "$T" $BENCH --trace "$dir/l.json"
release "$dir/l.json.partial"
hold "$dir/l.svg.partial"
expect_error "trace -o while another writes it" "$BUSY .*l.svg (" "$T" trace "$dir/tr.json" -o "$dir/l.svg"
release "$dir/l.svg.partial"
[ -e "$dir/l.tier" ] || [ -e "$dir/l.json" ] || [ -e "$dir/l.svg" ] && fail "a refused writer wrote its output"
# An output absent when a command checked it but written by another process before the command's own write
# (prune's Taylor calibration runs in between): the late writer, without --force, is refused in one line and the
# first one's store stays (both said "wrote" and the second replaced the first's)
"$T" synth --preset tiny --quant f32 -o "$dir/lf32.tier" >/dev/null 2>&1 || fail "synth lf32.tier"
"$T" prune "$dir/lf32.tier" --ratio 0.5 --importance taylor --calib "$dir/t.tok" --calib-samples 32 -o "$dir/late.tier" \
    >"$dir/lp.out" 2>"$dir/lp.err" &
pb=$!
i=0
while [ $i -lt 500 ] && ! grep -q 't\.tok' "/proc/$pb/maps" 2>/dev/null; do sleep 0.01; i=$((i + 1)); done
kill -STOP $pb # calibrating: its output checked absent, not yet opened
grep -q 't\.tok' "/proc/$pb/maps" 2>/dev/null || fail "prune was not seen calibrating (t.tok not mapped): the late-writer case below is not what it tests"
expect_ok "the first writer of late.tier" "$T" synth --preset tiny -o "$dir/late.tier"
cp "$dir/late.tier" "$dir/late.copy"
kill -CONT $pb
wait $pb
rb=$?
[ $rb -ne 0 ] && grep -q "late.tier was written by another process while this one worked; pass --force" "$dir/lp.err" ||
    { fail "a late writer (exit $rb) replaced an output written after its check"; cat "$dir/lp.err"; }
cmp -s "$dir/late.tier" "$dir/late.copy" || fail "the first writer's late.tier was replaced"
[ -e "$dir/late.tier.partial" ] && fail "the refused late writer left late.tier.partial"
rm -f "$dir/late.tier" "$dir/late.copy" "$dir/lf32.tier"
# the same for export's folder: held (gdb) at its first write, after its check of the folder, while another export
# writes the whole checkpoint there; the first then is refused and the other's files stay
if command -v gdb >/dev/null; then
    "$T" synth --preset tiny -o "$dir/ex.tier" >/dev/null 2>&1 || fail "synth ex.tier"
    printf 'set pagination off\nbreak tt_partial_open\nrun\nshell "%s" export "%s" -o "%s" >/dev/null 2>&1 || echo OTHER-FAILED\ndelete\ncontinue\n' \
        "$T" "$dir/ex.tier" "$dir/exd" >"$dir/g.cmd"
    gdb -q -batch -x "$dir/g.cmd" --args "$T" export "$dir/ex.tier" -o "$dir/exd" >"$dir/g.out" 2>&1
    grep -q "exd/model.safetensors was written by another process while this one worked; pass --force" "$dir/g.out" &&
        ! grep -q OTHER-FAILED "$dir/g.out" || { fail "export into a folder another export filled meanwhile"; tail -5 "$dir/g.out"; }
    [ -z "$(ls "$dir/exd" | grep partial)" ] || fail "the refused export left a partial file: $(ls "$dir/exd")"
    rm -rf "$dir/exd" "$dir/ex.tier" "$dir/g.cmd" "$dir/g.out"
fi
# an output name of 250 bytes: "NAME.partial" would pass the 255 a file name may have, so the temporary name is
# cut and given a hash; the write succeeds and leaves only the output (it was "File name too long")
mkdir "$dir/long"
long=$(printf 'x%.0s' $(seq 1 245)).tier
expect_ok "synth -o a 250-byte name" "$T" synth --preset tiny -o "$dir/long/$long"
[ "$(ls "$dir/long")" = "$long" ] || { fail "synth -o a 250-byte name left: $(ls "$dir/long")"; }
# a message naming a path of 1,000 bytes or more keeps its end, which says what is wrong and what to do (the
# message buffer held 1,024 bytes: "...xxxx/m.tier does no")
x=$(printf 'x%.0s' $(seq 1 250))
expect_error "a long path's message whole" "/m\.tier does not exist; create a store with .tiertrain synth.$" \
    "$T" info "$dir/$x/$x/$x/$x/m.tier"
printf 'a writer killed with -9 left this\n' >"$dir/s.tier.partial"
expect_ok "synth over a stale OUT.partial" "$T" synth --preset tiny -o "$dir/s.tier"
[ -e "$dir/s.tier.partial" ] && fail "synth left the stale s.tier.partial"
expect_ok "the store written over a stale OUT.partial" "$T" verify "$dir/s.tier"
rm -rf "$dir/hfl" "$dir/s.tier" "$dir/tr.json"

# A write past the file size limit (ulimit -f) fails in one line saying so and leaves nothing; SIGXFSZ used to end
# the process without a word and leave OUT.partial
mkdir "$dir/fsz"
expect_error "synth past ulimit -f" "writing .*fsz/f.tier failed: the file size limit (ulimit -f)" \
    sh -c 'ulimit -f 100 && exec "$0" synth --preset tiny -o "$1"' "$T" "$dir/fsz/f.tier"
expect_error "train past ulimit -f" "writing .*fsz/run/checkpoint.bin failed: the file size limit (ulimit -f).*; no checkpoint was written yet$" \
    sh -c 'ulimit -f 100 && exec "$0" "$@"' "$T" train $FLAGS --steps 1 --out "$dir/fsz/run"
[ -z "$(ls -A "$dir/fsz" "$dir/fsz/run" 2>/dev/null | grep partial)" ] || fail "a write past ulimit -f left $(ls -A "$dir/fsz"/*)"
rm -rf "$dir/fsz"

# A write ended by SIGTERM or SIGHUP leaves no "<output>.partial" behind (core/base/common.h tt_partial_note),
# and no output: synth of a store that takes tens of seconds, signalled once its partial file exists.
for sig in TERM HUP; do
    "$T" synth --preset llama2-7b --threads 1 -o "$dir/sig.tier" >/dev/null 2>&1 &
    pid=$!
    for i in $(seq 1 200); do [ -s "$dir/sig.tier.partial" ] && break; sleep 0.05; done
    [ -s "$dir/sig.tier.partial" ] || fail "SIG$sig: synth wrote no partial file to interrupt"
    kill -"$sig" $pid
    wait $pid
    rc=$?
    [ $rc -gt 128 ] || fail "SIG$sig: synth exited $rc, not by the signal"
    [ -e "$dir/sig.tier.partial" ] && fail "SIG$sig left sig.tier.partial behind"
    [ -e "$dir/sig.tier" ] && fail "SIG$sig left a sig.tier"
done
# ... nor one ended by SIGPIPE: `synth | head`, head gone (here before synth starts) before synth's output (a
# pipe's: buffered, written once its partial file exists) is written
(sleep 1; "$T" synth --preset small -o "$dir/pipe.tier" 2>/dev/null; echo $? >"$dir/pipe.rc") | true
[ "$(cat "$dir/pipe.rc")" -eq 141 ] || fail "synth into a closed pipe exited $(cat "$dir/pipe.rc"), not by SIGPIPE"
[ -e "$dir/pipe.tier.partial" ] && fail "SIGPIPE left pipe.tier.partial behind"
# a read-only file system and one without a free inode (df shows free bytes): each said so, with what to do (where a
# tmpfs can be mounted: root)
mkdir "$dir/fsx"
if mount -t tmpfs -o size=1m,ro tmpfs "$dir/fsx" 2>/dev/null; then
    expect_error "synth onto a read-only file system" "the folder .*fsx is on a read-only file system; write elsewhere" \
        "$T" synth --preset tiny -o "$dir/fsx/x.tier"
    umount "$dir/fsx"
    mount -t tmpfs -o size=1m,nr_inodes=1 tmpfs "$dir/fsx" || fail "a tmpfs without inodes"
    expect_error "synth with no free inode" "cannot create .*fsx/x.tier: its file system has no room for another file (no space, or no free inodes: df -i)" \
        "$T" synth --preset tiny -o "$dir/fsx/x.tier"
    umount "$dir/fsx"
else
    echo "note: no tmpfs could be mounted: the read-only and no-inode cases are skipped"
fi
finish test_outputs
