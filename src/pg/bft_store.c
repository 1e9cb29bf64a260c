/*
 * bft_store.c — the model store: bft.models rows plus large objects holding
 * the safetensors bytes, and the per-backend model cache.
 *
 * Writing (training, import) goes through the server's large-object
 * functions in the caller's transaction, so a failed or cancelled command
 * leaves neither a row nor a large object behind.
 *
 * Reading for classification never writes anything: the bft.models row is
 * read with SPI as the calling user (so SELECT on bft.models governs who may
 * classify), and the weights are read straight from pg_largeobject's pages
 * with the statement's snapshot — what inv_read does internally, without
 * large-object ACL checks or any descriptor state.  This works in read-only
 * transactions, on hot standbys and in parallel workers.
 */
#include "bft_pg.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/pg_largeobject.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "libpq/be-fsstubs.h"
#include "libpq/libpq-fs.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/large_object.h"
#include "storage/proc.h"
#include "catalog/namespace.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#define BFT_CACHE_MAX 100

static BftModelEntry *cache = NULL;	/* BFT_CACHE_MAX slots in TopMemoryContext */
static uint64 cache_clock = 0;

/* Default-model resolution, remembered for one statement. */
static char default_name[NAMEDATALEN * 4];
static TimestampTz default_ts = 0;
static uint32 default_lxid = 0;

/* The current statement's key: start timestamp and local transaction id. */
static void
stmt_key(TimestampTz *ts, uint32 *lxid)
{
	*ts = GetCurrentStatementStartTimestamp();
#if PG_VERSION_NUM >= 170000
	*lxid = MyProc ? MyProc->vxid.lxid : 0;
#else
	*lxid = MyProc ? MyProc->lxid : 0;
#endif
}

/* Server-encoding text → UTF-8 bytes (the engine's encoding). */
char *
bft_to_utf8(const char *s, int len, int *outlen)
{
	char	   *r;

	if (GetDatabaseEncoding() == PG_UTF8 || GetDatabaseEncoding() == PG_SQL_ASCII)
	{
		*outlen = len;
		return (char *) s;
	}
	r = pg_server_to_any(s, len, PG_UTF8);
	*outlen = (r == s) ? len : (int) strlen(r);
	return r;
}

/* UTF-8 bytes (NUL-terminated or len) → palloc'd server-encoding string. */
char *
bft_from_utf8(const char *s, int len)
{
	char	   *r;

	if (GetDatabaseEncoding() == PG_UTF8)
	{
		pg_verifymbstr(s, len, false);
		return pnstrdup(s, len);
	}
	if (GetDatabaseEncoding() == PG_SQL_ASCII)
		return pnstrdup(s, len);
	r = pg_any_to_server(s, len, PG_UTF8);
	return (r == s) ? pnstrdup(s, len) : r;
}

/*
 * Read a whole large object by scanning its pg_largeobject pages with the
 * active snapshot.  Holes read as zeros.  Returns palloc'd (huge) bytes in
 * CurrentMemoryContext; *len receives the size.
 */
