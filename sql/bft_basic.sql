-- bft_basic: train tiny models from scratch on separable tables, classify in
-- SELECTs, versions, deployment, the default model, drop.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;

CREATE TABLE reviews (id serial PRIMARY KEY, body text, sentiment text);
INSERT INTO reviews (body, sentiment)
SELECT CASE WHEN i % 2 = 0
            THEN (ARRAY['good great','great nice','nice fine good','fine great'])[1 + i % 4]
                 || (ARRAY[' product', ' service', ' price'])[1 + i % 3]
            ELSE (ARRAY['bad awful','awful poor','poor terrible bad','terrible awful'])[1 + i % 4]
                 || (ARRAY[' product', ' service', ' price'])[1 + i % 3] END,
       CASE WHEN i % 2 = 0 THEN 'pos' ELSE 'neg' END
  FROM generate_series(1, 48) i;
INSERT INTO reviews (body, sentiment) VALUES (NULL, 'pos'), ('good but no label', NULL);

-- A tiny BERT from scratch (vocabulary learned from the column).
SELECT model, version, rows_used, epochs, validation_accuracy >= 0.9 AS learned,
       validation_macro_f1 >= 0.9 AS f1_ok, train_loss > 0 AS loss_ok,
       samples_per_second > 0 AS sps_ok, duration > '0'::interval AS took_time
  FROM bft_train('reviews', 'body', 'sentiment', epochs => 25, batch_size => 8,
                 learning_rate => 1e-3, validation_fraction => 0.25,
                 mlm_epochs => 0, architecture => '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 64, "vocab_size": 200}');

SELECT name, version, base, labels, rows, accuracy >= 0.9 AS accurate, deployed FROM bft.model_list;
SELECT labels, has_mlm, created_by, deployed_at IS NOT NULL AS deployed,
       metrics->'rows_used' AS rows_used, metrics->'rows_skipped' AS skipped,
       metrics->'train_rows' AS train_rows, metrics->'validation_rows' AS validation_rows,
       jsonb_array_length(metrics->'epochs') AS epochs_logged,
       metrics->'deploy' AS deploy,
       params->'batch_size' AS batch_size, params->'max_length' AS max_length,
       params->'architecture'->'hidden_size' AS hidden,
       config->>'hidden_size' AS cfg_hidden, config->'id2label' AS id2label,
       size > 0 AS has_size
  FROM bft.models WHERE name = 'reviews';

-- Classification in ordinary SELECTs.
SELECT bft_classify('good great product'), bft_classify('awful terrible product');
SELECT body, bft_classify(body) FROM reviews WHERE id IN (1, 2, 3, 4) ORDER BY id;
SELECT count(*) AS rows, count(*) FILTER (WHERE bft_classify(body) = sentiment) AS correct
  FROM reviews WHERE body IS NOT NULL AND sentiment IS NOT NULL;
SELECT label, label_id FROM bft_predict('nice fine good', top_k => 2);
SELECT label, label_id, score > 0.5 AS confident FROM bft_predict('poor terrible', 'reviews');
SELECT array_length(p, 1) AS n, round(sum(x)::numeric, 4) AS total
  FROM (SELECT bft_predict_proba('great nice') AS p) s, unnest(p) x GROUP BY p;
SELECT bft_classify_batch(ARRAY['good great', NULL, 'awful poor', 'fine']);
SELECT bft_classify_batch('{}'::text[]);
SELECT bft_classify_batch(array_agg(body ORDER BY id)) = array_agg(bft_classify(body) ORDER BY id) AS batch_matches
  FROM reviews WHERE body IS NOT NULL;
-- NULL text gives NULL; NULL model means the default model.
SELECT bft_classify(NULL) IS NULL AS null_in_null_out, bft_classify('good great', NULL) AS default_model;
SELECT count(*) FROM bft_predict(NULL);
SELECT bft_predict_proba(NULL) IS NULL AS null_proba;
-- A 1 MB text is truncated to the model's max_length and classified.
SELECT bft_classify(repeat('good great ', 100000)) AS one_megabyte;
SELECT count(*) AS ids FROM bft_tokenize(repeat('good great ', 100000));
SELECT token, token_id >= 0 AS has_id FROM bft_tokenize('good product');

