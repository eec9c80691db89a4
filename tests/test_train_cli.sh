#!/bin/sh
# tests/test_train_cli.sh — `tiertrain train` end to end on a tiny pruned NF4
# store: a short run writes a checkpoint and a PEFT adapter; SIGINT stops a
# run cleanly with a checkpoint, and --resume continues it; bad input (missing
# or corrupt token file, missing or corrupt checkpoint, wrong flags) is one
# line on stderr and a non-zero exit, and leaves the last checkpoint intact.
. tests/lib.sh
setup train

"$T" synth --preset tiny --prune-ratio 0.5 -o "$dir/m.tier" >/dev/null || fail "synth"
awk 'NR <= 3000' tools/demo-data/nlp-corpus-slice.txt >"$dir/text.txt"
"$T" tokenize --input "$dir/text.txt" -o "$dir/t.tok" >/dev/null || fail "tokenize"
FLAGS="--model $dir/m.tier --data $dir/t.tok --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --eval-every 2 --eval-tokens 256 --lr 5e-3"

# A short run: checkpoint + adapter, loss lines, JSON lines.
"$T" train $FLAGS --steps 4 --out "$dir/run" >"$dir/out" 2>"$dir/err" || { fail "train"; cat "$dir/err"; }
for f in checkpoint.bin adapter_model.safetensors adapter_config.json; do
    [ -s "$dir/run/$f" ] || fail "train did not write $f"
done
grep -q "^step 4/4 .*val" "$dir/out" || { fail "no final step line with validation"; cat "$dir/out"; }
# the default --warmup 10 is longer than these 4 steps: the header says what that does to the schedule
grep -q "^train: 4 steps .*warmup 10 (not below --steps: the learning rate climbs all run, to 0.002 at step 4, and never decays)" \
    "$dir/out" || { fail "no word on a warmup longer than the run"; grep "^train:" "$dir/out"; }
grep -q '"peft_type": "LORA"' "$dir/run/adapter_config.json" || fail "adapter_config.json lacks peft_type"
"$T" train $FLAGS --steps 2 --json --out "$dir/runj" >"$dir/out" 2>&1 || fail "train --json"
[ "$(grep -c '^{"step":' "$dir/out")" -eq 3 ] || { fail "--json: expected 3 JSON lines (step 0..2)"; cat "$dir/out"; }
# then the run's summary, last: the losses, the adapter's folder, the arenas' peaks
tail -1 "$dir/out" | grep -q '^{"done":true,"steps":2,"steps_planned":2,"train_loss_first":[0-9.]*,"train_loss_last":[0-9.]*,.*"adapter":".*runj","dev_arena_peak":[1-9][0-9]*,.*"host_arena_peak":[0-9]*,"io_bytes":[0-9]*' ||
    { fail "--json: no summary object last"; tail -2 "$dir/out"; }

# --stop-after, then --resume with the same flags: the summary names the steps each run made, and the resumed
# run's one validation (after its last step) as one figure, not as a change from itself
"$T" train $FLAGS --steps 4 --stop-after 2 --eval-every 0 --out "$dir/part" >"$dir/out" 2>&1 || { fail "--stop-after 2"; cat "$dir/out"; }
grep -q '^done: 2 steps, train loss [0-9.]* -> [0-9.]*, validation loss [0-9.]* -> [0-9.]*; adapter in' "$dir/out" ||
    { fail "--stop-after 2: not the summary of 2 steps"; cat "$dir/out"; }
# (the same command with --resume, as README has it: the --stop-after it still carries is behind the checkpoint)
"$T" train $FLAGS --steps 4 --stop-after 2 --eval-every 0 --out "$dir/part" --resume "$dir/part" >"$dir/out" 2>&1 || { fail "--resume"; cat "$dir/out"; }
grep -q "note: --stop-after 2 is not after the checkpoint's step 2: the run goes on to --steps 4" "$dir/out" ||
    { fail "--resume with a spent --stop-after: no note"; cat "$dir/out"; }
grep -q '^done: steps 3-4 (resumed after step 2), train loss [0-9.]* -> [0-9.]*, validation loss [0-9.]* after step 4; adapter in' "$dir/out" ||
    { fail "--resume: not the summary of steps 3-4"; cat "$dir/out"; }
# resumed where the run ended: nothing to do, said so (no steps "5-4", no losses of 0)
"$T" train $FLAGS --steps 4 --eval-every 0 --out "$dir/part" --resume "$dir/part" >"$dir/out" 2>&1 || { fail "--resume at the end"; cat "$dir/out"; }
grep -q "^done: no step to make (resumed after step 4, the run's last); adapter in" "$dir/out" ||
    { fail "--resume at the end: not said"; cat "$dir/out"; }
# a run whose last checkpoint was written but not its adapter (the disk filled between the two): resumed at its
# end, it writes the adapter it names, the one the run would have written
cp "$dir/part/adapter_model.safetensors" "$dir/adapter.keep"
rm "$dir/part/adapter_model.safetensors" "$dir/part/adapter_config.json"
"$T" train $FLAGS --steps 4 --eval-every 0 --out "$dir/part" --resume "$dir/part" >"$dir/out" 2>&1 ||
    { fail "--resume at the end, adapter missing"; cat "$dir/out"; }
cmp -s "$dir/adapter.keep" "$dir/part/adapter_model.safetensors" && [ -s "$dir/part/adapter_config.json" ] ||
    fail "--resume at the end did not write the missing adapter"
# the adapter's write failing after the checkpoint's (its temporary name taken by a folder here; a full disk
# alike): the one line says the checkpoint stands and that --resume writes the adapter
mkdir -p "$dir/blocked/adapter_model.safetensors.partial"
expect_error "adapter write fails after the checkpoint" \
    "adapter_model.safetensors: Is a directory; the checkpoint of step 2 in .*blocked is whole: .* --resume .*blocked$" \
    "$T" train $FLAGS --steps 2 --eval-every 0 --out "$dir/blocked"
