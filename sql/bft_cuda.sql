-- bft_cuda: device => 'cuda' and bft.device = 'cuda'. Two expected outputs:
-- expected/bft_cuda.out on a server without a usable GPU (CI: every CUDA use
-- is a clear 0A000 error, nothing is created, the CPU keeps working), and
-- expected/bft_cuda_1.out where the server has a GPU (made with the CUDA
-- emulator, tests/cuda_emu: training and classification on the device agree
-- with the CPU within bf16 tolerance).
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
CREATE FUNCTION try_cuda(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- what this backend sees (the detail of an unavailable device is its reason)
SELECT device, available,
       CASE WHEN available THEN detail ELSE 'reason given: ' || (detail <> '') END AS detail
  FROM bft_devices() WHERE device = 'cuda';
SELECT device, available FROM bft_devices() WHERE device = 'cpu';
CREATE TABLE cdocs AS
  SELECT CASE WHEN i % 2 = 0 THEN 'alpha beta ' ELSE 'gamma delta ' END || i AS body,
         CASE WHEN i % 2 = 0 THEN 'a' ELSE 'g' END AS tag
  FROM generate_series(1, 40) i;
\set tiny '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100}'
SELECT model, version, rows_used FROM bft_train('cdocs', 'body', 'tag', epochs => 2, mlm_epochs => 0,
       model => 'c_cpu', architecture => :'tiny', device => 'cpu');
CREATE TABLE c_cpu_probs AS SELECT body, bft_predict_proba(body, 'c_cpu') AS p FROM cdocs;

-- training on the device
SELECT try_cuda($$SELECT bft_train('cdocs', 'body', 'tag', epochs => 2, mlm_epochs => 0,
       model => 'c_gpu', architecture => '$$ || :'tiny' || $$', device => 'cuda')$$);
SELECT name, version FROM bft.models WHERE name LIKE 'c\_%' ORDER BY name, version;

-- classification on the device (the CPU-trained model)
SET bft.device = 'cuda';
CREATE TABLE c_gpu_probs (body text, p real[]);
SELECT try_cuda($$INSERT INTO c_gpu_probs SELECT body, bft_predict_proba(body, 'c_cpu') FROM cdocs$$);
SELECT try_cuda($$SELECT bft_classify('alpha beta 7', 'c_cpu')$$);
SELECT try_cuda($$SELECT * FROM bft_classify_batch(ARRAY['alpha beta 7', 'gamma delta 8'], 'c_cpu')$$);
SELECT try_cuda($$SELECT * FROM bft_evaluate('c_cpu', 'cdocs', 'body', 'tag')$$);
SELECT count(*) AS rows, max(abs(u.a - u.b)) < 0.02 AS within_bf16_tolerance
  FROM c_cpu_probs c JOIN c_gpu_probs g USING (body), unnest(c.p, g.p) AS u(a, b);
-- exact fp32 on the device: the CPU's probabilities to rounding
SET bft.cuda_precision = 'fp32';
CREATE TABLE c_gpu32_probs (body text, p real[]);
SELECT try_cuda($$INSERT INTO c_gpu32_probs SELECT body, bft_predict_proba(body, 'c_cpu') FROM cdocs$$);
SELECT count(*) AS rows, max(abs(u.a - u.b)) < 1e-5 AS within_fp32_rounding
  FROM c_cpu_probs c JOIN c_gpu32_probs g USING (body), unnest(c.p, g.p) AS u(a, b);
SELECT try_cuda($$SELECT bft_train('cdocs', 'body', 'tag', epochs => 1, mlm_epochs => 0,
       model => 'c_gpu', architecture => '$$ || :'tiny' || $$', device => 'cuda')$$);
SELECT version, params->>'device' AS device, params->>'precision' AS precision
  FROM bft.models WHERE name = 'c_gpu' ORDER BY version;
RESET bft.cuda_precision;
RESET bft.device;

-- the CPU is unaffected either way
SELECT bft_classify('alpha beta 7', 'c_cpu') IN ('a', 'g') AS cpu_works;
SELECT bft_drop_model(name) FROM (SELECT DISTINCT name FROM bft.models WHERE name LIKE 'c\_%') s ORDER BY 1;
DROP TABLE cdocs, c_cpu_probs, c_gpu_probs, c_gpu32_probs;
DROP FUNCTION try_cuda(text);
