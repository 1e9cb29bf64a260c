#!/usr/bin/python3
"""PyTorch reference for the engine's BERT math; writes the goldens the C test
tests/engine/test_bert.c checks.

Regenerate (from the repository root, Debian's torch; no transformers needed):

    /usr/bin/python3 tests/ref/bert_ref.py [NAME ...]   (default: all goldens)

It reads the tiny checkpoints in tests/data/ckpt/ (made by
tests/ref/make_checkpoints.py; safetensors parsed by hand, F32/F16/BF16) and
writes tests/data/golden/<name>.bin. Deterministic (torch.manual_seed).

The model below is a line-by-line functional transcription of Hugging Face
transformers' modeling_bert.py (BertEmbeddings, BertSelfAttention with the
extended attention mask (1 - mask) * finfo.min, BertSelfOutput, BertIntermediate
with exact erf GELU, BertOutput, BertPooler, BertForSequenceClassification's
dropout + classifier + CrossEntropyLoss, BertLMPredictionHead with the decoder
tied to the word embeddings), in float64 so the goldens are the exact values
the fp32 engine approximates. Training reproduces the HF Trainer update:
torch.optim.AdamW with two parameter groups (no weight decay on biases and
LayerNorm weights), get_linear_schedule_with_warmup (LambdaLR, stepped after
the optimizer), torch.nn.utils.clip_grad_norm_.

Golden file format (little-endian): b"BFTGOLD1", int32 record count, then per
record: name (96 bytes, NUL padded), int32 type (0 float32, 1 int32),
int32 ndim, int64 dims[4], then the data.
"""
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")
CKPT = os.path.join(ROOT, "ckpt")
GOLD = os.path.join(ROOT, "golden")
DT = torch.float64


# ---------------------------------------------------------------- checkpoints

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    data = raw[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        buf = bytearray(data[a:b])
        shape = info["shape"]
        dt = info["dtype"]
        if dt == "F32":
            t = torch.frombuffer(buf, dtype=torch.float32).clone()
        elif dt == "F16":
            t = torch.frombuffer(buf, dtype=torch.float16).clone()
        elif dt == "BF16":
            t = torch.frombuffer(buf, dtype=torch.bfloat16).clone()
        elif dt == "I64":
            t = torch.frombuffer(buf, dtype=torch.int64).clone()
        else:
            raise ValueError("dtype " + dt)
        out[name] = t.reshape(shape)
    return out


def canonical(name):
    """HF name -> the engine's layout name (no bert. prefix, weight/bias)."""
    if name.startswith("bert."):
        name = name[5:]
    if "LayerNorm" in name:
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
    return name


def load(name):
    d = os.path.join(CKPT, name)
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    raw = read_safetensors(os.path.join(d, "model.safetensors"))
    W = {}
    for k, v in raw.items():
        if v.dtype == torch.int64:
            continue
        W[canonical(k)] = v.to(DT)
    return cfg, W


def layout_names(cfg, pooler, classifier, mlm):
    """The engine's tensor order (src/engine/params.c bft_params_tensors)."""
    n = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
         "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
         "embeddings.LayerNorm.bias"]
    for l in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % l
        for q in ("query", "key", "value"):
            n += [p + "attention.self.%s.weight" % q, p + "attention.self.%s.bias" % q]
        n += [p + "attention.output.dense.weight", p + "attention.output.dense.bias",
              p + "attention.output.LayerNorm.weight", p + "attention.output.LayerNorm.bias",
              p + "intermediate.dense.weight", p + "intermediate.dense.bias",
              p + "output.dense.weight", p + "output.dense.bias",
              p + "output.LayerNorm.weight", p + "output.LayerNorm.bias"]
    if pooler:
        n += ["pooler.dense.weight", "pooler.dense.bias"]
    if classifier:
        n += ["classifier.weight", "classifier.bias"]
    if mlm:
        n += ["cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
              "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
              "cls.predictions.bias"]
    return n


# ---------------------------------------------------------------- the model (modeling_bert.py)

