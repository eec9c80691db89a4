#!/usr/bin/env python3
"""tools/format_check.py — an independent reader of the files tiertrain writes,
written from docs/FORMAT.md alone (Python 3 standard library only), so that the
document is tested the way an outside engineer would use it.

    python3 tools/format_check.py [--store S] [--export-of S] [--data TOK] [--val TOK] [--params-of S] PATH...

Each PATH is recognised by its magic or its contents: a `.tier` store, a token
file (versions 1 and 2), a `checkpoint.bin`, a `.safetensors` file, a PEFT
adapter directory (adapter_config.json) or a Hugging Face checkpoint directory
(config.json). Every field the document describes is checked, every checksum
recomputed (XXH3-64, implemented below), every extent decoded (lz4 pages,
NF4 with and without double quant, bf16, f32) into float values.
--store S.tier    cross-checks adapters and checkpoints against S's shapes (and
                  the checkpoint's weights fingerprint against S's extents);
--export-of S     checks that an HF directory's tensors are S's decoded values
                  (exactly for F32, rounded to nearest even for BF16);
--data TOK        checks a checkpoint's data_tokens / data_hash against TOK;
--val TOK         checks a checkpoint's val_tokens / val_hash against TOK (the
                  validation file of a one-source run);
--params-of S     checks a full-training checkpoint's parameters against the
                  store S that run wrote at the same step.
Prints a short summary per file; exits 1 with one message naming the file and
the field on the first violation of the document, 2 on bad usage.
"""
import array
import json
import math
import os
import re
import struct
import sys

M64 = (1 << 64) - 1


class Bad(Exception):
    """A violation of docs/FORMAT.md."""


def need(cond, msg):
    if not cond:
        raise Bad(msg)


# ---------------------------------------------------------------- XXH3-64, seed 0
# The reference algorithm (Cyan4973/xxHash, XXH3_64bits) for the default secret.
SECRET = bytes.fromhex(
    "b8fe6c3923a44bbe7c01812cf721ad1cded46de9839097db7240a4a4b7b3671f"
    "cb79e64eccc0e578825ad07dccff7221b8084674f743248ee03590e6813a264c"
    "3c2852bb91c300cb88d0658b1b532ea371644897a20df94e3819ef46a9deacd8"
    "a8fa763fe39c343ff9dcbbc7c70b4f1d8a51e04bcdb45931c89f7ec9d9787364"
    "eac5ac8334d3ebc3c581a0fffa1363eb170ddd51b7f0da49d316552629d4689e"
    "2b16be587d47a1fc8ff8b8d17ad031ce45cb3a8f95160428afd7fbcabb4b407e")
P32_1, P32_2, P32_3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
P64_1, P64_2, P64_3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
P64_4, P64_5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5
PMX1, PMX2 = 0x165667919E3779F9, 0x9FB21C651E98DF25


def _r64(b, o):
    return struct.unpack_from("<Q", b, o)[0]


def _r32(b, o):
    return struct.unpack_from("<I", b, o)[0]


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _fold(a, b):
    p = a * b
    return (p & M64) ^ (p >> 64)


def _avalanche(h):
    h ^= h >> 37
    h = (h * PMX1) & M64
    return h ^ (h >> 32)


def _xxh64_avalanche(h):
    h ^= h >> 33
    h = (h * P64_2) & M64
    h ^= h >> 29
    h = (h * P64_3) & M64
    return h ^ (h >> 32)


def _mix16(b, o, so):
    return _fold(_r64(b, o) ^ _r64(SECRET, so), _r64(b, o + 8) ^ _r64(SECRET, so + 8))


