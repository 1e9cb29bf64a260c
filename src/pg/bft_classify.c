/*
 * bft_classify.c — the read-only side: bft_classify, bft_predict,
 * bft_predict_proba, bft_classify_batch, bft_fill_mask, bft_tokenize and
 * bft_evaluate.
 *
 * Nothing here writes to the database (no usage counters, no cache tables):
 * these functions run in read-only transactions, on hot standbys and, where
 * marked PARALLEL SAFE, in parallel workers (each loads the model once).
 */
#include "bft_pg.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "defaults.h"
#include "resource.h"

PG_FUNCTION_INFO_V1(bft_classify_sql);
PG_FUNCTION_INFO_V1(bft_predict_sql);
PG_FUNCTION_INFO_V1(bft_predict_proba_sql);
PG_FUNCTION_INFO_V1(bft_classify_batch_sql);
PG_FUNCTION_INFO_V1(bft_fill_mask_sql);
PG_FUNCTION_INFO_V1(bft_tokenize_sql);
PG_FUNCTION_INFO_V1(bft_evaluate_sql);

/* result columns: (label|token text, id int, score real) and bft_evaluate's */
static const Oid label_score_types[3] = {TEXTOID, INT4OID, FLOAT4OID};
static const Oid evaluate_types[4] = {FLOAT4OID, FLOAT4OID, INT8OID, JSONBOID};

/* Optional text argument as a C string (NULL when SQL NULL). */
static char *
opt_text_arg(FunctionCallInfo fcinfo, int i)
{
	if (PG_NARGS() <= i || PG_ARGISNULL(i))
		return NULL;
	return text_to_cstring(PG_GETARG_TEXT_PP(i));
}

/*
 * Encode one server-encoded text as [CLS] … [SEP], at most max_length ids.
 * Returns palloc'd ids; *n receives their count.
 */
int32 *
bft_encode_text(const bft_tokenizer *tok, const char *s, int len, int max_length, int *n)
{
	int			ulen;
	char	   *u = bft_to_utf8(s, len, &ulen);
	int32	   *ids = palloc(sizeof(int32) * max_length);
	bft_error	err;

	/* stops after max_length ids: a huge text costs no more than a short one */
	*n = bft_encode(tok, u, ulen, max_length, ids, &err);
	if (*n < 0)
		bft_report_engine_error(&err, "could not tokenize text");
	if (u != s)
		pfree(u);
	return ids;
}

/* A model that can classify. */
static BftModelEntry *
classifier_model(const char *name)
{
	BftModelEntry *e = bft_get_model(name);

	if (e->model->cfg.num_labels <= 0 || !e->model->parts.classifier)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no classification head", e->name),
				 errhint("Fine-tune it first: bft_train(..., base => '%s').", e->name)));
	return e;
}

typedef struct LenIdx
{
	int64		len;
	int64		idx;
} LenIdx;

static int
lenidx_cmp(const void *a, const void *b)
{
	const LenIdx *x = a;
	const LenIdx *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->idx < y->idx ? -1 : (x->idx > y->idx ? 1 : 0);
}

/*
 * Class probabilities (n, K) for n encoded sequences, in their order.
 * Sequences are sorted by length and run in chunks, with an interrupt
 * check between chunks.
 */
