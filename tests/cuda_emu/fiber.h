/* tests/cuda_emu/fiber.h — a GPU block's threads as fibers on one CPU thread:
 * the emulated GPU's (tests/cuda_emu/cuda_emu.cc) and test_cuda_fa2's
 * (tests/test_cuda_fa2.c). Header-only, C and C++; include it from one file
 * of a program (it defines the switch routine).
 *
 * tt_fib_run runs a block's n threads, each body(arg, tid) on a stack of its
 * own, one at a time: a thread runs until it waits (tt_fib_wait) or ends; a
 * block barrier (TT_FIB_BLOCK_WAIT) opens when every live thread of the block
 * waits at it (threads that ended count as arrived, as on a GPU), a warp
 * meeting (TT_FIB_WARP_WAIT) when every lane of the warp waits at one; then
 * the released threads run again, in thread order (a thread that waits or
 * ends hands over to the next one that can run, without a detour through
 * the scheduler: one switch a wait, not two). `epoch` counts the block's
 * barriers and `warp_meet[w]` warp w's meetings (racecheck and the warp
 * exchanges read them). A deadlock, or a warp meeting some of whose lanes
 * ended, stops the program with a message naming `name`.
 *
 * On x86-64 a switch is a few instructions (the callee-saved registers pushed,
 * the stack pointer swapped); elsewhere ucontext's, which also saves the
 * signal mask (a system call each; -DTT_EMU_UCONTEXT selects it on x86-64
 * too). POSIX threads with barriers, what test_cuda_fa2 used before, spent
 * most of their time in the kernel waking 128 threads at every barrier. Under
 * AddressSanitizer every switch is announced to it (its fiber interface), so
 * it knows which stack is live. */
#ifndef TT_CUDA_EMU_FIBER_H
#define TT_CUDA_EMU_FIBER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__x86_64__) && !defined(TT_EMU_UCONTEXT)
#define TT_FIB_ASM 1
#else
#define TT_FIB_ASM 0
#include <ucontext.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#define TT_FIB_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TT_FIB_ASAN 1
#endif
#endif
#ifndef TT_FIB_ASAN
#define TT_FIB_ASAN 0
#endif
#if TT_FIB_ASAN
#include <pthread.h>
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

enum { TT_FIB_MAX = 1024 };
enum { TT_FIB_RUN, TT_FIB_BLOCK_WAIT, TT_FIB_WARP_WAIT, TT_FIB_DONE };

typedef struct tt_fib {
#if TT_FIB_ASM
    void *sp;
#else
    ucontext_t ctx;
#endif
    unsigned char *lo; /* its stack: lo .. lo + size */
    size_t size;
    void *asan_fake; /* AddressSanitizer's record of its stack while it is switched out */
    int tid, state;
} tt_fib;

typedef struct tt_fib_sched {
    const char *who, *name; /* messages: "WHO: NAME: ..." (the program, the kernel) */
    tt_fib fib[TT_FIB_MAX];
    tt_fib *cur; /* the running thread (NULL between blocks) */
    int n;
    int next; /* the round's next thread to look at: the threads run in order, each handing over */
    unsigned epoch;                        /* block barriers opened in this block */
    unsigned warp_meet[TT_FIB_MAX / 32]; /* each warp's meetings in this block */
    void (*body)(void *arg, int tid);
    void *arg;
    unsigned char *stacks; /* TT_FIB_MAX stacks of `stack` bytes, mapped at the first run */
    size_t stack;
#if TT_FIB_ASM
    void *sched_sp;
#else
    ucontext_t sched;
#endif
    const void *sched_lo; /* the scheduler's stack (this thread's), for AddressSanitizer */
    size_t sched_size;
    void *sched_fake;
} tt_fib_sched;

#if TT_FIB_ASM
/* Saves the callee-saved registers on the current stack, stores the stack
 * pointer in *save, continues on the stack next (as saved by this function,
 * or as tt_fib_prepare built it). */
#ifdef __cplusplus
extern "C"
#endif
void tt_fib_switch(void **save, void *next);
__asm__(".text\n"
        ".globl tt_fib_switch\n"
        ".type tt_fib_switch, @function\n"
        "tt_fib_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size tt_fib_switch, .-tt_fib_switch\n");
#endif

static __thread tt_fib_sched *tt_fib_running; /* the scheduler whose block this thread runs */

