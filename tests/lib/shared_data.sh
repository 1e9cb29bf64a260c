# Shared data: the data sets some tests and benchmarks read that the repository
# does not hold (topic_train.csv, the Twitter Financial News Topic training
# split; vocab/bert-base-{cased,uncased}-vocab.txt and -tokenizer.json).
#
#   BFT_SHARED_DATA   the directory holding them; default ../shared/data
#                     beside the repository root.
#
#   source tests/lib/shared_data.sh      (from the repository root; sets BFT_SHARED_DATA)
#   shared_data_need WHAT FILE...        (FILE relative to $BFT_SHARED_DATA)
# shared_data_need prints "skip - WHAT: ..." and exits 0 when a file is absent
# (exit 1 instead under CI=true, where the data must be present).
BFT_SHARED_DATA="${BFT_SHARED_DATA:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/../shared/data}"
export BFT_SHARED_DATA

shared_data_need() {
    local what="$1" f; shift
    for f in "$@"; do
        if [ ! -r "$BFT_SHARED_DATA/$f" ]; then
            echo "skip - $what: $BFT_SHARED_DATA/$f not found (set BFT_SHARED_DATA to the directory holding topic_train.csv and vocab/)"
            [ "${CI:-}" = true ] && exit 1
            exit 0
        fi
    done
}
