#!/usr/bin/env python3
"""Hugging Face round trip of bft's model directories with the real
`transformers` package (with torch; bft itself needs neither). CPU only, a
few seconds; run by tests/gpu/run_gpu_checks.sh.

  out: a directory written by `bft-cli train` (fine-tuned from
       tests/data/ckpt/tiny) loads with BertForSequenceClassification /
       AutoTokenizer.from_pretrained; HF's token ids equal `bft-cli tokenize`'s
       and its probabilities equal `bft-cli classify`'s within 1e-5;
  in:  a random BertForSequenceClassification and a BertForMaskedLM written by
       save_pretrained (safetensors) are read by bft-cli: classify within 1e-5
       of HF, fill-mask's top 5 tokens equal HF's.

Usage: python3 tests/gpu/hf_roundtrip.py BFT_CLI WORKDIR
Prints one "ok - ..." / "FAIL - ..." line per check and exits 1 on a failure.
"""
import json
import os
import subprocess
import sys

import torch
from transformers import (AutoTokenizer, BertConfig, BertForMaskedLM,
                          BertForSequenceClassification, BertTokenizer)

CLI, WORK = sys.argv[1], sys.argv[2]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "tests/data/ckpt/tiny")
TEXTS = ["the stock market is up today", "Bank of Canada cuts rates, again!",
         "café owners report weak sales", "unknown tokens and ünïcödé", "a"]
passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("ok - " if ok else "FAIL - ") + what, flush=True)
    passed += 1 if ok else 0
    failed += 0 if ok else 1


def run(args, stdin=None):
    r = subprocess.run([CLI] + args, input=stdin, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bft-cli {' '.join(args)}: rc {r.returncode}: {r.stderr[:400]}")
    return r.stdout


def bft_probs(model_dir):
    out = run(["classify", "--model", model_dir], "\n".join(TEXTS) + "\n")
    return torch.tensor([json.loads(line)["probs"] for line in out.splitlines()])


def hf_probs(model, tok):
    model.eval()
    with torch.no_grad():
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        return torch.softmax(model(**enc).logits.float(), dim=-1)


os.makedirs(WORK, exist_ok=True)

# ---- out: bft-cli writes, transformers reads
csv = os.path.join(WORK, "train.csv")
with open(csv, "w") as f:
    f.write("text,label\n")
    for i in range(24):
        f.write(f"\"headline number {i} about {'profits' if i % 2 else 'losses'}\","
                f"{'positive' if i % 2 else 'negative'}\n")
out_dir = os.path.join(WORK, "bft_out")
run(["train", "--model", TINY, "--csv", csv, "--text-col", "text", "--label-col", "label",
     "--epochs", "1", "--batch-size", "8", "--seed", "3", "--out", out_dir])
try:
    tok = AutoTokenizer.from_pretrained(out_dir)
    model = BertForSequenceClassification.from_pretrained(out_dir)
    check(True, f"transformers loads bft-cli's directory ({type(tok).__name__}, "
                f"{sum(p.numel() for p in model.parameters())} parameters)")
    ids_hf = [tok(t)["input_ids"] for t in TEXTS]
    lower = bool(json.load(open(os.path.join(out_dir, "tokenizer_config.json"))).get("do_lower_case"))
    ids_bft = [[int(x) for x in line.split()] for line in
               run(["tokenize", "--vocab", os.path.join(out_dir, "vocab.txt")] + (["--lower"] if lower else []),
                   "\n".join(TEXTS) + "\n").splitlines()]
    check(ids_hf == ids_bft, "token ids: transformers = bft-cli tokenize")
    d = (hf_probs(model, tok) - bft_probs(out_dir)).abs().max().item()
    check(d <= 1e-5, f"probabilities: transformers vs bft-cli classify, max |diff| {d:.2e} (<= 1e-5)")
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    check(labels == ["negative", "neutral", "positive"], f"labels survive the round trip: {labels}")
except Exception as e:  # report, go on with the other direction
    check(False, f"transformers could not use bft-cli's directory: {e!r}")

# ---- in: transformers writes (safetensors), bft-cli reads
torch.manual_seed(5)
cfg = BertConfig(vocab_size=sum(1 for _ in open(os.path.join(TINY, "vocab.txt"))), hidden_size=32,
                 num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64, num_labels=3)
tok = BertTokenizer(os.path.join(TINY, "vocab.txt"), do_lower_case=False)
cls_dir = os.path.join(WORK, "hf_cls")
model = BertForSequenceClassification(cfg)
model.save_pretrained(cls_dir, safe_serialization=True)
tok.save_pretrained(cls_dir)
d = (hf_probs(model, tok) - bft_probs(cls_dir)).abs().max().item()
check(d <= 1e-5, f"bft-cli classify of a transformers save_pretrained directory: max |diff| {d:.2e}")

mlm_dir = os.path.join(WORK, "hf_mlm")
mlm = BertForMaskedLM(cfg)
mlm.save_pretrained(mlm_dir, safe_serialization=True)
tok.save_pretrained(mlm_dir)
text = "the market is [MASK] today ."
mlm.eval()
with torch.no_grad():
    enc = tok(text, return_tensors="pt")
    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0].item()
    top = torch.softmax(mlm(**enc).logits[0, pos], -1).topk(5)
hf_top = top.indices.tolist()
bft_top = [int(line.split()[1]) for line in run(["fill-mask", "--model", mlm_dir, "--top-k", "5", text]).splitlines()]
check(hf_top == bft_top, f"bft-cli fill-mask top 5 of a transformers BertForMaskedLM = HF's ({bft_top} vs {hf_top})")

print(f"RESULT: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
