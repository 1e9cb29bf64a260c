/*
 * bft_train.c — bft_train(): read (text, label) rows through SPI cursors as
 * the calling user, tokenize them, fine-tune a base model or train a small
 * BERT from scratch, and store the result as a new model version.
 *
 * Every engine object lives in a TrainState whose memory-context reset
 * callback frees it, so an ERROR anywhere (cancel, statement_timeout, bad
 * data) leaks nothing.  Inside engine loops the progress callback runs
 * CHECK_FOR_INTERRUPTS under PG_TRY: an error is copied, the engine is told
 * to stop (it unwinds and frees its own state), and the error is re-thrown
 * once the engine has returned.
 */
#include "bft_pg.h"

#include <math.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/shortest_dec.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "tcop/utility.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "defaults.h"
#include "resource.h"

PG_FUNCTION_INFO_V1(bft_train_sql);

/* bft_train's result columns */
static const Oid train_types[9] = {TEXTOID, INT4OID, INT8OID, INT4OID, FLOAT4OID, FLOAT4OID,
FLOAT4OID, FLOAT4OID, INTERVALOID};

/* ---- source relation ---- */

static bool
is_text_type(Oid t)
{
	return t == TEXTOID || t == VARCHAROID || t == BPCHAROID || t == NAMEOID;
}

static bool
is_int_type(Oid t)
{
	return t == INT2OID || t == INT4OID || t == INT8OID;
}

/*
 * Check the relation and columns and build the SELECT that reads them
 * (identifiers quoted, never pasted).  Privileges are checked when the
 * query runs, as the calling user; row-level security applies.
 */
void
bft_prepare_source(Oid relid, Name text_col, Name label_col, BftSource *src)
{
	char		relkind = get_rel_relkind(relid);
	char	   *nsp;
	char	   *rel;
	AttrNumber	ta,
				la;
	Oid			tt,
				lt;
	StringInfoData q;

	if (relkind == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	rel = get_rel_name(relid);
	nsp = get_namespace_name(get_rel_namespace(relid));
	src->relid = relid;
	src->relname = quote_qualified_identifier(nsp, rel);
	if (relkind != RELKIND_RELATION && relkind != RELKIND_VIEW &&
		relkind != RELKIND_MATVIEW && relkind != RELKIND_PARTITIONED_TABLE &&
		relkind != RELKIND_FOREIGN_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table, view or materialized view", rel)));

	ta = get_attnum(relid, NameStr(*text_col));
	if (ta == InvalidAttrNumber || ta < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						NameStr(*text_col), rel)));
	la = get_attnum(relid, NameStr(*label_col));
	if (la == InvalidAttrNumber || la < 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of relation \"%s\" does not exist",
						NameStr(*label_col), rel)));
	tt = getBaseType(get_atttype(relid, ta));
	lt = getBaseType(get_atttype(relid, la));
	src->label_is_array = false;
	if (OidIsValid(get_element_type(lt)))
	{
		Oid			et = getBaseType(get_element_type(lt));

		if (is_text_type(et) || is_int_type(et))
		{
			src->label_is_array = true;
			lt = et;
		}
	}
	if (!is_text_type(tt))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("text column \"%s\" has type %s", NameStr(*text_col), format_type_be(tt)),
				 errdetail("The text column must be of type text, varchar or char."),
				 errhint("Use a view that casts the column to text.")));
	if (!is_text_type(lt) && !is_int_type(lt))
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("label column \"%s\" has type %s", NameStr(*label_col), format_type_be(lt)),
				 errdetail("Labels must be integers (class ids) or text (class names), or arrays of them (label sets)."),
				 errhint("Use a view that casts the column to integer or text.")));
	src->label_is_int = is_int_type(lt);

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT (%s)::text, (%s)::%s%s FROM %s",
					 quote_identifier(NameStr(*text_col)),
					 quote_identifier(NameStr(*label_col)),
					 src->label_is_int ? "pg_catalog.int8" : "pg_catalog.text",
					 src->label_is_array ? "[]" : "",
					 src->relname);
	src->query = q.data;
}

/* ---- state freed on error ---- */

typedef struct TrainState
{
	bft_wp_trainer *wp;
	bft_tokenizer *tok;			/* owned: the learned vocabulary's tokenizer */
	bft_model  *model;
	bft_model  *cmp;			/* deployed version, for deploy => 'if_better' */
	char	   *vocab;			/* malloc'd learned vocab.txt */
	bool		progress_on;
} TrainState;

static void
train_state_cleanup(void *arg)
{
	TrainState *st = (TrainState *) arg;

	if (st->wp)
		bft_wp_trainer_free(st->wp);
	if (st->tok)
		bft_tokenizer_free(st->tok);
	if (st->model)
		bft_model_free(st->model);
	if (st->cmp)
		bft_model_free(st->cmp);
	if (st->vocab)
		free(st->vocab);
	if (st->progress_on)
		bft_progress_end();
	memset(st, 0, sizeof(TrainState));
#ifdef __GLIBC__
	/*
	 * Give the engine's freed buffers back to the OS: glibc otherwise keeps
	 * them in the heap (its mmap threshold grows after large frees), so a
	 * backend that trained once would hold ~100 MB it no longer uses.
	 */
	malloc_trim(0);
#endif
}

/* ---- progress callback ---- */

typedef struct ProgressCtx
{
	const char *model;
	const char *phase;			/* "mlm" or "training" */
	double		last_notice;
	StringInfoData epochs;		/* JSON array elements of per-epoch metrics */
	int			nepochs;
	ErrorData  *edata;			/* error caught inside the engine's loop */
	BftProgressInfo info;
	TimestampTz started;
} ProgressCtx;

static void
format_eta(char *buf, size_t len, double s)
{
	long		t;

	if (!(s >= 0) || s > 1e8)
	{
		strlcpy(buf, "?", len);
		return;
	}
	t = (long) (s + 0.5);
	snprintf(buf, len, "%ld:%02ld:%02ld", t / 3600, (t / 60) % 60, t % 60);
}

static int
progress_cb(void *ctx, const bft_progress *p)
{
	ProgressCtx *pc = (ProgressCtx *) ctx;
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile int stop = 0;

	if (pc->edata)
		return 1;
	PG_TRY();
	{
		double		now = bft_now_seconds();
		char		eta[32];

		CHECK_FOR_INTERRUPTS();

		strlcpy(pc->info.model, pc->model, sizeof(pc->info.model));
		strlcpy(pc->info.phase, pc->phase, sizeof(pc->info.phase));
		pc->info.epoch = p->epoch;
		pc->info.epochs = p->epochs;
		pc->info.step = p->step;
		pc->info.steps = p->total_steps;
		pc->info.loss = p->loss;
		pc->info.samples_per_s = p->samples_per_s;
		pc->info.started = pc->started;
		pc->info.eta_s = p->eta_s;
		bft_progress_update(&pc->info, p->phase == 1);
		format_eta(eta, sizeof(eta), p->eta_s);

		if (p->phase == 1 && p->restored)
		{
			/* an epoch completed before the interruption: its metrics, no NOTICE */
			if (pc->nepochs++ > 0)
				appendStringInfoString(&pc->epochs, ", ");
			appendStringInfo(&pc->epochs, "{\"epoch\": %d", p->epoch);
			bft_json_key_float(&pc->epochs, "loss", p->loss, true);
			bft_json_key_float(&pc->epochs, "eval_loss", p->eval_loss, true);
			bft_json_key_float(&pc->epochs, "eval_accuracy", p->eval_accuracy, true);
			bft_json_key_float(&pc->epochs, "eval_macro_f1", p->eval_macro_f1, true);
			bft_json_key_float(&pc->epochs, "samples_per_second", p->samples_per_s, true);
			bft_json_key_float(&pc->epochs, "elapsed_s", p->elapsed_s, true);
			appendStringInfoString(&pc->epochs, ", \"restored\": true}");
		}
		else if (p->phase == 1)
		{
			if (!isnan(p->eval_accuracy))
				ereport(NOTICE,
						(errmsg("%s epoch %d/%d: loss %.4f, eval_loss %.4f, eval_accuracy %.4f, eval_macro_f1 %.4f (%.1f samples/s, ETA %s)",
								pc->phase, p->epoch, p->epochs, p->loss, p->eval_loss,
								p->eval_accuracy, p->eval_macro_f1, p->samples_per_s, eta)));
			else
				ereport(NOTICE,
						(errmsg("%s epoch %d/%d: loss %.4f (%.1f samples/s, ETA %s)",
								pc->phase, p->epoch, p->epochs, p->loss, p->samples_per_s, eta)));
			if (pc->nepochs++ > 0)
				appendStringInfoString(&pc->epochs, ", ");
			appendStringInfo(&pc->epochs, "{\"epoch\": %d", p->epoch);
			bft_json_key_float(&pc->epochs, "loss", p->loss, true);
			bft_json_key_float(&pc->epochs, "eval_loss", p->eval_loss, true);
			bft_json_key_float(&pc->epochs, "eval_accuracy", p->eval_accuracy, true);
			bft_json_key_float(&pc->epochs, "eval_macro_f1", p->eval_macro_f1, true);
			bft_json_key_float(&pc->epochs, "samples_per_second", p->samples_per_s, true);
			bft_json_key_float(&pc->epochs, "elapsed_s", p->elapsed_s, true);
			appendStringInfoChar(&pc->epochs, '}');
			pc->last_notice = now;
		}
		else
		{
			/* every optimizer step at DEBUG1 (Trainer's logging_steps=1) */
			if (message_level_is_interesting(DEBUG1))
			{
				char		lr[DOUBLE_SHORTEST_DECIMAL_LEN];

				double_to_shortest_decimal_buf(p->lr, lr);
				ereport(DEBUG1,
						(errmsg_internal("%s step " INT64_FORMAT "/" INT64_FORMAT " epoch %d loss %.9g lr %s",
										 pc->phase, p->step, p->total_steps, p->epoch,
										 (double) p->step_loss, lr)));
			}
		}
		if (p->phase == 0 && bft_progress_interval > 0 && now - pc->last_notice >= bft_progress_interval)
		{
			ereport(NOTICE,
					(errmsg("%s epoch %d/%d, step " INT64_FORMAT "/" INT64_FORMAT ": loss %.4f, %.1f samples/s, ETA %s",
							pc->phase, p->epoch, p->epochs, p->step, p->total_steps,
							p->loss, p->samples_per_s, eta)));
			pc->last_notice = now;
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		pc->edata = CopyErrorData();
		FlushErrorState();
		stop = 1;
	}
	PG_END_TRY();
	return stop;
}

/* A resumed engine call that refused its saved state: say so, with the way out. */
static void
check_state_result(int rc, const bft_error *err, const char *resume_path)
{
	if (resume_path && (rc == BFT_EMISMATCH || rc == BFT_EFORMAT))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot resume: the saved training state does not fit this training"),
				 errdetail("%s", err->msg),
				 errhint("Call bft_train() with the data and arguments of the interrupted training, "
						 "or with resume => false to start over (which replaces the saved state).")));
}

