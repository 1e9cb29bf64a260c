#!/usr/bin/env python3
"""tok_bench.py — the reference side of tests/bench/bench_tokenizer.sh.

    python tests/hf/tok_bench.py csv2lines CSV OUT
        the text column, one text per line (line breaks inside a text become spaces)
    python tests/hf/tok_bench.py encode TOKENIZER_JSON LINES OUT
        Hugging Face tokenizers (Rust) encode_batch over all lines; prints
        "tokens=N lines=L threads=T encode_s=S total_s=W" (S: encode_batch only; W: the whole
        process from its first line, loading and writing included) and writes the ids of
        each line ([CLS] ... [SEP], space-separated) to OUT.
Threads: the library's own pool (RAYON_NUM_THREADS, all cores by default);
TOKENIZERS_PARALLELISM=false makes encode_batch single-threaded.
"""
import time

T0 = time.perf_counter()

import csv  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "csv2lines":
        with open(sys.argv[2], newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
        with open(sys.argv[3], "w", encoding="utf-8", newline="\n") as f:
            f.write("".join(r[0].replace("\r", " ").replace("\n", " ") + "\n" for r in rows))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "encode":
        tok = Tokenizer.from_file(sys.argv[2])
        tok.no_truncation()
        tok.no_padding()
        with open(sys.argv[3], encoding="utf-8", newline="\n") as f:
            lines = f.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        e0 = time.perf_counter()
        enc = tok.encode_batch(lines)
        e1 = time.perf_counter()
        tokens = sum(len(e.ids) for e in enc)
        with open(sys.argv[4], "w", encoding="utf-8") as f:
            f.write("".join(" ".join(map(str, e.ids)) + "\n" for e in enc))
        par = os.environ.get("TOKENIZERS_PARALLELISM", "").lower() not in ("false", "0", "off", "no")
        threads = int(os.environ.get("RAYON_NUM_THREADS") or os.cpu_count()) if par else 1
        print(f"tokens={tokens} lines={len(lines)} threads={threads} encode_s={e1 - e0:.6f} "
              f"total_s={time.perf_counter() - T0:.6f}")
        return
    sys.exit("usage: tok_bench.py csv2lines CSV OUT | encode TOKENIZER_JSON LINES OUT")


if __name__ == "__main__":
    main()
