#!/bin/sh
# tools/bench_io.sh — `make bench`: tiertrain's layer reads against fio on the
# same bytes of the same file, back to back, ROUNDS times each (alternating,
# so drift in a shared machine hits both). The store is a llama3.1-8b NF4 model
# (5.7 GB, written once into $BENCH_DIR, default build/bench), or $STORE.
set -e
T=./tiertrain
D=${BENCH_DIR:-build/bench}
ROUNDS=${ROUNDS:-3}
S=${STORE:-$D/llama3.1-8b-nf4.tier}
mkdir -p "$D"
[ -f "$S" ] || $T synth --preset llama3.1-8b --quant nf4 -o "$S"
command -v fio >/dev/null || { echo "bench: fio is not installed (make deps installs it)"; exit 1; }
json=$($T bench io "$S" --json --no-buffered --no-threads 2>/dev/null | tail -n 1)
off=$(echo "$json" | sed 's/.*"range_offset":\([0-9]*\).*/\1/')
len=$(echo "$json" | sed 's/.*"range_bytes":\([0-9]*\).*/\1/')
echo "store: $S, layer extents at offset $off, $len bytes"
tt_all=""; fio_all=""
for r in $(seq 1 "$ROUNDS"); do
    t=$($T bench io "$S" --qd 32 --chunk 1M --json --no-buffered --no-threads 2>/dev/null | tail -n 1 | sed 's/.*"gbps":\([0-9.]*\).*/\1/' | awk '{printf "%.3f", $1}')
    f=$(fio --name=layers --filename="$S" --readonly --direct=1 --ioengine=io_uring --rw=read --bs=1M \
            --iodepth=32 --offset="$off" --size="$len" --output-format=terse --terse-version=3 | \
        awk -F';' '{ printf "%.3f", $7 * 1024 / 1e9 }')
    echo "round $r: tiertrain bench io $t GB/s, fio $f GB/s"
    tt_all="$tt_all $t"; fio_all="$fio_all $f"
done
median() { echo "$@" | tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mt=$(median $tt_all); mf=$(median $fio_all)
echo "median: tiertrain $mt GB/s, fio $mf GB/s, ratio $(echo "$mt $mf" | awk '{printf "%.2f", $1/$2}')"
