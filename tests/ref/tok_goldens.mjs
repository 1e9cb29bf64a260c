// tok_goldens.mjs — tokenizer goldens for tests/engine/test_tokenizer.c.
//
// Regenerate (one command, from the repository root):
//   cd tests/ref && npm ci && node tok_goldens.mjs
//
// Reference: @huggingface/tokenizers (tokenizers.js, pinned in package.json)
// loading vocab/bert-base-{cased,uncased}-tokenizer.json of the shared data
// ($BFT_SHARED_DATA, default ../shared/data beside the repository).
// Inputs: every 6th tweet of topic_train.csv (shared data) plus an
// adversarial list written here (hand-picked cases + seeded random mixes).
// Output: tests/data/tok/goldens.jsonl, one JSON object per line:
//   t   the text (or b: the input bytes in hex, invalid UTF-8 included)
//   c   bert-base-cased ids of the pieces (without [CLS]/[SEP]; no truncation)
//   u   bert-base-uncased ids of the pieces
//   dc  cased decode(ids with [CLS]/[SEP], skip_special_tokens=true)  (some lines)
//   dcn cased decode(ids with [CLS]/[SEP], skip_special_tokens=false) (some lines)
//   du  uncased decode(..., skip_special_tokens=true)                  (some lines)
//   x   uncased vocab, strip_accents=false, tokenize_chinese_chars=false (adversarial lines)
//   y   cased vocab, strip_accents=true                                    (adversarial lines)
// The vocabularies themselves are not copied: the C test reads them from
// $BFT_SHARED_DATA/vocab/.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { parseCsv } from "./csv.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const shared = process.env.BFT_SHARED_DATA || path.resolve(root, "../shared/data");

function load(name, normalizerChanges = {}) {
  const json = JSON.parse(readFileSync(path.join(shared, "vocab", `${name}-tokenizer.json`), "utf8"));
  Object.assign(json.normalizer, normalizerChanges);
  return new Tokenizer(json, {});
}
const cased = load("bert-base-cased");
const uncased = load("bert-base-uncased");
// non-default BertNormalizer settings (tokenizer_config.json strip_accents /
// tokenize_chinese_chars): x = uncased vocab, lower-case without accent
// stripping and without CJK splitting; y = cased vocab with accent stripping.
const uncasedKeepAccents = load("bert-base-uncased", { strip_accents: false, handle_chinese_chars: false });
const casedStrip = load("bert-base-cased", { strip_accents: true });

const rows = parseCsv(readFileSync(path.join(shared, "topic_train.csv"), "utf8"));
const tweets = rows.slice(1).map((r) => r[0]);

