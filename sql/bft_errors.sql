-- bft_errors: bad input gives a clear ERROR with a fitting SQLSTATE and
-- changes nothing; identifiers with quotes or semicolons are not injectable.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;

-- try(q): run q, return 'ok' or SQLSTATE: message (errors caught in a
-- subtransaction, which also checks that engine state is freed on error).
CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

CREATE TABLE docs (body text, tag text, n int, f float8, j jsonb);
INSERT INTO docs SELECT CASE WHEN i % 2 = 0 THEN 'alpha beta' ELSE 'gamma delta' END,
                        CASE WHEN i % 2 = 0 THEN 'a' ELSE 'g' END, i % 2, i, '{}'
  FROM generate_series(1, 20) i;
CREATE TABLE empty_docs (body text, tag text);
CREATE TABLE one_class (body text, tag text);
INSERT INTO one_class SELECT 'text ' || i, 'same' FROM generate_series(1, 10) i;
CREATE TABLE null_docs (body text, tag text);
INSERT INTO null_docs VALUES (NULL, 'a'), ('x', NULL);
CREATE TABLE neg_labels (body text, tag int);
INSERT INTO neg_labels VALUES ('a', 0), ('b', -1);
CREATE SEQUENCE some_seq;
CREATE TABLE big_labels (body text, tag bigint);
INSERT INTO big_labels VALUES ('a', 0), ('b', 5000000000);

\set tiny '''{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100}'''

-- missing relation / columns, wrong types
SELECT bft_train('no_such_table', 'body', 'tag');
SELECT try($$SELECT bft_train('docs', 'nope', 'tag')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'nope')$$);
SELECT try($$SELECT bft_train('docs', 'n', 'tag')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'f')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'j')$$);
SELECT try($$SELECT bft_train('docs', NULL, 'tag')$$);
SELECT try($$SELECT bft_train('some_seq', 'body', 'tag')$$);
-- no data, one class, negative / huge labels
SELECT try($$SELECT bft_train('empty_docs', 'body', 'tag')$$);
SELECT try($$SELECT bft_train('null_docs', 'body', 'tag')$$);
SELECT try($$SELECT bft_train('one_class', 'body', 'tag')$$);
-- skipped rows are counted in a NOTICE
CREATE TABLE null_one (body text, tag text);
INSERT INTO null_one VALUES ('a', 'x'), (NULL, 'y'), ('b', NULL), ('c', 'x');
SET client_min_messages = notice;
SELECT bft_train('null_one', 'body', 'tag');
SET client_min_messages = warning;
DROP TABLE null_one;
SELECT try($$SELECT bft_train('neg_labels', 'body', 'tag')$$);
SELECT try($$SELECT bft_train('big_labels', 'body', 'tag')$$);
-- nonsensical options
SELECT try($$SELECT bft_train('docs', 'body', 'tag', 0)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', -3)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', batch_size => 0)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', learning_rate => -1)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', learning_rate => 'NaN')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', max_length => 1)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', warmup_ratio => 2)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', weight_decay => -0.1)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', dropout => 1)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', validation_fraction => 1)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', validation_fraction => 0.01)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => -1)$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', deploy => 'sometimes')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', deploy => 'if_better')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', device => 'tpu')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', model => '')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '[1, 2]')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"hidden_size": "big"}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"layers": 2}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"hidden_size": 30, "num_attention_heads": 4}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"max_position_embeddings": 16}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"ngram_head": "yes"}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"ngram_scale": 0}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', mlm_epochs => 0, architecture => '{"ngram_scale": "big"}')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', base => 'no_such_model')$$);
SELECT try($$SELECT bft_train('docs', 'body', 'tag', base => 'x', mlm_epochs => 0, architecture => '{}')$$);
-- read-only transactions cannot train
BEGIN TRANSACTION READ ONLY;
SELECT bft_train('docs', 'body', 'tag');
ROLLBACK;