char *
bft_read_lo_pages(Oid loid, Size *len)
{
	Relation	rel;
	Relation	idx;
	ScanKeyData key;
	SysScanDesc sd;
	HeapTuple	tuple;
	Snapshot	snapshot;
	Size		total = 0;
	Size		pos = 0;
	char	   *buf;
	int			npages = 0;

	snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();
	rel = table_open(LargeObjectRelationId, AccessShareLock);
	idx = index_open(LargeObjectLOidPNIndexId, AccessShareLock);

	/* The last page gives the size. */
	ScanKeyInit(&key, Anum_pg_largeobject_loid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(loid));
	sd = systable_beginscan_ordered(rel, idx, snapshot, 1, &key);
	tuple = systable_getnext_ordered(sd, BackwardScanDirection);
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_largeobject f = (Form_pg_largeobject) GETSTRUCT(tuple);
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_largeobject_data,
									 RelationGetDescr(rel), &isnull);
		bytea	   *b = isnull ? NULL : DatumGetByteaPP(d);

		total = (Size) f->pageno * LOBLKSIZE + (b ? VARSIZE_ANY_EXHDR(b) : 0);
	}
	systable_endscan_ordered(sd);

	if (total + 1 > MaxAllocHugeSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("large object %u is too large to load", loid)));
	buf = MemoryContextAllocHuge(CurrentMemoryContext, total + 1);

	ScanKeyInit(&key, Anum_pg_largeobject_loid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(loid));
	sd = systable_beginscan_ordered(rel, idx, snapshot, 1, &key);
	while ((tuple = systable_getnext_ordered(sd, ForwardScanDirection)) != NULL)
	{
		Form_pg_largeobject f = (Form_pg_largeobject) GETSTRUCT(tuple);
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_largeobject_data,
									 RelationGetDescr(rel), &isnull);
		bytea	   *b;
		Size		off = (Size) f->pageno * LOBLKSIZE;
		Size		n;

		if (isnull)
			continue;
		b = DatumGetByteaPP(d);
		n = VARSIZE_ANY_EXHDR(b);
		if (off < pos || off + n > total)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("pg_largeobject entry for OID %u, page %d is inconsistent",
							loid, f->pageno)));
		if (off > pos)
			memset(buf + pos, 0, off - pos);
		memcpy(buf + off, VARDATA_ANY(b), n);
		pos = off + n;
		if ((Pointer) b != DatumGetPointer(d))
			pfree(b);
		if (++npages % 1024 == 0)
			CHECK_FOR_INTERRUPTS();
	}
	systable_endscan_ordered(sd);
	if (pos < total)
		memset(buf + pos, 0, total - pos);
	buf[total] = '\0';

	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	*len = total;
	return buf;
}

/*
 * Read a large object given by a client (import), through the ordinary
 * large-object functions so its ACL applies (SELECT on the large object).
 */
char *
bft_read_lo_checked(Oid loid, Size *len)
{
	int32		fd;
	int64		size;
	char	   *buf;
	Size		pos = 0;

	fd = DatumGetInt32(DirectFunctionCall2(be_lo_open, ObjectIdGetDatum(loid),
										   Int32GetDatum(INV_READ)));
	size = DatumGetInt64(DirectFunctionCall3(be_lo_lseek64, Int32GetDatum(fd),
											 Int64GetDatum(0), Int32GetDatum(SEEK_END)));
	if (size < 0 || (Size) size + 1 > MaxAllocHugeSize)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("large object %u is too large to load", loid)));
	DirectFunctionCall3(be_lo_lseek64, Int32GetDatum(fd), Int64GetDatum(0),
						Int32GetDatum(SEEK_SET));
	buf = MemoryContextAllocHuge(CurrentMemoryContext, (Size) size + 1);
	while (pos < (Size) size)
	{
		int			want = (int) Min((Size) size - pos, (Size) (1 << 20));
		int			got = lo_read(fd, buf + pos, want);

		if (got <= 0)
			break;
		pos += got;
		CHECK_FOR_INTERRUPTS();
	}
	DirectFunctionCall1(be_lo_close, Int32GetDatum(fd));
	buf[pos] = '\0';
	*len = pos;
	return buf;
}

/* Write bytes into a new large object (owned by the current user). */
Oid
bft_write_lo(const char *data, Size len)
{
	Oid			loid;
	int32		fd;
	Size		pos = 0;

	loid = DatumGetObjectId(DirectFunctionCall1(be_lo_create, ObjectIdGetDatum(InvalidOid)));
	fd = DatumGetInt32(DirectFunctionCall2(be_lo_open, ObjectIdGetDatum(loid),
										   Int32GetDatum(INV_WRITE)));
	while (pos < len)
	{
		int			n = (int) Min(len - pos, (Size) (1 << 20));

		if (lo_write(fd, data + pos, n) != n)
			ereport(ERROR,
					(errcode(ERRCODE_IO_ERROR),
					 errmsg("could not write large object %u", loid)));
		pos += n;
		CHECK_FOR_INTERRUPTS();
	}
	DirectFunctionCall1(be_lo_close, Int32GetDatum(fd));
	return loid;
}

