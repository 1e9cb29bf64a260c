#!/usr/bin/env python3
"""Write the small test files under tests/data/hf/ with the real Hugging Face
libraries (transformers' tokenizers, torch.save), from the tiny checkpoints of
tests/data/ckpt. The output is committed; the C tests read it without Python.

Run from the repository root with the virtual environment of
tests/hf/requirements.txt:

    .venv/bin/python tests/hf/make_test_files.py

  tokenizer/uncased/   tokenizer.json + tokenizer_config.json that
                       AutoTokenizer.save_pretrained writes for tests/data/ckpt/tiny
                       (transformers 5 writes no vocab.txt)
  tokenizer/cased/     the same for tiny_legacy (cased: lowercase false)
  tiny_saved/          AutoModelForSequenceClassification + AutoTokenizer of
                       tests/data/ckpt/tiny, save_pretrained: what a Trainer
                       leaves (config.json, model.safetensors, tokenizer.json,
                       tokenizer_config.json; no vocab.txt)
  tiny_bin/            tests/data/ckpt/tiny as config.json, vocab.txt,
                       tokenizer_config.json and pytorch_model.bin (torch.save of
                       the state dict, zip format) - no model.safetensors
  bin/synth_zip.bin, bin/synth_legacy.bin
                       one state dict of every storage type, views (transposed,
                       sliced with an offset), two names for one tensor, a
                       scalar and an empty tensor, saved in the zip format and
                       in the legacy (torch < 1.6) format;
  bin/synth_zip64.bin  synth_zip.bin's members rewritten with ZIP64 records
  bin/synth_expected.safetensors
                       the same tensors written by safetensors.torch (dense):
                       what bft's reader must produce, tensor for tensor
  bin/synth_params.bin nn.Parameter values (torch._utils._rebuild_parameter)
  bin/nested.bin       {"model": {"w": tensor}}: not a flat state dict
  parity_input/        train.csv (40 rows, 3 classes) and eval.txt (8 texts) in
                       the words of the tiny vocabulary, the input of
                       tests/hf/trainer_parity.py's committed goldens
  bin/evil_*.bin       pickles that run code when Python unpickles them
                       (os.system / posix.system / builtins.eval via GLOBAL,
                       STACK_GLOBAL, REDUCE; INST): each creates the file
                       /tmp/bft-pickle-ran-<name> there; bft must refuse them
                       without running anything. evil_newobj.bin builds an
                       object with NEWOBJ (harmless class, refused opcode).
"""
import json
import os
import shutil
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CKPT = os.path.join(ROOT, "tests", "data", "ckpt")
OUT = os.path.join(ROOT, "tests", "data", "hf")


FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # zip members written here: the same bytes every run


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


def synth_dict():
    import collections
    import torch
    sd = collections.OrderedDict()
    sd["f32"] = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) * 0.5 + 1
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) - 5.25
    sd["f32_t"] = base.t()                 # non-contiguous view
    sd["f32_slice"] = base[1:, 1:3]        # storage offset and strides
    sd["f16"] = torch.arange(6, dtype=torch.float16) * 0.25
    sd["bf16"] = torch.arange(6, dtype=torch.bfloat16) - 2
    sd["f64"] = torch.arange(3, dtype=torch.float64) / 3
    sd["i64"] = torch.arange(5, dtype=torch.int64) * 1000000007
    sd["i32"] = torch.arange(4, dtype=torch.int32) - 2
    sd["i16"] = torch.arange(4, dtype=torch.int16) * 300
    sd["i8"] = torch.arange(4, dtype=torch.int8) - 100
    sd["u8"] = torch.arange(4, dtype=torch.uint8) + 250
    sd["bool"] = torch.tensor([True, False, True])
    sd["tied_a"] = torch.arange(8, dtype=torch.float32).reshape(2, 4) / 7
    sd["tied_b"] = sd["tied_a"]            # one storage, two names
    sd["scalar"] = torch.tensor(3.5)
    sd["empty"] = torch.zeros(0, 4)
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    return sd


# Pickles that run code when Python unpickles them; the C tests check that the
# marker file is never created.
class Ran:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def marker(name):
    return "touch /tmp/bft-pickle-ran-" + name


def zip_like_torch(path, pkl):
    """data.pkl in torch.save's zip layout, stored uncompressed."""
    import zipfile
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(zipfile.ZipInfo("archive/data.pkl", FIXED_TIME), pkl)
        z.writestr(zipfile.ZipInfo("archive/byteorder", FIXED_TIME), "little")
        z.writestr(zipfile.ZipInfo("archive/version", FIXED_TIME), "3\n")


