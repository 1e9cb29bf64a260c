-- bft_long_text: texts longer than max_length — truncation (the default) or
-- bft.long_text = 'mean' | 'max' over windows sharing bft.chunk_stride
-- tokens. On a 2,210-token text the pooled probabilities equal those of the
-- windows classified one by one (rebuilt here in SQL), for single- and
-- multi-label models, per-row and batch calls and bft_evaluate.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;

CREATE TABLE colours (t text, l text, ls text[]);
INSERT INTO colours SELECT (ARRAY['red apple', 'green leaf'])[1 + i % 2], (ARRAY['warm', 'cool'])[1 + i % 2],
                           CASE WHEN i % 2 = 0 THEN ARRAY['warm', 'fruit'] ELSE ARRAY['cool', 'plant'] END
  FROM generate_series(1, 20) i;
\set tiny '''{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100, "ngram_head": false}'''
-- windows of 16 tokens: 14 pieces between [CLS] and [SEP]
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'lt', batch_size => 4, learning_rate => 1e-2,
                              mlm_epochs => 0, architecture => :tiny, max_length => 16);
SELECT version FROM bft_train('colours', 't', 'ls', 20, model => 'lt_multi', batch_size => 4, learning_rate => 1e-2,
                              mlm_epochs => 0, architecture => :tiny, max_length => 16);

-- a 2,210-word text: 2,200 words "green leaf ...", then "red apple" five times;
-- every word is one token of the learned vocabulary
CREATE TABLE doc AS
SELECT array_cat(ARRAY(SELECT CASE WHEN i % 2 = 1 THEN 'green' ELSE 'leaf' END FROM generate_series(1, 2200) i),
                 ARRAY(SELECT CASE WHEN i % 2 = 1 THEN 'red' ELSE 'apple' END FROM generate_series(1, 10) i)) AS words;
ALTER TABLE doc ADD COLUMN body text;
UPDATE doc SET body = array_to_string(words, ' ');
SELECT cardinality(words) AS words, (SELECT count(*) FROM bft_tokenize('green leaf red apple', 'lt')) AS four_words_six_ids,
       (SELECT count(*) FROM bft_tokenize(body, 'lt')) AS truncated_ids FROM doc;

-- window k covers words k*step+1 .. k*step+14 (overlap 4: step 10); the last reaches the end
CREATE FUNCTION windows(stride int) RETURNS TABLE (k int, body text) LANGUAGE sql AS $$
  SELECT k, array_to_string(words[k * (14 - stride) + 1 : k * (14 - stride) + 14], ' ')
    FROM doc, generate_series(0, (cardinality(words) - 14 + (14 - stride) - 1) / (14 - stride)) k $$;
SELECT count(*) AS windows FROM windows(4);
-- per-class mean and max of the windows' probabilities, each window classified alone
CREATE FUNCTION pooled(model text, stride int, how text) RETURNS real[] LANGUAGE sql AS $$
  SELECT array_agg(CASE how WHEN 'mean' THEN avg ELSE max END ORDER BY c)
    FROM (SELECT c, avg(p[c])::real AS avg, max(p[c]) AS max
            FROM (SELECT bft_predict_proba(w.body, model) AS p FROM windows(stride) w) s,
                 generate_series(1, cardinality(p)) c GROUP BY c) t $$;
CREATE FUNCTION maxdiff(a real[], b real[]) RETURNS float8 LANGUAGE sql AS $$
  SELECT max(abs(a[i] - b[i])) FROM generate_subscripts(a, 1) i $$;

-- truncation (the default): the first window only
SELECT bft_classify(body, 'lt') AS truncated, maxdiff(bft_predict_proba(body, 'lt'),
       bft_predict_proba((SELECT w.body FROM windows(4) w WHERE k = 0), 'lt')) = 0 AS first_window
  FROM doc;
SET bft.chunk_stride = 4;
SET bft.long_text = 'mean';
SELECT maxdiff(bft_predict_proba(body, 'lt'), pooled('lt', 4, 'mean')) < 1e-6 AS mean_of_windows,
       maxdiff(bft_predict_proba(body, 'lt_multi'), pooled('lt_multi', 4, 'mean')) < 1e-6 AS multi_mean_of_windows
  FROM doc;
SET bft.long_text = 'max';
SELECT maxdiff(bft_predict_proba(body, 'lt_multi'), pooled('lt_multi', 4, 'max')) < 1e-6 AS multi_max_of_windows,
       -- a single-label model's maxima are rescaled to sum 1
       maxdiff(bft_predict_proba(body, 'lt'),
               (SELECT array_agg(x / s ORDER BY i) FROM (SELECT pooled('lt', 4, 'max') AS m) q,
                       LATERAL (SELECT sum(y) AS s FROM unnest(m) y) t, unnest(m) WITH ORDINALITY u(x, i))) < 1e-6 AS max_of_windows
  FROM doc;
-- the labels past the first window are seen: "red apple" ends the text
SELECT bft_classify_labels(body, 'lt_multi') @> ARRAY['warm', 'fruit'] AS max_sees_the_end FROM doc;
SET bft.long_text = 'truncate';
SELECT bft_classify_labels(body, 'lt_multi') @> ARRAY['warm'] AS truncation_does_not FROM doc;

-- another overlap; more than half a window is clamped to half (7)
SET bft.long_text = 'mean';
SET bft.chunk_stride = 0;
SELECT maxdiff(bft_predict_proba(body, 'lt'), pooled('lt', 0, 'mean')) < 1e-6 AS stride_0 FROM doc;
SET bft.chunk_stride = 100;
SELECT maxdiff(bft_predict_proba(body, 'lt'), pooled('lt', 7, 'mean')) < 1e-6 AS stride_clamped FROM doc;
SET bft.chunk_stride = 4;

-- batch calls and bft_evaluate pool the same way, texts of any length mixed
SELECT bft_classify_batch(ARRAY[body, 'red apple', NULL, body], 'lt')
       = ARRAY[bft_classify(body, 'lt'), bft_classify('red apple', 'lt'), NULL, bft_classify(body, 'lt')] AS batch,
       (SELECT array_agg(labels ORDER BY idx) FROM bft_classify_labels_batch(ARRAY[body, 'green leaf'], 'lt_multi'))
       = ARRAY[bft_classify_labels(body, 'lt_multi'), bft_classify_labels('green leaf', 'lt_multi')] AS labels_batch
  FROM doc;
CREATE VIEW docs AS SELECT body, bft_classify(body, 'lt') AS l FROM doc UNION ALL SELECT t, l FROM colours;
SELECT accuracy, rows FROM bft_evaluate('lt', 'docs', 'body', 'l');

-- the memory a long text's windows take is checked against bft.max_memory
SET bft.max_memory = '32MB';
\set VERBOSITY sqlstate
SELECT bft_classify(repeat('green leaf ', 1000000), 'lt');
\set VERBOSITY default
RESET bft.max_memory;
SET bft.long_text = 'truncate';
SELECT bft_classify(repeat('green leaf ', 1000000), 'lt') AS truncated_huge_text;
RESET bft.long_text;
RESET bft.chunk_stride;

SELECT sum(bft_drop_model(name)) FROM (SELECT DISTINCT name FROM bft.models) s;
DROP VIEW docs;
DROP FUNCTION windows, pooled, maxdiff;
DROP TABLE colours, doc;
