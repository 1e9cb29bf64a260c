#!/usr/bin/env python3
"""Derive benchmark tasks from the Twitter Financial News Topic training split
(../shared/data/topic_train.csv: text,label with labels 0..19) for checking
bft_train's defaults on data they were not tuned on.

One stratified held-out test set (20% of every label, chosen by a seeded
shuffle) is shared by all tasks; each task's training rows are a stratified
sample of the remaining 80%:

  topics_1k    1,000 rows, the 20 topics
  topics_3k    3,000 rows, the 20 topics
  topics_8k    8,000 rows, the 20 topics
  coarse4_3k   3,000 rows, 4 coarse groups of the topics (markets, company,
               macro and policy, other)
  skewed3_3k   3,000 rows, 3 groups with imbalanced counts (about 73% other,
               22% market talk, 5% corporate events: dividends, IPOs, M&A)
  topics_1k_unl  the 1,000 labeled rows of topics_1k and the other 12,593
               rows of the 80% without their labels (an empty label, NULL
               once copied into a table): a table where few rows are labeled

Writes OUT/<task>_train.csv and OUT/<task>_test.csv (text,label; label names
for the grouped tasks, topic ids otherwise) and OUT/tasks.txt (one task name a
line). Standard library only. Usage:

    python3 tests/bench/derive_tasks.py [--csv PATH] [--out DIR] [--seed N]
"""
import argparse
import csv
import os
import random
import sys
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CSV = os.path.join(HERE, "..", "..", "..", "shared", "data", "topic_train.csv")

# 0 Analyst Update, 1 Fed | Central Banks, 2 Company | Product News,
# 3 Treasuries | Corporate Debt, 4 Dividend, 5 Earnings, 6 Energy | Oil,
# 7 Financials, 8 Currencies, 9 General News | Opinion, 10 Gold | Metals | Materials,
# 11 IPO, 12 Legal | Regulation, 13 M&A | Investments, 14 Macro, 15 Markets,
# 16 Politics, 17 Personnel Change, 18 Stock Commentary, 19 Stock Movement
COARSE4 = {
    "markets": [0, 15, 18, 19, 8, 10, 6, 3],
    "company": [2, 4, 5, 11, 13, 17],
    "macro_policy": [1, 14, 16, 12],
    "other": [7, 9],
}
SKEWED3 = {
    "market_talk": [0, 15, 18, 19],
    "corporate_event": [4, 11, 13],
    "other": [1, 2, 3, 5, 6, 7, 8, 9, 10, 12, 14, 16, 17],
}
TASKS = [
    ("topics_1k", 1000, None),
    ("topics_3k", 3000, None),
    ("topics_8k", 8000, None),
    ("coarse4_3k", 3000, COARSE4),
    ("skewed3_3k", 3000, SKEWED3),
]


def stratified_sample(rows, n, key, rng):
    """n rows with every class in proportion (largest remainders), order shuffled."""
    by = defaultdict(list)
    for r in rows:
        by[key(r)].append(r)
    total = len(rows)
    quota = {c: n * len(v) / total for c, v in by.items()}
    take = {c: int(q) for c, q in quota.items()}
    rest = n - sum(take.values())
    for c in sorted(by, key=lambda c: (take[c] - quota[c], str(c)))[:rest]:
        take[c] += 1
    out = []
    for c in sorted(by, key=str):
        v = by[c][:]
        rng.shuffle(v)
        out.extend(v[:take[c]])
    rng.shuffle(out)
    return out


def group_of(mapping):
    inv = {t: g for g, ts in mapping.items() for t in ts}
    assert sorted(inv) == list(range(20)), "a grouping must cover the 20 topics once"
    return lambda topic: inv[topic]


def write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=DEFAULT_CSV)
    ap.add_argument("--out", default=os.environ.get("BFT_BENCH_DIR", "/tmp/bft-bench") + "/tasks")
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    with open(a.csv, newline="") as f:
        data = [(r["text"], int(r["label"])) for r in csv.DictReader(f)]
    rng = random.Random(a.seed)
    # shared held-out test set: 20% of every topic
    by = defaultdict(list)
    for i, (_, y) in enumerate(data):
        by[y].append(i)
    test_idx = set()
    for y in sorted(by):
        v = by[y][:]
        rng.shuffle(v)
        test_idx.update(v[:round(0.2 * len(v))])
    test = [data[i] for i in sorted(test_idx)]
    pool = [data[i] for i in range(len(data)) if i not in test_idx]
    os.makedirs(a.out, exist_ok=True)
    names = []
    for name, n, grouping in TASKS:
        g = group_of(grouping) if grouping else (lambda t: t)
        train = stratified_sample(pool, n, lambda r: g(r[1]), random.Random(f"{a.seed}/{name}"))
        write(os.path.join(a.out, name + "_train.csv"), [(t, g(y)) for t, y in train])
        write(os.path.join(a.out, name + "_test.csv"), [(t, g(y)) for t, y in test])
        cnt = Counter(g(y) for _, y in train)
        top = cnt.most_common(1)[0]
        print("%-11s train %5d, test %5d, %2d classes, largest %s %.0f%%, smallest %d rows"
              % (name, len(train), len(test), len(cnt), top[0], 100.0 * top[1] / len(train), min(cnt.values())))
        names.append(name)
        if name == "topics_1k":
            # the same labeled rows, and the rest of the pool unlabeled
            seen = set(id(r) for r in train)
            mixed = list(train) + [(r[0], "") for r in pool if id(r) not in seen]
            random.Random(f"{a.seed}/topics_1k_unl").shuffle(mixed)
            write(os.path.join(a.out, "topics_1k_unl_train.csv"), mixed)
            write(os.path.join(a.out, "topics_1k_unl_test.csv"), [(t, y) for t, y in test])
            print("%-11s train %5d (%d labeled), test %5d" % ("topics_1k_unl", len(mixed), len(train), len(test)))
            names.append("topics_1k_unl")
    with open(os.path.join(a.out, "tasks.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print("wrote", a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
