/* sched/arena.c — measuring and wrapping bump arenas with a per-label table.
 *
 * The handle holds everything: a fixed table of labels (live and high-water
 * bytes/count each) and a fixed stack of marks, each with a snapshot of the
 * labels' live values, so arena_alloc / arena_mark / arena_release never
 * allocate. Offsets are computed the same way for both kinds of arena;
 * only the pointer handed out differs (base + offset, or a fake 4096 + offset). */
#include "sched/arena.h"

#include "core/base/common.h"

#include <stdint.h>
#include <string.h>

/* Where measuring arenas pretend to start: non-NULL, ARENA_ALIGN-aligned,
 * inside the never-mapped first pages (vm.mmap_min_addr). */
#define MEASURE_BASE 4096u

typedef struct arena_label_rec {
    char name[ARENA_LABEL_MAX + 1];
    size_t live_bytes, hw_bytes; /* requested bytes live now / at the high-water mark */
    int live_count, hw_count;
} arena_label_rec;

typedef struct arena_mark_rec {
    size_t used;                            /* arena_used() when the mark was taken */
    int n_labels;                           /* labels known then */
    size_t live_bytes[ARENA_MAX_LABELS];    /* their live values then */
    int live_count[ARENA_MAX_LABELS];
} arena_mark_rec;

struct tt_arena {
    char name[ARENA_LABEL_MAX + 1];
    uint8_t *base;   /* NULL when measuring */
    size_t capacity; /* SIZE_MAX when measuring */
    size_t used, peak;
    int n_labels, n_marks;
    arena_label_rec labels[ARENA_MAX_LABELS];
    arena_mark_rec marks[ARENA_MAX_MARKS];
};

static tt_arena *arena_new(const char *name, void *base, size_t capacity) {
    tt_arena *a = tt_xcalloc(1, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name ? name : "?");
    a->base = base;
    a->capacity = capacity;
    return a;
}

tt_arena *arena_measure(const char *name) { return arena_new(name, NULL, SIZE_MAX); }

/* Tells the debugging hook (arena.h), where a program defines one, of
 * [off, off + n) of a wrapped arena. */
static void hook(const tt_arena *a, int op, size_t off, size_t n, const char *label) {
    if (tt_arena_hook && a->base) tt_arena_hook(a->name, op, a->base + off, n, label);
}

tt_arena *arena_wrap(const char *name, void *base, size_t capacity) {
    TT_ASSERT(base != NULL);
    TT_ASSERT((uintptr_t)base % ARENA_ALIGN == 0);
    TT_ASSERT(capacity < SIZE_MAX);
    tt_arena *a = arena_new(name, base, capacity);
    hook(a, ARENA_HOOK_WRAP, 0, capacity, NULL);
    return a;
}

void arena_free(tt_arena *a) {
    if (a) hook(a, ARENA_HOOK_FREE, 0, a->capacity, NULL);
    free(a);
}

/* The label's index, adding it (at set-up) when it is new. */
static int label_index(tt_arena *a, const char *label) {
    for (int i = 0; i < a->n_labels; i++)
        if (strcmp(a->labels[i].name, label) == 0) return i;
    if (strlen(label) > ARENA_LABEL_MAX)
        fprintf(stderr, "tiertrain: internal error: arena \"%s\": label \"%s\" is longer than %d bytes\n", a->name,
                label, ARENA_LABEL_MAX);
    TT_ASSERT(strlen(label) <= ARENA_LABEL_MAX);
    if (a->n_labels == ARENA_MAX_LABELS)
        fprintf(stderr, "tiertrain: internal error: arena \"%s\": more than %d labels (adding \"%s\")\n", a->name,
                ARENA_MAX_LABELS, label);
    TT_ASSERT(a->n_labels < ARENA_MAX_LABELS);
    arena_label_rec *l = &a->labels[a->n_labels];
    memset(l, 0, sizeof *l);
    memcpy(l->name, label, strlen(label) + 1);
    return a->n_labels++;
}

void *arena_alloc(tt_arena *a, size_t bytes, const char *label) {
    TT_ASSERT(a != NULL && label != NULL);
    size_t req = bytes ? bytes : 1;
    size_t off = a->used % ARENA_ALIGN ? a->used + (ARENA_ALIGN - a->used % ARENA_ALIGN) : a->used;
    int fits = off >= a->used && off <= a->capacity && req <= a->capacity - off;
    if (!fits) {
        char rb[32], lb[32], cb[32];
        size_t left = a->capacity - a->used, aligned_left = off >= a->used && off <= a->capacity ? a->capacity - off : 0;
        fprintf(stderr,
                "tiertrain: internal error: arena \"%s\": allocation \"%s\" of %zu bytes (%s) does not fit: "
                "%zu bytes (%s) left of %zu (%s), %zu from the next %u-byte boundary "
                "(the plan should have made room for it)\n",
                a->name, label, bytes, tt_fmt_bytes(bytes, rb, sizeof rb), left, tt_fmt_bytes(left, lb, sizeof lb),
                a->capacity, tt_fmt_bytes(a->capacity, cb, sizeof cb), aligned_left, ARENA_ALIGN);
    }
    TT_ASSERT(fits && "arena capacity exceeded");
    arena_label_rec *l = &a->labels[label_index(a, label)];
    l->live_bytes += bytes;
    l->live_count++;
    if (l->live_bytes > l->hw_bytes || (l->live_bytes == l->hw_bytes && l->live_count > l->hw_count)) {
        l->hw_bytes = l->live_bytes;
        l->hw_count = l->live_count;
    }
    size_t rz = tt_arena_redzone ? tt_arena_redzone() : 0;
    a->used = off + req + (rz <= a->capacity - off - req ? rz : a->capacity - off - req); /* the redzone, where it fits */
    if (a->used > a->peak) a->peak = a->used;
    hook(a, ARENA_HOOK_ALLOC, off, req, label);
    return a->base ? (void *)(a->base + off) : (void *)(uintptr_t)(MEASURE_BASE + off);
}