void
bft_predict_encoded(const bft_model *m, int64 n, const int32 *tokens,
					const int64 *offsets, float *probs)
{
	int			K = m->cfg.num_labels;
	LenIdx	   *order;
	int64		i;
	int64		start;
	int32	   *ctok;
	int64	   *coff;
	float	   *cprob;
	int64		maxlen = 0;
	bft_error	err;
	ErrorData  *edata = NULL;

	if (n <= 0)
		return;
	order = palloc(sizeof(LenIdx) * n);
	maxlen = 0;
	for (i = 0; i < n; i++)
		maxlen = Max(maxlen, offsets[i + 1] - offsets[i]);
	/* activations of one batch and the chunk's buffers, beside the cached model */
	bft_memory_require(bft_mem_infer_bytes(&m->cfg, K, BFT_PREDICT_BATCH, (int) maxlen) +
					   (Size) Min(n, BFT_PREDICT_CHUNK) * (maxlen * 4 + K * 4 + 8),
					   "classification", "Lower bft.model_cache_size; a superuser can raise bft.max_memory.");
	maxlen = 0;
	for (i = 0; i < n; i++)
	{
		order[i].len = offsets[i + 1] - offsets[i];
		order[i].idx = i;
		if (order[i].len > maxlen)
			maxlen = order[i].len;
	}
	qsort(order, n, sizeof(LenIdx), lenidx_cmp);
	ctok = MemoryContextAllocHuge(CurrentMemoryContext,
								  sizeof(int32) * maxlen * Min(n, BFT_PREDICT_CHUNK));
	coff = palloc(sizeof(int64) * (Min(n, BFT_PREDICT_CHUNK) + 1));
	cprob = palloc(sizeof(float) * (Size) K * Min(n, BFT_PREDICT_CHUNK));
	bft_apply_threads();
	bft_apply_device();
	for (start = 0; start < n; start += BFT_PREDICT_CHUNK)
	{
		int64		cn = Min((int64) BFT_PREDICT_CHUNK, n - start);
		bft_dataset ds;
		int64		j;

		CHECK_FOR_INTERRUPTS();
		coff[0] = 0;
		for (j = 0; j < cn; j++)
		{
			int64		src = order[start + j].idx;
			int64		len = offsets[src + 1] - offsets[src];

			memcpy(ctok + coff[j], tokens + offsets[src], sizeof(int32) * len);
			coff[j + 1] = coff[j] + len;
		}
		ds.n = cn;
		ds.tokens = ctok;
		ds.offsets = coff;
		ds.labels = NULL;
		ds.label_offsets = NULL;
		ds.label_ids = NULL;
		if (bft_predict_poll(m, &ds, BFT_PREDICT_BATCH, cprob, bft_poll_interrupts, &edata,
							 &err) != 0)
		{
			if (edata)
				ReThrowError(edata);
			bft_report_engine_error(&err, "classification failed");
		}
		for (j = 0; j < cn; j++)
			memcpy(probs + order[start + j].idx * K, cprob + j * K, sizeof(float) * K);
	}
	pfree(order);
	pfree(ctok);
	pfree(coff);
	pfree(cprob);
}

/* Probabilities for one text. */
static float *
predict_one(BftModelEntry *e, text *t)
{
	int			n;
	int32	   *ids = bft_encode_text(e->model->tok, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
									  e->max_length, &n);
	int64		offsets[2];
	float	   *probs = palloc(sizeof(float) * e->model->cfg.num_labels);

	offsets[0] = 0;
	offsets[1] = n;
	bft_predict_encoded(e->model, 1, ids, offsets, probs);
	pfree(ids);
	return probs;
}

static int
argmax(const float *p, int K)
{
	int			best = 0;
	int			i;

	for (i = 1; i < K; i++)
		if (p[i] > p[best])
			best = i;
	return best;
}

static text *
label_text(const bft_model *m, int id)
{
	char		buf[64];
	const char *s = bft_config_label(&m->cfg, id, buf, sizeof(buf));
	char	   *srv = bft_from_utf8(s, strlen(s));

	return cstring_to_text(srv);
}

/* bft_classify(text, model) → the label name. */
Datum
bft_classify_sql(PG_FUNCTION_ARGS)
{
	BftModelEntry *e;
	float	   *probs;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	e = classifier_model(opt_text_arg(fcinfo, 1));
	probs = predict_one(e, PG_GETARG_TEXT_PP(0));
	PG_RETURN_TEXT_P(label_text(e->model, argmax(probs, e->model->cfg.num_labels)));
}

/* bft_predict_proba(text, model) → probabilities in label id order. */
Datum
bft_predict_proba_sql(PG_FUNCTION_ARGS)
{
	BftModelEntry *e;
	float	   *probs;
	int			K;
	Datum	   *d;
	int			i;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	e = classifier_model(opt_text_arg(fcinfo, 1));
	K = e->model->cfg.num_labels;
	probs = predict_one(e, PG_GETARG_TEXT_PP(0));
	d = palloc(sizeof(Datum) * K);
	for (i = 0; i < K; i++)
		d[i] = Float4GetDatum(probs[i]);
	PG_RETURN_ARRAYTYPE_P(construct_array(d, K, FLOAT4OID, sizeof(float4), true, TYPALIGN_INT));
}

