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
#include "ngram.h"

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

#include "chunk.h"
#include "defaults.h"
#include "metrics.h"
#include "resource.h"

PG_FUNCTION_INFO_V1(bft_classify_sql);
PG_FUNCTION_INFO_V1(bft_predict_sql);
PG_FUNCTION_INFO_V1(bft_predict_proba_sql);
PG_FUNCTION_INFO_V1(bft_classify_batch_sql);
PG_FUNCTION_INFO_V1(bft_fill_mask_sql);
PG_FUNCTION_INFO_V1(bft_tokenize_sql);
PG_FUNCTION_INFO_V1(bft_evaluate_sql);
PG_FUNCTION_INFO_V1(bft_classify_labels_sql);
PG_FUNCTION_INFO_V1(bft_classify_labels_batch_sql);

/* result columns: (label|token text, id int, score real) and bft_evaluate's */
static const Oid label_score_types[3] = {TEXTOID, INT4OID, FLOAT4OID};
static const Oid evaluate_types[4] = {FLOAT4OID, FLOAT4OID, INT8OID, JSONBOID};
static const Oid ord_labels_types[2] = {INT4OID, TEXTARRAYOID};

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

static bool
is_multi_label(const BftModelEntry *e)
{
	return e->model->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL;
}

/* A classifier that gives one label per text: not a multi-label one. */
static BftModelEntry *
single_label_model(const char *name, const char *fn)
{
	BftModelEntry *e = classifier_model(name);

	if (is_multi_label(e))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("model \"%s\" is a multi-label classifier", e->name),
				 errdetail("%s returns one label per text.", fn),
				 errhint("Use bft_classify_labels() or bft_classify_labels_batch() (label sets), or bft_predict().")));
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

/* ---- encoded texts ---- */

/* An empty set of encoded texts (palloc'd in the current context). */
void
bft_encoded_init(BftEncoded *enc)
{
	memset(enc, 0, sizeof(*enc));
	enc->off_cap = 64;
	enc->first_cap = 64;
	enc->offsets = palloc(sizeof(int64) * enc->off_cap);
	enc->first = palloc(sizeof(int64) * enc->first_cap);
	enc->offsets[0] = 0;
	enc->first[0] = 0;
}

/* Bytes an encoded set holds. */
Size
bft_encoded_bytes(const BftEncoded *enc)
{
	return enc->tok_cap * sizeof(int32) + (enc->off_cap + enc->first_cap) * sizeof(int64) +
		enc->ng_cap * sizeof(float);
}

/*
 * buf (cap elements of elem bytes, or NULL) grown to hold need elements, at
 * least doubling (and least elements), within bft.max_memory.
 */
static void *
encoded_grow(const BftEncoded *enc, void *buf, Size *cap, Size need, Size elem, Size least)
{
	Size		c = Max(*cap * 2, least);

	while (c < need)
		c *= 2;
	bft_memory_require(bft_encoded_bytes(enc) + (c - *cap) * elem, "encoding these texts",
					   "Pass fewer or shorter texts per call, or lower bft.model_cache_size.");
	buf = buf ? repalloc_huge(buf, elem * c) : MemoryContextAllocHuge(CurrentMemoryContext, elem * c);
	*cap = c;
	return buf;
}

/* Append one window of n ids to enc (the current text's). */
static void
encoded_window(BftEncoded *enc, const int32 *ids, int n)
{
	if ((Size) (enc->total + n) > enc->tok_cap)
		enc->tokens = encoded_grow(enc, enc->tokens, &enc->tok_cap, enc->total + n, sizeof(int32), 4096);
	if ((Size) enc->nwin + 2 > enc->off_cap)
	{
		enc->off_cap *= 2;
		enc->offsets = repalloc_huge(enc->offsets, sizeof(int64) * enc->off_cap);
	}
	memcpy(enc->tokens + enc->total, ids, sizeof(int32) * n);
	enc->total += n;
	enc->offsets[++enc->nwin] = enc->total;
}

/* Free the engine's window buffers: a memory context reset callback. */
typedef struct WindowBufs
{
	int32	   *ids;
	int64	   *offsets;
} WindowBufs;

