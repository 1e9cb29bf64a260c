/*
 * bft_embed.c — sentence embeddings: bft_embed and bft_embed_batch.
 *
 * Read-only like classification (bft_classify.c): nothing is written, so they
 * run in read-only transactions, on hot standbys and in parallel workers.
 * The pooling is the model's (params->'pooling', stored at import from
 * sentence-transformers' modules.json; mean without normalization when the
 * model has none), or the pooling argument. Texts longer than the encoding
 * length are truncated, or with bft.long_text = 'mean' | 'max' cut into the
 * windows classification uses (bft_encoded_add) whose embeddings are then
 * combined (engine: bft_embed_windows).
 */
#include "bft_pg.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "chunk.h"
#include "embed.h"
#include "resource.h"

PG_FUNCTION_INFO_V1(bft_embed_sql);
PG_FUNCTION_INFO_V1(bft_embed_batch_sql);

/* result columns of bft_embed_batch: (idx int, embedding real[]) */
static const Oid embed_batch_types[2] = {INT4OID, FLOAT4ARRAYOID};

/* The pooling to use: the argument (a name such as 'mean+normalize') when
 * given, else the model's stored one, else the default (mean). */
static void
resolve_pooling(const BftModelEntry *e, FunctionCallInfo fcinfo, int argno, bft_pooling *p)
{
	bft_error	err;

	*p = bft_pooling_default();
	if (e->pooling != NULL)
	{
		if (strncmp(e->pooling, "unsupported:", 12) == 0 && (PG_NARGS() <= argno || PG_ARGISNULL(argno)))
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("model \"%s\" has a sentence-transformers pipeline bft cannot compute", e->name),
					 errdetail("%s", e->pooling + 12),
					 errhint("Pass a pooling, e.g. bft_embed(text, '%s', pooling => 'mean').", e->name)));
		if (strncmp(e->pooling, "unsupported:", 12) != 0 &&
			bft_pooling_from_json(e->pooling, strlen(e->pooling), p, &err) != BFT_OK)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("model \"%s\" has an invalid stored pooling", e->name),
					 errdetail("%s", err.msg)));
	}
	if (PG_NARGS() > argno && !PG_ARGISNULL(argno))
	{
		char	   *s = text_to_cstring(PG_GETARG_TEXT_PP(argno));

		if (bft_pooling_parse_name(s, p, &err) != BFT_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid pooling: %s", err.msg)));
	}
}

/* The encoding length: the model's, capped by the pooling's max_length. */
static int
embed_max_length(const BftModelEntry *e, const bft_pooling *p)
{
	return p->max_length >= 2 && p->max_length < e->max_length ? p->max_length : e->max_length;
}

/*
 * Embeddings (enc->ntext, D) of encoded texts, in their order: of their
 * single window (truncation), or their windows' combined as bft.long_text
 * says (mean weighted by the windows' token counts, or per-dimension max),
 * normalized after the combination when the pooling normalizes.
 */
static float *
embed_encoded(const BftModelEntry *e, const bft_pooling *p, const BftEncoded *enc)
{
	const bft_model *m = e->model;
	int			C = m->cfg.hidden_size;
	int			D = bft_pooling_dim(p, C);
	int64		n = enc->ntext;
	int64		maxlen = 0;
	int64		i;
	int			B = 32;
	int			rc;
	bool		windows = enc->nwin != enc->ntext;
	float	   *out;
	bft_dataset ds;
	bft_error	err;
	ErrorData  *edata = NULL;

	for (i = 0; i < enc->nwin; i++)
		maxlen = Max(maxlen, enc->offsets[i + 1] - enc->offsets[i]);
	/* activations and the hidden states of one batch, the embeddings (and the windows') */
	bft_memory_require(bft_mem_infer_bytes(&m->cfg, 0, B, (int) maxlen) +
					   (Size) B * maxlen * C * 4 + (Size) n * D * 4 + (Size) B * D * 4 +
					   (windows ? (Size) enc->nwin * (D * 4 + 8) : 0),
					   windows ? "embedding the windows of long texts" : "embedding",
					   windows ? "Embed fewer or shorter texts per call, or set bft.long_text = 'truncate'." :
					   "Embed fewer texts per call, or lower bft.model_cache_size.");
	out = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * (Size) D * (n > 0 ? n : 1));
	if (n == 0)
		return out;
	ds.n = enc->nwin;
	ds.tokens = enc->tokens;
	ds.offsets = enc->offsets;
	ds.labels = NULL;
	ds.label_offsets = NULL;
	ds.label_ids = NULL;
	bft_apply_threads();
	bft_apply_device();
	if (windows)
		rc = bft_embed_windows(m, &ds, enc->first, n,
							   bft_long_text == BFT_LONG_TEXT_MAX ? BFT_WINDOWS_MAX : BFT_WINDOWS_MEAN,
							   B, p, out, bft_poll_interrupts, &edata, &err);
	else
		rc = bft_embed(m, &ds, B, p, out, bft_poll_interrupts, &edata, &err);
	if (rc != BFT_OK)
	{
		if (edata)
			ReThrowError(edata);
		bft_report_engine_error(&err, "embedding failed");
	}
	return out;
}

