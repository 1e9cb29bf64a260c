#!/usr/bin/env python3
"""The same fine-tuning in Hugging Face's Trainer and in bft (SQL and bft-cli),
side by side, plus the round trip of the models between transformers and bft.

    .venv/bin/python tests/hf/trainer_parity.py --base DIR --train CSV --eval TXT \\
        [--epochs 2 --batch-size 4 --lr 1e-3 --warmup-ratio 0.1 --weight-decay 0.01 \\
         --max-length 64 --seed 7 --threads 2] [--sql] [--golden DIR]

What runs (CPU, fp32):
  1. init: AutoModelForSequenceClassification.from_pretrained(base, num_labels=K)
     under torch.manual_seed(seed) (a new head is Hugging Face's own
     initialisation), save_pretrained with the tokenizer: both sides start
     from these exact weights;
  2. Trainer: dropout 0 (config), no shuffling (a SequentialSampler), AdamW
     (Trainer's default optimizer), linear schedule with warmup_steps =
     the ratio (transformers 5 reads a value below 1 as a ratio), gradient
     clipping at 1.0, weight decay, dynamic padding (DataCollatorWithPadding),
     logging every step; each step's exact loss and learning rate are recorded
     in training_step; the final model's eval-mode probabilities on the eval
     texts; the model is saved with save_pretrained;
  3. bft-cli train --model init --dropout 0 --no-shuffle --log-steps (same
     hyper-parameters) and bft-cli classify on the eval texts;
  4. with --sql (a running server with bft; PG* environment variables): the
     init directory is imported with bft_import_model, trained with
     bft_train(..., base => ..., dropout => 0, shuffle => false) and
     client_min_messages = debug1 (one line per step), and classified with
     bft_predict_proba; its bft_export_model directory is loaded with
     AutoModelForSequenceClassification / AutoTokenizer.from_pretrained and its
     probabilities compared with bft's; Trainer's save_pretrained directory is
     imported into bft and classifies the same as transformers.
Prints every comparison with its maximum difference against the stated
tolerance and ends with "RESULT: P passed, F failed".

--golden DIR writes what the C/SQL test tests/scripts/test_hf_parity.sh checks
without torch: init/ and trainer/ (model directories), train.csv, eval.txt,
hparams.txt, trainer_steps.txt ("step loss lr"), trainer_probs.txt (at
max_length), trainer_probs_full.txt (at the tokenizer's model_max_length, what
an imported directory uses) and export_probs.txt (transformers on bft's
export), one line per eval text.
"""
import argparse
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.data import SequentialSampler
from transformers import (AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorWithPadding, Trainer, TrainingArguments)

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

# Tolerances (stated; see README "Fine-tuning a pretrained model").
TOL_LOSS_STEP = 1e-5      # per-step training loss, bft vs Trainer
TOL_PROB_TRAINED = 1e-5   # final probabilities after the same training
TOL_PROB_ROUNDTRIP = 1e-5 # one model, two implementations (export / import)
TOL_LR = 1e-12            # learning rate of every step (relative)

passed = failed = 0


def check(ok, what):
    global passed, failed
    print(("ok - " if ok else "FAIL - ") + what, flush=True)
    if ok:
        passed += 1
    else:
        failed += 1


def read_train(path):
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


class RecordingTrainer(Trainer):
    """Trainer without shuffling that records each step's exact loss and lr."""
    steps = []

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    def training_step(self, model, inputs, num_items_in_batch=None):
        lr = self.optimizer.param_groups[0]["lr"]
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.steps.append((float(loss.detach()), float(lr)))
        return loss


