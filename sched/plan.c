/* sched/plan.c — the memory planner. Every candidate plan is measured by
 * running the runtime's own carving (stream_measure) on measuring arenas, so
 * the predicted bytes are exactly what the run will reserve. */
#include "sched/plan.h"

#include "core/base/common.h"
#include "kernels/backend.h"
#include "sched/arena.h"
#include "sched/stream.h"

#include <errno.h>
#include <string.h>

static void measure(const tier_store *s, tt_plan *p) {
    tt_arena *d = arena_measure("device"), *h = arena_measure("host");
    stream_measure(s, p, d, h);
    p->dev_bytes = arena_peak(d);
    p->host_bytes = arena_peak(h);
    arena_free(d);
    arena_free(h);
}

/* --hbm bounds the whole process's device memory: the arena plus what the
 * backend holds outside it (CUDA context, cuBLAS workspace; 0 on the CPU). */
int plan_dev_fits(uint64_t arena, uint64_t hbm, uint64_t *total) {
    uint64_t t = arena + be_reserved_bytes();
    if (total) *total = t;
    return !hbm || t <= hbm;
}

uint64_t plan_hbm_bound(uint64_t hbm, uint64_t dev_avail, int what_if) {
    return dev_avail && (!hbm || (!what_if && hbm > dev_avail)) ? dev_avail : hbm;
}

static int fits_dev(const tt_plan *p) { return plan_dev_fits(p->dev_bytes, p->req.hbm, NULL); }

static int fits(const tt_plan *p) { return fits_dev(p) && (!p->req.host || p->host_bytes <= p->req.host); }

/* IO and compute per step for the bandwidth-based prediction. */
static void predict(const tier_store *s, tt_plan *p) {
    const tt_config *c = tier_config(s);
    int L = p->L;
    uint64_t layers = 0;
    for (int l = 0; l < L; l++) layers += tier_extent_at(s, TT_EXTENT_LAYER(l))->stored;
    double avg = (double)layers / L;
    /* Loads per step with s slots and Belady eviction: 2L accesses, of which
     * the s layers held at the forward/backward turn and the s held at the
     * next step's start are hits (measured in tests/test_stream_faults.c).
     * Forward only (generation), a step is one pass of L accesses in the same
     * order each time: s - 1 layers stay and one slot cycles. */
    int loads = p->slots >= L ? 0 : p->req.forward_only ? L - (p->slots - 1) : 2 * L - 2 * p->slots;
    if (loads < 0) loads = 0;
    p->io_bytes_first = layers + tier_extent_at(s, TT_EXTENT_EMBED(c))->stored + tier_extent_at(s, TT_EXTENT_HEAD(c))->stored;
    p->io_bytes_step = p->host_cache ? 0 : (uint64_t)(loads * avg);
    double tokens = (double)p->req.B * p->req.seq * p->req.K, lin = 0, attn = 0;
    for (uint32_t i = 0; i < config_n_tensors(c); i++) {
        tt_tensor_desc d;
        config_tensor(c, i, &d);
        if (d.role == TT_ROLE_LINEAR) lin += (double)d.rows * d.cols;
    }
    for (int l = 0; l < L; l++) attn += (double)c->layers[l].n_heads * c->head_dim;
    /* Per token: frozen projections 2 FLOPs per weight forward, 2 in the
     * recomputation, 2 backward (the input gradient only: no weight gradient
     * for frozen weights; LoRA's few are left out); causal attention's two
     * products 2 * seq * head_dim per head forward (half the keys on
     * average), as much again recomputed and twice that backward; the head
     * (not recomputed) 2 + 2 per vocab x hidden. */
    p->flops_step = tokens * (6.0 * lin + 8.0 * p->req.seq * attn + 4.0 * (double)c->vocab * c->hidden);
    if (p->req.forward_only) /* a forward pass: the products once, keys up to seq, the head's logits */
        p->flops_step = tokens * (2.0 * lin + 2.0 * p->req.seq * attn + 2.0 * (double)c->vocab * c->hidden);
    p->pred_io_s = p->req.io_gbps > 0 ? (double)p->io_bytes_step / (p->req.io_gbps * 1e9) : 0;
    p->pred_compute_s = p->req.gflops > 0 ? p->flops_step / (p->req.gflops * 1e9) : 0;
    p->pred_step_s = p->pred_io_s > p->pred_compute_s ? p->pred_io_s : p->pred_compute_s;
    /* a rate not given: no time rather than half of one (the IO's is needed only when layers are read per step) */
    if (p->req.gflops <= 0 || (p->io_bytes_step && p->req.io_gbps <= 0)) p->pred_step_s = 0;
}