static ArrayType *
float_array(const float *x, int D)
{
	Datum	   *d = palloc(sizeof(Datum) * D);
	int			i;

	for (i = 0; i < D; i++)
		d[i] = Float4GetDatum(x[i]);
	return construct_array(d, D, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT);
}

/* bft_embed(text, model, pooling) → the sentence embedding. */
Datum
bft_embed_sql(PG_FUNCTION_ARGS)
{
	BftModelEntry *e;
	bft_pooling p;
	text	   *t;
	BftEncoded	enc;
	float	   *out;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	e = bft_get_model(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	resolve_pooling(e, fcinfo, 2, &p);
	t = PG_GETARG_TEXT_PP(0);
	bft_encoded_init(&enc);
	bft_encoded_add(&enc, e->model->tok, embed_max_length(e, &p), VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	out = embed_encoded(e, &p, &enc);
	PG_RETURN_ARRAYTYPE_P(float_array(out, bft_pooling_dim(&p, e->model->cfg.hidden_size)));
}

/*
 * bft_embed_batch(texts[], model, pooling) → one row (idx, embedding) per
 * element, idx its subscript; one engine call over the whole array
 * (length-sorted batches); a NULL element gives a NULL embedding.
 */
Datum
bft_embed_batch_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *enulls;
	int			nelems;
	BftModelEntry *e;
	bft_pooling p;
	int			ml;
	int			D;
	BftEncoded	enc;
	int		   *map;
	float	   *out;
	int			lb;
	int			i;

	bft_srf_materialize(fcinfo, &tupdesc, &ts, embed_batch_types, 2);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	arr = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("texts must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
	if (nelems == 0)
		PG_RETURN_NULL();
	lb = ARR_NDIM(arr) == 1 ? ARR_LBOUND(arr)[0] : 1;
	e = bft_get_model(PG_ARGISNULL(1) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(1)));
	resolve_pooling(e, fcinfo, 2, &p);
	ml = embed_max_length(e, &p);
	D = bft_pooling_dim(&p, e->model->cfg.hidden_size);
	bft_memory_require((Size) nelems * (ml * 4 + D * 4 + 16), "embedding this array",
					   "Embed fewer texts per call (a few thousand), or lower bft.model_cache_size.");
	map = palloc(sizeof(int) * nelems);
	bft_encoded_init(&enc);
	for (i = 0; i < nelems; i++)
	{
		text	   *t;

		map[i] = -1;
		if (enulls[i])
			continue;
		t = DatumGetTextPP(elems[i]);
		map[i] = (int) enc.ntext;
		bft_encoded_add(&enc, e->model->tok, ml, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		if ((i & 255) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	out = embed_encoded(e, &p, &enc);
	for (i = 0; i < nelems; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, map[i] < 0};

		values[0] = Int32GetDatum(lb + i);
		values[1] = map[i] < 0 ? (Datum) 0 : PointerGetDatum(float_array(out + (Size) map[i] * D, D));
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	PG_RETURN_NULL();
}