static void
free_window_bufs(void *arg)
{
	WindowBufs *w = arg;

	free(w->ids);
	free(w->offsets);
	w->ids = NULL;
	w->offsets = NULL;
}

/*
 * Encode one server-encoded text into enc: [CLS] … [SEP] truncated to
 * max_length ids (one window) when bft.long_text is 'truncate'; otherwise
 * every window of max_length ids over the whole text, consecutive windows
 * sharing bft.chunk_stride tokens (chunk.h).
 */
void
bft_encoded_add(BftEncoded *enc, const bft_tokenizer *tok, int max_length, const char *s, int len)
{
	if (bft_long_text == BFT_LONG_TEXT_TRUNCATE)
	{
		int			n;
		int32	   *ids = bft_encode_text(tok, s, len, max_length, &n);

		encoded_window(enc, ids, n);
		pfree(ids);
	}
	else
	{
		int			ulen;
		char	   *u;
		bft_error	err;
		int64		nwin;
		int64		w;
		MemoryContext cxt;
		MemoryContextCallback *cb;
		WindowBufs *bufs;

		/*
		 * The whole text is tokenized: at most about one piece per byte, and
		 * windows repeat at most half of them.
		 */
		bft_memory_require(bft_encoded_bytes(enc) + (Size) len * 16, "the windows of a long text",
						   "Use shorter texts, or set bft.long_text = 'truncate'.");
		cxt = AllocSetContextCreate(CurrentMemoryContext, "bft windows", ALLOCSET_SMALL_SIZES);
		bufs = MemoryContextAllocZero(cxt, sizeof(WindowBufs));
		cb = MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));
		cb->func = free_window_bufs;
		cb->arg = bufs;
		MemoryContextRegisterResetCallback(cxt, cb);
		u = bft_to_utf8(s, len, &ulen);
		if (bft_encode_windows(tok, u, ulen, max_length, bft_chunk_stride, &bufs->ids, &bufs->offsets,
							   &nwin, &err) != 0)
			bft_report_engine_error(&err, "could not tokenize text");
		for (w = 0; w < nwin; w++)
			encoded_window(enc, bufs->ids + bufs->offsets[w],
						   (int) (bufs->offsets[w + 1] - bufs->offsets[w]));
		MemoryContextDelete(cxt);
		if (u != s)
			pfree(u);
	}
	if ((Size) enc->ntext + 2 > enc->first_cap)
	{
		enc->first_cap *= 2;
		enc->first = repalloc_huge(enc->first, sizeof(int64) * enc->first_cap);
	}
	enc->first[++enc->ntext] = enc->nwin;
}

/*
 * bft_encoded_add for classification by m: with an n-gram head (ngram.h),
 * the text's n-gram log-probabilities are kept too, for bft_encoded_probs.
 */
void
bft_encoded_add_text(BftEncoded *enc, const bft_model *m, int max_length, const char *s, int len)
{
	int			K = m->cfg.num_labels;
	int			ulen;
	char	   *u;
	bft_error	err;

	bft_encoded_add(enc, m->tok, max_length, s, len);
	if (!bft_ngram_has_head(m))
		return;
	if ((Size) enc->ntext * K > enc->ng_cap)
		enc->ng_logp = encoded_grow(enc, enc->ng_logp, &enc->ng_cap, (Size) enc->ntext * K, sizeof(float),
									(Size) K * 64);
	u = bft_to_utf8(s, len, &ulen);
	if (bft_ngram_text_logprobs(m, u, ulen, enc->ng_logp + (Size) (enc->ntext - 1) * K, &err) != BFT_OK)
	{
		bft_engine_interrupt_rethrow();
		bft_report_engine_error(&err, "could not compute the n-gram features of a text");
	}
	if (u != s)
		pfree(u);
}

/* Mix the kept n-gram log-probabilities into the texts' probabilities (ntext, K). */
static void
encoded_mix_ngram(const bft_model *m, const BftEncoded *enc, float *probs)
{
	int			K = m->cfg.num_labels;
	int64		i;

	if (enc->ng_logp == NULL || !bft_ngram_has_head(m))
		return;
	for (i = 0; i < enc->ntext; i++)
		bft_ngram_mix_logprobs(probs + (Size) i * K, enc->ng_logp + (Size) i * K, K, m->cfg.ngram_scale);
}

