#!/bin/sh
# tools/peer_libs.sh — bitsandbytes for the QLoRA peer (tools/peer_peft.py
# --quant nf4) on the GPU machine, which has torch, transformers and peft but
# not bitsandbytes, and no network. Here, where pip reaches the package index:
# downloads the pinned wheel and unpacks its Python package into
# build/pylib/bitsandbytes with only the CUDA 13 and CPU libraries (about 9 MB
# instead of the wheel's 130), for `run`'s carry. tools/gpu_check.sh's peer
# check puts build/pylib on PYTHONPATH when it is there. Optional: never part of
# `make test`.
#
#   sh tools/peer_libs.sh [VERSION]      (default 0.50.2)
set -u
cd "$(dirname "$0")/.."
V=${1:-0.50.2}
D=build/pylib
TMP=$(mktemp -d) || exit 1
trap 'rm -rf "$TMP"' EXIT
if ! python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_24_x86_64 \
    --python-version 3.12 -d "$TMP" "bitsandbytes==$V" 2>"$TMP/err"; then
    echo "peer_libs: could not download bitsandbytes $V from the package index: $(tail -1 "$TMP/err")" >&2
    exit 1
fi
W=$(ls "$TMP"/bitsandbytes-*.whl 2>/dev/null | head -1)
[ -n "$W" ] || { echo "peer_libs: pip gave no bitsandbytes wheel" >&2; exit 1; }
rm -rf "$D/bitsandbytes" "$D/bitsandbytes.new"
mkdir -p "$D/bitsandbytes.new"
# the package without the other CUDA versions', ROCm's and XPU's libraries
python3 - "$W" "$D/bitsandbytes.new" <<'EOF' || { echo "peer_libs: could not unpack $W" >&2; exit 1; }
import os, re, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
keep = re.compile(r"^bitsandbytes/(?!libbitsandbytes_)|^bitsandbytes/libbitsandbytes_(cpu|cuda13\d)\.so$")
n = 0
with zipfile.ZipFile(whl) as z:
    for i in z.infolist():
        if i.is_dir() or not keep.match(i.filename):
            continue
        dst = os.path.join(out, i.filename[len("bitsandbytes/"):])
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        with z.open(i) as f, open(dst, "wb") as g:
            g.write(f.read())
        n += i.file_size
print("peer_libs: %.1f MB unpacked" % (n / 1e6))
EOF
mv "$D/bitsandbytes.new" "$D/bitsandbytes"
echo "$V" >"$D/bitsandbytes/TIERTRAIN_PEER_VERSION"
echo "peer_libs: bitsandbytes $V in $D ($(du -sh "$D" | cut -f1)); carry [\"$D\"] with the bundle"
