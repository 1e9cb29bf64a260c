-- bft 0.1.0 -> 0.2.0 (ALTER EXTENSION bft UPDATE TO '0.2.0').
-- Every change here is also in bft--0.2.0.sql; tests/scripts/test_upgrade.sh
-- checks that an updated 0.1.0 installation and a fresh 0.2.0 one have the
-- same catalog.
\echo Use "ALTER EXTENSION bft UPDATE TO '0.2.0'" to load this file. \quit

-- Weights made under 0.1.0 belong to the role that trained or imported them.
-- They become the extension owner's, and rows must name distinct objects.
-- A row whose object belongs to another role than its creator may have been
-- written by hand (0.1.0 let any role with INSERT name any object): its
-- object is left alone, with a WARNING; bft will not read it until a
-- superuser adopts it (ALTER LARGE OBJECT ... OWNER TO the extension owner).
DO $$
DECLARE
    r record;
    extowner name := (SELECT rolname FROM pg_catalog.pg_roles
                       WHERE oid = (SELECT extowner FROM pg_catalog.pg_extension WHERE extname = 'bft'));
BEGIN
    FOR r IN SELECT weights, pg_catalog.string_agg(name || ' version ' || version, ', ') AS rows
               FROM bft.models GROUP BY weights HAVING pg_catalog.count(*) > 1
    LOOP
        RAISE EXCEPTION 'bft.models rows % name the same large object %', r.rows, r.weights
            USING HINT = 'At most one of them can hold its weights: DELETE the others (a superuser), then update again.';
    END LOOP;
    FOR r IN SELECT m.name, m.version, m.weights, m.created_by, o.rolname AS owner
               FROM bft.models m
               JOIN pg_catalog.pg_largeobject_metadata l ON l.oid = m.weights
               JOIN pg_catalog.pg_roles o ON o.oid = l.lomowner
    LOOP
        IF r.owner = r.created_by THEN
            IF r.owner <> extowner THEN
                EXECUTE pg_catalog.format('ALTER LARGE OBJECT %s OWNER TO %I', r.weights, extowner);
            END IF;
        ELSIF r.owner = extowner THEN
            RAISE WARNING 'model "%" version %: large object % belongs to the extension owner %, not to its creator %',
                r.name, r.version, r.weights, r.owner, r.created_by
                USING HINT = 'bft reads it. It was stored by the bft 0.2.0 library before this update, or the row '
                             'names an object of the extension owner''s own: check the row before trusting it '
                             '(deleting it unlinks the object).';
        ELSE
            RAISE WARNING 'model "%" version %: large object % belongs to %, not to its creator %; it was left alone',
                r.name, r.version, r.weights, r.owner, r.created_by
                USING HINT = pg_catalog.format('If it really holds these weights: ALTER LARGE OBJECT %s OWNER TO %I;',
                                               r.weights, extowner);
        END IF;
    END LOOP;
END $$;

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
              bool, int, float8, text, text, jsonb, int, bool),
    bft_train_async(regclass, name, name, int, text, text, int, float8, int, float8, float8, float8,
                    bool, int, float8, text, text, jsonb, int, bool),
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

-- bft_train options: class weights, best epoch, early stopping, resume,
-- train_precision ---------------------------------------------------------
-- New arguments of bft_train and bft_train_async: the 0.1.0 functions are
-- replaced. EXECUTE stays revoked from PUBLIC (as above), and what was
-- granted on the old functions to roles is granted on the new ones.
ALTER FUNCTION bft_train(regclass, name, name, int, text, text, int, float8, int, float8, float8,
                         float8, bool, int, float8, text, text, jsonb, int, bool)
    RENAME TO bft_train_0_1_0;
ALTER FUNCTION bft_train_async(regclass, name, name, int, text, text, int, float8, int, float8,
                               float8, float8, bool, int, float8, text, text, jsonb, int, bool)
    RENAME TO bft_train_async_0_1_0;

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

REVOKE EXECUTE ON FUNCTION
    bft_train(regclass, name, name, int, text, text, int, float8, int, float8, float8, float8,
              bool, int, float8, text, text, jsonb, int, bool, text, bool, text, int, bool, text),
    bft_train_async(regclass, name, name, int, text, text, int, float8, int, float8, float8, float8,
                    bool, int, float8, text, text, jsonb, int, bool, text, bool, text, int, bool, text)
FROM PUBLIC;

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT n.oid::regprocedure AS fn, a.grantee::regrole AS grantee, a.is_grantable
               FROM (VALUES ('bft_train_0_1_0', 'bft_train'),
                            ('bft_train_async_0_1_0', 'bft_train_async')) AS f(old, new)
               JOIN pg_catalog.pg_proc o ON o.proname = f.old
               JOIN pg_catalog.pg_proc n ON n.proname = f.new AND n.pronamespace = o.pronamespace
               CROSS JOIN LATERAL pg_catalog.aclexplode(o.proacl) a
              WHERE o.pronamespace = (SELECT e.extnamespace FROM pg_catalog.pg_extension e
                                       WHERE e.extname = 'bft')
                AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> o.proowner
    LOOP
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s%s', r.fn, r.grantee,
                                  CASE WHEN r.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
    END LOOP;
END $$;
DROP FUNCTION bft_train_0_1_0(regclass, name, name, int, text, text, int, float8, int, float8,
                              float8, float8, bool, int, float8, text, text, jsonb, int, bool);
DROP FUNCTION bft_train_async_0_1_0(regclass, name, name, int, text, text, int, float8, int,
                                    float8, float8, float8, bool, int, float8, text, text, jsonb,
                                    int, bool);
