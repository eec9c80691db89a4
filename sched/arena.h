/* sched/arena.h — bump arenas: "allocate by lifetime, once" (STYLE.md 7).
 *
 * Every long-lived buffer of the streaming runtime is carved from one arena
 * per memory tier: the device arena (one be_alloc of the --hbm budget) and the
 * pinned host arena (one anonymous mmap, registered with io_uring and CUDA).
 * The planner first runs the whole allocation sequence against a *measuring*
 * arena, which owns no memory and only adds up sizes (ggml-alloc's "measure,
 * then reserve"); it then reserves arena_peak() bytes and replays the same
 * sequence against an arena that *wraps* the reservation. Both kinds give the
 * same offsets for the same sequence, so the measured peak is exactly enough.
 *
 * Every allocation carries a label ("layer slots", "activations", ...); the
 * label table is what the memory table of `tiertrain plan` prints
 * ("layer slots   2   8.20 MiB").
 *
 * An arena is used by one thread at a time (set-up, then the compute thread);
 * it has no lock. arena_alloc never calls malloc: the label table (64 labels)
 * and the mark stack (16 nested marks) are fixed-size and live in the handle. */
#ifndef TT_ARENA_H
#define TT_ARENA_H

#include <stddef.h>
#include <stdio.h>

/* Every allocation starts at an offset that is a multiple of this. */
#define ARENA_ALIGN 256u
/* Distinct labels per arena; one more is a programming error (TT_ASSERT). */
#define ARENA_MAX_LABELS 64
/* Longest label kept, in bytes (without the NUL); a longer one is a programming error. */
#define ARENA_LABEL_MAX 47
/* Marks taken and not yet released, at most. */
#define ARENA_MAX_MARKS 16

typedef struct tt_arena tt_arena;

/* A measuring arena named `name` (copied, truncated to 47 bytes): it has no
 * memory and capacity SIZE_MAX. arena_alloc returns a fake pointer,
 * (void *)(uintptr_t)(4096 + offset): non-NULL, distinct for every live
 * allocation, ARENA_ALIGN-aligned, and never to be dereferenced (it points
 * into the first pages of the address space, which are never mapped, so a
 * stray access faults at once). Aborts on out-of-memory; free with arena_free. */
tt_arena *arena_measure(const char *name);

/* An arena that carves [base, base + capacity) — a region the caller reserved
 * and keeps owning (be_alloc of the device budget, an anonymous mmap for the
 * pinned host arena). base must be ARENA_ALIGN-aligned (TT_ASSERT). Aborts on
 * out-of-memory; free with arena_free, which leaves the region alone. */
tt_arena *arena_wrap(const char *name, void *base, size_t capacity);

/* Frees the bookkeeping only, never the wrapped region. NULL is fine. */
void arena_free(tt_arena *a);

/* Bump-allocates `bytes` at the next ARENA_ALIGN-aligned offset and records
 * it under `label` (compared by content; copied on first use). A request of
 * 0 bytes is taken as 1 byte, so every pointer handed out is distinct.
 * Exceeding the capacity of a wrapped arena is a programming error — the
 * planner sized it from a measuring arena — and aborts with a message naming
 * the arena, the label, the request and the bytes left. Never NULL. */
void *arena_alloc(tt_arena *a, size_t bytes, const char *label);

const char *arena_name(const tt_arena *a);
/* Bytes from the start of the arena to the end of the last live allocation
 * (alignment padding included). */
size_t arena_used(const tt_arena *a);
/* The largest arena_used() ever reached (release does not lower it). */
size_t arena_peak(const tt_arena *a);
/* The wrapped capacity; SIZE_MAX for a measuring arena. */
size_t arena_capacity(const tt_arena *a);
/* The wrapped base; NULL for a measuring arena. */
void *arena_base(const tt_arena *a);

/* Temporary scopes: m = arena_mark(a); ...allocations...; arena_release(a, m)
 * frees everything allocated since the mark (used goes back to m; the peak
 * keeps its maximum). Marks nest (at most ARENA_MAX_MARKS open at once) and
 * are released innermost first; releasing an outer mark also closes the inner
 * ones. A mark that is not open is a programming error (TT_ASSERT); the one
 * exception is arena_release(a, 0), which always empties the arena and closes
 * every mark. */
size_t arena_mark(tt_arena *a);
void arena_release(tt_arena *a, size_t mark);

/* The label table, in first-seen order. For each label, *count and *bytes are
 * its high-water mark: the most it ever had allocated at one time (requested
 * bytes, padding not included) and the number of allocations then. Without
 * releases that is simply every allocation made under the label, summed; for
 * a label used only inside a temporary scope that is released and taken again
 * (per layer, per step), it is one scope's worth — it does not grow with the
 * number of steps. Labels can overlap in time, so the sum of the bytes can
 * exceed arena_peak(). Any output pointer may be NULL. */
int arena_n_labels(const tt_arena *a);
void arena_label(const tt_arena *a, int i, const char **label, size_t *bytes, int *count);

/* A debugging hook, for a program that defines it (the emulated GPU does:
 * tests/cuda_emu/cuda_emu.cc holds each kernel's accesses to the block they
 * belong to). A weak symbol: where nothing defines it, nothing is called.
 * Wrapped arenas only: ARENA_HOOK_WRAP (p, n: the region), ARENA_HOOK_ALLOC
 * (p, n: the block as requested, label), ARENA_HOOK_RELEASE (every block in
 * [p, p + n) is gone), ARENA_HOOK_FREE (p, n: the region, no longer an
 * arena). */
enum { ARENA_HOOK_WRAP = 1, ARENA_HOOK_ALLOC, ARENA_HOOK_RELEASE, ARENA_HOOK_FREE };
void tt_arena_hook(const char *arena, int op, void *p, size_t n, const char *label) __attribute__((weak));
/* Also weak: bytes left unused after every block (measuring and wrapped
 * arenas alike, so plans stay exact), where a program asks for them — the
 * emulated GPU does, so that a kernel running a little past its buffer lands
 * in no block instead of in the next one. 0 where nothing defines it. */
size_t tt_arena_redzone(void) __attribute__((weak));

/* Prints the label table to f, aligned columns:
 *     arena "device"                 count        bytes
 *       layer slots                      2     8.20 MiB
 *       activations                      4     1.00 MiB
 *       total                            6     9.20 MiB
 *       used 9.20 MiB, peak 9.45 MiB, capacity 20.00 GiB
 * ("capacity unlimited (measuring)" for a measuring arena). */
void arena_print_table(const tt_arena *a, FILE *f);

#endif