typedef struct ScoreIdx
{
	float		score;
	int			idx;
} ScoreIdx;

static int
score_cmp(const void *a, const void *b)
{
	const ScoreIdx *x = a;
	const ScoreIdx *y = b;

	if (x->score != y->score)
		return x->score > y->score ? -1 : 1;
	return x->idx - y->idx;
}

/* bft_predict(text, model, top_k) → (label, label_id, score) best first. */
Datum
bft_predict_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	BftModelEntry *e;
	float	   *probs;
	int			K;
	int			top_k = PG_ARGISNULL(2) ? 1 : PG_GETARG_INT32(2);
	ScoreIdx   *si;
	int			i;

	if (top_k <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("top_k must be positive")));
	bft_srf_materialize(fcinfo, &tupdesc, &ts, label_score_types, 3);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	e = classifier_model(opt_text_arg(fcinfo, 1));
	K = e->model->cfg.num_labels;
	probs = predict_one(e, PG_GETARG_TEXT_PP(0));
	si = palloc(sizeof(ScoreIdx) * K);
	for (i = 0; i < K; i++)
	{
		si[i].score = probs[i];
		si[i].idx = i;
	}
	qsort(si, K, sizeof(ScoreIdx), score_cmp);
	for (i = 0; i < Min(top_k, K); i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};

		values[0] = PointerGetDatum(label_text(e->model, si[i].idx));
		values[1] = Int32GetDatum(si[i].idx);
		values[2] = Float4GetDatum(si[i].score);
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	PG_RETURN_NULL();
}

/*
 * bft_classify_batch(texts[], model) → labels[]: one engine call over the
 * whole array (length-sorted batches), NULL elements give NULL.
 */
Datum
bft_classify_batch_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *enulls;
	int			nelems;
	BftModelEntry *e;
	int			K;
	int32	   *tokens;
	int64	   *offsets;
	int64		n = 0;
	int64		total = 0;
	int		   *map;
	float	   *probs;
	Datum	   *out;
	int			i;
	int			ndims;
	int			dims[1];
	int			lbs[1];

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	arr = PG_GETARG_ARRAYTYPE_P(0);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("texts must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
	ndims = ARR_NDIM(arr);
	if (nelems == 0)
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));
	e = classifier_model(opt_text_arg(fcinfo, 1));
	K = e->model->cfg.num_labels;
	bft_memory_require((Size) nelems * (e->max_length * 4 + K * 4 + 16), "classifying this array",
					   "Classify fewer texts per call (a few thousand), or lower bft.model_cache_size.");

	tokens = MemoryContextAllocHuge(CurrentMemoryContext,
									sizeof(int32) * (Size) e->max_length * nelems);
	offsets = palloc(sizeof(int64) * (nelems + 1));
	map = palloc(sizeof(int) * nelems);
	offsets[0] = 0;
	for (i = 0; i < nelems; i++)
	{
		text	   *t;
		int			len;
		int32	   *ids;

		map[i] = -1;
		if (enulls[i])
			continue;
		t = DatumGetTextPP(elems[i]);
		ids = bft_encode_text(e->model->tok, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t),
							  e->max_length, &len);
		memcpy(tokens + total, ids, sizeof(int32) * len);
		pfree(ids);
		total += len;
		map[i] = (int) n;
		offsets[++n] = total;
		if ((i & 255) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	probs = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * (Size) K * (n > 0 ? n : 1));
	bft_predict_encoded(e->model, n, tokens, offsets, probs);

	out = palloc(sizeof(Datum) * nelems);
	for (i = 0; i < nelems; i++)
		out[i] = map[i] < 0 ? (Datum) 0 :
			PointerGetDatum(label_text(e->model, argmax(probs + (Size) map[i] * K, K)));
	dims[0] = nelems;
	lbs[0] = ndims == 1 ? ARR_LBOUND(arr)[0] : 1;
	PG_RETURN_ARRAYTYPE_P(construct_md_array(out, enulls, 1, dims, lbs, TEXTOID, -1, false,
											 TYPALIGN_INT));
}