def probs_hf(model, tok, texts, max_length):
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), 16):
            enc = tok(texts[i:i + 16], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            out.append(torch.softmax(model(**enc).logits.float(), dim=-1).double())
    return torch.cat(out)


def fmt(x):
    return repr(float(x))


def run(cmd, stdin=None, env=None):
    r = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("%s: rc %d: %s" % (" ".join(cmd[:3]), r.returncode, r.stderr[-800:]))
    return r


def parse_steps(text):
    """'... step S/T epoch E loss L lr X' lines (bft-cli --log-steps, bft_train DEBUG)."""
    steps = []
    for m in re.finditer(r"step (\d+)/(\d+) epoch \d+ loss (\S+) lr (\S+)", text):
        steps.append((float(m.group(3)), float(m.group(4))))
    return steps


def compare_steps(name, got, want):
    check(len(got) == len(want), "%s: %d steps (Trainer %d)" % (name, len(got), len(want)))
    if not got or len(got) != len(want):
        return None
    dl = max(abs(a[0] - b[0]) for a, b in zip(got, want))
    dr = max(abs(a[1] - b[1]) / max(abs(b[1]), 1e-300) for a, b in zip(got, want))
    check(dr <= TOL_LR, "%s: learning rate of every step, max relative diff %.1e (<= %.0e)" % (name, dr, TOL_LR))
    check(dl <= TOL_LOSS_STEP, "%s: loss of every step vs Trainer, max |diff| %.2e (<= %.0e)"
          % (name, dl, TOL_LOSS_STEP))
    return dl


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--train", required=True, help="CSV with text,label (integer class ids)")
    ap.add_argument("--eval", required=True, help="one text per line")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--optim", default=None, help="Trainer optim (default: Trainer's default)")
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "bft-cli"))
    ap.add_argument("--sql", action="store_true", help="also bft_train in the server of PG*")
    ap.add_argument("--golden", help="write the goldens of test_hf_parity.sh here")
    ap.add_argument("--work", help="working directory (default: a temporary one)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    work = a.work or tempfile.mkdtemp(prefix="bft-parity-")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)
    texts, labels = read_train(a.train)
    with open(a.eval) as f:
        eval_texts = [l.rstrip("\n") for l in f if l.strip()]
    K = max(labels) + 1
    print("rows %d, labels %d, eval texts %d, steps %d, torch %s, transformers %s"
          % (len(texts), K, len(eval_texts), a.epochs * math.ceil(len(texts) / a.batch_size),
             torch.__version__, __import__("transformers").__version__), flush=True)

    # 1. common initial weights
    init = os.path.join(work, "init")
    torch.manual_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(a.base, num_labels=K)
    tok = AutoTokenizer.from_pretrained(a.base)
    model.save_pretrained(init)
    tok.save_pretrained(init)

    # 2. Trainer
    tok = AutoTokenizer.from_pretrained(init)
    model = AutoModelForSequenceClassification.from_pretrained(
        init, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    enc = tok(texts, truncation=True, max_length=a.max_length)
    kw = dict(output_dir=os.path.join(work, "trainer_run"), per_device_train_batch_size=a.batch_size,
              num_train_epochs=a.epochs, learning_rate=a.lr, warmup_steps=a.warmup_ratio,
              weight_decay=a.weight_decay, max_grad_norm=1.0, lr_scheduler_type="linear",
              logging_steps=1, save_strategy="no", report_to=[], seed=a.seed, use_cpu=True,
              disable_tqdm=True, dataloader_drop_last=False)
    if a.optim:
        kw["optim"] = a.optim
    args = TrainingArguments(**kw)
    trainer = RecordingTrainer(model=model, args=args, train_dataset=Rows(enc, labels),
                               data_collator=DataCollatorWithPadding(tok))
    RecordingTrainer.steps = []
    t0 = time.time()
    trainer.train()
    t_trainer = time.time() - t0
    want_steps = list(RecordingTrainer.steps)
    print("Trainer: %d steps in %.1f s (optimizer %s), losses %s ... %s"
          % (len(want_steps), t_trainer, args.optim, fmt(want_steps[0][0]), fmt(want_steps[-1][0])), flush=True)
    trainer_probs = probs_hf(model, tok, eval_texts, a.max_length)
    # an imported directory classifies at the tokenizer's model_max_length
    # (at most the position embeddings)
    full_len = min(tok.model_max_length, model.config.max_position_embeddings)
    trainer_probs_full = probs_hf(model, tok, eval_texts, full_len)
    tdir = os.path.join(work, "trainer")
    model.save_pretrained(tdir)
    tok.save_pretrained(tdir)

    # 3. bft-cli
    env = dict(os.environ, OPENBLAS_CORETYPE=os.environ.get("OPENBLAS_CORETYPE", "Haswell"))
    hp = ["--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", repr(a.lr),
          "--warmup-ratio", repr(a.warmup_ratio), "--weight-decay", repr(a.weight_decay),
          "--max-length", str(a.max_length), "--dropout", "0", "--no-shuffle", "--seed", str(a.seed)]
    cli_out = os.path.join(work, "cli_out")
    t0 = time.time()
    r = run([a.cli, "train", "--model", init, "--csv", a.train, "--text-col", "text", "--label-col", "label",
             "--threads", str(a.threads), "--log-steps", "--out", cli_out] + hp, env=env)
    t_cli = time.time() - t0
    print("bft-cli: %.1f s" % t_cli, flush=True)
    compare_steps("bft-cli", parse_steps(r.stdout), want_steps)
    out = run([a.cli, "classify", "--model", cli_out, "--max-length", str(a.max_length)],
              "\n".join(eval_texts) + "\n", env=env).stdout
    cli_probs = torch.tensor([json.loads(l)["probs"] for l in out.splitlines()], dtype=torch.float64)
    d = (cli_probs - trainer_probs).abs().max().item()
    check(d <= TOL_PROB_TRAINED, "bft-cli: final probabilities vs Trainer, max |diff| %.2e (<= %.0e)"
          % (d, TOL_PROB_TRAINED))

    export_probs = None
    if a.sql:
        # 4. SQL: import, train, classify, export; Trainer's directory imported
        def psql(sql, debug=False):
            r = run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql], env=env)
            return r.stdout, r.stderr

        tbl = "bft_parity_rows"
        psql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int, text text, label int)" % (tbl, tbl))
        vals = ",".join("(%d, %s, %d)" % (i, "'" + t.replace("'", "''") + "'", l)
                        for i, (t, l) in enumerate(zip(texts, labels)))
        psql("INSERT INTO %s VALUES %s" % (tbl, vals))
        psql("SELECT sum(bft_drop_model(name)) FROM bft.models WHERE name LIKE 'bft_parity_%'")
        for d_ in (init, tdir):
            for root, dirs, files in os.walk(d_):
                os.chmod(root, 0o755)
                for f in files:
                    os.chmod(os.path.join(root, f), 0o644)
        psql("SELECT * FROM bft_import_model('bft_parity_init', '%s')" % init)
        train_sql = ("SET client_min_messages = debug1; SET bft.threads = %d; "
                     "SELECT version FROM bft_train('%s', 'text', 'label', %d, model => 'bft_parity_sql', "
                     "base => 'bft_parity_init', batch_size => %d, learning_rate => %r, max_length => %d, "
                     "warmup_ratio => %r, weight_decay => %r, dropout => 0, shuffle => false, seed => %d)"
                     % (a.threads, tbl, a.epochs, a.batch_size, a.lr, a.max_length, a.warmup_ratio,
                        a.weight_decay, a.seed))
        t0 = time.time()
        _, err = psql(train_sql)
        t_sql = time.time() - t0
        print("bft_train: %.1f s" % t_sql, flush=True)
        compare_steps("bft_train (SQL)", parse_steps(err), want_steps)
        arr = "ARRAY[%s]" % ",".join("'" + t.replace("'", "''") + "'" for t in eval_texts)

        def sql_probs(model):
            out, _ = psql("SELECT array_to_string(bft_predict_proba(t, '%s')::float8[], ' ') "
                          "FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i" % (model, arr))
            return torch.tensor([[float(x) for x in l.split()] for l in out.splitlines()], dtype=torch.float64)

        sql_p = sql_probs("bft_parity_sql")
        d = (sql_p - trainer_probs).abs().max().item()
        check(d <= TOL_PROB_TRAINED, "bft_train (SQL): final probabilities vs Trainer, max |diff| %.2e (<= %.0e)"
              % (d, TOL_PROB_TRAINED))
        d = (sql_p - cli_probs).abs().max().item()
        check(d <= 1e-6, "bft_train (SQL) vs bft-cli train: final probabilities, max |diff| %.2e (<= 1e-6)" % d)
        # round trip out: bft_export_model -> from_pretrained
        exp = os.path.join(work, "export")
        shutil.rmtree(exp, ignore_errors=True)
        os.makedirs(exp)
        os.chmod(exp, 0o777)
        psql("SELECT bft_export_model('bft_parity_sql', '%s')" % exp)
        etok = AutoTokenizer.from_pretrained(exp)
        emodel = AutoModelForSequenceClassification.from_pretrained(exp)
        export_probs = probs_hf(emodel, etok, eval_texts, a.max_length)
        ids_ok = all(etok(t, truncation=True, max_length=a.max_length)["input_ids"] ==
                     tok(t, truncation=True, max_length=a.max_length)["input_ids"] for t in eval_texts)
        check(ids_ok, "export: AutoTokenizer of bft's directory gives the base tokenizer's ids")
        d = (export_probs - sql_p).abs().max().item()
        check(d <= TOL_PROB_ROUNDTRIP, "export: transformers on bft_export_model's directory vs bft, "
              "max |diff| %.2e (<= %.0e)" % (d, TOL_PROB_ROUNDTRIP))
        # round trip in: Trainer's save_pretrained directory -> bft
        psql("SELECT * FROM bft_import_model('bft_parity_trainer', '%s')" % tdir)
        d = (sql_probs("bft_parity_trainer") - trainer_probs_full).abs().max().item()
        check(d <= TOL_PROB_ROUNDTRIP, "import: Trainer's save_pretrained directory in bft vs transformers, "
              "max |diff| %.2e (<= %.0e)" % (d, TOL_PROB_ROUNDTRIP))
        psql("SELECT sum(bft_drop_model(name)) FROM bft.models WHERE name LIKE 'bft_parity_%'; DROP TABLE " + tbl)

    if a.golden:
        if export_probs is None:
            sys.exit("--golden needs --sql (the export goldens)")
        g = a.golden
        shutil.rmtree(g, ignore_errors=True)
        os.makedirs(g)
        shutil.copytree(init, os.path.join(g, "init"))
        shutil.copytree(tdir, os.path.join(g, "trainer"))
        shutil.copy(a.train, os.path.join(g, "train.csv"))
        with open(os.path.join(g, "eval.txt"), "w") as f:
            f.write("\n".join(eval_texts) + "\n")
        with open(os.path.join(g, "hparams.txt"), "w") as f:
            f.write("epochs %d\nbatch_size %d\nlearning_rate %r\nwarmup_ratio %r\nweight_decay %r\n"
                    "max_length %d\nseed %d\n" % (a.epochs, a.batch_size, a.lr, a.warmup_ratio,
                                                   a.weight_decay, a.max_length, a.seed))
        with open(os.path.join(g, "trainer_steps.txt"), "w") as f:
            for i, (l, lr) in enumerate(want_steps):
                f.write("%d %s %s\n" % (i + 1, fmt(l), fmt(lr)))
        for name, p in (("trainer_probs.txt", trainer_probs), ("trainer_probs_full.txt", trainer_probs_full),
                        ("export_probs.txt", export_probs)):
            with open(os.path.join(g, name), "w") as f:
                for row in p.tolist():
                    f.write(" ".join(fmt(x) for x in row) + "\n")
        with open(os.path.join(g, "versions.txt"), "w") as f:
            f.write("torch %s\ntransformers %s\noptim %s\n"
                    % (torch.__version__, __import__("transformers").__version__, args.optim))
        for root, dirs, files in os.walk(g):
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        print("goldens written to", g)
    print("RESULT: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