/*
 * Class probabilities (enc->ntext, K) of the encoded texts: those of their
 * single window, or their windows' pooled as bft.long_text says (mean, or
 * max; a single-label model's maxima rescaled to sum 1).
 */
void
bft_encoded_probs(const bft_model *m, const BftEncoded *enc, float *probs)
{
	int			K = m->cfg.num_labels;
	float	   *wprobs;
	int64		i;

	if (enc->nwin == enc->ntext)
	{
		bft_predict_encoded(m, enc->nwin, enc->tokens, enc->offsets, probs);
		encoded_mix_ngram(m, enc, probs);
		return;
	}
	bft_memory_require((Size) enc->nwin * K * sizeof(float), "the probabilities of a long text's windows",
					   "Classify shorter texts, or set bft.long_text = 'truncate'.");
	wprobs = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * (Size) K * enc->nwin);
	bft_predict_encoded(m, enc->nwin, enc->tokens, enc->offsets, wprobs);
	for (i = 0; i < enc->ntext; i++)
		bft_pool_windows(wprobs + (Size) enc->first[i] * K, enc->first[i + 1] - enc->first[i], K,
						 bft_long_text == BFT_LONG_TEXT_MAX ? BFT_WINDOWS_MAX : BFT_WINDOWS_MEAN,
						 bft_long_text == BFT_LONG_TEXT_MAX &&
						 m->cfg.problem_type != BFT_PROBLEM_MULTI_LABEL,
						 probs + (Size) i * K);
	pfree(wprobs);
	encoded_mix_ngram(m, enc, probs);
}