/* bft_fill_mask(text, top_k, model) → (token, token_id, score) per [MASK]. */
Datum
bft_fill_mask_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	BftModelEntry *e;
	int			top_k = PG_ARGISNULL(1) ? 10 : PG_GETARG_INT32(1);
	text	   *t;
	int32	   *ids;
	int			n;
	int			i;
	int			nmask = 0;
	int			got = 0;
	int32	   *out_ids;
	float	   *out_scores;
	bft_special_ids sp;
	bft_error	err;
	int			V;

	if (top_k <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("top_k must be positive")));
	bft_srf_materialize(fcinfo, &tupdesc, &ts, label_score_types, 3);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	bft_require_model_read("bft_fill_mask()");
	e = bft_get_model(opt_text_arg(fcinfo, 2));
	if (!e->model->parts.mlm)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("model \"%s\" has no masked-language-model head", e->name),
				 errhint("Use a model trained with mlm_epochs > 0 or imported with its cls.predictions weights.")));
	V = e->model->cfg.vocab_size;
	if (top_k > V)
		top_k = V;
	sp = bft_tokenizer_special(e->model->tok);
	t = PG_GETARG_TEXT_PP(0);
	ids = bft_encode_text(e->model->tok, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), e->max_length, &n);
	for (i = 0; i < n; i++)
		if (sp.mask >= 0 && ids[i] == sp.mask)
			nmask++;
	if (nmask == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("text contains no [MASK] token"),
				 errhint("Write the literal token [MASK] where a word should be predicted.")));
	out_ids = palloc(sizeof(int32) * top_k * nmask);
	out_scores = palloc(sizeof(float) * top_k * nmask);
	bft_apply_threads();
	bft_apply_device();
	if (bft_fill_mask(e->model, ids, n, top_k, nmask, &got, out_ids, out_scores, &err) != 0)
		bft_report_engine_error(&err, "fill-mask failed");
	for (i = 0; i < got * top_k; i++)
	{
		Datum		values[3];
		bool		nulls[3] = {false, false, false};
		const char *tok = bft_tokenizer_token(e->model->tok, out_ids[i]);

		values[0] = CStringGetTextDatum(bft_from_utf8(tok ? tok : "", tok ? strlen(tok) : 0));
		values[1] = Int32GetDatum(out_ids[i]);
		values[2] = Float4GetDatum(out_scores[i]);
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	PG_RETURN_NULL();
}

/* bft_tokenize(text, model) → the ids the model sees ([CLS] … [SEP], truncated). */
Datum
bft_tokenize_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	BftModelEntry *e;
	text	   *t;
	int32	   *ids;
	int			n;
	int			i;

	bft_srf_materialize(fcinfo, &tupdesc, &ts, label_score_types, 2);
	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	bft_require_model_read("bft_tokenize()");
	e = bft_get_model(opt_text_arg(fcinfo, 1));
	t = PG_GETARG_TEXT_PP(0);
	ids = bft_encode_text(e->model->tok, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), e->max_length, &n);
	for (i = 0; i < n; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};
		const char *tok = bft_tokenizer_token(e->model->tok, ids[i]);

		values[0] = CStringGetTextDatum(bft_from_utf8(tok ? tok : "", tok ? strlen(tok) : 0));
		values[1] = Int32GetDatum(ids[i]);
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	PG_RETURN_NULL();
}

/* ---- bft_evaluate ---- */

typedef struct LabelEnt
{
	char		key[BFT_MAX_LABEL_BYTES + 1];
	int			id;
} LabelEnt;

/*
 * bft_evaluate(model, relation, text_column, label_column) →
 * accuracy, macro-F1 (over the labels present in truth or prediction, as
 * scikit-learn), rows, and a report with per-label precision/recall/F1/
 * support and the confusion matrix (rows = true, columns = predicted).
 */
