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
#include "ngram.h"

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
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"

#include "defaults.h"
#include "metrics.h"
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
	bft_ngram_corpus *ngram;	/* the labeled rows' n-grams (n-gram head) */
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
	if (st->ngram)
		bft_ngram_corpus_free(st->ngram);
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

/* One epoch's metrics as an element of the epochs JSON array (restored: completed before a resume). */
static void
append_epoch_json(ProgressCtx *pc, const bft_progress *p)
{
	if (pc->nepochs++ > 0)
		appendStringInfoString(&pc->epochs, ", ");
	appendStringInfo(&pc->epochs, "{\"epoch\": %d", p->epoch);
	bft_json_key_float(&pc->epochs, "loss", p->loss, true);
	bft_json_key_float(&pc->epochs, "eval_loss", p->eval_loss, true);
	bft_json_key_float(&pc->epochs, "eval_accuracy", p->eval_accuracy, true);
	bft_json_key_float(&pc->epochs, "eval_macro_f1", p->eval_macro_f1, true);
	bft_json_key_float(&pc->epochs, "samples_per_second", p->samples_per_s, true);
	bft_json_key_float(&pc->epochs, "elapsed_s", p->elapsed_s, true);
	appendStringInfoString(&pc->epochs, p->restored ? ", \"restored\": true}" : "}");
}

/* An epoch's end (phase 1): a NOTICE and its metrics; a restored epoch's metrics only. */
static void
report_epoch(ProgressCtx *pc, const bft_progress *p, const char *eta, double now)
{
	if (p->restored)
	{
		append_epoch_json(pc, p);
		return;
	}
	if (!isnan(p->eval_accuracy))
		ereport(NOTICE,
				(errmsg("%s epoch %d/%d: loss %.4f, eval_loss %.4f, eval_accuracy %.4f, eval_macro_f1 %.4f (%.1f samples/s, ETA %s)",
						pc->phase, p->epoch, p->epochs, p->loss, p->eval_loss,
						p->eval_accuracy, p->eval_macro_f1, p->samples_per_s, eta)));
	else
		ereport(NOTICE,
				(errmsg("%s epoch %d/%d: loss %.4f (%.1f samples/s, ETA %s)",
						pc->phase, p->epoch, p->epochs, p->loss, p->samples_per_s, eta)));
	append_epoch_json(pc, p);
	pc->last_notice = now;
}

/* An optimizer step (phase 0): DEBUG1 every step, a NOTICE every bft.progress_interval seconds. */
static void
report_step(ProgressCtx *pc, const bft_progress *p, const char *eta, double now)
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
	if (bft_progress_interval > 0 && now - pc->last_notice >= bft_progress_interval)
	{
		ereport(NOTICE,
				(errmsg("%s epoch %d/%d, step " INT64_FORMAT "/" INT64_FORMAT ": loss %.4f, %.1f samples/s, ETA %s",
						pc->phase, p->epoch, p->epochs, p->step, p->total_steps,
						p->loss, p->samples_per_s, eta)));
		pc->last_notice = now;
	}
}

/*
 * The engine's progress callback: interrupts, live progress, NOTICEs and
 * per-epoch metrics.  An error is caught and kept (the engine is told to
 * stop and unwinds; check_engine_result re-throws it).
 */
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
		if (p->phase == 1)
			report_epoch(pc, p, eta, now);
		else
			report_step(pc, p, eta, now);
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
	/* text labels: temporary ids in the order the names are first seen */
	BftLabelMap names;
	int64		skipped;
	int64		fed;			/* rows fed to the vocabulary trainer */
	/* rows with a text and a NULL label, for MLM pre-training (use_unlabeled) */
	bool		use_unlabeled;
	int64		un;
	int32	   *utokens;
	Size		utok_cap;
	int64		utotal;
	int64	   *uoffsets;		/* (ucap) */
	Size		ucap;
	Size		mem_base;		/* bytes the model and its training need besides the rows */
	/* the pass: the source, and the vocabulary trainer or the tokenizers */
	const BftSource *src;
	bft_wp_trainer *wp;
	const bft_tokenizer *tok;
	int			max_length;
	const bft_tokenizer *cmp_tok;
	int			cmp_max_length;
	int32	   *ids;			/* (Max(max_length, cmp_max_length)) one text's ids */
	bft_ngram_corpus *ngram;	/* when not NULL: each labeled row's n-grams too */
} Rows;

/* Memory the collected rows take now, and again as train/validation copies. */
static Size
rows_bytes(const Rows *rows)
{
	Size		b = rows->tok_cap * sizeof(int32) + rows->ctok_cap * sizeof(int32) +
		rows->cap * sizeof(int64) * (rows->coffsets ? 3 : 2) +
		(rows->lab_off ? rows->cap * sizeof(int64) + rows->lab_cap * sizeof(int64) : 0) +
		rows->utok_cap * sizeof(int32) + rows->ucap * sizeof(int64);

	return b * 2 + bft_ngram_corpus_bytes(rows->ngram);
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
raw_label(Rows *rows, Datum v)
{
	char	   *name;
	int			id;

	if (rows->src->label_is_int)
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
	name = TextDatumGetCString(v);
	if (strlen(name) > BFT_MAX_LABEL_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_STRING_DATA_RIGHT_TRUNCATION),
				 errmsg("label longer than %d bytes", BFT_MAX_LABEL_BYTES)));
	id = bft_label_map_find(&rows->names, name);
	if (id < 0)
	{
		if (rows->names.n >= BFT_MAX_LABELS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("more than %d distinct labels", BFT_MAX_LABELS),
					 errhint("Is label_column really a class label?")));
		id = bft_label_map_add(&rows->names, name);
	}
	pfree(name);
	return id;
}

/* Pass 1 (from scratch): one text for the vocabulary trainer. */
static void
feed_row(void *arg, text *t, Datum *el, bool *elnull, int nel)
{
	Rows	   *rows = (Rows *) arg;
	int			ulen;
	char	   *u = bft_to_utf8(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &ulen);
	bft_error	err;

	(void) el;
	(void) elnull;
	(void) nel;
	rows->fed++;
	if (bft_wp_trainer_feed(rows->wp, u, ulen, &err) != 0)
		bft_report_engine_error(&err, "could not learn the vocabulary");
	if (u != VARDATA_ANY(t))
		pfree(u);
}

/* Pass 1 (from scratch): an unlabeled row's text for the vocabulary trainer. */
static void
feed_unlabeled(void *arg, text *t)
{
	feed_row(arg, t, NULL, NULL, 0);
}

/* Room for one more row's offsets and labels. */
static void
grow_rows(Rows *rows)
{
	if ((Size) rows->n + 2 <= rows->cap)
		return;
	rows->cap *= 2;
	rows->offsets = repalloc_huge(rows->offsets, sizeof(int64) * rows->cap);
	rows->raw = repalloc_huge(rows->raw, sizeof(int64) * rows->cap);
	if (rows->lab_off)
		rows->lab_off = repalloc_huge(rows->lab_off, sizeof(int64) * rows->cap);
	if (rows->coffsets)
		rows->coffsets = repalloc_huge(rows->coffsets, sizeof(int64) * rows->cap);
}

