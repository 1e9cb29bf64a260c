-- bft_import: Hugging Face checkpoints in and out (server directory and
-- client large object), fine-tuning an imported base, fill-mask, corrupt
-- and mismatched weights.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
\getenv abs_srcdir PG_ABS_SRCDIR
\set ckpt :abs_srcdir '/tests/data/ckpt'
\set tinydir :ckpt '/tiny'
\set mlmdir :ckpt '/tiny_mlm'
\set legacydir :ckpt '/tiny_legacy'
\set f16dir :ckpt '/tiny_f16'
\set bf16dir :ckpt '/tiny_bf16'
\set noprefixdir :ckpt '/tiny_noprefix'
\set saveddir :abs_srcdir '/tests/data/hf/tiny_saved'
\set bindir :abs_srcdir '/tests/data/hf/tiny_bin'
\set evilbin :abs_srcdir '/tests/data/hf/bin/evil_os_system.bin'

CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- Import from server directories (F32, legacy gamma/beta, F16, BF16, no "bert." prefix, MLM).
SELECT * FROM bft_import_model('tiny', :'tinydir');
SELECT * FROM bft_import_model('tiny_legacy', :'legacydir');
SELECT * FROM bft_import_model('tiny_f16', :'f16dir');
SELECT * FROM bft_import_model('tiny_bf16', :'bf16dir');
SELECT * FROM bft_import_model('tiny_noprefix', :'noprefixdir');
SELECT * FROM bft_import_model('tiny_mlm', :'mlmdir');
SELECT name, version, base, labels, deployed FROM bft.model_list ORDER BY name;
SELECT name, labels, has_mlm, config->>'hidden_size' AS hidden, config->>'vocab_size' AS vocab,
       tokenizer_config->>'do_lower_case' AS lower_case
  FROM bft.models ORDER BY name;

-- The imported classifier predicts its own labels; probabilities are stable.
SELECT label, label_id, round(score::numeric, 4) AS score FROM bft_predict('the stock market is up', 'tiny', top_k => 3);
SELECT (SELECT array_agg(round(x::numeric, 4)) FROM unnest(bft_predict_proba('good news for the bank', 'tiny')) x) AS tiny,
       (SELECT array_agg(round(x::numeric, 2)) FROM unnest(bft_predict_proba('good news for the bank', 'tiny_f16')) x) AS f16;
SELECT token, token_id FROM bft_tokenize('Hello, the café works!', 'tiny');

-- Fill-mask with the MLM head, one row per candidate (top_k per [MASK]).
SELECT count(*) AS rows, count(DISTINCT token_id) AS distinct_ids, bool_and(score > 0 AND score < 1) AS probs
  FROM bft_fill_mask('the cat sat on the [MASK] .', 5, 'tiny_mlm');
SELECT count(*) AS rows FROM bft_fill_mask('the [MASK] sat on the [MASK] .', 3, 'tiny_mlm');
SELECT round(sum(score)::numeric, 4) <= 1 AS sums_below_one FROM bft_fill_mask('the [MASK] is up', 140, 'tiny_mlm');
SELECT try($$SELECT * FROM bft_fill_mask('no mask here', 5, 'tiny_mlm')$$);
SELECT try($$SELECT * FROM bft_fill_mask('the [MASK]', 5, 'tiny')$$);
SELECT try($$SELECT bft_classify('x', 'tiny_mlm')$$);

-- Fine-tune the imported base on a table; the base's 3-label head fits.
CREATE TABLE news (headline text, sentiment int);
INSERT INTO news
SELECT (ARRAY['stock price up good news', 'market down bad news', 'the bank shares'])[1 + i % 3]
       || (ARRAY['', ' .', ' !', ' today'])[1 + i % 4],
       (ARRAY[2, 0, 1])[1 + i % 3]
  FROM generate_series(1, 36) i;
SELECT model, version, rows_used, epochs
  FROM bft_train('news', 'headline', 'sentiment', epochs => 15, base => 'tiny', model => 'news_tiny',
                 learning_rate => 3e-3, batch_size => 4);