const char *arena_name(const tt_arena *a) { return a->name; }
size_t arena_used(const tt_arena *a) { return a->used; }
size_t arena_peak(const tt_arena *a) { return a->peak; }
size_t arena_capacity(const tt_arena *a) { return a->capacity; }
void *arena_base(const tt_arena *a) { return a->base; }

size_t arena_mark(tt_arena *a) {
    if (a->n_marks == ARENA_MAX_MARKS)
        fprintf(stderr, "tiertrain: internal error: arena \"%s\": more than %d marks open (a missing arena_release?)\n",
                a->name, ARENA_MAX_MARKS);
    TT_ASSERT(a->n_marks < ARENA_MAX_MARKS);
    arena_mark_rec *m = &a->marks[a->n_marks++];
    m->used = a->used;
    m->n_labels = a->n_labels;
    for (int i = 0; i < a->n_labels; i++) {
        m->live_bytes[i] = a->labels[i].live_bytes;
        m->live_count[i] = a->labels[i].live_count;
    }
    return a->used;
}

void arena_release(tt_arena *a, size_t mark) {
    int k = a->n_marks - 1;
    while (k >= 0 && a->marks[k].used != mark) k--;
    if (k < 0 && mark == 0) { /* empty the arena, closing every mark */
        for (int i = 0; i < a->n_labels; i++) a->labels[i].live_bytes = 0, a->labels[i].live_count = 0;
        hook(a, ARENA_HOOK_RELEASE, 0, a->used, NULL);
        a->used = 0;
        a->n_marks = 0;
        return;
    }
    if (k < 0)
        fprintf(stderr, "tiertrain: internal error: arena \"%s\": release of mark %zu, which is not open\n", a->name,
                mark);
    TT_ASSERT(k >= 0 && "arena_release of a mark that is not open");
    const arena_mark_rec *m = &a->marks[k];
    for (int i = 0; i < a->n_labels; i++) {
        a->labels[i].live_bytes = i < m->n_labels ? m->live_bytes[i] : 0;
        a->labels[i].live_count = i < m->n_labels ? m->live_count[i] : 0;
    }
    hook(a, ARENA_HOOK_RELEASE, m->used, a->used - m->used, NULL);
    a->used = m->used;
    a->n_marks = k;
}

int arena_n_labels(const tt_arena *a) { return a->n_labels; }

void arena_label(const tt_arena *a, int i, const char **label, size_t *bytes, int *count) {
    TT_ASSERT(i >= 0 && i < a->n_labels);
    if (label) *label = a->labels[i].name;
    if (bytes) *bytes = a->labels[i].hw_bytes;
    if (count) *count = a->labels[i].hw_count;
}

void arena_print_table(const tt_arena *a, FILE *f) {
    char title[ARENA_LABEL_MAX + 16], b0[32], b1[32], b2[32];
    snprintf(title, sizeof title, "arena \"%s\"", a->name);
    int w = (int)strlen("total");
    for (int i = 0; i < a->n_labels; i++) {
        int n = (int)strlen(a->labels[i].name);
        if (n > w) w = n;
    }
    int tw = (int)strlen(title);
    if (tw < w + 2) tw = w + 2;
    fprintf(f, "%-*s  %6s  %12s\n", tw, title, "count", "bytes");
    size_t total = 0;
    long long count = 0;
    for (int i = 0; i < a->n_labels; i++) {
        const arena_label_rec *l = &a->labels[i];
        fprintf(f, "  %-*s  %6d  %12s\n", tw - 2, l->name, l->hw_count, tt_fmt_bytes(l->hw_bytes, b0, sizeof b0));
        total += l->hw_bytes;
        count += l->hw_count;
    }
    fprintf(f, "  %-*s  %6lld  %12s\n", tw - 2, "total", count, tt_fmt_bytes(total, b0, sizeof b0));
    if (a->base)
        fprintf(f, "  used %s, peak %s, capacity %s\n", tt_fmt_bytes(a->used, b0, sizeof b0),
                tt_fmt_bytes(a->peak, b1, sizeof b1), tt_fmt_bytes(a->capacity, b2, sizeof b2));
    else
        fprintf(f, "  used %s, peak %s, capacity unlimited (measuring)\n", tt_fmt_bytes(a->used, b0, sizeof b0),
                tt_fmt_bytes(a->peak, b1, sizeof b1));
}