/* The label set of row rows->n: its distinct non-NULL labels. */
static void
add_label_set(Rows *rows, const Datum *el, const bool *elnull, int nel)
{
	int64		first = rows->lab_total;
	int			e;

	for (e = 0; e < nel; e++)
	{
		int64		id;
		int64		k;
		bool		dup = false;

		if (elnull[e])
			continue;
		id = raw_label(rows, el[e]);
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
}

/* Append the ids of text u to a token buffer: [CLS] … [SEP], max_length at most. */
static void
encode_into(Rows *rows, const bft_tokenizer *tok, int max_length, const char *u, int ulen,
			int32 **arr, Size *cap, int64 *total)
{
	bft_error	err;
	int			n = bft_encode(tok, u, ulen, max_length, rows->ids, &err);

	if (n < 0)
		bft_report_engine_error(&err, "could not tokenize text");
	append_ids(arr, cap, total, rows->ids, n);
}

/* Pass 2: one row's labels and token ids (and those of the deployed version's vocabulary). */
static void
collect_row(void *arg, text *t, Datum *el, bool *elnull, int nel)
{
	Rows	   *rows = (Rows *) arg;
	int			ulen;
	char	   *u = bft_to_utf8(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &ulen);

	grow_rows(rows);
	if (rows->src->label_is_array)
		add_label_set(rows, el, elnull, nel);
	else
		rows->raw[rows->n] = raw_label(rows, el[0]);
	encode_into(rows, rows->tok, rows->max_length, u, ulen, &rows->tokens, &rows->tok_cap,
				&rows->total);
	rows->offsets[rows->n + 1] = rows->total;
	if (rows->cmp_tok)
	{
		encode_into(rows, rows->cmp_tok, rows->cmp_max_length, u, ulen, &rows->ctokens,
					&rows->ctok_cap, &rows->ctotal);
		rows->coffsets[rows->n + 1] = rows->ctotal;
	}
	if (rows->ngram)
	{
		bft_error	err;

		if (bft_ngram_corpus_add(rows->ngram, u, ulen, &err) != BFT_OK)
		{
			bft_engine_interrupt_rethrow();
			bft_report_engine_error(&err, "could not compute the n-gram features of a row");
		}
	}
	rows->n++;
	if (u != VARDATA_ANY(t))
		pfree(u);
}

/* Pass 2: an unlabeled row's token ids, for MLM pre-training only. */
static void
collect_unlabeled(void *arg, text *t)
{
	Rows	   *rows = (Rows *) arg;
	int			ulen;
	char	   *u = bft_to_utf8(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &ulen);

	if ((Size) rows->un + 2 > rows->ucap)
	{
		rows->ucap = Max(rows->ucap * 2, (Size) 1024);
		rows->uoffsets = rows->uoffsets ? repalloc_huge(rows->uoffsets, sizeof(int64) * rows->ucap) :
			MemoryContextAllocHuge(rows->cxt, sizeof(int64) * rows->ucap);
		if (rows->un == 0)
			rows->uoffsets[0] = 0;
	}
	encode_into(rows, rows->tok, rows->max_length, u, ulen, &rows->utokens, &rows->utok_cap,
				&rows->utotal);
	rows->uoffsets[rows->un + 1] = rows->utotal;
	rows->un++;
	if (u != VARDATA_ANY(t))
		pfree(u);
}

/* After each batch of pass 2: the rows so far must fit bft.max_memory. */
static void
check_rows_memory(void *arg)
{
	Rows	   *rows = (Rows *) arg;

	bft_memory_require(rows->mem_base + rows_bytes(rows), "training on these rows",
					   "Lower max_length, batch_size or the model's size, or train on fewer rows "
					   "(a view with a WHERE clause); a superuser can raise bft.max_memory.");
}

/*
 * A reader of the rows: with rows->wp, pass 1 feeds the texts to the
 * vocabulary trainer only; otherwise pass 2 tokenizes them (with rows->tok,
 * and rows->cmp_tok when set) and collects the labels, in rows->cxt.  With
 * rows->use_unlabeled, rows with a text and a NULL label are fed to the
 * vocabulary trainer, and tokenized apart for MLM pre-training.
 */
static void
rows_reader(Rows *rows, BftRowReader *rd)
{
	memset(rd, 0, sizeof(*rd));
	rd->src = rows->src;
	rd->arg = rows;
	if (rows->wp)
	{
		rd->cxt = CurrentMemoryContext;
		rd->row = feed_row;
		if (rows->use_unlabeled)
			rd->unlabeled = feed_unlabeled;
		return;
	}
	rd->cxt = rows->cxt;
	rd->want_labels = true;
	rd->row = collect_row;
	if (rows->use_unlabeled)
		rd->unlabeled = collect_unlabeled;
	rd->batch_end = check_rows_memory;
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
	bool		small;			/* the small shape was chosen for few rows */
	bool		ngram_head;		/* an n-gram head beside the encoder (ngram.h) */
	double		ngram_scale;	/* its weight when mixed */
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
		else if (strcmp(k, "ngram_head") == 0)
		{
			if (strcmp(v, "true") == 0 || strcmp(v, "false") == 0)
				a->ngram_head = strcmp(v, "true") == 0;
			else
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("architecture key \"ngram_head\" must be true or false")));
		}
		else if (strcmp(k, "ngram_scale") == 0)
		{
			char	   *end;

			errno = 0;
			a->ngram_scale = strtod(v, &end);
			if (errno != 0 || end == v || *end != '\0' || !(a->ngram_scale > 0 && a->ngram_scale <= 1000))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("architecture key \"ngram_scale\" must be a number above 0 and at most 1000")));
		}
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
					 errhint("Known keys: hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size, max_position_embeddings, do_lower_case, ngram_head, ngram_scale.")));
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
		a->small = true;
	}
	if (!a->vocab_given)
		a->vocab_size = (int) Max(BFT_SCRATCH_MIN_VOCAB_SIZE,
								  Min(BFT_SCRATCH_VOCAB_SIZE, (int64) (rows * BFT_SCRATCH_VOCAB_PER_ROW + 0.5)));
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
	BftLabelMap ids;
	int		   *tid = palloc(sizeof(int) * n);
	int		   *pid = palloc(sizeof(int) * n);
	int		   *cmp_id = palloc(sizeof(int) * CK);
	bft_class_counts cc;
	double		lsum = 0;
	int64		i;
	int			c;

	bft_label_map_init(&ids, "bft compared labels", CK + 16, CurrentMemoryContext);
	for (c = 0; c < CK; c++)
		cmp_id[c] = bft_label_map_get(&ids, cnames[c]);
	for (i = 0; i < n; i++)
	{
		const float *p = probs + i * CK;
		int			b = 0;
		int			j;
		double		pt = 0;

		for (j = 1; j < CK; j++)
			if (p[j] > p[b])
				b = j;
		tid[i] = bft_label_map_get(&ids, truth[i]);
		pid[i] = cmp_id[b];
		for (j = 0; j < CK; j++)
			if (cmp_id[j] == tid[i])
				pt += p[j];
		lsum += -log(Max(pt, 1e-7));
	}
	bft_counts_init(&cc, ids.n, palloc0(sizeof(int64) * 3 * ids.n));
	for (i = 0; i < n; i++)
		bft_counts_add(&cc, tid[i], pid[i]);
	*acc = bft_counts_accuracy(&cc);
	*f1 = bft_counts_macro_f1(&cc, 0);
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
	BftLabelMap ids;
	int			U;
	int		   *cmp_id = palloc(sizeof(int) * Max(CK, 1));
	int		   *new_id = palloc(sizeof(int) * Max(K, 1));
	bft_class_counts cc;
	float	   *pu;
	unsigned char *yu;
	unsigned char *pred;
	double		lsum = 0;
	int64		i;
	int			c;

	bft_label_map_init(&ids, "bft compared label sets", CK + K + 1, CurrentMemoryContext);
	for (c = 0; c < CK; c++)
		cmp_id[c] = bft_label_map_get(&ids, cnames[c]);
	for (c = 0; c < K; c++)
		new_id[c] = bft_label_map_get(&ids, names[c]);
	U = ids.n;
	bft_counts_init(&cc, U, palloc0(sizeof(int64) * 3 * U));
	pu = palloc(sizeof(float) * U);
	yu = palloc(U);
	pred = palloc(U);
	for (i = 0; i < val->n; i++)
	{
		const float *p = probs + i * CK;
		int64		j;
		double		rl = 0;

		for (c = 0; c < U; c++)
		{
			pu[c] = 0.0f;
			yu[c] = 0;
		}
		for (c = 0; c < CK; c++)
			pu[cmp_id[c]] = p[c];
		for (j = val->label_offsets[i]; j < val->label_offsets[i + 1]; j++)
			yu[new_id[val->label_ids[j]]] = 1;
		for (c = 0; c < U; c++)
		{
			double		q = Min(Max((double) pu[c], 1e-7), 1 - 1e-7);

			pred[c] = pu[c] >= 0.5f;
			rl += yu[c] ? -log(q) : -log(1 - q);
		}
		bft_counts_add_set(&cc, yu, pred);
		lsum += rl / U;
	}
	*acc = bft_counts_accuracy(&cc);
	*f1 = bft_counts_macro_f1(&cc, 1);
	*loss = lsum / val->n;
}

/* ---- bft_train(): steps over one TrainRun ---- */

#define ARG_GIVEN(a) (!PG_ARGISNULL(a))
#define ARG_INT(a, dflt) (PG_ARGISNULL(a) ? (dflt) : PG_GETARG_INT32(a))
#define ARG_F8(a, dflt) (PG_ARGISNULL(a) ? (dflt) : PG_GETARG_FLOAT8(a))
#define ARG_BOOL(a, dflt) (PG_ARGISNULL(a) ? (dflt) : PG_GETARG_BOOL(a))
#define ARG_TEXT(a) (PG_ARGISNULL(a) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(a)))
/* NULL, or not passed (bft 0.1.0's SQL definition has fewer arguments) */
#define ARG_ABSENT(a) (PG_NARGS() <= (a) || PG_ARGISNULL(a))

/* One training: its arguments, what it reads and builds, and its outcome. */
typedef struct TrainRun
{
	/* the result set */
	TupleDesc	tupdesc;
	Tuplestorestate *tstore;
	/* arguments (defaults applied) */
	Oid			relid;
	Name		text_col;
	Name		label_col;
	char	   *model_name;
	char	   *base;			/* NULL: from scratch */
	bool		scratch;
	int			epochs;
	bool		epochs_given;
	int			mlm_epochs;
	bool		mlm_epochs_given;
	int			batch_size;
	double		lr;
	bool		lr_given;
	bool		small_base;		/* a base of hidden size <= BFT_SMALL_BASE_HIDDEN */
	int			max_length;
	bool		max_length_given;
	double		warmup;
	bool		warmup_given;
	double		weight_decay;
	double		dropout;
	bool		dropout_given;
	bool		shuffle;
	int			seed;
	double		vfrac;
	char	   *deploy;
	int			policy;			/* BFT_DEPLOY_* */
	int			metric;			/* if_better's BFT_METRIC_* */
	int			train_device;
	int			train_precision;	/* BFT_PRECISION_*: train_precision => or the setting */
	bool		group_by_length;
	Arch		arch;
	char	   *class_weights_arg;
	bool		cw_auto;		/* class weights chosen by the defaults */
	BftBestOpts best;
	bool		resume;
	bool		save_state;
	BftSource	src;
	bool		multi;			/* label sets: a multi-label classifier */
	/* engine objects and buffers, freed with cxt */
	MemoryContext cxt;
	TrainState *st;
	ProgressCtx pc;
	double		t0;
	Size		train_mem;		/* model + training state, without the rows */
	bft_tokenizer_opts topts;
	const bft_tokenizer *tok;
	int			base_K;
	/* deploy => 'if_better': the deployed version to beat */
	const bft_tokenizer *cmp_tok;
	int			cmp_max_length;
	int32		cmp_version;
	int32		deployed_start; /* deployed version when training started */
	int32		deployed_now;	/* ... and at decision time */
	/* rows, labels, split */
	Rows		rows;
	int			K;
	char	  **names;			/* (K) class names */
	int32	   *labels;			/* (rows.n) class ids; -1 for label sets */
	int32	   *lab_ids;		/* label sets' class ids (rows.lab_off gives each row's) */
	bool	   *is_val;
	int64		nval;
	bft_dataset train_ds;
	bft_dataset val_ds;
	float	   *class_weights;
	StringInfoData cw_params;
	StringInfoData cw_metrics;
	/* training */
	uint64		opts_salt;
	char	   *mlm_state;		/* state files of this role, model and phase */
	char	   *cls_state;
	bool		resume_cls;
	bool		resume_mlm;
	bft_train_state_info_t *sinfo;
	StringInfoData mlm_note;
	bft_train_opts opts;
	bft_train_result res;
	bft_train_result mlm_res;
	/* outcome */
	bool		do_deploy;
	bool		comparable;		/* if_better: the deployed version's problem type matches */
	double		new_score[3];	/* by BFT_METRIC_* */
	double		old_score[3];
	double		seconds;
	int32		version;
	/* the n-gram head (arch.ngram_head) */
	int64		ng_features;
	double		ng_c;
	double		ng_cv_macro_f1;
	int			ng_iterations;
	double		ng_seconds;
	float		enc_eval[3];	/* the encoder's own validation scores, by BFT_METRIC_* */
} TrainRun;

