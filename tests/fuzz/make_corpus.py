#!/usr/bin/python3
"""Seed corpora for the libFuzzer targets (committed; regenerate with
`/usr/bin/python3 tests/fuzz/make_corpus.py` from the repository root).

fuzz_safetensors: model.safetensors files for the built-in tiny config of
fuzz_safetensors.c (V=8, C=4, L=1, I=8, P=8, Tt=2, 2 labels) in several
namings and dtypes, plus small edge cases. fuzz_config: config.json and
tokenizer_config.json variants.
"""
import io
import json
import os
import random
import struct
import zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
V, C, L, I, P, TT = 8, 4, 1, 8, 8, 2


def f16(x):
    return struct.pack("<e", x)


def bf16(x):
    b = struct.pack("<f", x)
    return b[2:4]  # truncation is fine for seeds


def st(tensors, pad=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, blobs, off = {}, [], 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def model(prefix="bert.", ln=("weight", "bias"), dtype="F32", classifier=True, pooler=True, mlm=False,
          extras=False):
    rnd = random.Random(7)
    enc = [("embeddings.word_embeddings.weight", [V, C]), ("embeddings.position_embeddings.weight", [P, C]),
           ("embeddings.token_type_embeddings.weight", [TT, C]), ("embeddings.LayerNorm." + ln[0], [C]),
           ("embeddings.LayerNorm." + ln[1], [C])]
    for l in range(L):
        p = "encoder.layer.%d." % l
        for n in ("query", "key", "value"):
            enc += [(p + "attention.self.%s.weight" % n, [C, C]), (p + "attention.self.%s.bias" % n, [C])]
        enc += [(p + "attention.output.dense.weight", [C, C]), (p + "attention.output.dense.bias", [C]),
                (p + "attention.output.LayerNorm." + ln[0], [C]), (p + "attention.output.LayerNorm." + ln[1], [C]),
                (p + "intermediate.dense.weight", [I, C]), (p + "intermediate.dense.bias", [I]),
                (p + "output.dense.weight", [C, I]), (p + "output.dense.bias", [C]),
                (p + "output.LayerNorm." + ln[0], [C]), (p + "output.LayerNorm." + ln[1], [C])]
    if pooler:
        enc += [("pooler.dense.weight", [C, C]), ("pooler.dense.bias", [C])]
    names = [(prefix + n, s) for n, s in enc]
    if classifier:
        names += [("classifier.weight", [2, C]), ("classifier.bias", [2])]
    if mlm:
        names += [("cls.predictions.transform.dense.weight", [C, C]),
                  ("cls.predictions.transform.dense.bias", [C]),
                  ("cls.predictions.transform.LayerNorm." + ln[0], [C]),
                  ("cls.predictions.transform.LayerNorm." + ln[1], [C]), ("cls.predictions.bias", [V])]
    out = []
    for n, s in names:
        k = 1
        for d in s:
            k *= d
        vals = [rnd.uniform(-1, 1) for _ in range(k)]
        if dtype == "F32":
            data = b"".join(struct.pack("<f", v) for v in vals)
        elif dtype == "F16":
            data = b"".join(f16(v) for v in vals)
        else:
            data = b"".join(bf16(v) for v in vals)
        out.append((n, dtype, s, data))
    if extras:
        out.append(("bert.embeddings.position_ids", "I64", [1, P], b"".join(struct.pack("<q", i) for i in range(P))))
        out.append(("cls.seq_relationship.weight", "F32", [2, C], b"\0" * 4 * 2 * C))
        out.append(("cls.seq_relationship.bias", "F32", [2], b"\0" * 8))
    return out


def pickle_256():
    """A state-dict pickle (protocol 2, by hand) whose storages "0".."3" hold
    256 bytes each: F32 (8, 8), F16 transposed view, BF16 slice, I64."""
    def u(s):
        return b"X" + struct.pack("<I", len(s)) + s.encode()

    def tensor(key, cls, numel, size, stride, offset=0):
        t = lambda xs: b"(" + b"".join(b"K" + bytes([x]) for x in xs) + b"t"
        return (b"ctorch._utils\n_rebuild_tensor_v2\n(" + b"(" + u("storage") + b"ctorch\n" + cls.encode()
                + b"\n" + u(key) + u("cpu") + b"M" + struct.pack("<H", numel) + b"tQ" + b"K" + bytes([offset])
                + t(size) + t(stride) + b"\x89ccollections\nOrderedDict\n)RtR")
    body = (u("f32") + tensor("0", "FloatStorage", 64, (8, 8), (8, 1))
            + u("f16_t") + tensor("1", "HalfStorage", 128, (16, 8), (1, 16))
            + u("bf16_slice") + tensor("2", "BFloat16Storage", 128, (4, 3), (16, 2), 5)
            + u("i64") + tensor("3", "LongStorage", 32, (32,), (1,))
            + u("f32_again") + tensor("0", "FloatStorage", 64, (64,), (1,)))
    return b"\x80\x02ccollections\nOrderedDict\n)R(" + body + b"u."


PICKLE_256 = pickle_256()


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def main():
    t = "fuzz_safetensors"
    write(t, "tiny_f32", st(model()))
    write(t, "tiny_f32_sorted_unpadded", st(sorted(model()), pad=False))
    write(t, "legacy_f16", st(model(ln=("gamma", "beta"), dtype="F16", classifier=False, mlm=True, extras=True)))
    write(t, "noprefix_bf16", st(model(prefix="", dtype="BF16", classifier=False)))
    write(t, "mlm_nopooler", st(model(classifier=False, pooler=False, mlm=True)))
    write(t, "empty", st([]))
    write(t, "one_i8", st([("x", "I8", [2, 3], bytes(range(6)))]))
    write(t, "scalar_and_empty", st([("s", "F32", [], b"\0\0\x80\x3f"), ("e", "F16", [0, 5], b"")]))

    t = "fuzz_config"
    ck = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "ckpt")
    for name in ("tiny", "tiny_legacy", "tiny_mlm"):
        for f in ("config.json", "tokenizer_config.json"):
            with open(os.path.join(ck, name, f), "rb") as fp:
                write(t, name + "_" + f, fp.read())
    # tokenizer.json as transformers writes it (tests/hf/make_test_files.py)
    hf = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "hf", "tokenizer")
    for case in ("uncased", "cased"):
        with open(os.path.join(hf, case, "tokenizer.json"), "rb") as fp:
            write(t, "tokenizer_json_" + case, fp.read())
    write(t, "bert_base_cased.json", json.dumps({
        "architectures": ["BertForMaskedLM"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
        "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
        "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 28996}))
    write(t, "labels_default_label2id.json", json.dumps({
        "vocab_size": 100, "hidden_size": 32, "num_attention_heads": 4, "classifier_dropout": 0.3,
        "id2label": {"0": "neg", "1": "pos", "2": "mid"}, "label2id": {"LABEL_0": 0, "LABEL_1": 1, "LABEL_2": 2}}))
    write(t, "num_labels.json", '{"num_labels": 5, "_num_labels": 5, "hidden_size": 64.0, "num_attention_heads": 8,'
                                ' "layer_norm_eps": 1e-7, "problem_type": "single_label_classification"}')
    write(t, "huge_ints.json", '{"model_max_length": 1000000000000000019884624838656, "vocab_size": 18446744073709551615,'
                               ' "strip_accents": true, "do_lower_case": false}')
    write(t, "nan.json", '{"layer_norm_eps": NaN, "hidden_dropout_prob": -Infinity}')
    write(t, "escapes.json", '{"id2label": {"0": "a\\"b\\\\c\\u00e9\\n", "1": "\\ud83d\\ude00"}, "label2id": {"a\\"b\\\\c\\u00e9\\n": 0, "\\ud83d\\ude00": 1}}')
    # fuzz_ptbin: the torch.save files of tests/data/hf/bin (written by torch,
    # tests/hf/make_test_files.py) and their pickles alone; pickle_256 names
    # storages "0".."3" of 256 bytes, the members fuzz_ptbin adds around a pickle
    t = "fuzz_ptbin"
    bindir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "hf", "bin")
    for name in sorted(os.listdir(bindir)):
        if name.endswith(".bin"):
            with open(os.path.join(bindir, name), "rb") as fp:
                data = fp.read()
            write(t, name, data)
            if data[:4] == b"PK\x03\x04":
                with zipfile.ZipFile(io.BytesIO(data)) as z:
                    pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
                    write(t, name[:-4] + ".pkl", z.read(pkl))
    write(t, "pickle_256.pkl", PICKLE_256)
    print("wrote", ROOT)


if __name__ == "__main__":
    main()