/* After an engine call: re-throw a caught error, or report the engine's. */
static void
check_engine_result(int rc, ProgressCtx *pc, const bft_error *err, const char *what)
{
	if (pc->edata)
	{
		ErrorData  *ed = pc->edata;

		pc->edata = NULL;
		ReThrowError(ed);
	}
	if (rc != 0)
		bft_report_engine_error(err, what);
}

/* ---- a small deterministic RNG for the validation split (splitmix64) ---- */

static uint64
split_next(uint64 *state)
{
	uint64		z = (*state += UINT64CONST(0x9E3779B97F4A7C15));

	z = (z ^ (z >> 30)) * UINT64CONST(0xBF58476D1CE4E5B9);
	z = (z ^ (z >> 27)) * UINT64CONST(0x94D049BB133111EB);
	return z ^ (z >> 31);
}

/* ---- rows ---- */

typedef struct LabelEnt
{
	char		key[BFT_MAX_LABEL_BYTES + 1];
	int			tmp;
} LabelEnt;

typedef struct Rows
{
	MemoryContext cxt;			/* where the arrays live */
	int64		n;
	int32	   *tokens;
	Size		tok_cap;
	int64		total;
	int64	   *offsets;
	int64	   *raw;			/* integer label values, or temporary text ids */
	Size		cap;
	/* label sets (array label column): row i's raw labels, distinct, at
	 * lab_raw[lab_off[i] .. lab_off[i+1]) */
	int64	   *lab_off;		/* (cap) */
	int64	   *lab_raw;
	Size		lab_cap;
	int64		lab_total;
	/* second tokenization (deployed model's vocabulary), if needed */
	int32	   *ctokens;
	Size		ctok_cap;
	int64		ctotal;
	int64	   *coffsets;
	/* text labels */
	HTAB	   *labels;
	char	  **tmp_names;
	int			ntmp;
	int			tmp_cap;
	int64		skipped;
	int64		fed;			/* rows fed to the vocabulary trainer */
	Size		mem_base;		/* bytes the model and its training need besides the rows */
} Rows;

/* Memory the collected rows take now, and again as train/validation copies. */
static Size
rows_bytes(const Rows *rows)
{
	Size		b = rows->tok_cap * sizeof(int32) + rows->ctok_cap * sizeof(int32) +
		rows->cap * sizeof(int64) * (rows->coffsets ? 3 : 2) +
		(rows->lab_off ? rows->cap * sizeof(int64) + rows->lab_cap * sizeof(int64) : 0);

	return b * 2;
}

static void
append_ids(int32 **arr, Size *cap, int64 *total, const int32 *ids, int n)
{
	if (*total + n > (int64) *cap)
	{
		Size		nc = Max(*cap * 2, (Size) 65536);

		while ((int64) nc < *total + n)
			nc *= 2;
		*arr = *arr ? repalloc_huge(*arr, sizeof(int32) * nc) :
			MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * nc);
		*cap = nc;
	}
	memcpy(*arr + *total, ids, sizeof(int32) * n);
	*total += n;
}

/*
 * The raw id of one label value: an integer label's value (a class id,
 * checked), or a text label's temporary id (names get ids in the order they
 * are first seen; sorted later).
 */
static int64
raw_label(Rows *rows, const BftSource *src, Datum v)
{
	if (src->label_is_int)
	{
		int64		x = DatumGetInt64(v);

		if (x < 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("label " INT64_FORMAT " is negative", x),
					 errdetail("Integer labels are class ids 0, 1, 2, ...")));
		if (x >= BFT_MAX_LABELS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("label " INT64_FORMAT " is too large", x),
					 errdetail("Integer labels are class ids below %d.", BFT_MAX_LABELS)));
		return x;
	}
	else
	{
		char	   *name = TextDatumGetCString(v);
		LabelEnt   *le;
		bool		found;
		int64		id;

		if (strlen(name) > BFT_MAX_LABEL_BYTES)
			ereport(ERROR,
					(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
					 errmsg("label longer than %d bytes", BFT_MAX_LABEL_BYTES)));
		le = hash_search(rows->labels, name, HASH_ENTER, &found);
		if (!found)
		{
			if (rows->ntmp >= BFT_MAX_LABELS)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("more than %d distinct labels", BFT_MAX_LABELS),
						 errhint("Is label_column really a class label?")));
			if (rows->ntmp == rows->tmp_cap)
			{
				rows->tmp_cap *= 2;
				rows->tmp_names = repalloc(rows->tmp_names, sizeof(char *) * rows->tmp_cap);
			}
			rows->tmp_names[rows->ntmp] = pstrdup(name);
			le->tmp = rows->ntmp++;
		}
		id = le->tmp;
		pfree(name);
		return id;
	}
}

/*
 * One pass over the rows.  wp != NULL: feed texts to the vocabulary trainer
 * only.  Otherwise tokenize (with tok, and cmp_tok when given) and collect
 * labels.
 */
static void
scan_rows(BftSource *src, bft_wp_trainer *wp, const bft_tokenizer *tok, int max_length,
		  const bft_tokenizer *cmp_tok, int cmp_max_length, Rows *rows)
{
	Portal		portal;
	int32	   *ids = palloc(sizeof(int32) * Max(max_length, cmp_max_length));
	bft_error	err;

	SPI_connect();
	portal = SPI_cursor_open_with_args(NULL, src->query, 0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		uint64		r;

		SPI_cursor_fetch(portal, true, BFT_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		for (r = 0; r < SPI_processed; r++)
		{
			HeapTuple	tup = SPI_tuptable->vals[r];
			TupleDesc	td = SPI_tuptable->tupdesc;
			bool		tnull,
						lnull;
			Datum		tdat = SPI_getbinval(tup, td, 1, &tnull);
			Datum		ldat = SPI_getbinval(tup, td, 2, &lnull);
			text	   *t;
			char	   *u;
			int			ulen;
			int			n;
			MemoryContext old;

			if (tnull || lnull)
			{
				if (wp == NULL)
					rows->skipped++;
				continue;
			}
			t = DatumGetTextPP(tdat);
			u = bft_to_utf8(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &ulen);
			if (wp)
			{
				rows->fed++;
				if (bft_wp_trainer_feed(wp, u, ulen, &err) != 0)
					bft_report_engine_error(&err, "could not learn the vocabulary");
				continue;
			}

			/* Accumulate in the caller's (train) context, not SPI's. */
			old = MemoryContextSwitchTo(rows->cxt);
			if ((Size) rows->n + 2 > rows->cap)
			{
				rows->cap *= 2;
				rows->offsets = repalloc_huge(rows->offsets, sizeof(int64) * rows->cap);
				rows->raw = repalloc_huge(rows->raw, sizeof(int64) * rows->cap);
				if (rows->lab_off)
					rows->lab_off = repalloc_huge(rows->lab_off, sizeof(int64) * rows->cap);
				if (rows->coffsets)
					rows->coffsets = repalloc_huge(rows->coffsets, sizeof(int64) * rows->cap);
			}
			if (src->label_is_array)
			{
				ArrayType  *arr = DatumGetArrayTypeP(ldat);
				Datum	   *el;
				bool	   *elnull;
				int			nel;
				int			e;
				int64		first = rows->lab_total;

				if (src->label_is_int)
					deconstruct_array(arr, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
									  &el, &elnull, &nel);
				else
					deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &el, &elnull, &nel);
				for (e = 0; e < nel; e++)
				{
					int64		id;
					int64		k;
					bool		dup = false;

					if (elnull[e])
						continue;
					id = raw_label(rows, src, el[e]);
					for (k = first; k < rows->lab_total && !dup; k++)
						dup = rows->lab_raw[k] == id;
					if (dup)
						continue;
					if ((Size) rows->lab_total + 1 > rows->lab_cap)
					{
						rows->lab_cap = Max(rows->lab_cap * 2, (Size) 1024);
						rows->lab_raw = rows->lab_raw ? repalloc_huge(rows->lab_raw, sizeof(int64) * rows->lab_cap) :
							MemoryContextAllocHuge(rows->cxt, sizeof(int64) * rows->lab_cap);
					}
					rows->lab_raw[rows->lab_total++] = id;
				}
				rows->lab_off[rows->n + 1] = rows->lab_total;
				rows->raw[rows->n] = -1;
				pfree(el);
				pfree(elnull);
			}
			else
				rows->raw[rows->n] = raw_label(rows, src, ldat);

			n = bft_encode(tok, u, ulen, max_length, ids, &err);
			if (n < 0)
				bft_report_engine_error(&err, "could not tokenize text");
			append_ids(&rows->tokens, &rows->tok_cap, &rows->total, ids, n);
			rows->offsets[rows->n + 1] = rows->total;
			if (cmp_tok)
			{
				n = bft_encode(cmp_tok, u, ulen, cmp_max_length, ids, &err);
				if (n < 0)
					bft_report_engine_error(&err, "could not tokenize text");
				append_ids(&rows->ctokens, &rows->ctok_cap, &rows->ctotal, ids, n);
				rows->coffsets[rows->n + 1] = rows->ctotal;
			}
			rows->n++;
			MemoryContextSwitchTo(old);
			if (u != VARDATA_ANY(t))
				pfree(u);
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
		if (wp == NULL)
			bft_memory_require(rows->mem_base + rows_bytes(rows), "training on these rows",
							   "Lower max_length, batch_size or the model's size, or train on fewer rows "
							   "(a view with a WHERE clause); a superuser can raise bft.max_memory.");
	}
	SPI_cursor_close(portal);
	SPI_finish();
	pfree(ids);
}

static int
cstr_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Build a dataset of the selected rows (sel[i] == want; all when sel is NULL)
 * in scan order, with their labels (single-label) or label sets (lab_off,
 * lab_ids: multi-label) when given.
 */
static void
subset(const int32 *tokens, const int64 *offsets, const int32 *labels, const int64 *lab_off,
	   const int32 *lab_ids, int64 n, const bool *sel, bool want, bft_dataset *ds)
{
	int64		m = 0;
	int64		total = 0;
	int64		i;
	int32	   *t;
	int64	   *o;
	int32	   *l;

	for (i = 0; i < n; i++)
		if (sel == NULL || sel[i] == want)
		{
			m++;
			total += offsets[i + 1] - offsets[i];
		}
	t = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * Max(total, 1));
	o = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * (m + 1));
	l = labels ? MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * Max(m, 1)) : NULL;
	o[0] = 0;
	m = 0;
	for (i = 0; i < n; i++)
		if (sel == NULL || sel[i] == want)
		{
			int64		len = offsets[i + 1] - offsets[i];

			memcpy(t + o[m], tokens + offsets[i], sizeof(int32) * len);
			o[m + 1] = o[m] + len;
			if (l)
				l[m] = labels[i];
			m++;
		}
	ds->n = m;
	ds->tokens = t;
	ds->offsets = o;
	ds->labels = l;
	ds->label_offsets = NULL;
	ds->label_ids = NULL;
	if (lab_off && lab_ids)
	{
		int64		total = 0;
		int64	   *lo;
		int32	   *li;

		for (i = 0; i < n; i++)
			if (sel == NULL || sel[i] == want)
				total += lab_off[i + 1] - lab_off[i];
		lo = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int64) * (m + 1));
		li = MemoryContextAllocHuge(CurrentMemoryContext, sizeof(int32) * Max(total, 1));
		lo[0] = 0;
		m = 0;
		for (i = 0; i < n; i++)
			if (sel == NULL || sel[i] == want)
			{
				int64		len = lab_off[i + 1] - lab_off[i];

				memcpy(li + lo[m], lab_ids + lab_off[i], sizeof(int32) * len);
				lo[m + 1] = lo[m] + len;
				m++;
			}
		ds->label_offsets = lo;
		ds->label_ids = li;
	}
}

