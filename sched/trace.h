/* sched/trace.h — the event trace of the streaming runtime and its overlap
 * statistics.
 *
 * The IO thread and the compute thread record what they did and when (an
 * NVMe read of layer 12, its copy to the device, the forward of layer 11, ...)
 * into one preallocated buffer. Per step, the trainer asks how busy the "IO
 * side" (reads, copies, decompression, activation spills) and the compute side
 * (layers, optimizer) were, and how well they overlapped; at the end the whole
 * trace can be written as Chrome / Perfetto JSON (chrome://tracing,
 * ui.perfetto.dev), one row per track.
 *
 * Times are tt_now() seconds (CLOCK_MONOTONIC); the trace keeps its own
 * origin, the tt_now() of trace_create, which is time 0 in the written file. */
#ifndef TT_TRACE_H
#define TT_TRACE_H

#include "io/atomicfile.h"
#include "kernels/backend.h"

#include <stddef.h>
#include <stdint.h>

typedef enum tt_trace_track {
    TRACE_IO = 0,      /* "io": NVMe reads into pinned host memory */
    TRACE_COPY,        /* "copy": host -> device layer copies */
    TRACE_DECOMPRESS,  /* "decompress": lz4 pages, NF4 dequantization staging */
    TRACE_COMPUTE,     /* "compute": layer forward / backward, head */
    TRACE_SPILL,       /* "spill": activation checkpoint spill / unspill copies */
    TRACE_OPT,         /* "optimizer": LoRA optimizer steps */
    TRACE_N_TRACKS
} tt_trace_track;

typedef struct tt_trace tt_trace;

/* Statistics of one step: the events that start at or after the step's begin
 * (those starting earlier, e.g. a prefetch issued during the previous step,
 * belong to that step), each cut off at `now`. Busy times are lengths of the
 * UNION of the intervals, so two concurrent reads count once. */
typedef struct tt_trace_stats {
    double step_time;     /* now - step begin, seconds */
    double io_busy;       /* union of io + copy + decompress + spill, seconds */
    double compute_busy;  /* union of compute + optimizer, seconds */
    double io_pct;        /* 100 * io_busy / step_time (0 for a zero-length step) */
    double compute_pct;   /* 100 * compute_busy / step_time (0 for a zero-length step) */
    double overlap_eff;   /* max(io_busy, compute_busy) / step_time: 1.0 = the slower
                             side was busy the whole step (perfect overlap); 1.0 for
                             a zero-length step */
    size_t n_events;      /* events counted in this step */
    size_t n_dropped;     /* events dropped so far (whole trace) because it was full */
} tt_trace_stats;

/* A trace holding up to max_events events (56 bytes each with the statistics
 * scratch, allocated and touched now, so recording never allocates or
 * faults). Aborts on out-of-memory. Free with trace_free. */
tt_trace *trace_create(size_t max_events);
void trace_free(tt_trace *t); /* NULL is fine */

/* The track's name ("io", "copy", "decompress", "compute", "spill",
 * "optimizer"); track must be a tt_trace_track below TRACE_N_TRACKS. */
const char *trace_track_name(int track);
/* The track of that name, or -1. */
int trace_track_of(const char *name);
/* 1 for the tracks on the "IO side" of the overlap statistics (io, copy,
 * decompress, spill), 0 for the compute side (compute, optimizer). */
int trace_track_is_io(int track);

/* An interval, t0 <= t1 (any unit). */
typedef struct tt_interval {
    double t0, t1;
} tt_interval;
/* The length of the union of iv[0..n): overlapping intervals count once.
 * Sorts iv in place; never allocates. */
double trace_union_length(tt_interval *iv, size_t n);

/* Records one event on `track`, from t0 to t1 (tt_now() seconds, t0 <= t1).
 * `name` is not copied: it must outlive the trace (a string literal). arg is
 * a layer index or similar, -1 for none. Thread-safe (a mutex), never
 * allocates; when the trace is full the event is only counted as dropped. */
