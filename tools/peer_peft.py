#!/usr/bin/env python3
"""tools/peer_peft.py — the peer tiertrain is measured against (issue: "faster
than PyTorch + PEFT"): transformers' LlamaForCausalLM + PEFT LoRA at a
reference shape with random weights, bf16, gradient checkpointing, SDPA
attention, AdamW on the adapters. Prints tokens/s and peak GPU memory per
sequence length, and one JSON line per configuration.

--quant nf4 is QLoRA: the seven projections of every layer become
bitsandbytes Linear4bit (NF4, double quantization, bf16 compute), the
embedding, norms and lm_head stay bf16, and PEFT puts its LoRA on the 4-bit
layers. bitsandbytes is not on the GPU machine: tools/peer_libs.sh unpacks it
into build/pylib (PYTHONPATH), where pip reaches the package index.

Needs a CUDA GPU with torch, transformers and peft (the GPU machine has them);
never part of `make test`. Example (what tools/gpu_check.sh runs):

    python3 tools/peer_peft.py --preset llama3.1-8b --seq 2048,4096 \\
        --batch-tokens 32768 --micro-tokens 8192 --rank 16 --alpha 32 --steps 3
"""
import argparse
import json
import sys
import time

PRESETS = {  # hidden, ffn, layers, heads, kv heads, vocab, rope theta
    "llama2-7b": (4096, 11008, 32, 32, 32, 32000, 10000.0),
    "llama3.1-8b": (4096, 14336, 32, 32, 8, 128256, 500000.0),
    "small": (384, 1024, 16, 6, 2, 32000, 10000.0),
}
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="llama3.1-8b", choices=sorted(PRESETS), help="model shape (default llama3.1-8b)")
    ap.add_argument("--layers", type=int, default=0, help="override the layer count (0: the preset's)")
    ap.add_argument("--seq", default="2048", help="comma-separated sequence lengths (default 2048)")
    ap.add_argument("--batch-tokens", type=int, default=32768, help="tokens per optimizer step (default 32768)")
    ap.add_argument("--micro-tokens", type=int, default=8192, help="tokens per micro-batch (default 8192)")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    ap.add_argument("--alpha", type=float, default=32, help="LoRA alpha (default 32)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps after one warm-up (default 3)")
    ap.add_argument("--no-checkpointing", action="store_true", help="turn gradient checkpointing off")
    ap.add_argument("--device", default="cuda", help="torch device (default cuda; cpu only to try the script)")
    ap.add_argument("--quant", default="none", choices=["none", "nf4"],
                    help="the projections' weights: bf16 (none) or bitsandbytes NF4 with double quantization (QLoRA) "
                         "(default none)")
    a = ap.parse_args()

    import torch
    import transformers
    import peft
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = a.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        sys.exit("peer_peft: no CUDA device (--device cpu only tries the script)")
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    h, ffn, L, nh, nkv, vocab, theta = PRESETS[a.preset]
    if a.layers:
        L = a.layers
    seqs = [int(s) for s in a.seq.split(",")]
    cfg = LlamaConfig(hidden_size=h, intermediate_size=ffn, num_hidden_layers=L, num_attention_heads=nh,
                      num_key_value_heads=nkv, vocab_size=vocab, rope_theta=theta,
                      max_position_embeddings=max(seqs), tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    t0 = time.time()
    torch.set_default_dtype(torch.bfloat16)
    with dev:
        try:
            model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
        except TypeError:
            cfg._attn_implementation = "sdpa"
            model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    model = model.to(dtype=torch.bfloat16)
    n_params = sum(p.numel() for p in model.parameters())
    quant = ""
    if a.quant == "nf4":
        quant = to_nf4(model, dev)
    if not a.no_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lcfg = peft.LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                           task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    n_lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    print(f"peer: {a.preset} ({n_params / 1e9:.2f}B parameters, {L} layers), LoRA r{a.rank} on all seven "
          f"projections ({n_lora / 1e6:.1f}M), bf16{quant}, attention {model.config._attn_implementation}, checkpointing "
          f"{'off' if a.no_checkpointing else 'on'}; torch {torch.__version__}, transformers "
          f"{transformers.__version__}, peft {peft.__version__}; {torch.cuda.get_device_name() if cuda else 'cpu'}; "
          f"built in {time.time() - t0:.1f} s", flush=True)
    model.train()
    for seq in seqs:
        mb = max(1, a.micro_tokens // seq)
        accum = max(1, a.batch_tokens // (mb * seq))
        tokens = accum * mb * seq
        g = torch.Generator(device=dev).manual_seed(seq)
        ids = torch.randint(0, vocab, (accum, mb, seq), device=dev, generator=g)

        def step():
            for i in range(accum):
                out = model(input_ids=ids[i], labels=ids[i])
                (out.loss / accum).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return out.loss

        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        loss = step()  # warm-up
        sync()
        t = time.time()
        for _ in range(a.steps):
            loss = step()
        sync()
        dt = (time.time() - t) / a.steps
        peak = torch.cuda.max_memory_allocated() if cuda else 0
        reserved = torch.cuda.max_memory_reserved() if cuda else 0
        # 6 x parameters per token, plus causal attention: forward QK^T and PV are 2 * 2 * seq * hd FLOPs per
        # token and head, halved by the causal mask; backward twice the forward => 6 * seq * hd * nh * L
        hd = h // nh
        # the embedding is a lookup, not a product: 6 x the other parameters (lm_head included)
        flops_tok = 6 * (n_params - vocab * h) + 6 * seq * hd * nh * L
        res = {"peer": "transformers+peft" + ("+bitsandbytes" if a.quant == "nf4" else ""), "quant": a.quant,
               "preset": a.preset, "seq": seq, "micro_batch": mb, "accum": accum,
               "tokens_per_step": tokens, "step_s": round(dt, 4), "tokens_per_s": round(tokens / dt, 1),
               "tflops": round(flops_tok * tokens / dt / 1e12, 1), "peak_alloc_gib": round(peak / 2**30, 2),
               "peak_reserved_gib": round(reserved / 2**30, 2), "loss": round(float(loss.detach()), 4),
               "checkpointing": not a.no_checkpointing, "rank": a.rank}
        print(f"peer{' qlora' if a.quant == 'nf4' else ''} seq {seq}: {mb} x {seq} x {accum} = {tokens} tokens/step, {dt:.3f} s/step, "
              f"{tokens / dt:.0f} tokens/s, {res['tflops']} TFLOP/s (6 x non-embedding parameters + attention), peak allocated "
              f"{res['peak_alloc_gib']} GiB (reserved {res['peak_reserved_gib']} GiB), loss {float(loss.detach()):.4f}",
              flush=True)
        print(json.dumps(res), flush=True)


def to_nf4(model, dev):
    """Replaces every decoder layer's seven projections by bitsandbytes
    Linear4bit holding the same weights in NF4 (blocks of 64, double
    quantization, bf16 compute), one layer at a time; returns a phrase for the
    banner."""
    import torch
    import bitsandbytes as bnb

    for layer in model.model.layers:
        for parent, names in ((layer.self_attn, TARGETS[:4]), (layer.mlp, TARGETS[4:])):
            for n in names:
                lin = getattr(parent, n)
                q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                                      compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                      device="meta")
                q.weight = bnb.nn.Params4bit(lin.weight.data, requires_grad=False, quant_type="nf4",
                                             compress_statistics=True, blocksize=64)
                if lin.bias is not None:
                    q.bias = torch.nn.Parameter(lin.bias.data, requires_grad=False)
                q = q.to(dev)  # Params4bit quantizes when it is moved to a device
                setattr(parent, n, q)
                del lin
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    model.is_loaded_in_4bit = True  # as from_pretrained(quantization_config=...) marks it: PEFT takes its bnb LoRA layers
    return f" with the projections in NF4 (bitsandbytes {bnb.__version__}, double quantization)"


if __name__ == "__main__":
    main()