def xxh3_64(b):
    n = len(b)
    if n == 0:
        return _xxh64_avalanche(_r64(SECRET, 56) ^ _r64(SECRET, 64))
    if n <= 3:
        comb = (b[0] << 16) | (b[n >> 1] << 24) | b[n - 1] | (n << 8)
        return _xxh64_avalanche(comb ^ (_r32(SECRET, 0) ^ _r32(SECRET, 4)))
    if n <= 8:
        x = (_r32(b, n - 4) + (_r32(b, 0) << 32)) ^ (_r64(SECRET, 8) ^ _r64(SECRET, 16))
        x ^= _rotl(x, 49) ^ _rotl(x, 24)
        x = (x * PMX2) & M64
        x ^= (x >> 35) + n
        x = (x * PMX2) & M64
        return x ^ (x >> 28)
    if n <= 16:
        lo = _r64(b, 0) ^ (_r64(SECRET, 24) ^ _r64(SECRET, 32))
        hi = _r64(b, n - 8) ^ (_r64(SECRET, 40) ^ _r64(SECRET, 48))
        swapped = int.from_bytes(lo.to_bytes(8, "little"), "big")
        return _avalanche((n + swapped + hi + _fold(lo, hi)) & M64)
    if n <= 128:
        acc = n * P64_1
        pairs = [(0, 0)]
        if n > 32:
            pairs.append((16, 32))
        if n > 64:
            pairs.append((32, 64))
        if n > 96:
            pairs.append((48, 96))
        for i, s in pairs:
            acc += _mix16(b, i, s) + _mix16(b, n - 16 - i, s + 16)
        return _avalanche(acc & M64)
    if n <= 240:
        acc = n * P64_1
        for i in range(8):
            acc += _mix16(b, 16 * i, 16 * i)
        acc = _avalanche(acc & M64)
        end = _mix16(b, n - 16, 136 - 17)
        for i in range(8, n // 16):
            end += _mix16(b, 16 * i, 16 * (i - 8) + 3)
        return _avalanche((acc + end) & M64)
    return _xxh3_long(b)


def _xxh3_long(b):
    n = len(b)
    acc = [P32_3, P64_1, P64_2, P64_3, P64_4, P32_2, P64_5, P32_1]
    key = [struct.unpack_from("<8Q", SECRET, 8 * s) for s in range(17)]
    words = struct.unpack_from("<%dQ" % (n // 8), b)

    def stripe(w, k):
        for i in range(8):
            dk = w[i] ^ k[i]
            acc[i ^ 1] += w[i]
            acc[i] += (dk & 0xFFFFFFFF) * (dk >> 32)

    per_block = (len(SECRET) - 64) // 8          # 16 stripes of 64 bytes
    nb = (n - 1) // (64 * per_block)
    scr = struct.unpack_from("<8Q", SECRET, len(SECRET) - 64)
    for blk in range(nb):
        for s in range(per_block):
            o = (blk * per_block + s) * 8
            stripe(words[o:o + 8], key[s])
        for i in range(8):
            a = acc[i] & M64
            a ^= a >> 47
            acc[i] = ((a ^ scr[i]) * P32_1) & M64
    last = ((n - 1) - 64 * per_block * nb) // 64
    for s in range(last):
        o = (nb * per_block + s) * 8
        stripe(words[o:o + 8], key[s])
    stripe(struct.unpack_from("<8Q", b, n - 64), struct.unpack_from("<8Q", SECRET, len(SECRET) - 64 - 7))
    acc = [a & M64 for a in acc]
    r = n * P64_1
    for i in range(4):
        r += _fold(acc[2 * i] ^ _r64(SECRET, 11 + 16 * i), acc[2 * i + 1] ^ _r64(SECRET, 11 + 16 * i + 8))
    return _avalanche(r & M64)


# ---------------------------------------------------------------- LZ4 block format
def lz4_length(src, i, nibble, past_end):
    """A token's length nibble and, when it is 15, the bytes that extend it (each 255 says another follows):
    (length, the index after them)."""
    n = nibble
    if nibble == 15:
        while True:
            need(i < len(src), past_end)
            n += src[i]
            i += 1
            if src[i - 1] != 255:
                break
    return n, i


def lz4_block_decode(src, raw_size, what):
    out = bytearray()
    i, n = 0, len(src)
    while True:
        need(i < n, "%s: lz4 block ends without its last literals" % what)
        tok = src[i]
        i += 1
        lit, i = lz4_length(src, i, tok >> 4, "%s: lz4 literal length runs past the block" % what)
        need(i + lit <= n, "%s: lz4 literals run past the block" % what)
        out += src[i:i + lit]
        i += lit
        if i == n:
            break                      # the last sequence has literals only
        need(i + 2 <= n, "%s: lz4 match offset runs past the block" % what)
        off = src[i] | (src[i + 1] << 8)
        i += 2
        ml, i = lz4_length(src, i, tok & 15, "%s: lz4 match length runs past the block" % what)
        ml += 4
        need(0 < off <= len(out), "%s: lz4 match offset %d outside the output" % (what, off))
        start = len(out) - off
        for k in range(ml):
            out.append(out[start + k])
        need(len(out) <= raw_size, "%s: lz4 page decodes to more than %d bytes" % (what, raw_size))
    need(len(out) == raw_size, "%s: lz4 page decodes to %d bytes, not %d" % (what, len(out), raw_size))
    return bytes(out)


# ---------------------------------------------------------------- numbers
def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_list(values):
    """Round each double to the nearest f32 (the values come back as exact doubles)."""
    return array.array("f", values).tolist()


def decode_f32(b):
    return array.array("f", b).tolist() if sys.byteorder == "little" else list(struct.unpack("<%df" % (len(b) // 4), b))


def decode_bf16(b):
    hs = struct.unpack("<%dH" % (len(b) // 2), b)
    return decode_f32(struct.pack("<%dI" % len(hs), *[h << 16 for h in hs]))


def bf16_round(values):
    """f32 values -> the bf16 values as f32 (round to nearest even), as the document says."""
    bits = struct.unpack("<%dI" % len(values), struct.pack("<%df" % len(values), *values))
    out = [((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16 for u in bits]
    return decode_f32(struct.pack("<%dI" % len(out), *out))


def align(x, a):
    return (x + a - 1) // a * a


# QLoRA's NF4 code book (bitsandbytes, float32 values)
NF4 = f32_list([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])


def dynamic_map():
    """bitsandbytes create_dynamic_map(signed=True), float32, as docs/FORMAT.md
    spells it out: 7 decades of means of linearly spaced points, both signs,
    then 0 and 1, sorted."""
    data = []
    for i in range(7):
        steps = 2 ** i + 1
        start, end = f32(0.1), 1.0
        step = f32(f32(end - start) / (steps - 1))
        # one rounding per point (fused multiply-add): step * k and the sum are exact in double
        bnd = [f32(start + step * k) if k < steps // 2 else f32(end - step * (steps - k - 1))
               for k in range(steps)]
        means = [f32(f32(bnd[k] + bnd[k + 1]) / 2.0) for k in range(steps - 1)]
        scale = f32(10.0 ** (-6 + i))
        data += [f32(scale * m) for m in means] + [f32(-scale * m) for m in means]
    data += [0.0, 1.0]
    assert len(data) == 256
    return sorted(data)


DMAP = dynamic_map()


def nf4_bytes(n, dq):
    nb = (n + 63) // 64
    a = align((n + 1) // 2, 16)
    if not dq:
        return a + align(4 * nb, 16)
    return align(align(align(a + nb, 16) + 4 * ((nb + 255) // 256), 16) + 4, 16)


def decode_nf4(blob, n, dq, what):
    nb = (n + 63) // 64
    nc = (n + 1) // 2
    a = align(nc, 16)
    codes = blob[:nc]
    need(all(x == 0 for x in blob[nc:a]), "%s: NF4 padding after the codes is not zero" % what)
    if dq:
        q = blob[a:a + nb]
        o2 = align(a + nb, 16)
        need(all(x == 0 for x in blob[a + nb:o2]), "%s: NF4 padding after qabsmax is not zero" % what)
        n2 = (nb + 255) // 256
        absmax2 = decode_f32(blob[o2:o2 + 4 * n2])
        oo = align(o2 + 4 * n2, 16)
        need(all(x == 0 for x in blob[o2 + 4 * n2:oo]), "%s: NF4 padding after absmax2 is not zero" % what)
        offset = decode_f32(blob[oo:oo + 4])[0]
        need(all(x == 0 for x in blob[oo + 4:]), "%s: NF4 padding after offset is not zero" % what)
        need(all(math.isfinite(v) for v in absmax2) and math.isfinite(offset),
             "%s: NF4 absmax2/offset not finite" % what)
        absmax = [f32(f32(DMAP[q[i]] * absmax2[i // 256]) + offset) for i in range(nb)]
    else:
        absmax = decode_f32(blob[a:a + 4 * nb])
        need(all(x == 0 for x in blob[a + 4 * nb:]), "%s: NF4 padding after absmax is not zero" % what)
    need(all(math.isfinite(v) and v >= 0 for v in absmax), "%s: an NF4 absmax is negative or not finite" % what)
    if n % 2:
        need(codes[-1] & 15 == 0, "%s: the unused low nibble of the last NF4 byte is not zero" % what)
    vals = []
    for byte in codes:
        vals.append(NF4[byte >> 4])
        vals.append(NF4[byte & 15])
    del vals[n:]
    return f32_list([v * absmax[i >> 6] for i, v in enumerate(vals)])


# ---------------------------------------------------------------- .tier stores
DTYPES = {1: "f32", 2: "bf16", 3: "nf4", 4: "nf4-dq"}


def tensor_bytes(dtype, n):
    return {1: 4 * n, 2: 2 * n}[dtype] if dtype in (1, 2) else nf4_bytes(n, dtype == 4)


def cstr(b, what):
    z = b.find(b"\0")
    need(z >= 0, "%s is not NUL-terminated" % what)
    need(all(x == 0 for x in b[z:]), "%s: bytes after its NUL are not zero" % what)
    return b[:z].decode("utf-8")


def model_table(cfg, layers):
    """[(name, rows, cols, ndim, kind, extent)] in the document's table order."""
    h, hd = cfg["hidden"], cfg["head_dim"]
    t = [("model.embed_tokens.weight", cfg["vocab"], h, 2, "embed", 0)]
    for l, (nh, nkv, ffn, _) in enumerate(layers):
        p = "model.layers.%d." % l
        e = l + 1
        t += [(p + "input_layernorm.weight", h, 1, 1, "norm", e),
              (p + "self_attn.q_proj.weight", nh * hd, h, 2, "proj", e),
              (p + "self_attn.k_proj.weight", nkv * hd, h, 2, "proj", e),
              (p + "self_attn.v_proj.weight", nkv * hd, h, 2, "proj", e),
              (p + "self_attn.o_proj.weight", h, nh * hd, 2, "proj", e),
              (p + "post_attention_layernorm.weight", h, 1, 1, "norm", e),
              (p + "mlp.gate_proj.weight", ffn, h, 2, "proj", e),
              (p + "mlp.up_proj.weight", ffn, h, 2, "proj", e),
              (p + "mlp.down_proj.weight", h, ffn, 2, "proj", e)]
    e = len(layers) + 1
    t.append(("model.norm.weight", h, 1, 1, "norm", e))
    if not cfg["tie"]:
        t.append(("lm_head.weight", cfg["vocab"], h, 2, "embed", e))
    return t


def check_tier(path, decode=True):
    what = path
    with open(path, "rb") as f:
        data = f.read()
    need(len(data) >= 128, "%s: shorter than the 128-byte header" % what)
    (magic, version, hbytes, meta_off, meta_size, data_off, file_size, n_tensors, n_extents,
     meta_ck, flags) = struct.unpack_from("<8sIIQQQQIIQI", data, 0)
    need(magic == b"TIERSTOR", "%s: magic %r, not TIERSTOR" % (what, magic))
    need(_r64(data, 120) == xxh3_64(data[:120]), "%s: header_checksum is not XXH3-64 of bytes 0..119" % what)
    need(version == 1, "%s: version %d, not 1" % (what, version))
    need(hbytes == 128, "%s: header_bytes %d, not 128" % (what, hbytes))
    need(meta_off == 128, "%s: meta_offset %d, not 128" % (what, meta_off))
    need(data[68:120] == bytes(52), "%s: reserved header bytes 68..119 are not zero" % what)
    need(flags & ~3 == 0, "%s: unknown flags bits 0x%x" % (what, flags))
    need(file_size == len(data), "%s: file_size %d but the file has %d bytes" % (what, file_size, len(data)))
    need(file_size % 4096 == 0, "%s: file_size %d is not a multiple of 4096" % (what, file_size))
    need(data_off % 4096 == 0 and data_off >= 128 + meta_size,
         "%s: data_offset %d is not a multiple of 4096 at or after 128 + meta_size" % (what, data_off))
    need(128 + meta_size <= len(data), "%s: metadata runs past the end of the file" % what)
    meta = data[128:128 + meta_size]
    need(xxh3_64(meta) == meta_ck, "%s: meta_checksum is not XXH3-64 of the metadata" % what)

    # config record
    c = struct.unpack_from("<11I2fI3fI", meta, 0)
    cfg = dict(n_layers=c[0], hidden=c[1], vocab=c[2], head_dim=c[3], n_heads=c[4], n_kv=c[5], ffn=c[6],
               max_pos=c[7], tie=c[8], bos=c[9], eos=c[10], eps=c[11], theta=c[12], rope_type=c[13],
               rope_factor=c[14], low=c[15], high=c[16], rope_orig=c[17])
    cfg["name"] = cstr(meta[72:104], "%s: config name" % what)
    need(meta[104:128] == bytes(24), "%s: config reserved bytes are not zero" % what)
    L = cfg["n_layers"]
    need(1 <= L <= 1024, "%s: n_layers %d outside 1..1024" % (what, L))
    need(cfg["hidden"] > 0 and cfg["vocab"] > 0 and cfg["head_dim"] > 0 and cfg["head_dim"] % 2 == 0,
         "%s: hidden, vocab must be > 0 and head_dim even" % what)
    need(cfg["n_heads"] * cfg["head_dim"] == cfg["hidden"], "%s: n_heads x head_dim != hidden" % what)
    need(cfg["n_kv"] > 0 and cfg["n_heads"] % cfg["n_kv"] == 0, "%s: n_kv_heads does not divide n_heads" % what)
    need(cfg["tie"] in (0, 1), "%s: tie_embeddings %d is not 0/1" % (what, cfg["tie"]))
    need(cfg["bos"] < cfg["vocab"] and cfg["eos"] < cfg["vocab"], "%s: bos_id/eos_id not below vocab" % what)
    need(0 < cfg["eps"] < 1, "%s: rms_eps %g outside (0, 1)" % (what, cfg["eps"]))
    need(cfg["rope_type"] in (0, 1), "%s: rope_type %d is not 0/1" % (what, cfg["rope_type"]))
    group = cfg["n_heads"] // cfg["n_kv"]
    T = 9 * L + 2 + (0 if cfg["tie"] else 1)
    E = L + 2
    need(n_tensors == T, "%s: n_tensors %d, the model has %d" % (what, n_tensors, T))
    need(n_extents == E, "%s: n_extents %d, not n_layers + 2 = %d" % (what, n_extents, E))

    # layer records
    pos = 128
    need(len(meta) >= pos + 16 * L + 48 * E + 112 * T, "%s: meta_size %d too small for the directory" % (what, meta_size))
    layers = []
    for l in range(L):
        nh, nkv, ffn, pr = struct.unpack_from("<4I", meta, pos + 16 * l)
        need(pr in (0, 1), "%s: layer %d pruned = %d" % (what, l, pr))
        if pr == 0:
            need((nh, nkv, ffn) == (cfg["n_heads"], cfg["n_kv"], cfg["ffn"]),
                 "%s: layer %d has dims other than the model's but pruned = 0" % (what, l))
        need(0 < nkv <= cfg["n_kv"] and 0 < ffn <= cfg["ffn"] and nh == nkv * group,
             "%s: layer %d dims (%d heads, %d kv, ffn %d) break the GQA / size rules" % (what, l, nh, nkv, ffn))
        layers.append((nh, nkv, ffn, pr))
    pos += 16 * L

    extents = []
    for e in range(E):
        ex = struct.unpack_from("<QQQQIIII", meta, pos + 48 * e)
        extents.append(ex)
    pos += 48 * E

    table = model_table(cfg, layers)
    tensors = []
    for i, (name, rows, cols, ndim, kind, ext) in enumerate(table):
        o = pos + 112 * i
        tname = cstr(meta[o:o + 64], "%s: tensor %d name" % (what, i))
        dt, te, tnd, tres, trows, tcols, toff, tnb = struct.unpack_from("<IIIIQQQQ", meta, o + 64)
        w = "%s: tensor %s" % (what, name)
        need(tname == name, "%s: tensor %d is %r, the table says %r" % (what, i, tname, name))
        need(dt in DTYPES, "%s dtype %d unknown" % (w, dt))
        need(te == ext, "%s in extent %d, the table says %d" % (w, te, ext))
        need(tnd == ndim and tres == 0, "%s: ndim %d (want %d) or reserved not 0" % (w, tnd, ndim))
        need((trows, tcols) == (rows, cols), "%s shape (%d, %d), want (%d, %d)" % (w, trows, tcols, rows, cols))
        if kind == "norm":
            need(dt == 1, "%s: a norm must be f32, is %s" % (w, DTYPES[dt]))
        elif kind == "embed":
            need(dt in (1, 2), "%s: embedding/lm_head must be f32 or bf16, is %s" % (w, DTYPES[dt]))
        need(toff % 256 == 0, "%s offset %d not a multiple of 256" % (w, toff))
        need(tnb == tensor_bytes(dt, rows * cols), "%s nbytes %d, want bytes(%s, %d) = %d"
             % (w, tnb, DTYPES[dt], rows * cols, tensor_bytes(dt, rows * cols)))
        tensors.append(dict(name=name, dtype=dt, extent=te, rows=rows, cols=cols, offset=toff, nbytes=tnb))
    pos += 112 * T

    kept = {}
    if flags & 1:
        for l, (nh, nkv, ffn, pr) in enumerate(layers):
            if not pr:
                continue
            need(pos + 4 * (nkv + ffn) <= len(meta), "%s: pruning map runs past the metadata" % what)
            kv = list(struct.unpack_from("<%dI" % nkv, meta, pos))
            ch = list(struct.unpack_from("<%dI" % ffn, meta, pos + 4 * nkv))
            pos += 4 * (nkv + ffn)
            for lst, lim, nm in ((kv, cfg["n_kv"], "KV heads"), (ch, cfg["ffn"], "FFN channels")):
                need(all(a < b for a, b in zip(lst, lst[1:])) and lst[-1] < lim,
                     "%s: layer %d kept %s not strictly increasing below %d" % (what, l, nm, lim))
            kept[l] = (kv, ch)
    source = None
    if flags & 2:
        need(pos + 4 <= len(meta), "%s: source record runs past the metadata" % what)
        sn = _r32(meta, pos)
        need(1 <= sn <= 1024 and pos + 4 + sn <= len(meta), "%s: source length %d" % (what, sn))
        source = meta[pos + 4:pos + 4 + sn].decode("utf-8")
        need(all(ord(ch) >= 32 and ord(ch) != 127 for ch in source), "%s: control character in source" % what)
        pos += 4 + sn
    need(pos == meta_size, "%s: meta_size %d, the directory needs %d" % (what, meta_size, pos))

    # extents: placement, checksums, decoding, tensor placement
    need(all(x == 0 for x in data[128 + meta_size:data_off]), "%s: padding before data_offset is not zero" % what)
    prev_end = data_off
    raw_total = 0
    values = {}
    ti = 0
    any_lz4 = False
    for e, (off, stored, raw, ck, codec, res, first, nt) in enumerate(extents):
        w = "%s: extent %d" % (what, e)
        need(off % 4096 == 0 and off >= prev_end, "%s offset %d not aligned or before the previous end %d" % (w, off, prev_end))
        need(all(x == 0 for x in data[prev_end:off]), "%s: gap before it is not zero" % w)
        need(off + stored <= file_size, "%s runs past file_size" % w)
        need(res == 0 and codec in (0, 1), "%s: codec %d or reserved %d" % (w, codec, res))
        need(xxh3_64(data[off:off + stored]) == ck, "%s: checksum is not XXH3-64 of its stored bytes" % w)
        want = [i for i, t in enumerate(tensors) if t["extent"] == e]
        need(first == ti and nt == len(want) and want == list(range(first, first + nt)),
             "%s: first_tensor %d, n_tensors %d, the table says %d, %d" % (w, first, nt, ti, len(want)))
        ti += nt
        blob = data[off:off + stored]
        if codec == 0:
            need(raw == stored, "%s: raw %d != stored %d for codec 0" % (w, raw, stored))
        else:
            any_lz4 = True
            need(1 <= e <= L, "%s: lz4 on the embedding or head extent" % w)
            blob = decode_lz4_extent(blob, raw, w)
        prev_end = off + stored
        # tensors inside the decoded extent
        end = 0
        for i in want:
            t = tensors[i]
            need(t["offset"] == align(end, 256), "%s: tensor %s at %d, not right after the previous one (%d)"
                 % (w, t["name"], t["offset"], align(end, 256)))
            need(all(x == 0 for x in blob[end:t["offset"]]), "%s: padding before %s not zero" % (w, t["name"]))
            end = t["offset"] + t["nbytes"]
            need(end <= raw, "%s: tensor %s runs past the extent's raw size" % (w, t["name"]))
            if decode:
                b = blob[t["offset"]:end]
                n = t["rows"] * t["cols"]
                if t["dtype"] == 1:
                    v = decode_f32(b)
                elif t["dtype"] == 2:
                    v = decode_bf16(b)
                else:
                    v = decode_nf4(b, n, t["dtype"] == 4, "%s: %s" % (w, t["name"]))
                need(all(math.isfinite(x) for x in v), "%s: %s has a non-finite value" % (w, t["name"]))
                values[t["name"]] = v
        need(raw == align(end, 256), "%s: raw %d, its tensors need %d" % (w, raw, align(end, 256)))
        need(all(x == 0 for x in blob[end:raw]), "%s: padding after its last tensor not zero" % w)
        raw_total += align(raw, 4096)
    need(all(x == 0 for x in data[prev_end:]), "%s: bytes after the last extent are not zero" % what)
    need(align(prev_end, 4096) == file_size, "%s: file_size %d, the last extent ends at %d" % (what, file_size, prev_end))
    # the size formula
    formula_meta = 128 + 16 * L + 48 * E + 112 * T + 4 * sum(kv + f for (_, kv, f, p) in layers if p and flags & 1)
    need(data_off == align(128 + meta_size, 4096), "%s: data_offset %d, the formula gives %d"
         % (what, data_off, align(128 + meta_size, 4096)))
    if not any_lz4:
        need(file_size == data_off + raw_total, "%s: file_size %d, the formula gives %d" % (what, file_size, data_off + raw_total))
    info = dict(cfg=cfg, layers=layers, extents=extents, tensors=tensors, kept=kept, source=source,
                values=values, meta_size=meta_size, formula_meta=formula_meta)
    proj = sorted({DTYPES[t["dtype"]] for t in tensors if ".layers." in t["name"] and "norm" not in t["name"]})
    print("%s: tier v1, %s, %d layers (%d pruned), hidden %d, vocab %d, %d tensors, projections %s, %d lz4 extents%s%s; "
          "checksums ok%s" % (path, cfg["name"], L, sum(p for *_, p in layers), cfg["hidden"], cfg["vocab"], T,
                              "/".join(proj), sum(1 for x in extents if x[4] == 1),
                              ", pruning map" if flags & 1 else "", ", source %r" % source if source else "",
                              ", %d values decoded" % sum(len(v) for v in values.values()) if decode else ""))
    return info


def decode_lz4_extent(blob, raw, w):
    need(len(blob) >= 24, "%s: lz4 header truncated" % w)
    magic, page, raw_len, npages, res = struct.unpack_from("<IIQII", blob, 0)
    need(magic == 0x50345A4C, "%s: lz4 magic 0x%08x" % (w, magic))
    need(page == 65536 and raw_len == raw and res == 0, "%s: lz4 page_size %d, raw_len %d, reserved %d" % (w, page, raw_len, res))
    need(npages == (raw_len + page - 1) // page, "%s: npages %d for raw_len %d" % (w, npages, raw_len))
    need(len(blob) >= 24 + 4 * npages, "%s: lz4 page table truncated" % w)
    csize = struct.unpack_from("<%dI" % npages, blob, 24)
    p = 24 + 4 * npages
    out = bytearray()
    for k, cs in enumerate(csize):
        psz = min(page, raw_len - k * page)
        need(p + cs <= len(blob), "%s: lz4 page %d runs past the extent" % (w, k))
        src = blob[p:p + cs]
        out += src if cs == psz else lz4_block_decode(src, psz, "%s page %d" % (w, k))
        p += cs
    need(p == len(blob), "%s: %d stored bytes after the last lz4 page" % (w, len(blob) - p))
    return bytes(out)


# ---------------------------------------------------------------- token files
def check_tok(path):
    with open(path, "rb") as f:
        data = f.read()
    need(len(data) >= 32, "%s: shorter than the 32-byte header" % path)
    magic, ver, dt, count, vocab, eot = struct.unpack_from("<8sIIQII", data, 0)
    need(magic == b"TTTOKENS", "%s: magic %r" % (path, magic))
    need(ver in (1, 2), "%s: version %d" % (path, ver))
    need(dt == 1, "%s: dtype %d, not 1 (u32)" % (path, dt))
    need(vocab > 0 and eot < vocab, "%s: vocab_size %d / eot_id %d" % (path, vocab, eot))
    per = 4 if ver == 1 else 5
    need(len(data) == 32 + per * count, "%s: %d bytes, version %d with count %d needs %d"
         % (path, len(data), ver, count, 32 + per * count))
    toks = struct.unpack_from("<%dI" % count, data, 32)
    bad = [i for i, t in enumerate(toks) if t >= vocab]
    need(not bad, "%s: token %d is %d, not below vocab_size %d" % (path, bad[0] if bad else 0, toks[bad[0]] if bad else 0, vocab))
    need(count == 0 or toks[-1] == eot, "%s: the last token is not eot_id (every document ends with it)" % path)
    docs = sum(1 for t in toks if t == eot)
    extra = ""
    if ver == 2:
        fl = data[32 + 4 * count:]
        need(all(x & ~3 == 0 for x in fl), "%s: flag bits other than 0 and 1 set" % path)
        need(count == 0 or fl[0] & 2, "%s: bit 1 (example start) not set on the first token" % path)
        starts = [i for i in range(count) if fl[i] & 2]
        need(starts == [0] + [i + 1 for i in range(count - 1) if toks[i] == eot],
             "%s: examples do not start at the first token and after each end-of-text" % path)
        need(all(fl[i] & 1 for i in range(count) if toks[i] == eot),
             "%s: an example's end-of-text is not a training target" % path)
        extra = ", %d examples, %d target tokens" % (sum(1 for x in fl if x & 2), sum(1 for x in fl if x & 1))
    print("%s: token file v%d, %d tokens, vocab %d, eot %d, %d documents%s" % (path, ver, count, vocab, eot, docs, extra))
    return dict(version=ver, tokens=toks, vocab=vocab, eot=eot, flags=data[32 + 4 * count:] if ver == 2 else None)


# ---------------------------------------------------------------- checkpoint.bin
CK_V1 = [("step", "Q"), ("seed", "Q"), ("model_fp", "Q"), ("n_params", "Q"), ("real_bytes", "I"), ("rank", "I"),
         ("targets", "I"), ("alpha", "f"), ("dropout", "f"), ("steps", "I"), ("seq", "I"), ("micro_batch", "I"),
         ("accum", "I"), ("warmup", "I"), ("lr", "f"), ("min_lr", "f"), ("wd", "f"), ("b1", "f"), ("b2", "f"),
         ("eps", "f"), ("clip", "f"), ("pad", "I"), ("tokens_seen", "Q"), ("data_tokens", "Q"), ("data_hash", "Q"),
         ("threads", "I"), ("act_bf16", "I")]                                     # 136 bytes
CK_V2 = [("rslora", "I"), ("no_pack", "I")]                                       # 144
CK_V3 = [("mix_n", "I"), ("mix_mode", "I"), ("mix_every", "I"), ("mix_tau", "f")] + \
        [(k, c * 16) for k, c in (("mix_base", "d"), ("mix_w", "d"), ("mix_ref", "d"),
                                  ("mix_tokens", "Q"), ("mix_hash", "Q"))]        # 800
CK_V4 = [("full", "I"), ("optim", "I"), ("galore_rank", "I"), ("galore_every", "I"), ("galore_scale", "f"),
         ("reserved", "I")]                                                       # 824
CK_V5 = [("weights_fp", "Q")]                                                     # 832
CK_V6 = [("val_tokens", "Q"), ("val_hash", "Q"), ("eval_tokens", "I"), ("reserved2", "I")]  # 856


def ckpt_state(rec):
    st = {}
    fields = CK_V1 + (CK_V2 if len(rec) >= 144 else []) + (CK_V3 if len(rec) >= 800 else []) + \
        (CK_V4 if len(rec) >= 824 else []) + (CK_V5 if len(rec) >= 832 else []) + (CK_V6 if len(rec) >= 856 else [])
    fmt = "<" + "".join(c for _, c in fields)
    assert struct.calcsize(fmt) == len(rec), (struct.calcsize(fmt), len(rec))
    vals = list(struct.unpack(fmt, rec))
    for k, c in fields:
        n = len(c)
        st[k] = vals[0] if n == 1 else vals[:n]
        del vals[:n]
    return st


def config_fingerprint(store):
    """FNV-1a 64 over the config's shape fields and the layer records (the model fingerprint)."""
    c = store["cfg"]
    b = struct.pack("<9I2f4f", c["n_layers"], c["hidden"], c["vocab"], c["head_dim"], c["n_heads"], c["n_kv"],
                    c["ffn"], c["tie"], c["rope_type"], c["theta"], c["eps"], c["rope_factor"], c["low"], c["high"],
                    float(c["rope_orig"]))
    b += b"".join(struct.pack("<4I", *lay) for lay in store["layers"])
    h = 0xCBF29CE484222325
    for x in b:
        h = ((h ^ x) * 0x100000001B3) & M64
    return h


def base_fingerprint(store):
    """tiertrain_base: XXH3-64 of the model fingerprint (u64), then each mapped layer's index and kept lists."""
    b = struct.pack("<Q", config_fingerprint(store))
    for l in sorted(store["kept"]):
        kv, ch = store["kept"][l]
        b += struct.pack("<I%dI%dI" % (len(kv), len(ch)), l, *(kv + ch))
    return xxh3_64(b) or 1


def weights_fingerprint(store):
    """XXH3-64 over each extent's (checksum, decoded size) as u64 pairs; 0 becomes 1."""
    h = xxh3_64(b"".join(struct.pack("<QQ", e[3], e[2]) for e in store["extents"]))
    return h or 1


def token_hash(tok):
    b = struct.pack("<%dI" % len(tok["tokens"]), *tok["tokens"])
    h = xxh3_64(b)
    if tok["flags"] is not None:
        h ^= (xxh3_64(bytes(tok["flags"])) * 0x9E3779B97F4A7C15) & M64
    return h


def check_ckpt(path, store=None, tok=None, params_of=None, val=None):
    with open(path, "rb") as f:
        data = f.read()
    need(len(data) >= 32, "%s: shorter than the 32-byte header" % path)
    magic, ver, S, payload, ck = struct.unpack_from("<8sIIQQ", data, 0)
    need(magic == b"TTCKPT\0\0", "%s: magic %r" % (path, magic))
    need(ver == 1, "%s: version %d" % (path, ver))
    need(S in (136, 144, 800, 824, 832, 856), "%s: state record size %d" % (path, S))
    need(payload == len(data) - 32, "%s: payload bytes %d, file size - 32 = %d" % (path, payload, len(data) - 32))
    need(xxh3_64(data[32:]) == ck, "%s: payload checksum is not XXH3-64 of the payload" % path)
    st = ckpt_state(data[32:32 + S])
    n, rb = st["n_params"], st["real_bytes"]
    need(rb in (4, 8), "%s: bytes per parameter %d" % (path, rb))
    need(payload == S + n * rb + 2 * n * 4, "%s: payload %d, S + n x (%d + 8) = %d" % (path, payload, rb, S + n * (rb + 8)))
    need(st["pad"] == 0, "%s: bytes 100..103 of the state record are not zero" % path)
    need(st["act_bf16"] in (0, 1) and st.get("rslora", 0) in (0, 1) and st.get("no_pack", 0) in (0, 1),
         "%s: act_bf16 / rslora / no_pack not 0/1" % path)
    full = st.get("full", 0)
    need(full in (0, 1) and st.get("reserved", 0) == 0, "%s: full %d / reserved not 0" % (path, full))
    mix_n = st.get("mix_n", 0)
    need(mix_n == 0 or 2 <= mix_n <= 16, "%s: mix_n %d" % (path, mix_n))
    if mix_n == 0:
        need(all(all(x == 0 for x in st.get(k, [])) for k in ("mix_base", "mix_w", "mix_ref", "mix_tokens", "mix_hash"))
             and st.get("mix_mode", 0) == st.get("mix_every", 0) == 0 and st.get("mix_tau", 0) == 0,
             "%s: mixture fields not zero for one source" % path)
    else:
        for k in ("mix_base", "mix_w", "mix_ref", "mix_tokens", "mix_hash"):
            need(all(x == 0 for x in st[k][mix_n:]), "%s: %s entries past mix_n not zero" % (path, k))
        need(st["data_tokens"] == sum(st["mix_tokens"][:mix_n]), "%s: data_tokens is not the sum of mix_tokens" % path)
        need(st["data_hash"] == xxh3_64(struct.pack("<%dQ" % mix_n, *st["mix_hash"][:mix_n])),
             "%s: data_hash is not XXH3-64 of mix_hash[0..mix_n)" % path)
    if full:
        need(st["rank"] == 0 and rb == 4 and st["optim"] in (0, 1), "%s: full training with rank %d, %d bytes, optim %d"
             % (path, st["rank"], rb, st["optim"]))
    else:
        need(st["rank"] > 0 and 0 < st["targets"] < 128, "%s: LoRA rank %d, target mask 0x%x" % (path, st["rank"], st["targets"]))
    if S == 832:
        need(st["weights_fp"] != 0, "%s: weights_fp is 0" % path)
    if S == 856:
        need(st["val_hash"] != 0 and st["val_tokens"] > 0 and st["eval_tokens"] > 0 and st["reserved2"] == 0,
             "%s: S = 856 with val_hash %d, val_tokens %d, eval_tokens %d, reserved %d" %
             (path, st["val_hash"], st["val_tokens"], st["eval_tokens"], st["reserved2"]))
    what = "LoRA r %d, targets 0x%x" % (st["rank"], st["targets"]) if not full else \
        "full training, %s" % ("AdamW", "GaLore")[st["optim"]]
    extra = []
    if store:
        cfg = store["cfg"]
        if full:
            want = sum(t["rows"] * t["cols"] for t in store["tensors"] if t["name"] != "lm_head.weight"
                       and not (cfg["tie"] and t["name"] == "model.embed_tokens.weight"))
            need(st["optim"] == 1 or n == want, "%s: n_params %d, the store's trainable tensors hold %d" % (path, n, want))
        else:
            tg = [p for i, p in enumerate(PROJ) if st["targets"] >> i & 1]
            want = sum(st["rank"] * sum(proj_dims(cfg, lay, p)) for lay in store["layers"] for p in tg)
            need(n == want, "%s: n_params %d, the store's shapes give %d" % (path, n, want))
        need(st["model_fp"] == config_fingerprint(store), "%s: model fingerprint is not the store's" % path)
        extra.append("model fingerprint matches the store")
        if S >= 832 and st["weights_fp"]:
            need(st["weights_fp"] == weights_fingerprint(store), "%s: weights_fp is not the store's" % path)
            extra.append("weights_fp matches the store")
    if tok:
        need(st["data_tokens"] == len(tok["tokens"]) and st["data_hash"] == token_hash(tok),
             "%s: data_tokens / data_hash are not the token file's" % path)
        extra.append("data hash matches the token file")
    if val:
        need(S == 856 and st["val_tokens"] == len(val["tokens"]) and st["val_hash"] == (token_hash(val) or 1),
             "%s: val_tokens / val_hash are not the validation file's" % path)
        extra.append("validation hash matches the validation file")
    if full and params_of:
        # params: every trainable tensor's f32 weights in the store's tensor order
        params = decode_f32(data[32 + S:32 + S + 4 * n])
        k = 0
        for t in params_of["tensors"]:
            if t["name"] == "lm_head.weight" or (params_of["cfg"]["tie"] and t["name"] == "model.embed_tokens.weight"):
                continue
            cnt = t["rows"] * t["cols"]
            need(params[k:k + cnt] == params_of["values"][t["name"]], "%s: parameters at %d are not %s of the trained store"
                 % (path, k, t["name"]))
            k += cnt
        extra.append("parameters equal the trained store's weights")
    d = os.path.dirname(path) or "."
    if not full and rb == 4 and os.path.exists(os.path.join(d, "adapter_model.safetensors")) and store:
        # the adapter of the same step holds the same values, in PEFT's names
        ad = check_safetensors(os.path.join(d, "adapter_model.safetensors"), "sorted", quiet=True)["tensors"]
        params = decode_f32(data[32 + S:32 + S + 4 * n])
        k = 0
        for l, lay in enumerate(store["layers"]):
            for p in [p for i, p in enumerate(PROJ) if st["targets"] >> i & 1]:
                fin, fout = proj_dims(store["cfg"], lay, p)
                for ab, cnt in (("lora_A", st["rank"] * fin), ("lora_B", fout * st["rank"])):
                    name = "base_model.model.model.layers.%d.%s.%s.%s.weight" % (l, "mlp" if p in PROJ[4:] else "self_attn", p, ab)
                    need(name in ad and ad[name][1] == params[k:k + cnt],
                         "%s: LoRA parameters at %d are not the adapter's %s" % (path, k, name))
                    k += cnt
        extra.append("LoRA parameters equal the adapter's tensors")
    print("%s: checkpoint v1, state record %d bytes, step %d, %s, %d parameters x %d bytes, checksum ok%s"
          % (path, S, st["step"], what, n, rb, "".join("; " + x for x in extra)))
    return st


# ---------------------------------------------------------------- safetensors
ST_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2, "F16": 2,
           "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "C64": 8, "F64": 8, "I64": 8, "U64": 8}
ST_ORDER = "U64 I64 F64 C64 F32 U32 I32 BF16 F16 U16 I16 F8_E8M0 F8_E4M3 F8_E5M2 I8 U8 BOOL".split()


def _no_dups(pairs):
    keys = [k for k, _ in pairs]
    need(len(keys) == len(set(keys)), "repeated key in the JSON header")
    return dict(pairs)


def check_safetensors(path, order=None, quiet=False):
    """order: None (any writer), "sorted" (st_write: the reference's order) or a
    list of names (export's streaming writer: the store's table order)."""
    with open(path, "rb") as f:
        data = f.read()
    need(len(data) >= 8, "%s: shorter than 8 bytes" % path)
    N = _r64(data, 0)
    need(N <= 100000000 and 8 + N <= len(data), "%s: header size %d" % (path, N))
    raw = data[8:8 + N]
    try:
        hdr = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_dups)
    except (UnicodeDecodeError, ValueError) as ex:
        raise Bad("%s: header is not valid UTF-8 JSON (%s)" % (path, ex))
    except Bad as ex:
        raise Bad("%s: %s" % (path, ex))
    need(isinstance(hdr, dict), "%s: header is not an object" % path)
    meta = hdr.get("__metadata__", {})
    need(isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values()),
         "%s: __metadata__ is not an object of strings" % path)
    ents = []
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        need("\0" not in k, "%s: NUL in a key" % path)
        w = "%s: tensor %s" % (path, k)
        need(isinstance(v, dict) and v.get("dtype") in ST_SIZE, "%s: dtype %r" % (w, v.get("dtype") if isinstance(v, dict) else v))
        sh, do = v.get("shape"), v.get("data_offsets")
        need(isinstance(sh, list) and len(sh) <= 8 and all(type(x) is int and x >= 0 for x in sh), "%s: shape %r" % (w, sh))
        need(isinstance(do, list) and len(do) == 2 and all(type(x) is int and x >= 0 for x in do) and do[0] <= do[1],
             "%s: data_offsets %r" % (w, do))
        need(do[1] - do[0] == math.prod(sh) * ST_SIZE[v["dtype"]], "%s: %d bytes for shape %r" % (w, do[1] - do[0], sh))
        ents.append((do[0], do[1], k, v))
    ents.sort()
    end = 0
    for b, e, k, v in ents:
        need(b == end, "%s: tensor %s begins at %d, the previous ended at %d" % (path, k, b, end))
        end = e
    need(8 + N + end == len(data), "%s: data region ends at %d, the file at %d" % (path, 8 + N + end, len(data)))
    tensors = {}
    for b, e, k, v in ents:
        blob = data[8 + N + b:8 + N + e]
        if v["dtype"] == "F32":
            tensors[k] = (v["shape"], decode_f32(blob), "F32")
        elif v["dtype"] == "BF16":
            tensors[k] = (v["shape"], decode_bf16(blob), "BF16")
        else:
            tensors[k] = (v["shape"], None, v["dtype"])
    if order is not None:
        need(N % 8 == 0, "%s: header size %d not a multiple of 8" % (path, N))
        if order == "sorted":
            order = [x[2] for x in sorted(ents, key=lambda x: (ST_ORDER.index(x[3]["dtype"]), x[2].encode()))]
        need(order == [x[2] for x in ents], "%s: tensors not laid out in the documented order" % path)
        obj = {}
        if "__metadata__" in hdr:
            obj["__metadata__"] = meta
        for b, e, k, v in ents:
            obj[k] = {"dtype": v["dtype"], "shape": v["shape"], "data_offsets": v["data_offsets"]}
        want = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        want += b" " * (align(len(want), 8) - len(want))
        need(raw == want, "%s: header is not the compact JSON the reference writes (keys in data order, "
                          "__metadata__ first, padded with spaces)" % path)
    if not quiet:
        print("%s: safetensors, %d tensors, %d data bytes, metadata %s" % (path, len(ents), end, json.dumps(meta)))
    return dict(meta=meta, tensors=tensors)


# ---------------------------------------------------------------- PEFT adapters
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def proj_dims(cfg, layer, p):
    """(in, out) of projection p in a layer with (n_heads, n_kv, ffn)."""
    h, hd = cfg["hidden"], cfg["head_dim"]
    nh, nkv, ffn = layer[:3]
    return {"q_proj": (h, nh * hd), "k_proj": (h, nkv * hd), "v_proj": (h, nkv * hd), "o_proj": (nh * hd, h),
            "gate_proj": (h, ffn), "up_proj": (h, ffn), "down_proj": (ffn, h)}[p]


def check_peft(d, store=None):
    cpath = os.path.join(d, "adapter_config.json")
    with open(cpath, "rb") as f:
        craw = f.read()
    try:
        cfgj = json.loads(craw.decode("utf-8"), object_pairs_hook=_no_dups)
    except (ValueError, UnicodeDecodeError) as ex:
        raise Bad("%s: not JSON (%s)" % (cpath, ex))
    need(craw.decode() == json.dumps(cfgj, indent=2, sort_keys=True),
         "%s: not written as json.dump(indent=2, sort_keys=True)" % cpath)
    written = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": False,
               "inference_mode": True, "init_lora_weights": True, "modules_to_save": None,
               "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
               "use_dora": False, "revision": None}
    for k, v in written.items():
        need(cfgj.get(k, "absent") == v, "%s: %s is %r, the document says tiertrain writes %r" % (cpath, k, cfgj.get(k, "absent"), v))
    r = cfgj.get("r")
    need(type(r) is int and 1 <= r <= 65536, "%s: r %r" % (cpath, r))
    a = cfgj.get("lora_alpha")
    need(type(a) in (int, float) and (type(a) is int) == (a == int(a)), "%s: lora_alpha %r (an integer when integral)" % (cpath, a))
    need(type(cfgj.get("lora_dropout")) in (int, float), "%s: lora_dropout" % cpath)
    need(cfgj.get("use_rslora") in (False, True), "%s: use_rslora %r" % (cpath, cfgj.get("use_rslora")))
    tm = cfgj.get("target_modules")
    need(isinstance(tm, list) and tm and all(p in PROJ for p in tm) and tm == [p for p in PROJ if p in tm],
         "%s: target_modules %r not in the order q k v o gate up down" % (cpath, tm))
    b = cfgj.get("base_model_name_or_path")
    need(b is None or isinstance(b, str), "%s: base_model_name_or_path %r" % (cpath, b))
    st = check_safetensors(os.path.join(d, "adapter_model.safetensors"), "sorted")
    meta = st["meta"]
    need(meta.get("format") == "pt", "%s: adapter metadata format %r" % (d, meta.get("format")))
    fp = meta.get("tiertrain_base")
    need(fp is None or (len(fp) == 16 and all(ch in "0123456789abcdef" for ch in fp) and int(fp, 16) != 0),
         "%s: tiertrain_base %r is not 16 hex digits (non-zero)" % (d, fp))
    lm = meta.get("tiertrain_lora")
    if lm is not None:
        m = re.fullmatch(r"lora_alpha=(\S+) use_rslora=(true|false)", lm)
        need(m is not None, "%s: tiertrain_lora %r is not 'lora_alpha=A use_rslora=true|false'" % (d, lm))
        need(struct.unpack("<f", struct.pack("<f", float(m.group(1)))) == struct.unpack("<f", struct.pack("<f", float(a)))
             and (m.group(2) == "true") == cfgj.get("use_rslora"),
             "%s: tiertrain_lora %r, the config's lora_alpha %r use_rslora %r" % (d, lm, a, cfgj.get("use_rslora")))
    layers = {}
    for name, (shape, _, _) in st["tensors"].items():
        parts = name.split(".")
        ok = (len(parts) == 9 and parts[:4] == ["base_model", "model", "model", "layers"] and parts[4].isdigit()
              and parts[5] in ("self_attn", "mlp") and parts[6] in PROJ and parts[7] in ("lora_A", "lora_B")
              and parts[8] == "weight" and (parts[5] == "mlp") == (parts[6] in PROJ[4:]))
        need(ok, "%s: tensor name %r is not one of the documented forms" % (d, name))
        need(parts[6] in tm, "%s: %s is not in target_modules" % (d, name))
        need(len(shape) == 2, "%s: %s is not 2-D" % (d, name))
        need((shape[0] if parts[7] == "lora_A" else shape[1]) == r, "%s: %s shape %r, r = %d" % (d, name, shape, r))
        layers.setdefault(int(parts[4]), {})[(parts[6], parts[7])] = shape
    nl = max(layers) + 1
    for l in range(nl):
        for p in tm:
            need((p, "lora_A") in layers.get(l, {}) and (p, "lora_B") in layers.get(l, {}),
                 "%s: layer %d %s lacks lora_A or lora_B" % (d, l, p))
    if store:
        cfg = store["cfg"]
        need(fp is None or int(fp, 16) == base_fingerprint(store), "%s: tiertrain_base %s, the store's is %016x"
             % (d, fp, base_fingerprint(store)))
        need(nl == cfg["n_layers"], "%s: %d layers, the store has %d" % (d, nl, cfg["n_layers"]))
        for l in range(nl):
            for p in tm:
                fin, fout = proj_dims(cfg, store["layers"][l], p)
                need(layers[l][(p, "lora_A")] == [r, fin] and layers[l][(p, "lora_B")] == [fout, r],
                     "%s: layer %d %s shapes %r %r, the store wants (r, %d) (%d, r)"
                     % (d, l, p, layers[l][(p, "lora_A")], layers[l][(p, "lora_B")], fin, fout))
    print("%s: PEFT adapter, r %d, alpha %s, targets %s, %d layers, base %r, tiertrain_base %s"
          % (d, r, a, ",".join(tm), nl, b, fp))
    return dict(cfg=cfgj, st=st, r=r, targets=tm, n_layers=nl)


# ---------------------------------------------------------------- HF checkpoint directories
def check_hf(d, store=None):
    cpath = os.path.join(d, "config.json")
    with open(cpath) as f:
        cj = json.load(f, object_pairs_hook=_no_dups)
    need(cj.get("architectures") == ["LlamaForCausalLM"] and cj.get("model_type") == "llama",
         "%s: architectures / model_type" % cpath)
    need(cj.get("hidden_act") == "silu", "%s: hidden_act %r" % (cpath, cj.get("hidden_act")))
    for k in ("attention_bias", "mlp_bias"):
        need(not cj.get(k), "%s: %s is true" % (cpath, k))
    need("quantization_config" not in cj, "%s: quantization_config present" % cpath)
    h, nh = cj["hidden_size"], cj["num_attention_heads"]
    hd = cj.get("head_dim", h // nh)
    need(nh * hd == h, "%s: num_attention_heads x head_dim != hidden_size" % cpath)
    rs = cj.get("rope_scaling")
    need(rs is None or rs.get("rope_type", rs.get("type")) in ("default", "llama3"), "%s: rope_scaling %r" % (cpath, rs))
    L = cj["num_hidden_layers"]
    tt = cj.get("tiertrain")
    dims = [(nh, cj["num_key_value_heads"], cj["intermediate_size"])] * L
    if tt is not None:
        need(tt.get("format_version") == 1 and len(tt["layers"]) == L, "%s: tiertrain object" % cpath)
        dims = [(x["num_attention_heads"], x["num_key_value_heads"], x["intermediate_size"]) for x in tt["layers"]]
    need(os.path.exists(os.path.join(d, "model.safetensors")), "%s: no model.safetensors" % d)
    cfg = dict(hidden=h, head_dim=hd, vocab=cj["vocab_size"], tie=1 if cj.get("tie_word_embeddings") else 0)
    table = model_table(cfg, [(a, b, c, 0) for a, b, c in dims])
    st = check_safetensors(os.path.join(d, "model.safetensors"), [t[0] for t in table])
    need(sorted(st["tensors"]) == sorted(t[0] for t in table),
         "%s: tensor names differ from the model table (%d vs %d)" % (d, len(st["tensors"]), len(table)))
    for name, rows, cols, ndim, kind, _ in table:
        shape = st["tensors"][name][0]
        need(shape == ([rows, cols] if ndim == 2 else [rows]), "%s: %s shape %r, want (%d, %d)" % (d, name, shape, rows, cols))
    exact = 0
    if store:
        sc = store["cfg"]
        need((sc["n_layers"], sc["hidden"], sc["vocab"], sc["n_heads"], sc["n_kv"], sc["ffn"]) ==
             (L, h, cj["vocab_size"], nh, cj["num_key_value_heads"], cj["intermediate_size"]),
             "%s: config.json dims differ from the store's" % cpath)
        need((cj["bos_token_id"], cj["eos_token_id"], cj["max_position_embeddings"], hd, f32(cj["rms_norm_eps"]),
              f32(cj["rope_theta"]), bool(cj.get("tie_word_embeddings"))) ==
             (sc["bos"], sc["eos"], sc["max_pos"], sc["head_dim"], sc["eps"], sc["theta"], bool(sc["tie"])),
             "%s: config.json fields differ from the store's config record" % cpath)
        need((rs is not None) == (sc["rope_type"] == 1), "%s: rope_scaling vs the store's rope_type" % cpath)
        pruned = any(p for *_, p in store["layers"])
        need((tt is not None) == pruned, "%s: a \"tiertrain\" object %s, the store has %d pruned layers"
             % (cpath, "present" if tt else "absent", sum(p for *_, p in store["layers"])))
        for l, x in enumerate(tt["layers"] if tt else []):
            nh_, nkv_, ffn_, pr_ = store["layers"][l]
            need(x["pruned"] == bool(pr_) and (x["num_attention_heads"], x["num_key_value_heads"], x["intermediate_size"])
                 == (nh_, nkv_, ffn_), "%s: tiertrain.layers[%d] differs from the store's layer record" % (cpath, l))
            if l in store["kept"]:
                need([x.get("kept_kv_heads"), x.get("kept_ffn_channels")] == list(store["kept"][l]),
                     "%s: tiertrain.layers[%d] kept lists differ from the store's pruning map" % (cpath, l))
            else:
                need("kept_kv_heads" not in x and "kept_ffn_channels" not in x,
                     "%s: tiertrain.layers[%d] has kept lists the store has not" % (cpath, l))
        need(tt is None or tt.get("source") == store["source"], "%s: tiertrain.source %r, the store's source %r"
             % (cpath, tt and tt.get("source"), store["source"]))
        for name, (shape, vals, fdt) in st["tensors"].items():
            need(vals is not None, "%s: %s is neither F32 nor BF16" % (d, name))
            mine = store["values"][name]
            src_dt = next(t["dtype"] for t in store["tensors"] if t["name"] == name)
            # F32: the decoded values exactly; BF16: rounded to nearest even (exact for a bf16 source)
            want = mine if fdt == "F32" else bf16_round(mine)
            for i, (x, y) in enumerate(zip(vals, want)):
                if x != y:
                    raise Bad("%s: %s[%d] is %r, the store decodes to %r (%s)" % (d, name, i, x, mine[i], DTYPES[src_dt]))
            exact += 1
    print("%s: HF checkpoint, %d layers%s, %d tensors%s" % (d, L, " (tiertrain per-layer dims)" if tt else "",
                                                         len(st["tensors"]), ", %d equal to the store's decoded values" % exact if store else ""))
    return dict(config=cj, st=st)


# ---------------------------------------------------------------- main
def kind_of(path):
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "adapter_config.json")):
            return "peft"
        if os.path.exists(os.path.join(path, "config.json")):
            return "hf"
        raise Bad("%s: a directory with neither adapter_config.json nor config.json" % path)
    with open(path, "rb") as f:
        head = f.read(8)
    kinds = {b"TIERSTOR": "tier", b"TTTOKENS": "tok", b"TTCKPT\0\0": "ckpt"}
    if head in kinds:
        return kinds[head]
    if path.endswith(".safetensors"):
        return "safetensors"
    raise Bad("%s: unknown file (magic %r)" % (path, head))


def main(argv):
    store = export_of = tokp = params_of = valp = None
    paths = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--store", "--export-of", "--data", "--val", "--params-of") and i + 1 < len(argv):
            if argv[i] == "--val":
                valp = argv[i + 1]
            elif argv[i] == "--params-of":
                params_of = argv[i + 1]
            elif argv[i] == "--store":
                store = argv[i + 1]
            elif argv[i] == "--data":
                tokp = argv[i + 1]
            else:
                export_of = argv[i + 1]
            i += 2
        elif argv[i].startswith("-"):
            print(__doc__.strip(), file=sys.stderr)
            return 2
        else:
            paths.append(argv[i])
            i += 1
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    current = None
    try:
        ref = check_tier(store, decode=False) if store else None
        exp = check_tier(export_of) if export_of else None
        tok = check_tok(tokp) if tokp else None
        val = check_tok(valp) if valp else None
        trained = check_tier(params_of) if params_of else None
        for p in paths:
            current = p
            k = kind_of(p)
            if k == "tier":
                check_tier(p)
            elif k == "tok":
                check_tok(p)
            elif k == "ckpt":
                check_ckpt(p, ref, tok, trained, val)
            elif k == "safetensors":
                check_safetensors(p)
            elif k == "peft":
                check_peft(p, ref)
            else:
                check_hf(p, exp)
    except Bad as ex:
        print("format_check: %s" % ex, file=sys.stderr)
        return 1
    except (OSError, KeyError, struct.error) as ex:
        where = getattr(ex, "filename", None) or current or "reading its options' files"
        print("format_check: %s: %r" % (where, ex), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
