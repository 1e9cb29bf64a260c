#!/usr/bin/env python3
"""PyTorch + Hugging Face transformers baseline for bft's GPU benchmark.

BertForSequenceClassification of the given shape (random init, 2 labels) on
random token sequences of exactly --seq tokens (as `bft-cli bench`), on CUDA:
  training: bf16 autocast (fp32 master weights), torch.optim.AdamW (lr 5e-5,
            PyTorch's default implementation for CUDA tensors), gradient clipping
            at 1.0 as the HF Trainer does, dropout as the config (0.1);
  inference: eval mode, torch.inference_mode, bf16 autocast, softmax
            probabilities copied to the host per batch (as bft_predict returns them).
Prints the same keys as bft-cli bench: train_samples_per_s, infer_samples_per_s,
train_step_ms, infer_batch_ms, peak_gpu_mb, plus the attention implementation.
Usage: python3 tests/gpu/bench_torch.py --batch 32 --seq 64 --steps 50 [--dtype bf16|fp32]
"""
import argparse
import time

import torch
from transformers import BertConfig, BertForSequenceClassification


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--intermediate", type=int, default=3072)
    ap.add_argument("--vocab", type=int, default=28996)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    dev = torch.device("cuda")
    cfg = BertConfig(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                     num_attention_heads=a.heads, intermediate_size=a.intermediate,
                     max_position_embeddings=max(512, a.seq), num_labels=2)
    model = BertForSequenceClassification(cfg).to(dev)
    attn = getattr(model.config, "_attn_implementation", "?")
    n = a.batch * (a.steps + a.warmup)
    ids = torch.randint(5, a.vocab, (n, a.seq), device=dev)
    ids[:, 0] = 2
    ids[:, -1] = 3
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (n,), device=dev)
    amp = a.dtype == "bf16"
    print(f"torch {torch.__version__}, transformers model {type(model).__name__}, attention {attn}, "
          f"dtype {a.dtype}, device {torch.cuda.get_device_name()}")
    print(f"params: {sum(p.numel() for p in model.parameters())}")

    # ---- training
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()

    def step(i):
        sl = slice(i * a.batch, (i + 1) * a.batch)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(input_ids=ids[sl], attention_mask=mask[sl], labels=labels[sl])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    for i in range(a.warmup):
        step(i)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(a.warmup, a.warmup + a.steps):
        loss = step(i)
    loss.item()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tr = a.batch * a.steps / dt
    print(f"train_samples_per_s: {tr:.3f}")
    print(f"train_step_ms: {1000 * dt / a.steps:.2f}")

    # ---- inference
    model.eval()
    with torch.inference_mode():
        def infer(i):
            sl = slice(i * a.batch, (i + 1) * a.batch)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                logits = model(input_ids=ids[sl], attention_mask=mask[sl]).logits
            return logits.float().softmax(-1).cpu()

        for i in range(a.warmup):
            infer(i)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(a.warmup, a.warmup + a.steps):
            infer(i)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    print(f"infer_samples_per_s: {a.batch * a.steps / dt:.3f}")
    print(f"infer_batch_ms: {1000 * dt / a.steps:.2f}")
    print(f"peak_gpu_mb: {torch.cuda.max_memory_allocated() / 2**20:.1f}")


if __name__ == "__main__":
    main()
