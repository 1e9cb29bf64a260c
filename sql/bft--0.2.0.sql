-- bft 0.2.0: BERT fine-tuning and text classification inside PostgreSQL.
\echo Use "CREATE EXTENSION bft" to load this file. \quit

CREATE SCHEMA IF NOT EXISTS bft;

-- One row per model version.  weights: safetensors bytes in a large object
-- (\lo_export gives a loadable model.safetensors).  A model name's deployed
-- version is the one with the latest deployed_at; with none deployed, its
-- latest version is used.
CREATE TABLE bft.models (
    id               bigserial PRIMARY KEY,
    name             text NOT NULL CHECK (name <> ''),
    version          int NOT NULL CHECK (version > 0),
    base             text,
    config           jsonb NOT NULL,
    tokenizer_config jsonb,
    labels           text[] NOT NULL DEFAULT '{}',
    vocab            text NOT NULL,
    weights          oid NOT NULL,
    size             bigint,
    params           jsonb NOT NULL DEFAULT '{}',
    metrics          jsonb NOT NULL DEFAULT '{}',
    has_mlm          bool NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       name NOT NULL DEFAULT current_user,
    deployed_at      timestamptz,
    UNIQUE (name, version)
);
CREATE INDEX models_deployed_idx ON bft.models (name, deployed_at);
-- Models travel with pg_dump (their large objects too).
SELECT pg_catalog.pg_extension_config_dump('bft.models', '');
SELECT pg_catalog.pg_extension_config_dump('bft.models_id_seq', '');

CREATE VIEW bft.model_list AS
SELECT m.name,
       m.version,
       m.base,
       cardinality(m.labels) AS labels,
       (m.metrics->>'rows_used')::bigint AS rows,
       round((m.metrics->>'validation_accuracy')::numeric, 4) AS accuracy,
       (m.id = (SELECT d.id FROM bft.models d WHERE d.name = m.name
                ORDER BY d.deployed_at DESC NULLS LAST, d.version DESC LIMIT 1)) AS deployed,
       m.created_at,
       pg_size_pretty(m.size) AS size
  FROM bft.models m
 ORDER BY m.name, m.version;
-- security_invoker (PostgreSQL 15+): the view shows what the caller may
-- SELECT from bft.models, nothing more.  (Before 15 it is granted only to
-- the extension owner; grant it together with SELECT on bft.models.)
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        ALTER VIEW bft.model_list SET (security_invoker = true);
    END IF;
END $$;

-- Training ---------------------------------------------------------------

CREATE FUNCTION bft_train(
    relation regclass,
    text_column name,
    label_column name,
    epochs int DEFAULT NULL,
    model text DEFAULT NULL,
    base text DEFAULT NULL,
    batch_size int DEFAULT NULL,
    learning_rate float8 DEFAULT NULL,
    max_length int DEFAULT NULL,
    warmup_ratio float8 DEFAULT NULL,
    weight_decay float8 DEFAULT 0,
    dropout float8 DEFAULT NULL,
    shuffle bool DEFAULT true,
    seed int DEFAULT 42,
    validation_fraction float8 DEFAULT 0,
    deploy text DEFAULT 'always',
    device text DEFAULT NULL,
    architecture jsonb DEFAULT NULL,
    mlm_epochs int DEFAULT NULL,
    group_by_length bool DEFAULT NULL,
    class_weights text DEFAULT NULL,
    load_best_model_at_end bool DEFAULT NULL,
    metric_for_best_model text DEFAULT NULL,
    early_stopping_patience int DEFAULT NULL,
    resume bool DEFAULT false,
    train_precision text DEFAULT NULL)
RETURNS TABLE (model text, version int, rows_used bigint, epochs int, train_loss real,
               validation_accuracy real, validation_macro_f1 real,
               samples_per_second real, duration interval)
AS 'MODULE_PATHNAME', 'bft_train_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Classification (read-only: usable on hot standbys and in read-only
-- transactions; PARALLEL SAFE: each worker loads the model once) ---------

CREATE FUNCTION bft_classify(text text, model text DEFAULT NULL)
RETURNS text
AS 'MODULE_PATHNAME', 'bft_classify_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION bft_predict(text text, model text DEFAULT NULL, top_k int DEFAULT 1)
RETURNS TABLE (label text, label_id int, score real)
AS 'MODULE_PATHNAME', 'bft_predict_sql'
LANGUAGE C STABLE PARALLEL SAFE ROWS 1;