def encoder(W, cfg, ids, mask):
    B, T = ids.shape
    C, NH = cfg["hidden_size"], cfg["num_attention_heads"]
    hs = C // NH
    eps = cfg["layer_norm_eps"]
    # BertEmbeddings (nn.Embedding(padding_idx=pad_token_id): no gradient to that row)
    inputs_embeds = F.embedding(ids, W["embeddings.word_embeddings.weight"],
                                padding_idx=cfg.get("pad_token_id", 0))
    token_type_ids = torch.zeros_like(ids)
    emb = inputs_embeds + F.embedding(token_type_ids, W["embeddings.token_type_embeddings.weight"])
    pos = torch.arange(T).unsqueeze(0).expand(B, T)
    emb = emb + F.embedding(pos, W["embeddings.position_embeddings.weight"])
    x = F.layer_norm(emb, (C,), W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)
    # get_extended_attention_mask
    ext = (1.0 - mask[:, None, None, :].to(DT)) * torch.finfo(DT).min

    def heads(t):
        return t.view(B, T, NH, hs).permute(0, 2, 1, 3)

    for l in range(cfg["num_hidden_layers"]):
        p = "encoder.layer.%d." % l
        q = heads(F.linear(x, W[p + "attention.self.query.weight"], W[p + "attention.self.query.bias"]))
        k = heads(F.linear(x, W[p + "attention.self.key.weight"], W[p + "attention.self.key.bias"]))
        v = heads(F.linear(x, W[p + "attention.self.value.weight"], W[p + "attention.self.value.bias"]))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(hs) + ext
        probs = F.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous().view(B, T, C)
        a = F.linear(ctx, W[p + "attention.output.dense.weight"], W[p + "attention.output.dense.bias"])
        x1 = F.layer_norm(a + x, (C,), W[p + "attention.output.LayerNorm.weight"],
                          W[p + "attention.output.LayerNorm.bias"], eps)
        h = F.gelu(F.linear(x1, W[p + "intermediate.dense.weight"], W[p + "intermediate.dense.bias"]))
        o = F.linear(h, W[p + "output.dense.weight"], W[p + "output.dense.bias"])
        x = F.layer_norm(o + x1, (C,), W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps)
    return x


def classify(W, cfg, ids, mask, labels, class_weights=None):
    x = encoder(W, cfg, ids, mask)
    pooled = torch.tanh(F.linear(x[:, 0], W["pooler.dense.weight"], W["pooler.dense.bias"]))
    logits = F.linear(pooled, W["classifier.weight"], W["classifier.bias"])
    # CrossEntropyLoss(weight=w): sum_r w[y_r] loss_r / sum_r w[y_r]
    loss = F.cross_entropy(logits, labels, weight=class_weights)
    return logits, loss


def mlm_logits(W, cfg, ids, mask, rows):
    x = encoder(W, cfg, ids, mask)
    h = x.reshape(-1, x.shape[-1])[rows]
    h = F.gelu(F.linear(h, W["cls.predictions.transform.dense.weight"],
                        W["cls.predictions.transform.dense.bias"]))
    h = F.layer_norm(h, (h.shape[-1],), W["cls.predictions.transform.LayerNorm.weight"],
                     W["cls.predictions.transform.LayerNorm.bias"], cfg["layer_norm_eps"])
    return F.linear(h, W["embeddings.word_embeddings.weight"]) + W["cls.predictions.bias"]


# ---------------------------------------------------------------- golden writer

class Golden:
    def __init__(self):
        self.recs = []

    def add(self, name, t, kind=0):
        t = torch.as_tensor(t)
        t = t.to(torch.float32 if kind == 0 else torch.int32).contiguous()
        dims = list(t.shape) + [0] * (4 - t.dim())
        self.recs.append((name, kind, t.dim(), dims, t.numpy().tobytes()))

    def write(self, path):
        with open(path, "wb") as f:
            f.write(b"BFTGOLD1")
            f.write(struct.pack("<i", len(self.recs)))
            for name, kind, ndim, dims, data in self.recs:
                nb = name.encode()
                assert len(nb) < 96, name
                f.write(nb + b"\0" * (96 - len(nb)))
                f.write(struct.pack("<ii4q", kind, ndim, *dims))
                f.write(data)
        print("wrote %s (%d records, %d bytes)" % (path, len(self.recs), os.path.getsize(path)))


# ---------------------------------------------------------------- scenarios

LENS = [9, 16, 5, 12]
T = 16
CLS_ID, SEP_ID, PAD_ID, MASK_ID = 2, 3, 0, 4


def make_batch(V, gen):
    B = len(LENS)
    ids = torch.zeros(B, T, dtype=torch.int64)
    mask = torch.zeros(B, T, dtype=torch.int64)
    for b, n in enumerate(LENS):
        ids[b, 0] = CLS_ID
        ids[b, 1:n - 1] = torch.randint(5, V, (n - 2,), generator=gen)
        ids[b, n - 1] = SEP_ID
        mask[b, :n] = 1
    return ids, mask


def hf_linear_lambda(warmup, total):
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return f


