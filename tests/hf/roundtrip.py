#!/usr/bin/env python3
"""Hugging Face round trip of model directories between bft and transformers
(CPU, seconds):

  out: a directory written by `bft-cli train` (fine-tuned from
       tests/data/ckpt/tiny, text labels) loads with
       AutoModelForSequenceClassification / AutoTokenizer.from_pretrained;
       transformers' token ids equal `bft-cli tokenize`'s, its probabilities
       equal `bft-cli classify`'s within 1e-5 and the label names survive;
  in:  a random BertForSequenceClassification and a BertForMaskedLM written by
       save_pretrained (model.safetensors + tokenizer.json, as transformers 5
       writes them) and the same models' state dicts in pytorch_model.bin
       (torch.save; transformers 5 no longer writes that file) are read by
       bft-cli: classify within 1e-5 of transformers, fill-mask's top 5 tokens
       equal transformers' (scores within 1e-4: bft-cli prints 4 decimals;
       test_hf_parity.sh checks bft_fill_mask's to 1e-5).
(bft_export_model / bft_import_model in SQL and a real checkpoint:
tests/hf/trainer_parity.py --sql.)

    .venv/bin/python tests/hf/roundtrip.py [--cli build/bft-cli] [--work DIR] [--golden DIR]

--golden DIR writes the fill-mask goldens test_hf_parity.sh checks without
torch: mlm/ (save_pretrained of a random tiny BertForMaskedLM), mlm_bin/ (the
same as pytorch_model.bin with vocab.txt) and fill_mask.txt ("text<TAB>id
score id score ..." with transformers' top 5).
Prints one "ok - ..." / "FAIL - ..." line per check and "RESULT: P passed, F failed".
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                          BertForMaskedLM, BertForSequenceClassification)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
TINY = os.path.join(ROOT, "tests", "data", "ckpt", "tiny")
TEXTS = ["the stock market is up today", "Bank of Canada cuts rates, again!",
         "café owners report weak sales", "unknown tokens and ünïcödé", "a"]
MASKED = ["the market is [MASK] today .", "the [MASK] sat on the [MASK] ."]
TOL = 1e-5
TOL_FM_CLI = 1e-4  # bft-cli fill-mask prints scores with 4 decimals
passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("ok - " if ok else "FAIL - ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "bft-cli"))
    ap.add_argument("--work")
    ap.add_argument("--golden")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="bft-roundtrip-")
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)

    def run(args, stdin=None):
        r = subprocess.run([a.cli] + args, input=stdin, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError("bft-cli %s: rc %d: %s" % (" ".join(args), r.returncode, r.stderr[:400]))
        return r.stdout

    def bft_probs(model_dir):
        out = run(["classify", "--model", model_dir], "\n".join(TEXTS) + "\n")
        return torch.tensor([json.loads(line)["probs"] for line in out.splitlines()], dtype=torch.float64)

    def hf_probs(model, tok):
        model.eval()
        with torch.no_grad():
            enc = tok(TEXTS, padding=True, return_tensors="pt")
            return torch.softmax(model(**enc).logits.float(), dim=-1).double()

    # ---- out: bft-cli writes, transformers reads
    csv = os.path.join(work, "train.csv")
    with open(csv, "w") as f:
        f.write("text,label\n")
        for i in range(24):
            f.write("\"headline number %d about %s\",%s\n"
                    % (i, "profits" if i % 2 else "losses", "positive" if i % 2 else "negative"))
    out_dir = os.path.join(work, "bft_out")
    run(["train", "--model", TINY, "--csv", csv, "--text-col", "text", "--label-col", "label",
         "--epochs", "1", "--batch-size", "8", "--seed", "3", "--out", out_dir])
    try:
        tok = AutoTokenizer.from_pretrained(out_dir)
        model = AutoModelForSequenceClassification.from_pretrained(out_dir)
        check(True, "transformers loads bft-cli's directory (%s, %d parameters)"
              % (type(tok).__name__, sum(p.numel() for p in model.parameters())))
        ids_hf = [tok(t)["input_ids"] for t in TEXTS]
        lower = bool(json.load(open(os.path.join(out_dir, "tokenizer_config.json"))).get("do_lower_case"))
        ids_bft = [[int(x) for x in line.split()] for line in
                   run(["tokenize", "--vocab", os.path.join(out_dir, "vocab.txt")] + (["--lower"] if lower else []),
                       "\n".join(TEXTS) + "\n").splitlines()]
        check(ids_hf == ids_bft, "token ids: transformers = bft-cli tokenize")
        d = (hf_probs(model, tok) - bft_probs(out_dir)).abs().max().item()
        check(d <= TOL, "probabilities: transformers vs bft-cli classify, max |diff| %.2e (<= %.0e)" % (d, TOL))
        labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
        # the names map through tiny's id2label, whose 3-way head is kept
        check(labels == ["negative", "neutral", "positive"], "label names survive the round trip: %s" % labels)
    except Exception as e:  # report, go on with the other direction
        check(False, "transformers could not use bft-cli's directory: %r" % (e,))

    # ---- in: transformers writes (safetensors and pytorch_model.bin), bft-cli reads
    torch.manual_seed(5)
    with open(os.path.join(TINY, "vocab.txt")) as f:
        V = sum(1 for _ in f)
    cfg = BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, num_labels=3)
    tok = AutoTokenizer.from_pretrained(TINY)
    model = BertForSequenceClassification(cfg)
    def save(m, d_, safe):
        shutil.rmtree(d_, ignore_errors=True)
        m.save_pretrained(d_)
        tok.save_pretrained(d_)
        if not safe:
            os.unlink(os.path.join(d_, "model.safetensors"))
            torch.save(m.state_dict(), os.path.join(d_, "pytorch_model.bin"))
            shutil.copy(os.path.join(TINY, "vocab.txt"), d_)

    for form, safe in (("model.safetensors", True), ("pytorch_model.bin", False)):
        d_ = os.path.join(work, "hf_cls_" + ("st" if safe else "bin"))
        save(model, d_, safe)
        files = sorted(os.listdir(d_))
        d = (hf_probs(model, tok) - bft_probs(d_)).abs().max().item()
        check(d <= TOL, "bft-cli classify of save_pretrained (%s): max |diff| %.2e (<= %.0e); files %s"
              % (form, d, TOL, files))

    mlm = BertForMaskedLM(cfg)
    mlm.eval()
    golden = []
    for form, safe in (("model.safetensors", True), ("pytorch_model.bin", False)):
        d_ = os.path.join(work, "hf_mlm_" + ("st" if safe else "bin"))
        save(mlm, d_, safe)
        for text in MASKED:
            with torch.no_grad():
                enc = tok(text, return_tensors="pt")
                pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero().flatten().tolist()
                logits = mlm(**enc).logits[0]
            hf = []
            for p in pos:
                top = torch.softmax(logits[p].double(), -1).topk(5)
                hf.append(list(zip(top.indices.tolist(), top.values.tolist())))
            lines = run(["fill-mask", "--model", d_, "--top-k", "5", text]).splitlines()
            got = [(int(l.split()[-2]), float(l.split()[-1])) for l in lines if l.strip()]
            want = [x for per in hf for x in per]
            same_ids = [g[0] for g in got] == [w[0] for w in want]
            dmax = max(abs(g[1] - w[1]) for g, w in zip(got, want)) if same_ids else float("inf")
            check(same_ids and dmax <= TOL_FM_CLI, "bft-cli fill-mask of save_pretrained BertForMaskedLM (%s) %r: "
                  "top 5 ids = transformers', max |score diff| %.2e" % (form, text, dmax))
            if safe:
                golden.append((text, want))
        if a.golden:
            os.makedirs(a.golden, exist_ok=True)
            tgt = os.path.join(a.golden, "mlm" if safe else "mlm_bin")
            shutil.rmtree(tgt, ignore_errors=True)
            shutil.copytree(d_, tgt)
    if a.golden:
        with open(os.path.join(a.golden, "fill_mask.txt"), "w") as f:
            for text, want in golden:
                f.write(text + "\t" + " ".join("%d %r" % (i, s) for i, s in want) + "\n")
        for root, dirs, files in os.walk(a.golden):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        print("goldens written to", a.golden)
    print("RESULT: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
