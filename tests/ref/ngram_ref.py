#!/usr/bin/env python3
"""scikit-learn reference for the n-gram head (src/engine/ngram.h); writes the
golden that tests/engine/test_ngram.c checks.

Regenerate (from the repository root; needs scikit-learn):

    python3 tests/ref/ngram_ref.py

A small three-class corpus of lower-case ASCII words separated by single
spaces (so scikit-learn's word tokens and char_wb words are exactly the
tokens of bft's pre-tokenizer), some of one letter (left out of the word
n-grams, kept in the character n-grams). Features: TfidfVectorizer word
1-2-grams and char_wb 2-5-grams, both sublinear_tf, min_df=2, joined by a
FeatureUnion; LogisticRegression(C=10) fitted to tolerance 1e-10. Writes
tests/data/golden/ngram_ref.txt: C, the feature counts, the training rows
(label, text), and held-out texts with their class probabilities.
"""
import os
import random

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion

COMMON = "the a shares of on in to for and is at by q stock market".split()
CLASS_WORDS = [
    "earnings profit revenue quarter beat guidance margin dividend".split(),
    "merger acquisition deal buyout takeover bid stake offer".split(),
    "fed rates inflation yields treasury bonds central policy".split(),
]
C = 10.0


def text(rng, c):
    words = [rng.choice(CLASS_WORDS[c]) for _ in range(rng.randint(2, 4))]
    words += [rng.choice(CLASS_WORDS[rng.randrange(3)])]
    words += [rng.choice(COMMON) for _ in range(rng.randint(1, 4))]
    rng.shuffle(words)
    return " ".join(words)


def main():
    rng = random.Random(7)
    train = [(i % 3, text(rng, i % 3)) for i in range(60)]
    test = [text(rng, i % 3) for i in range(9)] + ["a q", "profit merger fed"]
    feats = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
    ])
    x = feats.fit_transform([t for _, t in train])
    lr = LogisticRegression(C=C, tol=1e-10, max_iter=100000).fit(x, [y for y, _ in train])
    p = lr.predict_proba(feats.transform(test))
    nw = len(feats.transformer_list[0][1].vocabulary_)
    nc = len(feats.transformer_list[1][1].vocabulary_)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "golden", "ngram_ref.txt")
    with open(out, "w") as f:
        f.write("# tests/ref/ngram_ref.py: C, features (word char), rows, then held-out texts and probabilities\n")
        f.write("C %g\nfeatures %d %d\ntrain %d\n" % (C, nw, nc, len(train)))
        for y, t in train:
            f.write("%d\t%s\n" % (y, t))
        f.write("test %d\n" % len(test))
        for t, row in zip(test, p):
            f.write("%s\t%s\n" % (t, " ".join("%.9f" % v for v in row)))
    print("wrote", out, "features", nw, nc)


if __name__ == "__main__":
    main()
