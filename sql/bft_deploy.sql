-- bft_deploy: a version deployed by another session is used from the next
-- statement on, never in the middle of one; the per-backend cache follows
-- deployments and rollbacks and is bounded by bft.model_cache_size.
SET bft.threads = 1;
SET bft.progress_interval = 0;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS dblink;
SELECT 'dbname=' || current_database() || ' port=' || current_setting('port')
       || ' host=' || split_part(current_setting('unix_socket_directories'), ',', 1) AS conn \gset

CREATE TABLE colours (t text, l text);
INSERT INTO colours SELECT (ARRAY['red apple', 'green leaf'])[1 + i % 2], (ARRAY['warm', 'cool'])[1 + i % 2]
  FROM generate_series(1, 20) i;
CREATE TABLE shapes (t text, l text);
INSERT INTO shapes SELECT (ARRAY['red apple', 'green leaf'])[1 + i % 2], (ARRAY['round', 'flat'])[1 + i % 2]
  FROM generate_series(1, 20) i;
\set tiny '''{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100}'''
-- version 1 answers warm/cool, version 2 (deployed) round/flat
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => :tiny);
SELECT version FROM bft_train('shapes', 't', 'l', 20, model => 'm', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => :tiny);
SELECT bft_classify('red apple', 'm') AS v2;

-- Another session deploys version 1 while this statement runs (row 2):
-- every row of the statement still uses version 2.
SELECT i, bft_classify('red apple', 'm') AS before,
       CASE WHEN i = 2 THEN dblink_exec(:'conn', 'DO $$ BEGIN PERFORM bft_deploy(''m'', 1); END $$') END AS other_session,
       bft_classify('red apple', 'm') AS after
  FROM generate_series(1, 3) i;
-- the next statement uses version 1
SELECT bft_classify('red apple', 'm') AS v1, bft_classify('green leaf', 'm') AS v1_too;
-- and a rollback to version 2 from the other session likewise
SELECT dblink_exec(:'conn', 'DO $$ BEGIN PERFORM bft_deploy(''m'', 2); END $$');
SELECT bft_classify('red apple', 'm') AS v2_again;
-- a new version trained in the other session is picked up after its commit
SELECT dblink_exec(:'conn', 'DO $$ BEGIN SET client_min_messages = warning; PERFORM bft_train(''colours'', ''t'', ''l'', 20, model => ''m'', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => ''{"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 100}''); END $$');
SELECT bft_classify('green leaf', 'm') AS v3, (SELECT max(version) FROM bft.models WHERE name = 'm') AS latest;
-- version 3 dropped in the other session: the next statement uses version 2 again
SELECT dblink_exec(:'conn', 'DO $$ BEGIN PERFORM bft_drop_model(''m'', 3); END $$');
SELECT bft_classify('green leaf', 'm') AS back_to_deployed_v2;

-- A cache of one model, two models used alternately: always the right one.
SELECT version FROM bft_train('colours', 't', 'l', 20, model => 'c', batch_size => 4, learning_rate => 1e-2, mlm_epochs => 0, architecture => :tiny);
SET bft.model_cache_size = 1;
SELECT bft_classify('red apple', 'm') AS m, bft_classify('red apple', 'c') AS c,
       bft_classify('green leaf', 'm') AS m2, bft_classify('green leaf', 'c') AS c2;
SELECT string_agg(bft_classify(t, CASE WHEN i % 2 = 0 THEN 'm' ELSE 'c' END), ',' ORDER BY i)
  FROM (SELECT t, row_number() OVER () AS i FROM colours LIMIT 6) s;
RESET bft.model_cache_size;

-- Within a transaction, the deployment is seen from the next statement too.
BEGIN;
SELECT bft_deploy('m', 1);
SELECT bft_classify('red apple', 'm') AS v1_in_xact;
ROLLBACK;
SELECT bft_classify('red apple', 'm') AS v2_after_rollback;

SELECT sum(bft_drop_model(name)) FROM (SELECT DISTINCT name FROM bft.models) s;
SELECT count(*) AS models, (SELECT count(*) FROM pg_largeobject_metadata) AS large_objects FROM bft.models;
DROP TABLE colours, shapes;
DROP EXTENSION dblink;