CREATE FUNCTION bft_predict_proba(text text, model text DEFAULT NULL)
RETURNS real[]
AS 'MODULE_PATHNAME', 'bft_predict_proba_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION bft_classify_batch(texts text[], model text DEFAULT NULL)
RETURNS text[]
AS 'MODULE_PATHNAME', 'bft_classify_batch_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION bft_fill_mask(text text, top_k int DEFAULT 10, model text DEFAULT NULL)
RETURNS TABLE (token text, token_id int, score real)
AS 'MODULE_PATHNAME', 'bft_fill_mask_sql'
LANGUAGE C STABLE PARALLEL SAFE ROWS 10;

-- The compute devices as this backend sees them (asking initialises CUDA here).
CREATE FUNCTION bft_devices()
RETURNS TABLE (device text, available bool, name text, detail text)
AS 'MODULE_PATHNAME', 'bft_devices_sql'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE FUNCTION bft_tokenize(text text, model text DEFAULT NULL)
RETURNS TABLE (token text, token_id int)
AS 'MODULE_PATHNAME', 'bft_tokenize_sql'
LANGUAGE C STABLE PARALLEL SAFE ROWS 32;

CREATE FUNCTION bft_evaluate(model text, relation regclass, text_column name, label_column name)
RETURNS TABLE (accuracy real, macro_f1 real, rows bigint, report jsonb)
AS 'MODULE_PATHNAME', 'bft_evaluate_sql'
LANGUAGE C STABLE PARALLEL RESTRICTED;

-- Model management --------------------------------------------------------

CREATE FUNCTION bft_import_model(name text, directory text)
RETURNS TABLE (model text, version int)
AS 'MODULE_PATHNAME', 'bft_import_model_dir_sql'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION bft_import_model(name text, config jsonb, vocab text, weights oid,
                                 tokenizer_config jsonb DEFAULT NULL)
RETURNS TABLE (model text, version int)
AS 'MODULE_PATHNAME', 'bft_import_model_lo_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION bft_export_model(name text, directory text, version int DEFAULT NULL)
RETURNS int
AS 'MODULE_PATHNAME', 'bft_export_model_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION bft_deploy(name text, version int)
RETURNS void
AS 'MODULE_PATHNAME', 'bft_deploy_sql'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

CREATE FUNCTION bft_drop_model(name text, version int DEFAULT NULL)
RETURNS int
AS 'MODULE_PATHNAME', 'bft_drop_model_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Live progress of running trainings (any session) ------------------------

CREATE FUNCTION bft_progress()
RETURNS TABLE (pid int, usename name, datname name, model text, phase text, epoch int, epochs int,
               step bigint, steps bigint, loss real, samples_per_s real,
               started timestamptz, eta interval)
AS 'MODULE_PATHNAME', 'bft_progress_sql'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

CREATE VIEW bft.progress AS SELECT * FROM bft_progress();

-- Classifying needs SELECT on bft.models (at least its columns id, name,
-- version and deployed_at); tokenize, fill-mask, fine-tuning from a base and
-- exports need SELECT on all its columns; training and importing also INSERT
-- and USAGE on its sequence, and EXECUTE on the functions (revoked from
-- PUBLIC below).  See the README's "Privileges" and "Security" sections.
GRANT USAGE ON SCHEMA bft TO PUBLIC;
GRANT SELECT ON bft.progress TO PUBLIC;
DO $$
BEGIN
    IF current_setting('server_version_num')::int >= 150000 THEN
        GRANT SELECT ON bft.model_list TO PUBLIC;
    END IF;
END $$;

-- Background training jobs (issue 5) ---------------------------------------
-- bft_train_async() queues a bft_train() call and returns a job id at once;
-- a dynamic background worker (no shared_preload_libraries needed) runs it
-- as the submitting role once the submitting transaction has committed.
-- Users write to bft.train_jobs only through these functions (bookkeeping
-- runs as the table owner) and read their own jobs through bft.jobs.

CREATE TABLE bft.train_jobs (
    id           bigserial PRIMARY KEY,
    state        text NOT NULL DEFAULT 'queued'
                 CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    model        text NOT NULL,
    relation     text NOT NULL,
    args         jsonb NOT NULL,
    settings     jsonb NOT NULL DEFAULT '{}',
    userid       oid NOT NULL,
    username     name NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz,
    pid          int,
    version      int,
    result       jsonb,
    error        text
);
REVOKE ALL ON bft.train_jobs FROM PUBLIC;