SELECT name, base, labels, params->>'base' AS base_param, params->>'epochs' AS epochs FROM bft.models WHERE name = 'news_tiny';
SELECT accuracy, rows FROM bft_evaluate('news_tiny', 'news', 'headline', 'sentiment');
SELECT bft_classify('market down bad news', 'news_tiny') AS bad, bft_classify('stock price up good news', 'news_tiny') AS good;
-- a base without an MLM head cannot do MLM pre-training; one with it can
SELECT try($$SELECT bft_train('news', 'headline', 'sentiment', 1, base => 'tiny', mlm_epochs => 1)$$);
SELECT model, version FROM bft_train('news', 'headline', 'sentiment', 1, base => 'tiny_mlm', mlm_epochs => 1, model => 'news_mlm');
SELECT labels, has_mlm FROM bft.models WHERE name = 'news_mlm';
-- a small base (hidden size <= 512) gets the small-encoder defaults; given values win
SELECT name, params->'learning_rate' AS lr, params->'warmup_ratio' AS warmup
  FROM bft.models WHERE name IN ('news_mlm', 'news_tiny') ORDER BY name;
-- from 10,000 training rows a small base learns at 1e-4 (unless given)
CREATE TABLE news_many AS SELECT headline, sentiment FROM news, generate_series(1, 280) g;
SELECT count(*) FROM news_many;
SELECT model, rows_used FROM bft_train('news_many', 'headline', 'sentiment', 1, base => 'tiny', model => 'many_default',
                                       batch_size => 64, max_length => 16);
SELECT model, rows_used FROM bft_train('news_many', 'headline', 'sentiment', 1, base => 'tiny', model => 'many_given',
                                       batch_size => 64, max_length => 16, learning_rate => 3e-4);
SELECT model, rows_used FROM bft_train('news_many', 'headline', 'sentiment', 1, base => 'tiny', model => 'many_split',
                                       batch_size => 64, max_length => 16, validation_fraction => 0.1);
SELECT name, params->'learning_rate' AS lr, params->'warmup_ratio' AS warmup
  FROM bft.models WHERE name LIKE 'many_%' ORDER BY name;
DROP TABLE news_many;
SELECT count(*) FROM bft_fill_mask('stock price [MASK]', 3, 'news_mlm');
-- max_length above the base's positions
SELECT try($$SELECT bft_train('news', 'headline', 'sentiment', 1, base => 'tiny', max_length => 512)$$);

-- Export to a server directory and import it back: identical predictions.
\set exportdir '/tmp/bft_regress_export_news_tiny'
SELECT bft_export_model('news_tiny', :'exportdir');
SELECT * FROM bft_import_model('news_copy', :'exportdir');
SELECT bft_predict_proba('market down bad news', 'news_tiny') = bft_predict_proba('market down bad news', 'news_copy') AS same_probs;
SELECT labels FROM bft.models WHERE name = 'news_copy';