-- unknown models
SELECT try($$SELECT bft_classify('x', 'no_such_model')$$);
SELECT try($$SELECT bft_classify('x')$$);
SELECT try($$SELECT * FROM bft_predict('x', 'no_such_model')$$);
SELECT try($$SELECT bft_predict_proba('x', 'no_such_model')$$);
SELECT try($$SELECT * FROM bft_tokenize('x', 'no_such_model')$$);
SELECT try($$SELECT * FROM bft_fill_mask('x [MASK]', 5, 'no_such_model')$$);
SELECT try($$SELECT * FROM bft_evaluate('no_such_model', 'docs', 'body', 'tag')$$);
SELECT try($$SELECT bft_deploy('no_such_model', 1)$$);
SELECT try($$SELECT bft_drop_model('no_such_model')$$);
SELECT try($$SELECT bft_drop_model('no_such_model', 3)$$);
SELECT try($$SELECT bft_export_model('no_such_model', '/tmp/nowhere')$$);

-- nothing was written by any of the failures above
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;

-- a working model for the remaining checks
SELECT model, version, rows_used FROM bft_train('docs', 'body', 'tag', epochs => 1, mlm_epochs => 0, architecture => :tiny);
SELECT try($$SELECT * FROM bft_predict('x', top_k => 0)$$);
SELECT try($$SELECT * FROM bft_fill_mask('x [MASK]', 5, 'docs')$$);
SELECT try($$SELECT bft_classify_batch(ARRAY[['a'], ['b']], 'docs')$$);
SELECT try($$SELECT bft_deploy('docs', 2)$$);
SELECT try($$SELECT * FROM bft_evaluate('docs', 'docs', 'body', 'nope')$$);
SELECT try($$SELECT * FROM bft_evaluate('docs', 'empty_docs', 'body', 'tag')$$);
-- labels the model does not know count as errors in the evaluation
SELECT accuracy, rows, report->'labels' AS labels FROM bft_evaluate('docs', 'neg_labels', 'body', 'tag');

-- no n-gram shared by two training rows: a NOTICE, and the encoder alone
CREATE TABLE disjoint (t text, l text);
INSERT INTO disjoint VALUES ('qx', 'p'), ('zw', 'n'), ('jk', 'p');
SELECT rows_used FROM bft_train('disjoint', 't', 'l', epochs => 1, mlm_epochs => 0, model => 'disjoint',
                                architecture => :tiny);
SELECT params->'architecture'->'ngram_head' AS head, metrics ? 'ngram' AS fitted, config ? 'bft_ngram_scale' AS mixed
  FROM bft.models WHERE name = 'disjoint';
SELECT bft_drop_model('disjoint');
DROP TABLE disjoint;

-- Identifiers with quotes and semicolons are quoted, never pasted.
CREATE TABLE "we""ird; DROP TABLE docs; --" ("te""xt; --" text, "la'bel" text);
INSERT INTO "we""ird; DROP TABLE docs; --"
SELECT CASE WHEN i % 2 = 0 THEN 'one two' ELSE 'three four' END, CASE WHEN i % 2 = 0 THEN 'x' ELSE 'y' END
  FROM generate_series(1, 10) i;
SELECT model, version, rows_used
  FROM bft_train('"we""ird; DROP TABLE docs; --"', 'te"xt; --', 'la''bel', epochs => 1,
                 model => 'robert''); DROP TABLE docs; --', mlm_epochs => 0, architecture => :tiny);
SELECT count(*) AS docs_still_there FROM docs;
SELECT name FROM bft.model_list ORDER BY name;
SELECT rows FROM bft_evaluate('robert''); DROP TABLE docs; --', '"we""ird; DROP TABLE docs; --"', 'te"xt; --', 'la''bel');

-- cleanup
SELECT bft_drop_model(name) FROM (SELECT DISTINCT name FROM bft.models) s ORDER BY 1;
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
DROP TABLE docs, empty_docs, one_class, null_docs, neg_labels, big_labels, "we""ird; DROP TABLE docs; --";
DROP SEQUENCE some_seq;
DROP FUNCTION try(text);
