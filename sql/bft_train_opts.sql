-- bft_train_opts: class_weights (weighted cross-entropy) — 'balanced',
-- weights by label name (JSON object) or by class id (JSON array or array
-- literal), what is recorded in params/metrics, and the errors.
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

SELECT bft_drop_model(name) FROM (SELECT DISTINCT name FROM bft.models) m ORDER BY 1;
DROP FUNCTION train_skewed(text, text);
DROP TABLE skewed;
