-- bft_train_opts: class_weights (weighted cross-entropy) — 'balanced',
-- weights by label name (JSON object) or by class id (JSON array or array
-- literal), what is recorded in params/metrics, and the errors;
-- load_best_model_at_end / metric_for_best_model / early_stopping_patience on
-- labels that cannot be learned (validation loss grows once the model
-- memorises its training rows, so the best epoch is not the last).
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;

-- 48 rows: 36 'common', 8 'rare', 4 'scarce'
CREATE TABLE skewed (body text, label text);
INSERT INTO skewed
SELECT CASE WHEN i <= 36 THEN (ARRAY['shares rally on profit', 'stocks fall on earnings', 'markets flat today'])[1 + i % 3]
            WHEN i <= 44 THEN 'central bank raises rates'
            ELSE 'team wins the final' END,
       CASE WHEN i <= 36 THEN 'common' WHEN i <= 44 THEN 'rare' ELSE 'scarce' END
  FROM generate_series(1, 48) i;

CREATE FUNCTION train_skewed(cw text, mdl text) RETURNS real LANGUAGE sql AS $$
  SELECT train_loss FROM bft_train('skewed', 'body', 'label', epochs => 2, batch_size => 8, seed => 5,
         learning_rate => 1e-3, mlm_epochs => 0, max_length => 16, model => mdl, class_weights => cw,
         architecture => '{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 32, "vocab_size": 120}')
$$;

-- 'balanced': n / (classes x count) = 48/(3*36), 48/(3*8), 48/(3*4)
SELECT train_skewed(NULL, 'plain') > 0 AS plain, train_skewed('balanced', 'balanced') > 0 AS balanced;
SELECT name, params->'class_weights' AS given, metrics->'class_weights' AS used
  FROM bft.models WHERE name IN ('plain', 'balanced') ORDER BY name;
-- same seed and data, the weighted loss trains another model
SELECT (SELECT metrics->'train_loss' FROM bft.models WHERE name = 'plain') <>
       (SELECT metrics->'train_loss' FROM bft.models WHERE name = 'balanced') AS loss_differs,
       bft_predict_proba('central bank raises rates', 'plain') <>
       bft_predict_proba('central bank raises rates', 'balanced') AS model_differs;

-- by label name (unnamed labels keep 1), by class id (sorted names: common, rare, scarce)
SELECT train_skewed('{"rare": 4.5, "scarce": 9}', 'named') > 0 AS named,
       train_skewed('[1, 4.5, 9]', 'json_array') > 0 AS json_array,
       train_skewed(' {1, 4.5, 9}', 'array_literal') > 0 AS array_literal,
       train_skewed('none', 'none') > 0 AS "none";
SELECT name, params->'class_weights' AS given, metrics->'class_weights' AS used
  FROM bft.models WHERE name IN ('named', 'json_array', 'array_literal', 'none') ORDER BY name;
-- the same weights by name or by id train the same model
SELECT count(DISTINCT bft_predict_proba('central bank raises rates', name)) AS distinct_models
  FROM (VALUES ('named'), ('json_array'), ('array_literal')) v(name);
SELECT (SELECT metrics->'train_loss' FROM bft.models WHERE name = 'none') =
       (SELECT metrics->'train_loss' FROM bft.models WHERE name = 'plain') AS none_is_unweighted;

-- errors
SELECT train_skewed('{"rare": 2, "other": 1}', 'e');
SELECT train_skewed('[1, 2]', 'e');
SELECT train_skewed('{1, 0, 2}', 'e');
SELECT train_skewed('{"rare": -1}', 'e');
SELECT train_skewed('{"rare": "x"}', 'e');
SELECT train_skewed('[1, 2, null]', 'e');
SELECT train_skewed('{}', 'e');
SELECT train_skewed('heavy', 'e');
SELECT train_skewed('[1, 2', 'e');
SELECT count(*) AS stored_after_errors FROM bft.models WHERE name = 'e';

-- best epoch and early stopping: labels drawn at random (no signal); the
-- encoder alone (no n-gram head), so the validation scores stored are the
-- kept epoch's
CREATE TABLE noise (body text, label int);
INSERT INTO noise
SELECT 'word' || (i * 7919 % 101) || ' word' || (i * 104729 % 97) || ' word' || (i % 13),
       (i * 2654435761 % 1000003) % 2
  FROM generate_series(1, 120) i;
CREATE FUNCTION train_noise(mdl text, lb bool, metric text, patience int) RETURNS int LANGUAGE sql AS $$
  SELECT epochs FROM bft_train('noise', 'body', 'label', epochs => 12, batch_size => 8, seed => 3,
         learning_rate => 3e-3, mlm_epochs => 0, max_length => 16, model => mdl, validation_fraction => 0.25,
         load_best_model_at_end => lb, metric_for_best_model => metric, early_stopping_patience => patience,
         architecture => '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                           "intermediate_size": 64, "vocab_size": 150, "ngram_head": false}')
