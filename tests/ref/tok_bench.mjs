// tok_bench.mjs — the reference side of tests/bench/bench_tokenizer.sh.
//   node tok_bench.mjs csv2lines CSV OUT        text column → one text per line
//   node tok_bench.mjs encode TOKENIZER_JSON LINES OUT
// encode prints "tokens=N lines=L encode_s=S total_s=T" (S: the encode loop
// only; T: the whole run incl. loading and writing) and writes the ids of each
// line ([CLS] ... [SEP], space-separated) to OUT.
import { readFileSync, writeFileSync } from "node:fs";
import { Tokenizer } from "@huggingface/tokenizers";
import { parseCsv } from "./csv.mjs";

const t0 = process.hrtime.bigint();
const [cmd, a, b, c] = process.argv.slice(2);
if (cmd === "csv2lines") {
  const rows = parseCsv(readFileSync(a, "utf8")).slice(1);
  // one text per line: line breaks inside a text become spaces (whitespace either way)
  writeFileSync(b, rows.map((r) => r[0].replace(/[\r\n]/g, " ")).join("\n") + "\n");
} else if (cmd === "encode") {
  const tok = new Tokenizer(JSON.parse(readFileSync(a, "utf8")), {});
  const lines = readFileSync(b, "utf8").split("\n");
  if (lines.at(-1) === "") lines.pop();
  const out = new Array(lines.length);
  let tokens = 0;
  const e0 = process.hrtime.bigint();
  for (let i = 0; i < lines.length; i++) {
    const ids = tok.encode(lines[i]).ids;
    tokens += ids.length;
    out[i] = ids;
  }
  const e1 = process.hrtime.bigint();
  writeFileSync(c, out.map((ids) => ids.join(" ")).join("\n") + "\n");
  const t1 = process.hrtime.bigint();
  console.log(`tokens=${tokens} lines=${lines.length} encode_s=${Number(e1 - e0) / 1e9} total_s=${Number(t1 - t0) / 1e9}`);
} else {
  console.error("usage: node tok_bench.mjs csv2lines CSV OUT | encode TOKENIZER_JSON LINES OUT");
  process.exit(2);
}