-- Import through a client large object (what psql's \lo_import uploads).
SELECT lo_import(:'tinydir' || '/model.safetensors') AS weights_oid \gset
SELECT * FROM bft_import_model('tiny_lo', pg_read_file(:'tinydir' || '/config.json')::jsonb,
                               pg_read_file(:'tinydir' || '/vocab.txt'), :weights_oid,
                               pg_read_file(:'tinydir' || '/tokenizer_config.json')::jsonb);
SELECT bft_predict_proba('good news', 'tiny') = bft_predict_proba('good news', 'tiny_lo') AS same_probs;
-- the stored copy is independent of the client's large object
SELECT lo_unlink(:weights_oid);
SELECT bft_classify('good news', 'tiny_lo');

-- A transformers 5 save_pretrained directory (tests/data/hf/tiny_saved: the
-- weights of tiny, tokenizer.json and no vocab.txt), in both import forms;
-- for the large-object form tokenizer.json's text goes in as the vocabulary.
SELECT * FROM bft_import_model('tiny_saved', :'saveddir');
SELECT lo_import(:'saveddir' || '/model.safetensors') AS saved_oid \gset
SELECT * FROM bft_import_model('tiny_saved_lo', pg_read_file(:'saveddir' || '/config.json')::jsonb,
                               pg_read_file(:'saveddir' || '/tokenizer.json'), :saved_oid,
                               pg_read_file(:'saveddir' || '/tokenizer_config.json')::jsonb);
SELECT lo_unlink(:saved_oid);
SELECT name, vocab = (SELECT vocab FROM bft.models WHERE name = 'tiny') AS same_vocab,
       tokenizer_config->>'do_lower_case' AS lower_case,
       bft_predict_proba('Hello, the café works!', name) = bft_predict_proba('Hello, the café works!', 'tiny') AS same_probs
  FROM bft.models WHERE name IN ('tiny_saved', 'tiny_saved_lo') ORDER BY name;

-- pytorch_model.bin (torch.save's zip; tests/data/hf/tiny_bin has no
-- model.safetensors), in both import forms: the same weights as tiny.
SELECT * FROM bft_import_model('tiny_bin', :'bindir');
SELECT lo_import(:'bindir' || '/pytorch_model.bin') AS bin_oid \gset
SELECT * FROM bft_import_model('tiny_bin_lo', pg_read_file(:'bindir' || '/config.json')::jsonb,
                               pg_read_file(:'bindir' || '/vocab.txt'), :bin_oid,
                               pg_read_file(:'bindir' || '/tokenizer_config.json')::jsonb);
SELECT lo_unlink(:bin_oid);
SELECT name, md5(lo_get(weights)) = (SELECT md5(lo_get(weights)) FROM bft.models WHERE name = 'tiny') AS same_weights
  FROM bft.models WHERE name IN ('tiny_bin', 'tiny_bin_lo') ORDER BY name;
-- a pickle that would run os.system under Python: refused, nothing stored
SELECT lo_import(:'evilbin') AS evil_oid \gset
SELECT regexp_replace(try(format($$SELECT bft_import_model('evil', %L::jsonb, %L, %s)$$,
                  pg_read_file(:'tinydir' || '/config.json'), pg_read_file(:'tinydir' || '/vocab.txt'), :evil_oid)),
                      'object [0-9]+', 'object N') AS refused;
SELECT lo_unlink(:evil_oid);
SELECT count(*) AS evil_models FROM bft.models WHERE name = 'evil';

-- Corrupt, truncated and mismatched weights: clean errors, nothing stored.
SELECT count(*) AS models_before FROM bft.models;
SELECT lo_from_bytea(0, '\x0102030405'::bytea) AS junk_oid \gset
SELECT try(format($$SELECT bft_import_model('junk', %L::jsonb, %L, %s)$$,
                  pg_read_file(:'tinydir' || '/config.json'), pg_read_file(:'tinydir' || '/vocab.txt'), :junk_oid)) ~ '^XX001' AS corrupt;
SELECT lo_from_bytea(0, substr(pg_read_binary_file(:'tinydir' || '/model.safetensors'), 1, 5000)) AS trunc_oid \gset
SELECT try(format($$SELECT bft_import_model('trunc', %L::jsonb, %L, %s)$$,
                  pg_read_file(:'tinydir' || '/config.json'), pg_read_file(:'tinydir' || '/vocab.txt'), :trunc_oid)) ~ '^XX001' AS truncated;
-- a config whose shapes do not match the weights
SELECT lo_import(:'tinydir' || '/model.safetensors') AS mlm_oid \gset
SELECT try(format($$SELECT bft_import_model('mismatch', %L::jsonb, %L, %s)$$,
                  jsonb_set(pg_read_file(:'tinydir' || '/config.json')::jsonb, '{hidden_size}', '64'),
                  pg_read_file(:'tinydir' || '/vocab.txt'), :mlm_oid)) ~ '^XX001' AS mismatch;
-- a vocabulary of the wrong size
SELECT try(format($$SELECT bft_import_model('badvocab', %L::jsonb, %L, %s)$$,
                  pg_read_file(:'tinydir' || '/config.json'), E'[PAD]\n[UNK]\n[CLS]\n[SEP]\n', :mlm_oid)) ~ '^(XX001|22023)' AS vocab_mismatch;
SELECT try($$SELECT bft_import_model('nodir', '/nonexistent/dir')$$) ~ '^58030|^XX001|^22023' AS missing_dir;
SELECT try($$SELECT bft_import_model('', '/tmp')$$);
SELECT count(*) AS models_after FROM bft.models;
SELECT lo_unlink(:junk_oid), lo_unlink(:trunc_oid), lo_unlink(:mlm_oid);

-- Corrupt weights of a stored model give an error when classifying, not a crash.
-- (A model no session has loaded: a loaded copy, in a session's cache or the
-- shared cache, is keyed by the row and never re-read from its object.)
SELECT version FROM bft_import_model('news_corrupt', :'exportdir');
SELECT weights AS news_oid FROM bft.models WHERE name = 'news_corrupt' \gset
SELECT lo_put(:news_oid, 0, '\xffffffffffffffff'::bytea);
SELECT try($$SELECT bft_classify('x', 'news_corrupt')$$) ~ '^XX001' AS corrupt_stored;

-- cleanup
SELECT sum(bft_drop_model(name)) FROM (SELECT DISTINCT name FROM bft.models) s;
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
DROP TABLE news;
DROP FUNCTION try(text);
