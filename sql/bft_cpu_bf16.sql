-- bft_cpu_bf16: bft.cpu_precision = 'bf16' (bf16 products through oneDNN).
-- Two expected outputs: expected/bft_cpu_bf16.out where the server's CPU
-- runs bf16 (AVX512-BF16 or AMX, libdnnl2 installed, bft built with
-- libdnnl-dev): classification and training in bf16 agree with fp32 within
-- bf16 tolerance and the precision is recorded in the model's params; and
-- expected/bft_cpu_bf16_1.out elsewhere: every bf16 use is a clear 0A000
-- error naming what is missing, nothing is created, fp32 keeps working.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
CREATE FUNCTION try_bf16(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    detail text;
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL;
    -- the detail names what this machine lacks: only whether it does is compared
    RETURN SQLSTATE || ': ' || SQLERRM || CASE
        WHEN detail ~ 'AVX512-BF16|oneDNN' THEN ' (the reason is given)' ELSE ' / ' || detail END;
END $$;
SELECT device, available, detail LIKE 'fp32 (bft.cpu_precision), %' AS fp32_detail
  FROM bft_devices() WHERE device = 'cpu';
SHOW bft.cpu_precision;
SET bft.cpu_precision = 'fp16';
CREATE TABLE pdocs AS
  SELECT CASE WHEN i % 2 = 0 THEN 'alpha beta ' ELSE 'gamma delta ' END || i AS body,
         CASE WHEN i % 2 = 0 THEN 'a' ELSE 'g' END AS tag
  FROM generate_series(1, 40) i;
\set tiny '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}'
SELECT model, version, rows_used FROM bft_train('pdocs', 'body', 'tag', epochs => 2, mlm_epochs => 0,
       model => 'p_fp32', architecture => :'tiny', seed => 3);
CREATE TABLE p32_probs AS SELECT body, bft_predict_proba(body, 'p_fp32') AS p FROM pdocs;

SET bft.cpu_precision = 'bf16';
SELECT device, available,
       CASE WHEN available THEN detail LIKE 'bf16 mixed precision (bft.cpu_precision), %'
            ELSE detail ~ 'AVX512-BF16|oneDNN' END AS detail_ok
  FROM bft_devices() WHERE device = 'cpu';
-- classification in bf16 of the fp32-trained model
CREATE TABLE p16_probs (body text, p real[]);
SELECT try_bf16($$INSERT INTO p16_probs SELECT body, bft_predict_proba(body, 'p_fp32') FROM pdocs$$);
SELECT count(*) AS rows, max(abs(u.a - u.b)) < 0.02 AS within_bf16_tolerance,
       bool_or(u.a <> u.b) AS rounded_differently
  FROM p32_probs c JOIN p16_probs g USING (body), unnest(c.p, g.p) AS u(a, b);
SELECT try_bf16($$SELECT bft_classify('alpha beta 7', 'p_fp32')$$);
SELECT try_bf16($$SELECT * FROM bft_classify_batch(ARRAY['alpha beta 7', 'gamma delta 8'], 'p_fp32')$$);
SELECT try_bf16($$SELECT * FROM bft_evaluate('p_fp32', 'pdocs', 'body', 'tag')$$);
-- training in bf16: the same recipe, recorded precision
SELECT try_bf16($$SELECT bft_train('pdocs', 'body', 'tag', epochs => 2, mlm_epochs => 0,
       model => 'p_bf16', architecture => '$$ || :'tiny' || $$', seed => 3)$$);
SELECT name, version, params->>'device' AS device, params->>'precision' AS precision
  FROM bft.models WHERE name LIKE 'p\_%' ORDER BY name, version;
-- the same training in fp32 and bf16: accuracies within 4 of 40 rows
SELECT count(*) AS rows,
       abs(sum((bft_classify(body, 'p_bf16') = tag)::int)
           - sum((bft_classify(body, 'p_fp32') = tag)::int)) <= 4 AS similar_accuracy
  FROM pdocs WHERE EXISTS (SELECT 1 FROM bft.models WHERE name = 'p_bf16');
RESET bft.cpu_precision;

-- fp32 is unaffected either way
SELECT bft_classify('alpha beta 7', 'p_fp32') IN ('a', 'g') AS fp32_works;
SELECT bft_drop_model(name) FROM (SELECT DISTINCT name FROM bft.models WHERE name LIKE 'p\_%') s ORDER BY 1;
DROP TABLE pdocs, p32_probs, p16_probs;
DROP FUNCTION try_bf16(text);
