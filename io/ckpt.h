/* io/ckpt.h — training checkpoints: everything needed to continue a run
 * exactly (LoRA parameters, AdamW moments, the step, the seeds and the
 * hyper-parameters), in one self-describing file written atomically
 * (".partial" + fsync + rename). Layout in docs/FORMAT.md. */
#ifndef TT_CKPT_H
#define TT_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define CKPT_MAGIC "TTCKPT\0\0"
#define CKPT_VERSION 1u
#define CKPT_FILE "checkpoint.bin"

#define CKPT_MIX_MAX 16 /* data sources a checkpoint records (TT_MIX_MAX) */

/* Fixed-size record of the run (all fields little-endian on disk). */
typedef struct ckpt_state {
    uint64_t step;            /* optimizer steps completed */
    uint64_t seed;
    uint64_t model_fp;        /* fingerprint of the model config (config_fingerprint) */
    uint64_t n_params;
    uint32_t real_bytes;      /* sizeof(tt_real) of the writer: 4 or 8 */
    uint32_t rank, targets;
    float alpha, dropout;
    /* hyper-parameters */
    uint32_t steps, seq, micro_batch, accum, warmup;
    float lr, min_lr, wd, b1, b2, eps, clip;
    uint64_t tokens_seen;
    uint64_t data_tokens;     /* training tokens the run samples from */
    uint64_t data_hash;       /* XXH3-64 of those tokens */
    uint32_t threads;         /* BLAS threads (results depend on the summation order) */
    uint32_t act_bf16;        /* 1: bf16 activations (--act-dtype bf16); 0: f32 (and every older checkpoint) */
    /* --- end of the first version-1 record (CKPT_STATE_V1_BYTES); the reader zero-fills what follows --- */
    uint32_t rslora;          /* 1: LoRA scaling alpha / sqrt(rank) (--rslora) */
    uint32_t no_pack;         /* 1: examples one per sequence (--no-pack); 0: packed, or plain documents */
    /* --- end of the record before data mixtures (CKPT_STATE_V2_BYTES, written by a run of one --data) --- */
    uint32_t mix_n;           /* data sources: 2..CKPT_MIX_MAX; 0: one (a shorter record) */
    uint32_t mix_mode;        /* 0: static, 1: dynamic (--mix) */
    uint32_t mix_every;       /* dynamic: steps between re-weightings (--mix-every) */
    float mix_tau;            /* dynamic: temperature (--mix-temp) */
    double mix_base[CKPT_MIX_MAX];      /* the --data weights, normalised ([mix_n]; the rest 0) */
    double mix_w[CKPT_MIX_MAX];         /* the sampler's weights after the checkpoint's step */
    double mix_ref[CKPT_MIX_MAX];       /* dynamic: the reference model's validation loss per source */
    uint64_t mix_tokens[CKPT_MIX_MAX];  /* each source's training tokens */
    uint64_t mix_hash[CKPT_MIX_MAX];    /* and their XXH3-64 (with its flags, as data_hash) */
    /* --- end of the record before full-training checkpoints (CKPT_STATE_V3_BYTES, a mixture's) --- */
    uint32_t full;            /* 1: full-parameter training (train --full): params are every trainable weight
                               * (f32, config tensor order) then GaLore's projectors; m and v each tensor's moments
                               * (AdamW's, or GaLore's of the projected gradient), then zeros (docs/FORMAT.md) */
    uint32_t optim;           /* full: 0 AdamW, 1 GaLore on the projections */
    uint32_t galore_rank, galore_every;
    float galore_scale;
    uint32_t reserved;        /* 0 */
    /* --- end of the record before the weights' identity (CKPT_STATE_V4_BYTES, full training's) --- */
    uint64_t weights_fp;      /* tier_weights_fingerprint of the store trained on; 0: not recorded (an older
                               * checkpoint, or a caller that sets none), and then not checked on resume */
    /* --- end of the record before the validation's identity (CKPT_STATE_V5_BYTES) --- */
    uint64_t val_tokens;      /* validation tokens the run scores on, every source's */
    uint64_t val_hash;        /* their XXH3-64, as data_hash (a mixture: of each source's, in order, as u64s); 0: not
                               * recorded (no validation tokens, or an older checkpoint), and then not checked */
    uint32_t eval_tokens;     /* --eval-tokens: how many of them a score takes */
    uint32_t reserved2;       /* 0 */
} ckpt_state;

