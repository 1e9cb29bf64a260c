-- bft_embed: sentence embeddings.  A tiny sentence-transformers directory
-- (tests/data/ckpt/tiny_st: modules.json with mean pooling and Normalize)
-- imported from the server; its embeddings, with the stored pooling and with
-- every pooling argument, against sentence-transformers' encode()
-- (tests/data/embed/tiny_st.json, written by tests/hf/embed_goldens.py);
-- the batch form; ranking by cosine in plain SQL; read-only use; errors.
SET bft.threads = 1;
SET client_min_messages = warning;
\getenv abs_srcdir PG_ABS_SRCDIR
\set stdir :abs_srcdir '/tests/data/ckpt/tiny_st'
\set tinydir :abs_srcdir '/tests/data/ckpt/tiny'
\set goldens :abs_srcdir '/tests/data/embed/tiny_st.json'
\set densedir :abs_srcdir '/tests/data/ckpt/tiny_st_dense'

CREATE FUNCTION try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;

-- cosine similarity and largest absolute difference of two vectors
CREATE FUNCTION cosine(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT sum(x::float8 * y) / sqrt(sum(x::float8 * x) * sum(y::float8 * y)) FROM unnest(a, b) AS v(x, y)
$$;
CREATE FUNCTION maxabs(a real[], b real[]) RETURNS float8 LANGUAGE sql IMMUTABLE AS $$
    SELECT max(abs(x::float8 - y)) FROM unnest(a, b) AS v(x, y)
$$;

CREATE TEMP TABLE g AS SELECT pg_read_file(:'goldens')::jsonb AS j;
-- (pooling, text number, text, sentence-transformers' embedding)
CREATE TEMP TABLE golden AS
SELECT p.key AS pooling, t.i::int AS i, t.txt,
       (SELECT array_agg(x::real ORDER BY o) FROM jsonb_array_elements_text(p.value -> (t.i::int - 1))
                                                   WITH ORDINALITY AS e(x, o)) AS emb
  FROM g, jsonb_array_elements_text(j -> 'texts') WITH ORDINALITY AS t(txt, i), jsonb_each(j -> 'embeddings') AS p;

-- The import reads modules.json, 1_Pooling/config.json and sentence_bert_config.json.
SELECT * FROM bft_import_model('emb_st', :'stdir');
SELECT params -> 'pooling' AS pooling FROM bft.models WHERE name = 'emb_st';
-- A plain checkpoint stores none (mean, not normalized).
SELECT * FROM bft_import_model('emb_plain', :'tinydir');
SELECT params -> 'pooling' IS NULL AS no_pooling FROM bft.models WHERE name = 'emb_plain';

-- Every pooling equals sentence-transformers (cosine >= 0.99999, |diff| < 1e-5).
SELECT pooling, count(*) AS texts, min(array_length(e, 1)) AS dim,
       min(cosine(e, emb)) >= 0.99999 AS cosine_ok, max(maxabs(e, emb)) < 1e-5 AS close
  FROM (SELECT pooling, emb, bft_embed(txt, 'emb_st', CASE WHEN pooling = 'model' THEN NULL ELSE pooling END) AS e
          FROM golden) s
 GROUP BY pooling ORDER BY pooling;

-- The stored pooling normalizes: unit vectors.
SELECT round(sqrt(sum(x::float8 * x))::numeric, 5) AS norm FROM unnest(bft_embed('the market rose', 'emb_st')) x;
-- The plain checkpoint (same encoder) gives the mean (texts within both length limits).
SELECT count(*) AS texts, min(cosine(bft_embed(txt, 'emb_plain'), emb)) >= 0.99999 AS mean_ok
  FROM golden WHERE pooling = 'mean' AND i <= 11;

-- Batch form: one row per element (idx = subscript), NULL for NULL, same values.
SELECT count(*) AS rows, bool_and(maxabs(b.embedding, g.emb) < 1e-5) AS same
  FROM bft_embed_batch((SELECT array_agg(txt ORDER BY i) FROM golden WHERE pooling = 'model'), 'emb_st') b
  JOIN golden g ON g.pooling = 'model' AND g.i = b.idx;
SELECT idx, embedding IS NULL AS null_embedding, array_length(embedding, 1) AS dim
  FROM bft_embed_batch('[0:2]={"bank",NULL,"rates"}'::text[], 'emb_st', 'cls+max');
SELECT count(*) AS rows FROM bft_embed_batch('{}'::text[], 'emb_st');
SELECT bft_embed(NULL, 'emb_st') IS NULL AS null_text;

-- Ranking by cosine similarity in plain SQL (what pgvector's <=> would do):
-- the texts closest to the query, in sentence-transformers' order.
CREATE TEMP TABLE docs AS
SELECT b.idx AS id, g.txt AS body, b.embedding
  FROM bft_embed_batch((SELECT array_agg(txt ORDER BY i) FROM golden WHERE pooling = 'model'), 'emb_st') b
  JOIN golden g ON g.pooling = 'model' AND g.i = b.idx;
SELECT id, body, round(cosine(embedding, bft_embed((SELECT j ->> 'query' FROM g), 'emb_st'))::numeric, 4) AS cosine
  FROM docs ORDER BY cosine DESC, id LIMIT 3;
SELECT array_agg(id ORDER BY cosine(embedding, q.v) DESC, id)
       = (SELECT array_agg(x::int ORDER BY o) FROM g, jsonb_array_elements_text(j -> 'ranking') WITH ORDINALITY r(x, o))
       AS same_ranking
  FROM docs, (SELECT bft_embed(j ->> 'query', 'emb_st') AS v FROM g) q;

-- Read-only: no transaction id, works in a READ ONLY transaction.
BEGIN READ ONLY;
SELECT array_length(bft_embed('central bank', 'emb_st'), 1) AS dim,
       (SELECT count(*) FROM bft_embed_batch(ARRAY['a', 'b'], 'emb_st')) AS rows;
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid;
COMMIT;

-- Privileges as for classification: SELECT (id, name, version, deployed_at) suffices.
CREATE ROLE bft_embed_reader;
GRANT SELECT (id, name, version, deployed_at) ON bft.models TO bft_embed_reader;
CREATE ROLE bft_embed_nobody;
SET ROLE bft_embed_reader;
SELECT array_length(bft_embed('bank', 'emb_st'), 1) AS dim;
SET ROLE bft_embed_nobody;
SELECT try($$SELECT bft_embed('bank', 'emb_st')$$) AS without_select;
RESET ROLE;
REVOKE ALL ON bft.models FROM bft_embed_reader;
DROP ROLE bft_embed_reader;
DROP ROLE bft_embed_nobody;

-- Errors.
SELECT try($$SELECT bft_embed('x', 'emb_st', 'median')$$) AS unknown_mode;
SELECT try($$SELECT bft_embed('x', 'emb_st', 'normalize')$$) AS no_mode;
SELECT try($$SELECT bft_embed('x', 'emb_st', 'mean++cls')$$) AS empty_name;
SELECT try($$SELECT * FROM bft_embed_batch('{{a,b},{c,d}}'::text[], 'emb_st')$$) AS two_dims;
SELECT try($$SELECT bft_embed('x', 'no_such_model')$$) AS no_model;
-- A pipeline bft cannot compute (a Dense module after the pooling): the model
-- imports with a WARNING, and bft_embed asks for a pooling argument.
SET client_min_messages = notice;
SELECT * FROM bft_import_model('emb_dense', :'densedir');
SET client_min_messages = warning;
SELECT params -> 'pooling' AS pooling FROM bft.models WHERE name = 'emb_dense';
SELECT try($$SELECT bft_embed('x', 'emb_dense')$$) AS unsupported;
SELECT array_length(bft_embed('x', 'emb_dense', 'mean'), 1) AS with_pooling;

SELECT bft_drop_model('emb_st'), bft_drop_model('emb_plain'), bft_drop_model('emb_dense');
DROP FUNCTION try(text);