void plan_minimum(const tier_store *s, const tt_plan_req *req, uint64_t *dev, uint64_t *host) {
    tt_plan p;
    memset(&p, 0, sizeof p);
    p.req = *req;
    p.L = (int)tier_config(s)->n_layers;
    p.slots = p.L < 2 || req->min_slots == 1 ? (p.L ? 1 : 0) : 2;
    p.head_on_device = req->lm_head == PLAN_HEAD_DEVICE;
    p.host_cells = req->forward_only ? 0 : p.L * req->K;
    p.host_cache = req->trainable != 0;
    measure(s, &p);
    *dev = p.dev_bytes;
    *host = p.host_bytes;
}

/* Whether the owner's carve takes its optional region for plan p (more device bytes with it than without);
 * never where the request says no. */
static int opt_taken(const tier_store *s, const tt_plan *p) {
    if (p->req.no_user_opt) return 0;
    tt_plan a = *p, b = *p;
    a.user_opt = 0;
    b.user_opt = 1;
    measure(s, &a);
    measure(s, &b);
    return b.dev_bytes > a.dev_bytes;
}

/* Grows plan p greedily while the budgets allow: lm_head on the device, a third slot, (with_opt) the owner's
 * optional region, the activations (top layers first), then more slots, then the host layer cache. */
static void grow(const tier_store *s, tt_plan *pp, int with_opt) {
    const tt_plan_req *req = &pp->req;
    int L = pp->L, K = req->K, cells = req->forward_only ? 0 : L * K;
    tt_plan p = *pp, t = p;
    /* device-side growth needs no more host memory (more activations on the device spill fewer; the optional
     * region's place is chosen by plan_budgets, which judges it by both budgets), so it is judged by --hbm
     * alone; the host cache needs both */
#define TRY(change) do { t = p; change; t.host_cells = cells - t.dev_cells; measure(s, &t); if (fits_dev(&t)) p = t; } while (0)
    if (p.slots == 1 && L > 1) TRY(t.slots = 2); /* prefetch first */
    if (req->lm_head == PLAN_HEAD_AUTO) TRY(t.head_on_device = 1);
    if (L > 2 && p.slots >= 2) TRY(t.slots = 3);
    if (with_opt) TRY(t.user_opt = 1);
    while (p.user_dev < req->user_units) { /* the owner's regions (KV caches) before the activations */
        int before = p.user_dev;
        TRY(t.user_dev = p.user_dev + 1);
        if (p.user_dev == before) break;
    }
    for (int step = K; p.dev_cells < cells;) { /* a layer's worth at a time, then single cells */
        int before = p.dev_cells;
        TRY(t.dev_cells = p.dev_cells + step > cells ? cells : p.dev_cells + step);
        if (p.dev_cells == before) {
            if (step == 1) break;
            step = 1;
        }
    }
    while (p.slots < L) {
        int before = p.slots;
        TRY(t.slots = p.slots + 1);
        if (p.slots == before) break;
    }
    if (p.slots < L && !req->no_host_cache && !p.host_cache) {
        t = p;
        t.host_cache = 1;
        measure(s, &t);
        if (fits(&t)) p = t;
    }
#undef TRY
    *pp = p;
}

/* What a refused generation plan asks to lower: the command's flags (req->gen_flags; generate's, plan
 * --generate's and bench generate's differ), else the quantities in words. */
static const char *gen_flags(const tt_plan_req *req) {
    return req->gen_flags ? req->gen_flags : "the prompts per batch, the prompt chunk or the KV cache positions";
}