rmdir "$dir/blocked/adapter_model.safetensors.partial"
expect_ok "--resume writes the adapter" "$T" train $FLAGS --steps 2 --eval-every 0 --out "$dir/blocked" --resume "$dir/blocked"
[ -s "$dir/blocked/adapter_model.safetensors" ] || fail "--resume after a failed adapter write wrote no adapter"
# a store of the same shapes with other weights (another seed) is not the run's model: refused, checkpoint kept
"$T" synth --preset tiny --prune-ratio 0.5 --seed 2 -o "$dir/m2.tier" >/dev/null || fail "synth --seed 2"
cp "$dir/part/checkpoint.bin" "$dir/part.keep"
expect_error "resume on other weights" "trained on another store of these shapes" \
    "$T" train $FLAGS --model "$dir/m2.tier" --steps 4 --eval-every 0 --out "$dir/part" --resume "$dir/part"
cmp -s "$dir/part.keep" "$dir/part/checkpoint.bin" || fail "a refused resume changed the checkpoint"
"$T" train $FLAGS --steps 4 --stop-after 2 --eval-every 0 --out "$dir/part" --force --json >"$dir/out" 2>&1 &&
    "$T" train $FLAGS --steps 4 --eval-every 0 --out "$dir/part" --resume "$dir/part" --json >"$dir/out" 2>&1 ||
    { fail "--resume --json"; cat "$dir/out"; }
tail -1 "$dir/out" | grep -q '^{"done":true,"steps":4,"steps_planned":4,"resumed_after":2,"train_loss_first"' ||
    { fail "--resume --json: no resumed_after in the summary"; tail -1 "$dir/out"; }

# interrupt PID STEP [SIG]: SIGINT (or SIG) once the run has printed step STEP (or at once: STEP now) (its handler is in place by then: a background
# job of a script starts with SIGINT ignored, so an earlier signal would be lost and the 100000-step run go on),
# then wait for it; a run that does not end within 2 minutes is killed (a failure, never a hung test). Sets rc.
interrupt() {
    if [ "$2" != now ]; then # STEP now: at once (the caller waited)
        for i in $(seq 1 1200); do grep -q "^step *$2/" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
        grep -q "^step *$2/" "$dir/sig.out" || fail "no step $2 within 2 minutes"
    fi
    kill -"${3:-INT}" "$1"
    (sleep 120 && kill -KILL "$1") >/dev/null 2>&1 & # its own output elsewhere: nothing waits on a stray sleep
    watchdog=$!
    wait "$1"; rc=$?
    kill "$watchdog" 2>/dev/null
}
# SIGINT: a long run stopped after its first steps writes a checkpoint and exits 130, as a process Ctrl-C ended
# (`train && recover` must not go on with the part-trained adapter); resume continues. Its summary does not call
# the validation before training the last one (the stopped step is not scored).
"$T" train $FLAGS --steps 100000 --save-every 0 --eval-every 0 --out "$dir/sig" >"$dir/sig.out" 2>&1 &
interrupt $! 3
[ $rc -eq 130 ] || fail "SIGINT: exit $rc, not 130"
grep -q "interrupted at step" "$dir/sig.out" || { fail "SIGINT: no message"; cat "$dir/sig.out"; }
grep -q '^done: [0-9]* steps (interrupted), train loss [0-9.]* -> [0-9.]*, validation loss [0-9.]* before training, none after; adapter in' \
    "$dir/sig.out" || { fail "SIGINT: not the summary of an interrupted run"; cat "$dir/sig.out"; }
[ -s "$dir/sig/checkpoint.bin" ] || fail "SIGINT: no checkpoint"
n=$(sed -n 's/^interrupted at step \([0-9]*\).*/\1/p' "$dir/sig.out")
"$T" train $FLAGS --steps $((n + 2)) --save-every 0 --eval-every 0 --out "$dir/sig" --resume "$dir/sig" >"$dir/out" 2>&1
# (a different --steps is refused: the schedule depends on it)
grep -q "other training options" "$dir/out" || { fail "resume with other --steps was not refused"; cat "$dir/out"; }
# SIGHUP (the terminal or ssh session went away) stops the run as SIGINT does, with a checkpoint
rm -f "$dir/sig.out"
"$T" train $FLAGS --steps 100000 --save-every 0 --eval-every 0 --out "$dir/hup" >"$dir/sig.out" 2>&1 &
interrupt $! 2 HUP
[ $rc -eq 129 ] || fail "SIGHUP: exit $rc, not 129"
grep -q "interrupted at step" "$dir/sig.out" || { fail "SIGHUP: no message"; cat "$dir/sig.out"; }
[ -s "$dir/hup/checkpoint.bin" ] || fail "SIGHUP: no checkpoint"
# ... but a run started under nohup (SIGHUP ignored) is meant to outlive its terminal: it trains to the end
rm -f "$dir/sig.out"
nohup "$T" train $FLAGS --steps 30 --save-every 0 --eval-every 0 --out "$dir/nohup" >"$dir/sig.out" 2>&1 &
interrupt $! 2 HUP
[ $rc -eq 0 ] || fail "nohup, SIGHUP: exit $rc"
grep -q "interrupted" "$dir/sig.out" && fail "nohup: SIGHUP stopped the run"
grep -q "^step *30/30" "$dir/sig.out" || { fail "nohup, SIGHUP: the run did not train to its end"; cat "$dir/sig.out"; }
# A stop does not wait for a validation: one under way is cut short (a long one here: 10^8 tokens asked of the
# whole training file). Before step 1 the run ends with nothing written (no --out folder left); after a step, that
# step is checkpointed unscored. The first signal says at once what happens.
"$T" train $FLAGS --steps 100000 --eval-tokens 100000000 --val "$dir/t.tok" --out "$dir/sigval" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 1200); do grep -q "^plan:" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
wait_caught $pid INT || fail "the run never caught SIGINT" # armed after the header lines; the validation takes seconds
interrupt $pid now
[ $rc -eq 1 ] || fail "SIGINT in the validation before step 1: exit $rc, not 1"
grep -q "interrupted before step 1, in the validation before training; nothing was trained or written" "$dir/sig.out" &&
    grep -q "^tiertrain train: stopping before step 1 (a validation under way is cut short); nothing is written" \
        "$dir/sig.out" || { fail "SIGINT in the validation before step 1: not said"; cat "$dir/sig.out"; }