/* Sequence length used for classification with this model. */
int
bft_model_max_length(const bft_model *m, int stored)
{
	int			P = m->cfg.max_position_embeddings;
	int			ml = stored > 0 ? stored :
		(m->cfg.tok.model_max_length > 0 ? m->cfg.tok.model_max_length : 512);

	if (ml > P)
		ml = P;
	if (ml < 2)
		ml = 2;
	return ml;
}

/* Free an engine model: a memory context reset callback. */
void
bft_free_model_cb(void *arg)
{
	bft_model **mp = (bft_model **) arg;

	if (*mp)
	{
		bft_model_free(*mp);
		*mp = NULL;
	}
}

/*
 * Load one version of a model from bft.models: the deployed version (or the
 * latest when none is deployed) when version is 0.  The row is read as the
 * calling user.  Returns an engine model the caller must free; raises
 * undefined_object when there is no such model.
 */
bft_model *
bft_load_model_row(const char *name, int32 version, int64 *row_id,
				   int32 *version_out, int *max_length)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	int			ret;
	HeapTuple	tup;
	TupleDesc	td;
	bool		isnull;
	char	   *config;
	char	   *vocab;
	char	   *tokcfg = NULL;
	int			vocab_len;
	Oid			weights;
	int			stored_ml = 0;
	char	   *st;
	Size		st_len;
	bft_model  *m;
	bft_error	err;
	MemoryContext oldcxt = CurrentMemoryContext;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);

	SPI_connect();
	ret = SPI_execute_with_args(
								"SELECT id, version, config::text, vocab, tokenizer_config::text, weights,"
								" (params->>'max_length')::int"
								" FROM bft.models WHERE name = $1 AND ($2 = 0 OR version = $2)"
								" ORDER BY deployed_at DESC NULLS LAST, version DESC LIMIT 1",
								2, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
	{
		if (version > 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("model \"%s\" version %d does not exist", name, version)));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name),
				 errhint("SELECT * FROM bft.model_list shows the models you can see.")));
	}
	tup = SPI_tuptable->vals[0];
	td = SPI_tuptable->tupdesc;
	if (row_id)
		*row_id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
	if (version_out)
		*version_out = DatumGetInt32(SPI_getbinval(tup, td, 2, &isnull));
	config = SPI_getvalue(tup, td, 3);
	vocab = SPI_getvalue(tup, td, 4);
	tokcfg = SPI_getvalue(tup, td, 5);
	weights = DatumGetObjectId(SPI_getbinval(tup, td, 6, &isnull));
	if (isnull || config == NULL || vocab == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model \"%s\" has no config, vocabulary or weights", name)));
	{
		Datum		d = SPI_getbinval(tup, td, 7, &isnull);

		if (!isnull)
			stored_ml = DatumGetInt32(d);
	}

	{
		int			clen,
					tlen = 0;
		char	   *c8 = bft_to_utf8(config, strlen(config), &clen);
		char	   *v8 = bft_to_utf8(vocab, strlen(vocab), &vocab_len);
		char	   *t8 = tokcfg ? bft_to_utf8(tokcfg, strlen(tokcfg), &tlen) : NULL;

		if (!LargeObjectExists(weights))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("weights of model \"%s\" (large object %u) do not exist", name, weights),
					 errhint("A pg_dump made with -B (--no-blobs), or with -n/-t/-e but without -b (--blobs), restores models without their weights.")));
		st = bft_read_lo_pages(weights, &st_len);
		bft_apply_threads();
		m = bft_model_load_mem(c8, clen, v8, vocab_len, t8, tlen, st, st_len, &err);
		pfree(st);
	}
	if (m == NULL)
	{
		char		msg[256];

		snprintf(msg, sizeof(msg), "could not load model \"%s\"", name);
		bft_report_engine_error(&err, msg);
	}
	if (max_length)
		*max_length = bft_model_max_length(m, stored_ml);
	SPI_finish();
	MemoryContextSwitchTo(oldcxt);
	return m;
}

