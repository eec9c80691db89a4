#!/usr/bin/env python3
"""tools/tok_crosscheck.py — tiertrain's tokenizer against Hugging Face `tokenizers`.

An optional check (not part of `make test`: it needs the Python package `tokenizers`,
`pip install tokenizers`). For each tokenizer.json and text file given, every non-blank line
(what `tiertrain tokenize --doc-sep line` calls a document) is encoded by Hugging Face
(`Tokenizer.from_file(...).encode(line, add_special_tokens=False)`: no BOS, special-token text
matched as HF does by default, hence tiertrain's `--special`) and by `tiertrain tokenize`, whose
token file holds each document's ids followed by the end-of-text id. Every mismatching line is
counted and the first few are shown; `tiertrain detokenize` must give each line back.

    python3 tools/tok_crosscheck.py ./tiertrain ../shared/data/tokenizers/llama2/tokenizer.json \
        ../shared/data/nlp-corpus.txt tests/fixtures/multilingual.txt

Exit status 0 when every line of every file gives the same ids and decodes back.
"""
import os
import struct
import subprocess
import sys
import tempfile
import time


def read_tok(path):
    with open(path, "rb") as f:
        b = f.read()
    if b[:8] != b"TTTOKENS":
        raise SystemExit(f"{path}: not a token file")
    count, vocab, eot = struct.unpack_from("<QII", b, 16)
    return list(struct.unpack_from(f"<{count}I", b, 32)), eot


def documents(path):
    """The non-blank lines as tokenize --doc-sep line sees them: split at b'\\n', one trailing
    '\\r' dropped, blank = only ASCII whitespace."""
    with open(path, "rb") as f:
        data = f.read()
    out = []
    for line in data.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(b" \t\r\n\v\f"):
            out.append(line)
    return out


# Code point ranges the random lines draw from: ASCII, Latin-1 and extended Latin with combining marks,
# Greek, Cyrillic, Armenian, Hebrew, Arabic (with its digits and marks), Devanagari..Malayalam (vowel signs,
# digits), Sinhala, Thai, Lao, Tibetan, Myanmar, Georgian, Hangul jamo, Ethiopic, Khmer, Mongolian, general
# punctuation and spaces, super/subscripts, currency, letterlike and number forms, arrows, math, box drawing,
# CJK symbols, hiragana, katakana, CJK ideographs, Hangul syllables, private use, fullwidth forms, emoji,
# math alphanumerics, and unassigned stretches (0x0378.., 0x2FE0.., 0x1FB9F.., 0x3FFFD).
RANGES = [(0x20, 0x7E)] * 6 + [(0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x530, 0x58F),
          (0x590, 0x5FF), (0x600, 0x6FF), (0x900, 0xD7F), (0xD80, 0xDFF), (0xE00, 0xEFF), (0xF00, 0xFFF),
          (0x1000, 0x109F), (0x10A0, 0x10FF), (0x1100, 0x11FF), (0x1200, 0x137F), (0x1780, 0x17FF),
          (0x1800, 0x18AF), (0x2000, 0x206F), (0x2070, 0x209F), (0x20A0, 0x20CF), (0x2100, 0x218F),
          (0x2190, 0x22FF), (0x2500, 0x257F), (0x3000, 0x303F), (0x3040, 0x30FF), (0x4E00, 0x4FFF),
          (0xAC00, 0xAD00), (0xE000, 0xE0FF), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x1D400, 0x1D7FF),
          (0x0378, 0x037F), (0x2FE0, 0x2FEF), (0x1FB9F, 0x1FBAF), (0x3FFF0, 0x3FFFD)]


def random_lines(n, seed):
    import random
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rnd.randint(1, 60)):
            if rnd.random() < 0.15:
                chars.append(" " * rnd.randint(1, 3))
                continue
            lo, hi = rnd.choice(RANGES)
            cp = rnd.randint(lo, hi)
            chars.append(chr(cp) * rnd.randint(1, 4 if cp < 0x80 else 2))
        line = "".join(chars).replace("\n", " ").replace("\r", " ").replace("\x85", " ").replace("\u2028", " ")
        out.append(line.replace("\u2029", " "))
    return out


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    tiertrain, tok_json, texts = sys.argv[1], sys.argv[2], sys.argv[3:]
    try:
        from tokenizers import Tokenizer
        import tokenizers
    except ImportError:
        print("tok_crosscheck: the Python package `tokenizers` is missing (pip install tokenizers)")
        return 77
    hf = Tokenizer.from_file(tok_json)
    bad_total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for text in texts:
            if text.startswith("random:"):  # random:N:SEED — N random lines (RANGES), written to a file first
                _, n, seed = text.split(":")
                lines = random_lines(int(n), int(seed))
                text = os.path.join(tmp, f"random-{n}-{seed}.txt")
                with open(text, "w", encoding="utf-8", errors="surrogatepass", newline="\n") as f:
                    f.write("\n".join(lines) + "\n")
            docs = documents(text)
            out = os.path.join(tmp, "t.tok")
            t0 = time.time()
            r = subprocess.run([tiertrain, "tokenize", "--input", text, "--tokenizer", tok_json, "-o", out,
                                "--val-frac", "0", "--special", "--force"], capture_output=True, text=True)
            ours_s = time.time() - t0
            if r.returncode != 0:
                print(r.stderr)
                return 1
            ids, eot = read_tok(out)
            t0 = time.time()
            ref = [e.ids for e in hf.encode_batch([d.decode("utf-8", "replace") for d in docs],
                                                  add_special_tokens=False)]
            hf_s = time.time() - t0
            pos, bad = 0, 0
            for n, (d, want) in enumerate(zip(docs, ref)):
                got = ids[pos:pos + len(want)]
                ok = got == want and pos + len(want) < len(ids) and ids[pos + len(want)] == eot
                if not ok:
                    bad += 1
                    if bad <= 5:
                        print(f"  line {n + 1}: {d[:80]!r}\n    HF        {want[:24]}\n    tiertrain {got[:24]}")
                    # resynchronise on the next end-of-text
                    while pos < len(ids) and ids[pos] != eot:
                        pos += 1
                    pos += 1
                else:
                    pos += len(want) + 1
            # decode back: tiertrain detokenize gives the documents, one per line
            r = subprocess.run([tiertrain, "detokenize", out, "--tokenizer", tok_json], capture_output=True)
            back = r.stdout.split(b"\n")
            undecoded = sum(1 for d, b in zip(docs, back) if d != b) + abs(len(back) - 1 - len(docs))
            mb = sum(len(d) for d in docs) / 1e6
            print(f"{os.path.basename(os.path.dirname(tok_json)) or tok_json}: {text}: {len(docs)} lines, "
                  f"{bad} with other ids than HF tokenizers {tokenizers.__version__}, {undecoded} not decoded back; "
                  f"tiertrain tokenize {mb / ours_s:.1f} MB/s (whole command), HF encode_batch {mb / hf_s:.1f} MB/s")
            bad_total += bad + undecoded
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