const A = (n, s) => s.repeat(n);
const hand = [
  "", " ", "   \t  ", "\u0000", "\uFFFD", "a\uFFFDb", "\uE000 private use \uF8FF",
  // specials written in the text
  "[MASK]", "The [MASK] is red.", "x[MASK]y", "[mask]", "[Mask]", "[ MASK ]", "[CLS] [SEP] [PAD] [UNK] [MASK]",
  "[[MASK]]", "[MASK][MASK]", "[MA\u200BSK]", "[MA\u0000SK]", "[MASK", "MASK]", "[UNK]word", "word[SEP]",
  "[CLS]", "[SEP]", "[PAD]", "[UNK]", "\u0001[MASK]\u0002", " [MASK] ", "[MASK]\u00AD", "[mask] [MASK]",
  // emoji, ZWJ, skin tones, flags, tags
  "I \u2764\uFE0F NY \u{1F600}\u{1F602}\u{1F923}", "\u{1F468}\u200D\u{1F469}\u200D\u{1F467}\u200D\u{1F466} family",
  "\u{1F44D}\u{1F3FD} skin tone", "\u{1F979} holding back tears", "\u{1F1FA}\u{1F1F8}\u{1F1EC}\u{1F1E7}\u{1F1EF}\u{1F1F5} flags",
  "\u{1F3F4}\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F} scotland", "stocks\u{1F4C8}up\u{1F680}\u{1F680}", "#1\uFE0F\u20E3 keycap",
  "\u{1F9D1}\u200D\u{1F4BB}coder", "\u263A\uFE0E text style",
  // CJK
  "\u65E5\u672C\u8A9E\u306E\u30C6\u30AD\u30B9\u30C8", "\u4E2D\u6587\u5206\u8BCD\u6D4B\u8BD5", "\uD55C\uAD6D\uC5B4 \uD14D\uC2A4\uD2B8",
  "\u{20000}\u{20001} ext B", "\u{2F800} compat supplement", "\uF900\uF901 compat", "\u3400 ext A", "abc\u4E2Ddef",
  "\u30AB\u30BF\u30AB\u30CA\u30FC", "\uFF76\uFF80\uFF76\uFF85 halfwidth", "\u3002\u3001\uFF01 CJK punct",
  // Arabic / Hebrew / Devanagari / Thai / others
  "\u0645\u0631\u062D\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645", "\u05E9\u05DC\u05D5\u05DD \u05E2\u05D5\u05DC\u05DD",
  "\u0645\u064F\u062D\u064E\u0645\u0651\u064E\u062F", "\u200Fright-to-left mark\u200E", "\u0928\u092E\u0938\u094D\u0924\u0947 \u0926\u0941\u0928\u093F\u092F\u093E",
  "\u0E2A\u0E27\u0E31\u0E2A\u0E14\u0E35", "\u041F\u0440\u0438\u0432\u0435\u0442 \u043C\u0438\u0440", "Ti\u1EBFng Vi\u1EC7t",
  "\u0394\u03B7\u03BC\u03BF\u03BA\u03C1\u03B1\u03C4\u03AF\u03B1", "\u0531\u0562\u0563", "\u10D0\u10D1\u10D2", "\u0661\u0662\u0663 \u06F4\u06F5",
  // combining marks
  "e\u0301", "Cafe\u0301", "\u0301\u0302\u0303", "\u0301", "a\u20DD", "\u0300\u0300\u0300 \u0308", "o\u0308\u0304",
  "\u1100\u1161\u11A8", "\uD55C", "Z\u0351\u036B\u0343\u036A\u0302\u036B\u033D\u034F\u0334\u0319\u0324\u031E\u0349\u035A\u032F\u031E\u0320\u034DA\u036B\u0357\u0334\u0362\u0335\u031C\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030E\u0305\u035B\u0341\u0334\u033B\u0348\u034D\u0354\u0339O\u0342\u030C\u030C\u0358\u0328\u0335\u0339\u033B\u031D\u0333",
  // accents, case, ligatures
  "Caf\u00E9 na\u00EFve r\u00E9sum\u00E9 \u00C5ngstr\u00F6m \u00D8re Stra\u00DFe \u00C9COLE", "\u0130stanbul \u0131 I i", "\u039F\u0394\u039F\u03A3 \u03A3\u039F\u03A6\u039F\u03A3",
  "\u03A3\u0391\u03A3", "A.\u03A3 b", "\u1F48\u0394\u03A5\u03A3\u03A3\u0395\u038E\u03A3", "\u01C5 D\u017E \u01C4", "\uFB01 \uFB02 \uFB00 ligatures", "\u216B roman", "\u1E9E \u00DF",
  "\u01F0 \u0149", "\u2126 \u212A \u212B", "\u1FEF\u1FED\u0385 greek accents", "\u037E\u0387", "ABCdef GHI", "MiXeD CaSe WoRdS",
  // fullwidth
  "\uFF21\uFF22\uFF23\uFF11\uFF12\uFF13\uFF01\uFF1F", "\uFF04\uFF34\uFF33\uFF2C\uFF21", "\uFF08\uFF09\uFF3B\uFF3D",
  // zero-width, NBSP and other spaces
  "zero\u200Bwidth", "\u200C\u200D", "\uFEFFBOM", "100\u00A0USD", "\u2009thin\u2009space", "\u3000ideographic\u3000space",
  "line\u2028sep\u2029para", "narrow\u202Fnbsp", "\u1680ogham", "en\u2002em\u2003", "\u180Emongolian", "soft\u00ADhyphen", "word\u2060joiner",
  // control characters and tabs
  "\u0001\u0002ctrl", "a\u0007b", "del\u007F", "next\u0085line", "tab\there", "cr\r\nlf", "v\u000Bf\u000C", "\u001Bescape", "\t\t\t",
  "c1\u0080\u009F", "end\n",
  // very long words
  A(100, "a"), A(101, "a"), A(101, "\u00E9"), A(100, "\u00E9"), A(4, "supercalifragilisticexpialidocious"), A(60, "ab"), A(50, "\u4E2D"),
  A(99, "x") + "\u0301", A(100, "x") + "\u0301", "pneumonoultramicroscopicsilicovolcanoconiosis", A(30, "\u{1F600}"),
  // URLs, mail, tickers, hashtags, mentions
  "https://t.co/AbC123xyz", "http://www.example.com/path?q=1&r=2#frag", "user@example.com", "$TSLA $AAPL $BRK.B", "$SPX +1.5%",
  "#hashtag ##double ###", "@elonmusk RT @user:", "bit.ly/3xYz", "www.\u00FCber.de", "\u20AC5bn \u00A3300m \u00A53 \u20B9100 \u20BF0.5",
  // numbers with separators
  "1,234,567.89", "1.000.000,00", "1 000 000", "3\u00BD", "x\u00B2\u00B3", "10e-5", "-3.5%", "1/2", "2023-01-05T10:00:00Z", "0.000001",
  "\u0663\u0664\u0665", "1\u2009000", "\u2460\u2461", "\uFF11\uFF10\uFF10",
  // HTML entities and tags
  "&amp; &lt;b&gt; &#39; &nbsp; &quot;", "<b>bold</b><br/>", "AT&amp;T", "&#x1F600;",
  // punctuation and symbols
  "\u201Cquotes\u201D \u2018single\u2019 \u2014 \u2013 \u2026 \u00AB\u00BB \u00BF\u00A1", "\u2211\u222B\u221A\u221E", "\u2665\u2666", "\u00B0C",
  "don't won't I'm it's we've they're", "Hello , world ! How are you ?", "a-b_c~d|e^f`g", "\u00A7\u00B6\u2020\u2021", "\u3010title\u3011",
  "\u2022 bullet", "\u00B7 middle dot", "\u061F\u060C", "\u0964\u0965", "\u0589\u055D", "\u2E18", "\u00A9\u00AE\u2122",
];