/*
 * The default model name: bft.default_model, else the most recently
 * deployed model that has a classifier.  Resolved once per statement.
 */
char *
bft_resolve_default_model(void)
{
	TimestampTz ts;
	uint32		lxid;
	int			ret;

	if (bft_default_model && bft_default_model[0])
		return bft_default_model;
	stmt_key(&ts, &lxid);
	if (default_name[0] && ts == default_ts && lxid == default_lxid)
		return default_name;

	SPI_connect();
	ret = SPI_execute("SELECT name FROM bft.models WHERE deployed_at IS NOT NULL"
					  " AND cardinality(labels) > 0"
					  " ORDER BY deployed_at DESC, version DESC LIMIT 1", true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no model given and no deployed classification model exists"),
				 errhint("Train one with bft_train(), pass model => 'name', or set bft.default_model.")));
	strlcpy(default_name, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
			sizeof(default_name));
	SPI_finish();
	default_ts = ts;
	default_lxid = lxid;
	return default_name;
}

/* Forget every cached model (after a drop in this backend). */
void
bft_cache_invalidate_all(void)
{
	int			i;

	if (cache == NULL)
		return;
	bft_device_release();		/* the GPU copy of a cached model's weights */
	for (i = 0; i < BFT_CACHE_MAX; i++)
	{
		if (cache[i].model)
			bft_model_free(cache[i].model);
		if (cache[i].name)
			pfree(cache[i].name);
		memset(&cache[i], 0, sizeof(BftModelEntry));
	}
	default_name[0] = '\0';
}

/*
 * The model to classify with: the cached copy when it is still the deployed
 * version, checked once per statement; otherwise (re)loaded.  name NULL or
 * empty: the default model.  A deployment made by another session is seen
 * from the next statement on, never in the middle of one.
 */
