-- bft_long_embed: sentence embeddings of texts longer than max_length —
-- truncation (the default) or bft.long_text = 'mean' | 'max' over windows
-- sharing bft.chunk_stride tokens. A sentence-transformers model (mean
-- pooling, Normalize, max_seq_length 48) embeds a 2,210-token text; the
-- result equals the windows embedded one by one (rebuilt here in SQL) and
-- combined in SQL: their un-normalized vectors averaged with each window's
-- token count as its weight (or their per-dimension maximum), then scaled to
-- unit length. Texts within max_length keep the truncated vector exactly;
-- the batch form gives the per-row vectors.
SET bft.threads = 1;
SET client_min_messages = warning;
\getenv abs_srcdir PG_ABS_SRCDIR
\set stdir :abs_srcdir '/tests/data/ckpt/tiny_st'

SELECT * FROM bft_import_model('le', :'stdir');
SELECT params -> 'pooling' AS pooling FROM bft.models WHERE name = 'le';

-- 2,210 words cycling over three words of the vocabulary (one token each);
-- windows of 48 tokens: 46 words between [CLS] and [SEP]
CREATE TABLE doc AS
SELECT ARRAY(SELECT (ARRAY['the', 'market', 'bank'])[1 + (i + i / 97) % 3]
               FROM generate_series(0, 2209) i) AS words;
ALTER TABLE doc ADD COLUMN body text;
UPDATE doc SET body = array_to_string(words, ' ');
SELECT cardinality(words) AS words,
       (SELECT count(*) FROM bft_tokenize('the market bank', 'le')) AS three_words_five_ids,
       (SELECT count(*) FROM bft_tokenize(body, 'le')) AS truncated_ids FROM doc;

-- window k covers words k*step+1 .. k*step+46 (step 46 - overlap); the last reaches the end
CREATE FUNCTION windows(stride int) RETURNS TABLE (k int, body text, ntok int) LANGUAGE sql AS $$
  SELECT k, array_to_string(words[k * (46 - stride) + 1 : k * (46 - stride) + 46], ' '),
         cardinality(words[k * (46 - stride) + 1 : k * (46 - stride) + 46]) + 2
    FROM doc, generate_series(0, (cardinality(words) - 46 + (46 - stride) - 1) / (46 - stride)) k $$;
SELECT count(*) AS windows, min(ntok) AS last_window_tokens, max(ntok) AS window_tokens FROM windows(6);
-- each window embedded alone, not normalized (pooling => 'mean'), combined:
-- 'mean' weighted by the window's tokens, 'max' per dimension; then unit length
CREATE FUNCTION combined(stride int, how text) RETURNS real[] LANGUAGE sql AS $$
  WITH c AS (SELECT d, CASE how WHEN 'mean' THEN sum(w.ntok * e[d]::float8) / sum(w.ntok)
                                WHEN 'plain' THEN avg(e[d]::float8) ELSE max(e[d]) END AS x
               FROM (SELECT ntok, bft_embed(w.body, 'le', 'mean') AS e FROM windows(stride) w) w,
                    generate_series(1, cardinality(e)) d GROUP BY d)
  SELECT array_agg((x / sqrt((SELECT sum(x * x) FROM c)))::real ORDER BY d) FROM c $$;
CREATE FUNCTION maxdiff(a real[], b real[]) RETURNS float8 LANGUAGE sql AS $$
  SELECT max(abs(a[i]::float8 - b[i])) FROM generate_subscripts(a, 1) i $$;
CREATE TABLE truncated AS SELECT bft_embed(body, 'le') AS e FROM doc;

-- truncation (the default): the first window only, exactly
SELECT bft_embed(body, 'le') = (SELECT bft_embed(w.body, 'le') FROM windows(6) w WHERE k = 0) AS first_window
  FROM doc;
SET bft.chunk_stride = 6;
SET bft.long_text = 'mean';
SELECT maxdiff(bft_embed(body, 'le'), combined(6, 'mean')) < 1e-6 AS weighted_mean_of_windows,
       maxdiff(bft_embed(body, 'le'), combined(6, 'plain')) > 1e-6 AS not_the_plain_mean,
       maxdiff(bft_embed(body, 'le'), (SELECT e FROM truncated)) > 1e-3 AS differs_from_truncated,
       abs((SELECT sum(x::float8 * x) FROM unnest(bft_embed(body, 'le')) x) - 1) < 1e-6 AS unit_length
  FROM doc;
SET bft.long_text = 'max';
SELECT maxdiff(bft_embed(body, 'le'), combined(6, 'max')) < 1e-6 AS max_of_windows,
       maxdiff(bft_embed(body, 'le'), (SELECT e FROM truncated)) > 1e-3 AS differs_from_truncated
  FROM doc;
-- another overlap (none) and a pooling argument: the same combination
SET bft.long_text = 'mean';
SET bft.chunk_stride = 0;
SELECT maxdiff(bft_embed(body, 'le'), combined(0, 'mean')) < 1e-6 AS stride_0,
       maxdiff(bft_embed(body, 'le', 'mean+normalize'), combined(0, 'mean')) < 1e-6 AS pooling_argument
  FROM doc;
SET bft.chunk_stride = 6;

-- a text within max_length is one window: exactly the truncated vector
CREATE TABLE short AS SELECT 'the market the bank'::text AS t, bft_embed('the market the bank', 'le') AS e;
SET bft.long_text = 'mean';
SELECT bft_embed(t, 'le') = e AS short_mean_exact FROM short;
SET bft.long_text = 'max';
SELECT bft_embed(t, 'le') = e AS short_max_exact FROM short;

-- bft_embed_batch: the same vectors as bft_embed row by row, long and short texts mixed
SET bft.long_text = 'mean';
SELECT count(*) AS rows, count(b.embedding) AS embeddings,
       max(maxdiff(b.embedding, bft_embed(x.t, 'le'))) < 1e-6 AS same_as_per_row
  FROM doc, bft_embed_batch(ARRAY[body, 'the market the bank', NULL, substr(body, 1, 3000), body], 'le') b
  JOIN LATERAL (SELECT (ARRAY[body, 'the market the bank', NULL, substr(body, 1, 3000), body])[b.idx] AS t) x ON true;
SET bft.long_text = 'max';
SELECT max(maxdiff(b.embedding, bft_embed(x.t, 'le'))) < 1e-6 AS max_same_as_per_row
  FROM doc, bft_embed_batch(ARRAY[substr(body, 1, 5000), 'the bank', body], 'le', 'mean+normalize') b
  JOIN LATERAL (SELECT (ARRAY[substr(body, 1, 5000), 'the bank', body])[b.idx] AS t) x ON true;

-- the memory a long text's windows take is checked against bft.max_memory
SET bft.max_memory = '32MB';
\set VERBOSITY sqlstate
SELECT bft_embed(repeat('the market ', 1000000), 'le');
\set VERBOSITY default
RESET bft.max_memory;
SET bft.long_text = 'truncate';
SELECT array_length(bft_embed(repeat('the market ', 1000000), 'le'), 1) AS truncated_huge_text;
RESET bft.long_text;
RESET bft.chunk_stride;

SELECT bft_drop_model('le');
DROP FUNCTION windows, combined, maxdiff;
DROP TABLE doc, truncated, short;
