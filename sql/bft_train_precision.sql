-- bft_train_precision: bft_train(..., train_precision => 'fp32' | 'bf16')
-- overrides bft.cpu_precision (bft.cuda_precision on CUDA) for one training
-- and is recorded as params->>'precision', as the setting is; 'int8'
-- (classification only) and unknown names are refused, by bft_train_async
-- at submission too. One expected output on every machine: where the CPU
-- cannot run bf16, the bf16 training must fail with 0A000 naming the
-- argument (checked instead of the recorded precision).
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
CREATE TABLE tp AS
  SELECT CASE WHEN i % 2 = 0 THEN 'alpha beta ' ELSE 'gamma delta ' END || i AS body,
         CASE WHEN i % 2 = 0 THEN 'a' ELSE 'g' END AS tag
  FROM generate_series(1, 40) i;
\set tiny '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}'

-- NULL (the default): the setting, fp32
SELECT model, version FROM bft_train('tp', 'body', 'tag', epochs => 1, mlm_epochs => 0, model => 'tp_default',
       architecture => :'tiny', seed => 3);
-- 'fp32' while the session asks for bf16, and for int8 (which cannot train):
-- the argument wins on any CPU
SET bft.cpu_precision = 'bf16';
SELECT model, version FROM bft_train('tp', 'body', 'tag', epochs => 1, mlm_epochs => 0, model => 'tp_fp32',
       architecture => :'tiny', seed => 3, train_precision => 'fp32');
SET bft.cpu_precision = 'int8';
SELECT try($$SELECT bft_train('tp', 'body', 'tag', epochs => 1, mlm_epochs => 0, model => 'tp_guc_int8')$$);
SELECT model, version FROM bft_train('tp', 'body', 'tag', epochs => 1, mlm_epochs => 0, model => 'tp_fp32',
       architecture => :'tiny', seed => 3, train_precision => 'FP32');
RESET bft.cpu_precision;
-- the same fp32 recipe gives the same weights whichever way fp32 was chosen
SELECT count(DISTINCT bft_predict_proba('alpha beta 7', name || '@' || version)) AS distinct_probabilities
  FROM bft.models WHERE name IN ('tp_default', 'tp_fp32');

-- 'bf16' while the setting is fp32: trained and recorded in bf16 where the
-- CPU runs it (AVX512-BF16 or AMX, oneDNN), else 0A000 naming train_precision
-- (bft_devices() says which, with bft.cpu_precision = 'bf16')
CREATE FUNCTION train_bf16() RETURNS bool LANGUAGE plpgsql AS $$
DECLARE
    hint text;
    bf16 bool;
BEGIN
    SET LOCAL bft.cpu_precision = 'bf16';
    bf16 := (SELECT available FROM bft_devices() WHERE device = 'cpu');
    SET LOCAL bft.cpu_precision = 'fp32';
    PERFORM bft_train('tp', 'body', 'tag', epochs => 1, mlm_epochs => 0, model => 'tp_bf16',
                      architecture => '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}',
                      seed => 3, train_precision => 'bf16');
    -- recorded, and computed: the fp32 recipe's probabilities differ
    RETURN bf16 AND (SELECT params->>'precision' = 'bf16' FROM bft.models WHERE name = 'tp_bf16')
           AND bft_predict_proba('alpha beta 7', 'tp_bf16') <> bft_predict_proba('alpha beta 7', 'tp_default');
EXCEPTION WHEN feature_not_supported THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    RETURN NOT bf16 AND hint LIKE 'Pass train_precision => ''fp32''%';
END $$;
SELECT train_bf16() AS bf16_recorded_or_refused;
SHOW bft.cpu_precision;
SELECT name, params->>'precision' AS precision, params->>'device' AS device
  FROM bft.models WHERE name IN ('tp_default', 'tp_fp32') ORDER BY name, version;

-- refused: int8 (classification only) and unknown names
\set VERBOSITY default
SELECT * FROM bft_train('tp', 'body', 'tag', epochs => 1, model => 'tp_int8', train_precision => 'int8');
SELECT * FROM bft_train('tp', 'body', 'tag', epochs => 1, model => 'tp_fp16', train_precision => 'fp16');
SELECT try($$SELECT bft_train('tp', 'body', 'tag', epochs => 1, model => 'tp_auto', train_precision => 'auto')$$);
-- bft_train_async checks it at submission, and passes it to the job
SELECT try($$SELECT bft_train_async('tp', 'body', 'tag', model => 'tp_job', train_precision => 'int8')$$);
SELECT try($$SELECT bft_train_async('tp', 'body', 'tag', model => 'tp_job', train_precision => 'fp16')$$);
BEGIN;
SELECT bft_train_async('tp', 'body', 'tag', model => 'tp_job', train_precision => 'bf16') > 0 AS submitted;
SELECT args->>'train_precision' AS job_train_precision FROM bft.train_jobs WHERE model = 'tp_job';
ROLLBACK;
SELECT count(*) AS models FROM bft.models WHERE name IN ('tp_int8', 'tp_fp16', 'tp_auto', 'tp_job', 'tp_guc_int8');

DO $$ BEGIN PERFORM bft_drop_model(name) FROM (SELECT DISTINCT name FROM bft.models WHERE name LIKE 'tp\_%') s; END $$;
SELECT count(*) AS models_left FROM bft.models WHERE name LIKE 'tp\_%';
DROP TABLE tp;
DROP FUNCTION try(text), train_bf16();