[ -e "$dir/sigval" ] && { fail "SIGINT before step 1 left the --out folder"; ls -la "$dir/sigval"; }
"$T" train $FLAGS --steps 50 --stop-after 2 --eval-every 0 --out "$dir/sigval" >"$dir/out" 2>&1 || { fail "--stop-after 2"; cat "$dir/out"; }
"$T" train $FLAGS --steps 50 --eval-every 3 --eval-tokens 100000000 --val "$dir/t.tok" --out "$dir/sigval" \
    --resume "$dir/sigval" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 1200); do grep -q "^resumed from" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
wait_caught $pid INT || fail "the resumed run never caught SIGINT"
sleep 1 # step 3 takes milliseconds, its validation seconds
interrupt $pid now
[ $rc -eq 130 ] || fail "SIGINT in a validation: exit $rc, not 130"
grep -q "^interrupted at step 3; checkpoint written" "$dir/sig.out" && grep -q "^step *3/50 " "$dir/sig.out" &&
    ! grep -q "^step *3/50 .*val" "$dir/sig.out" || { fail "SIGINT in step 3's validation: not cut short"; cat "$dir/sig.out"; }
# Ctrl-C again quits at once, in a step (a long one here): the exit is SIGINT's, and the folder this run made,
# holding nothing yet but its lock, is gone. SIGTERM then SIGHUP (systemd ending a session; a closed ssh session
# sends HUP twice) is one stop: the step ends and is checkpointed.
# after_notice PID SIG: SIG once the run's first signal has been answered (its line on stderr)
after_notice() {
    for i in $(seq 1 300); do grep -q "^tiertrain train: stopping after the step under way" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
    grep -q "^tiertrain train: stopping after the step under way" "$dir/sig.out" || fail "the first signal was not answered"
    interrupt "$1" now "$2"
}
"$T" train $FLAGS --steps 100000 --batch-tokens 4096 --eval-tokens 64 --out "$dir/twice" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 1200); do grep -q "^step *0/" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
kill -INT $pid
after_notice $pid INT
[ $rc -eq 130 ] || { fail "Ctrl-C twice: exit $rc, not SIGINT's 130"; cat "$dir/sig.out"; }
[ -e "$dir/twice" ] && { fail "Ctrl-C twice left the --out folder"; ls -la "$dir/twice"; }
"$T" train $FLAGS --steps 100000 --batch-tokens 2048 --eval-tokens 64 --out "$dir/termhup" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 1200); do grep -q "^step *0/" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
kill -TERM $pid
after_notice $pid HUP
[ $rc -eq 143 ] && grep -q "^interrupted at step 1; checkpoint written" "$dir/sig.out" && [ -s "$dir/termhup/checkpoint.bin" ] ||
    { fail "SIGTERM then SIGHUP: not one clean stop (exit $rc)"; cat "$dir/sig.out"; }
# an --out whose disk cannot hold one save is refused before the first step (where a tmpfs can be mounted)
mkdir "$dir/tiny-disk"
if mount -t tmpfs -o size=64k tmpfs "$dir/tiny-disk" 2>/dev/null; then
    expect_error "--out too small for a save" "--out .*tiny-disk/run has .* free, but a save (checkpoint and adapter) takes .*; free some space or give another --out" \
        "$T" train $FLAGS --steps 2 --out "$dir/tiny-disk/run"
    grep -q "^step" "$dir/out" && fail "--out too small: it trained first"
    [ -z "$(ls -A "$dir/tiny-disk")" ] || { fail "--out too small: files left"; ls -la "$dir/tiny-disk"; }
    umount "$dir/tiny-disk"
else
    echo "note: no tmpfs could be mounted: the small-disk refusal is not checked"
fi
# the run folder moved away while the run works: the next save fails saying the folder is gone and its last
# checkpoint with it, not "intact" where it was; the moved folder resumes
rm -f "$dir/sig.out"
"$T" train $FLAGS --steps 100000 --save-every 1 --eval-every 0 --out "$dir/mv" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 1200); do grep -q "^step *2/" "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
mv "$dir/mv" "$dir/mv2"
(sleep 120 && kill -KILL $pid) >/dev/null 2>&1 &
wait $pid
rc=$?
[ $rc -eq 1 ] && grep -q "the run folder .*mv is gone (moved or removed while the run worked): its last checkpoint went with it; --resume the folder where it is now" \
    "$dir/sig.out" || { fail "run folder moved: exit $rc, or not said"; tail -2 "$dir/sig.out"; }
# the step whose save failed, plus one: past the checkpoint the moved folder holds, which is the step before, or that
# step's own where the folder moved between its checkpoint and its adapter (a --stop-after at the checkpoint's step
# is passed already, and the resume ran on to --steps: a CI run hung there)
k=$(($(sed -n 's/^step *\([0-9]*\)\/.*/\1/p' "$dir/sig.out" | tail -1) + 1))
expect_ok "resume the moved folder" "$T" train $FLAGS --steps 100000 --stop-after "$k" --save-every 1 --eval-every 0 \
    --out "$dir/mv2" --resume "$dir/mv2"
grep -q "^stopped at step $k; checkpoint written" "$dir/out" || { fail "the moved folder did not resume to step $k"; cat "$dir/out"; }
# --json: the summary says the run was interrupted, and by what, beside the steps it was to make
rm -f "$dir/sig.out"
"$T" train $FLAGS --steps 100000 --save-every 0 --json --out "$dir/sigj" >"$dir/sig.out" 2>&1 &
pid=$!
for i in $(seq 1 1200); do grep -q '^{"step":3,' "$dir/sig.out" 2>/dev/null && break; sleep 0.1; done
interrupt $pid now
[ $rc -eq 130 ] || fail "SIGINT --json: exit $rc, not 130"
tail -1 "$dir/sig.out" | grep -q '^{"done":true,"steps":[0-9]*,"steps_planned":100000,"interrupted":"SIGINT","train_loss_first":.*"val_loss_last":' ||
    { fail "SIGINT --json: the summary does not say interrupted"; tail -2 "$dir/sig.out"; }
