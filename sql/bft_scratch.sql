-- bft_scratch: from-scratch options — MLM pre-training on the column then
-- fill-mask, deploy => 'if_better', group_by_length, dropout, the progress
-- view, and what is recorded in params/metrics.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;

CREATE TABLE headlines (title text, topic text);
INSERT INTO headlines
SELECT (ARRAY['shares rally as profit beats forecast', 'stocks fall on weak earnings report',
              'central bank raises interest rate', 'bank cuts rate to support growth',
              'team wins the championship final', 'coach fired after losing season'])[1 + i % 6],
       (ARRAY['markets', 'markets', 'economy', 'economy', 'sports', 'sports'])[1 + i % 6]
  FROM generate_series(1, 60) i;

-- MLM pre-training on the column's own text, then fine-tuning; the model
-- keeps its MLM head, so fill-mask works on it.
SELECT model, version, rows_used, epochs, validation_accuracy >= 0.9 AS learned
  FROM bft_train('headlines', 'title', 'topic', epochs => 20, mlm_epochs => 2, batch_size => 8,
                 learning_rate => 2e-3, validation_fraction => 0.2, group_by_length => true,
                 dropout => 0.0, model => 'news_topics',
                 architecture => '{"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                   "intermediate_size": 64, "vocab_size": 300, "max_position_embeddings": 64,
                                   "do_lower_case": true}',
                 max_length => 32);
SELECT has_mlm, labels, metrics->'mlm'->'epochs' AS mlm_epochs, metrics->'classes' AS classes,
       metrics->'validation_rows' AS validation_rows, metrics->'train_rows' AS train_rows,
       params->'dropout' AS dropout, params->'group_by_length' AS grouped, params->'mlm_epochs' AS p_mlm,
       params->'architecture' AS architecture, config->'max_position_embeddings' AS positions,
       tokenizer_config->'do_lower_case' AS lower
  FROM bft.models WHERE name = 'news_topics';
SELECT count(*) AS candidates, bool_and(score BETWEEN 0 AND 1) AS probabilities
  FROM bft_fill_mask('central bank raises interest [MASK]', 5, 'news_topics');
SELECT bft_classify('team wins the championship final', 'news_topics') AS sports,
       bft_classify('central bank raises interest rate', 'news_topics') AS economy;
-- the sequence length used for classification is the training max_length
SELECT count(*) AS ids FROM bft_tokenize(repeat('bank ', 100), 'news_topics');