def cls_golden(name, num_labels, fresh_head, seed, out=None, class_weights=None):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg, W0 = load(name)
    V, C = cfg["vocab_size"], cfg["hidden_size"]
    g = Golden()
    if fresh_head:
        # the C test installs exactly these values after bft_model_set_labels
        W0["classifier.weight"] = torch.randn(num_labels, C, generator=gen, dtype=DT) * 0.2
        W0["classifier.bias"] = torch.randn(num_labels, generator=gen, dtype=DT) * 0.1
        g.add("init/classifier.weight", W0["classifier.weight"])
        g.add("init/classifier.bias", W0["classifier.bias"])
    K = W0["classifier.weight"].shape[0]
    names = layout_names(cfg, True, True, False)
    W = {n: W0[n].clone().requires_grad_(True) for n in names}
    ids, mask = make_batch(V, gen)
    labels = torch.randint(0, K, (len(LENS),), generator=gen)
    cw = None
    if class_weights is not None:
        cw = torch.tensor(class_weights, dtype=DT)
        assert len(set(int(y) for y in labels)) >= 3, "weights must matter (labels %s)" % labels
        g.add("class_weights", cw)
    g.add("ids", ids, 1)
    g.add("lens", torch.tensor(LENS), 1)
    g.add("labels", labels, 1)

    logits, loss = classify(W, cfg, ids, mask, labels, cw)
    loss.backward()
    if cw is not None:
        plain = float(F.cross_entropy(logits.detach(), labels))
        assert abs(plain - float(loss.detach())) > 0.05, "weighted loss ~ plain %g" % plain
    g.add("logits", logits.detach())
    g.add("probs", F.softmax(logits.detach(), dim=-1))
    g.add("loss", loss.detach().reshape(1))
    for n in names:
        g.add("grad/" + n, W[n].grad)

    # 10 HF Trainer steps on the same batch: AdamW groups, warmup + linear decay, clipping
    lr, wd, ratio, max_norm, steps = 2e-3, 0.05, 0.25, 1.0, 10
    warmup = math.ceil(steps * ratio)
    decay = [W[n] for n in names if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [W[n] for n in names if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, hf_linear_lambda(warmup, steps))
    norms, lrs, losses = [], [], []
    for s in range(steps):
        opt.zero_grad(set_to_none=False)
        _, loss = classify(W, cfg, ids, mask, labels, cw)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_([W[n] for n in names], max_norm)
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        norms.append(float(norm))
        losses.append(float(loss))
    clipped = sum(1 for x in norms if x > max_norm)
    assert clipped >= 5, "clipping must trigger (norms %s)" % norms
    assert lrs[0] == 0.0 and warmup > 0
    g.add("train/hparams", torch.tensor([lr, wd, ratio, max_norm, steps], dtype=DT))
    g.add("train/grad_norms", torch.tensor(norms, dtype=DT))
    g.add("train/lrs", torch.tensor(lrs, dtype=DT))
    g.add("train/losses", torch.tensor(losses, dtype=DT))
    for n in names:
        g.add("param10/" + n, W[n].detach())
    print("%s: loss %.6f, grad norms %s, %d/%d steps clipped, lrs %s" %
          (name, losses[0], ["%.3f" % x for x in norms], clipped, steps, ["%.2e" % x for x in lrs]))
    g.write(os.path.join(GOLD, (out or name) + ".bin"))


def mlm_golden(name, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg, W0 = load(name)
    V = cfg["vocab_size"]
    names = layout_names(cfg, False, False, True)
    W = {n: W0[n].clone().requires_grad_(True) for n in names}
    ids, mask = make_batch(V, gen)
    rows, labels = [], []
    for b, n in enumerate(LENS):
        for t in (1, n // 2, n - 2):
            if t not in [r % T for r in rows if r // T == b]:
                rows.append(b * T + t)
                labels.append(int(ids[b, t]))
                ids[b, t] = MASK_ID
    rows_t = torch.tensor(rows)
    labels_t = torch.tensor(labels)
    g = Golden()
    g.add("ids", ids, 1)
    g.add("lens", torch.tensor(LENS), 1)
    g.add("rows", rows_t, 1)
    g.add("labels", labels_t, 1)
    logits = mlm_logits(W, cfg, ids, mask, rows_t)
    loss = F.cross_entropy(logits, labels_t)
    loss.backward()
    g.add("logits", logits.detach())
    g.add("probs", F.softmax(logits.detach(), dim=-1))
    g.add("loss", loss.detach().reshape(1))
    for n in names:
        g.add("grad/" + n, W[n].grad)
    print("%s: MLM loss %.6f over %d masked rows" % (name, float(loss), len(rows)))
    g.write(os.path.join(GOLD, name + ".bin"))


SCENARIOS = {
    # F16 storage, bert.-prefixed, own classifier
    "tiny_f16": lambda: cls_golden("tiny_f16", 3, False, 11),
    # gamma/beta names, fresh 4-class head
    "tiny_legacy": lambda: cls_golden("tiny_legacy", 4, True, 12),
    # MLM head (fill-mask logits + MLM gradients)
    "tiny_mlm": lambda: mlm_golden("tiny_mlm", 13),
    # weighted cross-entropy (class_weights): tiny_legacy's checkpoint, a fresh 4-class head
    "tiny_weighted": lambda: cls_golden("tiny_legacy", 4, True, 15, out="tiny_weighted",
                                        class_weights=[0.5, 3.0, 1.0, 2.0]),
}


def main():
    """Writes every golden, or only those named on the command line."""
    os.makedirs(GOLD, exist_ok=True)
    torch.set_num_threads(1)
    for name in sys.argv[1:] or list(SCENARIOS):
        SCENARIOS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
