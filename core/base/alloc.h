/* core/base/alloc.h — the allocator interface: where buffers come from.
 * The step loop's workspace and LoRA state are carved through it from the
 * arenas the planner sized (sched/arena.h), or taken from the backend when
 * no allocator is given (the resident reference path). */
#ifndef TT_ALLOC_H
#define TT_ALLOC_H

#include <stddef.h>

/* fn(ctx, bytes, label) returns a buffer of bytes (label names it in the
 * planner's memory table); measuring: the pointers are placeholders, never
 * touched (planning measures sizes only). */
typedef struct tt_alloc {
    void *(*fn)(void *ctx, size_t bytes, const char *label);
    void *ctx;
    int measuring;
} tt_alloc;

#endif