/* Arguments that need no catalog access: NULLs, the SQL definition, the result set. */
static void
train_parse_args(FunctionCallInfo fcinfo, TrainRun *r)
{
	if (PG_ARGISNULL(TA_RELATION) || PG_ARGISNULL(TA_TEXT_COLUMN) || PG_ARGISNULL(TA_LABEL_COLUMN))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation, text_column and label_column must not be NULL")));
	if (PG_NARGS() < TA_COUNT_0_1_0)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the SQL definition of bft_train does not match the bft library"),
				 errhint("Run ALTER EXTENSION bft UPDATE, or reinstall bft.")));
	bft_srf_materialize(fcinfo, &r->tupdesc, &r->tstore, train_types, 9);
	PreventCommandIfReadOnly("bft_train()");
	PreventCommandDuringRecovery("bft_train()");
	r->relid = PG_GETARG_OID(TA_RELATION);
	r->text_col = PG_GETARG_NAME(TA_TEXT_COLUMN);
	r->label_col = PG_GETARG_NAME(TA_LABEL_COLUMN);
	r->lr_given = ARG_GIVEN(TA_LEARNING_RATE);
	r->warmup_given = ARG_GIVEN(TA_WARMUP_RATIO);
	r->max_length = ARG_INT(TA_MAX_LENGTH, BFT_DEFAULT_MAX_LENGTH);
	r->max_length_given = ARG_GIVEN(TA_MAX_LENGTH);
	r->weight_decay = ARG_F8(TA_WEIGHT_DECAY, 0.0);
	r->dropout = ARG_F8(TA_DROPOUT, -1.0);
	r->dropout_given = ARG_GIVEN(TA_DROPOUT);
	r->shuffle = ARG_BOOL(TA_SHUFFLE, true);
	r->seed = ARG_INT(TA_SEED, 42);
	r->vfrac = ARG_F8(TA_VALIDATION_FRACTION, 0.0);
	r->deploy = PG_ARGISNULL(TA_DEPLOY) ? "always" : ARG_TEXT(TA_DEPLOY);
	r->class_weights_arg = ARG_ABSENT(TA_CLASS_WEIGHTS) ? NULL : ARG_TEXT(TA_CLASS_WEIGHTS);
	r->resume = ARG_ABSENT(TA_RESUME) ? false : PG_GETARG_BOOL(TA_RESUME);
	r->save_state = bft_save_train_state && bft_train_state_retention > 0;

	/* device => NULL: bft.device; 'cuda' without a usable GPU is an ERROR */
	r->train_device = bft_resolve_device(ARG_TEXT(TA_DEVICE));
	/* train_precision => NULL: bft.cpu_precision (bft.cuda_precision on CUDA) */
	r->train_precision = bft_train_precision(r->train_device,
											 bft_parse_train_precision(ARG_ABSENT(TA_TRAIN_PRECISION) ? NULL
																	   : ARG_TEXT(TA_TRAIN_PRECISION)));
	r->policy = bft_parse_deploy(r->deploy, &r->metric);

	r->model_name = PG_ARGISNULL(TA_MODEL) ? get_rel_name(r->relid) : ARG_TEXT(TA_MODEL);
	if (r->model_name == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", r->relid)));
	bft_check_model_name(r->model_name);
	r->base = ARG_TEXT(TA_BASE);
	r->scratch = (r->base == NULL);
}

/* The training options: defaults by base or from scratch, range checks. */
static void
train_parse_options(FunctionCallInfo fcinfo, TrainRun *r)
{
	bool		scratch = r->scratch;

	if (ARG_GIVEN(TA_EPOCHS) && PG_GETARG_INT32(TA_EPOCHS) <= 0)
		bad_option("epochs must be positive");
	if (ARG_GIVEN(TA_MLM_EPOCHS) && PG_GETARG_INT32(TA_MLM_EPOCHS) < 0)
		bad_option("mlm_epochs must not be negative");
	r->epochs_given = ARG_GIVEN(TA_EPOCHS);
	r->mlm_epochs_given = ARG_GIVEN(TA_MLM_EPOCHS);
	r->epochs = ARG_INT(TA_EPOCHS, scratch ? BFT_SCRATCH_EPOCHS : BFT_BASE_EPOCHS);
	r->mlm_epochs = ARG_INT(TA_MLM_EPOCHS, scratch ? BFT_SCRATCH_MLM_EPOCHS : 0);
	r->batch_size = ARG_INT(TA_BATCH_SIZE, scratch ? BFT_SCRATCH_BATCH_SIZE : BFT_BASE_BATCH_SIZE);
	r->lr = ARG_F8(TA_LEARNING_RATE, scratch ? BFT_SCRATCH_LEARNING_RATE : BFT_BASE_LEARNING_RATE);
	r->warmup = ARG_F8(TA_WARMUP_RATIO, scratch ? BFT_SCRATCH_WARMUP_RATIO : BFT_BASE_WARMUP_RATIO);
	r->group_by_length = ARG_BOOL(TA_GROUP_BY_LENGTH,
								  scratch ? BFT_SCRATCH_GROUP_BY_LENGTH : BFT_BASE_GROUP_BY_LENGTH);
	if (r->epochs > 100000)
		bad_option("epochs must be at most 100000");
	if (r->batch_size <= 0 || r->batch_size > 65536)
		bad_option("batch_size must be between 1 and 65536");
	if (!(r->lr > 0) || isinf(r->lr) || r->lr > 10)
		bad_option("learning_rate must be positive and at most 10");
	if (r->max_length < 2 || r->max_length > 8192)
		bad_option("max_length must be between 2 and 8192");
	if (!(r->warmup >= 0 && r->warmup <= 1))
		bad_option("warmup_ratio must be between 0 and 1");
	if (!(r->weight_decay >= 0) || isinf(r->weight_decay))
		bad_option("weight_decay must not be negative");
	if (r->dropout_given && !(r->dropout >= 0 && r->dropout < 1))
		bad_option("dropout must be at least 0 and below 1");
	if (!(r->vfrac >= 0 && r->vfrac < 1))
		bad_option("validation_fraction must be at least 0 and below 1");
	if (r->policy == BFT_DEPLOY_IF_BETTER && r->vfrac == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("deploy => 'if_better' needs a validation_fraction above 0"),
				 errhint("The new version is compared with the deployed one on the validation rows.")));
	if (!scratch && ARG_GIVEN(TA_ARCHITECTURE))
		bad_option("architecture applies only when training from scratch (no base)");
	bft_best_opts(ARG_ABSENT(TA_LOAD_BEST_MODEL_AT_END) ? -1 : PG_GETARG_BOOL(TA_LOAD_BEST_MODEL_AT_END),
				  ARG_ABSENT(TA_METRIC_FOR_BEST_MODEL) ? NULL : ARG_TEXT(TA_METRIC_FOR_BEST_MODEL),
				  !ARG_ABSENT(TA_EARLY_STOPPING_PATIENCE),
				  ARG_ABSENT(TA_EARLY_STOPPING_PATIENCE) ? 0 : PG_GETARG_INT32(TA_EARLY_STOPPING_PATIENCE),
				  r->vfrac, &r->best);
}

/* From scratch: the architecture (defaults, then the argument's keys). */
static void
train_parse_architecture(FunctionCallInfo fcinfo, TrainRun *r)
{
	Arch	   *a = &r->arch;

	a->hidden_size = BFT_SCRATCH_HIDDEN_SIZE;
	a->num_hidden_layers = BFT_SCRATCH_LAYERS;
	a->num_attention_heads = BFT_SCRATCH_HEADS;
	a->intermediate_size = BFT_SCRATCH_INTERMEDIATE;
	a->vocab_size = BFT_SCRATCH_VOCAB_SIZE;
	a->max_position_embeddings = Max(BFT_SCRATCH_MAX_POSITIONS, r->max_length);
	a->do_lower_case = BFT_SCRATCH_LOWER_CASE;
	a->ngram_head = BFT_SCRATCH_NGRAM_HEAD;
	a->ngram_scale = BFT_SCRATCH_NGRAM_SCALE;
	a->shape_given = a->vocab_given = a->small = false;
	if (r->scratch && ARG_GIVEN(TA_ARCHITECTURE))
		parse_architecture(PG_GETARG_DATUM(TA_ARCHITECTURE), a);
	if (r->scratch && a->max_position_embeddings < r->max_length)
		bad_option("max_length exceeds the architecture's max_position_embeddings");
}