static int plan_budgets(const tier_store *s, const tt_plan_req *req, tt_plan *out) {
    const tt_config *c = tier_config(s);
    int L = (int)c->n_layers, K = req->K, cells = req->forward_only ? 0 : L * K;
    TT_ASSERT(req->B > 0 && req->seq > 0 && K > 0);
    tt_plan p;
    memset(&p, 0, sizeof p);
    p.req = *req;
    p.L = L;
    if (!req->hbm && !req->host) { /* no budget: everything resident */
        p.slots = L; p.head_on_device = req->lm_head != PLAN_HEAD_HOST; p.dev_cells = cells;
        p.user_dev = req->user_units;
        p.user_opt = opt_taken(s, &p);
        p.host_cache = req->trainable != 0;
    } else {
        /* the smallest plan: two slots (one layer ahead; one where req.min_slots allows), lm_head streamed, every
         * activation spilled */
        p.slots = L < 2 || req->min_slots == 1 ? 1 : 2;
        p.head_on_device = req->lm_head == PLAN_HEAD_DEVICE;
        p.dev_cells = 0;
        p.host_cache = req->trainable != 0; /* the master weights */
    }
    p.host_cells = cells - p.dev_cells;
    measure(s, &p);
    uint64_t total;
    if (!plan_dev_fits(p.dev_bytes, req->hbm, &total)) {
        char need[32], have[32];
        if (req->forward_only)
            return TT_FAIL(-ENOSPC, "--hbm %s is too small to generate for %s with %d prompts at a time in chunks of %d "
                           "tokens: the smallest plan (2 layer slots, every KV cache in host memory) needs --hbm %s; "
                           "raise --hbm or lower %s",
                           tt_fmt_bytes(req->hbm, have, sizeof have), c->name, req->B, req->seq,
                           tt_fmt_bytes_up(tt_align_up(total, 1 << 20), need, sizeof need), gen_flags(req));
        /* a --host too small for that plan too is named with it: one refusal, not one after the other */
        char hneed[64] = "";
        if (req->host && p.host_bytes > req->host) {
            char hb[32];
            snprintf(hneed, sizeof hneed, " and --host %s",
                     tt_fmt_bytes_up(tt_align_up(p.host_bytes, 1 << 20), hb, sizeof hb));
        }
        return TT_FAIL(-ENOSPC, "--hbm %s is too small for %s with %d x %d-token micro-batches: the smallest plan (%d "
                       "layer slot%s, every activation spilled) needs --hbm %s%s; raise %s or lower --micro-batch / "
                       "--seq", tt_fmt_bytes(req->hbm, have, sizeof have), c->name, req->B, req->seq, p.slots,
                       p.slots == 1 ? "" : "s", tt_fmt_bytes_up(tt_align_up(total, 1 << 20), need, sizeof need), hneed,
                       hneed[0] ? "both" : "--hbm");
    }
    if (req->hbm || req->host) {
        /* The owner's optional region (a layer's weights decoded once a pass: compute time, where a spilled
         * activation's copies hide behind the compute) goes before the activations where that costs no slot and
         * no host cache and the budgets hold it (the activations it displaces spill: more host memory); else
         * after everything, where it still fits; else not at all: a larger budget gives no slot, no host cache and
         * no --host room to it. */
        tt_plan a = p;
        grow(s, &a, 0);
        if (opt_taken(s, &p)) {
            tt_plan b = p;
            grow(s, &b, 1);
            if (b.user_opt && fits(&b) && b.slots >= a.slots && b.host_cache >= a.host_cache) a = b;
            else {
                b = a;
                b.user_opt = 1;
                measure(s, &b);
                if (fits(&b)) a = b;
            }
        }
        p = a;
    }
    if (req->host && p.host_bytes > req->host) {
        char need[32], have[32];
        if (req->forward_only)
            return TT_FAIL(-ENOSPC, "--host %s is too small for the staging buffer, the embedding and the KV caches in "
                           "host memory of this plan: it needs --host %s; raise --host (or --hbm, so more KV caches "
                           "stay on the device) or lower %s", tt_fmt_bytes(req->host, have, sizeof have),
                           tt_fmt_bytes_up(tt_align_up(p.host_bytes, 1 << 20), need, sizeof need), gen_flags(req));
        return TT_FAIL(-ENOSPC, "--host %s is too small for the staging buffer, the embedding and the spilled "
                       "activations of this plan%s: it needs --host %s; raise --host (or --hbm, so fewer activations "
                       "spill)", tt_fmt_bytes(req->host, have, sizeof have),
                       req->trainable ? ", with every layer's master weights and optimizer state" : "",
                       tt_fmt_bytes_up(tt_align_up(p.host_bytes, 1 << 20), need, sizeof need));
    }
    p.prefetch = p.slots - 1;
    if (p.prefetch > 4) p.prefetch = 4;
    p.host_cells = cells - p.dev_cells;
    measure(s, &p);
    predict(s, &p);
    *out = p;
    return 0;
}

