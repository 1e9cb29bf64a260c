#!/usr/bin/env bash
# bft demo: installs what is missing (Debian 12), builds and installs bft,
# starts a throwaway PostgreSQL cluster, loads 150 financial headlines,
# trains a classifier with bft_train, classifies a new headline in a SELECT
# and lists the models. The cluster keeps running afterwards so you can
# explore it; the last lines say how to connect and how to stop it.
#
# Usage: bash tests/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

bash tests/install_deps.sh
make -s -j"$(nproc)"
$SUDO make -s install >/dev/null

source tests/scripts/cluster.sh
DEMO_DIR="${BFT_DEMO_DIR:-/tmp/bft-demo}"
DEMO_PORT="${BFT_DEMO_PORT:-54400}"
if [ -f "$DEMO_DIR/data/postmaster.pid" ]; then cluster_stop "$DEMO_DIR"; fi
rm -rf "$DEMO_DIR"
cluster_start "$DEMO_DIR" "$DEMO_PORT"

psql() { command psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -c "CREATE EXTENSION bft"
psql -f tests/demo/headlines.sql
echo
echo "== SELECT topic, count(*) FROM headlines GROUP BY topic;"
psql -c "SELECT topic, count(*) FROM headlines GROUP BY topic ORDER BY topic"
echo "== Training a small BERT from scratch on the table (no download needed) ..."
psql -c "SELECT model, version, rows_used, epochs, round(train_loss::numeric, 4) AS train_loss,
                round(samples_per_second::numeric, 1) AS samples_per_s, duration
         FROM bft_train('headlines', 'text', 'topic', epochs => 30, model => 'topics')"
echo "== Classifying new headlines in a SELECT"
psql -c "SELECT t AS text, bft_classify(t) AS topic
         FROM (VALUES ('Acme Corp announces new CEO'),
                      ('Globex shares fall 5% after weak guidance'),
                      ('Initech to buy Penetrode in \$2 billion deal')) AS v(t)"
psql -c "SELECT * FROM bft_predict('Acme Corp announces new CEO', top_k => 3)"
echo "== Models"
psql -c "SELECT * FROM bft.model_list"
cat <<MSG
The demo cluster is still running:
  connect:  psql -h $DEMO_DIR -p $DEMO_PORT -U postgres
  stop:     $( [ "$(id -u)" -eq 0 ] && echo "runuser -u postgres -- " )$PG_BINDIR/pg_ctl -D $DEMO_DIR/data stop
MSG