// Seeded random mixes of characters from many classes.
let seed = 12345;
const rnd = (n) => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return (seed >>> 8) % n;
};
const pool = [
  "a", "b", "e", "z", "A", "Z", "Q", "0", "7", " ", " ", " ", "  ", "\t", "\n", ".", ",", "!", "'", "#", "$", "-", "_", "&", "[", "]",
  "[MASK]", "[SEP]", "[mask]", "MASK", "##", "\u00E9", "\u00C9", "\u00DF", "\u0130", "\u03A3", "\u03C3", "\u0301", "\u0308", "\u20DD",
  "\u4E2D", "\u65E5", "\u3042", "\uD55C", "\u{20000}", "\u{1F600}", "\u{1F1FA}", "\u200D", "\u200B", "\u00A0", "\u3000", "\u2028",
  "\u0001", "\u007F", "\u0085", "\uFEFF", "\uE000", "\uFFFD", "\u00AD", "\u2019", "\u201C", "\u2014", "\uFF01", "\uFF21", "\uFB01",
  "\u0645", "\u05E9", "\u0928", "\u094D", "\u0E2A", "\u0E31", "\u00BD", "\u00B2", "\u20AC", "\u2665", "the", "ing", "un", "##ing",
  "Tesla", "stock", "http://x.co/a", "1,000", "\u1FEF", "\u0345", "\u1E9E", "\u2126",
];
const rand = [];
for (let k = 0; k < 400; k++) {
  let s = "";
  const n = 1 + rnd(24);
  for (let j = 0; j < n; j++) s += pool[rnd(pool.length)];
  rand.push(s);
}
// Random single code points from the BMP and beyond (assigned in old Unicode
// versions, so both ICUs agree), a few per line.
const cpRanges = [[0x20, 0x7E], [0xA0, 0x24F], [0x370, 0x52F], [0x590, 0x6FF], [0x900, 0x97F], [0x1E00, 0x1FFF],
  [0x2000, 0x2BFF], [0x3000, 0x33FF], [0x4E00, 0x4FFF], [0xAC00, 0xAD00], [0xFB00, 0xFFEF], [0x1F300, 0x1F64F]];