# a reader of the output gone (`train | tee log` and Ctrl-C ended tee too) does not end the run: it trains to its
# end and writes its adapter; the exit says the output is incomplete
"$T" train $FLAGS --steps 4 --out "$dir/piped" 2>"$dir/err" | true
[ -s "$dir/piped/adapter_model.safetensors" ] || { fail "train into a closed pipe: no adapter"; cat "$dir/err"; }

# TT_PROFILE_OPS: the op table on stderr at exit (from step 2 on; with one step, everything), the same adapter;
# unset or 0: none.
expect_ok "profiled" env TT_PROFILE_OPS=1 "$T" train $FLAGS --steps 3 --out "$dir/prof"
grep -q '^op profile (TT_PROFILE_OPS, cpu backend), from step 2 on .*validation set apart' "$dir/err" &&
    grep -q '^  linear (dequantize + product) *[1-9]' "$dir/err" && grep -q '^  warm-up and validation: [1-9]' "$dir/err" ||
    { fail "TT_PROFILE_OPS=1: no op table"; cat "$dir/err"; }
expect_ok "not profiled" env TT_PROFILE_OPS=0 "$T" train $FLAGS --steps 3 --out "$dir/noprof"
grep -q 'op profile' "$dir/err" && fail "TT_PROFILE_OPS=0 printed an op table"
cmp -s "$dir/prof/adapter_model.safetensors" "$dir/noprof/adapter_model.safetensors" ||
    fail "the profiled run trained another adapter"
expect_ok "profiled, one step" env TT_PROFILE_OPS=1 "$T" train $FLAGS --steps 1 --out "$dir/prof1"
grep -q '^op profile (TT_PROFILE_OPS, cpu backend), every op (nothing ran after the warm-up' "$dir/err" ||
    { fail "TT_PROFILE_OPS=1 --steps 1: no table of every op"; cat "$dir/err"; }

# --act-dtype bf16: trains, is recorded in the checkpoint, and a resume with f32 activations is refused.
expect_ok "act bf16" "$T" train $FLAGS --steps 2 --act-dtype bf16 --out "$dir/bf"
expect_error "resume with other --act-dtype" "--act-dtype was bf16, now f32" \
    "$T" train $FLAGS --steps 2 --out "$dir/bf" --resume "$dir/bf"
expect_error "bad --act-dtype" "--act-dtype must be f32, bf16 or auto" "$T" train $FLAGS --act-dtype fp8 --out "$dir/bf8"

# Bad input.
cp "$dir/run/checkpoint.bin" "$dir/ck.keep"
expect_error "missing tokens" "nope.tok" "$T" train $FLAGS --data "$dir/nope.tok" --steps 2 --out "$dir/run" --force
# a run refused for its inputs leaves no --out folder it created (nothing half-written), and keeps one it did not
expect_error "missing tokens, new --out" "nope.tok" "$T" train $FLAGS --data "$dir/nope.tok" --steps 2 --out "$dir/fresh"
[ -e "$dir/fresh" ] && fail "a refused run left its new --out folder: $(ls -a "$dir/fresh" | tr '\n' ' ')"
mkdir "$dir/mine"
expect_error "missing tokens, existing --out" "nope.tok" "$T" train $FLAGS --data "$dir/nope.tok" --steps 2 --out "$dir/mine"
[ -d "$dir/mine" ] || fail "a refused run removed an --out folder it did not create"
head -c 100 "$dir/t.tok" >"$dir/trunc.tok"
expect_error "truncated tokens" "trunc.tok" "$T" train $FLAGS --data "$dir/trunc.tok" --steps 2 --out "$dir/run" --force
# changed_during_run NAME CHANGE PATTERN: a run trains on NAME.tok (a copy of t.tok); once it prints its first step,
# CHANGE (a shell command on $f) changes the file; the run must end with exit 1 and one stderr line matching PATTERN
changed_during_run() {
    f="$dir/$1.tok"
    cp "$dir/t.tok" "$f"
    "$T" train $(echo "$FLAGS" | sed "s|$dir/t.tok|$f|") --steps 100000 --save-every 0 --eval-every 0 \
        --out "$dir/$1" >"$dir/$1.out" 2>"$dir/$1.err" &
    pid=$!
    i=0
    while [ $i -lt 1200 ] && ! grep -q '^step' "$dir/$1.out" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    eval "$2"
    (sleep 120 && kill -KILL $pid) >/dev/null 2>&1 &
    watchdog=$!
    wait $pid; rc=$?
    kill $watchdog 2>/dev/null
    [ $rc -eq 1 ] && [ "$(grep -c . "$dir/$1.err")" -eq 1 ] && grep -q "$3" "$dir/$1.err" ||
        { fail "token file changed during the run ($1): exit $rc"; cat "$dir/$1.err"; }
}
# truncated while the run reads it (the file is mapped): one line naming it and exit 1, not a bus error
changed_during_run shrink 'truncate -s 4096 "$f"' "shrink.tok became shorter while it was being read"
# rewritten in place, same size: one line naming it and exit 1 before a step trains on other data (or, as here,
# on ids beyond the vocabulary: that was an assertion abort)
changed_during_run inplace \
    'head -c $(($(wc -c <"$f") - 4096)) /dev/zero | tr "\000" "\377" | dd of="$f" bs=4096 seek=1 conv=notrunc 2>/dev/null' \
    "inplace.tok was modified while this run was reading it"
expect_error "missing checkpoint" "nowhere" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/nowhere" --force
mkdir "$dir/empty"
expect_error "empty checkpoint dir" "checkpoint.bin" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/empty" --force
mkdir "$dir/bad"; cp "$dir/run/checkpoint.bin" "$dir/bad/"
printf 'garbage' | dd of="$dir/bad/checkpoint.bin" bs=1 seek=200 conv=notrunc 2>/dev/null
expect_error "corrupt checkpoint" "corrupt" "$T" train $FLAGS --steps 4 --out "$dir/run" --resume "$dir/bad" --force
expect_error "missing model" "no.tier does not exist" "$T" train $FLAGS --model "$dir/no.tier" --steps 2 --out "$dir/run" --force
expect_error "no --out" "--out DIR is required" "$T" train --model "$dir/m.tier" --data "$dir/t.tok"
expect_error "bad batch" "multiple of --seq" "$T" train $FLAGS --batch-tokens 100 --steps 2 --out "$dir/run" --force
expect_error "bad target" "unknown projection 'qq'" "$T" train $FLAGS --targets q,qq --steps 2 --out "$dir/run" --force
# a validation file tokenized for a bigger vocabulary than the model's
"$T" tokenize --input "$dir/text.txt" --tokenizer tests/fixtures/tokenizer-mini.json -o "$dir/big.tok" >/dev/null 2>&1 ||
    fail "tokenize with the fixture tokenizer"
