/* core/base/dtype.c — dtype names and sizes. */
#include "core/base/dtype.h"

#include "core/base/common.h"
#include "core/base/nf4.h"

const char *dtype_name(uint32_t d) {
    switch (d) {
    case TT_DTYPE_F32: return "f32";
    case TT_DTYPE_BF16: return "bf16";
    case TT_DTYPE_NF4: return "nf4";
    case TT_DTYPE_NF4DQ: return "nf4-dq";
    default: return NULL;
    }
}

uint32_t dtype_parse(const char *s) {
    for (uint32_t d = TT_DTYPE_F32; d <= TT_DTYPE_NF4DQ; d++)
        if (strcmp(s, dtype_name(d)) == 0) return d;
    return 0;
}

uint64_t dtype_bytes(uint32_t d, uint64_t n) {
    nf4_layout l;
    switch (d) {
    case TT_DTYPE_F32: return 4 * n;
    case TT_DTYPE_BF16: return 2 * n;
    case TT_DTYPE_NF4:
    case TT_DTYPE_NF4DQ: nf4_layout_of(n, d == TT_DTYPE_NF4DQ, &l); return l.total;
    default: TT_ASSERT(!"unknown dtype"); return 0;
    }
}