/* Every check before any work: the source, store privileges, the name, the base, memory. */
static void
train_check_source(TrainRun *r)
{
	bft_config	ec = bft_config_default();
	bft_parts	ep = {1, 1, r->mlm_epochs > 0, 0};

	bft_prepare_source(r->relid, r->text_col, r->label_col, &r->src);
	r->multi = r->src.label_is_array;
	/* the n-gram head: single-label classifiers trained from scratch */
	r->arch.ngram_head = r->arch.ngram_head && r->scratch && !r->multi;
	bft_check_store(r->model_name);
	if (!r->scratch)
	{
		bft_require_model_read("bft_train(base => ...)");
		return;
	}
	ec.vocab_size = r->arch.vocab_size;
	ec.hidden_size = r->arch.hidden_size;
	ec.num_hidden_layers = r->arch.num_hidden_layers;
	ec.num_attention_heads = r->arch.num_attention_heads;
	ec.intermediate_size = r->arch.intermediate_size;
	ec.max_position_embeddings = r->arch.max_position_embeddings;
	ec.num_labels = 2;
	r->train_mem = bft_mem_model_bytes(&ec, ep, (Size) r->arch.vocab_size * 8) +
		bft_mem_train_bytes(&ec, ep, 2, r->batch_size, r->max_length, r->mlm_epochs > 0) +
		(r->best.load_best ? bft_mem_model_bytes(&ec, ep, 0) : 0);
	bft_memory_require(r->train_mem, "training this architecture",
					   "Lower batch_size, max_length or the architecture's hidden_size, num_hidden_layers, "
					   "intermediate_size or vocab_size; a superuser can raise bft.max_memory.");
}

/* The run's memory context (its reset callback frees the engine objects) and progress. */
static void
train_begin(TrainRun *r)
{
	MemoryContextCallback *cb;

	r->cxt = AllocSetContextCreate(CurrentMemoryContext, "bft_train", ALLOCSET_DEFAULT_SIZES);
	MemoryContextSwitchTo(r->cxt);
	r->st = palloc0(sizeof(TrainState));
	cb = palloc0(sizeof(MemoryContextCallback));
	cb->func = train_state_cleanup;
	cb->arg = r->st;
	MemoryContextRegisterResetCallback(r->cxt, cb);

	memset(&r->pc, 0, sizeof(r->pc));
	r->pc.model = r->model_name;
	r->pc.started = GetCurrentTimestamp();
	r->pc.last_notice = bft_now_seconds();
	initStringInfo(&r->pc.epochs);
	bft_progress_begin(r->model_name, "reading");
	r->st->progress_on = true;
	bft_apply_threads();
}

/* Fine-tuning: the base model ('name', 'name@N' or 'name@latest') and its defaults. */
static void
train_load_base(TrainRun *r)
{
	int			ml;
	int32		base_version;
	char	   *base_name = bft_parse_model_ref(r->base, &base_version);
	bft_model  *m;

	m = r->st->model = bft_load_model_row(base_name, base_version, NULL, NULL, &ml);
	/* an n-gram head belongs to the base's own training: fine-tuning leaves it out */
	{
		bft_error	err;

		if (bft_model_drop_ngram(m, &err) != BFT_OK)
			bft_report_engine_error(&err, "could not load the base model");
	}
	/* small encoders: their own learning rate and warmup defaults */
	r->small_base = m->cfg.hidden_size <= BFT_SMALL_BASE_HIDDEN;
	if (r->small_base)
	{
		if (!r->lr_given)
			r->lr = BFT_SMALL_BASE_LEARNING_RATE;
		if (!r->warmup_given)
			r->warmup = BFT_SMALL_BASE_WARMUP_RATIO;
	}
	if (!r->max_length_given)
		r->max_length = Min(r->max_length, m->cfg.max_position_embeddings);
	if (r->max_length > m->cfg.max_position_embeddings)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_length %d exceeds the base model's max_position_embeddings %d",
						r->max_length, m->cfg.max_position_embeddings)));
	if (r->mlm_epochs > 0 && !m->parts.mlm)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("mlm_epochs needs a base model with a masked-language-model head")));
	r->train_mem = bft_mem_model_bytes(&m->cfg, m->parts, m->vocab_len) +
		bft_mem_train_bytes(&m->cfg, m->parts, Max(m->cfg.num_labels, 2),
							r->batch_size, r->max_length, r->mlm_epochs > 0) +
		(r->best.load_best ? bft_mem_model_bytes(&m->cfg, m->parts, 0) : 0);
	bft_memory_require(r->train_mem, "fine-tuning this model",
					   "Lower batch_size or max_length, or use a smaller base model; a superuser can raise bft.max_memory.");
	if (m->parts.classifier)
		r->base_K = m->cfg.num_labels;
	r->tok = m->tok;
}

/*
 * From scratch, pass 1: learn a WordPiece vocabulary from the column, and
 * the shape that fits this many rows.  The snapshot pushed here serves pass 2
 * too (train_read_rows pops it).
 */
static void
train_learn_vocabulary(TrainRun *r)
{
	TrainState *st = r->st;
	BftRowReader rd;
	bft_error	err;
	size_t		vlen;
	size_t		pruned;
	long long	below;
	size_t		kept;

	r->topts = bft_tokenizer_default_opts();
	r->topts.do_lower_case = r->arch.do_lower_case ? 1 : 0;
	r->topts.model_max_length = r->max_length;
	st->wp = bft_wp_trainer_new(&r->topts, r->arch.vocab_size, 0, &err);
	if (st->wp == NULL)
		bft_report_engine_error(&err, "could not start vocabulary learning");
	/* the word table gets what bft.max_memory leaves (rare words are pruned) */
	bft_wp_trainer_set_memory(st->wp, bft_memory_limit() - Min(bft_cache_make_room(0), bft_memory_limit()));
	PushActiveSnapshot(GetTransactionSnapshot());
	memset(&r->rows, 0, sizeof(r->rows));
	r->rows.src = &r->src;
	r->rows.wp = st->wp;
	r->rows.use_unlabeled = r->mlm_epochs > 0;
	rows_reader(&r->rows, &rd);
	bft_read_rows(&rd);
	bft_progress_begin(r->model_name, "vocabulary");
	kept = bft_wp_trainer_stats(st->wp, &pruned, &below);
	if (pruned > 0)
		ereport(NOTICE,
				(errmsg("vocabulary learned from the %zu most frequent distinct words; %zu rarer ones were dropped to stay within bft.max_memory",
						kept, pruned)));
	scale_architecture(&r->arch, r->rows.fed);
	if (bft_wp_trainer_set_vocab_size(st->wp, r->arch.vocab_size, &err) != 0)
		bft_report_engine_error(&err, "could not learn the vocabulary");
	st->vocab = bft_wp_trainer_finish(st->wp, &vlen, &err);
	if (st->vocab == NULL)
		bft_report_engine_error(&err, "could not learn the vocabulary");
	bft_wp_trainer_free(st->wp);
	st->wp = NULL;
	st->tok = bft_tokenizer_new(st->vocab, vlen, &r->topts, &err);
	if (st->tok == NULL)
		bft_report_engine_error(&err, "could not build the learned tokenizer");
	r->tok = st->tok;
}

/* deploy => 'if_better': the deployed classifier to beat, if any. */
static void
train_load_deployed(TrainRun *r)
{
	TrainState *st = r->st;

	if (r->policy != BFT_DEPLOY_IF_BETTER)
		return;
	r->cmp_version = deployed_version(r->model_name);
	r->deployed_start = r->cmp_version;
	if (r->cmp_version == 0)
		return;
	st->cmp = bft_load_model_row(r->model_name, r->cmp_version, NULL, NULL, &r->cmp_max_length);
	if (!st->cmp->parts.classifier || st->cmp->cfg.num_labels <= 0)
	{
		bft_model_free(st->cmp);
		st->cmp = NULL;
		r->cmp_version = 0;
	}
	else
		r->cmp_tok = st->cmp->tok;
}

/* Pass 2: tokenize every row (also with the deployed version's vocabulary) and collect labels. */
static void
train_read_rows(TrainRun *r)
{
	Rows	   *rows = &r->rows;
	BftRowReader rd;

	bft_progress_begin(r->model_name, "tokenizing");
	if (!r->scratch)
		PushActiveSnapshot(GetTransactionSnapshot());
	memset(rows, 0, sizeof(*rows));
	rows->src = &r->src;
	rows->cxt = r->cxt;
	rows->mem_base = r->train_mem;
	rows->tok = r->tok;
	rows->max_length = r->max_length;
	rows->cmp_tok = r->cmp_tok;
	rows->cmp_max_length = r->cmp_max_length;
	rows->use_unlabeled = r->mlm_epochs > 0;
	rows->ids = palloc(sizeof(int32) * Max(r->max_length, r->cmp_max_length));
	/* the rows' n-grams: for the new n-gram head, or the deployed version's */
	if (r->arch.ngram_head || (r->st->cmp && bft_ngram_has_head(r->st->cmp)))
	{
		r->st->ngram = bft_ngram_corpus_new();
		if (r->st->ngram == NULL)
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		rows->ngram = r->st->ngram;
	}
	rows->cap = 1024;
	rows->offsets = MemoryContextAllocHuge(r->cxt, sizeof(int64) * rows->cap);
	rows->raw = MemoryContextAllocHuge(r->cxt, sizeof(int64) * rows->cap);
	rows->offsets[0] = 0;
	if (r->multi)
	{
		rows->lab_off = MemoryContextAllocHuge(r->cxt, sizeof(int64) * rows->cap);
		rows->lab_off[0] = 0;
	}
	if (r->cmp_tok)
	{
		rows->coffsets = MemoryContextAllocHuge(r->cxt, sizeof(int64) * rows->cap);
		rows->coffsets[0] = 0;
	}
	if (!r->src.label_is_int)
		bft_label_map_init(&rows->names, "bft labels", 16, r->cxt);
	rows_reader(rows, &rd);
	bft_read_rows(&rd);
	PopActiveSnapshot();
	rows->skipped = rd.skipped;
	bft_rows_report(&rd);
}

/*
 * Labels → class ids 0 .. K-1: integer labels are their own ids (at least
 * the base's classes), text labels are numbered in sorted order.
 */
