#!/usr/bin/python3
"""Generate the tiny random Hugging Face BERT checkpoints under tests/data/ckpt/.

Regenerate (from the repository root, Debian's torch):

    /usr/bin/python3 tests/ref/make_checkpoints.py

Deterministic (torch.manual_seed); the output is committed. Every directory is
a complete HF model directory (config.json, vocab.txt, tokenizer_config.json,
model.safetensors written by hand: 8-byte little-endian header length, JSON
header, raw little-endian data). Shapes: L=2, C=32, NH=4, I=64, P=64, Tt=2,
V=len(VOCAB). Values are deliberately large (weights std 0.2, LayerNorm
weights ~1 +- 0.1, random biases) so that golden comparisons catch bugs.

  tiny         BertForSequenceClassification, "bert."-prefixed, LayerNorm
               weight/bias, pooler, classifier with 3 labels, F32.
  tiny_f16     the same weights stored in F16 (values rounded by torch).
  tiny_bf16    the same weights stored in BF16.
  tiny_noprefix the encoder of `tiny` (BertModel: no "bert." prefix, pooler,
               no classifier), F32.
  tiny_legacy  like bert-base-cased (BertForPreTraining weights): "bert."-prefixed
               LayerNorm gamma/beta (also in the MLM transform), pooler,
               cls.predictions.*, cls.seq_relationship.*, an int64
               bert.embeddings.position_ids buffer; no classifier; cased
               tokenizer (do_lower_case false). Own random weights.
  tiny_mlm     BertForMaskedLM: "bert."-prefixed weight/bias, no pooler, MLM head
               with cls.predictions.decoder.weight (== word embeddings) and
               cls.predictions.decoder.bias (== cls.predictions.bias) stored
               explicitly; tokenizer_config with HF's huge model_max_length and
               strip_accents null. Own random weights.
"""
import json
import os
import struct
import sys

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "ckpt")

L, C, NH, I, P, TT = 2, 32, 4, 64, 64, 2

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PUNCT = list(".,!?'\"-():;$%&/")
DIGITS = [str(d) for d in range(10)]
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
WORDS = ["the", "an", "is", "was", "of", "to", "and", "in", "on", "at", "for", "with",
         "it", "this", "that", "cat", "dog", "sat", "mat", "good", "bad", "great", "stock",
         "market", "price", "up", "down", "buy", "sell", "news", "company", "shares", "rate",
         "bank", "he", "she", "works", "as", "waitress", "nurse", "man", "woman", "hello",
         "world", "bert", "fine", "tune", "The", "A", "Hello", "Bank", "café", "##ed",
         "##ing", "##ly", "##er", "##ness", "##n't"]
VOCAB = SPECIAL + PUNCT + DIGITS + LETTERS + ["##" + c for c in LETTERS] + WORDS
V = len(VOCAB)
assert len(set(VOCAB)) == V


def config(arch, num_labels=0, dtype="float32", extra=None):
    cfg = {
        "architectures": [arch],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": C,
        "initializer_range": 0.02,
        "intermediate_size": I,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": P,
        "model_type": "bert",
        "num_attention_heads": NH,
        "num_hidden_layers": L,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": dtype,
        "transformers_version": "4.40.0",
        "type_vocab_size": TT,
        "use_cache": True,
        "vocab_size": V,
    }
    if num_labels:
        names = ["negative", "neutral", "positive"][:num_labels]
        cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
        cfg["label2id"] = {n: i for i, n in enumerate(names)}
    if extra:
        cfg.update(extra)
    return cfg


def encoder(ln_w="weight", ln_b="bias"):
    """Random encoder tensors, names without the "bert." prefix."""
    t = {}

    def lin(name, out_f, in_f):
        t[name + ".weight"] = torch.randn(out_f, in_f) * 0.2
        t[name + ".bias"] = torch.randn(out_f) * 0.1

    def ln(name):
        t[name + "." + ln_w] = 1.0 + torch.randn(C) * 0.1
        t[name + "." + ln_b] = torch.randn(C) * 0.1

    t["embeddings.word_embeddings.weight"] = torch.randn(V, C) * 0.5
    t["embeddings.position_embeddings.weight"] = torch.randn(P, C) * 0.2
    t["embeddings.token_type_embeddings.weight"] = torch.randn(TT, C) * 0.2
    ln("embeddings.LayerNorm")
    for l in range(L):
        p = "encoder.layer.%d." % l
        lin(p + "attention.self.query", C, C)
        lin(p + "attention.self.key", C, C)
        lin(p + "attention.self.value", C, C)
        lin(p + "attention.output.dense", C, C)
        ln(p + "attention.output.LayerNorm")
        lin(p + "intermediate.dense", I, C)
        lin(p + "output.dense", C, I)
        ln(p + "output.LayerNorm")
    return t


