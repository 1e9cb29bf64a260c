-- bft_versions: 'name@N' and 'name@latest' everywhere a model is named; a
-- version stored with deploy => 'never' evaluated next to the deployed one
-- in one SELECT; deploy => 'if_better:<metric>'; names, per-role cache and
-- 42704 for versions a role cannot see.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
\getenv abs_srcdir PG_ABS_SRCDIR
\set mlmdir :abs_srcdir '/tests/data/ckpt/tiny_mlm'

CREATE TABLE colours (t text, l text);
INSERT INTO colours SELECT (ARRAY['red apple', 'green leaf'])[1 + i % 2], (ARRAY['warm', 'cool'])[1 + i % 2]
  FROM generate_series(1, 20) i;
CREATE TABLE shapes (t text, l text);
INSERT INTO shapes SELECT (ARRAY['red apple', 'green leaf'])[1 + i % 2], (ARRAY['flat', 'round'])[1 + i % 2]
  FROM generate_series(1, 20) i;
\set tiny '''{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100}'''
-- v1: red apple is warm (deployed); v2: red apple is flat and v3 (another
-- seed) warm, stored only
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'vm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => :tiny);
SELECT version FROM bft_train('shapes', 't', 'l', 20, model => 'vm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => :tiny, deploy => 'never');
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'vm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => :tiny, deploy => 'never', seed => 7);

-- classification, prediction, probabilities, batch: plain = deployed, @N, @latest
SELECT bft_classify('red apple', 'vm') AS deployed, bft_classify('red apple', 'vm@1') AS v1,
       bft_classify('red apple', 'vm@2') AS v2, bft_classify('red apple', 'vm@latest') AS latest;
SELECT label, label_id FROM bft_predict('green leaf', 'vm@2', 2);
SELECT array_length(bft_predict_proba('green leaf', 'vm@2'), 1) AS k,
       bft_predict_proba('green leaf', 'vm@2') = bft_predict_proba('green leaf', 'vm@2') AS stable,
       bft_predict_proba('green leaf', 'vm@1') <> bft_predict_proba('green leaf', 'vm@2') AS differ;
SELECT bft_classify_batch(ARRAY['red apple', 'green leaf', NULL], 'vm@2') AS v2_batch,
       bft_classify_batch(ARRAY['red apple', 'green leaf'], 'vm') AS deployed_batch;
-- per-row calls alternating between versions of one name, in one statement
SELECT string_agg(bft_classify(t, CASE WHEN i % 2 = 0 THEN 'vm' ELSE 'vm@2' END), ',' ORDER BY i)
  FROM (SELECT t, row_number() OVER () AS i FROM colours LIMIT 6) s;
-- the same version by two references: identical answers
SELECT bft_predict_proba('red apple', 'vm') = bft_predict_proba('red apple', 'vm@1') AS same_row;
SELECT count(*) AS tokens FROM bft_tokenize('red apple', 'vm@2');

-- a stored-only version next to the deployed one, in one SELECT
SELECT m, e.report->'version' AS version, e.accuracy, e.rows
  FROM unnest(ARRAY['vm', 'vm@2', 'vm@latest']) m, LATERAL bft_evaluate(m, 'shapes', 't', 'l') e
 ORDER BY m;

-- the default model may name a version
SET bft.default_model = 'vm@2';
SELECT bft_classify('red apple') AS default_v2;
RESET bft.default_model;

-- fill-mask on an imported MLM checkpoint's versions
SELECT version FROM bft_import_model('mlm', :'mlmdir');
SELECT version FROM bft_import_model('mlm', :'mlmdir');
SELECT (SELECT array_agg(token_id) FROM bft_fill_mask('hello [MASK]', 3, 'mlm@1'))
     = (SELECT array_agg(token_id) FROM bft_fill_mask('hello [MASK]', 3, 'mlm@latest')) AS same_weights;
SELECT count(*) FROM bft_fill_mask('hello [MASK]', 2, 'mlm@2');

-- fine-tuning from a version
SELECT version
  FROM bft_train('shapes', 't', 'l', 5, model => 'vm_ft', base => 'vm@2', batch_size => 4, learning_rate => 1e-2);
SELECT base, bft_classify('red apple', 'vm_ft') AS fine_tuned_from_v2 FROM bft.models WHERE name = 'vm_ft';

-- export a version by reference (and by argument: they must agree)
\set exportdir '/tmp/bft_regress_export_versions'
SELECT bft_export_model('vm@2', :'exportdir') AS exported;
SELECT bft_export_model('vm@latest', :'exportdir') AS exported_latest;
SELECT bft_export_model('vm', :'exportdir', 2) AS exported_arg;
SELECT bft_export_model('vm@2', :'exportdir', 2) AS agreeing;
SELECT bft_export_model('vm@2', :'exportdir', 3);
SELECT * FROM bft_import_model('vm_copy', :'exportdir');
SELECT bft_classify('red apple', 'vm_copy') AS exported_v2;
SELECT lo_unlink(bft_copy_weights('vm@2')) AS copied;

-- deploy by reference
SELECT bft_deploy('vm@2');
SELECT bft_classify('red apple', 'vm') AS now_v2;
SELECT bft_deploy('vm@latest');
SELECT version FROM bft.model_list WHERE name = 'vm' AND deployed;
SELECT bft_deploy('vm', 1);
SELECT bft_deploy('vm');
SELECT bft_deploy('vm@2', 1);

-- errors: versions that do not exist (42704), malformed references, names with '@'
\set VERBOSITY sqlstate
SELECT bft_classify('red apple', 'vm@99');
SELECT bft_classify('red apple', 'nosuch@latest');
SELECT bft_classify('red apple', 'vm@0');
SELECT bft_classify('red apple', 'vm@99999999999');
SELECT bft_deploy('vm@99');
SELECT bft_drop_model('vm@99');
SELECT * FROM bft_train('colours', 't', 'l', 1, model => 'vm@4', architecture => :tiny);
SELECT * FROM bft_import_model('x@1', :'mlmdir');
\set VERBOSITY default
-- 'a@b' (no version after '@') is just a name
SELECT bft_classify('red apple', 'a@b');

-- deploy => 'if_better:<metric>'
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'vm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0,
                              architecture => :tiny, validation_fraction => 0.25, deploy => 'if_better:loss');