static void
train_map_labels(TrainRun *r)
{
	Rows	   *rows = &r->rows;
	int64		nraw = r->multi ? rows->lab_total : rows->n;
	const int64 *raw = r->multi ? rows->lab_raw : rows->raw;
	int		   *remap;
	int64		i;

	r->labels = palloc(sizeof(int32) * rows->n);
	if (r->src.label_is_int)
	{
		int64		maxv = 0;

		for (i = 0; i < nraw; i++)
			maxv = Max(maxv, raw[i]);
		r->K = Max((int) maxv + 1, r->base_K);
		r->names = palloc(sizeof(char *) * r->K);
		remap = palloc(sizeof(int) * r->K);
		for (i = 0; i < r->K; i++)
		{
			r->names[i] = psprintf("%d", (int) i);
			remap[i] = (int) i;
		}
	}
	else
	{
		r->K = rows->names.n;
		r->names = palloc(sizeof(char *) * Max(r->K, 1));
		remap = palloc(sizeof(int) * Max(r->K, 1));
		memcpy(r->names, rows->names.names, sizeof(char *) * r->K);
		qsort(r->names, r->K, sizeof(char *), cstr_cmp);
		/* a name's temporary id is the one the map gave it */
		for (i = 0; i < r->K; i++)
			remap[bft_label_map_find(&rows->names, r->names[i])] = (int) i;
	}
	if (r->multi)
	{
		r->lab_ids = palloc(sizeof(int32) * Max(nraw, 1));
		for (i = 0; i < nraw; i++)
			r->lab_ids[i] = remap[raw[i]];
		for (i = 0; i < rows->n; i++)
			r->labels[i] = -1;
	}
	else
		for (i = 0; i < rows->n; i++)
			r->labels[i] = remap[raw[i]];
}

/* Whether every row has the label set of row 0 (the same labels, in any order). */
static bool
all_same_label_set(const int64 *lab_off, const int32 *lab_ids, int64 n)
{
	int64		i;

	for (i = 1; i < n; i++)
	{
		int64		a0 = lab_off[0],
					a1 = lab_off[1],
					b0 = lab_off[i],
					b1 = lab_off[i + 1];
		int64		x;

		if (a1 - a0 != b1 - b0)
			return false;
		for (x = b0; x < b1; x++)
		{
			bool		in = false;
			int64		y;

			for (y = a0; y < a1 && !in; y++)
				in = lab_ids[x] == lab_ids[y];
			if (!in)
				return false;
		}
	}
	return true;
}

/* A classifier needs two classes (single label) or label sets that differ. */
static void
train_check_classes(TrainRun *r)
{
	int64		n = r->rows.n;
	int64		i;
	int64	   *counts;
	int			nclasses = 0;

	if (r->multi)
	{
		if (r->rows.lab_total == 0)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("none of the " INT64_FORMAT " rows has a label", n),
					 errdetail("The label column holds only empty arrays (or arrays of NULLs).")));
		if (all_same_label_set(r->rows.lab_off, r->lab_ids, n))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("all " INT64_FORMAT " rows have the same labels", n),
					 errdetail("A multi-label classifier needs rows whose label sets differ.")));
		return;
	}
	counts = palloc0(sizeof(int64) * Max(r->K, 1));
	for (i = 0; i < n; i++)
		counts[r->labels[i]]++;
	for (i = 0; i < r->K; i++)
		if (counts[i] > 0)
			nclasses++;
	if (nclasses < 2)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_EXCEPTION),
				 errmsg("all " INT64_FORMAT " rows have the same label", n),
				 errdetail("A classifier needs at least two classes.")));
	pfree(counts);
}

/* Shuffle idx[0 .. n) with the split's RNG (Fisher-Yates from the end). */
static void
split_shuffle(int64 *idx, int64 n, uint64 *prng)
{
	int64		j;

	for (j = n - 1; j > 0; j--)
	{
		int64		k = (int64) (split_next(prng) % (uint64) (j + 1));
		int64		tmp = idx[j];

		idx[j] = idx[k];
		idx[k] = tmp;
	}
}

/* Mark round(vfrac * n) of the n rows idx[] as validation rows (n - 1 at most). */
static int64
split_take(const int64 *idx, int64 n, double vfrac, bool *is_val)
{
	int64		take = (int64) floor(vfrac * n + 0.5);
	int64		j;

	if (take >= n)
		take = n - 1;
	for (j = 0; j < take; j++)
		is_val[idx[j]] = true;
	return take;
}

/*
 * The MLM corpus without a copy of the training rows: the unlabeled rows'
 * token ids (rows->utokens, then freed) are appended to train's buffers
 * after its n rows, which stay the fine-tuning set; the corpus is train
 * with n + rows->un rows.
 */
static void
append_unlabeled(bft_dataset *train, Rows *rows)
{
	int64		ttot = train->offsets[train->n];
	int32	   *t = repalloc_huge((int32 *) train->tokens, sizeof(int32) * (ttot + rows->utotal));
	int64	   *o = repalloc_huge((int64 *) train->offsets, sizeof(int64) * (train->n + rows->un + 1));
	int64		i;

	memcpy(t + ttot, rows->utokens, sizeof(int32) * rows->utotal);
	for (i = 1; i <= rows->un; i++)
		o[train->n + i] = ttot + rows->uoffsets[i];
	train->tokens = t;
	train->offsets = o;
	pfree(rows->utokens);
	pfree(rows->uoffsets);
	rows->utokens = NULL;
	rows->uoffsets = NULL;
}

/*
 * The validation split from the seed: stratified by class (single label),
 * a random sample of the rows (label sets); then the train and validation
 * datasets.
 */
static void
train_split(TrainRun *r)
{
	Rows	   *rows = &r->rows;
	int32	   *labels = r->multi ? NULL : r->labels;

	if (r->vfrac > 0)
	{
		uint64		prng = (uint64) (uint32) r->seed;
		int64	   *idx = palloc(sizeof(int64) * rows->n);
		int64		i;
		int			c;

		r->is_val = palloc0(sizeof(bool) * rows->n);
		for (c = 0; c < (r->multi ? 1 : r->K); c++)
		{
			int64		nc = 0;

			for (i = 0; i < rows->n; i++)
				if (r->multi || r->labels[i] == c)
					idx[nc++] = i;
			if (nc == 0)
				continue;
			split_shuffle(idx, nc, &prng);
			r->nval += split_take(idx, nc, r->vfrac, r->is_val);
		}
		pfree(idx);
		if (r->nval == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("validation_fraction %g leaves no validation rows out of " INT64_FORMAT,
							r->vfrac, rows->n)));
	}
	subset(rows->tokens, rows->offsets, labels, rows->lab_off, r->lab_ids, rows->n, r->is_val,
		   false, &r->train_ds);
	if (r->nval > 0)
		subset(rows->tokens, rows->offsets, labels, rows->lab_off, r->lab_ids, rows->n,
			   r->is_val, true, &r->val_ds);
	if (rows->tokens)
		pfree(rows->tokens);
	rows->tokens = NULL;
	if (rows->un > 0)
		append_unlabeled(&r->train_ds, rows);
}

/* From scratch: whether the training rows' classes are imbalanced enough for balanced weights. */
static bool
scratch_imbalanced(const TrainRun *r)
{
	int64	   *tc = palloc0(sizeof(int64) * r->K);
	int64		lo = -1,
				hi = 0;
	int64		i;

	for (i = 0; i < r->train_ds.n; i++)
		tc[r->train_ds.labels[i]]++;
	for (i = 0; i < r->K; i++)
		if (tc[i] > 0)
		{
			lo = lo < 0 ? tc[i] : Min(lo, tc[i]);
			hi = Max(hi, tc[i]);
		}
	pfree(tc);
	return lo > 0 && (double) hi >= BFT_SCRATCH_AUTO_WEIGHT_RATIO * (double) lo;
}

/*
 * A small base on many training rows: its lower learning rate (defaults.h);
 * from scratch, the small shape's higher one.
 * From scratch, epochs by a step budget and class weights when imbalanced;
 * then the class weights (weighted cross-entropy) from the training rows.
 */
static void
train_epochs_and_weights(TrainRun *r)
{
	if (r->small_base && !r->lr_given && r->train_ds.n >= BFT_SMALL_BASE_MANY_ROWS)
		r->lr = BFT_SMALL_BASE_MANY_ROWS_LEARNING_RATE;
	if (r->scratch && !r->lr_given && r->arch.small)
		r->lr = BFT_SCRATCH_SMALL_LEARNING_RATE;
	if (r->scratch && !r->epochs_given)
		r->epochs = epochs_for_steps(r->train_ds.n, r->batch_size, BFT_SCRATCH_TRAIN_STEPS,
									 BFT_SCRATCH_EPOCHS, BFT_SCRATCH_MAX_EPOCHS);
	if (r->scratch && !r->mlm_epochs_given && r->mlm_epochs > 0)
		r->mlm_epochs = epochs_for_steps(r->train_ds.n + r->rows.un, r->batch_size, BFT_SCRATCH_MLM_STEPS,
										 BFT_SCRATCH_MLM_EPOCHS, BFT_SCRATCH_MAX_MLM_EPOCHS);
	if (r->scratch && !r->multi && r->class_weights_arg == NULL &&
		BFT_SCRATCH_AUTO_WEIGHT_RATIO > 0 && scratch_imbalanced(r))
	{
		r->class_weights_arg = "balanced";
		r->cw_auto = true;
	}
	initStringInfo(&r->cw_params);
	initStringInfo(&r->cw_metrics);
	r->class_weights = bft_class_weights(r->class_weights_arg, r->K, r->names, r->train_ds.labels,
										 r->train_ds.n, &r->cw_params, &r->cw_metrics);
}