/* The CPU backend's "device" arena is host memory too. */
static int dev_is_host(void) { return strncmp(be_current()->name, "cpu", 3) == 0; } /* cpu, cpu-async */

static uint64_t ram_bytes(const tt_plan *p) { return p->host_bytes + (dev_is_host() ? p->dev_bytes : 0); }
uint64_t plan_ram_bytes(const tt_plan *p) { return ram_bytes(p); }

static int plan_host_avail(const tier_store *s, const tt_plan_req *req, tt_plan *out);

int plan_make(const tier_store *s, const tt_plan_req *req, tt_plan *out) {
    int rc = plan_host_avail(s, req, out);
    uint64_t total = 0;
    if (rc || !req->dev_avail || plan_dev_fits(out->dev_bytes, req->dev_avail, &total)) return rc;
    if (req->hbm && req->what_if) { /* plan's --hbm, as given: it may be for later, or another GPU */
        out->over_dev_avail = req->dev_avail;
        return 0;
    }
    /* Past what the GPU can give now (another process's memory, or a GPU smaller than the model), that is the
     * device budget: an --hbm is a cap, and one larger than the GPU plans as the GPU does. */
    tt_plan_req r = *req;
    r.hbm = req->dev_avail;
    rc = plan_host_avail(s, &r, out);
    if (rc == 0) {
        out->hbm_from_avail = 1;
        return 0;
    }
    uint64_t dev_min, host_min;
    plan_minimum(s, &r, &dev_min, &host_min);
    if (rc != -ENOSPC || plan_dev_fits(dev_min, req->dev_avail, &total)) return rc; /* not the device's: as said */
    char need[32], have[32];
    return TT_FAIL(-ENOMEM, "the GPU can give this process %s now (its free memory, as an --hbm: with what CUDA holds "
                   "outside the arena), but even the smallest plan needs --hbm %s: free GPU memory (nvidia-smi lists "
                   "the processes that hold it) or lower %s",
                   tt_fmt_bytes(req->dev_avail, have, sizeof have),
                   tt_fmt_bytes_up(tt_align_up(total, 1 << 20), need, sizeof need),
                   req->forward_only ? gen_flags(req) : "--seq / --micro-batch");
}

/* plan_budgets, then within the memory the machine has available (req.host_avail). */
static int plan_host_avail(const tier_store *s, const tt_plan_req *req, tt_plan *out) {
    int rc = plan_budgets(s, req, out);
    if (rc || !req->host_avail || ram_bytes(out) <= req->host_avail) return rc;
    char need[32], have[32];
    if (req->host && req->what_if) { /* plan's budgets, as given: it may be for later, or another machine */
        out->over_avail = req->host_avail;
        return 0;
    }
    /* Past what the machine has available (the host arena is populated at
     * start: more would page, or end the process by the OOM killer), that is
     * the budget: the host arena gets what the device arena leaves, within a
     * --host given (a cap: one larger than the machine's memory plans as that
     * memory does); on the CPU backend, whose device arena is host memory too,
     * an unlimited --hbm — or one larger than the machine can hold beside the
     * smallest plan's host arena: --hbm is a cap, and a larger cap must not
     * refuse what a smaller one plans — becomes what that host arena leaves
     * (more activations on the "device" spill fewer). */
    const int cpu = dev_is_host();
    uint64_t dev_min, host_min;
    plan_minimum(s, req, &dev_min, &host_min);
    tt_plan_req r = *req;
    if (cpu && host_min < req->host_avail && (!req->hbm || req->hbm > req->host_avail - host_min))
        r.hbm = req->host_avail - host_min;
    uint64_t dev = cpu ? (r.hbm ? r.hbm : out->dev_bytes) : 0;
    if (dev < req->host_avail) {
        r.host = req->host_avail - dev;
        if (req->host && req->host < r.host) r.host = req->host;
        if (plan_budgets(s, &r, out) == 0 && ram_bytes(out) <= req->host_avail) {
            out->host_from_avail = 1;
            out->req.hbm = req->hbm; /* the user's budgets, as given */
            out->req.host = r.host;
            return 0;
        }
    }
    const char *shrink = req->forward_only ? gen_flags(req) : "--seq / --micro-batch / --batch-tokens";
    if (cpu)
        return TT_FAIL(-ENOMEM, "even the smallest plan needs %s of host memory (its host arena and the CPU backend's "
                       "device arena, which is host memory too) but the machine has %s available now (MemAvailable): "
                       "free memory, or lower %s (planning for a GPU? add --device cuda)",
                       tt_fmt_bytes_up(tt_align_up(host_min + dev_min, 1 << 20), need, sizeof need),
                       tt_fmt_bytes(req->host_avail, have, sizeof have), shrink);
    return TT_FAIL(-ENOMEM, "no plan within --hbm %s fits the %s of host memory the machine has available now "
                   "(MemAvailable): free memory, raise --hbm (%s), or lower %s",
                   req->hbm ? tt_fmt_bytes(req->hbm, need, sizeof need) : "unlimited",
                   tt_fmt_bytes(req->host_avail, have, sizeof have),
                   req->forward_only ? "more KV caches on the device" : "fewer activations spill", shrink);
}