CREATE FUNCTION bft_train_async(
    relation regclass,
    text_column name,
    label_column name,
    epochs int DEFAULT NULL,
    model text DEFAULT NULL,
    base text DEFAULT NULL,
    batch_size int DEFAULT NULL,
    learning_rate float8 DEFAULT NULL,
    max_length int DEFAULT NULL,
    warmup_ratio float8 DEFAULT NULL,
    weight_decay float8 DEFAULT 0,
    dropout float8 DEFAULT NULL,
    shuffle bool DEFAULT true,
    seed int DEFAULT 42,
    validation_fraction float8 DEFAULT 0,
    deploy text DEFAULT 'always',
    device text DEFAULT NULL,
    architecture jsonb DEFAULT NULL,
    mlm_epochs int DEFAULT NULL,
    group_by_length bool DEFAULT NULL,
    class_weights text DEFAULT NULL,
    load_best_model_at_end bool DEFAULT NULL,
    metric_for_best_model text DEFAULT NULL,
    early_stopping_patience int DEFAULT NULL,
    resume bool DEFAULT false,
    train_precision text DEFAULT NULL)
RETURNS bigint
AS 'MODULE_PATHNAME', 'bft_train_async_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

CREATE FUNCTION bft_cancel_job(id bigint)
RETURNS bool
AS 'MODULE_PATHNAME', 'bft_cancel_job_sql'
LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;

-- Is pid still the job's background worker (connected as userid here)?
CREATE FUNCTION bft.job_worker_alive(pid int, userid oid)
RETURNS bool
AS 'MODULE_PATHNAME', 'bft_job_worker_alive_sql'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- One row per job of the roles the caller is a member of (all for
-- superusers).  A queued/running job whose worker is gone shows as failed.
CREATE VIEW bft.jobs WITH (security_barrier = true) AS
SELECT j.id,
       CASE WHEN j.state IN ('queued', 'running') AND NOT bft.job_worker_alive(j.pid, j.userid)
            THEN 'failed' ELSE j.state END AS state,
       j.model,
       j.version,
       p.phase,
       p.epoch,
       p.epochs,
       p.step,
       p.steps,
       CASE WHEN p.steps > 0 THEN round(100.0 * p.step / p.steps, 1) END AS percent,
       p.loss,
       p.eta,
       CASE WHEN j.state IN ('queued', 'running') AND NOT bft.job_worker_alive(j.pid, j.userid)
            THEN 'the background worker exited without recording a result (server crash, restart or killed process)'
            ELSE j.error END AS error,
       j.username,
       j.relation,
       j.submitted_at,
       j.started_at,
       j.finished_at,
       coalesce(j.finished_at, now()) - j.started_at AS runtime,
       j.pid,
       j.args,
       j.result
  FROM bft.train_jobs j
  LEFT JOIN bft_progress() p ON p.pid = j.pid AND j.state = 'running'
 WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles r
                WHERE r.oid = j.userid AND pg_catalog.pg_has_role(r.oid, 'USAGE'));
GRANT SELECT ON bft.jobs TO PUBLIC;

-- Security of the model store ----------------------------------------------
-- bft reads weights without large-object permission checks, so no user may
-- decide which object a row names: rows are written only by bft's own C code
-- (superusers excepted, e.g. pg_restore), weights belong to the extension's
-- owner, every object belongs to exactly one row, and deleting a row,
-- TRUNCATE or DROP EXTENSION unlinks the weights (and nothing else).
ALTER TABLE bft.models ADD UNIQUE (weights);

CREATE FUNCTION bft.models_guard()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bft_models_guard'
LANGUAGE C;

CREATE TRIGGER models_guard BEFORE INSERT OR UPDATE ON bft.models
    FOR EACH ROW EXECUTE FUNCTION bft.models_guard();

CREATE FUNCTION bft.models_unlink()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bft_models_unlink'
LANGUAGE C;

CREATE TRIGGER models_unlink AFTER DELETE ON bft.models
    FOR EACH ROW EXECUTE FUNCTION bft.models_unlink();

CREATE FUNCTION bft.models_truncate()
RETURNS trigger
AS 'MODULE_PATHNAME', 'bft_models_truncate'
LANGUAGE C;

CREATE TRIGGER models_truncate BEFORE TRUNCATE ON bft.models
    FOR EACH STATEMENT EXECUTE FUNCTION bft.models_truncate();