expect_error "val vocab" "big.tok.val was tokenized for a vocabulary" "$T" train $FLAGS --val "$dir/big.tok.val" --steps 2 --out "$dir/run" --force
echo "a few words" >"$dir/few.txt"
"$T" tokenize --input "$dir/few.txt" --val-frac 0 -o "$dir/few.tok" >/dev/null 2>&1 || fail "tokenize a few words"
expect_error "val shorter than a window" "--val .*few.tok holds [0-9]* tokens, fewer than one --seq 32 window" "$T" train $FLAGS --val "$dir/few.tok" --steps 2 --out "$dir/run" --force
# DATA.val too short (tokenize's split of a small text) is not an error: 1% of DATA is held out instead
cp "$dir/t.tok" "$dir/tt.tok"; cp "$dir/few.tok" "$dir/tt.tok.val"
expect_ok "short DATA.val" "$T" train --model "$dir/m.tier" --data "$dir/tt.tok" --rank 4 --seq 32 --micro-batch 2 --batch-tokens 128 --eval-every 2 --eval-tokens 256 --steps 2 --out "$dir/shortval"
grep -q "holding out the last 1% of --data" "$dir/err" || fail "short DATA.val: no note"
grep -q "validation loss [0-9]" "$dir/out" || { fail "short DATA.val: no validation loss"; cat "$dir/out"; }
: >"$dir/afile"
expect_error "out is a file" "afile" "$T" train $FLAGS --steps 2 --out "$dir/afile"
expect_error "nan alpha" "--alpha must be" "$T" train $FLAGS --alpha nan --steps 2 --out "$dir/run" --force
expect_error "lr beyond float" "--lr must be a finite number" "$T" train $FLAGS --lr 1e39 --steps 2 --out "$dir/run" --force
cmp -s "$dir/ck.keep" "$dir/run/checkpoint.bin" || fail "a failed run changed the last checkpoint"

# train --full: a short run writes a store that verifies and keeps the source's shapes; Ctrl-C writes the
# model reached so far; bad input is one line and writes nothing.
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 -o "$dir/f32.tier" >/dev/null || fail "synth f32"
FULL="--full --model $dir/f32.tier --data $dir/t.tok --seq 32 --micro-batch 2 --batch-tokens 128 --lr 3e-3 --eval-tokens 256"
expect_ok "train --full" "$T" train $FULL --steps 3 --eval-every 0 --out "$dir/full.tier"
grep -q "^step 3/3 .*val" "$dir/out" || { fail "train --full: no final step line with validation"; cat "$dir/out"; }
grep -q "model in $dir/full.tier" "$dir/out" || { fail "train --full: no summary line"; cat "$dir/out"; }
# --json: the steps' objects, then the run's summary as LoRA's (the store written in place of the adapter)
expect_ok "train --full --json" "$T" train $FULL --steps 2 --eval-every 0 --json --out "$dir/fullj.tier"
tail -1 "$dir/out" | grep -q '^{"done":true,"steps":2,"steps_planned":2,"train_loss_first":[0-9.]*,"train_loss_last":[0-9.]*,.*"model":".*fullj.tier"}$' ||
    { fail "train --full --json: no summary object last"; tail -2 "$dir/out"; }
rm -f "$dir/fullj.tier"
# the store's write failing after the last checkpoint (its temporary name taken by a folder; a full disk alike): the
# line says the checkpoint stands and that --resume writes the store, which it then does
mkdir "$dir/fb.tier.partial"
expect_error "train --full: the store's write fails" \
    "fb.tier: Is a directory; the checkpoint of step 2 in .*fbck is whole: .* --resume .*fbck$" \
    "$T" train $FULL --steps 2 --eval-every 0 --out "$dir/fb.tier" --ckpt "$dir/fbck"
rmdir "$dir/fb.tier.partial"
expect_ok "train --full --resume writes the store" "$T" train $FULL --steps 2 --eval-every 0 --out "$dir/fb.tier" \
    --ckpt "$dir/fbck" --resume "$dir/fbck"
[ -s "$dir/fb.tier" ] || fail "train --full --resume after a failed store write wrote no store"
expect_ok "verify the trained store" "$T" verify "$dir/full.tier"
"$T" info "$dir/f32.tier" | grep -v -e "^file" -e "$dir" >"$dir/info.a"
"$T" info "$dir/full.tier" | grep -v -e "^file" -e "$dir" >"$dir/info.b"
cmp -s "$dir/info.a" "$dir/info.b" || { fail "train --full changed the store's shapes, dtypes or map"; diff "$dir/info.a" "$dir/info.b"; }
rm -f "$dir/sig.out" # (a line of an earlier run's would send the signal before this one's handler is in place)
"$T" train $FULL --steps 100000 --eval-every 0 --out "$dir/sigfull.tier" >"$dir/sig.out" 2>&1 &
interrupt $! 2
[ $rc -eq 130 ] || fail "train --full SIGINT: exit $rc, not 130"
grep -q "interrupted" "$dir/sig.out" || { fail "train --full SIGINT: no message"; cat "$dir/sig.out"; }
expect_ok "verify the interrupted store" "$T" verify "$dir/sigfull.tier"
"$T" synth --preset tiny -o "$dir/nf4.tier" >/dev/null || fail "synth nf4"
expect_error "full: NF4 source" "has NF4 weights" "$T" train $FULL --model "$dir/nf4.tier" --steps 2 --out "$dir/x.tier"
# too small for the resident run: it streams, and the smallest streamed plan is larger still
expect_error "full: budget too small" "--hbm 1.00 MiB is too small for tiny" "$T" train $FULL --hbm 1M --steps 2 --out "$dir/x.tier"
grep -q "the resident run does not fit --hbm 1.00 MiB; streaming the layers" "$dir/out" || fail "full: no line saying it streams"
expect_error "full: resume a LoRA run" "was written by LoRA training" "$T" train $FULL --steps 2 --out "$dir/x.tier" --resume "$dir/run"
expect_error "full: out = model" "--out .*f32.tier is the input" "$T" train $FULL --steps 2 --out "$dir/f32.tier"
expect_error "full: out in a missing dir" "the folder .*nodir does not exist" "$T" train $FULL --steps 2 --out "$dir/nodir/x.tier"
grep -q "^step" "$dir/out" && fail "train --full trained before finding that --out cannot be written"
mkdir "$dir/adir"
expect_error "full: out is a directory" "adir is a directory" "$T" train $FULL --steps 2 --out "$dir/adir"
[ -e "$dir/x.tier" ] && fail "a refused train --full left x.tier"
# streamed, train --full plans as plan --full does: --lm-head is taken (host: streamed in chunks, less device)
for h in host device; do
    "$T" train $FULL --steps 1 --eval-every 0 --stream --clip 0 --hbm 20M --lm-head $h --out "$dir/x.tier" --force \
        >"$dir/lh.$h" 2>&1 || { fail "train --full --lm-head $h"; cat "$dir/lh.$h"; }
    "$T" plan --full --model "$dir/f32.tier" --seq 32 --micro-batch 2 --batch-tokens 128 --hbm 20M --lm-head $h \
        >"$dir/plh.$h" 2>&1 || fail "plan --full --lm-head $h"