void trace_add(tt_trace *t, int track, const char *name, int64_t arg, double t0, double t1);

/* ---- device-timed spans ----
 * Work issued to a backend queue runs later than the host issues it (on a
 * GPU, or the cpu-async workers): a span times it with the backend's timing
 * events, so the trace shows when the work ran. Without timing events
 * (trace_dev_enable returned 0, or never called) a span is the host's
 * interval from begin to end, right where work runs at the call. */

/* Creates max_spans pairs of timing events (now, so that recording never
 * allocates); returns 1, or 0 when the backend has none. Call once, after
 * the backend is chosen; trace_free frees them (with that backend current). */
int trace_dev_enable(tt_trace *t, size_t max_spans);
typedef struct tt_span { long slot; double t0; } tt_span;
/* Marks the start of a span on queue q (NULL: the compute queue). t may be NULL (nothing recorded). */
tt_span trace_span_begin(tt_trace *t, tt_queue *q);
/* Marks its end on the same queue; the event is recorded by trace_dev_flush
 * once the queue has reached the mark (on the host's clock). When every
 * slot is in flight, the span is counted as dropped. */
void trace_span_end(tt_trace *t, tt_span s, tt_queue *q, int track, const char *name, int64_t arg);
/* Records the spans whose work is done: waits for the compute queue to reach
 * what was issued so far (call it where the host waits anyway, e.g. after a
 * step's read-back); spans still in flight stay for a later flush. */
void trace_dev_flush(tt_trace *t);

/* Events recorded on one track. */
size_t trace_count(const tt_trace *t, int track);

/* Events recorded, events dropped, and the origin (tt_now() at create). */
size_t trace_n_events(const tt_trace *t);
size_t trace_n_dropped(const tt_trace *t);
double trace_origin(const tt_trace *t);

/* Forgets every event (and step mark) recorded so far (for per-step
 * statistics without a trace file: clear at each step's start, so the buffer
 * never fills). Call it when no other thread is recording. */
void trace_clear(tt_trace *t);
/* Starts a step at time `now` (its statistics, and a mark in the written trace). */
void trace_step_begin(tt_trace *t, double now);
/* Statistics of the step begun by the last trace_step_begin, up to `now`
 * (see tt_trace_stats). Scans every recorded event once and sorts the step's
 * (in preallocated scratch, no allocation): call it once per step, not per
 * event. Safe while other threads record. */
void trace_step_stats(tt_trace *t, double now, tt_trace_stats *out);

/* Writes the trace as Chrome trace-event JSON:
 *   {"traceEvents":[ metadata events naming the process and each track's
 *     thread (ph "M", "thread_name"), pid 1, tid = track + 1; then one
 *     complete event per record: {"name", "cat": track name, "ph":"X",
 *     "ts", "dur" (microseconds since the origin), "pid":1, "tid",
 *     "args":{"layer": arg} (no args when arg < 0)}; then one instant event
 *     per trace_step_begin (the first 65536), {"name":"step","ph":"i",
 *     "s":"g", "ts", "pid":1, "tid":0, "args":{"step": k}}, k = 1, 2, ...
 *     in the order begun (tiertrain trace draws a step's window from them) ],
 *    "displayTimeUnit":"ms",
 *    "otherData":{"events": N, "dropped_events": N, "capacity": N}}
 * Events recorded while it runs may or may not be included. When events were
 * dropped, also prints a warning saying how many to stderr. Written to
 * "<path>.partial", fsynced and renamed into place, so a reader never sees
 * half a file. Returns 0, or -errno with tt_lasterr naming the file (the
 * partial file is removed). */
int trace_write_chrome(const tt_trace *t, const char *path);

/* The same into "<path>.partial" held since the run's start (atomic_partial_open: a second run writing the same
 * path is refused before it works, not at its end); a run that fails before this drops it
 * (atomic_partial_drop). pf is left empty either way. */
int trace_write_chrome_held(const tt_trace *t, const char *path, atomic_partial *pf);

#endif