/* AddressSanitizer: a switch is announced before it (the stack to be entered)
 * and completed after it, on the stack entered. */
static inline void tt_fib_asan_leave(void **fake, const void *lo, size_t size) {
#if TT_FIB_ASAN
    __sanitizer_start_switch_fiber(fake, lo, size);
#else
    (void)fake; (void)lo; (void)size;
#endif
}
static inline void tt_fib_asan_enter(void *fake, const void **lo, size_t *size) {
#if TT_FIB_ASAN
    __sanitizer_finish_switch_fiber(fake, lo, size);
#else
    (void)fake; (void)lo; (void)size;
#endif
}

/* The round's next thread that can run (thread order), or NULL: the round is over. */
static inline tt_fib *tt_fib_next(tt_fib_sched *s) {
    while (s->next < s->n && s->fib[s->next].state != TT_FIB_RUN) s->next++;
    return s->next < s->n ? &s->fib[s->next++] : NULL;
}

/* The running thread f waits or (`end`) has ended: the round's next thread runs, or, at the round's end, the
 * scheduler. Returns when f runs again (never with `end`). */
static inline void tt_fib_leave(tt_fib_sched *s, tt_fib *f, int end) {
    tt_fib *g = tt_fib_next(s);
    s->cur = g;
    tt_fib_asan_leave(end ? NULL : &f->asan_fake, g ? g->lo : (unsigned char *)s->sched_lo,
                      g ? g->size : s->sched_size);
#if TT_FIB_ASM
    tt_fib_switch(&f->sp, g ? g->sp : s->sched_sp);
#else
    if (end) setcontext(g ? &g->ctx : &s->sched);
    swapcontext(&f->ctx, g ? &g->ctx : &s->sched);
#endif
    tt_fib_asan_enter(f->asan_fake, NULL, NULL);
    s->cur = f;
}

static void tt_fib_main(void) {
    tt_fib_sched *s = tt_fib_running;
    tt_fib *f = s->cur;
    tt_fib_asan_enter(NULL, NULL, NULL);
    s->body(s->arg, f->tid);
    f->state = TT_FIB_DONE;
    tt_fib_leave(s, f, 1); /* never resumed */
    abort();
}

/* Makes thread i start at tt_fib_main on its own stack. */
static inline void tt_fib_prepare(tt_fib_sched *s, tt_fib *f, int i) {
    /* the tops staggered by 64 bytes: at one stride apart, every fiber's frames would fall in the same cache sets */
    unsigned char *top = s->stacks + (size_t)(i + 1) * s->stack - (size_t)(i % 64) * 64;
    f->tid = i;
    f->state = TT_FIB_RUN;
    f->asan_fake = NULL;
#if TT_FIB_ASM
    f->lo = s->stacks + (size_t)i * s->stack;
    f->size = (size_t)(top - f->lo);
#else
    f->lo = top - (s->stack - 4096); /* clear of the stagger, so the stacks do not overlap */
    f->size = s->stack - 4096;
#endif
#if TT_FIB_ASAN
    ASAN_UNPOISON_MEMORY_REGION(f->lo, f->size); /* frames an earlier block's thread left behind */
#endif
#if TT_FIB_ASM
    void **sp = (void **)top;
    *--sp = NULL;                             /* tt_fib_main's return address: it never returns */
    *--sp = (void *)tt_fib_main;              /* where tt_fib_switch's ret goes */
    for (int r = 0; r < 6; r++) *--sp = NULL; /* rbp rbx r12 r13 r14 r15 */
    f->sp = sp;
#else
    getcontext(&f->ctx);
    f->ctx.uc_stack.ss_sp = f->lo;
    f->ctx.uc_stack.ss_size = f->size;
    f->ctx.uc_link = NULL;
    makecontext(&f->ctx, tt_fib_main, 0);
#endif
}

/* One round: the threads that can run, in thread order, each until it waits or ends. */
static inline void tt_fib_round(tt_fib_sched *s) {
    s->next = 0;
    tt_fib *f = tt_fib_next(s);
    if (!f) return;
    s->cur = f;
    tt_fib_asan_leave(&s->sched_fake, f->lo, f->size);
#if TT_FIB_ASM
    tt_fib_switch(&s->sched_sp, f->sp);
#else
    swapcontext(&s->sched, &f->ctx);
#endif
    tt_fib_asan_enter(s->sched_fake, NULL, NULL);
    s->cur = NULL;
}

