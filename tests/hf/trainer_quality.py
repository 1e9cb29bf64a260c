#!/usr/bin/env python3
"""The Hugging Face side of tests/bench/quality_pretrained.sh: fine-tune a
checkpoint with transformers' Trainer on a train CSV and evaluate on a test
CSV (text,label with integer class ids), with the hyper-parameters bft used.
Trainer as a user runs it: its default optimizer (AdamW), linear schedule with
warmup_steps = the ratio, shuffling (seeded), the checkpoint's dropout,
dynamic padding, fp32 on the CPU, torch.set_num_threads(--threads).

    .venv/bin/python tests/hf/trainer_quality.py --base DIR --train CSV --test CSV \\
        --epochs 3 --batch-size 8 --lr 5e-5 --warmup-ratio 0 --weight-decay 0 \\
        --max-length 128 --seed 42 --threads 2

Prints one JSON object: accuracy, macro_f1 (mean F1 over the labels present in
the truth or the predictions, as scikit-learn's f1_score(average="macro")),
train_seconds (Trainer's train_runtime), train_samples_per_second (examples x
epochs / train_runtime), eval rows and seconds, versions.
"""
import argparse
import csv
import json
import sys
import time

import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainingArguments)


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


class Rows(torch.utils.data.Dataset):
    def __init__(self, enc, labels):
        self.enc, self.labels = enc, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: v[i] for k, v in self.enc.items()}
        item["labels"] = self.labels[i]
        return item


def macro_f1(truth, pred):
    labels = sorted(set(truth) | set(pred))
    f1s = []
    for k in labels:
        tp = sum(1 for t, p in zip(truth, pred) if t == k and p == k)
        fp = sum(1 for t, p in zip(truth, pred) if t != k and p == k)
        fn = sum(1 for t, p in zip(truth, pred) if t == k and p != k)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--warmup-ratio", type=float, default=0.0)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="/tmp/bft-trainer-quality")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    tr_x, tr_y = read(a.train)
    te_x, te_y = read(a.test)
    K = max(tr_y + te_y) + 1
    tok = AutoTokenizer.from_pretrained(a.base)
    model = AutoModelForSequenceClassification.from_pretrained(a.base, num_labels=K)
    enc = tok(tr_x, truncation=True, max_length=a.max_length)
    args = TrainingArguments(output_dir=a.work, per_device_train_batch_size=a.batch_size,
                             num_train_epochs=a.epochs, learning_rate=a.lr, warmup_steps=a.warmup_ratio,
                             weight_decay=a.weight_decay, lr_scheduler_type="linear", logging_steps=100,
                             save_strategy="no", report_to=[], seed=a.seed, use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(enc, tr_y),
                      data_collator=DataCollatorWithPadding(tok))
    res = trainer.train()
    runtime = res.metrics["train_runtime"]

    model.eval()
    t0 = time.time()
    pred = []
    order = sorted(range(len(te_x)), key=lambda i: len(te_x[i]))
    with torch.no_grad():
        for s in range(0, len(order), 32):
            idx = order[s:s + 32]
            e = tok([te_x[i] for i in idx], padding=True, truncation=True, max_length=a.max_length,
                    return_tensors="pt")
            for i, p in zip(idx, model(**e).logits.argmax(-1).tolist()):
                pred.append((i, p))
    pred = [p for _, p in sorted(pred)]
    eval_s = time.time() - t0
    acc = sum(1 for t, p in zip(te_y, pred) if t == p) / len(te_y)
    out = {"accuracy": acc, "macro_f1": macro_f1(te_y, pred), "train_rows": len(tr_y), "test_rows": len(te_y),
           "epochs": a.epochs, "steps": res.global_step, "train_seconds": runtime,
           "train_samples_per_second": len(tr_y) * a.epochs / runtime, "train_loss": res.training_loss,
           "eval_seconds": eval_s, "optim": str(args.optim), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "transformers": __import__("transformers").__version__}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
