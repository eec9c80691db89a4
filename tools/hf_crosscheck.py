#!/usr/bin/env python3
"""tools/hf_crosscheck.py — tiertrain against Hugging Face transformers + PEFT
on one model with awkward shapes: hidden 320 (not a power of two), GQA 5:1
(10 query heads, 2 KV heads), llama3 rope scaling, untied lm_head, f32.

  1. transformers' save_pretrained writes the model; `tiertrain import --dtype
     f32` reads it; `tiertrain eval` and transformers agree on the mean loss
     over the same windows (seq + 1 tokens, stride seq) within --tol;
  2. an adapter trained by `tiertrain train` loads with
     PeftModel.from_pretrained and gives `tiertrain eval --adapter`'s loss;
  3. the same for an adapter trained on a LoRAM-pruned copy and brought back
     by `tiertrain recover` (on the original model);
  4. `tiertrain merge` + `tiertrain export --dtype f32` of the merged store
     loads in transformers with the loss of model + adapter.
Every adapter must move the loss by more than 100 x --tol, so a check that
ignored the adapter would fail.

Needs torch, transformers, peft and safetensors (the GPU machine has them;
runs on the CPU too, in about a minute); never part of `make test`:

    python3 tools/hf_crosscheck.py --tiertrain ./tiertrain [--device cpu|cuda] [--work DIR]
(--torch-device cpu with --device cuda: tiertrain on the GPU, transformers on the
CPU, as tools/gpu_rehearse.sh runs it against the emulated GPU.)
Exit status: 0 when every check passes, 1 otherwise, 77 when a Python package is missing.
"""
import argparse
import atexit
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