-- Evaluation: accuracy, macro-F1, per-label report and confusion matrix.
SELECT accuracy, macro_f1, rows, report->'labels' AS labels,
       report->'confusion_matrix' AS confusion, report->'per_label'->'pos'->'support' AS pos_support,
       report->'skipped' AS skipped
  FROM bft_evaluate('reviews', 'reviews', 'body', 'sentiment');

-- Read-only transactions classify (nothing on the classify path writes).
BEGIN TRANSACTION READ ONLY;
SELECT bft_classify('good great'), bft_classify_batch(ARRAY['awful']);
SELECT label FROM bft_predict('terrible awful product');
SELECT accuracy FROM bft_evaluate('reviews', 'reviews', 'body', 'sentiment');
COMMIT;

-- Integer labels (class ids) and a varchar text column.
CREATE TABLE tickets (subject varchar(200), category int);
INSERT INTO tickets
SELECT (ARRAY['invoice payment refund', 'password login account', 'shipping delivery parcel'])[1 + i % 3]
       || ' ' || (ARRAY['please', 'urgent', 'help', 'today'])[1 + i % 4], i % 3
  FROM generate_series(1, 45) i;
SELECT model, version, rows_used, validation_accuracy IS NULL AS no_validation
  FROM bft_train('tickets', 'subject', 'category', epochs => 25, batch_size => 8,
                 learning_rate => 1e-3, model => 'helpdesk', shuffle => false,
                 mlm_epochs => 0, architecture => '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 64, "vocab_size": 150}');
SELECT labels FROM bft.models WHERE name = 'helpdesk';
SELECT bft_classify('refund my invoice', 'helpdesk') AS billing,
       bft_classify('login password', 'helpdesk') AS access,
       bft_classify('parcel delivery', 'helpdesk') AS shipping;
SELECT accuracy, rows FROM bft_evaluate('helpdesk', 'tickets', 'subject', 'category');

-- The default model is the most recently deployed one; bft.default_model overrides.
SELECT bft_classify('shipping delivery parcel today');
SET bft.default_model = 'reviews';
SELECT bft_classify('good great');
RESET bft.default_model;

-- Versions: a second training of the same name is version 2 and is deployed;
-- bft_deploy rolls back; the next statement uses the deployed version.
SELECT model, version FROM bft_train('reviews', 'body', 'sentiment', epochs => 2, batch_size => 8,
       mlm_epochs => 0, architecture => '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64, "vocab_size": 200}', seed => 7);
SELECT name, version, deployed FROM bft.model_list WHERE name = 'reviews';
SELECT report->'version' AS used_version FROM bft_evaluate('reviews', 'reviews', 'body', 'sentiment');
SELECT bft_deploy('reviews', 1);
SELECT name, version, deployed FROM bft.model_list WHERE name = 'reviews';
SELECT report->'version' AS used_version FROM bft_evaluate('reviews', 'reviews', 'body', 'sentiment');
-- deploy => 'never' stores a version without deploying it.
SELECT version FROM bft_train('reviews', 'body', 'sentiment', epochs => 1, deploy => 'never',
       mlm_epochs => 0, architecture => '{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "intermediate_size": 64, "vocab_size": 200}');
SELECT name, version, deployed FROM bft.model_list WHERE name = 'reviews';
SELECT metrics->'deploy' FROM bft.models WHERE name = 'reviews' AND version = 3;

-- Drop: rows and large objects go away.
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
SELECT bft_drop_model('reviews', 2);
SELECT bft_drop_model('helpdesk');
SELECT name, version FROM bft.model_list;
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
SELECT bft_drop_model('reviews');
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
DROP TABLE reviews, tickets;