BftModelEntry *
bft_get_model(const char *name)
{
	TimestampTz ts;
	uint32		lxid;
	int			i;
	int			n = bft_model_cache_size;
	BftModelEntry *e = NULL;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int			ret;
	int64		id;
	int32		version;
	TimestampTz created;
	Oid			weights;
	bool		isnull;
	char	   *name_copy;
	bft_model  *m;
	int64		loaded_id;
	int32		loaded_version;
	int			ml;
	bool		evicted = false;

	if (name == NULL || name[0] == '\0')
		name = bft_resolve_default_model();
	if (cache == NULL)
		cache = MemoryContextAllocZero(TopMemoryContext, sizeof(BftModelEntry) * BFT_CACHE_MAX);
	if (n > BFT_CACHE_MAX)
		n = BFT_CACHE_MAX;
	stmt_key(&ts, &lxid);

	for (i = 0; i < BFT_CACHE_MAX; i++)
		if (cache[i].name && strcmp(cache[i].name, name) == 0)
		{
			e = &cache[i];
			break;
		}
	if (e && e->checked_ts == ts && e->checked_lxid == lxid)
	{
		e->last_used = ++cache_clock;
		return e;
	}

	/* Which row is current for this name? */
	values[0] = CStringGetTextDatum(name);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT id, version, created_at, weights FROM bft.models WHERE name = $1"
								" ORDER BY deployed_at DESC NULLS LAST, version DESC LIMIT 1",
								1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name),
				 errhint("SELECT * FROM bft.model_list shows the models you can see.")));
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	created = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	weights = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	SPI_finish();

	if (e && e->row_id == id && e->row_created == created && e->row_weights == weights)
	{
		e->checked_ts = ts;
		e->checked_lxid = lxid;
		e->last_used = ++cache_clock;
		return e;
	}

	/* Load it; nothing can fail between the load and the cache insert. */
	name_copy = MemoryContextStrdup(TopMemoryContext, name);
	m = bft_load_model_row(name, version, &loaded_id, &loaded_version, &ml);

	if (e == NULL)
	{
		int			used = 0;
		BftModelEntry *lru = NULL;
		BftModelEntry *freeslot = NULL;

		for (i = 0; i < BFT_CACHE_MAX; i++)
		{
			if (cache[i].name)
			{
				used++;
				if (lru == NULL || cache[i].last_used < lru->last_used)
					lru = &cache[i];
			}
			else if (freeslot == NULL)
				freeslot = &cache[i];
		}
		if (used >= n || freeslot == NULL)
		{
			/* Evict the least recently used (repeat while over the limit). */
			e = lru;
		}
		else
			e = freeslot;
	}
	if (e->model)
	{
		bft_model_free(e->model);
		evicted = true;
	}
	if (e->name)
		pfree(e->name);
	e->name = name_copy;
	e->model = m;
	e->row_id = loaded_id;
	e->row_created = created;
	e->row_weights = weights;
	e->version = loaded_version;
	e->max_length = ml;
	e->checked_ts = ts;
	e->checked_lxid = lxid;
	e->last_used = ++cache_clock;

	/* bft.model_cache_size may have been lowered: trim. */
	for (;;)
	{
		int			used = 0;
		BftModelEntry *lru = NULL;

		for (i = 0; i < BFT_CACHE_MAX; i++)
			if (cache[i].name)
			{
				used++;
				if (&cache[i] != e && (lru == NULL || cache[i].last_used < lru->last_used))
					lru = &cache[i];
			}
		if (used <= n || lru == NULL)
			break;
		bft_model_free(lru->model);
		pfree(lru->name);
		memset(lru, 0, sizeof(BftModelEntry));
		evicted = true;
	}
	/* a replaced model's GPU copy (device cuda) goes back to the driver */
	if (evicted)
		bft_device_release();
#ifdef __GLIBC__
	/* give a replaced model's memory back to the OS */
	if (evicted)
		malloc_trim(0);
#endif
	return e;
}

/* palloc'd array of the model's K label names (server encoding). */
char	  **
bft_model_label_names(const bft_model *m)
{
	int			K = m->cfg.num_labels;
	char	  **names = palloc0(sizeof(char *) * (K > 0 ? K : 1));
	int			i;

	for (i = 0; i < K; i++)
	{
		char		buf[64];
		const char *s = bft_config_label(&m->cfg, i, buf, sizeof(buf));

		names[i] = bft_from_utf8(s, strlen(s));
	}
	return names;
}

/*
 * Fail fast, before any work, when the caller could not store a model:
 * INSERT on bft.models and USAGE on its id sequence are needed.
 */
void
bft_check_store_privileges(void)
{
	Oid			nsp = get_namespace_oid("bft", false);
	Oid			rel = get_relname_relid("models", nsp);
	Oid			seq = get_relname_relid("models_id_seq", nsp);

	if (!OidIsValid(rel) ||
		pg_class_aclcheck(rel, GetUserId(), ACL_INSERT | ACL_SELECT) != ACLCHECK_OK ||
		(OidIsValid(seq) && pg_class_aclcheck(seq, GetUserId(), ACL_USAGE) != ACLCHECK_OK))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to store models in bft.models"),
				 errhint("An administrator can run: GRANT SELECT, INSERT ON bft.models TO %s; "
						 "GRANT USAGE ON SEQUENCE bft.models_id_seq TO %s;",
						 GetUserNameFromId(GetUserId(), false),
						 GetUserNameFromId(GetUserId(), false))));
}