done
rm -f "$dir/x.tier"
grep -q "lm_head streamed from the host" "$dir/plh.host" && grep -q "lm_head on the device" "$dir/plh.device" ||
    fail "plan --full: --lm-head not as asked"
dh=$(sed -n 's/.*streamed (.*, \([0-9.]*\) MiB device.*/\1/p' "$dir/lh.host")
dd_=$(sed -n 's/.*streamed (.*, \([0-9.]*\) MiB device.*/\1/p' "$dir/lh.device")
[ -n "$dh" ] && [ -n "$dd_" ] && [ "$(echo "$dh $dd_" | awk '{ print ($1 < $2) }')" = 1 ] ||
    { fail "train --full: --lm-head host did not take less device memory ($dh vs $dd_ MiB)"; cat "$dir/lh.host"; }
# plan --full decides as train --full: resident where --hbm holds the run (--host unused), else streamed with the
# resident need named and --clip 0 asked for; train runs resident at that figure and streams 1 MiB below it
PFR="--full --model $dir/f32.tier --seq 32 --micro-batch 2 --batch-tokens 128"
expect_ok "plan --full, resident" "$T" plan $PFR --host 1M
grep -q "^full training of tiny (AdamW), resident: .* on the device .*--host is not used" "$dir/out" ||
    { fail "plan --full: no resident plan without --hbm"; cat "$dir/out"; }
expect_ok "plan --full, streamed" "$T" plan $PFR --hbm 20M
rneed=$(sed -n 's/^note: streamed (the resident run needs --hbm \([0-9.]*\) MiB), .* run it with --clip 0$/\1/p' "$dir/out")
[ -n "$rneed" ] || { fail "plan --full --hbm 20M: no note naming the resident need and --clip 0"; cat "$dir/out"; }
rmb=$(echo "$rneed" | awk '{ print int($1) }')
expect_ok "train --full at plan's resident need" "$T" train $FULL --steps 1 --eval-every 0 --hbm "${rmb}M" --out "$dir/x.tier"
grep -q "streaming the layers" "$dir/out" && fail "train --full streamed at the --hbm plan --full named for the resident run"
expect_error "train --full below it, with --clip" "cannot clip by the global gradient norm: pass --clip 0" \
    "$T" train $FULL --steps 1 --eval-every 0 --hbm "$((rmb - 1))M" --out "$dir/x.tier" --force
rm -f "$dir/x.tier"
# --out or --ckpt without room for what the run writes is refused before step 1, not after the last; a disk that
# fills during the run fails the last checkpoint, and the trained store still goes to --out (where a tmpfs can be
# mounted: root)
mkdir "$dir/fdisk"
if mount -t tmpfs -o size=64k tmpfs "$dir/fdisk" 2>/dev/null; then
    expect_error "full: --out without room" "--out .*fdisk/x.tier has .* free, but the trained store takes" \
        "$T" train $FULL --steps 2 --eval-every 0 --out "$dir/fdisk/x.tier"
    grep -q "^step" "$dir/out" && fail "train --full trained before finding --out without room"
    expect_error "full: --ckpt without room" "--ckpt .*fdisk/ck has .* free, but a checkpoint .* takes" \
        "$T" train $FULL --steps 2 --eval-every 0 --out "$dir/x.tier" --ckpt "$dir/fdisk/ck"
    need=$(sed -n 's/.*a checkpoint .* takes \([0-9]*\)\.[0-9]* MiB.*/\1/p' "$dir/err" | head -1)
    expect_error "full: --out and --ckpt on one disk" "--out .*fdisk/x.tier and --ckpt .*fdisk/ck are on one file" \
        "$T" train $FULL --steps 2 --eval-every 0 --out "$dir/fdisk/x.tier" --ckpt "$dir/fdisk/ck"
    [ -z "$(ls -A "$dir/fdisk")" ] || { fail "full: refused runs left files"; ls -la "$dir/fdisk"; }
    [ -e "$dir/x.tier" ] && fail "full: a refused run left x.tier"
    umount "$dir/fdisk"
    # room for the checkpoint when the run starts, filled while it trains
    if [ -n "$need" ] && mount -t tmpfs -o size=$((need + 2))m tmpfs "$dir/fdisk" 2>/dev/null; then
        # (30 steps: the disk fills after step 2, and the last checkpoint is after step 30, a second later at least)
        "$T" train $FULL --steps 30 --eval-every 0 --save-every 0 --out "$dir/x.tier" --ckpt "$dir/fdisk/ck" \
            >"$dir/fill.out" 2>"$dir/fill.err" &
        pid=$!
        for i in $(seq 1 1200); do grep -q "^step *2/" "$dir/fill.out" 2>/dev/null && break; sleep 0.1; done
        dd if=/dev/zero of="$dir/fdisk/fill" bs=1M count=$((need + 1)) 2>/dev/null
        wait $pid; rc=$?
        [ $rc -eq 1 ] && grep -q "checkpoint.bin failed: no space left.*; the model trained to step 30 is in .*x.tier all the same" \
            "$dir/fill.err" || { fail "full: the last checkpoint failing lost the trained store (exit $rc)"; cat "$dir/fill.err"; }
        expect_ok "full: the store written after a failed checkpoint verifies" "$T" verify "$dir/x.tier"
        rm -f "$dir/x.tier"
        umount "$dir/fdisk"
    else
        fail "full: no checkpoint size in the refusal, or no second tmpfs"
    fi
