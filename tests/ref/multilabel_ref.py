#!/usr/bin/env python3
"""PyTorch reference for multi-label classification (Hugging Face's
BertForSequenceClassification with problem_type "multi_label_classification":
BCEWithLogitsLoss, mean over batch and labels); writes the golden that
tests/engine/test_bert.c (test_golden_multilabel) and tests/engine/test_cuda.c
check.

Regenerate (from the repository root; any torch, e.g. a virtual environment's):

    python3 tests/ref/multilabel_ref.py

It reuses bert_ref.py's float64 transcription of modeling_bert.py, its golden
format and its Trainer update (AdamW groups, linear warmup/decay, clipping),
on the tiny_legacy checkpoint with a fresh 5-label head, and writes
tests/data/golden/tiny_multilabel.bin: ids, lens, targets (B, K) multi-hot,
logits, probs (sigmoids), loss, every gradient, the weights after 10
optimizer steps, and scikit-learn's subset accuracy, macro- and micro-F1 and
the loss of those weights on the batch (needs scikit-learn).
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bert_ref as R  # noqa: E402


def classify_multi(W, cfg, ids, mask, targets):
    x = R.encoder(W, cfg, ids, mask)
    pooled = torch.tanh(F.linear(x[:, 0], W["pooler.dense.weight"], W["pooler.dense.bias"]))
    logits = F.linear(pooled, W["classifier.weight"], W["classifier.bias"])
    # BertForSequenceClassification, problem_type == "multi_label_classification"
    loss = torch.nn.BCEWithLogitsLoss()(logits, targets)
    return logits, loss


def multilabel_golden(name, out, num_labels, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg, W0 = R.load(name)
    V, C = cfg["vocab_size"], cfg["hidden_size"]
    g = R.Golden()
    W0["classifier.weight"] = torch.randn(num_labels, C, generator=gen, dtype=R.DT) * 0.2
    W0["classifier.bias"] = torch.randn(num_labels, generator=gen, dtype=R.DT) * 0.1
    g.add("init/classifier.weight", W0["classifier.weight"])
    g.add("init/classifier.bias", W0["classifier.bias"])
    names = R.layout_names(cfg, True, True, False)
    W = {n: W0[n].clone().requires_grad_(True) for n in names}
    ids, mask = R.make_batch(V, gen)
    B = len(R.LENS)
    # label sets: several labels, one label, none, all but one
    targets = torch.zeros(B, num_labels, dtype=R.DT)
    targets[0, [0, 2, 3]] = 1
    targets[1, 4] = 1
    targets[3, [0, 1, 2, 4]] = 1
    g.add("ids", ids, 1)
    g.add("lens", torch.tensor(R.LENS), 1)
    g.add("targets", targets)

    logits, loss = classify_multi(W, cfg, ids, mask, targets)
    loss.backward()
    g.add("logits", logits.detach())
    g.add("probs", torch.sigmoid(logits.detach()))
    g.add("loss", loss.detach().reshape(1))
    for n in names:
        g.add("grad/" + n, W[n].grad)

    lr, wd, ratio, max_norm, steps = 2e-3, 0.05, 0.25, 1.0, 10
    warmup = math.ceil(steps * ratio)
    decay = [W[n] for n in names if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [W[n] for n in names if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, R.hf_linear_lambda(warmup, steps))
    norms, lrs, losses = [], [], []
    for s in range(steps):
        opt.zero_grad(set_to_none=False)
        _, loss = classify_multi(W, cfg, ids, mask, targets)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([W[n] for n in names], max_norm)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        norms.append(float(norm))
        losses.append(float(loss.detach()))
    g.add("train/hparams", torch.tensor([lr, wd, ratio, max_norm, steps], dtype=R.DT))
    g.add("train/grad_norms", torch.tensor(norms, dtype=R.DT))
    g.add("train/lrs", torch.tensor(lrs, dtype=R.DT))
    g.add("train/losses", torch.tensor(losses, dtype=R.DT))
    for n in names:
        g.add("param10/" + n, W[n].detach())
    # evaluation of the trained weights as scikit-learn defines the metrics
    # (threshold 0.5; macro-F1 over every label, 0 for a label never true nor
    # predicted)
    from sklearn.metrics import accuracy_score, f1_score
    with torch.no_grad():
        logits, loss = classify_multi(W, cfg, ids, mask, targets)
    probs = torch.sigmoid(logits)
    pred = (probs >= 0.5).to(torch.int64).numpy()
    true = targets.to(torch.int64).numpy()
    margin = float((probs - 0.5).abs().min())
    assert margin > 1e-3, "a probability too close to the threshold: %g" % margin
    g.add("eval/loss", loss.reshape(1))
    g.add("eval/subset_accuracy", torch.tensor([accuracy_score(true, pred)], dtype=R.DT))
    g.add("eval/macro_f1", torch.tensor([f1_score(true, pred, average="macro", zero_division=0)],
                                        dtype=R.DT))
    g.add("eval/micro_f1", torch.tensor([f1_score(true, pred, average="micro", zero_division=0)],
                                        dtype=R.DT))
    print("after training: BCE %.6f, subset accuracy %.3f, macro-F1 %.4f, micro-F1 %.4f "
          "(closest probability to 0.5: %.3g away)" %
          (float(loss), accuracy_score(true, pred),
           f1_score(true, pred, average="macro", zero_division=0),
           f1_score(true, pred, average="micro", zero_division=0), margin))
    print("%s: BCE loss %.6f, grad norms %s, lrs %s" %
          (out, losses[0], ["%.3f" % x for x in norms], ["%.2e" % x for x in lrs]))
    g.write(os.path.join(R.GOLD, out + ".bin"))


def main():
    torch.set_num_threads(1)
    multilabel_golden("tiny_legacy", "tiny_multilabel", 5, 21)
    return 0


if __name__ == "__main__":
    sys.exit(main())