/* From scratch: a new model of the architecture, the learned vocabulary and K labels. */
static void
train_new_model(TrainRun *r)
{
	TrainState *st = r->st;
	bft_config	cfg = bft_config_default();
	bft_parts	parts = {0, 0, 0, 0};
	Size		need;
	bft_error	err;

	cfg.vocab_size = bft_tokenizer_vocab_size(st->tok);
	cfg.hidden_size = r->arch.hidden_size;
	cfg.num_hidden_layers = r->arch.num_hidden_layers;
	cfg.num_attention_heads = r->arch.num_attention_heads;
	cfg.intermediate_size = r->arch.intermediate_size;
	cfg.max_position_embeddings = r->arch.max_position_embeddings;
	cfg.pad_token_id = Max(bft_tokenizer_special(st->tok).pad, 0);
	cfg.tok = r->topts;
	cfg.num_labels = r->K;
	parts.pooler = 1;
	parts.classifier = 1;
	parts.mlm = r->mlm_epochs > 0 ? 1 : 0;
	/* the learned vocabulary and the labels are known now */
	need = bft_mem_model_bytes(&cfg, parts, strlen(st->vocab)) +
		bft_mem_train_bytes(&cfg, parts, r->K, r->batch_size, r->max_length, r->mlm_epochs > 0) +
		(r->best.load_best ? bft_mem_model_bytes(&cfg, parts, 0) : 0);
	bft_memory_require(need + rows_bytes(&r->rows), "training this architecture on these rows",
					   "Lower batch_size, max_length or the architecture's sizes, or train on fewer rows; "
					   "a superuser can raise bft.max_memory.");
	bft_engine_budget();
	bft_progress_begin(r->model_name, "initialising");
	st->model = bft_model_new(&cfg, st->vocab, strlen(st->vocab), parts, (uint64) r->seed, &err);
	if (st->model == NULL)
		bft_report_engine_error(&err, "could not create the model");
}

/* The model to train: new (from scratch) or the base, with this training's labels. */
static void
train_build_model(TrainRun *r)
{
	bft_error	err;

	if (r->scratch)
		train_new_model(r);
	bft_engine_budget();
	if (bft_model_set_labels(r->st->model, r->K, (const char *const *) r->names, (uint64) r->seed,
							 &err) != 0)
		bft_report_engine_error(&err, "could not set the model's labels");
	/* a sigmoid per label and binary cross-entropy for label sets */
	r->st->model->cfg.problem_type = r->multi ? BFT_PROBLEM_MULTI_LABEL : BFT_PROBLEM_SINGLE_LABEL;
}

/* resume => true: which saved phase state (if any) this training continues from. */
static void
train_find_saved_state(TrainRun *r)
{
	bft_error	serr;

	r->sinfo = palloc0(sizeof(bft_train_state_info_t));
	if (bft_train_state_exists(r->cls_state) &&
		bft_train_state_info(r->cls_state, r->sinfo, &serr) == BFT_OK && r->sinfo->task == 0)
		r->resume_cls = true;
	else if (r->mlm_epochs > 0 && bft_train_state_exists(r->mlm_state) &&
			 bft_train_state_info(r->mlm_state, r->sinfo, &serr) == BFT_OK && r->sinfo->task == 1)
		r->resume_mlm = true;
	else
		ereport(NOTICE,
				(errmsg("no saved training state of \"%s\" for role \"%s\": training from the start",
						r->model_name, GetUserNameFromId(GetUserId(), false))));
	if (r->resume_cls || r->resume_mlm)
		ereport(NOTICE,
				(errmsg("resuming %s of \"%s\" after epoch %d of %d",
						r->resume_cls ? "training" : "MLM pre-training", r->model_name,
						r->sinfo->epochs_done, r->sinfo->epochs)));
}

/* Per-epoch states: their files, the salt of what the engine cannot see, what to resume. */
static void
train_prepare_states(TrainRun *r)
{
	bft_model  *m = r->st->model;
	char	  **lnames;
	uint64		salt;
	int			k;

	initStringInfo(&r->mlm_note);
	if (!r->save_state && !r->resume)
		return;
	lnames = bft_model_label_names(m);
	bft_train_state_expire();
	r->mlm_state = bft_train_state_path(r->model_name, "mlm", r->save_state);
	r->cls_state = bft_train_state_path(r->model_name, "train", r->save_state);
	/* what the engine cannot see: the initial weights, vocabulary and label names */
	salt = bft_train_hash(0, m->params_mem, m->num_params * sizeof(float));
	salt = bft_train_hash(salt, m->vocab, m->vocab_len);
	for (k = 0; k < r->K; k++)
		salt = bft_train_hash(salt, lnames[k], strlen(lnames[k]) + 1);
	salt = bft_train_hash(salt, &r->max_length, sizeof(r->max_length));
	r->opts_salt = salt;
	if (r->resume)
		train_find_saved_state(r);
}

/* The engine's options, shared by MLM pre-training and fine-tuning. */
static void
train_set_opts(TrainRun *r)
{
	bft_train_opts *o = &r->opts;

	*o = bft_train_default_opts();
	o->batch_size = r->batch_size;
	/* doubles, as Trainer's: ceil(steps * warmup_ratio) must match */
	o->learning_rate = r->lr;
	o->warmup_ratio = r->warmup;
	o->weight_decay = r->weight_decay;
	o->dropout = r->dropout_given ? (float) r->dropout : -1.0f;
	o->shuffle = r->shuffle ? 1 : 0;
	o->group_by_length = r->group_by_length ? 1 : 0;
	o->seed = (uint64) r->seed;
	/* cancel checks between encoder layers, not only after each step */
	o->poll = bft_poll_interrupts;
	o->poll_ctx = &r->pc.edata;
	o->class_weights = r->class_weights;
	o->load_best_model_at_end = r->best.load_best ? 1 : 0;
	o->metric_for_best = r->best.metric;
	o->early_stopping_patience = r->best.patience;
	o->device = r->train_device;
	o->precision = r->train_precision;
	o->state_salt = r->opts_salt;
}

/* MLM pre-training on the column's own text (or its summary, when fine-tuning resumes). */
static void
train_mlm(TrainRun *r)
{
	bft_train_opts mopts = r->opts;
	bft_dataset unl = r->train_ds;
	bft_error	err;
	int			rc;

	memset(&r->mlm_res, 0, sizeof(r->mlm_res));
	if (r->mlm_epochs > 0 && r->resume_cls)
	{
		/* fine-tuning had started: the MLM phase's summary is in its state */
		if (sscanf(r->sinfo->note, "mlm %d %f %lf", &r->mlm_res.epochs, &r->mlm_res.train_loss,
				   &r->mlm_res.seconds) != 3)
			r->mlm_res.epochs = r->mlm_epochs;
		r->mlm_res.resumed_epochs = r->mlm_res.epochs;
		return;
	}
	if (r->mlm_epochs == 0)
		return;
	unl.n += r->rows.un;		/* the unlabeled rows follow the training rows */
	unl.labels = NULL;
	mopts.epochs = r->mlm_epochs;
	mopts.valid = NULL;
	mopts.class_weights = NULL;
	r->pc.phase = "mlm";
	bft_progress_begin(r->model_name, "mlm");
	if (r->save_state)
		mopts.state_path = r->mlm_state;
	if (r->resume_mlm)
		mopts.resume_path = r->mlm_state;
	rc = bft_pretrain_mlm(r->st->model, &unl, &mopts, progress_cb, &r->pc, &r->mlm_res, &err);
	check_state_result(rc, &err, mopts.resume_path);
	check_engine_result(rc, &r->pc, &err, "MLM pre-training failed");
	appendStringInfo(&r->mlm_note, "mlm %d %.9g %.17g", r->mlm_res.epochs, r->mlm_res.train_loss,
					 r->mlm_res.seconds);
}

/* Fine-tuning, with the validation rows (if any) scored after each epoch. */
static void
train_finetune(TrainRun *r)
{
	bft_train_opts *o = &r->opts;
	bft_error	err;
	int			rc;

	/* per-epoch metrics of fine-tuning only */
	resetStringInfo(&r->pc.epochs);
	r->pc.nepochs = 0;
	o->epochs = r->epochs;
	o->valid = r->nval > 0 ? &r->val_ds : NULL;
	r->pc.phase = "training";
	bft_progress_begin(r->model_name, "training");
	if (r->save_state)
	{
		o->state_path = r->cls_state;
		o->state_note = r->mlm_note.data;
		o->state_note_len = r->mlm_note.len;
	}
	if (r->resume_cls)
		o->resume_path = r->cls_state;
	rc = bft_train(r->st->model, &r->train_ds, o, progress_cb, &r->pc, &r->res, &err);
	check_state_result(rc, &err, o->resume_path);
	check_engine_result(rc, &r->pc, &err, "training failed");
	if (r->res.early_stopped)
		ereport(NOTICE,
				(errmsg("early stopping after epoch %d: validation %s did not improve for %d epochs; %s epoch %d",
						r->res.epochs, bft_metric_name(r->best.metric), r->best.patience,
						r->best.load_best ? "keeping" : "the best was", r->res.best_epoch)));
	else if (r->best.load_best && r->res.kept_epoch != r->res.epochs)
		ereport(NOTICE,
				(errmsg("keeping epoch %d, the best by validation %s",
						r->res.kept_epoch, bft_metric_name(r->best.metric))));
	r->new_score[BFT_METRIC_ACCURACY] = r->res.eval_accuracy;
	r->new_score[BFT_METRIC_MACRO_F1] = r->res.eval_macro_f1;
	r->new_score[BFT_METRIC_LOSS] = r->res.eval_loss;
}

/*
 * With the validation rows: the scores of the whole model (encoder and n-gram
 * head mixed) replace the encoder's own (kept in enc_eval).
 */