SELECT metrics->'deploy'->>'metric' AS metric, metrics->'deploy'->'compared_version' AS compared,
       (metrics->'deploy'->>'deployed')::bool
         = ((metrics->'deploy'->>'new_loss')::float8 < (metrics->'deploy'->>'compared_loss')::float8) AS decided_by_loss,
       metrics->'deploy' ?& ARRAY['new_accuracy', 'new_macro_f1', 'compared_accuracy', 'compared_macro_f1'] AS all_scores
  FROM bft.models WHERE name = 'vm' AND version = 4;
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'vm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0,
                              architecture => :tiny, validation_fraction => 0.25, deploy => 'if_better:macro_f1');
SELECT metrics->'deploy'->>'metric' AS metric,
       (metrics->'deploy'->>'deployed')::bool
         = ((metrics->'deploy'->>'new_macro_f1')::float8 > (metrics->'deploy'->>'compared_macro_f1')::float8) AS decided_by_f1
  FROM bft.models WHERE name = 'vm' AND version = 5;
SELECT * FROM bft_train('colours', 't', 'l', 1, model => 'vm', architecture => :tiny, validation_fraction => 0.25,
                        deploy => 'if_better:speed');

-- drop by reference
SELECT bft_drop_model('vm@latest') AS dropped_latest;
SELECT bft_drop_model('vm@3') AS dropped_v3;
SELECT array_agg(version ORDER BY version) FROM bft.models WHERE name = 'vm';

-- Security: a role that may classify sees only its rows (row-level
-- security); versions hidden from it are 42704, also after another role
-- cached them in this backend.
CREATE ROLE regress_bft_reader;
GRANT SELECT (id, name, version, deployed_at) ON bft.models TO regress_bft_reader;
ALTER TABLE bft.models ENABLE ROW LEVEL SECURITY;
CREATE POLICY regress_v1_only ON bft.models FOR SELECT TO regress_bft_reader USING (version = 1);
SELECT bft_classify('red apple', 'vm@2') AS cached_by_superuser;
SET ROLE regress_bft_reader;
SELECT bft_classify('red apple', 'vm@1') AS reader_v1;
\set VERBOSITY sqlstate
SELECT bft_classify('red apple', 'vm@2');
SELECT bft_classify('red apple', 'vm@latest') AS reader_latest_is_v1;
\set VERBOSITY default
SELECT bft_classify('red apple', 'vm@2');
RESET ROLE;
SELECT bft_classify('red apple', 'vm@2') AS superuser_again;
DROP POLICY regress_v1_only ON bft.models;
ALTER TABLE bft.models DISABLE ROW LEVEL SECURITY;
REVOKE ALL ON bft.models FROM regress_bft_reader;
DROP ROLE regress_bft_reader;

SELECT sum(bft_drop_model(name)) FROM (SELECT DISTINCT name FROM bft.models) s;
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
DROP TABLE colours, shapes;