void plan_print(const tier_store *s, const tt_plan *p, FILE *f) {
    const tt_config *c = tier_config(s);
    char a[32], b[32];
    if (p->req.forward_only)
        fprintf(f, "generation plan for %s (%s): %u layers, batches of %d prompts, prompt chunks of %d tokens\n",
                tier_path(s), c->name, c->n_layers, p->req.B, p->req.seq);
    else
        fprintf(f, "plan for %s (%s): %u layers, micro-batch %d x %d tokens, %d micro-batches per step\n", tier_path(s),
                c->name, c->n_layers, p->req.B, p->req.seq, p->req.K);
    fprintf(f, "  budgets: --hbm %s%s, --host %s%s\n", p->req.hbm ? tt_fmt_bytes(p->req.hbm, a, sizeof a) : "unlimited",
            p->hbm_from_avail ? " (the most the GPU can give now)" : "",
            p->req.host ? tt_fmt_bytes(p->req.host, b, sizeof b) : "unlimited",
            p->host_from_avail ? " (no --host given: the memory available now)" : "");
    if (p->over_dev_avail) {
        uint64_t total;
        plan_dev_fits(p->dev_bytes, 0, &total);
        fprintf(f, "  note: it takes --hbm %s, more than the %s the GPU can give now: a run here plans within that\n",
                tt_fmt_bytes_up(tt_align_up(total, 1 << 20), a, sizeof a), tt_fmt_bytes(p->over_dev_avail, b, sizeof b));
    }
    if (p->over_avail)
        fprintf(f, "  note: it takes %s of host memory%s, more than the %s this machine has available now "
                "(MemAvailable): a run here plans within that\n",
                tt_fmt_bytes_up(tt_align_up(ram_bytes(p), 1 << 20), a, sizeof a),
                dev_is_host() ? " (with the CPU backend's device arena)" : "", tt_fmt_bytes(p->over_avail, b, sizeof b));
    if (p->req.forward_only)
        fprintf(f, "  layer slots %d of %d (prefetch %d ahead)%s; lm_head %s; host layer cache: %s\n", p->slots, p->L,
                p->prefetch, p->slots >= p->L ? ", all resident" : "",
                p->head_on_device ? "on the device" : "streamed from the host in vocab chunks",
                p->host_cache ? "yes (NVMe read once)" : "no");
    else
        fprintf(f, "  layer slots %d of %d (prefetch %d ahead)%s; lm_head %s; activations (%s) on device %d of %d, spilled "
                   "%d; host layer cache: %s\n",
                p->slots, p->L, p->prefetch, p->slots >= p->L ? ", all resident" : "",
                p->head_on_device ? "on the device" : "streamed from the host in vocab chunks", p->req.act_bf16 ? "bf16" : "f32",
                p->dev_cells, p->dev_cells + p->host_cells, p->host_cells, p->host_cache ? "yes (NVMe read once)" : "no");
    if (p->user_opt) {
        char mb[48] = "";
        if (p->req.K > 1) snprintf(mb, sizeof mb, ", for all %d micro-batches", p->req.K);
        fprintf(f, "  frozen weights: each layer's decoded once a pass over it%s, on the device\n", mb);
    }
    if (p->req.forward_only)
        fprintf(f, "  forward passes only (generation): KV caches on the device for %d of %d layers, the rest in "
                   "the pinned host arena\n", p->user_dev, p->req.user_units);
    tt_arena *d = arena_measure("device"), *h = arena_measure("host");
    stream_measure(s, p, d, h);
    const char *be = be_current()->name;
    if (strcmp(be, "cpu") == 0)
        fprintf(f, "\nmemory table, device (GPU tier; the CPU backend stands in):\n");
    else if (strcmp(be, "cuda-estimate") == 0)
        fprintf(f, "\nmemory table, device (cuda; no usable GPU here, so what CUDA holds outside the arena is an "
                   "estimate):\n");
    else
        fprintf(f, "\nmemory table, device (%s):\n", be);
    arena_print_table(d, f);
    size_t out = be_reserved_bytes();
    if (out) {
        fprintf(f, "outside the arena: %s (runtime context and library workspaces)\n", tt_fmt_bytes(out, a, sizeof a));
        uint64_t total;
        plan_dev_fits(arena_peak(d), 0, &total);
        fprintf(f, "device total: %s", tt_fmt_bytes(total, a, sizeof a));
        if (p->req.hbm) fprintf(f, " of --hbm %s", tt_fmt_bytes(p->req.hbm, b, sizeof b));
        fputc('\n', f);
    }
    fprintf(f, "\nmemory table, pinned host:\n");
    arena_print_table(h, f);
    arena_free(d);
    arena_free(h);
    fprintf(f, "\nNVMe reads: %s in the first step, %s per step after\n", tt_fmt_bytes(p->io_bytes_first, a, sizeof a),
            tt_fmt_bytes(p->io_bytes_step, b, sizeof b));
    if (p->pred_step_s > 0)
        fprintf(f, "predicted step: %.3f s (IO %.3f s at %.2f GB/s, compute %.3f s at %.1f GFLOP/s, overlapped)\n",
                p->pred_step_s, p->pred_io_s, p->req.io_gbps, p->pred_compute_s, p->req.gflops);
    else
        fprintf(f, "predicted step: give --io-gbps and --gflops (from `tiertrain bench io` / `bench overlap`) for a "
                   "time; %.1f GFLOP per step\n", p->flops_step / 1e9);
}

