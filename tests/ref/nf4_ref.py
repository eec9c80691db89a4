#!/usr/bin/env python3
"""tests/ref/nf4_ref.py - independent pure-Python reference for core/base/nf4.c.

Re-implements bitsandbytes' NF4 quantization (QLoRA) from the bitsandbytes
definitions, NOT from core/base/nf4.c, so that tests/test_nf4.c can compare the C
code against numbers computed another way. float32 arithmetic is emulated by
rounding every intermediate through struct.pack('f') (f32() below). For + - * /
of two float32 values, computing in double and rounding once to float32 gives
exactly the float32 result (double has 53 >= 2*24+2 bits, so the double
rounding is innocuous).

What is reproduced, and from where (bitsandbytes csrc/kernels.cu, functional.py):
  - the NF4 code book (dDequantizeNF4) and the decision tree dQuantizeNF4 with
    its literal thresholds, ported branch for branch;
  - kQuantizeBlockwise for NF4: absmax = max |x| over 64 values, each value is
    multiplied by (1.0f / absmax), two codes per byte, first value in the high
    nibble;
  - create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) with
    torch's float32 linspace (see linspace_f32) and float32 products;
  - dQuantize<0> (the 7-step pivot search used by kQuantizeBlockwise for the
    8-bit dynamic map), ported line for line;
  - quantize_4bit(compress_statistics=True): offset = mean(absmax),
    quantize_blockwise(absmax - offset, blocksize=256).

Where tiertrain deliberately differs from bitsandbytes (documented in nf4.h/.c):
  - offset is the mean computed in double (torch: float32 reduction);
  - an all-zero NF4 block stores code 7 (0.0) instead of the NaN-driven code 0;
  - a double-quant block whose max |absmax - offset| is 0 stores index 127
    (0.0) instead of the NaN-driven index 0;
  - an odd trailing element's unused low nibble is 0 (bitsandbytes: code 7).
  All four dequantize to the same values as bitsandbytes.

Usage:
  python3 tests/ref/nf4_ref.py          print the expected values pasted into
                                        tests/test_nf4.c
  python3 tests/ref/nf4_ref.py table    print the C literal of nf4_dynamic_map
                                        pasted into core/base/nf4.c
"""
import struct
import sys
from fractions import Fraction


def f32(x):
    """Round a Python float to the nearest float32 (ties to even)."""
    return struct.unpack('<f', struct.pack('<f', x))[0]


def f32_dec(text):
    """A C float literal: the decimal string rounded once, to the nearest
    float32 (ties to even), as a C or CUDA compiler converts `0.86...f`. Not
    f32(float(text)): through a double, a decimal lying just off a float32 tie
    can round to the other side."""
    exact = Fraction(text)
    c = f32(float(exact))
    best = None
    for cand in (f32_next_down(c), c, f32_next_up(c)):
        d = abs(Fraction(cand) - exact)
        if best is None or d < best[0] or (d == best[0] and f32_bits(cand) % 2 == 0):
            best = (d, cand)
    return best[1]


def f32_bits(x):
    return struct.unpack('<I', struct.pack('<f', x))[0]


def f32_next_up(x):
    """nextafterf(x, +inf) for finite x."""
    b = f32_bits(x)
    if x == 0.0:
        return struct.unpack('<f', struct.pack('<I', 1))[0]
    b = b + 1 if x > 0 else b - 1
    return struct.unpack('<f', struct.pack('<I', b))[0]


def f32_next_down(x):
    """nextafterf(x, -inf) for finite x."""
    return -f32_next_up(-x)


# ---- NF4 code book (bitsandbytes dDequantizeNF4, index 0..15) -------------
NF4_CODE = [f32(v) for v in (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
    0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0)]


# dQuantizeNF4's thresholds, as written in kernels.cu. Each is the exact
# midpoint of two adjacent codes (a double) printed to 16-17 digits; where that
# midpoint lies exactly between two float32 values (k = 0, 1, 3, 4, 8, 12, 14)
# the digits decide the side: for k = 0, 8, 12, 14 the compiled literal is
# not the round-to-even midpoint f32((c[k] + c[k+1]) / 2) but its neighbour.
NF4_THR_LIT = ('-0.8480964004993439', '-0.6106329262256622', '-0.4599952697753906',
               '-0.33967943489551544', '-0.23460740596055984', '-0.13791173323988914',
               '-0.045525018125772476', '0.03979014977812767', '0.1202552504837513',
               '0.2035212516784668', '0.2920137718319893', '0.3893125355243683',
               '0.5016634166240692', '0.6427869200706482', '0.8614784181118011')