else
    echo "note: no tmpfs could be mounted: --full's disk-room cases are skipped"
fi
# --ckpt DIR is a run folder as LoRA's --out is: one holding a run (here a LoRA run's) is refused without --resume
# or --force and left as it was; a folder another train is writing is refused, naming it
cp "$dir/run/checkpoint.bin" "$dir/ck.keep"
expect_error "full: --ckpt holds a run" "--ckpt .*/run holds a run" "$T" train $FULL --steps 2 --out "$dir/x.tier" --ckpt "$dir/run"
cmp -s "$dir/ck.keep" "$dir/run/checkpoint.bin" || fail "train --full --ckpt replaced another run's checkpoint"
rm -f "$dir/sig.out"
"$T" train $FULL --steps 100000 --eval-every 0 --save-every 0 --ckpt "$dir/fck" --out "$dir/fbusy.tier" >"$dir/sig.out" 2>&1 &
pid=$!
i=0
while [ $i -lt 1200 ] && ! grep -q '^step' "$dir/sig.out" 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
expect_error "full: --ckpt in use" "another tiertrain (process $pid) is writing .*fck" "$T" train $FULL --steps 2 \
    --ckpt "$dir/fck" --out "$dir/x.tier" --force
interrupt $pid 1
[ $rc -eq 130 ] || fail "train --full --ckpt SIGINT: exit $rc, not 130"
[ -s "$dir/fck/checkpoint.bin" ] || fail "train --full --ckpt: no checkpoint after SIGINT"
# the way on it names works as given: the store --out, written at the stop, is replaced by the resumed run
grep -q "continue with --resume .*fck --force)" "$dir/sig.out" ||
    { fail "train --full --ckpt SIGINT: the resume hint lacks --force"; grep "continue" "$dir/sig.out"; }
"$T" synth --preset tiny --quant f32 --prune-ratio 0.5 --seed 2 -o "$dir/f32b.tier" >/dev/null || fail "synth f32 --seed 2"
expect_error "full: resume on other weights" "trained on another store of these shapes" \
    timeout 120 "$T" train $FULL --model "$dir/f32b.tier" --steps 100000 --eval-every 0 --save-every 0 --ckpt "$dir/fck" \
    --resume "$dir/fck" --out "$dir/fbusy.tier" --force
[ -e "$dir/x.tier" ] && fail "a refused train --full left x.tier"

# --optim galore: GaLore on the projections, its state smaller than AdamW's; the store verifies; the loss falls.
expect_ok "train --full --optim galore" "$T" train $FULL --steps 6 --eval-every 0 --optim galore --galore-rank 16 \
    --galore-update-every 3 --lr 1e-2 --out "$dir/galore.tier"
grep -q "optimizer: GaLore rank 16 (projector every 3 steps, scale 0.25) on [0-9]* of [0-9]* projections" "$dir/out" ||
    { fail "galore: no optimizer line"; cat "$dir/out"; }
pct=$(sed -n 's/.*, \([0-9.]*\)% of AdamW.*/\1/p' "$dir/out")
awk -v p="$pct" 'BEGIN { exit !(p > 0 && p < 60) }' || fail "galore: state is $pct% of AdamW's"
awk '/^step 1\/6/ { a = $4 } /^step 6\/6/ { b = $4 } END { exit !(a > b) }' "$dir/out" || { fail "galore: the loss did not fall"; cat "$dir/out"; }
expect_ok "verify the GaLore-trained store" "$T" verify "$dir/galore.tier"
cmp -s "$dir/galore.tier" "$dir/full.tier" && fail "galore wrote AdamW's store"
expect_error "optim without --full" "--optim galore trains every weight" "$T" train --model "$dir/f32.tier" --data "$dir/t.tok" \
    --out "$dir/never" --optim galore
expect_error "unknown optim" "--optim must be adamw or galore" "$T" train $FULL --optim sgd --out "$dir/x.tier"
expect_error "galore rank" "--galore-rank must be" "$T" train $FULL --optim galore --galore-rank 0 --out "$dir/x.tier"
# a flag given where it has no effect is refused, named (it would be ignored without a word)
expect_error "galore flag without galore" "--galore-scale goes with --optim galore" "$T" train $FULL --galore-scale 0.5 --out "$dir/x.tier"
expect_error "LoRA flag with --full" "--alpha is a LoRA option; --full trains every weight" "$T" train $FULL --alpha 8 --out "$dir/x.tier"
expect_error "distillation flag without --teacher" "--distill-temp goes with --teacher (and --full)" "$T" train $FULL --distill-temp 2 --out "$dir/x.tier"

# --teacher: distillation. A teacher that is the model itself gives KL 0 (distillation alone: loss 0 at step 1);
# an unpruned teacher, half and half: the line says so, the objective falls, the store verifies.
expect_ok "distill from itself" "$T" train $FULL --steps 1 --eval-every 0 --teacher "$dir/f32.tier" --distill-weight 1 \
    --out "$dir/self.tier"
grep -q "^step 1/1  loss 0.0000 " "$dir/out" || { fail "distillation from the model itself: KL not 0"; cat "$dir/out"; }
"$T" synth --preset tiny --quant f32 --seed 7 -o "$dir/teacher.tier" >/dev/null || fail "synth teacher"
expect_ok "train --full --teacher" "$T" train $FULL --steps 6 --eval-every 0 --teacher "$dir/teacher.tier" \
    --distill-temp 2 --out "$dir/kd.tier"
