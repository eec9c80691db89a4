/* tests/fuzz_config.c — libFuzzer target for the Hugging Face config.json
 * reader (io/hfmodel.c: hf_config_read, what `import` and `export` read,
 * including tiertrain's pruning record and rope_scaling). `make fuzz` builds
 * it; run:
 *   build/fuzz/fuzz_config NEW_DIR tests/corpus/config
 *
 * The input is a whole config.json in a model directory. A config that is
 * accepted is then used as import uses it: every tensor of the model is
 * described (names, shapes, byte counts) and the pruning map, when there is
 * one, is walked. */
#include "core/base/config.h"
#include "io/hfmodel.h"
#include "io/storeio.h"
#include "tests/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)fuzz_put("config.json", data, size);
    tt_config cfg;
    tier_prune_map map;
    int has_map;
    if (hf_config_read(fuzz_dir(), &cfg, &map, &has_map) != 0) return 0;
    tt_tensor_desc d;
    volatile uint64_t acc = config_n_params(&cfg) + config_fingerprint(&cfg);
    for (uint32_t i = 0; i < config_n_tensors(&cfg); i++) {
        config_tensor(&cfg, i, &d);
        acc += d.rows * d.cols + d.extent + strlen(d.name);
    }
    if (has_map) {
        for (uint32_t l = 0; l < cfg.n_layers; l++) {
            if (!cfg.layers[l].pruned) continue;
            for (uint32_t j = 0; j < cfg.layers[l].n_kv_heads; j++)
                if (map.kv[l][j] >= cfg.n_kv_heads) abort(); /* the reader promised indices in range */
            for (uint32_t j = 0; j < cfg.layers[l].ffn; j++)
                if (map.ffn[l][j] >= cfg.ffn) abort();
        }
        store_prune_map_clear(&map);
    }
    (void)acc;
    return 0;
}