$$;
SELECT train_noise('es_loss', NULL, NULL, 2) < 12 AS stopped_early;
SELECT train_noise('last', false, 'loss', 2) < 12 AS stopped_early;
SELECT train_noise('full', true, 'accuracy', NULL) AS epochs_run;
CREATE VIEW runs AS
SELECT name,
       params->'load_best_model_at_end' AS load_best, params->>'metric_for_best_model' AS metric,
       params->'early_stopping_patience' AS patience,
       (metrics->>'epochs_run')::int AS ran, (metrics->>'kept_epoch')::int AS kept,
       (metrics->>'best_epoch')::int AS best, metrics->>'stop_reason' AS stop_reason,
       jsonb_array_length(metrics->'epochs') AS epoch_rows,
       (SELECT (e->>'epoch')::int FROM jsonb_array_elements(metrics->'epochs') e
         ORDER BY CASE params->>'metric_for_best_model' WHEN 'loss' THEN (e->>'eval_loss')::float8
                  ELSE -(e->>'eval_accuracy')::float8 END, (e->>'epoch')::int LIMIT 1) AS best_by_epochs,
       (SELECT e->'eval_loss' FROM jsonb_array_elements(metrics->'epochs') e
         WHERE (e->>'epoch')::int = (m.metrics->>'kept_epoch')::int) = metrics->'validation_loss' AS kept_metrics
  FROM bft.models m WHERE name IN ('es_loss', 'last', 'full');
-- es_loss: stops 2 epochs after its best and keeps it; last: the same run,
-- keeping the last epoch; full: all 12 epochs, keeps the most accurate
-- (whether full's best epoch is its last depends on the run: not shown)
SELECT name, load_best, metric, patience,
       CASE WHEN stop_reason = 'early_stopping' THEN ran = best + 2 END AS stopped_after_patience,
       kept = best AS kept_best, CASE WHEN name <> 'full' THEN kept = ran END AS kept_last,
       best = best_by_epochs AS best_is_argbest,
       CASE WHEN stop_reason = 'early_stopping' THEN best < ran END AS best_not_last,
       stop_reason, epoch_rows = ran AS one_row_per_epoch, kept_metrics
  FROM runs ORDER BY name;
SELECT (SELECT ran FROM runs WHERE name = 'es_loss') = (SELECT ran FROM runs WHERE name = 'last') AS same_stop,
       bft_predict_proba('word1 word2 word3', 'es_loss') <> bft_predict_proba('word1 word2 word3', 'last')
         AS other_weights_kept;
-- errors
SELECT train_noise('e', NULL, 'f1', NULL);
SELECT train_noise('e', NULL, NULL, -1);
SELECT train_noise('e', true, 'loss', 0) AS no_early_stopping;
SELECT version FROM bft_train('noise', 'body', 'label', early_stopping_patience => 2, model => 'e');
SELECT version FROM bft_train('noise', 'body', 'label', load_best_model_at_end => true, model => 'e');
DROP VIEW runs;
DROP FUNCTION train_noise(text, bool, text, int);
DROP TABLE noise;

-- from scratch, the defaults follow the data (src/pg/defaults.h): epochs and
-- MLM epochs from budgets of optimizer steps, the shape and vocabulary from
-- the number of rows, each unless given
CREATE TABLE few (body text, label text);
INSERT INTO few SELECT 'w' || (i % 7) || ' x' || (i % 5), CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END
  FROM generate_series(1, 40) i;
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_default', max_length => 8,
       architecture => '{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 16, "vocab_size": 100}');
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_given', epochs => 2, mlm_epochs => 1,
       batch_size => 20, max_length => 8, architecture => '{"hidden_size": 8, "num_hidden_layers": 1,
       "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 100}');
-- the small shape chosen for few rows trains at 1e-3 unless a rate is given
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_shape', epochs => 1, mlm_epochs => 0,
       max_length => 8);
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_shape_lr', epochs => 1, mlm_epochs => 0,
       max_length => 8, learning_rate => 2e-4);
-- batch_size 1: 40 steps an epoch, so ceil(1880 / 40) = 47 epochs and
-- ceil(3000 / 40) = 75 MLM epochs, inside the bounds
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_steps', batch_size => 1, max_length => 8,
       architecture => '{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 16, "vocab_size": 100}');
-- 3,000 rows: a vocabulary of 4 pieces per 3 rows (4000)
INSERT INTO few SELECT 'v' || i, CASE WHEN i % 2 = 0 THEN 'even' ELSE 'odd' END FROM generate_series(1, 2960) i;
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_vocab', epochs => 1, mlm_epochs => 0,
       max_length => 8, architecture => '{"hidden_size": 8, "num_hidden_layers": 1,
       "num_attention_heads": 2, "intermediate_size": 16}');
-- and 94 steps an epoch (batch 32): ceil(1880 / 94) = 20 epochs and
-- ceil(3000 / 94) = 32 MLM epochs, inside the bounds
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_mlm_steps', max_length => 8,
       architecture => '{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 16, "vocab_size": 100}');
-- unlabeled rows count for the MLM budget only: 1,520 labeled rows (48 steps
-- an epoch, ceil(1880 / 48) = 40 epochs) and 1,480 unlabeled, 3,000 for MLM
-- (32 MLM epochs as above)
UPDATE few SET label = NULL WHERE body ~ '^v' AND substr(body, 2)::int % 2 = 0;
SELECT epochs FROM bft_train('few', 'body', 'label', model => 'few_unlabeled', max_length => 8,
       architecture => '{"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 16, "vocab_size": 100}');
SELECT name, params->'epochs' AS epochs, params->'mlm_epochs' AS mlm_epochs,
       params->'architecture'->'hidden_size' AS hidden, params->'architecture'->'num_hidden_layers' AS layers,
       params->'architecture'->'vocab_size' AS vocab, metrics->'steps' AS steps,
       params->'learning_rate' AS lr, metrics->'train_rows' AS train_rows, metrics->'mlm'->'rows' AS mlm_rows
  FROM bft.models WHERE name LIKE 'few%' ORDER BY name;
DROP TABLE few;

SELECT bft_drop_model(name) FROM (SELECT DISTINCT name FROM bft.models) m ORDER BY 1;
DROP FUNCTION train_skewed(text, text);
DROP TABLE skewed;
