-- bft_multilabel: a text[] or integer[] label column trains a multi-label
-- classifier (sigmoid per label, binary cross-entropy); label sets from
-- bft_classify_labels / bft_predict at bft.multilabel_threshold; evaluation
-- (subset accuracy, micro/macro-F1); export/import round trip of
-- problem_type; deploy => 'if_better' between label-set versions.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;

-- Each word names one tag: "fruit" (apple, pear), "red" (cherry, apple is
-- both), "vehicle" (car, bus); texts mix them, some have no tag.
CREATE TABLE docs (id serial PRIMARY KEY, body text, tags text[], tag_ids int[]);
INSERT INTO docs (body, tags)
SELECT w.body, w.tags
  FROM generate_series(1, 6) r,
       (VALUES ('apple', ARRAY['fruit', 'red']),
               ('pear', ARRAY['fruit']),
               ('cherry', ARRAY['red']),
               ('car', ARRAY['vehicle']),
               ('bus', ARRAY['vehicle']),
               ('pear bus', ARRAY['fruit', 'vehicle']),
               ('cherry car', ARRAY['red', 'vehicle']),
               ('apple bus', ARRAY['fruit', 'red', 'vehicle']),
               ('the', ARRAY[]::text[]),
               ('a the', ARRAY[]::text[])) AS w(body, tags);
UPDATE docs SET tag_ids = ARRAY(SELECT CASE t WHEN 'fruit' THEN 0 WHEN 'red' THEN 1 ELSE 2 END FROM unnest(tags) t);
INSERT INTO docs (body, tags) VALUES ('no tags known', NULL), (NULL, ARRAY['red']);
\set tiny '''{"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 100}'''

SELECT model, version, rows_used, validation_accuracy IS NOT NULL AS validated
  FROM bft_train('docs', 'body', 'tags', 60, model => 'tagger', batch_size => 8, learning_rate => 3e-3,
                 mlm_epochs => 0, architecture => :tiny, validation_fraction => 0.2);
SELECT labels, config->>'problem_type' AS problem_type, params->>'label_type' AS label_type,
       metrics->'classes' AS classes, metrics->'validation_rows' AS validation_rows
  FROM bft.models WHERE name = 'tagger';

-- label sets, most probable first
SELECT body, bft_classify_labels(body, 'tagger') AS labels
  FROM (VALUES ('apple'), ('pear'), ('apple bus'), ('the')) v(body);
SELECT count(*) AS rows,
       count(*) FILTER (WHERE (SELECT array_agg(x ORDER BY x) FROM unnest(bft_classify_labels(body, 'tagger')) x)
                              IS NOT DISTINCT FROM (SELECT array_agg(x ORDER BY x) FROM unnest(tags) x)) >= 36 AS mostly_exact
  FROM docs WHERE body IS NOT NULL AND tags IS NOT NULL;
-- bft_predict: every label above the threshold (top_k NULL), at most top_k
SELECT label, label_id, score >= 0.5 AS above FROM bft_predict('apple bus', 'tagger') ORDER BY score DESC;
SELECT count(*) AS top1 FROM bft_predict('apple bus', 'tagger', 1);
SELECT count(*) AS none FROM bft_predict('the', 'tagger');
-- the threshold is a setting
SET bft.multilabel_threshold = 0.999999;
SELECT cardinality(bft_classify_labels('apple bus', 'tagger')) AS at_0_999999;
SET bft.multilabel_threshold = 0;
SELECT cardinality(bft_classify_labels('the', 'tagger')) AS at_0;
RESET bft.multilabel_threshold;
-- probabilities are independent sigmoids
SELECT array_length(p, 1) AS k, bool_and(x BETWEEN 0 AND 1) AS in_range, sum(x) > 1.5 AS not_a_softmax
  FROM (SELECT bft_predict_proba('apple bus', 'tagger') AS p) s, unnest(p) x GROUP BY p;
-- the batch form: one row per non-NULL element, idx = its subscript
SELECT * FROM bft_classify_labels_batch(ARRAY['pear', NULL, 'car', 'the'], 'tagger');
SELECT count(*) FROM bft_classify_labels_batch('{}'::text[], 'tagger');
SELECT count(*) AS rows, bool_and(b.labels = bft_classify_labels(g.a[b.idx], 'tagger')) AS batch_matches
  FROM (SELECT array_agg(body ORDER BY id) AS a FROM docs WHERE body IS NOT NULL) g,
       LATERAL bft_classify_labels_batch(g.a, 'tagger') b;
-- single-label functions refuse a multi-label model
\set VERBOSITY sqlstate
SELECT bft_classify('apple', 'tagger');
SELECT bft_classify_batch(ARRAY['apple'], 'tagger');
\set VERBOSITY default
SELECT bft_classify('apple', 'tagger');