/* From a thread of the running block: waits in state TT_FIB_BLOCK_WAIT or
 * TT_FIB_WARP_WAIT until the scheduler releases it. */
static inline void tt_fib_wait(tt_fib_sched *s, int state) {
    tt_fib *f = s->cur;
    f->state = state;
    tt_fib_leave(s, f, 0);
}

static inline int tt_fib_warp_lanes(const tt_fib_sched *s, int w) { return s->n - 32 * w < 32 ? s->n - 32 * w : 32; }

/* Maps the stacks, TT_FIB_MAX of `stack` bytes each, unless they are. */
static inline void tt_fib_map(tt_fib_sched *s, size_t stack) {
    if (s->stacks) return;
    void *m = mmap(NULL, (size_t)TT_FIB_MAX * stack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (m == MAP_FAILED) {
        fprintf(stderr, "%s: cannot map the fiber stacks (%d x %zu bytes)\n", s->who, TT_FIB_MAX, stack);
        abort();
    }
    s->stacks = (unsigned char *)m;
    s->stack = stack;
}

/* Runs a block of n threads (1 .. TT_FIB_MAX), each body(arg, tid), to the end, on stacks of stack bytes
 * (mapped at the first call; later calls give the same size). */
static inline void tt_fib_run(tt_fib_sched *s, int n, size_t stack, void (*body)(void *, int), void *arg) {
    if (n < 1 || n > TT_FIB_MAX || (s->stacks && s->stack != stack)) {
        fprintf(stderr, "%s: %s: a block of %d threads on %zu-byte stacks (at most %d, one size)\n", s->who, s->name, n,
                stack, TT_FIB_MAX);
        abort();
    }
    tt_fib_map(s, stack);
    tt_fib_running = s; /* one block at a time on a thread: no nesting */
    s->n = n;
    s->body = body;
    s->arg = arg;
    s->epoch = 0;
    memset(s->warp_meet, 0, sizeof s->warp_meet);
    for (int i = 0; i < n; i++) tt_fib_prepare(s, &s->fib[i], i);
#if TT_FIB_ASAN
    static __thread void *stack_lo; /* this thread's stack, where the rounds start and end */
    static __thread size_t stack_size;
    if (!stack_lo) {
        pthread_attr_t at;
        if (pthread_getattr_np(pthread_self(), &at) == 0) {
            pthread_attr_getstack(&at, &stack_lo, &stack_size);
            pthread_attr_destroy(&at);
        }
    }
    s->sched_lo = stack_lo;
    s->sched_size = stack_size;
#endif
    for (;;) {
        tt_fib_round(s);
        int live = 0, released = 0, block_wait = 0;
        for (int i = 0; i < n; i++) {
            live += s->fib[i].state != TT_FIB_DONE;
            block_wait += s->fib[i].state == TT_FIB_BLOCK_WAIT;
        }
        if (!live) break;
        if (block_wait == live) {
            s->epoch++;
            for (int i = 0; i < n; i++)
                if (s->fib[i].state == TT_FIB_BLOCK_WAIT) s->fib[i].state = TT_FIB_RUN;
            continue;
        }
        for (int w = 0; w * 32 < n; w++) {
            int lanes = tt_fib_warp_lanes(s, w), waiting = 0, done = 0;
            for (int l = 0; l < lanes; l++) {
                waiting += s->fib[32 * w + l].state == TT_FIB_WARP_WAIT;
                done += s->fib[32 * w + l].state == TT_FIB_DONE;
            }
            if (waiting && waiting + done == lanes) {
                if (done) {
                    fprintf(stderr, "%s: %s: a warp-wide operation with %d of its lanes ended\n", s->who, s->name,
                            done);
                    abort();
                }
                for (int l = 0; l < lanes; l++) s->fib[32 * w + l].state = TT_FIB_RUN;
                s->warp_meet[w]++;
                released = 1;
            }
        }
        if (!released) {
            fprintf(stderr, "%s: %s: deadlock: %d threads wait at __syncthreads, %d live, the rest at warp "
                            "operations their warps do not all reach\n",
                    s->who, s->name, block_wait, live);
            abort();
        }
    }
}

#endif