void plan_print_json(const tier_store *s, const tt_plan *p, FILE *f) {
    (void)s;
    fprintf(f,
            "{\"hbm\":%llu,\"host\":%llu,\"micro_batch\":%d,\"seq\":%d,\"micro_batches\":%d,\"layers\":%d,"
            "\"slots\":%d,\"prefetch\":%d,\"head_on_device\":%s,\"host_cache\":%s,\"dev_cells\":%d,"
            "\"host_cells\":%d,\"user_dev\":%d,\"user_units\":%d,\"decoded_layer\":%s,\"dev_bytes\":%llu,\"host_bytes\":%llu,\"io_bytes_first\":%llu,"
            "\"io_bytes_step\":%llu,\"gflop_step\":%.3f,\"pred_step_s\":%.6f,\"outside_bytes\":%llu,"
            "\"exceeds_available\":%s,\"exceeds_gpu_available\":%s}",
            (unsigned long long)p->req.hbm, (unsigned long long)p->req.host, p->req.B, p->req.seq, p->req.K, p->L,
            p->slots, p->prefetch, p->head_on_device ? "true" : "false", p->host_cache ? "true" : "false",
            p->dev_cells, p->host_cells, p->user_dev, p->req.user_units, p->user_opt ? "true" : "false",
            (unsigned long long)p->dev_bytes, (unsigned long long)p->host_bytes,
            (unsigned long long)p->io_bytes_first, (unsigned long long)p->io_bytes_step, p->flops_step / 1e9,
            p->pred_step_s, (unsigned long long)be_reserved_bytes(), p->over_avail ? "true" : "false",
            p->over_dev_avail ? "true" : "false");
}