grep -q "^distillation from .*teacher.tier: loss (1 - 0.5) cross-entropy + 0.5 x 2^2 KL(teacher || model)" "$dir/out" ||
    { fail "distillation: no line saying so"; cat "$dir/out"; }
awk '/^step 1\/6/ { a = $4 } /^step 6\/6/ { b = $4 } END { exit !(a > b) }' "$dir/out" || { fail "distillation: the objective did not fall"; cat "$dir/out"; }
expect_ok "verify the distilled store" "$T" verify "$dir/kd.tier"
"$T" synth --preset small --quant f32 --layers 2 -o "$dir/wide.tier" >/dev/null || fail "synth small"
expect_error "teacher of another width" "--teacher .*wide.tier has hidden size 384" "$T" train $FULL --steps 2 \
    --teacher "$dir/wide.tier" --out "$dir/x.tier"
expect_error "teacher without --full" "--teacher distills into every weight" "$T" train --model "$dir/f32.tier" \
    --data "$dir/t.tok" --out "$dir/never" --teacher "$dir/teacher.tier"
expect_error "distill weight" "--distill-weight must be in" "$T" train $FULL --teacher "$dir/teacher.tier" \
    --distill-weight 1.5 --out "$dir/x.tier"
expect_error "missing teacher" "nosuch.tier" "$T" train $FULL --teacher "$dir/nosuch.tier" --out "$dir/x.tier"
# streamed, the teacher on its own stream: the same store as the resident run
expect_ok "distill, resident" "$T" train $FULL --steps 2 --eval-every 0 --clip 0 --teacher "$dir/teacher.tier" --out "$dir/kd-r.tier"
expect_ok "distill, streamed" "$T" train $FULL --steps 2 --eval-every 0 --clip 0 --teacher "$dir/teacher.tier" --stream \
    --out "$dir/kd-s.tier"
cmp -s "$dir/kd-r.tier" "$dir/kd-s.tier" || fail "streamed distillation wrote another store than the resident one"
expect_error "distill, streamed: budget" "with a --teacher: the teacher's smallest plan and the model's together need --hbm" \
    "$T" train $FULL --steps 2 --clip 0 --teacher "$dir/teacher.tier" --hbm 12M --out "$dir/x.tier"
[ -e "$dir/x.tier" ] && fail "a refused distillation left x.tier"
need=$(sed -n 's/.*together need --hbm \([0-9.]* [KMG]i*B\).*/\1/p' "$dir/err")
# plan --full --teacher: the same refusal and smallest budget as train; at that budget both plans fit and train runs
PF="--model $dir/f32.tier --full --seq 32 --micro-batch 2 --batch-tokens 128 --teacher $dir/teacher.tier"
expect_error "plan --full --teacher: budget" "together need --hbm $need" "$T" plan $PF --hbm 12M
# a budget short of the teacher alone names what both need too (the teacher's figure alone would be refused again)
expect_error "plan --full --teacher: short of the teacher alone" "together need --hbm $need" "$T" plan $PF --hbm 1M
expect_error "train --full --teacher: short of the teacher alone" "together need --hbm $need" "$T" train $FULL --steps 1 \
    --clip 0 --teacher "$dir/teacher.tier" --hbm 1M --out "$dir/x.tier"
hb=$(echo "$need" | awk '{ n = $1 + 0; print /GiB/ ? int(n * 1024 + 1) "M" : int(n + 1) "M" }')
# --host short of the teacher alone, or of both: the refusal names what both need together, and that is enough (it
# named the teacher's need alone, or only the teacher's share)
expect_error "plan --full --teacher: --host short of the teacher alone" "together need --host [0-9.]* MiB" \
    "$T" plan $PF --stream --host 1M
hneed=$(sed -n 's/.*together need --host \([0-9.]*\) MiB.*/\1/p' "$dir/err")
expect_error "plan --full --teacher: --host short of both" "together need --host $hneed MiB" "$T" plan $PF --stream \
    --host "$(echo "$hneed" | awk '{ print int($1 - 1) }')M"
expect_ok "plan --full --teacher at the --host named" "$T" plan $PF --stream --host "${hneed}M"
expect_ok "plan --full --teacher" "$T" plan $PF --hbm "$hb"
grep -q "^distillation from .*teacher.tier: the teacher's plan, on its own stream, holds [0-9]* of 4 layers" "$dir/out" ||
    { fail "plan --full --teacher: no line for the teacher's plan"; cat "$dir/out"; }
expect_ok "plan --full --teacher --json" "$T" plan $PF --hbm "$hb" --json
grep -q '"teacher":{"path":".*teacher.tier","dev_bytes":[0-9]*' "$dir/out" || fail "plan --full --teacher --json: no teacher"
expect_ok "train at plan's budget" "$T" train $FULL --steps 1 --eval-every 0 --clip 0 --teacher "$dir/teacher.tier" \
    --hbm "$hb" --out "$dir/kd-b.tier"
expect_error "plan --teacher without --full" "add --full" "$T" plan --model "$dir/f32.tier" --teacher "$dir/teacher.tier"
# plan --full refuses what train --full refuses, with train's sentence (one check, core/fulltrain.c)
same_refusal() { # name, train flags, plan flags
    "$T" train $FULL --steps 1 --out "$dir/x.tier" $2 >/dev/null 2>"$dir/err.train"
    expect_error "plan --full: $1" "has NF4 weights\|has hidden size" "$T" plan --full --seq 32 --micro-batch 2 \
        --batch-tokens 128 $3
    [ "$(sed 's/^tiertrain train: //' "$dir/err.train")" = "$(sed 's/^tiertrain plan: //' "$dir/err")" ] ||
        { fail "plan --full: $1: not train's sentence"; cat "$dir/err.train" "$dir/err"; }
}
same_refusal "NF4 model" "--model $dir/nf4.tier" "--model $dir/nf4.tier"
same_refusal "teacher of another width" "--teacher $dir/wide.tier" "--model $dir/f32.tier --teacher $dir/wide.tier"
expect_error "plan --full --preset --quant nf4" "has NF4 weights" "$T" plan --full --preset tiny --quant nf4
[ -e "$dir/x.tier" ] && fail "a refused train --full left x.tier"

finish test_train_cli