for (let k = 0; k < 200; k++) {
  let s = "";
  const n = 1 + rnd(12);
  for (let j = 0; j < n; j++) {
    const [lo, hi] = cpRanges[rnd(cpRanges.length)];
    s += String.fromCodePoint(lo + rnd(hi - lo + 1));
    if (rnd(4) === 0) s += " ";
  }
  rand.push(s);
}

const sample = tweets.filter((_, i) => i % 6 === 0);
const inputs = [...hand, ...rand, ...sample];

// Byte strings with invalid UTF-8, decoded the way a UTF-8 reader does
// (WHATWG TextDecoder: each maximal invalid subsequence → U+FFFD).
const badBytes = [[0xFF], [0xC3], [0xC0, 0xAF], [0xE0, 0x80, 0xAF], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80],
  [0xF8, 0x88, 0x80, 0x80, 0x80], [0x80], [0xBF, 0x80], [0xE2, 0x82], [0xF0, 0x9F, 0x98], [0xFE], [0xC1, 0xBF]];
const goodBits = ["a", "Tesla", " ", "[MASK]", "[MA", "SK]", "\u00E9", "e\u0301", "\u4E2D", "\u{1F600}", "$", ".", "\u00C9", "I"];
const byteInputs = [];
for (let k = 0; k < 120; k++) {
  const parts = [];
  const n = 1 + rnd(8);
  for (let j = 0; j < n; j++) {
    if (rnd(2)) parts.push(...badBytes[rnd(badBytes.length)]);
    else parts.push(...Buffer.from(goodBits[rnd(goodBits.length)], "utf8"));
  }
  byteInputs.push(Uint8Array.from(parts));
}
const dec = new TextDecoder("utf-8", { fatal: false });

const strip = (ids) => ids.slice(1, -1);
const lines = [];
inputs.forEach((t, i) => {
  const ec = cased.encode(t).ids;
  const eu = uncased.encode(t).ids;
  const rec = { t, c: strip(ec), u: strip(eu) };
  const adversarial = i < hand.length + rand.length;
  if (adversarial) {
    rec.x = strip(uncasedKeepAccents.encode(t).ids);
    rec.y = strip(casedStrip.encode(t).ids);
  }
  if (adversarial || i % 3 === 0) {
    rec.dc = cased.decode(ec, { skip_special_tokens: true });
    rec.du = uncased.decode(eu, { skip_special_tokens: true });
    if (adversarial) rec.dcn = cased.decode(ec, { skip_special_tokens: false });
  }
  lines.push(JSON.stringify(rec));
});
for (const b of byteInputs) {
  const t = dec.decode(b);
  lines.push(JSON.stringify({ b: Buffer.from(b).toString("hex"), c: strip(cased.encode(t).ids), u: strip(uncased.encode(t).ids) }));
}
const outDir = path.join(root, "tests", "data", "tok");
mkdirSync(outDir, { recursive: true });
writeFileSync(path.join(outDir, "goldens.jsonl"), lines.join("\n") + "\n");
console.log(`wrote ${lines.length} goldens (${hand.length} hand-written, ${rand.length} random, ${sample.length} tweets, ${byteInputs.length} invalid UTF-8) to tests/data/tok/goldens.jsonl`);