-- deploy => 'if_better': a much worse version (one step, tiny learning rate,
-- no n-gram head) is stored but not deployed; the decision and both scores
-- are recorded (the deployed version's scored with its n-gram head).
SELECT version FROM bft_train('headlines', 'title', 'topic', epochs => 1, batch_size => 64,
                              learning_rate => 1e-6, validation_fraction => 0.2, deploy => 'if_better',
                              model => 'news_topics',
                              mlm_epochs => 0, architecture => '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
                                                "intermediate_size": 64, "vocab_size": 300, "ngram_head": false}');
SELECT version, deployed FROM bft.model_list WHERE name = 'news_topics';
SELECT metrics->'deploy'->'policy' AS policy, metrics->'deploy'->'deployed' AS deployed,
       metrics->'deploy'->'compared_version' AS compared_version,
       (metrics->'deploy'->>'compared_accuracy')::float8 > (metrics->'deploy'->>'new_accuracy')::float8 AS old_was_better
  FROM bft.models WHERE name = 'news_topics' AND version = 2;
-- with nothing deployed under a new name, if_better deploys
SELECT version FROM bft_train('headlines', 'title', 'topic', epochs => 1, validation_fraction => 0.2,
                              deploy => 'if_better', model => 'fresh',
                              mlm_epochs => 0, architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 32, "vocab_size": 200}');
SELECT version, deployed FROM bft.model_list WHERE name = 'fresh';
SELECT metrics->'deploy'->'deployed' AS deployed, metrics->'deploy'->'compared_version' AS compared_version,
       metrics->'deploy' ? 'new_accuracy' AS has_accuracy
  FROM bft.models WHERE name = 'fresh';

-- Same seed, same data, same threads: the same model.
SELECT version FROM bft_train('headlines', 'title', 'topic', epochs => 2, model => 'repeat', seed => 3,
                              mlm_epochs => 0, architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 32, "vocab_size": 200}');
SELECT version FROM bft_train('headlines', 'title', 'topic', epochs => 2, model => 'repeat', seed => 3,
                              mlm_epochs => 0, architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                                "intermediate_size": 32, "vocab_size": 200}');
SELECT count(DISTINCT metrics->'train_loss') AS distinct_losses, count(DISTINCT vocab) AS distinct_vocabs,
       count(DISTINCT md5(lo_get(weights))) AS distinct_weights
  FROM bft.models WHERE name = 'repeat';

-- Warmup steps are Trainer's math.ceil(steps * warmup_ratio) in double
-- precision, also where steps x ratio is an integer: 20 x 0.1 -> 2 (a float
-- ratio gave 3), 30 x 0.1 -> 3, 40 x 0.05 -> 2, and 100 x 0.07 -> 8 (Python's
-- 100 * 0.07 is 7.000000000000001).
CREATE TEMP TABLE warm (steps int, ratio float8, batch int, epochs int);
INSERT INTO warm VALUES (20, 0.1, 3, 1), (30, 0.1, 2, 1), (40, 0.05, 3, 2), (100, 0.07, 3, 5);
SELECT t.model, t.version
  FROM warm w,
       LATERAL bft_train('headlines', 'title', 'topic', epochs => w.epochs, batch_size => w.batch,
                         warmup_ratio => w.ratio, model => 'warm_' || w.steps, mlm_epochs => 0,
                         architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                           "intermediate_size": 32, "vocab_size": 200}') t
 ORDER BY w.steps;
SELECT w.steps, w.ratio, m.metrics->'steps' AS trained_steps, m.metrics->'warmup_steps' AS warmup_steps,
       m.params->'warmup_ratio' AS stored_ratio
  FROM warm w JOIN bft.models m ON m.name = 'warm_' || w.steps
 ORDER BY w.steps;

-- Rows with a text and a NULL label join the learned vocabulary and the
-- masked-LM pre-training (when mlm_epochs > 0); fine-tuning and its
-- validation split use the labeled rows only. Rows with a NULL text are
-- skipped.
CREATE TABLE semi (title text, topic text);
INSERT INTO semi SELECT title, topic FROM headlines;
INSERT INTO semi SELECT 'quarterly dividend zorblax announced', NULL FROM generate_series(1, 40);
INSERT INTO semi VALUES (NULL, 'markets'), (NULL, NULL);
SELECT rows_used, epochs
  FROM bft_train('semi', 'title', 'topic', epochs => 1, mlm_epochs => 30, batch_size => 16,
                 learning_rate => 5e-3, dropout => 0.0,
                 validation_fraction => 0.2, model => 'semi', max_length => 32,
                 architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 32, "vocab_size": 120}');
SELECT metrics->'rows_used' AS used, metrics->'rows_skipped' AS skipped,
       metrics->'rows_unlabeled' AS unlabeled, metrics->'train_rows' AS train_rows,
       metrics->'validation_rows' AS validation_rows, metrics->'mlm'->'rows' AS mlm_rows,
       metrics->'mlm'->'epochs' AS mlm_epochs
  FROM bft.models WHERE name = 'semi';
-- a word seen only in the unlabeled rows is one piece of the vocabulary
SELECT array_agg(token ORDER BY ord) AS tokens
  FROM bft_tokenize('zorblax', 'semi') WITH ORDINALITY AS t(token, token_id, ord);
-- and the masked-LM head learned them
SELECT token FROM bft_fill_mask('quarterly dividend [MASK] announced', 1, 'semi');
-- without MLM pre-training the unlabeled rows are skipped, as before, and
-- the vocabulary learned from the labeled rows lacks its letters
SELECT rows_used
  FROM bft_train('semi', 'title', 'topic', epochs => 1, mlm_epochs => 0, model => 'semi_plain',
                 max_length => 32,
                 architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 32, "vocab_size": 120}');
SELECT metrics->'rows_skipped' AS skipped, metrics ? 'rows_unlabeled' AS has_unlabeled,
       metrics ? 'mlm' AS has_mlm
  FROM bft.models WHERE name = 'semi_plain';
SELECT array_agg(token ORDER BY ord) AS tokens
  FROM bft_tokenize('zorblax', 'semi_plain') WITH ORDINALITY AS t(token, token_id, ord);
DROP TABLE semi;

-- The n-gram head (on by default from scratch, single-label): a TF-IDF
-- logistic regression over word and character n-grams, fitted beside the
-- encoder (its C by cross-validation) and mixed into every prediction. An
-- encoder that learned nothing (one step at a tiny learning rate) still
-- classifies through the head; the same encoder without a head does not.
SELECT model FROM bft_train('headlines', 'title', 'topic', epochs => 1, batch_size => 64,
                            learning_rate => 1e-6, mlm_epochs => 0, model => 'ng_on',
                            architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                              "intermediate_size": 32, "vocab_size": 200}');
SELECT model FROM bft_train('headlines', 'title', 'topic', epochs => 1, batch_size => 64,
                            learning_rate => 1e-6, mlm_epochs => 0, model => 'ng_off',
                            architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                              "intermediate_size": 32, "vocab_size": 200, "ngram_head": false}');
SELECT name, params->'architecture'->'ngram_head' AS head, params->'architecture'->'ngram_scale' AS scale,
       config->'bft_ngram_scale' AS config_scale, (metrics->'ngram'->>'features')::int > 0 AS features,
       metrics->'ngram'->'C' IN ('1', '10', '100', '1000') AS c_from_grid,
       (metrics->'ngram'->>'cv_macro_f1')::float8 BETWEEN 0 AND 1 AS cv_scored
  FROM bft.models WHERE name IN ('ng_on', 'ng_off') ORDER BY name;
SELECT m, round(accuracy::numeric, 3) AS accuracy
  FROM unnest(ARRAY['ng_on', 'ng_off']) m, LATERAL bft_evaluate(m, 'headlines', 'title', 'topic') e;
-- the head is in the stored weights (larger object) and survives a reload
SELECT (SELECT size FROM bft.models WHERE name = 'ng_on') > (SELECT size FROM bft.models WHERE name = 'ng_off')
       AS head_stored;
SELECT bft_classify('bank cuts rate to support growth', 'ng_on') AS economy,
       bft_classify('coach fired after losing season', 'ng_on') AS sports,
       bft_classify_batch(ARRAY['bank cuts rate', 'team wins', 'stocks fall'], 'ng_on')
       = ARRAY[bft_classify('bank cuts rate', 'ng_on'), bft_classify('team wins', 'ng_on'),
               bft_classify('stocks fall', 'ng_on')] AS batch_agrees,
       abs((SELECT sum(p) FROM unnest(bft_predict_proba('bank cuts rate', 'ng_on')) p) - 1) < 1e-5 AS sums_to_1;
-- with validation rows the scores reported are the whole model's; the
-- encoder's own are kept in metrics->'ngram'; a scale can be given
SELECT round(validation_accuracy::numeric, 3) AS validation_accuracy
  FROM bft_train('headlines', 'title', 'topic', epochs => 1, batch_size => 64, learning_rate => 1e-6,
                 mlm_epochs => 0, model => 'ng_val', validation_fraction => 0.25,
                 architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 32, "vocab_size": 200, "ngram_scale": 2}');
SELECT params->'architecture'->'ngram_scale' AS scale, config->'bft_ngram_scale' AS config_scale,
       (metrics->'ngram'->>'encoder_validation_accuracy')::float8 < (metrics->>'validation_accuracy')::float8
       AS head_helps
  FROM bft.models WHERE name = 'ng_val';

-- No training is running in this database: the progress view shows none.
SELECT count(*) FROM bft.progress WHERE datname = current_database();

-- The bft.models / large object pairs stay consistent.
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
SELECT sum(bft_drop_model(name)) FROM (SELECT DISTINCT name FROM bft.models) s;
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
DROP TABLE headlines;