/* ---- options ---- */

typedef struct Arch
{
	int			hidden_size;
	int			num_hidden_layers;
	int			num_attention_heads;
	int			intermediate_size;
	int			vocab_size;
	int			max_position_embeddings;
	bool		do_lower_case;
	bool		shape_given;	/* architecture named hidden_size, num_hidden_layers, ... */
	bool		vocab_given;	/* architecture named vocab_size */
} Arch;

static int
arch_int(const char *key, const char *val, int lo, int hi)
{
	char	   *end;
	long		v;

	errno = 0;
	v = strtol(val, &end, 10);
	if (errno != 0 || end == val || *end != '\0' || v < lo || v > hi)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("architecture key \"%s\" must be an integer between %d and %d", key, lo, hi)));
	return (int) v;
}

static void
parse_architecture(Datum jsonb, Arch *a)
{
	Oid			argtypes[1] = {JSONBOID};
	Datum		values[1];
	uint64		i;
	int			ret;

	values[0] = jsonb;
	SPI_connect();
	ret = SPI_execute_with_args("SELECT pg_catalog.jsonb_typeof($1)", 1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT ||
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "object") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("architecture must be a JSON object")));
	ret = SPI_execute_with_args("SELECT key, value FROM pg_catalog.jsonb_each_text($1) ORDER BY key",
								1, argtypes, values, NULL, true, 0);
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *k = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *v = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		if (v == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("architecture key \"%s\" must not be null", k)));
		if (strcmp(k, "hidden_size") == 0)
			a->hidden_size = arch_int(k, v, 1, 16384), a->shape_given = true;
		else if (strcmp(k, "num_hidden_layers") == 0)
			a->num_hidden_layers = arch_int(k, v, 1, 256), a->shape_given = true;
		else if (strcmp(k, "num_attention_heads") == 0)
			a->num_attention_heads = arch_int(k, v, 1, 256), a->shape_given = true;
		else if (strcmp(k, "intermediate_size") == 0)
			a->intermediate_size = arch_int(k, v, 1, 65536), a->shape_given = true;
		else if (strcmp(k, "vocab_size") == 0)
			a->vocab_size = arch_int(k, v, 100, 1000000), a->vocab_given = true;
		else if (strcmp(k, "max_position_embeddings") == 0)
			a->max_position_embeddings = arch_int(k, v, 2, 8192);
		else if (strcmp(k, "do_lower_case") == 0)
		{
			if (strcmp(v, "true") == 0)
				a->do_lower_case = true;
			else if (strcmp(v, "false") == 0)
				a->do_lower_case = false;
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("architecture key \"do_lower_case\" must be true or false")));
		}
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown architecture key \"%s\"", k),
					 errhint("Known keys: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size, max_position_embeddings, do_lower_case.")));
	}
	SPI_finish();
	if (a->hidden_size % a->num_attention_heads != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("hidden_size %d is not a multiple of num_attention_heads %d",
						a->hidden_size, a->num_attention_heads)));
}

/*
 * From scratch, the model's shape and vocabulary follow the number of rows
 * (defaults.h) unless the architecture argument names them.
 */
static void
scale_architecture(Arch *a, int64 rows)
{
	if (!a->shape_given && rows < BFT_SCRATCH_SMALL_ROWS)
	{
		a->hidden_size = BFT_SCRATCH_SMALL_HIDDEN_SIZE;
		a->num_hidden_layers = BFT_SCRATCH_SMALL_LAYERS;
		a->num_attention_heads = BFT_SCRATCH_SMALL_HEADS;
		a->intermediate_size = BFT_SCRATCH_SMALL_INTERMEDIATE;
	}
	if (!a->vocab_given)
		a->vocab_size = (int) Max(BFT_SCRATCH_MIN_VOCAB_SIZE,
								  Min(BFT_SCRATCH_VOCAB_SIZE, rows * BFT_SCRATCH_VOCAB_PER_ROW));
}

/*
 * Epochs that give about target optimizer steps over n rows in batches of
 * batch, within [lo, hi].
 */
static int
epochs_for_steps(int64 n, int batch, int target, int lo, int hi)
{
	int64		per_epoch = (n + batch - 1) / batch;
	int64		e = (target + per_epoch - 1) / Max(per_epoch, 1);

	return (int) Max(lo, Min(hi, e));
}

static void
bad_option(const char *msg)
{
	ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("%s", msg)));
}

/*
 * The deployed version of a name (0 when none), read with a fresh snapshot
 * (not read-only SPI) so that a deployment committed while this training ran
 * is seen.
 */
static int32
deployed_version(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int32		v = 0;
	bool		isnull;

	values[0] = CStringGetTextDatum(name);
	SPI_connect();
	if (SPI_execute_with_args("SELECT version FROM bft.models WHERE name OPERATOR(pg_catalog.=) $1"
							  " AND deployed_at IS NOT NULL ORDER BY deployed_at DESC, version DESC LIMIT 1",
							  1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bft.models");
	if (SPI_processed == 1)
		v = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return v;
}

/*
 * deploy => 'always', 'never', 'if_better' (by validation accuracy) or
 * 'if_better:accuracy' | 'if_better:macro_f1' | 'if_better:loss'.  Returns
 * BFT_DEPLOY_*; *metric receives BFT_METRIC_* (accuracy unless named).
 */
int
bft_parse_deploy(const char *deploy, int *metric)
{
	*metric = BFT_METRIC_ACCURACY;
	if (strcmp(deploy, "always") == 0)
		return BFT_DEPLOY_ALWAYS;
	if (strcmp(deploy, "never") == 0)
		return BFT_DEPLOY_NEVER;
	if (strcmp(deploy, "if_better") == 0 || strcmp(deploy, "if_better:accuracy") == 0)
		return BFT_DEPLOY_IF_BETTER;
	if (strcmp(deploy, "if_better:macro_f1") == 0)
	{
		*metric = BFT_METRIC_MACRO_F1;
		return BFT_DEPLOY_IF_BETTER;
	}
	if (strcmp(deploy, "if_better:loss") == 0)
	{
		*metric = BFT_METRIC_LOSS;
		return BFT_DEPLOY_IF_BETTER;
	}
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("deploy must be 'always', 'if_better' or 'never', not \"%s\"", deploy),
			 errhint("'if_better' compares validation accuracy; 'if_better:macro_f1' and 'if_better:loss' compare those.")));
	return BFT_DEPLOY_NEVER;	/* not reached */
}

static const char *const metric_names[] = {
	[BFT_METRIC_ACCURACY] = "accuracy",
	[BFT_METRIC_MACRO_F1] = "macro_f1",
	[BFT_METRIC_LOSS] = "loss"
};

/*
 * Scores of the deployed version cmp on the validation rows: its class
 * probabilities probs (n, CK) against the true label names truth[] (n), by
 * label name.  Accuracy; macro-F1 over the label names present in the truth
 * or the predictions (as scikit-learn); mean cross-entropy, a true label the
 * deployed version does not know counting as probability 1e-7.
 */