def rezip64(src, dst):
    """The members of a torch.save zip rewritten with ZIP64 records (sizes,
    offsets and the end record), as torch writes files over 4 GB: zipfile's
    limits lowered so a small file gets them."""
    import zipfile
    saved = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 16, 2
    try:
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                zout.writestr(zipfile.ZipInfo(info.filename, FIXED_TIME), zin.read(info.filename))
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = saved
    with open(dst, "rb") as f:
        data = f.read()
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data, "no ZIP64 end record"


def bins():
    import os as _os
    import pickle
    import struct
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForSequenceClassification

    # a full model as pytorch_model.bin only
    src = os.path.join(CKPT, "tiny")
    out = fresh(os.path.join(OUT, "tiny_bin"))
    for f in ("config.json", "vocab.txt", "tokenizer_config.json"):
        shutil.copy(os.path.join(src, f), out)
    model = AutoModelForSequenceClassification.from_pretrained(src)
    torch.save(model.state_dict(), os.path.join(out, "pytorch_model.bin"))

    d = fresh(os.path.join(OUT, "bin"))
    sd = synth_dict()
    torch.save(sd, os.path.join(d, "synth_zip.bin"))
    torch.save(sd, os.path.join(d, "synth_legacy.bin"), _use_new_zipfile_serialization=False)
    rezip64(os.path.join(d, "synth_zip.bin"), os.path.join(d, "synth_zip64.bin"))
    dense = {k: v.contiguous().clone() for k, v in sd.items()}
    save_file(dense, os.path.join(d, "synth_expected.safetensors"))
    params = {"w": torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3)),
              "b": torch.nn.Parameter(torch.ones(3), requires_grad=False)}
    torch.save(params, os.path.join(d, "synth_params.bin"))
    torch.save({"model": {"w": torch.ones(2)}}, os.path.join(d, "nested.bin"))

    # evil pickles
    torch.save({"x": Ran(_os.system, marker("posix_system"))}, os.path.join(d, "evil_posix_system.bin"))
    torch.save({"x": Ran(eval, "__import__('os').system('%s')" % marker("builtins_eval"))},
               os.path.join(d, "evil_builtins_eval_legacy.bin"), _use_new_zipfile_serialization=False)
    zip_like_torch(os.path.join(d, "evil_stack_global.bin"),
                   pickle.dumps(Ran(_os.system, marker("stack_global")), protocol=4))
    text = marker("os_system").encode()
    zip_like_torch(os.path.join(d, "evil_os_system.bin"),
                   b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(text)) + text + b"\x85R.")
    text = marker("inst").encode()
    zip_like_torch(os.path.join(d, "evil_inst.bin"),
                   b"(X" + struct.pack("<I", len(text)) + text + b"ios\nsystem\n.")
    zip_like_torch(os.path.join(d, "evil_newobj.bin"), b"\x80\x02ccollections\nOrderedDict\n)\x81.")
    for f in sorted(os.listdir(d)):
        print("%s: %d bytes" % (os.path.join(d, f), os.path.getsize(os.path.join(d, f))))


def parity_input():
    import random
    rng = random.Random(11)
    up = ["up", "good", "great", "buy"]
    down = ["down", "bad", "sell"]
    neutral = ["the bank", "the company", "shares", "the price", "news"]
    subj = ["the stock", "the market", "shares", "the price", "the company", "bank"]
    out = fresh(os.path.join(OUT, "parity_input"))
    with open(os.path.join(out, "train.csv"), "w") as f:
        f.write("text,label\n")
        for i in range(40):
            k = rng.randrange(3)
            w = [rng.choice(subj), "is", rng.choice(down if k == 0 else neutral if k == 1 else up)]
            if rng.random() < 0.5:
                w += ["and", rng.choice(subj), "was", rng.choice(down if k == 0 else up if k == 2 else neutral)]
            if rng.random() < 0.3:
                w.append(rng.choice([".", "!", "today", "at the bank"]))
            f.write("\"%s\",%d\n" % (" ".join(w), k))
    with open(os.path.join(out, "eval.txt"), "w") as f:
        f.write("the stock is up today\nthe market was down .\nthe bank is the bank\nsell sell sell !\n"
                "Hello, the café works!\nshares of the company are great\nthe price is bad and down\n"
                "news at the bank\n")


def readable(top):
    """safetensors writes 0600 files: the server's OS user reads these in tests"""
    for d, _, names in os.walk(top):
        os.chmod(d, 0o755)
        for n in names:
            os.chmod(os.path.join(d, n), 0o644)


def main():
    tokenizers()
    saved()
    bins()
    parity_input()
    readable(OUT)


if __name__ == "__main__":
    sys.exit(main())