/* The run record of checkpoints written before --rslora: the fields up to
 * act_bf16; such a record reads as rslora 0. */
#define CKPT_STATE_V1_BYTES 136u
/* The record before data mixtures, up to no_pack: what a run of one --data
 * writes (so its checkpoint is the one it always was); it reads as mix_n 0. */
#define CKPT_STATE_V2_BYTES 144u
/* The record of a data mixture before full training: up to mix_hash; it
 * reads as full 0. */
#define CKPT_STATE_V3_BYTES 800u
/* The record of full training before weights_fp: up to reserved; it reads
 * as weights_fp 0. */
#define CKPT_STATE_V4_BYTES 824u
/* The record with the weights' identity before the validation's: up to
 * weights_fp; it reads as val_hash 0. */
#define CKPT_STATE_V5_BYTES 832u

/* Writes dir/checkpoint.bin: state (all of it when st->val_hash is set; else
 * the shortest record that holds it: CKPT_STATE_V5_BYTES with weights_fp,
 * V2 for one source, V3 for a mixture, V4 for full training), then params (n_params * real_bytes),
 * m and v (n_params floats each). Returns 0 or -errno with a message. */
/* 1 when dir holds a checkpoint file (CKPT_FILE), whole or not: a run's folder. */
int ckpt_exists(const char *dir);

int ckpt_write(const char *dir, const ckpt_state *st, const void *params, const float *m, const float *v);

/* Reads dir/checkpoint.bin: validates magic, version, sizes and checksum.
 * On success *params (n_params * real_bytes), *m, *v are malloc'ed (caller
 * frees). Returns 0, or -errno with a message naming the file (missing,
 * truncated, corrupt). */
int ckpt_read(const char *dir, ckpt_state *st, void **params, float **m, float **v);

/* The same file in pieces, never whole in memory (full training's holds 12
 * bytes a parameter): */
typedef struct ckpt_writer ckpt_writer;
/* Starts dir/checkpoint.bin.partial for st (its record, then n_params values
 * in each of params, m and v to come). Returns 0 or -errno with a message. */
int ckpt_writer_open(ckpt_writer **w, const char *dir, const ckpt_state *st);
/* Appends bytes in the file's order: params' n_params * real_bytes, then m's
 * and v's n_params floats; _zeros appends that many zero bytes. On failure
 * (-errno with a message; a full disk is named) w is freed and the partial
 * file removed. */
int ckpt_writer_put(ckpt_writer *w, const void *data, size_t bytes);
int ckpt_writer_zeros(ckpt_writer *w, uint64_t bytes);
/* Once every byte is in: the header with the payload's checksum, fsync,
 * renamed over dir/checkpoint.bin. Frees w; 0 or -errno with a message. */
int ckpt_writer_close(ckpt_writer *w);
/* Drops an unfinished file (w may be NULL). */
void ckpt_writer_abort(ckpt_writer *w);

typedef struct ckpt_reader ckpt_reader;
/* Opens dir/checkpoint.bin and checks it as ckpt_read does (the checksum in
 * one pass over the file, 8 MiB at a time); *st receives the record (and is
 * undefined on failure). The pieces are read again by ckpt_reader_get: the
 * file is read twice, and a change to it in between goes unseen (the
 * checkpoint is one the run itself wrote, renamed into place whole). */
int ckpt_reader_open(ckpt_reader **r, const char *dir, ckpt_state *st);
/* bytes at offset within a section: 0 params, 1 m, 2 v. 0 or -EIO with a message. */
int ckpt_reader_get(ckpt_reader *r, int section, uint64_t offset, void *dst, size_t bytes);
void ckpt_reader_close(ckpt_reader *r);

#endif
