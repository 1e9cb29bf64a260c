#!/usr/bin/env python3
"""Write the small test files under tests/data/hf/ with the real Hugging Face
libraries (transformers' tokenizers, torch.save), from the tiny checkpoints of
tests/data/ckpt. The output is committed; the C tests read it without Python.

Run from the repository root with the reference virtual environment
(tests/hf/README.md):

    .venv/bin/python tests/hf/make_test_files.py

  tokenizer/uncased/   tokenizer.json + tokenizer_config.json that
                       AutoTokenizer.save_pretrained writes for tests/data/ckpt/tiny
                       (transformers 5 writes no vocab.txt)
  tokenizer/cased/     the same for tiny_legacy (cased: lowercase false)
  tiny_saved/          AutoModelForSequenceClassification + AutoTokenizer of
                       tests/data/ckpt/tiny, save_pretrained: what a Trainer
                       leaves (config.json, model.safetensors, tokenizer.json,
                       tokenizer_config.json; no vocab.txt)
"""
import json
import os
import shutil
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CKPT = os.path.join(ROOT, "tests", "data", "ckpt")
OUT = os.path.join(ROOT, "tests", "data", "hf")


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def tokenizers():
    from transformers import AutoTokenizer
    for name, src in (("uncased", "tiny"), ("cased", "tiny_legacy")):
        tok = AutoTokenizer.from_pretrained(os.path.join(CKPT, src))
        out = fresh(os.path.join(OUT, "tokenizer", name))
        tok.save_pretrained(out)
        with open(os.path.join(out, "tokenizer.json")) as f:
            norm = json.load(f)["normalizer"]
        print("%s: %s lowercase=%s, files %s" % (out, src, norm["lowercase"], sorted(os.listdir(out))))


def saved():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    src = os.path.join(CKPT, "tiny")
    out = fresh(os.path.join(OUT, "tiny_saved"))
    AutoModelForSequenceClassification.from_pretrained(src).save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    print("%s: %s" % (out, sorted(os.listdir(out))))


def readable(top):
    """safetensors writes 0600 files: the server's OS user reads these in tests"""
    for d, _, names in os.walk(top):
        os.chmod(d, 0o755)
        for n in names:
            os.chmod(os.path.join(d, n), 0o644)


def main():
    tokenizers()
    saved()
    readable(OUT)


if __name__ == "__main__":
    sys.exit(main())
