#!/usr/bin/python3
"""PyTorch eager baseline for tests/bench/bench_engine.sh (Debian's torch 1.13).

    /usr/bin/python3 tests/bench/bench_torch.py LAYERS HIDDEN HEADS INTERMEDIATE VOCAB BATCH SEQ STEPS THREADS [bf16]

With a tenth argument bf16, forward passes (training and inference) run under
torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's CPU mixed precision
(the rates are then printed as torch_bf16_*).

A BertForSequenceClassification built from torch.nn exactly like Hugging Face's
modeling_bert.py (separate query/key/value Linear layers, post-LN, erf GELU,
dropout 0.1 in training, pooler + classifier), random weights and tokens of
exactly SEQ tokens, trained the way HF Trainer does it (torch.optim.AdamW with
the decay / no-decay groups, linear schedule, clip_grad_norm_ 1.0), then eval
inference under torch.no_grad(). The first training step and the first
inference batch are warm-up and not timed. Prints
    torch_train_samples_per_s: X
    torch_infer_samples_per_s: Y
    torch_peak_rss_mb: Z
and the CPU-time rates (samples per CPU-second of the process x THREADS:
robust on a loaded machine when THREADS is 1)
    torch_train_samples_per_cpu_s_x_threads, torch_infer_samples_per_cpu_s_x_threads
"""
import contextlib
import math
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Layer(nn.Module):
    def __init__(self, C, NH, I, p):
        super().__init__()
        self.NH, self.hs = NH, C // NH
        self.query, self.key, self.value = nn.Linear(C, C), nn.Linear(C, C), nn.Linear(C, C)
        self.attn_drop = nn.Dropout(p)
        self.attn_out = nn.Linear(C, C)
        self.ln1 = nn.LayerNorm(C, eps=1e-12)
        self.inter = nn.Linear(C, I)
        self.out = nn.Linear(I, C)
        self.ln2 = nn.LayerNorm(C, eps=1e-12)
        self.drop = nn.Dropout(p)

    def heads(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.NH, self.hs).permute(0, 2, 1, 3)

    def forward(self, x, ext):
        B, T, C = x.shape
        q, k, v = self.heads(self.query(x)), self.heads(self.key(x)), self.heads(self.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hs) + ext
        p = self.attn_drop(F.softmax(s, dim=-1))
        ctx = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous().view(B, T, C)
        x1 = self.ln1(self.drop(self.attn_out(ctx)) + x)
        h = F.gelu(self.inter(x1))
        return self.ln2(self.drop(self.out(h)) + x1)


class Bert(nn.Module):
    def __init__(self, L, C, NH, I, V, K, P=512, p=0.1):
        super().__init__()
        self.wte = nn.Embedding(V, C, padding_idx=0)
        self.wpe = nn.Embedding(P, C)
        self.wtt = nn.Embedding(2, C)
        self.ln = nn.LayerNorm(C, eps=1e-12)
        self.drop = nn.Dropout(p)
        self.layers = nn.ModuleList([Layer(C, NH, I, p) for _ in range(L)])
        self.pool = nn.Linear(C, C)
        self.cls = nn.Linear(C, K)
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                mod.weight.data.normal_(0.0, 0.02)
            if isinstance(mod, nn.Linear):
                mod.bias.data.zero_()

    def forward(self, ids, mask):
        B, T = ids.shape
        pos = torch.arange(T).unsqueeze(0)
        x = self.wte(ids) + self.wtt(torch.zeros_like(ids)) + self.wpe(pos)
        x = self.drop(self.ln(x))
        ext = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in self.layers:
            x = layer(x, ext)
        pooled = torch.tanh(self.pool(x[:, 0]))
        return self.cls(self.drop(pooled))


def main():
    L, C, NH, I, V, B, T, steps, threads = map(int, sys.argv[1:10])
    bf16 = len(sys.argv) > 10 and sys.argv[10] == "bf16"
    tag = "torch_bf16" if bf16 else "torch"
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Bert(L, C, NH, I, V, 2)
    ids = torch.randint(5, V, (steps + 1, B, T))
    ids[:, :, 0], ids[:, :, -1] = 2, 3
    mask = torch.ones(B, T, dtype=torch.int64)
    labels = torch.randint(0, 2, (steps + 1, B))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or ".ln" in n or n.startswith("ln"))]
    nodecay = [p for n, p in model.named_parameters() if n.endswith("bias") or ".ln" in n or n.startswith("ln")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.0}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, (steps + 1 - s) / (steps + 1)))
    model.train()
    t0 = c0 = None
    for s in range(steps + 1):
        if s == 1:
            t0, c0 = time.perf_counter(), time.process_time()
        with amp():
            loss = F.cross_entropy(model(ids[s], mask), labels[s])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
    train_rate = B * steps / (time.perf_counter() - t0)
    train_cpu = B * steps / (time.process_time() - c0) * threads
    print("%s_train_samples_per_s: %.3f" % (tag, train_rate))
    print("%s_train_samples_per_cpu_s_x_threads: %.3f" % (tag, train_cpu), flush=True)
    model.eval()
    with torch.no_grad():
        for s in range(steps + 1):
            if s == 1:
                t0, c0 = time.perf_counter(), time.process_time()
            with amp():
                F.softmax(model(ids[s], mask).float(), dim=-1)
    infer_rate = B * steps / (time.perf_counter() - t0)
    infer_cpu = B * steps / (time.process_time() - c0) * threads
    print("%s_infer_samples_per_s: %.3f" % (tag, infer_rate))
    print("%s_infer_samples_per_cpu_s_x_threads: %.3f" % (tag, infer_cpu))
    print("%s_peak_rss_mb: %.1f" % (tag, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
    print("%s_version: %s" % (tag, torch.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