/* Serialise versions of one model name: the second training waits here. */
void
bft_lock_model_name(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(name);
	SPI_connect();
	if (SPI_execute_with_args("SELECT pg_advisory_xact_lock(hashtext('bft.models'), hashtext($1))",
							  1, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock model name");
	SPI_finish();
}

/*
 * Store m as a new version of name: weights into a new large object, one row
 * in bft.models, all in the caller's transaction.  deploy: mark it deployed.
 * Returns the version number.
 */
int32
bft_store_model(const char *name, const char *base, bft_model *m,
				const char *params_json, const char *metrics_json, bool deploy)
{
	bft_error	err;
	size_t		st_len = 0;
	void	   *st;
	Oid			loid = InvalidOid;
	char	   *cfg_json;
	char	   *tok_json;
	char	   *tmp;
	char	   *vocab;
	char	  **names;
	Datum	   *label_datums;
	ArrayType  *labels;
	int			K = m->cfg.num_labels;
	int			i;
	int32		version;
	bool		isnull;
	Oid			argtypes[13] = {TEXTOID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTARRAYOID,
	TEXTOID, OIDOID, TEXTOID, TEXTOID, BOOLOID, INT8OID, BOOLOID};
	Datum		values[13];
	char		nulls[13];
	int			ret;

	/* Serialise first: nothing is written if that fails. */
	tmp = bft_config_to_json(&m->cfg, m->parts.classifier, m->parts.mlm);
	if (tmp == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	cfg_json = bft_from_utf8(tmp, strlen(tmp));
	free(tmp);
	tmp = bft_tokenizer_config_to_json(&m->cfg);
	if (tmp == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	tok_json = bft_from_utf8(tmp, strlen(tmp));
	free(tmp);
	if (memchr(m->vocab, '\0', m->vocab_len) != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("vocabulary contains a NUL byte")));
	vocab = bft_from_utf8(m->vocab, (int) m->vocab_len);
	names = bft_model_label_names(m);
	label_datums = palloc(sizeof(Datum) * (K > 0 ? K : 1));
	for (i = 0; i < K; i++)
		label_datums[i] = CStringGetTextDatum(names[i]);
	labels = construct_array(label_datums, K, TEXTOID, -1, false, TYPALIGN_INT);

	st = bft_model_to_safetensors(m, &st_len, &err);
	if (st == NULL)
		bft_report_engine_error(&err, "could not serialise the model's weights");
	PG_TRY();
	{
		loid = bft_write_lo(st, st_len);
	}
	PG_FINALLY();
	{
		free(st);
	}
	PG_END_TRY();

	bft_lock_model_name(name);

	values[0] = CStringGetTextDatum(name);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT coalesce(max(version), 0) + 1 FROM bft.models WHERE name = $1",
								1, argtypes, values, NULL, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not assign a model version");
	version = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));

	memset(nulls, ' ', sizeof(nulls));
	values[1] = Int32GetDatum(version);
	values[2] = base ? CStringGetTextDatum(base) : (Datum) 0;
	nulls[2] = base ? ' ' : 'n';
	values[3] = CStringGetTextDatum(cfg_json);
	values[4] = CStringGetTextDatum(tok_json);
	values[5] = PointerGetDatum(labels);
	values[6] = CStringGetTextDatum(vocab);
	values[7] = ObjectIdGetDatum(loid);
	values[8] = CStringGetTextDatum(params_json ? params_json : "{}");
	values[9] = CStringGetTextDatum(metrics_json ? metrics_json : "{}");
	values[10] = BoolGetDatum(m->parts.mlm != 0);
	values[11] = Int64GetDatum((int64) st_len);
	values[12] = BoolGetDatum(deploy);
	ret = SPI_execute_with_args("INSERT INTO bft.models (name, version, base, config, tokenizer_config,"
								" labels, vocab, weights, params, metrics, has_mlm, size, deployed_at)"
								" VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, $6, $7, $8, $9::jsonb,"
								" $10::jsonb, $11, $12, CASE WHEN $13 THEN clock_timestamp() END)",
								13, argtypes, values, nulls, false, 0);
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not insert into bft.models: %s", SPI_result_code_string(ret));
	SPI_finish();
	return version;
}
