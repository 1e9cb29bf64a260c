#!/usr/bin/env python3
"""TF-IDF + logistic-regression baseline for the tasks of derive_tasks.py.

For each task: word unigrams and bigrams (sublinear tf, lowercase) + a
character 2-5-gram TF-IDF of word boundaries, and a multinomial logistic
regression whose C is chosen by 3-fold stratified cross-validation on the
training rows (C in 1, 10, 100, 1000, by macro-F1), refit on all training rows and
scored on the held-out rows. Needs scikit-learn (Debian: python3-sklearn).

Rows with an empty label (unlabeled) are left out. Prints one line per
task and writes its line of OUT/baseline.tsv (other tasks' lines are kept):
    task  rows  classes  accuracy  macro_f1  seconds  C

Usage: python3 tests/bench/baseline_tfidf.py [--dir DIR] [task ...]
"""
import argparse
import csv
import os
import sys
import time

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import FeatureUnion, Pipeline


def read(path):
    """Texts and labels of the rows with a label (an empty label: unlabeled, skipped)."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] != ""]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def model():
    feats = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ])
    return Pipeline([("tfidf", feats), ("lr", LogisticRegression(max_iter=3000))])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.environ.get("BFT_BENCH_DIR", "/tmp/bft-bench") + "/tasks")
    ap.add_argument("tasks", nargs="*")
    a = ap.parse_args()
    tasks = a.tasks or open(os.path.join(a.dir, "tasks.txt")).read().split()
    # baseline.tsv keeps the lines of tasks not run now
    path = os.path.join(a.dir, "baseline.tsv")
    kept = []
    if os.path.exists(path):
        kept = [l for l in open(path) if l.split("\t", 1)[0] not in tasks]
    out = open(path, "w")
    out.writelines(kept)
    for t in tasks:
        xt, yt = read(os.path.join(a.dir, t + "_train.csv"))
        xv, yv = read(os.path.join(a.dir, t + "_test.csv"))
        t0 = time.time()
        cv = StratifiedKFold(n_splits=3, shuffle=True, random_state=0)
        gs = GridSearchCV(model(), {"lr__C": [1.0, 10.0, 100.0, 1000.0]}, scoring="f1_macro", cv=cv, n_jobs=1)
        gs.fit(xt, yt)
        pred = gs.predict(xv)
        sec = time.time() - t0
        acc = accuracy_score(yv, pred)
        f1 = f1_score(yv, pred, average="macro")
        print("%-11s rows %5d classes %2d  accuracy %.4f  macro_f1 %.4f  %.1f s  (C=%g)"
              % (t, len(xt), len(set(yt)), acc, f1, sec, gs.best_params_["lr__C"]))
        out.write("%s\t%d\t%d\t%.4f\t%.4f\t%.1f\t%g\n"
                  % (t, len(xt), len(set(yt)), acc, f1, sec, gs.best_params_["lr__C"]))
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