static void
ngram_validation(TrainRun *r, const bft_ngram_head *head)
{
	int			K = r->K;
	float	   *probs = MemoryContextAllocHuge(r->cxt, sizeof(float) * (Size) K * r->val_ds.n);
	float	   *logp = palloc(sizeof(float) * K);
	int64	   *storage = palloc0(sizeof(int64) * 3 * K);
	bft_class_counts cc;
	double		loss = 0;
	int64		i,
				j = 0;

	bft_predict_encoded(r->st->model, r->val_ds.n, r->val_ds.tokens, r->val_ds.offsets, probs);
	bft_counts_init(&cc, K, storage);
	for (i = 0; i < r->rows.n; i++)
	{
		float	   *p;
		int			k,
					best = 0;
		int			y;

		if (!r->is_val[i])
			continue;
		p = probs + (Size) j * K;
		y = r->val_ds.labels[j++];
		bft_ngram_head_logprobs(head, r->st->ngram, i, logp);
		bft_ngram_mix_logprobs(p, logp, K, (float) r->arch.ngram_scale);
		for (k = 1; k < K; k++)
			if (p[k] > p[best])
				best = k;
		bft_counts_add(&cc, y, best);
		loss -= log(Max(p[y], 1e-30f));
	}
	r->enc_eval[BFT_METRIC_LOSS] = r->res.eval_loss;
	r->enc_eval[BFT_METRIC_ACCURACY] = r->res.eval_accuracy;
	r->enc_eval[BFT_METRIC_MACRO_F1] = r->res.eval_macro_f1;
	r->res.eval_loss = (float) (loss / Max(j, 1));
	r->res.eval_accuracy = (float) bft_counts_accuracy(&cc);
	r->res.eval_macro_f1 = (float) bft_counts_macro_f1(&cc, 0);
	r->new_score[BFT_METRIC_ACCURACY] = r->res.eval_accuracy;
	r->new_score[BFT_METRIC_MACRO_F1] = r->res.eval_macro_f1;
	r->new_score[BFT_METRIC_LOSS] = r->res.eval_loss;
}

/*
 * The n-gram head (ngram.h): a TF-IDF logistic regression fitted on the
 * training rows, its C by cross-validation, added to the model.
 */
static void
train_ngram(TrainRun *r)
{
	bft_ngram_fit_opts o = bft_ngram_default_fit_opts();
	bft_ngram_head head;
	int64	   *idx;
	int32	   *lab;
	int64		i,
				n = 0;
	bft_error	err;
	int			rc;
	double		t0 = bft_now_seconds();

	if (!r->arch.ngram_head)
		return;
	bft_progress_begin(r->model_name, "n-gram head");
	idx = MemoryContextAllocHuge(r->cxt, sizeof(int64) * Max(r->rows.n, 1));
	lab = MemoryContextAllocHuge(r->cxt, sizeof(int32) * Max(r->rows.n, 1));
	for (i = 0; i < r->rows.n; i++)
		if (r->is_val == NULL || !r->is_val[i])
		{
			idx[n] = i;
			lab[n++] = r->labels[i];
		}
	o.seed = (uint64) (uint32) r->seed;
	o.class_weights = r->class_weights;
	bft_engine_budget();
	rc = bft_ngram_fit(r->st->ngram, idx, lab, n, r->K, &o, &head, &err);
	if (rc == BFT_OK && head.F == 0)
	{
		/* nothing to learn from: the model is the encoder alone */
		ereport(NOTICE,
				(errmsg("no n-gram head: no word or character n-gram occurs in two training rows")));
		r->arch.ngram_head = false;
		return;
	}
	if (rc == BFT_OK)
	{
		rc = bft_model_set_ngram(r->st->model, &head, (float) r->arch.ngram_scale, &err);
		if (rc != BFT_OK)
			bft_ngram_head_free(&head);
	}
	if (rc != BFT_OK)
	{
		bft_engine_interrupt_rethrow();
		bft_report_engine_error(&err, "could not fit the n-gram head");
	}
	r->ng_features = head.F;
	r->ng_c = head.C;
	r->ng_cv_macro_f1 = head.cv_macro_f1;
	r->ng_iterations = head.iterations;
	PG_TRY();
	{
		if (r->nval > 0)
			ngram_validation(r, &head);
	}
	PG_FINALLY();
	{
		bft_ngram_head_free(&head);
	}
	PG_END_TRY();
	r->ng_seconds = bft_now_seconds() - t0;
}

/* if_better: the deployed version's scores on the same validation rows, by label name. */
static void
train_compare_deployed(TrainRun *r)
{
	bft_model  *cmp = r->st->cmp;
	bft_dataset cds;
	float	   *probs;
	int			CK = cmp->cfg.num_labels;
	char	  **cnames = bft_model_label_names(cmp);
	double	   *old = r->old_score;

	subset(r->rows.ctokens, r->rows.coffsets, NULL, NULL, NULL, r->rows.n, r->is_val, true, &cds);
	probs = MemoryContextAllocHuge(r->cxt, sizeof(float) * (Size) CK * cds.n);
	bft_predict_encoded(cmp, cds.n, cds.tokens, cds.offsets, probs);
	if (bft_ngram_has_head(cmp) && r->st->ngram)
	{
		/* the deployed version's own n-gram head, as its classification mixes it */
		float	   *logp = palloc(sizeof(float) * CK);
		int64		i,
					j = 0;

		for (i = 0; i < r->rows.n; i++)
			if (r->is_val[i])
			{
				bft_ngram_model_row_logprobs(cmp, r->st->ngram, i, logp);
				bft_ngram_mix_logprobs(probs + (Size) (j++) * CK, logp, CK, cmp->cfg.ngram_scale);
			}
	}
	if (r->multi != (cmp->cfg.problem_type == BFT_PROBLEM_MULTI_LABEL))
	{
		/* label sets against single labels (or the reverse): not comparable */
		r->comparable = false;
		r->do_deploy = false;
		ereport(NOTICE,
				(errmsg("the deployed version %d of \"%s\" is a %s classifier and the new one a %s classifier: the new version is not deployed",
						r->cmp_version, r->model_name, r->multi ? "single-label" : "multi-label",
						r->multi ? "multi-label" : "single-label"),
				 errhint("Compare the versions with bft_evaluate() and deploy with bft_deploy().")));
		return;
	}
	if (r->multi)
		compare_scores_multi(cnames, CK, probs, &r->val_ds, r->names, r->K,
							 &old[BFT_METRIC_ACCURACY], &old[BFT_METRIC_MACRO_F1], &old[BFT_METRIC_LOSS]);
	else
	{
		char	  **truth = palloc(sizeof(char *) * cds.n);
		int64		i;

		for (i = 0; i < cds.n; i++)
			truth[i] = r->names[r->val_ds.labels[i]];
		compare_scores(cnames, CK, probs, truth, cds.n, &old[BFT_METRIC_ACCURACY],
					   &old[BFT_METRIC_MACRO_F1], &old[BFT_METRIC_LOSS]);
	}
	if (r->metric == BFT_METRIC_LOSS)
		r->do_deploy = r->new_score[r->metric] < old[r->metric];
	else
		r->do_deploy = r->new_score[r->metric] > old[r->metric];
}

/* Deploy the new version? always / never / if_better than the deployed one. */
static void
train_decide_deploy(TrainRun *r)
{
	r->do_deploy = r->policy == BFT_DEPLOY_ALWAYS;
	if (r->policy != BFT_DEPLOY_IF_BETTER)
		return;
	if (r->st->cmp == NULL)
		r->do_deploy = true;
	else
		train_compare_deployed(r);

	/*
	 * (ops) The deployed version may have changed while this one trained (a
	 * rollback with bft_deploy, another training): then the scores compared
	 * no longer concern the deployed version, so do not deploy.  The name
	 * lock, held until commit, keeps other trainings from storing a version
	 * in between.
	 */
	bft_lock_model_name(r->model_name);
	r->deployed_now = deployed_version(r->model_name);
	if (r->deployed_now != r->deployed_start)
	{
		r->do_deploy = false;
		ereport(NOTICE,
				(errmsg("the deployed version of \"%s\" changed from %d to %d during training; the new version is not deployed",
						r->model_name, r->deployed_start, r->deployed_now),
				 errhint("Compare the versions with bft_evaluate() and deploy with bft_deploy().")));
	}
}

/* bft.models.params: the arguments as used (defaults applied). */
static char *
train_params_json(const TrainRun *r)
{
	StringInfoData p;

	initStringInfo(&p);
	appendStringInfoString(&p, "{\"relation\": ");
	escape_json(&p, r->src.relname);
	appendStringInfoString(&p, ", \"text_column\": ");
	escape_json(&p, NameStr(*r->text_col));
	appendStringInfoString(&p, ", \"label_column\": ");
	escape_json(&p, NameStr(*r->label_col));
	appendStringInfo(&p, ", \"label_type\": \"%s%s\", \"base\": ",
					 r->src.label_is_int ? "integer" : "text", r->multi ? "[]" : "");
	if (r->base)
		escape_json(&p, r->base);
	else
		appendStringInfoString(&p, "null");
	appendStringInfo(&p, ", \"epochs\": %d, \"mlm_epochs\": %d, \"batch_size\": %d",
					 r->epochs, r->mlm_epochs, r->batch_size);
	bft_json_key_float(&p, "learning_rate", r->lr, true);
	appendStringInfo(&p, ", \"max_length\": %d", r->max_length);
	bft_json_key_float(&p, "warmup_ratio", r->warmup, true);
	bft_json_key_float(&p, "weight_decay", r->weight_decay, true);
	if (!r->dropout_given)
		appendStringInfoString(&p, ", \"dropout\": null");
	else
		bft_json_key_float(&p, "dropout", r->dropout, true);
	appendStringInfo(&p, ", \"shuffle\": %s, \"group_by_length\": %s, \"seed\": %d",
					 r->shuffle ? "true" : "false", r->group_by_length ? "true" : "false", r->seed);
	bft_json_key_float(&p, "validation_fraction", r->vfrac, true);
	appendStringInfoString(&p, r->cw_params.data[0] ? r->cw_params.data : ", \"class_weights\": null");
	if (r->cw_auto)
		appendStringInfoString(&p, ", \"class_weights_automatic\": true");
	appendStringInfo(&p, ", \"resume\": %s", r->resume ? "true" : "false");
	appendStringInfo(&p, ", \"load_best_model_at_end\": %s, \"metric_for_best_model\": \"%s\", "
					 "\"early_stopping_patience\": %d",
					 r->best.load_best ? "true" : "false", bft_metric_name(r->best.metric),
					 r->best.patience);
	appendStringInfo(&p, ", \"deploy\": \"%s\", \"device\": \"%s\", \"threads\": %d",
					 r->deploy, r->train_device == BFT_DEVICE_CUDA ? "cuda" : "cpu", bft_threads);
	appendStringInfo(&p, ", \"precision\": \"%s\"",
					 bft_precision_name(r->train_precision));
	if (r->scratch)
		appendStringInfo(&p, ", \"architecture\": {\"hidden_size\": %d, \"num_hidden_layers\": %d,"
						 " \"num_attention_heads\": %d, \"intermediate_size\": %d, \"vocab_size\": %d,"
						 " \"max_position_embeddings\": %d, \"do_lower_case\": %s, \"ngram_head\": %s",
						 r->arch.hidden_size, r->arch.num_hidden_layers, r->arch.num_attention_heads,
						 r->arch.intermediate_size, r->arch.vocab_size, r->arch.max_position_embeddings,
						 r->arch.do_lower_case ? "true" : "false", r->arch.ngram_head ? "true" : "false");
	if (r->scratch && r->arch.ngram_head)
		bft_json_key_float(&p, "ngram_scale", r->arch.ngram_scale, true);
	if (r->scratch)
		appendStringInfoChar(&p, '}');
	appendStringInfoChar(&p, '}');
	return p.data;
}

