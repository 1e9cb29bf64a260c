-- bft_cpu_int8: bft.cpu_precision = 'int8' (int8 classification through
-- oneDNN). Two expected outputs: expected/bft_cpu_int8.out where the server's
-- CPU runs int8 (AVX512-VNNI, AVX-VNNI or AMX, libdnnl2 installed, bft built
-- with libdnnl-dev): classification, batches and evaluation in int8 agree
-- with fp32; and expected/bft_cpu_int8_1.out elsewhere: every int8 use is a
-- clear 0A000 error naming what is missing. Training in int8 is refused
-- everywhere (0A000) before any work.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
CREATE FUNCTION try_int8(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    -- the detail names what this machine lacks: only whether it does is compared
    RETURN SQLSTATE || ': ' || SQLERRM || CASE
        WHEN detail ~ 'VNNI|oneDNN' THEN ' (the reason is given)' WHEN detail = '' THEN ''
        ELSE ' / ' || detail END;
END $$;
CREATE TABLE qdocs AS
  SELECT CASE WHEN i % 3 = 0 THEN 'alpha beta ' WHEN i % 3 = 1 THEN 'gamma delta '
              ELSE 'epsilon zeta ' END || i AS body,
         CASE WHEN i % 3 = 0 THEN 'a' WHEN i % 3 = 1 THEN 'g' ELSE 'e' END AS tag
  FROM generate_series(1, 60) i;
\set tiny '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}'
SELECT model, version, rows_used FROM bft_train('qdocs', 'body', 'tag', epochs => 6, mlm_epochs => 0,
       model => 'q_fp32', architecture => :'tiny', seed => 5, learning_rate => 3e-3);
CREATE TABLE q32 AS SELECT body, bft_predict_proba(body, 'q_fp32') AS p,
       bft_classify(body, 'q_fp32') AS label FROM qdocs;

SET bft.cpu_precision = 'int8';
SELECT device, available,
       CASE WHEN available THEN detail LIKE 'int8 classification (bft.cpu_precision), %'
            ELSE detail ~ 'VNNI|oneDNN' END AS detail_ok
  FROM bft_devices() WHERE device = 'cpu';
CREATE TABLE q8 (body text, p real[], label text);
SELECT try_int8($$INSERT INTO q8 SELECT body, bft_predict_proba(body, 'q_fp32'),
       bft_classify(body, 'q_fp32') FROM qdocs$$);
SELECT count(*) AS rows, max(abs(u.a - u.b)) < 0.05 AS within_int8_tolerance,
       bool_or(u.a <> u.b) AS quantised
  FROM q32 c JOIN q8 g USING (body), unnest(c.p, g.p) AS u(a, b);
SELECT count(*) AS rows, count(*) FILTER (WHERE c.label = g.label) >= 59 AS same_labels
  FROM q32 c JOIN q8 g USING (body);
SELECT try_int8($$SELECT * FROM bft_classify_batch(ARRAY['alpha beta 7', 'gamma delta 8'], 'q_fp32')$$);
SELECT try_int8($$SELECT * FROM bft_evaluate('q_fp32', 'qdocs', 'body', 'tag')$$);
-- training is fp32 or bf16 only
SELECT try_int8($$SELECT bft_train('qdocs', 'body', 'tag', epochs => 1, mlm_epochs => 0,
       model => 'q_int8', architecture => '$$ || :'tiny' || $$')$$);
SELECT name, version FROM bft.models WHERE name LIKE 'q\_%' ORDER BY name, version;
RESET bft.cpu_precision;

SELECT bft_classify('alpha beta 7', 'q_fp32') IN ('a', 'g', 'e') AS fp32_works;
SELECT bft_drop_model('q_fp32');
DROP TABLE qdocs, q32, q8;
DROP FUNCTION try_int8(text);
