/* tests/test_rope.c — the rotary tables, as transformers computes them:
 * default rope: angle(t, i) = t * theta^(-2i/d); LLaMA-3.1 scaling
 * (_compute_llama3_parameters): wavelengths shorter than
 * original_max_position / high_freq_factor keep their frequency, longer than
 * original_max_position / low_freq_factor are divided by factor, and the
 * band between is interpolated. The expected values here are computed
 * independently in double; the tables follow HF's float32 arithmetic, so
 * they agree to float precision of the angle (|dcos| <= |t| * 2^-23 * |freq|). */
#include "core/base/common.h"
#include "core/base/config.h"
#include "core/model.h"
#include "tests/test.h"

#include <math.h>
#include <stdlib.h>

static double expected_freq(const tt_config *c, int i) {
    double f = pow((double)c->rope_theta, -2.0 * i / c->head_dim);
    if (c->rope_type != TT_ROPE_LLAMA3) return f;
    double wl = 2 * M_PI / f, lo = c->rope_orig_max_pos / c->rope_low_freq, hi = c->rope_orig_max_pos / c->rope_high_freq;
    if (wl < hi) return f;
    if (wl > lo) return f / c->rope_factor;
    double s = (c->rope_orig_max_pos / wl - c->rope_low_freq) / (c->rope_high_freq - c->rope_low_freq);
    return (1 - s) * f / c->rope_factor + s * f;
}

static void check(const char *preset, int seq) {
    tt_config c;
    TT_ASSERT(config_preset(preset, &c) == 0);
    int half = (int)c.head_dim / 2;
    double *cs = malloc((size_t)seq * half * sizeof *cs), *sn = malloc((size_t)seq * half * sizeof *sn);
    model_rope_tables(&c, seq, cs, sn);
    int scaled = 0, kept = 0, mixed = 0;
    for (int i = 0; i < half; i++) {
        double f = expected_freq(&c, i), f0 = pow((double)c.rope_theta, -2.0 * i / c.head_dim);
        if (fabs(f - f0) < 1e-12 * f0) kept++;
        else if (fabs(f - f0 / c.rope_factor) < 1e-12 * f0) scaled++;
        else mixed++;
        for (int t = 0; t < seq; t += 97) {
            double tol = 4e-7 * (1 + t * f) + 1e-7; /* float32 angle and frequency rounding */
            CHECK_MSG(fabs(cs[(size_t)t * half + i] - cos(t * f)) <= tol, "%s cos t=%d i=%d: %.9f vs %.9f", preset, t,
                      i, cs[(size_t)t * half + i], cos(t * f));
            CHECK_MSG(fabs(sn[(size_t)t * half + i] - sin(t * f)) <= tol, "%s sin t=%d i=%d", preset, t, i);
        }
    }
    if (c.rope_type == TT_ROPE_LLAMA3) {
        /* head_dim 128, theta 5e5, factor 8, 1..4 over 8192: all three bands are present */
        CHECK(kept > 0 && scaled > 0 && mixed > 0);
        fprintf(stderr, "%s: %d frequencies kept, %d divided by %g, %d interpolated\n", preset, kept, scaled,
                (double)c.rope_factor, mixed);
    } else {
        CHECK_EQ_INT(kept, half);
    }
    free(cs);
    free(sn);
}

int main(void) {
    check("tiny", 300);
    check("llama2-7b", 4096);
    check("llama3.1-8b", 8192);
    TEST_END();
}