/* The "deploy" object of bft.models.metrics: the policy and, for if_better, the scores compared. */
static void
train_deploy_json(const TrainRun *r, StringInfo m)
{
	int			k;

	appendStringInfo(m, ", \"deploy\": {\"policy\": \"%s\", \"deployed\": %s",
					 r->policy == BFT_DEPLOY_IF_BETTER ? "if_better" : r->deploy,
					 r->do_deploy ? "true" : "false");
	if (r->policy == BFT_DEPLOY_IF_BETTER)
	{
		appendStringInfo(m, ", \"metric\": \"%s\"", metric_names[r->metric]);
		for (k = 0; k < 3; k++)
			bft_json_key_float(m, psprintf("new_%s", metric_names[k]), r->new_score[k], true);
		if (r->cmp_version > 0 && !r->comparable)
			appendStringInfo(m, ", \"compared_version\": %d, \"comparable\": false", r->cmp_version);
		else if (r->cmp_version > 0)
		{
			appendStringInfo(m, ", \"compared_version\": %d", r->cmp_version);
			for (k = 0; k < 3; k++)
				bft_json_key_float(m, psprintf("compared_%s", metric_names[k]), r->old_score[k], true);
		}
		else
			appendStringInfoString(m, ", \"compared_version\": null");
		if (r->deployed_now != r->deployed_start)
			appendStringInfo(m, ", \"deployed_version_changed_to\": %d", r->deployed_now);
	}
	appendStringInfoString(m, "}}");
}

/* bft.models.metrics: rows, steps, losses and scores, epochs, MLM, deployment. */
static char *
train_metrics_json(const TrainRun *r)
{
	const bft_train_result *res = &r->res;
	bool		val = r->nval > 0;
	StringInfoData m;

	initStringInfo(&m);
	appendStringInfo(&m, "{\"rows_used\": " INT64_FORMAT ", \"rows_skipped\": " INT64_FORMAT
					 ", \"train_rows\": " INT64_FORMAT ", \"validation_rows\": " INT64_FORMAT
					 ", \"classes\": %d, \"steps\": " INT64_FORMAT ", \"warmup_steps\": " INT64_FORMAT,
					 r->rows.n, r->rows.skipped, r->train_ds.n, r->nval, r->K, res->steps,
					 res->warmup_steps);
	if (r->rows.un > 0)
		appendStringInfo(&m, ", \"rows_unlabeled\": " INT64_FORMAT, r->rows.un);
	bft_json_key_float(&m, "train_loss", res->train_loss, true);
	bft_json_key_float(&m, "validation_loss", val ? res->eval_loss : NAN, true);
	bft_json_key_float(&m, "validation_accuracy", val ? res->eval_accuracy : NAN, true);
	bft_json_key_float(&m, "validation_macro_f1", val ? res->eval_macro_f1 : NAN, true);
	bft_json_key_float(&m, "samples_per_second", res->samples_per_s, true);
	bft_json_key_float(&m, "train_seconds", res->seconds, true);
	bft_json_key_float(&m, "duration_s", r->seconds, true);
	appendStringInfo(&m, ", \"epochs\": [%s]", r->pc.epochs.data);
	appendStringInfoString(&m, r->cw_metrics.data);
	appendStringInfo(&m, ", \"epochs_run\": %d, \"kept_epoch\": %d, \"stop_reason\": \"%s\"",
					 res->epochs, res->kept_epoch, res->early_stopped ? "early_stopping" : "max_epochs");
	appendStringInfo(&m, ", \"resumed_after_epoch\": %d", res->resumed_epochs);
	if (val)
	{
		appendStringInfo(&m, ", \"best_epoch\": %d", res->best_epoch);
		bft_json_key_float(&m, "best_metric", res->best_metric, true);
	}
	if (r->mlm_epochs > 0)
	{
		appendStringInfo(&m, ", \"mlm\": {\"epochs\": %d, \"rows\": " INT64_FORMAT
						 ", \"resumed_after_epoch\": %d",
						 r->mlm_res.epochs, r->train_ds.n + r->rows.un, r->mlm_res.resumed_epochs);
		bft_json_key_float(&m, "loss", r->mlm_res.train_loss, true);
		bft_json_key_float(&m, "seconds", r->mlm_res.seconds, true);
		appendStringInfoChar(&m, '}');
	}
	if (r->arch.ngram_head)
	{
		appendStringInfo(&m, ", \"ngram\": {\"features\": " INT64_FORMAT ", \"iterations\": %d",
						 r->ng_features, r->ng_iterations);
		bft_json_key_float(&m, "C", r->ng_c, true);
		bft_json_key_float(&m, "cv_macro_f1", r->ng_cv_macro_f1, true);
		bft_json_key_float(&m, "scale", r->arch.ngram_scale, true);
		bft_json_key_float(&m, "seconds", r->ng_seconds, true);
		if (val)
		{
			bft_json_key_float(&m, "encoder_validation_loss", r->enc_eval[BFT_METRIC_LOSS], true);
			bft_json_key_float(&m, "encoder_validation_accuracy", r->enc_eval[BFT_METRIC_ACCURACY], true);
			bft_json_key_float(&m, "encoder_validation_macro_f1", r->enc_eval[BFT_METRIC_MACRO_F1], true);
		}
		appendStringInfoChar(&m, '}');
	}
	train_deploy_json(r, &m);
	return m.data;
}

/* Store the new version (deployed or not) in the caller's transaction. */
static void
train_store(TrainRun *r)
{
	char	   *params;
	char	   *metrics;

	bft_progress_begin(r->model_name, "saving");
	r->seconds = bft_now_seconds() - r->t0;
	params = train_params_json(r);
	metrics = train_metrics_json(r);
	r->version = bft_store_model(r->model_name, r->base, r->st->model, params, metrics, r->do_deploy);
	/* stored: the saved states are no longer needed once this commits */
	if (r->save_state || r->resume)
		bft_train_state_discard_at_commit(r->model_name);
	if (r->policy == BFT_DEPLOY_IF_BETTER)
		ereport(NOTICE,
				(errmsg(r->do_deploy ? "version %d deployed (validation %s %.4f, deployed version %s)"
						: "version %d not deployed (validation %s %.4f, deployed version %s)",
						r->version, metric_names[r->metric], r->new_score[r->metric],
						r->cmp_version > 0 ? psprintf("%d: %.4f", r->cmp_version, r->old_score[r->metric])
						: "none")));
}

/* bft_train's result row, built in the caller's memory context. */
static void
train_result_row(TrainRun *r, MemoryContext caller)
{
	Datum		values[9];
	bool		nulls[9] = {false, false, false, false, false, false, false, false, false};
	Interval   *dur = palloc0(sizeof(Interval));

	dur->time = (int64) (r->seconds * USECS_PER_SEC);
	MemoryContextSwitchTo(caller);
	values[0] = CStringGetTextDatum(r->model_name);
	values[1] = Int32GetDatum(r->version);
	values[2] = Int64GetDatum(r->rows.n);
	values[3] = Int32GetDatum(r->res.epochs);	/* run (early stopping: fewer) */
	values[4] = Float4GetDatum(r->res.train_loss);
	if (r->nval > 0)
	{
		values[5] = Float4GetDatum(r->res.eval_accuracy);
		values[6] = Float4GetDatum(r->res.eval_macro_f1);
	}
	else
		nulls[5] = nulls[6] = true;
	values[7] = Float4GetDatum((float4) r->res.samples_per_s);
	values[8] = IntervalPGetDatum(dur);
	tuplestore_putvalues(r->tstore, r->tupdesc, values, nulls);
}

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
	MemoryContext caller = CurrentMemoryContext;
	TrainRun   *r = palloc0(sizeof(TrainRun));
	int			k;

	r->t0 = bft_now_seconds();
	r->comparable = true;
	for (k = 0; k < 3; k++)
		r->new_score[k] = r->old_score[k] = NAN;

	/* arguments; every check before any work */
	train_parse_args(fcinfo, r);
	train_parse_options(fcinfo, r);
	train_parse_architecture(fcinfo, r);
	train_check_source(r);
	train_begin(r);

	/* base model or vocabulary, the version to beat, the rows */
	if (r->scratch)
		train_learn_vocabulary(r);
	else
		train_load_base(r);
	train_load_deployed(r);
	train_read_rows(r);

	/* labels, split, model */
	train_map_labels(r);
	train_check_classes(r);
	train_split(r);
	train_epochs_and_weights(r);
	train_build_model(r);

	/* train */
	train_prepare_states(r);
	train_set_opts(r);
	train_mlm(r);
	train_finetune(r);
	train_ngram(r);

	/* deploy, store */
	train_decide_deploy(r);
	train_store(r);
	train_result_row(r, caller);

	/* frees the engine objects (callback) and every buffer */
	MemoryContextDelete(r->cxt);
	PG_RETURN_NULL();
}