def pooler(t):
    t["pooler.dense.weight"] = torch.randn(C, C) * 0.2
    t["pooler.dense.bias"] = torch.randn(C) * 0.1


def mlm_head(ln_w="weight", ln_b="bias"):
    return {
        "cls.predictions.transform.dense.weight": torch.randn(C, C) * 0.2,
        "cls.predictions.transform.dense.bias": torch.randn(C) * 0.1,
        "cls.predictions.transform.LayerNorm." + ln_w: 1.0 + torch.randn(C) * 0.1,
        "cls.predictions.transform.LayerNorm." + ln_b: torch.randn(C) * 0.1,
        "cls.predictions.bias": torch.randn(V) * 0.1,
    }


DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64"}


def tensor_bytes(x):
    x = x.contiguous()
    if x.dtype == torch.bfloat16:
        x = x.view(torch.int16)
    b = x.numpy().tobytes()
    assert sys.byteorder == "little"
    return b


def write_safetensors(path, tensors, dtype=torch.float32):
    """tensors: name -> tensor (float tensors converted to dtype, int64 kept)."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        x = tensors[name]
        if x.is_floating_point():
            x = x.to(dtype)
        b = tensor_bytes(x)
        header[name] = {"dtype": DTYPES[x.dtype], "shape": list(x.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_dir(name, cfg, tensors, tok_cfg, dtype=torch.float32):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(tok + "\n" for tok in VOCAB))
    write_safetensors(os.path.join(d, "model.safetensors"), tensors, dtype)


def prefixed(enc):
    return {"bert." + k: v for k, v in enc.items()}


def main():
    torch.manual_seed(20240611)
    uncased = {"do_lower_case": True, "model_max_length": 512, "tokenizer_class": "BertTokenizer",
               "strip_accents": None, "tokenize_chinese_chars": True}

    # tiny: sequence classification, F32, and the same weights in F16 / BF16.
    enc = encoder()
    pooler(enc)
    tiny = prefixed(enc)
    tiny["classifier.weight"] = torch.randn(3, C) * 0.2
    tiny["classifier.bias"] = torch.randn(3) * 0.1
    cfg = config("BertForSequenceClassification", num_labels=3)
    write_dir("tiny", cfg, tiny, uncased)
    write_dir("tiny_f16", config("BertForSequenceClassification", 3, "float16"), tiny, uncased,
              torch.float16)
    write_dir("tiny_bf16", config("BertForSequenceClassification", 3, "bfloat16"), tiny, uncased,
              torch.bfloat16)
    write_dir("tiny_noprefix", config("BertModel"), dict(enc), uncased)

    # tiny_legacy: bert-base-cased layout.
    enc = encoder("gamma", "beta")
    pooler(enc)
    legacy = prefixed(enc)
    legacy.update(mlm_head("gamma", "beta"))
    legacy["cls.seq_relationship.weight"] = torch.randn(2, C) * 0.2
    legacy["cls.seq_relationship.bias"] = torch.randn(2) * 0.1
    legacy["bert.embeddings.position_ids"] = torch.arange(P, dtype=torch.int64).unsqueeze(0)
    write_dir("tiny_legacy", config("BertForMaskedLM"), legacy,
              {"do_lower_case": False, "model_max_length": 512})

    # tiny_mlm: BertForMaskedLM, explicit tied decoder tensors, no pooler.
    enc = encoder()
    mlm = prefixed(enc)
    mlm.update(mlm_head())
    mlm["cls.predictions.decoder.weight"] = mlm["bert.embeddings.word_embeddings.weight"].clone()
    mlm["cls.predictions.decoder.bias"] = mlm["cls.predictions.bias"].clone()
    # HF writes int(1e30) as model_max_length for models without a limit.
    huge = {"do_lower_case": True, "model_max_length": 1000000000000000019884624838656,
            "strip_accents": None, "tokenize_chinese_chars": True,
            "tokenizer_class": "BertTokenizer", "clean_up_tokenization_spaces": True,
            "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]",
            "sep_token": "[SEP]", "unk_token": "[UNK]"}
    write_dir("tiny_mlm", config("BertForMaskedLM"), mlm, huge)
    print("wrote", ", ".join(sorted(os.listdir(ROOT))), "into", os.path.normpath(ROOT))


if __name__ == "__main__":
    main()