Datum
bft_evaluate_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	char	   *model_name = opt_text_arg(fcinfo, 0);
	BftModelEntry *e;
	BftSource	src;
	HASHCTL		hctl;
	HTAB	   *labels;
	int			K;
	int			C;				/* classes: K model labels + unknown true labels */
	char	  **cnames;
	int			ccap;
	char	  **mnames;
	int32	   *tokens = NULL;
	Size		tok_cap = 0;
	int64		total = 0;
	int64	   *offsets;
	Size		off_cap = 1024;
	int32	   *truth;
	int64		n = 0;
	int64		skipped = 0;
	Portal		portal;
	float	   *probs;
	int64	   *conf;
	int64		correct = 0;
	int64		i;
	int			a,
				b;
	StringInfoData rep;
	double		f1sum = 0;
	int			nf1 = 0;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};
	int			max_length;
	bft_tokenizer *tok;

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation, text_column and label_column must not be NULL")));
	bft_srf_materialize(fcinfo, &tupdesc, &ts, evaluate_types, 4);
	bft_prepare_source(PG_GETARG_OID(1), PG_GETARG_NAME(2), PG_GETARG_NAME(3), &src);
	e = classifier_model(model_name);
	K = e->model->cfg.num_labels;
	max_length = e->max_length;
	tok = e->model->tok;
	mnames = bft_model_label_names(e->model);

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = BFT_MAX_LABEL_BYTES + 1;
	hctl.entrysize = sizeof(LabelEnt);
	hctl.hcxt = CurrentMemoryContext;
	labels = hash_create("bft labels", 64, &hctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	ccap = K + 16;
	cnames = palloc(sizeof(char *) * ccap);
	for (a = 0; a < K; a++)
	{
		bool		found;
		LabelEnt   *le;

		cnames[a] = mnames[a];
		if (strlen(mnames[a]) > BFT_MAX_LABEL_BYTES)
			continue;
		le = hash_search(labels, mnames[a], HASH_ENTER, &found);
		if (!found)
			le->id = a;
	}
	C = K;

	offsets = palloc(sizeof(int64) * off_cap);
	truth = palloc(sizeof(int32) * off_cap);
	offsets[0] = 0;

	SPI_connect();
	portal = SPI_cursor_open_with_args(NULL, src.query, 0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		uint64		r;

		SPI_cursor_fetch(portal, true, BFT_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		/* the relation may be a view that classifies with other models */
		e = classifier_model(model_name);
		tok = e->model->tok;
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		tnull,
						lnull;
			Datum		td0 = SPI_getbinval(tup, td, 1, &tnull);
			Datum		ld = SPI_getbinval(tup, td, 2, &lnull);
			char	   *lname;
			char		ibuf[32];
			LabelEnt   *le;
			bool		found;
			text	   *t;
			int32	   *ids;
			int			len;
			int			cls;
			MemoryContext old;

			if (tnull || lnull)
			{
				skipped++;
				continue;
			}
			if (src.label_is_int)
			{
				int64		v = DatumGetInt64(ld);

				snprintf(ibuf, sizeof(ibuf), INT64_FORMAT, v);
				lname = ibuf;
				le = hash_search(labels, lname, HASH_FIND, NULL);
				if (le == NULL && v >= 0 && v < K)
				{
					char		dflt[32];

					snprintf(dflt, sizeof(dflt), "LABEL_" INT64_FORMAT, v);
					if (strcmp(mnames[v], dflt) == 0)
						le = hash_search(labels, mnames[v], HASH_FIND, NULL);
				}
			}
			else
			{
				lname = TextDatumGetCString(ld);
				if (strlen(lname) > BFT_MAX_LABEL_BYTES)
					ereport(ERROR,
							(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
							 errmsg("label longer than %d bytes", BFT_MAX_LABEL_BYTES)));
				le = hash_search(labels, lname, HASH_FIND, NULL);
			}
			if (le == NULL)
			{
				/* A true label the model does not know: a class of its own. */
				old = MemoryContextSwitchTo(hctl.hcxt);
				if (strlen(lname) > BFT_MAX_LABEL_BYTES)
					ereport(ERROR,
							(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
							 errmsg("label longer than %d bytes", BFT_MAX_LABEL_BYTES)));
				le = hash_search(labels, lname, HASH_ENTER, &found);
				if (C >= BFT_MAX_LABELS + K)
					ereport(ERROR,
							(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
							 errmsg("more than %d distinct labels", BFT_MAX_LABELS)));
				if (C == ccap)
				{
					ccap *= 2;
					cnames = repalloc(cnames, sizeof(char *) * ccap);
				}
				cnames[C] = pstrdup(lname);
				le->id = C++;
				MemoryContextSwitchTo(old);
			}
			cls = le->id;

			old = MemoryContextSwitchTo(hctl.hcxt);
			t = DatumGetTextPP(td0);
			ids = bft_encode_text(tok, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), max_length, &len);
			if (total + len > (int64) tok_cap)
			{
				tok_cap = Max(tok_cap * 2, (Size) 65536);
				tokens = tokens ? repalloc_huge(tokens, sizeof(int32) * tok_cap) :
					MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * tok_cap);
			}
			memcpy(tokens + total, ids, sizeof(int32) * len);
			pfree(ids);
			total += len;
			if ((Size) n + 2 > off_cap)
			{
				off_cap *= 2;
				offsets = repalloc_huge(offsets, sizeof(int64) * off_cap);
				truth = repalloc_huge(truth, sizeof(int32) * off_cap);
			}
			truth[n] = cls;
			offsets[++n] = total;
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
		/* the tokens kept so far and the probabilities to come */
		bft_memory_require(tok_cap * sizeof(int32) + off_cap * 12 + (Size) n * K * sizeof(float),
						   "the rows to evaluate",
						   "Evaluate fewer rows at once (a view with a WHERE clause), or lower bft.model_cache_size.");
	}
	SPI_cursor_close(portal);
	SPI_finish();

	if (skipped > 0)
		ereport(NOTICE,
				(errmsg("skipped " INT64_FORMAT " rows with NULL text or label", skipped)));
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("relation %s has no rows with non-NULL text and label", src.relname)));

	/* The model may have been evicted by a nested call: fetch it again. */
	e = classifier_model(model_name);
	probs = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * (Size) K * n);
	bft_predict_encoded(e->model, n, tokens, offsets, probs);

	conf = palloc0(sizeof(int64) * C * C);
	for (i = 0; i < n; i++)
	{
		int			p = argmax(probs + i * K, K);

		conf[truth[i] * C + p]++;
		if (p == truth[i])
			correct++;
	}

	initStringInfo(&rep);
	appendStringInfoString(&rep, "{\"model\": ");
	escape_json(&rep, e->name);
	appendStringInfo(&rep, ", \"version\": %d, \"labels\": [", e->version);
	for (a = 0; a < C; a++)
	{
		if (a)
			appendStringInfoString(&rep, ", ");
		escape_json(&rep, cnames[a]);
	}
	appendStringInfoString(&rep, "], \"per_label\": {");
	{
		bool		first = true;

		for (a = 0; a < C; a++)
		{
			int64		tp = conf[a * C + a];
			int64		support = 0;
			int64		predicted = 0;
			double		prec,
						rec,
						f1;

			for (b = 0; b < C; b++)
			{
				support += conf[a * C + b];
				predicted += conf[b * C + a];
			}
			if (support == 0 && predicted == 0)
				continue;
			prec = predicted > 0 ? (double) tp / predicted : 0.0;
			rec = support > 0 ? (double) tp / support : 0.0;
			f1 = (prec + rec) > 0 ? 2 * prec * rec / (prec + rec) : 0.0;
			f1sum += f1;
			nf1++;
			if (!first)
				appendStringInfoString(&rep, ", ");
			first = false;
			escape_json(&rep, cnames[a]);
			appendStringInfoString(&rep, ": {");
			bft_json_key_float(&rep, "precision", prec, false);
			bft_json_key_float(&rep, "recall", rec, true);
			bft_json_key_float(&rep, "f1", f1, true);
			appendStringInfo(&rep, ", \"support\": " INT64_FORMAT "}", support);
		}
	}
	appendStringInfoString(&rep, "}, \"confusion_matrix\": [");
	for (a = 0; a < C; a++)
	{
		appendStringInfoString(&rep, a ? ", [" : "[");
		for (b = 0; b < C; b++)
			appendStringInfo(&rep, b ? ", " INT64_FORMAT : INT64_FORMAT, conf[a * C + b]);
		appendStringInfoChar(&rep, ']');
	}
	appendStringInfo(&rep, "], \"rows\": " INT64_FORMAT ", \"skipped\": " INT64_FORMAT "}",
					 n, skipped);

	values[0] = Float4GetDatum((float4) correct / n);
	values[1] = Float4GetDatum(nf1 > 0 ? (float4) (f1sum / nf1) : 0.0f);
	values[2] = Int64GetDatum(n);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(rep.data));
	tuplestore_putvalues(ts, tupdesc, values, nulls);
	PG_RETURN_NULL();
}