static void
compare_scores(char **cnames, int CK, const float *probs, char *const *truth, int64 n,
			   double *acc, double *f1, double *loss)
{
	HASHCTL		hctl;
	HTAB	   *ids;
	int			ncls = 0;
	int			cap = CK + 16;
	int		   *tid = palloc(sizeof(int) * n);
	int		   *pid = palloc(sizeof(int) * n);
	int		   *cmp_id = palloc(sizeof(int) * CK);
	int64	   *tp,
			   *fp,
			   *fn;
	int64		correct = 0;
	double		lsum = 0,
				fsum = 0;
	int			nf = 0;
	int64		i;
	int			c;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = BFT_MAX_LABEL_BYTES + 1;
	hctl.entrysize = sizeof(LabelEnt);
	hctl.hcxt = CurrentMemoryContext;
	ids = hash_create("bft compared labels", cap, &hctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
#define CLASS_ID(nm, out) \
	do { \
		bool found_; \
		LabelEnt *le_; \
		char key_[BFT_MAX_LABEL_BYTES + 1]; \
		strlcpy(key_, (nm), sizeof(key_)); \
		le_ = hash_search(ids, key_, HASH_ENTER, &found_); \
		if (!found_) \
			le_->tmp = ncls++; \
		(out) = le_->tmp; \
	} while (0)
	for (c = 0; c < CK; c++)
		CLASS_ID(cnames[c], cmp_id[c]);
	for (i = 0; i < n; i++)
	{
		const float *p = probs + i * CK;
		int			b = 0;
		int			j;
		double		pt = 0;

		for (j = 1; j < CK; j++)
			if (p[j] > p[b])
				b = j;
		CLASS_ID(truth[i], tid[i]);
		pid[i] = cmp_id[b];
		for (j = 0; j < CK; j++)
			if (cmp_id[j] == tid[i])
				pt += p[j];
		lsum += -log(Max(pt, 1e-7));
		if (pid[i] == tid[i])
			correct++;
	}
#undef CLASS_ID
	tp = palloc0(sizeof(int64) * ncls);
	fp = palloc0(sizeof(int64) * ncls);
	fn = palloc0(sizeof(int64) * ncls);
	for (i = 0; i < n; i++)
	{
		if (pid[i] == tid[i])
			tp[tid[i]]++;
		else
		{
			fp[pid[i]]++;
			fn[tid[i]]++;
		}
	}
	for (c = 0; c < ncls; c++)
		if (tp[c] + fp[c] + fn[c] > 0)
		{
			fsum += 2.0 * tp[c] / (double) (2 * tp[c] + fp[c] + fn[c]);
			nf++;
		}
	*acc = (double) correct / n;
	*f1 = nf > 0 ? fsum / nf : 0.0;
	*loss = lsum / n;
}

/*
 * compare_scores for label sets: the deployed multi-label version's sigmoid
 * probabilities probs (n, CK) against the true label sets of val (class ids
 * into names), by label name over the union of both label sets, threshold
 * 0.5: subset accuracy, macro-F1 over every label of the union (0 for a label
 * never true nor predicted, as scikit-learn), mean binary cross-entropy (a
 * label the deployed version does not know has probability 0; probabilities
 * are clamped to [1e-7, 1 - 1e-7]).
 */
static void
compare_scores_multi(char **cnames, int CK, const float *probs, const bft_dataset *val,
					 char **names, int K, double *acc, double *f1, double *loss)
{
	HASHCTL		hctl;
	HTAB	   *ids;
	int			U = 0;
	int		   *cmp_id = palloc(sizeof(int) * Max(CK, 1));
	int		   *new_id = palloc(sizeof(int) * Max(K, 1));
	int64	   *tp,
			   *fp,
			   *fn;
	float	   *pu;
	bool	   *yu;
	int64		exact = 0;
	double		lsum = 0,
				fsum = 0;
	int64		i;
	int			c;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = BFT_MAX_LABEL_BYTES + 1;
	hctl.entrysize = sizeof(LabelEnt);
	hctl.hcxt = CurrentMemoryContext;
	ids = hash_create("bft compared label sets", CK + K + 1, &hctl,
					  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (c = 0; c < CK + K; c++)
	{
		bool		found;
		LabelEnt   *le;
		char		key[BFT_MAX_LABEL_BYTES + 1];

		strlcpy(key, c < CK ? cnames[c] : names[c - CK], sizeof(key));
		le = hash_search(ids, key, HASH_ENTER, &found);
		if (!found)
			le->tmp = U++;
		if (c < CK)
			cmp_id[c] = le->tmp;
		else
			new_id[c - CK] = le->tmp;
	}
	tp = palloc0(sizeof(int64) * U);
	fp = palloc0(sizeof(int64) * U);
	fn = palloc0(sizeof(int64) * U);
	pu = palloc(sizeof(float) * U);
	yu = palloc(sizeof(bool) * U);
	for (i = 0; i < val->n; i++)
	{
		const float *p = probs + i * CK;
		bool		same = true;
		int64		j;
		double		rl = 0;

		for (c = 0; c < U; c++)
		{
			pu[c] = 0.0f;
			yu[c] = false;
		}
		for (c = 0; c < CK; c++)
			pu[cmp_id[c]] = p[c];
		for (j = val->label_offsets[i]; j < val->label_offsets[i + 1]; j++)
			yu[new_id[val->label_ids[j]]] = true;
		for (c = 0; c < U; c++)
		{
			bool		pred = pu[c] >= 0.5f;
			double		q = Min(Max((double) pu[c], 1e-7), 1 - 1e-7);

			if (pred && yu[c])
				tp[c]++;
			else if (pred)
				fp[c]++;
			else if (yu[c])
				fn[c]++;
			if (pred != yu[c])
				same = false;
			rl += yu[c] ? -log(q) : -log(1 - q);
		}
		lsum += rl / U;
		if (same)
			exact++;
	}
	for (c = 0; c < U; c++)
		if (tp[c] + fp[c] + fn[c] > 0)
			fsum += 2.0 * tp[c] / (double) (2 * tp[c] + fp[c] + fn[c]);
	*acc = (double) exact / val->n;
	*f1 = fsum / U;
	*loss = lsum / val->n;
}

#define ARG_INT(i, dflt) (PG_ARGISNULL(i) ? (dflt) : PG_GETARG_INT32(i))
#define ARG_F8(i, dflt) (PG_ARGISNULL(i) ? (dflt) : PG_GETARG_FLOAT8(i))
#define ARG_BOOL(i, dflt) (PG_ARGISNULL(i) ? (dflt) : PG_GETARG_BOOL(i))
/* NULL, or not passed (bft 0.1.0's SQL definition has fewer arguments) */
#define ARG_ABSENT(i) (PG_NARGS() <= (i) || PG_ARGISNULL(i))

/*
 * bft_train(relation, text_column, label_column, epochs, model, base,
 *           batch_size, learning_rate, max_length, warmup_ratio,
 *           weight_decay, dropout, shuffle, seed, validation_fraction,
 *           deploy, device, architecture, mlm_epochs, group_by_length,
 *           class_weights, load_best_model_at_end, metric_for_best_model,
 *           early_stopping_patience, resume, train_precision)
 */
Datum
bft_train_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *tstore;
	MemoryContext cxt;
	MemoryContext oldcxt;
	MemoryContextCallback *cb;
	TrainState *st;
	BftSource	src;
	Oid			relid;
	char	   *model_name;
	char	   *base = NULL;
	bool		scratch;
	int			epochs;
	int			mlm_epochs;
	int			batch_size;
	double		lr;
	bool		lr_given = !PG_ARGISNULL(7);
	bool		warmup_given = !PG_ARGISNULL(9);
	int			max_length = ARG_INT(8, BFT_DEFAULT_MAX_LENGTH);
	bool		max_length_given = !PG_ARGISNULL(8);
	double		warmup;
	double		weight_decay = ARG_F8(10, 0.0);
	double		dropout = ARG_F8(11, -1.0);
	bool		shuffle = ARG_BOOL(12, true);
	int			seed = ARG_INT(13, 42);
	double		vfrac = ARG_F8(14, 0.0);
	char	   *deploy = PG_ARGISNULL(15) ? "always" : text_to_cstring(PG_GETARG_TEXT_PP(15));
	int			policy;
	int			metric;
	char	   *device = PG_ARGISNULL(16) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(16));
	bool		group_by_length;
	Arch		arch;
	bft_tokenizer_opts topts = bft_tokenizer_default_opts();
	const bft_tokenizer *tok;
	const bft_tokenizer *cmp_tok = NULL;
	int			cmp_max_length = 0;
	int32		cmp_version = 0;
	Rows		rows;
	HASHCTL		hctl;
	int			K = 0;
	int32	   *labels;
	bool		multi;			/* label sets: a multi-label classifier */
	int32	   *lab_ids = NULL; /* their class ids (rows.lab_off gives each row's) */
	char	  **names;
	int64		i;
	int64	   *counts;
	int			nclasses = 0;
	bool	   *is_val = NULL;
	int64		nval = 0;
	bft_dataset train_ds,
				val_ds;
	bft_train_opts opts;
	bft_train_result res,
				mlm_res;
	bft_error	err;
	ProgressCtx pc;
	int			rc;
	double		t0 = bft_now_seconds();
	double		seconds;
	bool		do_deploy;
	bool		comparable = true;	/* if_better: the deployed version's problem type matches */
	double		new_score[3] = {NAN, NAN, NAN},	/* by BFT_METRIC_* */
				old_score[3] = {NAN, NAN, NAN};
	StringInfoData params,
				metrics;
	int32		version;
	Datum		values[9];
	bool		nulls[9] = {false, false, false, false, false, false, false, false, false};
	Interval   *dur;
	int			base_K = 0;
	int			train_device;
	Size		train_mem = 0;	/* model + training state, without the rows */
	int32		deployed_start = 0; /* if_better: deployed version when training started */
	int32		deployed_now = 0;	/* ... and at decision time */
	uint64		opts_salt = 0;
	/* arguments after the 20 of bft 0.1.0's SQL definition (NULL under it) */
	char	   *class_weights_arg = ARG_ABSENT(20) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(20));
	float	   *class_weights;
	StringInfoData cw_params,
				cw_metrics;
	BftBestOpts best;
	bool		cw_auto = false;	/* class weights chosen by the defaults */
	bool		resume = ARG_ABSENT(24) ? false : PG_GETARG_BOOL(24);
	/* train_precision => NULL: bft.cpu_precision (bft.cuda_precision on CUDA) */
	char	   *precision_arg = ARG_ABSENT(25) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(25));
	int			train_precision;
	bool		save_state = bft_save_train_state && bft_train_state_retention > 0;
	char	   *mlm_state = NULL;	/* state files of this role, model and phase */
	char	   *cls_state = NULL;
	bool		resume_cls = false;
	bool		resume_mlm = false;
	bft_train_state_info_t *sinfo = NULL;
	StringInfoData mlm_note;

	/* ---- arguments ---- */
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation, text_column and label_column must not be NULL")));
	if (PG_NARGS() < 20)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the SQL definition of bft_train does not match the bft library"),
				 errhint("Run ALTER EXTENSION bft UPDATE, or reinstall bft.")));
	bft_srf_materialize(fcinfo, &tupdesc, &tstore, train_types, 9);
	PreventCommandIfReadOnly("bft_train()");
	PreventCommandDuringRecovery("bft_train()");
	relid = PG_GETARG_OID(0);

	/* device => NULL: bft.device; 'cuda' without a usable GPU is an ERROR */
	train_device = bft_resolve_device(device);
	train_precision = bft_train_precision(train_device, bft_parse_train_precision(precision_arg));
	policy = bft_parse_deploy(deploy, &metric);

	model_name = PG_ARGISNULL(4) ? get_rel_name(relid) : text_to_cstring(PG_GETARG_TEXT_PP(4));
	if (model_name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	bft_check_model_name(model_name);
	if (!PG_ARGISNULL(5))
		base = text_to_cstring(PG_GETARG_TEXT_PP(5));
	scratch = (base == NULL);

	if (!PG_ARGISNULL(3) && PG_GETARG_INT32(3) <= 0)
		bad_option("epochs must be positive");
	if (!PG_ARGISNULL(18) && PG_GETARG_INT32(18) < 0)
		bad_option("mlm_epochs must not be negative");
	epochs = ARG_INT(3, scratch ? BFT_SCRATCH_EPOCHS : BFT_BASE_EPOCHS);
	mlm_epochs = ARG_INT(18, scratch ? BFT_SCRATCH_MLM_EPOCHS : 0);
	batch_size = ARG_INT(6, scratch ? BFT_SCRATCH_BATCH_SIZE : BFT_BASE_BATCH_SIZE);
	lr = ARG_F8(7, scratch ? BFT_SCRATCH_LEARNING_RATE : BFT_BASE_LEARNING_RATE);
	warmup = ARG_F8(9, scratch ? BFT_SCRATCH_WARMUP_RATIO : BFT_BASE_WARMUP_RATIO);
	group_by_length = ARG_BOOL(19, scratch ? BFT_SCRATCH_GROUP_BY_LENGTH : BFT_BASE_GROUP_BY_LENGTH);
	if (epochs > 100000)
		bad_option("epochs must be at most 100000");
	if (batch_size <= 0 || batch_size > 65536)
		bad_option("batch_size must be between 1 and 65536");
	if (!(lr > 0) || isinf(lr) || lr > 10)
		bad_option("learning_rate must be positive and at most 10");
	if (max_length < 2 || max_length > 8192)
		bad_option("max_length must be between 2 and 8192");
	if (!(warmup >= 0 && warmup <= 1))
		bad_option("warmup_ratio must be between 0 and 1");
	if (!(weight_decay >= 0) || isinf(weight_decay))
		bad_option("weight_decay must not be negative");
	if (!PG_ARGISNULL(11) && !(dropout >= 0 && dropout < 1))
		bad_option("dropout must be at least 0 and below 1");
	if (!(vfrac >= 0 && vfrac < 1))
		bad_option("validation_fraction must be at least 0 and below 1");
	if (policy == BFT_DEPLOY_IF_BETTER && vfrac == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deploy => 'if_better' needs a validation_fraction above 0"),
				 errhint("The new version is compared with the deployed one on the validation rows.")));
	if (!scratch && !PG_ARGISNULL(17))
		bad_option("architecture applies only when training from scratch (no base)");
	bft_best_opts(ARG_ABSENT(21) ? -1 : PG_GETARG_BOOL(21),
				  ARG_ABSENT(22) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(22)),
				  !ARG_ABSENT(23), ARG_ABSENT(23) ? 0 : PG_GETARG_INT32(23), vfrac, &best);

	arch.hidden_size = BFT_SCRATCH_HIDDEN_SIZE;
	arch.num_hidden_layers = BFT_SCRATCH_LAYERS;
	arch.num_attention_heads = BFT_SCRATCH_HEADS;
	arch.intermediate_size = BFT_SCRATCH_INTERMEDIATE;
	arch.vocab_size = BFT_SCRATCH_VOCAB_SIZE;
	arch.max_position_embeddings = Max(BFT_SCRATCH_MAX_POSITIONS, max_length);
	arch.do_lower_case = BFT_SCRATCH_LOWER_CASE;
	arch.shape_given = arch.vocab_given = false;
	if (scratch && !PG_ARGISNULL(17))
		parse_architecture(PG_GETARG_DATUM(17), &arch);
	if (scratch && arch.max_position_embeddings < max_length)
		bad_option("max_length exceeds the architecture's max_position_embeddings");

	bft_prepare_source(relid, PG_GETARG_NAME(1), PG_GETARG_NAME(2), &src);
	multi = src.label_is_array;
	/* every check before any work: store privileges, the name, the base, memory */
	bft_check_store(model_name);
	if (!scratch)
		bft_require_model_read("bft_train(base => ...)");
	if (scratch)
	{
		bft_config ec = bft_config_default();
		bft_parts ep = {1, 1, mlm_epochs > 0};

		ec.vocab_size = arch.vocab_size;
		ec.hidden_size = arch.hidden_size;
		ec.num_hidden_layers = arch.num_hidden_layers;
		ec.num_attention_heads = arch.num_attention_heads;
		ec.intermediate_size = arch.intermediate_size;
		ec.max_position_embeddings = arch.max_position_embeddings;
		ec.num_labels = 2;
		train_mem = bft_mem_model_bytes(&ec, ep, (Size) arch.vocab_size * 8) +
			bft_mem_train_bytes(&ec, ep, 2, batch_size, max_length, mlm_epochs > 0) +
			(best.load_best ? bft_mem_model_bytes(&ec, ep, 0) : 0);
		bft_memory_require(train_mem, "training this architecture",
						   "Lower batch_size, max_length or the architecture's hidden_size, num_hidden_layers, "
						   "intermediate_size or vocab_size; a superuser can raise bft.max_memory.");
	}

	/* ---- state, freed on error by a reset callback ---- */
	cxt = AllocSetContextCreate(CurrentMemoryContext, "bft_train", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(cxt);
	st = palloc0(sizeof(TrainState));
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = train_state_cleanup;
	cb->arg = st;
	MemoryContextRegisterResetCallback(cxt, cb);

	memset(&pc, 0, sizeof(pc));
	pc.model = model_name;
	pc.started = GetCurrentTimestamp();
	pc.last_notice = bft_now_seconds();
	initStringInfo(&pc.epochs);
	bft_progress_begin(model_name, "reading");
	st->progress_on = true;
	bft_apply_threads();

	/* ---- base model ---- */
	if (!scratch)
	{
		int			ml;
		int32		base_version;
		char	   *base_name = bft_parse_model_ref(base, &base_version);

		/* 'name' (deployed), 'name@N' or 'name@latest' */
		st->model = bft_load_model_row(base_name, base_version, NULL, NULL, &ml);
		/* small encoders: their own learning rate and warmup defaults */
		if (st->model->cfg.hidden_size <= BFT_SMALL_BASE_HIDDEN)
		{
			if (!lr_given)
				lr = BFT_SMALL_BASE_LEARNING_RATE;
			if (!warmup_given)
				warmup = BFT_SMALL_BASE_WARMUP_RATIO;
		}
		if (!max_length_given)
			max_length = Min(max_length, st->model->cfg.max_position_embeddings);
		if (max_length > st->model->cfg.max_position_embeddings)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_length %d exceeds the base model's max_position_embeddings %d",
							max_length, st->model->cfg.max_position_embeddings)));
		if (mlm_epochs > 0 && !st->model->parts.mlm)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("mlm_epochs needs a base model with a masked-language-model head")));
		train_mem = bft_mem_model_bytes(&st->model->cfg, st->model->parts, st->model->vocab_len) +
			bft_mem_train_bytes(&st->model->cfg, st->model->parts, Max(st->model->cfg.num_labels, 2),
								batch_size, max_length, mlm_epochs > 0) +
			(best.load_best ? bft_mem_model_bytes(&st->model->cfg, st->model->parts, 0) : 0);
		bft_memory_require(train_mem, "fine-tuning this model",
						   "Lower batch_size or max_length, or use a smaller base model; a superuser can raise bft.max_memory.");
		if (st->model->parts.classifier)
			base_K = st->model->cfg.num_labels;
		tok = st->model->tok;
	}
	else
	{
		/* Pass 1: learn a WordPiece vocabulary from the column. */
		char	   *v;
		size_t		vlen;

		topts = bft_tokenizer_default_opts();
		topts.do_lower_case = arch.do_lower_case ? 1 : 0;
		topts.model_max_length = max_length;
		st->wp = bft_wp_trainer_new(&topts, arch.vocab_size, 0, &err);
		if (st->wp == NULL)
			bft_report_engine_error(&err, "could not start vocabulary learning");
		/* the word table gets what bft.max_memory leaves (rare words are pruned) */
		bft_wp_trainer_set_memory(st->wp, bft_memory_limit() - Min(bft_cache_make_room(0), bft_memory_limit()));
		PushActiveSnapshot(GetTransactionSnapshot());
		memset(&rows, 0, sizeof(rows));
		scan_rows(&src, st->wp, NULL, max_length, NULL, 0, &rows);
		bft_progress_begin(model_name, "vocabulary");
		{
			size_t		pruned;
			long long	below;
			size_t		kept = bft_wp_trainer_stats(st->wp, &pruned, &below);

			if (pruned > 0)
				ereport(NOTICE,
						(errmsg("vocabulary learned from the %zu most frequent distinct words; %zu rarer ones were dropped to stay within bft.max_memory",
								kept, pruned)));
		}
		/* the shape and vocabulary that fit this many rows, where not given */
		scale_architecture(&arch, rows.fed);
		if (bft_wp_trainer_set_vocab_size(st->wp, arch.vocab_size, &err) != 0)
			bft_report_engine_error(&err, "could not learn the vocabulary");
		v = bft_wp_trainer_finish(st->wp, &vlen, &err);
		if (v == NULL)
			bft_report_engine_error(&err, "could not learn the vocabulary");
		st->vocab = v;
		bft_wp_trainer_free(st->wp);
		st->wp = NULL;
		st->tok = bft_tokenizer_new(st->vocab, vlen, &topts, &err);
		if (st->tok == NULL)
			bft_report_engine_error(&err, "could not build the learned tokenizer");
		tok = st->tok;
		/* the second pass runs under the same snapshot (popped below) */
	}

	/* ---- deployed version to beat ---- */
	if (policy == BFT_DEPLOY_IF_BETTER)
	{
		cmp_version = deployed_version(model_name);
		deployed_start = cmp_version;
		if (cmp_version > 0)
		{
			st->cmp = bft_load_model_row(model_name, cmp_version, NULL, NULL, &cmp_max_length);
			if (!st->cmp->parts.classifier || st->cmp->cfg.num_labels <= 0)
			{
				bft_model_free(st->cmp);
				st->cmp = NULL;
				cmp_version = 0;
			}
			else
				cmp_tok = st->cmp->tok;
		}
	}

	/* ---- pass 2: tokenize and collect labels ---- */
	bft_progress_begin(model_name, "tokenizing");
	if (!scratch)
		PushActiveSnapshot(GetTransactionSnapshot());
	memset(&rows, 0, sizeof(rows));
	rows.cxt = cxt;
	rows.mem_base = train_mem;
	rows.cap = 1024;
	rows.offsets = MemoryContextAllocHuge(cxt, sizeof(int64) * rows.cap);
	rows.raw = MemoryContextAllocHuge(cxt, sizeof(int64) * rows.cap);
	rows.offsets[0] = 0;
	if (multi)
	{
		rows.lab_off = MemoryContextAllocHuge(cxt, sizeof(int64) * rows.cap);
		rows.lab_off[0] = 0;
	}
	if (cmp_tok)
	{
		rows.coffsets = MemoryContextAllocHuge(cxt, sizeof(int64) * rows.cap);
		rows.coffsets[0] = 0;
	}
	if (!src.label_is_int)
	{
		memset(&hctl, 0, sizeof(hctl));
		hctl.keysize = BFT_MAX_LABEL_BYTES + 1;
		hctl.entrysize = sizeof(LabelEnt);
		hctl.hcxt = cxt;
		rows.labels = hash_create("bft labels", 64, &hctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		rows.tmp_cap = 16;
		rows.tmp_names = palloc(sizeof(char *) * rows.tmp_cap);
	}
	scan_rows(&src, NULL, tok, max_length, cmp_tok, cmp_max_length, &rows);
	PopActiveSnapshot();

	if (rows.skipped > 0)
		ereport(NOTICE,
				(errmsg("skipped " INT64_FORMAT " rows with NULL text or label", rows.skipped)));
	if (rows.n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("relation %s has no rows with non-NULL text and label", src.relname)));

	/* ---- labels → class ids ---- */
	labels = palloc(sizeof(int32) * rows.n);
	{
		int64		nraw = multi ? rows.lab_total : rows.n;
		const int64 *raw = multi ? rows.lab_raw : rows.raw;
		int		   *remap;

		if (src.label_is_int)
		{
			int64		maxv = 0;

			for (i = 0; i < nraw; i++)
				maxv = Max(maxv, raw[i]);
			K = (int) maxv + 1;
			if (base_K >= K)
				K = base_K;
			names = palloc(sizeof(char *) * K);
			remap = palloc(sizeof(int) * K);
			for (i = 0; i < K; i++)
			{
				names[i] = psprintf("%d", (int) i);
				remap[i] = (int) i;
			}
		}
		else
		{
			char	  **sorted = palloc(sizeof(char *) * Max(rows.ntmp, 1));

			remap = palloc(sizeof(int) * Max(rows.ntmp, 1));
			K = rows.ntmp;
			memcpy(sorted, rows.tmp_names, sizeof(char *) * K);
			qsort(sorted, K, sizeof(char *), cstr_cmp);
			for (i = 0; i < K; i++)
			{
				/* the temporary id of a name is in its hash entry */
				LabelEnt   *le = hash_search(rows.labels, sorted[i], HASH_FIND, NULL);

				remap[le->tmp] = (int) i;
			}
			names = sorted;
		}
		if (multi)
		{
			lab_ids = palloc(sizeof(int32) * Max(nraw, 1));
			for (i = 0; i < nraw; i++)
				lab_ids[i] = remap[raw[i]];
			for (i = 0; i < rows.n; i++)
				labels[i] = -1;
		}
		else
			for (i = 0; i < rows.n; i++)
				labels[i] = remap[raw[i]];
	}
	counts = palloc0(sizeof(int64) * Max(K, 1));
	if (multi)
	{
		bool		all_same = true;

		for (i = 0; i < rows.lab_total; i++)
			counts[lab_ids[i]]++;
		if (rows.lab_total == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("none of the " INT64_FORMAT " rows has a label", rows.n),
					 errdetail("The label column holds only empty arrays (or arrays of NULLs).")));
		/* every row with the same label set teaches nothing */
		for (i = 1; i < rows.n && all_same; i++)
		{
			int64		a0 = rows.lab_off[0],
						a1 = rows.lab_off[1],
						b0 = rows.lab_off[i],
						b1 = rows.lab_off[i + 1];
			int64		x;

			if (a1 - a0 != b1 - b0)
				all_same = false;
			for (x = b0; x < b1 && all_same; x++)
			{
				bool		in = false;
				int64		y;

				for (y = a0; y < a1 && !in; y++)
					in = lab_ids[x] == lab_ids[y];
				all_same = in;
			}
		}
		if (all_same)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("all " INT64_FORMAT " rows have the same labels", rows.n),
					 errdetail("A multi-label classifier needs rows whose label sets differ.")));
	}
	else
	{
		for (i = 0; i < rows.n; i++)
			counts[labels[i]]++;
		for (i = 0; i < K; i++)
			if (counts[i] > 0)
				nclasses++;
		if (nclasses < 2)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("all " INT64_FORMAT " rows have the same label", rows.n),
					 errdetail("A classifier needs at least two classes.")));
	}

	/*
	 * ---- validation split from the seed: stratified by class (single
	 * label), a random sample of the rows (label sets) ----
	 */
	if (vfrac > 0 && multi)
	{
		uint64		prng = (uint64) (uint32) seed;
		int64	   *idx = palloc(sizeof(int64) * rows.n);
		int64		j;

		is_val = palloc0(sizeof(bool) * rows.n);
		for (i = 0; i < rows.n; i++)
			idx[i] = i;
		for (j = rows.n - 1; j > 0; j--)
		{
			int64		r = (int64) (split_next(&prng) % (uint64) (j + 1));
			int64		tmp = idx[j];

			idx[j] = idx[r];
			idx[r] = tmp;
		}
		nval = (int64) floor(vfrac * rows.n + 0.5);
		if (nval >= rows.n)
			nval = rows.n - 1;
		for (j = 0; j < nval; j++)
			is_val[idx[j]] = true;
		pfree(idx);
		if (nval == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("validation_fraction %g leaves no validation rows out of " INT64_FORMAT,
							vfrac, rows.n)));
	}
	else if (vfrac > 0)
	{
		uint64		prng = (uint64) (uint32) seed;
		int64	   *idx = palloc(sizeof(int64) * rows.n);
		int			c;

		is_val = palloc0(sizeof(bool) * rows.n);
		for (c = 0; c < K; c++)
		{
			int64		nc = 0;
			int64		take;
			int64		j;

			for (i = 0; i < rows.n; i++)
				if (labels[i] == c)
					idx[nc++] = i;
			if (nc == 0)
				continue;
			for (j = nc - 1; j > 0; j--)
			{
				int64		r = (int64) (split_next(&prng) % (uint64) (j + 1));
				int64		tmp = idx[j];

				idx[j] = idx[r];
				idx[r] = tmp;
			}
			take = (int64) floor(vfrac * nc + 0.5);
			if (take >= nc)
				take = nc - 1;
			for (j = 0; j < take; j++)
				is_val[idx[j]] = true;
			nval += take;
		}
		pfree(idx);
		if (nval == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("validation_fraction %g leaves no validation rows out of " INT64_FORMAT,
							vfrac, rows.n)));
	}
	subset(rows.tokens, rows.offsets, multi ? NULL : labels, rows.lab_off, lab_ids, rows.n, is_val,
		   false, &train_ds);
	if (nval > 0)
		subset(rows.tokens, rows.offsets, multi ? NULL : labels, rows.lab_off, lab_ids, rows.n,
			   is_val, true, &val_ds);
	if (rows.tokens)
		pfree(rows.tokens);
	rows.tokens = NULL;

	/* ---- from scratch: epochs by a step budget, weights when imbalanced ---- */
	if (scratch && PG_ARGISNULL(3))
		epochs = epochs_for_steps(train_ds.n, batch_size, BFT_SCRATCH_TRAIN_STEPS,
								  BFT_SCRATCH_EPOCHS, BFT_SCRATCH_MAX_EPOCHS);
	if (scratch && PG_ARGISNULL(18) && mlm_epochs > 0)
		mlm_epochs = epochs_for_steps(train_ds.n, batch_size, BFT_SCRATCH_MLM_STEPS,
									  BFT_SCRATCH_MLM_EPOCHS, BFT_SCRATCH_MAX_MLM_EPOCHS);
	if (scratch && class_weights_arg == NULL && BFT_SCRATCH_AUTO_WEIGHT_RATIO > 0)
	{
		int64	   *tc = palloc0(sizeof(int64) * K);
		int64		lo = -1,
					hi = 0;

		for (i = 0; i < train_ds.n; i++)
			tc[train_ds.labels[i]]++;
		for (i = 0; i < K; i++)
			if (tc[i] > 0)
			{
				lo = lo < 0 ? tc[i] : Min(lo, tc[i]);
				hi = Max(hi, tc[i]);
			}
		if (lo > 0 && (double) hi >= BFT_SCRATCH_AUTO_WEIGHT_RATIO * (double) lo)
		{
			class_weights_arg = "balanced";
			cw_auto = true;
		}
		pfree(tc);
	}

	/* ---- class weights (weighted cross-entropy) from the training rows ---- */
	initStringInfo(&cw_params);
	initStringInfo(&cw_metrics);
	class_weights = bft_class_weights(class_weights_arg, K, names, train_ds.labels, train_ds.n,
									  &cw_params, &cw_metrics);

	/* ---- the model ---- */
	if (scratch)
	{
		bft_config cfg = bft_config_default();
		bft_parts parts;
		Size		need;

		cfg.vocab_size = bft_tokenizer_vocab_size(st->tok);
		cfg.hidden_size = arch.hidden_size;
		cfg.num_hidden_layers = arch.num_hidden_layers;
		cfg.num_attention_heads = arch.num_attention_heads;
		cfg.intermediate_size = arch.intermediate_size;
		cfg.max_position_embeddings = arch.max_position_embeddings;
		cfg.pad_token_id = Max(bft_tokenizer_special(st->tok).pad, 0);
		cfg.tok = topts;
		cfg.num_labels = K;
		parts.pooler = 1;
		parts.classifier = 1;
		parts.mlm = mlm_epochs > 0 ? 1 : 0;
		/* the learned vocabulary and the labels are known now */
		need = bft_mem_model_bytes(&cfg, parts, strlen(st->vocab)) +
			bft_mem_train_bytes(&cfg, parts, K, batch_size, max_length, mlm_epochs > 0) +
			(best.load_best ? bft_mem_model_bytes(&cfg, parts, 0) : 0);
		bft_memory_require(need + rows_bytes(&rows), "training this architecture on these rows",
						   "Lower batch_size, max_length or the architecture's sizes, or train on fewer rows; "
						   "a superuser can raise bft.max_memory.");
		bft_engine_budget();
		bft_progress_begin(model_name, "initialising");
		st->model = bft_model_new(&cfg, st->vocab, strlen(st->vocab), parts, (uint64) seed, &err);
		if (st->model == NULL)
			bft_report_engine_error(&err, "could not create the model");
	}
	bft_engine_budget();
	if (bft_model_set_labels(st->model, K, (const char *const *) names, (uint64) seed, &err) != 0)
		bft_report_engine_error(&err, "could not set the model's labels");
	/* a sigmoid per label and binary cross-entropy for label sets */
	st->model->cfg.problem_type = multi ? BFT_PROBLEM_MULTI_LABEL : BFT_PROBLEM_SINGLE_LABEL;

	/* ---- per-epoch states: what resume => true continues from ---- */
	initStringInfo(&mlm_note);
	if (save_state || resume)
	{
		uint64		salt;
		int			k;
		char	  **lnames = bft_model_label_names(st->model);

		bft_train_state_expire();
		mlm_state = bft_train_state_path(model_name, "mlm", save_state);
		cls_state = bft_train_state_path(model_name, "train", save_state);
		/* what the engine cannot see: the initial weights, vocabulary and label names */
		salt = bft_train_hash(0, st->model->params_mem, st->model->num_params * sizeof(float));
		salt = bft_train_hash(salt, st->model->vocab, st->model->vocab_len);
		for (k = 0; k < K; k++)
			salt = bft_train_hash(salt, lnames[k], strlen(lnames[k]) + 1);
		salt = bft_train_hash(salt, &max_length, sizeof(max_length));
		opts_salt = salt;
		if (resume)
		{
			bft_error serr;

			sinfo = palloc0(sizeof(bft_train_state_info_t));
			if (bft_train_state_exists(cls_state) &&
				bft_train_state_info(cls_state, sinfo, &serr) == BFT_OK && sinfo->task == 0)
				resume_cls = true;
			else if (mlm_epochs > 0 && bft_train_state_exists(mlm_state) &&
					 bft_train_state_info(mlm_state, sinfo, &serr) == BFT_OK && sinfo->task == 1)
				resume_mlm = true;
			else
				ereport(NOTICE,
						(errmsg("no saved training state of \"%s\" for role \"%s\": training from the start",
								model_name, GetUserNameFromId(GetUserId(), false))));
			if (resume_cls || resume_mlm)
				ereport(NOTICE,
						(errmsg("resuming %s of \"%s\" after epoch %d of %d",
								resume_cls ? "training" : "MLM pre-training", model_name,
								sinfo->epochs_done, sinfo->epochs)));
		}
	}

	opts = bft_train_default_opts();
	opts.batch_size = batch_size;
	/* doubles, as Trainer's: ceil(steps * warmup_ratio) must match */
	opts.learning_rate = lr;
	opts.warmup_ratio = warmup;
	opts.weight_decay = weight_decay;
	opts.dropout = PG_ARGISNULL(11) ? -1.0f : (float) dropout;
	opts.shuffle = shuffle ? 1 : 0;
	opts.group_by_length = group_by_length ? 1 : 0;
	opts.seed = (uint64) seed;
	/* cancel checks between encoder layers, not only after each step */
	opts.poll = bft_poll_interrupts;
	opts.poll_ctx = &pc.edata;
	opts.class_weights = class_weights;
	opts.load_best_model_at_end = best.load_best ? 1 : 0;
	opts.metric_for_best = best.metric;
	opts.early_stopping_patience = best.patience;
	opts.device = train_device;
	opts.precision = train_precision;
	opts.state_salt = opts_salt;

	/* ---- MLM pre-training on the column's own text ---- */
	memset(&mlm_res, 0, sizeof(mlm_res));
	if (mlm_epochs > 0 && resume_cls)
	{
		/* fine-tuning had started: the MLM phase's summary is in its state */
		if (sscanf(sinfo->note, "mlm %d %f %lf", &mlm_res.epochs, &mlm_res.train_loss,
				   &mlm_res.seconds) != 3)
			mlm_res.epochs = mlm_epochs;
		mlm_res.resumed_epochs = mlm_res.epochs;
	}
	else if (mlm_epochs > 0)
	{
		bft_train_opts mopts = opts;
		bft_dataset unl = train_ds;

		unl.labels = NULL;
		mopts.epochs = mlm_epochs;
		mopts.valid = NULL;
		mopts.class_weights = NULL;
		pc.phase = "mlm";
		bft_progress_begin(model_name, "mlm");
		if (save_state)
			mopts.state_path = mlm_state;
		if (resume_mlm)
			mopts.resume_path = mlm_state;
		rc = bft_pretrain_mlm(st->model, &unl, &mopts, progress_cb, &pc, &mlm_res, &err);
		check_state_result(rc, &err, mopts.resume_path);
		check_engine_result(rc, &pc, &err, "MLM pre-training failed");
		appendStringInfo(&mlm_note, "mlm %d %.9g %.17g", mlm_res.epochs, mlm_res.train_loss,
						 mlm_res.seconds);
	}
	/* per-epoch metrics of fine-tuning only */
	resetStringInfo(&pc.epochs);
	pc.nepochs = 0;

	/* ---- fine-tuning ---- */
	opts.epochs = epochs;
	opts.valid = nval > 0 ? &val_ds : NULL;
	pc.phase = "training";
	bft_progress_begin(model_name, "training");
	if (save_state)
	{
		opts.state_path = cls_state;
		opts.state_note = mlm_note.data;
		opts.state_note_len = mlm_note.len;
	}
	if (resume_cls)
		opts.resume_path = cls_state;
	rc = bft_train(st->model, &train_ds, &opts, progress_cb, &pc, &res, &err);
	check_state_result(rc, &err, opts.resume_path);
	check_engine_result(rc, &pc, &err, "training failed");
	if (res.early_stopped)
		ereport(NOTICE,
				(errmsg("early stopping after epoch %d: validation %s did not improve for %d epochs; %s epoch %d",
						res.epochs, bft_metric_name(best.metric), best.patience,
						best.load_best ? "keeping" : "the best was", res.best_epoch)));
	else if (best.load_best && res.kept_epoch != res.epochs)
		ereport(NOTICE,
				(errmsg("keeping epoch %d, the best by validation %s",
						res.kept_epoch, bft_metric_name(best.metric))));
	new_score[BFT_METRIC_ACCURACY] = res.eval_accuracy;
	new_score[BFT_METRIC_MACRO_F1] = res.eval_macro_f1;
	new_score[BFT_METRIC_LOSS] = res.eval_loss;

	/* ---- deployment decision ---- */
	do_deploy = policy == BFT_DEPLOY_ALWAYS;
	if (policy == BFT_DEPLOY_IF_BETTER)
	{
		if (st->cmp == NULL)
			do_deploy = true;
		else
		{
			/* the deployed version on the same validation rows, by label name */
			bft_dataset cds;
			float	   *probs;
			int			CK = st->cmp->cfg.num_labels;
			char	  **cnames = bft_model_label_names(st->cmp);
			char	  **truth;

			subset(rows.ctokens, rows.coffsets, NULL, NULL, NULL, rows.n, is_val, true, &cds);
			probs = MemoryContextAllocHuge(cxt, sizeof(float) * (Size) CK * cds.n);
			bft_predict_encoded(st->cmp, cds.n, cds.tokens, cds.offsets, probs);
			if (multi != (st->cmp->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL))
			{
				/* label sets against single labels (or the reverse): not comparable */
				comparable = false;
				do_deploy = false;
				ereport(NOTICE,
						(errmsg("the deployed version %d of \"%s\" is a %s classifier and the new one a %s classifier: the new version is not deployed",
								cmp_version, model_name, multi ? "single-label" : "multi-label",
								multi ? "multi-label" : "single-label"),
						 errhint("Compare the versions with bft_evaluate() and deploy with bft_deploy().")));
			}
			else
			{
				if (multi)
					compare_scores_multi(cnames, CK, probs, &val_ds, names, K,
										 &old_score[BFT_METRIC_ACCURACY],
										 &old_score[BFT_METRIC_MACRO_F1], &old_score[BFT_METRIC_LOSS]);
				else
				{
					truth = palloc(sizeof(char *) * cds.n);
					for (i = 0; i < cds.n; i++)
						truth[i] = names[val_ds.labels[i]];
					compare_scores(cnames, CK, probs, truth, cds.n, &old_score[BFT_METRIC_ACCURACY],
								   &old_score[BFT_METRIC_MACRO_F1], &old_score[BFT_METRIC_LOSS]);
				}
				if (metric == BFT_METRIC_LOSS)
					do_deploy = new_score[metric] < old_score[metric];
				else
					do_deploy = new_score[metric] > old_score[metric];
			}
		}

		/*
		 * (ops) The deployed version may have changed while this one trained
		 * (a rollback with bft_deploy, another training): then the scores
		 * compared no longer concern the deployed version, so do not deploy.
		 * The name lock, held until commit, keeps other trainings from
		 * storing a version in between.
		 */
		bft_lock_model_name(model_name);
		deployed_now = deployed_version(model_name);
		if (deployed_now != deployed_start)
		{
			do_deploy = false;
			ereport(NOTICE,
					(errmsg("the deployed version of \"%s\" changed from %d to %d during training; the new version is not deployed",
							model_name, deployed_start, deployed_now),
					 errhint("Compare the versions with bft_evaluate() and deploy with bft_deploy().")));
		}
	}

	/* ---- store ---- */
	bft_progress_begin(model_name, "saving");
	seconds = bft_now_seconds() - t0;

	initStringInfo(&params);
	appendStringInfoString(&params, "{\"relation\": ");
	escape_json(&params, src.relname);
	appendStringInfoString(&params, ", \"text_column\": ");
	escape_json(&params, NameStr(*PG_GETARG_NAME(1)));
	appendStringInfoString(&params, ", \"label_column\": ");
	escape_json(&params, NameStr(*PG_GETARG_NAME(2)));
	appendStringInfo(&params, ", \"label_type\": \"%s%s\", \"base\": ",
					 src.label_is_int ? "integer" : "text", multi ? "[]" : "");
	if (base)
		escape_json(&params, base);
	else
		appendStringInfoString(&params, "null");
	appendStringInfo(&params, ", \"epochs\": %d, \"mlm_epochs\": %d, \"batch_size\": %d",
					 epochs, mlm_epochs, batch_size);
	bft_json_key_float(&params, "learning_rate", lr, true);
	appendStringInfo(&params, ", \"max_length\": %d", max_length);
	bft_json_key_float(&params, "warmup_ratio", warmup, true);
	bft_json_key_float(&params, "weight_decay", weight_decay, true);
	if (PG_ARGISNULL(11))
		appendStringInfoString(&params, ", \"dropout\": null");
	else
		bft_json_key_float(&params, "dropout", dropout, true);
	appendStringInfo(&params, ", \"shuffle\": %s, \"group_by_length\": %s, \"seed\": %d",
					 shuffle ? "true" : "false", group_by_length ? "true" : "false", seed);
	bft_json_key_float(&params, "validation_fraction", vfrac, true);
	appendStringInfoString(&params, cw_params.data[0] ? cw_params.data : ", \"class_weights\": null");
	if (cw_auto)
		appendStringInfoString(&params, ", \"class_weights_automatic\": true");
	appendStringInfo(&params, ", \"resume\": %s", resume ? "true" : "false");
	appendStringInfo(&params, ", \"load_best_model_at_end\": %s, \"metric_for_best_model\": \"%s\", "
					 "\"early_stopping_patience\": %d",
					 best.load_best ? "true" : "false", bft_metric_name(best.metric), best.patience);
	appendStringInfo(&params, ", \"deploy\": \"%s\", \"device\": \"%s\", \"threads\": %d",
					 deploy, train_device == BFT_DEVICE_CUDA ? "cuda" : "cpu", bft_threads);
	appendStringInfo(&params, ", \"precision\": \"%s\"",
					 bft_precision_name(train_precision));
	if (scratch)
		appendStringInfo(&params, ", \"architecture\": {\"hidden_size\": %d, \"num_hidden_layers\": %d,"
						 " \"num_attention_heads\": %d, \"intermediate_size\": %d, \"vocab_size\": %d,"
						 " \"max_position_embeddings\": %d, \"do_lower_case\": %s}",
						 arch.hidden_size, arch.num_hidden_layers, arch.num_attention_heads,
						 arch.intermediate_size, arch.vocab_size, arch.max_position_embeddings,
						 arch.do_lower_case ? "true" : "false");
	appendStringInfoChar(&params, '}');

	initStringInfo(&metrics);
	appendStringInfo(&metrics, "{\"rows_used\": " INT64_FORMAT ", \"rows_skipped\": " INT64_FORMAT
					 ", \"train_rows\": " INT64_FORMAT ", \"validation_rows\": " INT64_FORMAT
					 ", \"classes\": %d, \"steps\": " INT64_FORMAT ", \"warmup_steps\": " INT64_FORMAT,
					 rows.n, rows.skipped, train_ds.n, nval, K, res.steps, res.warmup_steps);
	bft_json_key_float(&metrics, "train_loss", res.train_loss, true);
	bft_json_key_float(&metrics, "validation_loss", nval > 0 ? res.eval_loss : NAN, true);
	bft_json_key_float(&metrics, "validation_accuracy", nval > 0 ? res.eval_accuracy : NAN, true);
	bft_json_key_float(&metrics, "validation_macro_f1", nval > 0 ? res.eval_macro_f1 : NAN, true);
	bft_json_key_float(&metrics, "samples_per_second", res.samples_per_s, true);
	bft_json_key_float(&metrics, "train_seconds", res.seconds, true);
	bft_json_key_float(&metrics, "duration_s", seconds, true);
	appendStringInfo(&metrics, ", \"epochs\": [%s]", pc.epochs.data);
	appendStringInfoString(&metrics, cw_metrics.data);
	appendStringInfo(&metrics, ", \"epochs_run\": %d, \"kept_epoch\": %d, \"stop_reason\": \"%s\"",
					 res.epochs, res.kept_epoch, res.early_stopped ? "early_stopping" : "max_epochs");
	appendStringInfo(&metrics, ", \"resumed_after_epoch\": %d", res.resumed_epochs);
	if (nval > 0)
	{
		appendStringInfo(&metrics, ", \"best_epoch\": %d", res.best_epoch);
		bft_json_key_float(&metrics, "best_metric", res.best_metric, true);
	}
	if (mlm_epochs > 0)
	{
		appendStringInfo(&metrics, ", \"mlm\": {\"epochs\": %d, \"resumed_after_epoch\": %d",
						 mlm_res.epochs, mlm_res.resumed_epochs);
		bft_json_key_float(&metrics, "loss", mlm_res.train_loss, true);
		bft_json_key_float(&metrics, "seconds", mlm_res.seconds, true);
		appendStringInfoChar(&metrics, '}');
	}
	appendStringInfo(&metrics, ", \"deploy\": {\"policy\": \"%s\", \"deployed\": %s",
					 policy == BFT_DEPLOY_IF_BETTER ? "if_better" : deploy, do_deploy ? "true" : "false");
	if (policy == BFT_DEPLOY_IF_BETTER)
	{
		int			k;

		appendStringInfo(&metrics, ", \"metric\": \"%s\"", metric_names[metric]);
		for (k = 0; k < 3; k++)
			bft_json_key_float(&metrics, psprintf("new_%s", metric_names[k]), new_score[k], true);
		if (cmp_version > 0 && !comparable)
			appendStringInfo(&metrics, ", \"compared_version\": %d, \"comparable\": false", cmp_version);
		else if (cmp_version > 0)
		{
			appendStringInfo(&metrics, ", \"compared_version\": %d", cmp_version);
			for (k = 0; k < 3; k++)
				bft_json_key_float(&metrics, psprintf("compared_%s", metric_names[k]), old_score[k], true);
		}
		else
			appendStringInfoString(&metrics, ", \"compared_version\": null");
		if (deployed_now != deployed_start)
			appendStringInfo(&metrics, ", \"deployed_version_changed_to\": %d", deployed_now);
	}
	appendStringInfoString(&metrics, "}}");

	version = bft_store_model(model_name, base, st->model, params.data, metrics.data, do_deploy);
	/* stored: the saved states are no longer needed once this commits */
	if (save_state || resume)
		bft_train_state_discard_at_commit(model_name);
	if (policy == BFT_DEPLOY_IF_BETTER)
		ereport(NOTICE,
				(errmsg(do_deploy ? "version %d deployed (validation %s %.4f, deployed version %s)"
						: "version %d not deployed (validation %s %.4f, deployed version %s)",
						version, metric_names[metric], new_score[metric],
						cmp_version > 0 ? psprintf("%d: %.4f", cmp_version, old_score[metric]) : "none")));

	/* ---- result row ---- */
	dur = palloc0(sizeof(Interval));
	dur->time = (int64) (seconds * USECS_PER_SEC);
	MemoryContextSwitchTo(oldcxt);
	values[0] = CStringGetTextDatum(model_name);
	values[1] = Int32GetDatum(version);
	values[2] = Int64GetDatum(rows.n);
	values[3] = Int32GetDatum(res.epochs);	/* run (early stopping: fewer) */
	values[4] = Float4GetDatum(res.train_loss);
	if (nval > 0)
	{
		values[5] = Float4GetDatum(res.eval_accuracy);
		values[6] = Float4GetDatum(res.eval_macro_f1);
	}
	else
		nulls[5] = nulls[6] = true;
	values[7] = Float4GetDatum((float4) res.samples_per_s);
	values[8] = IntervalPGetDatum(dur);
	tuplestore_putvalues(tstore, tupdesc, values, nulls);

	/* frees the engine objects (callback) and every buffer */
	MemoryContextDelete(cxt);
	PG_RETURN_NULL();
}