/* Probabilities for one text. */
static float *
predict_one(BftModelEntry *e, text *t)
{
	BftEncoded	enc;
	float	   *probs = palloc(sizeof(float) * e->model->cfg.num_labels);

	bft_encoded_init(&enc);
	bft_encoded_add_text(&enc, e->model, e->max_length, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	bft_encoded_probs(e->model, &enc, probs);
	return probs;
}

/*
 * The labels a text gets, as a text[]: of a multi-label classifier, every
 * label whose probability reaches bft.multilabel_threshold, most probable
 * first (possibly none); of a single-label classifier, the one best label.
 */
static Datum
label_set(const BftModelEntry *e, const float *probs)
{
	int			K = e->model->cfg.num_labels;
	Datum	   *d = palloc(sizeof(Datum) * K);
	int			n = 0;
	int			i;

	if (e->model->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL)
	{
		ScoreIdx   *si = palloc(sizeof(ScoreIdx) * K);

		for (i = 0; i < K; i++)
		{
			si[i].score = probs[i];
			si[i].idx = i;
		}
		qsort(si, K, sizeof(ScoreIdx), score_cmp);
		for (i = 0; i < K && si[i].score >= bft_multilabel_threshold; i++)
			d[n++] = PointerGetDatum(label_text(e->model, si[i].idx));
	}
	else
		d[n++] = PointerGetDatum(label_text(e->model, argmax(probs, K)));
	return PointerGetDatum(construct_array(d, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/* bft_classify(text, model) → the label name. */
Datum
bft_classify_sql(PG_FUNCTION_ARGS)
{
	BftModelEntry *e;
	float	   *probs;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	e = single_label_model(opt_text_arg(fcinfo, 1), "bft_classify()");
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

/*
 * bft_predict(text, model, top_k) → (label, label_id, score) best first: the
 * top_k labels (NULL: 1) of a single-label classifier; of a multi-label one,
 * every label whose probability reaches bft.multilabel_threshold (at most
 * top_k of them when given).
 */
Datum
bft_predict_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	BftModelEntry *e;
	float	   *probs;
	int			K;
	int			top_k = PG_ARGISNULL(2) ? -1 : PG_GETARG_INT32(2);
	int			nout;
	ScoreIdx   *si;
	int			i;

	if (!PG_ARGISNULL(2) && top_k <= 0)
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
	if (is_multi_label(e))
	{
		for (nout = 0; nout < K && si[nout].score >= bft_multilabel_threshold; nout++)
			;
		if (top_k > 0)
			nout = Min(nout, top_k);
	}
	else
		nout = Min(top_k > 0 ? top_k : 1, K);
	for (i = 0; i < nout; i++)
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
 * The non-NULL elements of a one-dimensional text[] encoded for e: *enc
 * gets them in order, map[i] the index of element i among them (-1 for
 * NULL).  Returns the number of elements; *arr_out the array.
 */
static int
encode_array(FunctionCallInfo fcinfo, BftModelEntry *e, BftEncoded *enc, int **map_out,
			 bool **nulls_out, ArrayType **arr_out)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(0);
	Datum	   *elems;
	bool	   *enulls;
	int			nelems;
	int		   *map;
	int			i;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("texts must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &nelems);
	map = palloc(sizeof(int) * Max(nelems, 1));
	bft_encoded_init(enc);
	for (i = 0; i < nelems; i++)
	{
		text	   *t;

		map[i] = -1;
		if (enulls[i])
			continue;
		t = DatumGetTextPP(elems[i]);
		map[i] = (int) enc->ntext;
		bft_encoded_add_text(enc, e->model, e->max_length, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
		if ((i & 255) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	*map_out = map;
	*nulls_out = enulls;
	*arr_out = arr;
	return nelems;
}

/* The text arrays' shared checks: is the array empty or NULL? */
static bool
empty_texts(FunctionCallInfo fcinfo)
{
	return PG_ARGISNULL(0) || ArrayGetNItems(ARR_NDIM(PG_GETARG_ARRAYTYPE_P(0)),
											 ARR_DIMS(PG_GETARG_ARRAYTYPE_P(0))) == 0;
}

/*
 * bft_classify_batch(texts[], model) → labels[]: one engine call over the
 * whole array (length-sorted batches), NULL elements give NULL.
 */
Datum
bft_classify_batch_sql(PG_FUNCTION_ARGS)
{
	ArrayType  *arr;
	bool	   *enulls;
	int			nelems;
	BftModelEntry *e;
	int			K;
	BftEncoded	enc;
	int		   *map;
	float	   *probs;
	Datum	   *out;
	int			i;
	int			dims[1];
	int			lbs[1];

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	if (empty_texts(fcinfo))
	{
		if (ARR_NDIM(PG_GETARG_ARRAYTYPE_P(0)) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
					 errmsg("texts must be a one-dimensional array")));
		PG_RETURN_ARRAYTYPE_P(construct_empty_array(TEXTOID));
	}
	e = single_label_model(opt_text_arg(fcinfo, 1), "bft_classify_batch()");
	K = e->model->cfg.num_labels;
	nelems = encode_array(fcinfo, e, &enc, &map, &enulls, &arr);
	bft_memory_require(bft_encoded_bytes(&enc) + (Size) enc.ntext * K * sizeof(float),
					   "classifying this array",
					   "Classify fewer texts per call (a few thousand), or lower bft.model_cache_size.");
	probs = MemoryContextAllocHuge(CurrentMemoryContext,
								   sizeof(float) * (Size) K * (enc.ntext > 0 ? enc.ntext : 1));
	bft_encoded_probs(e->model, &enc, probs);

	out = palloc(sizeof(Datum) * nelems);
	for (i = 0; i < nelems; i++)
		out[i] = map[i] < 0 ? (Datum) 0 :
			PointerGetDatum(label_text(e->model, argmax(probs + (Size) map[i] * K, K)));
	dims[0] = nelems;
	lbs[0] = ARR_LBOUND(arr)[0];
	PG_RETURN_ARRAYTYPE_P(construct_md_array(out, enulls, 1, dims, lbs, TEXTOID, -1, false,
											 TYPALIGN_INT));
}

/*
 * bft_classify_labels(text, model) → text[]: the labels of a multi-label
 * classifier whose probability reaches bft.multilabel_threshold, most
 * probable first; for a single-label classifier its one label.
 */
Datum
bft_classify_labels_sql(PG_FUNCTION_ARGS)
{
	BftModelEntry *e;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	e = classifier_model(opt_text_arg(fcinfo, 1));
	PG_RETURN_DATUM(label_set(e, predict_one(e, PG_GETARG_TEXT_PP(0))));
}

/*
 * bft_classify_labels_batch(texts[], model) → (idx, labels text[]): the
 * label sets of a whole array (as bft_classify_labels) in one engine call;
 * idx is the element's subscript, NULL elements give no row.
 */
Datum
bft_classify_labels_batch_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	ArrayType  *arr;
	bool	   *enulls;
	int			nelems;
	BftModelEntry *e;
	int			K;
	BftEncoded	enc;
	int		   *map;
	float	   *probs;
	int			i;

	bft_srf_materialize(fcinfo, &tupdesc, &ts, ord_labels_types, 2);
	if (empty_texts(fcinfo))
		PG_RETURN_NULL();
	e = classifier_model(opt_text_arg(fcinfo, 1));
	K = e->model->cfg.num_labels;
	nelems = encode_array(fcinfo, e, &enc, &map, &enulls, &arr);
	bft_memory_require(bft_encoded_bytes(&enc) + (Size) enc.ntext * K * sizeof(float),
					   "classifying this array",
					   "Classify fewer texts per call (a few thousand), or lower bft.model_cache_size.");
	probs = MemoryContextAllocHuge(CurrentMemoryContext,
								   sizeof(float) * (Size) K * (enc.ntext > 0 ? enc.ntext : 1));
	bft_encoded_probs(e->model, &enc, probs);
	for (i = 0; i < nelems; i++)
	{
		Datum		values[2];
		bool		nulls[2] = {false, false};

		if (map[i] < 0)
			continue;
		values[0] = Int32GetDatum(ARR_LBOUND(arr)[0] + i);
		values[1] = label_set(e, probs + (Size) map[i] * K);
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	PG_RETURN_NULL();
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

/* Positions of bft_evaluate's SQL arguments. */
typedef enum EvalArg
{
	EA_MODEL,
	EA_RELATION,
	EA_TEXT_COLUMN,
	EA_LABEL_COLUMN
} EvalArg;

/* The true class sets of an evaluation's rows: row i's at ids[off[i] .. off[i+1]). */
typedef struct TruthSets
{
	int64		n;
	int64	   *off;
	Size		off_cap;
	int32	   *ids;
	Size		ids_cap;
} TruthSets;

/* One evaluation: the model, the rows read, the scores and the report. */
typedef struct EvalRun
{
	TupleDesc	tupdesc;
	Tuplestorestate *tstore;
	char	   *model_name;
	BftModelEntry *e;			/* fetched again after anything that may evict it */
	BftSource	src;
	int			K;				/* the model's labels */
	bool		multi;
	char	  **mnames;			/* (K) the model's label names */
	BftLabelMap classes;		/* the model's K labels, then unknown true labels */
	BftEncoded	enc;
	TruthSets	truth;
	BftRowReader rd;
	float	   *probs;			/* (n, K) */
	int64		n;
	bft_class_counts cc;
	StringInfoData rep;
} EvalRun;

/*
 * The class id of one true label value (an integer label's value as text, or
 * a text label's name; an integer label i also matches the model's default
 * name LABEL_i).  A label the model does not know becomes a class of its own.
 */
static int
eval_class(EvalRun *r, Datum v)
{
	char		ibuf[32];
	char	   *lname;
	int			id;

	if (r->src.label_is_int)
	{
		int64		x = DatumGetInt64(v);

		snprintf(ibuf, sizeof(ibuf), INT64_FORMAT, x);
		lname = ibuf;
		id = bft_label_map_find(&r->classes, lname);
		if (id < 0 && x >= 0 && x < r->K)
		{
			char		dflt[32];

			snprintf(dflt, sizeof(dflt), "LABEL_" INT64_FORMAT, x);
			if (strcmp(r->mnames[x], dflt) == 0)
				id = bft_label_map_find(&r->classes, r->mnames[x]);
		}
	}
	else
	{
		lname = TextDatumGetCString(v);
		if (strlen(lname) > BFT_MAX_LABEL_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("label longer than %d bytes", BFT_MAX_LABEL_BYTES)));
		id = bft_label_map_find(&r->classes, lname);
	}
	if (id >= 0)
		return id;
	/* A true label the model does not know: a class of its own. */
	if (r->classes.n >= BFT_MAX_LABELS + r->K)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("more than %d distinct labels", BFT_MAX_LABELS)));
	return bft_label_map_add(&r->classes, lname);
}

/* Precision, recall, F1 of one class; F1 0 when nothing is true nor predicted. */
static void
prf(int64 tp, int64 fp, int64 fn, double *p, double *rc, double *f1)
{
	*p = tp + fp > 0 ? (double) tp / (tp + fp) : 0.0;
	*rc = tp + fn > 0 ? (double) tp / (tp + fn) : 0.0;
	*f1 = bft_f1(tp, fp, fn);
}

/* Add class cls to the set of the row being read (row ts->n), once. */
static void
truth_add(TruthSets *ts, int cls)
{
	int64		j;

	for (j = ts->off[ts->n]; j < ts->off[ts->n + 1]; j++)
		if (ts->ids[j] == cls)
			return;
	if ((Size) ts->off[ts->n + 1] + 1 > ts->ids_cap)
	{
		ts->ids_cap *= 2;
		ts->ids = repalloc_huge(ts->ids, sizeof(int32) * ts->ids_cap);
	}
	ts->ids[ts->off[ts->n + 1]++] = cls;
}

/* Start the set of the next row. */
static void
truth_next_row(TruthSets *ts)
{
	if ((Size) ts->n + 3 > ts->off_cap)
	{
		ts->off_cap *= 2;
		ts->off = repalloc_huge(ts->off, sizeof(int64) * ts->off_cap);
	}
	ts->off[ts->n + 1] = ts->off[ts->n];
}

/* Arguments, the source, the model; a single-label model cannot score label sets. */
static void
eval_open(FunctionCallInfo fcinfo, EvalRun *r)
{
	r->model_name = opt_text_arg(fcinfo, EA_MODEL);
	if (PG_ARGISNULL(EA_RELATION) || PG_ARGISNULL(EA_TEXT_COLUMN) || PG_ARGISNULL(EA_LABEL_COLUMN))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation, text_column and label_column must not be NULL")));
	bft_srf_materialize(fcinfo, &r->tupdesc, &r->tstore, evaluate_types, 4);
	bft_prepare_source(PG_GETARG_OID(EA_RELATION), PG_GETARG_NAME(EA_TEXT_COLUMN),
					   PG_GETARG_NAME(EA_LABEL_COLUMN), &r->src);
	r->e = classifier_model(r->model_name);
	r->K = r->e->model->cfg.num_labels;
	r->multi = is_multi_label(r->e);
	if (r->src.label_is_array && !r->multi)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("label column \"%s\" holds label sets but model \"%s\" is a single-label classifier",
						NameStr(*PG_GETARG_NAME(EA_LABEL_COLUMN)), r->e->name),
				 errhint("Evaluate a model trained on label sets (a text[] or integer[] label column).")));
}

/* Before each batch: the relation may be a view that classifies with other models. */
static void
eval_batch_start(void *arg)
{
	EvalRun    *r = (EvalRun *) arg;

	r->e = classifier_model(r->model_name);
}

/* One row: its true class set and its encoded text. */
static void
eval_row(void *arg, text *t, Datum *el, bool *elnull, int nel)
{
	EvalRun    *r = (EvalRun *) arg;
	int			k;

	truth_next_row(&r->truth);
	for (k = 0; k < nel; k++)
		if (!elnull[k])
			truth_add(&r->truth, eval_class(r, el[k]));
	r->truth.n++;
	bft_encoded_add_text(&r->enc, r->e->model, r->e->max_length, VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
}

/* After each batch: the texts and labels kept so far and the probabilities to come. */
static void
eval_batch_end(void *arg)
{
	EvalRun    *r = (EvalRun *) arg;

	bft_memory_require(bft_encoded_bytes(&r->enc) + r->truth.off_cap * 8 + r->truth.ids_cap * 4 +
					   (Size) r->truth.n * r->K * sizeof(float),
					   "the rows to evaluate",
					   "Evaluate fewer rows at once (a view with a WHERE clause), or lower bft.model_cache_size.");
}

/* The classes (the model's labels first), then every row's truth and encoded text. */
static void
eval_read_rows(EvalRun *r)
{
	MemoryContext cxt = CurrentMemoryContext;
	int			a;

	r->mnames = bft_model_label_names(r->e->model);
	bft_label_map_init(&r->classes, "bft labels", r->K + 16, cxt);
	for (a = 0; a < r->K; a++)
		bft_label_map_add(&r->classes, r->mnames[a]);

	bft_encoded_init(&r->enc);
	memset(&r->truth, 0, sizeof(r->truth));
	r->truth.off_cap = 1024;
	r->truth.ids_cap = 1024;
	r->truth.off = palloc(sizeof(int64) * r->truth.off_cap);
	r->truth.ids = palloc(sizeof(int32) * r->truth.ids_cap);
	r->truth.off[0] = 0;

	memset(&r->rd, 0, sizeof(r->rd));
	r->rd.src = &r->src;
	r->rd.cxt = cxt;
	r->rd.want_labels = true;
	r->rd.row = eval_row;
	r->rd.batch_start = eval_batch_start;
	r->rd.batch_end = eval_batch_end;
	r->rd.arg = r;
	bft_read_rows(&r->rd);
	bft_rows_report(&r->rd);
	r->n = r->truth.n;
}

/* The model's probabilities (n, K) for the rows read. */
static void
eval_predict(EvalRun *r)
{
	/* The model may have been evicted by a nested call: fetch it again. */
	r->e = classifier_model(r->model_name);
	r->probs = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(float) * (Size) r->K * r->n);
	bft_encoded_probs(r->e->model, &r->enc, r->probs);
	bft_counts_init(&r->cc, r->classes.n, palloc0(sizeof(int64) * 3 * r->classes.n));
}

/* The report's opening: model, version, problem type, labels. */
static void
eval_report_head(EvalRun *r)
{
	StringInfo	rep = &r->rep;
	int			a;

	initStringInfo(rep);
	appendStringInfoString(rep, "{\"model\": ");
	escape_json(rep, r->e->name);
	appendStringInfo(rep, ", \"version\": %d, ", r->e->version);
	if (r->multi)
	{
		appendStringInfoString(rep, "\"problem_type\": \"multi_label_classification\"");
		bft_json_key_float(rep, "threshold", bft_multilabel_threshold, true);
		appendStringInfoString(rep, ", ");
	}
	appendStringInfoString(rep, "\"labels\": [");
	for (a = 0; a < r->classes.n; a++)
	{
		if (a)
			appendStringInfoString(rep, ", ");
		escape_json(rep, r->classes.names[a]);
	}
	appendStringInfoString(rep, "], \"per_label\": {");
}

/* One class's precision, recall, F1 and support in the report. */
static void
eval_report_label(StringInfo rep, const char *name, int64 tp, int64 fp, int64 fn, bool comma)
{
	double		prec,
				rec,
				f1;

	prf(tp, fp, fn, &prec, &rec, &f1);
	if (comma)
		appendStringInfoString(rep, ", ");
	escape_json(rep, name);
	appendStringInfoString(rep, ": {");
	bft_json_key_float(rep, "precision", prec, false);
	bft_json_key_float(rep, "recall", rec, true);
	bft_json_key_float(rep, "f1", f1, true);
	appendStringInfo(rep, ", \"support\": " INT64_FORMAT "}", tp + fn);
}

/*
 * Single-label: the most probable class against the one true class;
 * per-label scores of the classes present in truth or prediction and the
 * confusion matrix (rows = true, columns = predicted).
 */
static void
eval_single_label(EvalRun *r)
{
	int			C = r->classes.n;
	int64	   *conf = palloc0(sizeof(int64) * C * C);
	bft_class_counts *cc = &r->cc;
	bool		first = true;
	int64		i;
	int			a,
				b;

	for (i = 0; i < r->n; i++)
	{
		int			p = argmax(r->probs + i * r->K, r->K);
		int			tcls = r->truth.ids[r->truth.off[i]];

		conf[tcls * C + p]++;
		bft_counts_add(cc, tcls, p);
	}
	for (a = 0; a < C; a++)
	{
		if (cc->tp[a] + cc->fp[a] + cc->fn[a] == 0)
			continue;
		eval_report_label(&r->rep, r->classes.names[a], cc->tp[a], cc->fp[a], cc->fn[a], !first);
		first = false;
	}
	appendStringInfoString(&r->rep, "}, \"confusion_matrix\": [");
	for (a = 0; a < C; a++)
	{
		appendStringInfoString(&r->rep, a ? ", [" : "[");
		for (b = 0; b < C; b++)
			appendStringInfo(&r->rep, b ? ", " INT64_FORMAT : INT64_FORMAT, conf[a * C + b]);
		appendStringInfoChar(&r->rep, ']');
	}
	appendStringInfoString(&r->rep, "]");
}

/*
 * Multi-label: the labels at bft.multilabel_threshold against the true
 * sets; per-label scores of every class, subset accuracy, micro and macro
 * F1, Hamming loss.
 */
static void
eval_multi_label(EvalRun *r)
{
	int			C = r->classes.n;
	bft_class_counts *cc = &r->cc;
	unsigned char *pred = palloc(C);
	unsigned char *yes = palloc(C);
	int64		stp = 0,
				sfp = 0,
				sfn = 0;
	double		mp,
				mr,
				mf;
	int64		i;
	int			a;

	for (i = 0; i < r->n; i++)
	{
		int64		j;

		for (a = 0; a < C; a++)
		{
			pred[a] = a < r->K && r->probs[i * r->K + a] >= bft_multilabel_threshold;
			yes[a] = 0;
		}
		for (j = r->truth.off[i]; j < r->truth.off[i + 1]; j++)
			yes[r->truth.ids[j]] = 1;
		bft_counts_add_set(cc, yes, pred);
		if ((i & 1023) == 0)
			CHECK_FOR_INTERRUPTS();
	}
	for (a = 0; a < C; a++)
	{
		eval_report_label(&r->rep, r->classes.names[a], cc->tp[a], cc->fp[a], cc->fn[a], a > 0);
		stp += cc->tp[a];
		sfp += cc->fp[a];
		sfn += cc->fn[a];
	}
	prf(stp, sfp, sfn, &mp, &mr, &mf);
	appendStringInfoString(&r->rep, "}");
	bft_json_key_float(&r->rep, "subset_accuracy", bft_counts_accuracy(cc), true);
	bft_json_key_float(&r->rep, "micro_f1", mf, true);
	bft_json_key_float(&r->rep, "macro_f1", bft_counts_macro_f1(cc, 1), true);
	bft_json_key_float(&r->rep, "micro_precision", mp, true);
	bft_json_key_float(&r->rep, "micro_recall", mr, true);
	/* (row, label) pairs predicted wrongly */
	bft_json_key_float(&r->rep, "hamming_loss", (double) (sfp + sfn) / ((double) r->n * C), true);
}

/*
 * bft_evaluate(model, relation, text_column, label_column) →
 * accuracy, macro-F1, rows, and a report.  Single-label models: accuracy,
 * macro-F1 over the labels present in truth or prediction (as scikit-learn),
 * per-label precision/recall/F1/support and the confusion matrix (rows =
 * true, columns = predicted).  Multi-label models (the label column an array
 * of labels, or one label per row): subset accuracy, macro-F1 over every
 * label of the model and of the truth (0 for a label never true nor
 * predicted, as scikit-learn), micro-F1, Hamming loss and per-label scores at
 * bft.multilabel_threshold.
 */
Datum
bft_evaluate_sql(PG_FUNCTION_ARGS)
{
	EvalRun    *r = palloc0(sizeof(EvalRun));
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	eval_open(fcinfo, r);
	eval_read_rows(r);
	eval_predict(r);
	eval_report_head(r);
	if (r->multi)
		eval_multi_label(r);
	else
		eval_single_label(r);
	appendStringInfo(&r->rep, ", \"rows\": " INT64_FORMAT ", \"skipped\": " INT64_FORMAT "}",
					 r->n, r->rd.skipped);

	values[0] = Float4GetDatum((float4) bft_counts_accuracy(&r->cc));
	values[1] = Float4GetDatum((float4) bft_counts_macro_f1(&r->cc, r->multi));
	values[2] = Int64GetDatum(r->n);
	values[3] = DirectFunctionCall1(jsonb_in, CStringGetDatum(r->rep.data));
	tuplestore_putvalues(r->tstore, r->tupdesc, values, nulls);
	PG_RETURN_NULL();
}
