#!/usr/bin/python3
"""Expected outputs of `bft-cli classify` and `bft-cli fill-mask` on the tiny
checkpoints, from the PyTorch reference model of tests/ref/bert_ref.py
(float64). Checked by tests/scripts/test_cli.sh.

Regenerate (from the repository root, Debian's torch):

    /usr/bin/python3 tests/ref/cli_golden.py

The texts are made of words of the tiny vocabulary (tests/ref/make_checkpoints.py),
so their BertTokenizer ids follow from a plain whitespace split, lower-casing
for the uncased checkpoints, and greedy longest-match WordPiece — which this
script does for exactly these ASCII texts.

Writes tests/data/cli/:
  classify_tiny.txt    the texts (one per line)
  classify_tiny.expect "label_id p0 p1 p2" per text
  fill_mask.txt        "checkpoint<TAB>text" per case
  fill_mask.expect     per case: "token id score" lines (top 5 for each mask),
                       groups separated by an empty line, cases by "--"
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bert_ref  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "cli")
CLS, SEP, MASK = "[CLS]", "[SEP]", "[MASK]"


def vocab(name):
    with open(os.path.join(bert_ref.CKPT, name, "vocab.txt"), encoding="utf-8") as f:
        return [l.rstrip("\n") for l in f]


def wordpiece(word, v):
    out, start = [], 0
    while start < len(word):
        end, cur = len(word), None
        while start < end:
            sub = word[start:end] if start == 0 else "##" + word[start:end]
            if sub in v:
                cur = sub
                break
            end -= 1
        if cur is None:
            return ["[UNK]"]
        out.append(cur)
        start = end
    return out


def encode(text, v, lower):
    ids = [v.index(CLS)]
    for w in text.split():
        if w == MASK:
            ids.append(v.index(MASK))
            continue
        if lower:
            w = w.lower()
        assert all(c.isascii() and (c.isalnum() or c in ".,") for c in w), w
        for p in wordpiece(w, v):
            ids.append(v.index(p))
    ids.append(v.index(SEP))
    return torch.tensor([ids])


def main():
    os.makedirs(OUT, exist_ok=True)
    texts = ["the stock market is up", "bad news for the bank .", "he works as a waitress",
             "The Bank", "cafe", "stocks bought", "", "a dog sat on the mat , the cat sat on the dog"]
    cfg, W = bert_ref.load("tiny")
    v = vocab("tiny")
    lines = []
    for t in texts:
        ids = encode(t, v, True)
        logits, _ = bert_ref.classify(W, cfg, ids, torch.ones_like(ids), torch.zeros(1, dtype=torch.long))
        p = F.softmax(logits, dim=-1)[0]
        lines.append("%d %s" % (int(torch.argmax(p)), " ".join("%.10f" % float(x) for x in p)))
    with open(os.path.join(OUT, "classify_tiny.txt"), "w") as f:
        f.write("".join(t + "\n" for t in texts))
    with open(os.path.join(OUT, "classify_tiny.expect"), "w") as f:
        f.write("".join(l + "\n" for l in lines))

    cases = [("tiny_mlm", "the cat sat on the [MASK] .", True),
             ("tiny_legacy", "[MASK] works as a [MASK]", False),
             ("tiny_mlm", "[MASK]", True)]
    blocks = []
    for name, text, lower in cases:
        cfg, W = bert_ref.load(name)
        v = vocab(name)
        ids = encode(text, v, lower)
        rows = [i for i, x in enumerate(ids[0].tolist()) if x == v.index(MASK)]
        logits = bert_ref.mlm_logits(W, cfg, ids, torch.ones_like(ids), torch.tensor(rows))
        probs = F.softmax(logits, dim=-1)
        groups = []
        for j in range(len(rows)):
            s, i = torch.sort(probs[j], descending=True, stable=True)
            assert float(s[4] - s[5]) > 1e-4, "top-5 boundary too close to call"
            groups.append("".join("%s %d %.10f\n" % (v[int(i[k])], int(i[k]), float(s[k])) for k in range(5)))
        blocks.append("\n".join(groups))
    with open(os.path.join(OUT, "fill_mask.txt"), "w") as f:
        f.write("".join("%s\t%s\n" % (n, t) for n, t, _ in cases))
    with open(os.path.join(OUT, "fill_mask.expect"), "w") as f:
        f.write("--\n".join(blocks))
    print("wrote", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