-- evaluation: subset accuracy, macro/micro-F1 (the same rows counted by hand above)
SELECT e.accuracy >= 0.6 AS accurate, e.rows, e.report->'problem_type' AS problem_type, e.report->'labels' AS labels,
       e.accuracy = (e.report->>'subset_accuracy')::real AS subset,
       (e.report->>'micro_f1')::float8 BETWEEN 0 AND 1 AS micro, e.macro_f1 > 0.5 AS macro,
       e.report->'per_label'->'vehicle'->'support' AS vehicle_support, e.report->'skipped' AS skipped
  FROM bft_evaluate('tagger', 'docs', 'body', 'tags') e;
SELECT e.accuracy = (SELECT (count(*) FILTER (WHERE (SELECT array_agg(x ORDER BY x) FROM unnest(bft_classify_labels(body, 'tagger')) x)
                                             IS NOT DISTINCT FROM (SELECT array_agg(x ORDER BY x) FROM unnest(tags) x))::float8 / count(*))::real
                      FROM docs WHERE body IS NOT NULL AND tags IS NOT NULL) AS subset_accuracy_by_hand
  FROM bft_evaluate('tagger', 'docs', 'body', 'tags') e;
-- one label per row is a set of one; an unknown label is a class of its own
CREATE VIEW docs_one AS SELECT body, coalesce(tags[1], 'none') AS tag FROM docs;
SELECT e.rows, e.report->'labels' AS labels FROM bft_evaluate('tagger', 'docs_one', 'body', 'tag') e;

-- integer[] labels: class ids
SELECT version FROM bft_train('docs', 'body', 'tag_ids', 60, model => 'tagger_ids', batch_size => 8, learning_rate => 3e-3,
                              mlm_epochs => 0, architecture => :tiny);
SELECT labels, config->>'problem_type' AS problem_type, params->>'label_type' AS label_type
  FROM bft.models WHERE name = 'tagger_ids';
SELECT array_agg(x ORDER BY x) AS ids_as_labels FROM unnest(bft_classify_labels('apple bus', 'tagger_ids')) x;

-- export and import: problem_type travels in config.json
\set exportdir '/tmp/bft_regress_export_multilabel'
SELECT bft_export_model('tagger', :'exportdir');
SELECT pg_read_file(:'exportdir' || '/config.json')::jsonb->>'problem_type' AS exported_problem_type;
SELECT version FROM bft_import_model('tagger_copy', :'exportdir');
SELECT bft_predict_proba('apple bus', 'tagger_copy') = bft_predict_proba('apple bus', 'tagger') AS same_probabilities,
       bft_classify_labels('cherry car', 'tagger_copy') = bft_classify_labels('cherry car', 'tagger') AS same_labels;

-- deploy => 'if_better' between label-set versions; a single-label version is not comparable
SELECT version FROM bft_train('docs', 'body', 'tags', 1, model => 'tagger', batch_size => 8, learning_rate => 1e-6,
                              mlm_epochs => 0, architecture => :tiny, validation_fraction => 0.2, deploy => 'if_better');
SELECT metrics->'deploy'->>'deployed' AS deployed, metrics->'deploy'->'compared_version' AS compared,
       (metrics->'deploy'->>'new_accuracy')::float8 <= (metrics->'deploy'->>'compared_accuracy')::float8 AS not_better
  FROM bft.models WHERE name = 'tagger' AND version = 2;
CREATE VIEW docs_first AS SELECT body, tags[1] AS tag FROM docs;
SELECT version FROM bft_train('docs_first', 'body', 'tag', 20, model => 'tagger', batch_size => 8, learning_rate => 3e-3,
                              mlm_epochs => 0, architecture => :tiny, validation_fraction => 0.2, deploy => 'if_better');
SELECT metrics->'deploy'->>'deployed' AS deployed, metrics->'deploy'->'comparable' AS comparable
  FROM bft.models WHERE name = 'tagger' AND version = 3;
-- a single-label version evaluated on label sets, and bft_classify_labels of it
\set VERBOSITY sqlstate
SELECT * FROM bft_evaluate('tagger@3', 'docs', 'body', 'tags');
\set VERBOSITY default
SELECT cardinality(bft_classify_labels('apple', 'tagger@3')) AS one_label;

-- training errors
CREATE TABLE same_tags AS SELECT body, ARRAY['x'] AS tags FROM docs WHERE body IS NOT NULL;
CREATE TABLE no_tags AS SELECT body, ARRAY[]::text[] AS tags FROM docs WHERE body IS NOT NULL;
SELECT * FROM bft_train('same_tags', 'body', 'tags', 1, architecture => :tiny, mlm_epochs => 0);
SELECT * FROM bft_train('no_tags', 'body', 'tags', 1, architecture => :tiny, mlm_epochs => 0);

SELECT sum(bft_drop_model(name)) FROM (SELECT DISTINCT name FROM bft.models) s;
DROP VIEW docs_one, docs_first;
DROP TABLE docs, same_tags, no_tags;
