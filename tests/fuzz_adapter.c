/* tests/fuzz_adapter.c — libFuzzer target for the PEFT adapter reader
 * (io/peft.c: peft_read, what eval, recover and merge read). `make fuzz`
 * builds it; run:
 *   build/fuzz/fuzz_adapter NEW_DIR tests/corpus/adapter
 *
 * An adapter is two files, so the first input byte picks which one the rest
 * of the input is: odd, adapter_config.json (next to a valid
 * adapter_model.safetensors of 2 layers, rank 2, q/v projections of 16x16);
 * even, adapter_model.safetensors (next to that adapter's valid config). The
 * reader must refuse every inconsistency between the two, and an adapter it
 * accepts is walked entry by entry. */
#include "io/peft.h"
#include "tests/fuzz.h"
#include "tests/ref_adapter.h"

static uint8_t *g_config, *g_tensors;
static size_t g_config_n, g_tensors_n;

static uint8_t *slurp(const char *dir, const char *name, size_t *n) {
    char path[700];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) abort();
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* The valid pair, written once by peft_write and kept in memory. */
static void make_reference(void) {
    peft_adapter a;
    peft_lora lora[REF_LAYERS * PEFT_N_PROJ];
    ref_adapter(&a, lora, REF_QV, 0, "meta-llama/Llama-2-7b-hf", 0x1234abcd5678ef90ull);
    if (peft_write(fuzz_dir(), &a) != 0) {
        fprintf(stderr, "fuzz_adapter: cannot write the reference adapter: %s\n", tt_lasterr());
        abort();
    }
    g_config = slurp(fuzz_dir(), PEFT_CONFIG, &g_config_n);
    g_tensors = slurp(fuzz_dir(), PEFT_TENSORS, &g_tensors_n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_config) make_reference();
    if (size < 1) return 0;
    int config = data[0] & 1;
    (void)fuzz_put(PEFT_CONFIG, config ? data + 1 : g_config, config ? size - 1 : g_config_n);
    (void)fuzz_put(PEFT_TENSORS, config ? g_tensors : data + 1, config ? g_tensors_n : size - 1);
    peft_adapter a;
    for (uint32_t n_layers = 0; n_layers <= REF_LAYERS; n_layers += REF_LAYERS) {
        if (peft_read(fuzz_dir(), n_layers, &a) != 0) continue;
        volatile float acc = a.alpha / (float)a.rank;
        for (uint32_t l = 0; l < a.n_layers; l++)
            for (int p = 0; p < PEFT_N_PROJ; p++) {
                const peft_lora *e = peft_at(&a, l, p);
                if (!(a.target_mask >> p & 1)) continue;
                acc += e->A[(uint64_t)a.rank * e->in - 1] + e->B[(uint64_t)e->out * a.rank - 1];
            }
        (void)acc;
        peft_free(&a);
    }
    return 0;
}
