/* core/fulltrain.h — full-parameter training of a model that fits in memory
 * (fp32 master weights, AdamW; lm_head frozen as in LoRAM's alignment), and
 * the weight gradients of calibration data for Taylor pruning importance. */
#ifndef TT_FULLTRAIN_H
#define TT_FULLTRAIN_H

#include <stdint.h>

/* dL/dW of every linear projection of the store at store_path, summed over
 * `samples` windows of seq + 1 tokens taken evenly from tokens[0..n) (loss =
 * mean next-token NLL over the windows). grads: config_n_tensors(cfg)
 * pointers; on success grads[i] is a malloc'ed (rows * cols) f32 array for
 * every TT_ROLE_LINEAR tensor i and NULL for the others (the caller frees
 * them). Returns 0 or -errno with a message (too few tokens, token ids
 * outside the vocabulary, IO error). */
int fulltrain_calib_grads(const char *store_path, const uint32_t *tokens, uint64_t n, int samples, int seq,
                          float **grads);

#endif