CREATE FUNCTION bft.drop_guard()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'bft_drop_guard'
LANGUAGE C;

-- DROP EXTENSION bft (also through DROP SCHEMA ... CASCADE of its schema or
-- DROP OWNED BY its owner) unlinks the weights first.
CREATE EVENT TRIGGER bft_drop_weights ON ddl_command_start
    WHEN TAG IN ('DROP EXTENSION', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION bft.drop_guard();

-- A copy of a version's weights as a new large object owned by the caller,
-- for \lo_export (the stored objects belong to the extension's owner).
CREATE FUNCTION bft_copy_weights(name text, version int DEFAULT NULL)
RETURNS oid
AS 'MODULE_PATHNAME', 'bft_copy_weights_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Who may run what.  PUBLIC keeps the read-only functions (classification
-- also needs SELECT on bft.models, which nobody has by default), bft_progress,
-- bft_devices and bft_cancel_job (own jobs only).  Everything that stores,
-- deploys, drops, exports or copies models is granted explicitly (README,
-- "Privileges"), on top of the privileges on bft.models it also checks.
REVOKE EXECUTE ON FUNCTION
    bft_train(regclass, name, name, int, text, text, int, float8, int, float8, float8, float8,
              bool, int, float8, text, text, jsonb, int, bool, text, bool, text, int, bool, text),
    bft_train_async(regclass, name, name, int, text, text, int, float8, int, float8, float8, float8,
                    bool, int, float8, text, text, jsonb, int, bool, text, bool, text, int, bool, text),
    bft_import_model(text, text),
    bft_import_model(text, jsonb, text, oid, jsonb),
    bft_export_model(text, text, int),
    bft_deploy(text, int),
    bft_drop_model(text, int),
    bft_copy_weights(text, int),
    bft.models_guard(),
    bft.models_unlink(),
    bft.models_truncate(),
    bft.drop_guard()
FROM PUBLIC;

-- Sentence embeddings ------------------------------------------------------
-- Read-only like classification (hot standbys, read-only transactions,
-- parallel workers); EXECUTE stays with PUBLIC and the caller needs SELECT
-- (id, name, version, deployed_at) on bft.models, as for bft_classify.  The
-- pooling is the model's (stored at import from sentence-transformers'
-- modules.json; mean without it) unless pooling names one, e.g.
-- 'mean+normalize' or 'cls'.
CREATE FUNCTION bft_embed(text text, model text DEFAULT NULL, pooling text DEFAULT NULL)
RETURNS real[]
AS 'MODULE_PATHNAME', 'bft_embed_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION bft_embed_batch(texts text[], model text DEFAULT NULL, pooling text DEFAULT NULL)
RETURNS TABLE (idx int, embedding real[])
AS 'MODULE_PATHNAME', 'bft_embed_batch_sql'
LANGUAGE C STABLE PARALLEL SAFE ROWS 100;

-- Addressable versions -------------------------------------------------------
-- Every function that takes a model name also takes 'name@N' (version N) and
-- 'name@latest' (the highest version); a plain name means the deployed
-- version.  bft_deploy('topics@3') needs no version argument.
CREATE OR REPLACE FUNCTION bft_deploy(name text, version int DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'bft_deploy_sql'
LANGUAGE C VOLATILE PARALLEL UNSAFE;

-- Multi-label classification -------------------------------------------------
-- A label column of type text[] or integer[] trains a multi-label classifier
-- (a sigmoid per label, problem_type "multi_label_classification").
-- bft_classify_labels gives the labels of one text whose probability reaches
-- bft.multilabel_threshold (a single-label model's one label), the batch form
-- those of an array's elements; bft_predict returns them all when top_k is
-- NULL (a single-label model: its best label).
CREATE FUNCTION bft_classify_labels(text text, model text DEFAULT NULL)
RETURNS text[]
AS 'MODULE_PATHNAME', 'bft_classify_labels_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION bft_classify_labels_batch(texts text[], model text DEFAULT NULL)
RETURNS TABLE (idx int, labels text[])
AS 'MODULE_PATHNAME', 'bft_classify_labels_batch_sql'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE OR REPLACE FUNCTION bft_predict(text text, model text DEFAULT NULL, top_k int DEFAULT NULL)
RETURNS TABLE (label text, label_id int, score real)
AS 'MODULE_PATHNAME', 'bft_predict_sql'
LANGUAGE C STABLE PARALLEL SAFE ROWS 1;