T = [f32_dec(t) for t in NF4_THR_LIT]


def dquantize_nf4(x):
    """bitsandbytes dQuantizeNF4, branch for branch."""
    if x > T[7]:
        if x > T[11]:
            if x > T[13]:
                return 0b1111 if x > T[14] else 0b1110
            return 0b1101 if x > T[12] else 0b1100
        if x > T[9]:
            return 0b1011 if x > T[10] else 0b1010
        return 0b1001 if x > T[8] else 0b1000
    if x > T[3]:
        if x > T[5]:
            return 0b0111 if x > T[6] else 0b0110
        return 0b0101 if x > T[4] else 0b0100
    if x > T[1]:
        return 0b0011 if x > T[2] else 0b0010
    return 0b0001 if x > T[0] else 0b0000


def quantize_nf4(x):
    """x: list of float32 values. Returns (codes bytes, absmax list)."""
    n = len(x)
    nb = (n + 63) // 64
    q = []
    absmax = []
    for b in range(nb):
        blk = x[b * 64:(b + 1) * 64]
        m = 0.0
        for v in blk:
            m = max(m, abs(v))
        absmax.append(m)
        for v in blk:
            if m == 0.0:
                q.append(7)            # tiertrain: all-zero block -> 0.0
            else:
                q.append(dquantize_nf4(f32(v * f32(1.0 / m))))
    if n % 2:
        q.append(0)                    # unused low nibble
    codes = bytes((q[2 * j] << 4) | q[2 * j + 1] for j in range(len(q) // 2))
    return codes, absmax


def dequantize_nf4(codes, absmax, n):
    out = []
    for i in range(n):
        byte = codes[i // 2]
        c = (byte >> 4) if i % 2 == 0 else (byte & 15)
        out.append(f32(NF4_CODE[c] * absmax[i // 64]))
    return out


# ---- dynamic map (create_dynamic_map(signed=True)) ---------------------------
def linspace_f32(start, end, steps):
    """torch.linspace(start, end, steps) in float32 as torch's CPU kernel
    computes it: step = (end - start) / (steps - 1), both in float32; the first
    steps//2 entries are start + step*i, the rest end - step*(steps-1-i), each
    rounded once (the kernel is compiled with FMA contraction). step*i is exact
    in double and so is the sum, so one f32() is exactly one fused rounding.
    This reproduces, entry for entry, the table torch prints for
    bitsandbytes.functional.create_dynamic_map() (a float32 left-to-right sum,
    with or without separate rounding of step*i, does not: 11 to 42 entries
    differ in the last bit)."""
    s, e = f32(start), f32(end)
    step = f32(f32(e - s) / (steps - 1))
    half = steps // 2
    return [f32(s + step * i) if i < half else f32(e - step * (steps - 1 - i))
            for i in range(steps)]


def create_dynamic_map():
    data = []
    for i in range(7):                      # max_exponent_bits = 7
        fraction_items = 2 ** i + 1         # signed: 2**(i + 7 - 7) + 1
        b = linspace_f32(0.1, 1.0, fraction_items)
        means = [f32(f32(b[j] + b[j + 1]) / 2.0) for j in range(len(b) - 1)]
        scale = f32(10 ** (-6 + i))         # python scalar -> float32 operand
        pos = [f32(scale * m) for m in means]
        data += pos
        data += [-v for v in pos]
    data.append(0.0)
    data.append(1.0)
    assert len(data) == 256
    data.sort()
    return data


DMAP = create_dynamic_map()


def dquantize_dyn(code, x):
    """bitsandbytes dQuantize<STOCHASTIC=0>, line for line."""
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = -1.0, 1.0
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        midpoint = f32(f32(upper + val) * 0.5)
        return upper_pivot if x > midpoint else pivot
    midpoint = f32(f32(lower + val) * 0.5)
    return lower_pivot if x < midpoint else pivot


def double_quant(absmax):
    nb = len(absmax)
    s = 0.0
    for a in absmax:                        # sequential double sum
        s += a
    offset = f32(s / nb)
    q = []
    absmax2 = []
    for b0 in range(0, nb, 256):
        d = [f32(a - offset) for a in absmax[b0:b0 + 256]]
        m = 0.0
        for v in d:
            m = max(m, abs(v))
        absmax2.append(m)
        if m == 0.0:
            q += [127] * len(d)             # tiertrain: index of 0.0
        else:
            inv = f32(1.0 / m)
            q += [dquantize_dyn(DMAP, f32(v * inv)) for v in d]
    return bytes(q), absmax2, offset


def double_dequant(q, absmax2, offset):
    return [f32(f32(DMAP[q[i]] * absmax2[i // 256]) + offset) for i in range(len(q))]


# ---- blob layout (core/base/nf4.h) -----------------------------------------------
def align16(v):
    return (v + 15) // 16 * 16


def f32_bytes(vals):
    return b''.join(struct.pack('<f', v) for v in vals)


def quantize_tensor(x, dq):
    codes, absmax = quantize_nf4(x)
    blob = bytearray(codes)
    blob += bytes(align16(len(blob)) - len(blob))
    if not dq:
        blob += f32_bytes(absmax)
    else:
        qa, a2, off = double_quant(absmax)
        blob += qa
        blob += bytes(align16(len(blob)) - len(blob))
        blob += f32_bytes(a2)
        blob += bytes(align16(len(blob)) - len(blob))
        blob += f32_bytes([off])
    blob += bytes(align16(len(blob)) - len(blob))
    return bytes(blob)


def fnv1a32(data):
    h = 2166136261
    for byte in data:
        h ^= byte
        h = (h * 16777619) & 0xffffffff
    return h


# ---- test vectors (tests/test_nf4.c builds the same inputs) -----------------
def gen_x(i):
    """x_i = (float)num / (float)den, as test_nf4.c's gen_x()."""
    num = ((i * 7919 + 13) % 2001) - 1000
    den = 100 + ((i // 64) * 37) % 211
    return f32(num / den)


def gen_vec(n, zero_block=-1):
    return [0.0 if i // 64 == zero_block else gen_x(i) for i in range(n)]


def cfloat(v):
    """C float literal that converts to exactly this float32."""
    s = '%.9g' % v
    if 'e' not in s and '.' not in s:
        s += '.0'
    return s + 'f'


def cbytes(bs, indent='    '):
    lines = []
    for k in range(0, len(bs), 16):
        lines.append(indent + ', '.join('0x%02x' % b for b in bs[k:k + 16]) + ',')
    return '\n'.join(lines)


def cfloats(vals, indent='    ', per=6):
    lines = []
    for k in range(0, len(vals), per):
        lines.append(indent + ', '.join(cfloat(v) for v in vals[k:k + per]) + ',')
    return '\n'.join(lines)


def vec_a():
    """One block, absmax exactly 1.0: each code, each dQuantizeNF4 threshold
    (-> lower index) and the next float above it (-> upper index), the
    round-to-even midpoints where they differ from the thresholds, then a few
    hand-picked values."""
    x = list(NF4_CODE)
    x += T
    x += [f32_next_up(t) for t in T]
    mids = [f32((NF4_CODE[k] + NF4_CODE[k + 1]) / 2.0) for k in range(15)]
    x += [m for m, t in zip(mids, T) if m != t]
    x += [f32(v) for v in (0.0, -0.0, 0.5, -0.5, 0.03, -0.03, 0.9, -0.9,
                           0.04, -0.04, 0.12, 0.6, -0.6, -0.85)]
    assert len(x) == 64, len(x)
    return x


def print_expected():
    print('/* ---- generated by: python3 tests/ref/nf4_ref.py ---- */')
    # vector A
    xa = vec_a()
    ca, ama = quantize_nf4(xa)
    print('/* vec A: inputs (n = 64) */')
    print('static const float VA_X[64] = {\n' + cfloats(xa) + '\n};')
    print('static const uint8_t VA_CODES[32] = {\n' + cbytes(ca) + '\n};')
    print('static const float VA_ABSMAX = %s;' % cfloat(ama[0]))
    # vector B: one block from gen_x
    xb = gen_vec(64)
    cb, amb = quantize_nf4(xb)
    db = dequantize_nf4(cb, amb, 64)
    print('/* vec B: gen_x, n = 64 */')
    print('static const uint8_t VB_CODES[32] = {\n' + cbytes(cb) + '\n};')
    print('static const float VB_ABSMAX = %s;' % cfloat(amb[0]))
    print('static const float VB_DEQ[64] = {\n' + cfloats(db) + '\n};')
    # vector C: partial last block, odd n
    nc = 165
    xc = gen_vec(nc)
    cc, amc = quantize_nf4(xc)
    dc = dequantize_nf4(cc, amc, nc)
    print('/* vec C: gen_x, n = 165 (two full blocks, 37 in the last; odd) */')
    print('static const uint8_t VC_CODES[83] = {\n' + cbytes(cc) + '\n};')
    print('static const float VC_ABSMAX[3] = {\n' + cfloats(amc) + '\n};')
    print('static const float VC_DEQ_LAST[8] = {\n' + cfloats(dc[-8:]) + '\n};')
    blob = quantize_tensor(xc, False)
    print('#define VC_BLOB_TOTAL %d' % len(blob))
    print('#define VC_BLOB_FNV 0x%08xu' % fnv1a32(blob))
    # vector D: 300 blocks, block 5 all zero, double quant with 2 dq blocks
    nd = 64 * 300
    xd = gen_vec(nd, zero_block=5)
    cd, amd = quantize_nf4(xd)
    qd, a2d, offd = double_quant(amd)
    amd_deq = double_dequant(qd, a2d, offd)
    blob = quantize_tensor(xd, True)
    # dequantized values as nf4_dequantize_tensor computes them
    idx = [0, 1, 63, 64, 320, 321, 383, 384, 4095, 9999, 16383, 16384, 16447,
           19135, 19198, 19199]
    deq = [f32(NF4_CODE[(cd[i // 2] >> 4) if i % 2 == 0 else (cd[i // 2] & 15)]
               * amd_deq[i // 64]) for i in idx]
    print('/* vec D: gen_x with block 5 zeroed, n = 64*300, double quant */')
    print('static const uint8_t VD_QABSMAX[300] = {\n' + cbytes(qd) + '\n};')
    print('static const float VD_ABSMAX2[2] = {\n' + cfloats(a2d) + '\n};')
    print('static const float VD_OFFSET = %s;' % cfloat(offd))
    print('#define VD_CODES_FNV 0x%08xu' % fnv1a32(cd))
    print('#define VD_BLOB_TOTAL %d' % len(blob))
    print('#define VD_BLOB_FNV 0x%08xu' % fnv1a32(blob))
    print('static const uint64_t VD_IDX[%d] = {%s};' % (len(idx), ', '.join(str(i) for i in idx)))
    print('static const float VD_DEQ[%d] = {\n' % len(idx) + cfloats(deq) + '\n};')
    print('static const float VD_ABSMAX_DEQ_FIRST[8] = {\n' + cfloats(amd_deq[:8]) + '\n};')
    print('static const float VD_ABSMAX_DEQ_LAST[4] = {\n' + cfloats(amd_deq[-4:]) + '\n};')
    # vector E: every block has absmax 2.0 -> absmax - offset == 0 everywhere
    xe = [f32((i % 5) - 2) for i in range(192)]
    ce, ame = quantize_nf4(xe)
    qe, a2e, offe = double_quant(ame)
    print('/* vec E: x_i = (i % 5) - 2, n = 192, double quant: absmax2 == 0 */')
    print('static const uint8_t VE_QABSMAX[3] = {%s};' % ', '.join('%d' % b for b in qe))
    print('static const float VE_ABSMAX2 = %s;' % cfloat(a2e[0]))
    print('static const float VE_OFFSET = %s;' % cfloat(offe))
    print('#define VE_BLOB_FNV 0x%08xu' % fnv1a32(quantize_tensor(xe, True)))
    # vector F: 257 blocks -> the second dq block holds one absmax
    nf = 64 * 257
    xf = gen_vec(nf)
    cf, amf = quantize_nf4(xf)
    qf, a2f, offf = double_quant(amf)
    print('/* vec F: gen_x, n = 64*257, double quant: last dq block has 1 entry */')
    print('static const uint8_t VF_QABSMAX_LAST[4] = {%s};' % ', '.join('0x%02x' % b for b in qf[-4:]))
    print('static const float VF_ABSMAX2[2] = {\n' + cfloats(a2f) + '\n};')
    print('static const float VF_OFFSET = %s;' % cfloat(offf))
    print('#define VF_BLOB_FNV 0x%08xu' % fnv1a32(quantize_tensor(xf, True)))
    # vector G: dQuantize's ties and near-ties on the dynamic map
    xg = vec_g()
    qg, a2g, offg = double_quant(xg)
    assert offg == 0.0 and a2g == [1.0]
    print('/* vec G: double quant of midpoints of the dynamic map (offset 0, absmax2 1) */')
    print('static const float VG_X[%d] = {\n' % len(xg) + cfloats(xg) + '\n};')
    print('static const uint8_t VG_Q[%d] = {\n' % len(qg) + cbytes(qg) + '\n};')
    # vector H, I: multiply by the reciprocal, not divide
    xh = vec_h()
    ch, amh = quantize_nf4(xh)
    print('/* vec H: one block, absmax 3.0, values where x*(1/3) and x/3 get different codes */')
    print('static const float VH_X[64] = {\n' + cfloats(xh) + '\n};')
    print('static const uint8_t VH_CODES[32] = {\n' + cbytes(ch) + '\n};')
    xi = vec_i()
    qi, a2i, offi = double_quant(xi)
    assert offi == 0.0 and a2i == [3.0]
    print('/* vec I: double quant, offset 0, absmax2 3.0, values where d*(1/3) and d/3 differ */')
    print('static const float VI_X[%d] = {\n' % len(xi) + cfloats(xi) + '\n};')
    print('static const uint8_t VI_Q[%d] = {\n' % len(qi) + cbytes(qi) + '\n};')


def vec_g():
    """Double-quant input whose mean is exactly 0 and max |.| exactly 1, so
    the scaled values are the inputs themselves: the float midpoints between
    dynamic-map entries k and k+1 (dQuantize's tie rule), the floats just
    above and below them, and their negatives."""
    ks = (0, 1, 2, 62, 63, 64, 100, 125, 126, 127, 128, 200, 253, 254)
    x = [1.0, -1.0]
    for k in ks:
        m = f32(f32(DMAP[k] + DMAP[k + 1]) * 0.5)
        for v in (m, f32_next_up(m), f32_next_down(m)):
            x += [v, -v]
    return x


def _walk(x, d):
    for _ in range(abs(d)):
        x = f32_next_up(x) if d > 0 else f32_next_down(x)
    return x


def vec_h():
    """One block with absmax 3.0 whose other values sit where x * (1/3) and
    x / 3 fall on different sides of a threshold: bitsandbytes multiplies by
    the reciprocal, and this block tells the two apart."""
    m = f32(3.0)
    inv = f32(1.0 / m)
    x = [m]
    for t in T:
        c = f32(t * m)
        for d in range(-40, 41):
            v = _walk(c, d)
            if dquantize_nf4(f32(v * inv)) != dquantize_nf4(f32(v / m)):
                x.append(v)
    assert 4 <= len(x) <= 64
    return x + [0.0] * (64 - len(x))


def vec_i():
    """Double-quant input with offset 0 and absmax2 3.0 where (a - offset) *
    (1/absmax2) and (a - offset) / absmax2 pick different map entries."""
    m = f32(3.0)
    inv = f32(1.0 / m)
    x = [m, -m]
    for k in range(255):
        c = f32(f32(f32(DMAP[k] + DMAP[k + 1]) * 0.5) * m)
        for d in range(-6, 7):
            v = _walk(c, d)
            if len(x) < 42 and dquantize_dyn(DMAP, f32(v * inv)) != dquantize_dyn(DMAP, f32(v / m)):
                x += [v, -v]
    assert len(x) == 42
    return x


def print_table():
    print('/* generated by: python3 tests/ref/nf4_ref.py table */')
    print('const float nf4_dynamic_map[256] = {')
    for k in range(0, 256, 4):
        print('    ' + ' '.join('%-17s' % (cfloat(v) + ',') for v in DMAP[k:k + 4]).rstrip())
    print('};')


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'table':
        print_table()
    else:
        print_expected()