SEQ = 64


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiertrain", default="./tiertrain", help="the tiertrain binary (default ./tiertrain)")
    ap.add_argument("--device", default="cpu", help="tiertrain's and torch's device: cpu or cuda (default cpu)")
    ap.add_argument("--torch-device", default="", help="torch's device, where it differs from --device (default: --device)")
    ap.add_argument("--work", default="", help="working directory (default: a temporary one, removed)")
    ap.add_argument("--text", default="tools/demo-data/un-slice.txt", help="text to tokenize (bytes)")
    ap.add_argument("--steps", type=int, default=30, help="training steps of each adapter (default 30)")
    ap.add_argument("--tol", type=float, default=1e-4, help="largest |loss difference| in nats (default 1e-4)")
    a = ap.parse_args()

    try:
        import torch
        import transformers
        import peft
        import safetensors  # noqa: F401 (transformers' save_pretrained writes with it)
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as e:
        print(f"hf_crosscheck: needs torch, transformers, peft and safetensors; {e.name or e} is missing "
              f"(pip install torch transformers peft)")
        return 77

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    work = a.work or tempfile.mkdtemp(prefix="hf-crosscheck-")
    os.makedirs(work, exist_ok=True)
    if not a.work:  # removed however the script ends (a failed tiertrain command exits through SystemExit)
        atexit.register(shutil.rmtree, work, True)
    T = os.path.abspath(a.tiertrain)
    dev = torch.device(a.torch_device or a.device)
    failures = []
    results = {"transformers": transformers.__version__, "peft": peft.__version__, "torch": torch.__version__,
               "device": a.device}
    if a.torch_device and a.torch_device != a.device:
        results["torch_device"] = a.torch_device

    def tt(*args):
        cmd = [T] + [str(x) for x in args]
        print("$ " + " ".join(cmd), flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.stderr.write(r.stdout + r.stderr)
            raise SystemExit(f"hf_crosscheck: {' '.join(cmd[:2])} failed (exit {r.returncode})")
        return r.stdout

    def tt_eval(model, adapter=None):
        args = ["eval", "--model", model, "--data", tok_path, "--seq", SEQ, "--micro-batch", 4, "--batch-tokens",
                4 * SEQ, "--device", a.device, "--act-dtype", "f32", "--json"]
        if adapter:
            args += ["--adapter", adapter]
        return json.loads(tt(*args).strip().splitlines()[-1])["loss"]

    def check(name, got, want, moved_from=None):
        d = abs(got - want)
        ok = d <= a.tol
        line = f"{name}: tiertrain {want:.6f}, transformers {got:.6f}, |diff| {d:.2e} (tolerance {a.tol:g})"
        if moved_from is not None:
            moved = abs(want - moved_from)
            line += f"; the adapter moves the loss by {moved:.4f}"
            ok = ok and moved > 100 * a.tol
        print(("PASS " if ok else "FAIL ") + line, flush=True)
        results[name] = {"tiertrain": want, "transformers": got, "diff": d}
        if not ok:
            failures.append(name)

    # ---- the model, written by transformers -----------------------------------
    cfg = LlamaConfig(hidden_size=320, intermediate_size=864, num_hidden_layers=4, num_attention_heads=10,
                      num_key_value_heads=2, vocab_size=300, max_position_embeddings=131072, rms_norm_eps=1e-5,
                      rope_theta=500000.0, tie_word_embeddings=False, initializer_range=0.08,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                      attention_bias=False, mlp_bias=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float()
    hf_dir = os.path.join(work, "hf")
    model.save_pretrained(hf_dir, safe_serialization=True)
    with open(os.path.join(hf_dir, "config.json")) as f:
        print("config.json rope fields: " + json.dumps({k: v for k, v in json.load(f).items() if "rope" in k}))
    model = model.to(dev).eval()

    # ---- tokens: bytes of real text, read back from the .tok file -------------
    txt = os.path.join(work, "text.txt")
    with open(a.text, "rb") as f, open(txt, "wb") as g:
        g.write(f.read(40000))
    tok_path = os.path.join(work, "d.tok")
    tt("tokenize", "--input", txt, "--val-frac", 0, "-o", tok_path)
    with open(tok_path, "rb") as f:
        hdr = f.read(32)
        assert hdr[:8] == b"TTTOKENS", "not a token file"
        (count,) = struct.unpack_from("<Q", hdr, 16)
        toks = list(struct.unpack(f"<{count}I", f.read(4 * count)))
    windows = min((count - 1) // SEQ, 64)
    ids = torch.tensor([toks[w * SEQ: w * SEQ + SEQ + 1] for w in range(windows)], dtype=torch.long, device=dev)
    # tiertrain eval --max-tokens rounds to whole windows: give it exactly these
    tok_cut = os.path.join(work, "cut.tok")
    n = windows * SEQ + 1
    with open(tok_cut, "wb") as g:
        g.write(hdr[:16] + struct.pack("<Q", n) + hdr[24:32] + struct.pack(f"<{n}I", *toks[:n]))
    tok_path = tok_cut

    @torch.no_grad()
    def hf_loss(m):
        tot = 0.0
        for i in range(0, windows, 16):
            x = ids[i:i + 16]
            logits = m(input_ids=x[:, :-1]).logits.double()
            tot += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1),
                                                     reduction="sum").item()
        return tot / (windows * SEQ)

    # ---- 1. import + eval ---------------------------------------------------------
    m_tier = os.path.join(work, "m.tier")
    tt("import", hf_dir, "--dtype", "f32", "-o", m_tier)
    base_tt = tt_eval(m_tier)
    base_hf = hf_loss(model)
    check("base model", base_hf, base_tt)

    train = ["--data", tok_path, "--seq", SEQ, "--micro-batch", 4, "--batch-tokens", 4 * SEQ, "--rank", 8, "--alpha",
             16, "--lr", 2e-2, "--min-lr", 2e-2, "--warmup", 0, "--steps", a.steps, "--eval-every", 0, "--device", a.device,
             "--act-dtype", "f32"]

    # ---- 2. a tiertrain adapter in PEFT ---------------------------------------------
    run = os.path.join(work, "run")
    tt("train", "--model", m_tier, "--out", run, *train)
    lora_tt = tt_eval(m_tier, run)
    pm = peft.PeftModel.from_pretrained(model, run).to(dev).eval()
    check("adapter from tiertrain train", hf_loss(pm), lora_tt, base_tt)
    model = pm.unload()  # the bare model back, without the adapter's modules

    # ---- 3. a recovered (LoRAM) adapter in PEFT ---------------------------------------
    p_tier = os.path.join(work, "p.tier")
    tt("prune", m_tier, "--method", "stru", "--ratio", 0.5, "-o", p_tier)
    runp = os.path.join(work, "run-pruned")
    tt("train", "--model", p_tier, "--out", runp, *train)
    rec = os.path.join(work, "recovered")
    tt("recover", "--adapter", runp, "--pruned", p_tier, "-o", rec)
    rec_tt = tt_eval(m_tier, rec)
    pm = peft.PeftModel.from_pretrained(model, rec).to(dev).eval()
    check("adapter from tiertrain recover", hf_loss(pm), rec_tt, base_tt)
    model = pm.unload()

    # ---- 4. merged + exported, loaded by transformers -----------------------------------
    merged = os.path.join(work, "merged.tier")
    tt("merge", "--model", m_tier, "--adapter", run, "-o", merged)
    mdir = os.path.join(work, "merged-hf")
    tt("export", merged, "--dtype", "f32", "-o", mdir)
    mm = LlamaForCausalLM.from_pretrained(mdir, dtype=torch.float32).to(dev).eval()
    check("merged + exported", hf_loss(mm), lora_tt, base_tt)

    results["failed"] = failures
    print(json.dumps(results))
    print(f"hf_crosscheck: {4 - len(failures)} of 4 checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
