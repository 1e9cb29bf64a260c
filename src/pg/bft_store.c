/*
 * bft_store.c — the model store: bft.models rows plus large objects holding
 * the safetensors bytes, and the per-backend model cache.
 *
 * The store is a security boundary: bft reads weights without large-object
 * permission checks, so which object a row names must never be up to a
 * user.  Hence:
 *  - rows are written only by bft's own C code (a backend-local flag around
 *    its INSERT; the trigger bft.models_guard refuses every other INSERT and
 *    any UPDATE of a column but deployed_at, except by superusers, e.g.
 *    pg_restore);
 *  - weights are large objects owned by the extension's owner (the user id is
 *    switched only around creating and opening them), so no trainer can
 *    lo_write, lo_unlink or lo_export them, and UNIQUE (weights) makes every
 *    object belong to exactly one row;
 *  - deleting a row (bft_drop_model, or DELETE by a role allowed to) unlinks
 *    exactly its object (AFTER DELETE trigger), TRUNCATE and DROP EXTENSION
 *    unlink all of them, and only objects owned by the extension's owner are
 *    ever unlinked;
 *  - bft reads only objects owned by the extension's owner or a superuser.
 *
 * Writing (training, import) happens in the caller's transaction, so a failed
 * or cancelled command leaves neither a row nor a large object behind.
 *
 * Reading for classification never writes anything: which row a name means
 * is decided by SPI as the calling user (SELECT on id, name, version and
 * deployed_at, and row-level security, govern who may classify with what);
 * the rest of that row is then read directly (same snapshot), and the weights
 * straight from pg_largeobject's pages with the statement's snapshot — what
 * inv_read does internally, without large-object ACL checks or any
 * descriptor state.  This works in read-only transactions, on hot standbys
 * and in parallel workers.  Internal checks that must not be fooled by
 * row-level security (version numbers, whether a name is taken) scan the
 * table directly too.
 */
#include "bft_pg.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/indexing.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_largeobject.h"
#include "catalog/pg_largeobject_metadata.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/trigger.h"
#include "nodes/parsenodes.h"
#include "utils/datum.h"
#include "utils/jsonb.h"
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
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "resource.h"
#include "defaults.h"

#define BFT_CACHE_MAX 100

PG_FUNCTION_INFO_V1(bft_models_guard);
PG_FUNCTION_INFO_V1(bft_models_unlink);
PG_FUNCTION_INFO_V1(bft_models_truncate);
PG_FUNCTION_INFO_V1(bft_drop_guard);
PG_FUNCTION_INFO_V1(bft_copy_weights_sql);

/*
 * bft's own writes to bft.models: the weights oid of the one INSERT
 * bft_store_model is making, and a depth counter for bft's own UPDATEs.
 * Backend-local C state, never a setting a user could change.
 */
static Oid	trusted_insert_weights = InvalidOid;
static int	trusted_update_depth = 0;

static BftModelEntry *cache = NULL;	/* BFT_CACHE_MAX slots in TopMemoryContext */
static uint64 cache_clock = 0;
static Oid	models_relid_seen = InvalidOid;	/* bft.models, last looked up */

/* Default-model resolution, remembered for one statement and role. */
static char default_name[NAMEDATALEN * 4];
static TimestampTz default_ts = 0;
static uint32 default_lxid = 0;
static Oid	default_user = InvalidOid;

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


/* ---- catalog helpers ---- */

/* OID of bft.models (ERROR when the extension's table is missing). */
Oid
bft_models_relid(void)
{
	Oid			nsp = get_namespace_oid("bft", true);
	Oid			rel = OidIsValid(nsp) ? get_relname_relid("models", nsp) : InvalidOid;

	if (OidIsValid(rel))
		models_relid_seen = rel;
	if (!OidIsValid(rel))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table bft.models does not exist"),
				 errhint("CREATE EXTENSION bft, or ALTER EXTENSION bft UPDATE.")));
	return rel;
}

/*
 * The owner of extension bft (weights belong to this role) and whether the
 * installed SQL has the secured store (0.2.0 on: the guard triggers).  Under
 * the 0.1.0 SQL definitions this library keeps 0.1.0's model: weights belong
 * to the role that stored them, and bft_drop_model unlinks them itself (only
 * those its caller could lo_unlink).
 */
static Oid
extension_info(bool *secured)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc sd;
	HeapTuple	tup;
	Oid			owner = InvalidOid;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("bft"));
	sd = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(sd);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		v = heap_getattr(tup, Anum_pg_extension_extversion, RelationGetDescr(rel), &isnull);

		owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
		if (secured)
			*secured = isnull || strcmp(TextDatumGetCString(v), "0.1.0") != 0;
	}
	systable_endscan(sd);
	table_close(rel, AccessShareLock);
	if (!OidIsValid(owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"bft\" is not installed in this database")));
	return owner;
}

/* The owner of extension bft: weights belong to this role. */
Oid
bft_extension_owner(void)
{
	return extension_info(NULL);
}

/* Is the store secured (the SQL of bft 0.2.0 or later installed)? */
bool
bft_store_secured(void)
{
	bool		secured;

	(void) extension_info(&secured);
	return secured;
}

/* Owner of large object loid as of snapshot snap (NULL: catalog snapshot);
 * false when it does not exist. */
static bool
lo_owner(Oid loid, Snapshot snap, Oid *owner)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc sd;
	HeapTuple	tup;
	bool		found = false;

	rel = table_open(LargeObjectMetadataRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_largeobject_metadata_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(loid));
	sd = systable_beginscan(rel, LargeObjectMetadataOidIndexId, true, snap, 1, &key);
	tup = systable_getnext(sd);
	if (HeapTupleIsValid(tup))
	{
		*owner = ((Form_pg_largeobject_metadata) GETSTRUCT(tup))->lomowner;
		found = true;
	}
	systable_endscan(sd);
	table_close(rel, AccessShareLock);
	return found;
}

/* Attribute numbers of bft.models' columns (looked up by name: columns
 * added by later versions go at the end). */
typedef struct ModelsAtts
{
	Oid			relid;
	AttrNumber	id,
				name,
				version,
				config,
				tokenizer_config,
				labels,
				vocab,
				weights,
				size,
				params,
				has_mlm,
				created_at;
} ModelsAtts;

static ModelsAtts models_atts;

static AttrNumber
models_att(Oid relid, const char *col)
{
	AttrNumber	a = get_attnum(relid, col);

	if (a == InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_COLUMN),
				 errmsg("column \"%s\" of bft.models does not exist", col),
				 errhint("ALTER EXTENSION bft UPDATE.")));
	return a;
}

static const ModelsAtts *
get_models_atts(Oid relid)
{
	if (models_atts.relid != relid)
	{
		ModelsAtts	a;

		a.relid = relid;
		a.id = models_att(relid, "id");
		a.name = models_att(relid, "name");
		a.version = models_att(relid, "version");
		a.config = models_att(relid, "config");
		a.tokenizer_config = models_att(relid, "tokenizer_config");
		a.labels = models_att(relid, "labels");
		a.vocab = models_att(relid, "vocab");
		a.weights = models_att(relid, "weights");
		a.size = models_att(relid, "size");
		a.params = models_att(relid, "params");
		a.has_mlm = models_att(relid, "has_mlm");
		a.created_at = models_att(relid, "created_at");
		models_atts = a;
	}
	return &models_atts;
}

static char *
jsonb_datum_cstring(Datum d)
{
	Jsonb	   *jb = DatumGetJsonbP(d);

	return JsonbToCString(NULL, &jb->root, VARSIZE(jb));
}

/* Fill row from a bft.models tuple; full: also config, vocabulary etc. */
static void
row_from_tuple(HeapTuple tup, TupleDesc td, const ModelsAtts *a, bool full, BftModelRow *row)
{
	bool		isnull;
	Datum		d;

	memset(row, 0, sizeof(*row));
	row->id = DatumGetInt64(heap_getattr(tup, a->id, td, &isnull));
	row->version = DatumGetInt32(heap_getattr(tup, a->version, td, &isnull));
	row->weights = DatumGetObjectId(heap_getattr(tup, a->weights, td, &isnull));
	row->created_at = DatumGetTimestampTz(heap_getattr(tup, a->created_at, td, &isnull));
	d = heap_getattr(tup, a->labels, td, &isnull);
	if (!isnull)
	{
		ArrayType  *arr = DatumGetArrayTypeP(d);

		row->nlabels = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
	}
	d = heap_getattr(tup, a->size, td, &isnull);
	row->size = isnull ? -1 : DatumGetInt64(d);
	row->has_mlm = DatumGetBool(heap_getattr(tup, a->has_mlm, td, &isnull));
	if (!full)
		return;
	row->name = TextDatumGetCString(heap_getattr(tup, a->name, td, &isnull));
	d = heap_getattr(tup, a->config, td, &isnull);
	row->config = isnull ? NULL : jsonb_datum_cstring(d);
	d = heap_getattr(tup, a->tokenizer_config, td, &isnull);
	row->tokenizer_config = isnull ? NULL : jsonb_datum_cstring(d);
	d = heap_getattr(tup, a->vocab, td, &isnull);
	row->vocab = isnull ? NULL : TextDatumGetCString(d);
	d = heap_getattr(tup, a->params, td, &isnull);
	if (!isnull)
	{
		Jsonb	   *jb = DatumGetJsonbP(d);
		JsonbValue	v;

		if (getKeyJsonValueFromContainer(&jb->root, "max_length", strlen("max_length"), &v) != NULL &&
			v.type == jbvNumeric)
			row->max_length = DatumGetInt32(DirectFunctionCall1(numeric_int4,
																NumericGetDatum(v.val.numeric)));
		/* the embedding pooling stored at import: {"modes": ...} or {"unsupported": why} */
		if (getKeyJsonValueFromContainer(&jb->root, "pooling", strlen("pooling"), &v) != NULL &&
			v.type == jbvBinary)
		{
			JsonbValue	w;

			if (getKeyJsonValueFromContainer(v.val.binary.data, "unsupported", strlen("unsupported"), &w) != NULL &&
				w.type == jbvString)
				row->pooling = psprintf("unsupported:%.*s", w.val.string.len, w.val.string.val);
			else
				row->pooling = JsonbToCString(NULL, v.val.binary.data, v.val.binary.len);
		}
	}
}

/*
 * Read row id of bft.models with snapshot snap (NULL: the active one),
 * without privilege checks or row-level security: callers decide first,
 * as the calling user, that the row is theirs to use.  false if absent.
 */
static bool
model_row_read_snap(int64 id, bool full, BftModelRow *row, Snapshot snap)
{
	Oid			relid = bft_models_relid();
	const ModelsAtts *a = get_models_atts(relid);
	Relation	rel;
	Oid			pk;
	ScanKeyData key;
	SysScanDesc sd;
	HeapTuple	tup;
	bool		found = false;

	rel = table_open(relid, AccessShareLock);
	pk = RelationGetPrimaryKeyIndex(rel);
	ScanKeyInit(&key, a->id, BTEqualStrategyNumber, F_INT8EQ, Int64GetDatum(id));
	sd = systable_beginscan(rel, pk, OidIsValid(pk), snap, 1, &key);
	tup = systable_getnext(sd);
	if (HeapTupleIsValid(tup))
	{
		row_from_tuple(tup, RelationGetDescr(rel), a, full, row);
		found = true;
	}
	systable_endscan(sd);
	table_close(rel, AccessShareLock);
	return found;
}

bool
bft_model_row_read(int64 id, bool full, BftModelRow *row)
{
	return model_row_read_snap(id, full, row,
							   ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot());
}

/*
 * Every version of name (or of all names when name is NULL), as of snap,
 * whoever may see it: fills *weights (palloc'd, may be NULL) and returns the
 * count; *max_version receives the highest version.
 */
static int
scan_versions(const char *name, Snapshot snap, int32 *max_version, Oid **weights)
{
	Oid			relid = bft_models_relid();
	const ModelsAtts *a = get_models_atts(relid);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc sd;
	HeapTuple	tup;
	int			n = 0,
				cap = 16;

	if (max_version)
		*max_version = 0;
	if (weights)
		*weights = palloc(sizeof(Oid) * cap);
	rel = table_open(relid, AccessShareLock);
	if (name)
		ScanKeyInit(&key, a->name, BTEqualStrategyNumber, F_TEXTEQ, CStringGetTextDatum(name));
	sd = systable_beginscan(rel, InvalidOid, false, snap, name ? 1 : 0, &key);
	while ((tup = systable_getnext(sd)) != NULL)
	{
		bool		isnull;
		int32		v = DatumGetInt32(heap_getattr(tup, a->version, RelationGetDescr(rel), &isnull));

		if (max_version && v > *max_version)
			*max_version = v;
		if (weights)
		{
			if (n == cap)
			{
				cap *= 2;
				*weights = repalloc(*weights, sizeof(Oid) * cap);
			}
			(*weights)[n] = DatumGetObjectId(heap_getattr(tup, a->weights, RelationGetDescr(rel), &isnull));
		}
		n++;
	}
	systable_endscan(sd);
	table_close(rel, AccessShareLock);
	return n;
}

/* Unlink large object loid if it exists and belongs to the extension's
 * owner: a weights object of a deleted row. Anything else is left alone. */
static void
unlink_weights(Oid loid, Oid extowner)
{
	Oid			owner;

	if (!lo_owner(loid, NULL, &owner))
		return;
	if (owner != extowner)
	{
		ereport(NOTICE,
				(errmsg("large object %u is not owned by the owner of extension bft; it was left alone", loid)));
		return;
	}
	inv_drop(loid);
}

/* Unlink the weights of every row (TRUNCATE, DROP EXTENSION). */
static void
unlink_all_weights(void)
{
	Oid			nsp = get_namespace_oid("bft", true);
	Oid		   *weights;
	Oid			extowner;
	int			n,
				i;

	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid("models", nsp)))
		return;
	extowner = bft_extension_owner();
	n = scan_versions(NULL, GetLatestSnapshot(), NULL, &weights);
	for (i = 0; i < n; i++)
		unlink_weights(weights[i], extowner);
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
	/* the bytes, then the parameters (F32: up to twice an F16 file) */
	bft_memory_require((Size) size * 3, "importing these weights",
					   "Raise bft.max_memory if the server has the memory (superuser).");
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

/*
 * Write bytes into a new large object owned by owner (InvalidOid: the
 * current user).  The user id is switched to owner only around creating and
 * opening it (the permission check happens at open); the bytes are written
 * in 1 MB pieces between interrupt checks.  Returns its OID.
 */
static Oid
write_lo_as(const char *data, Size len, Oid owner)
{
	Oid			loid;
	LargeObjectDesc *desc;
	Oid			save_user;
	int			save_sec;
	Size		pos = 0;

	GetUserIdAndSecContext(&save_user, &save_sec);
	if (OidIsValid(owner))
		SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		loid = inv_create(InvalidOid);
		desc = inv_open(loid, INV_WRITE, CurrentMemoryContext);
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_user, save_sec);
	}
	PG_END_TRY();
	while (pos < len)
	{
		int			n = (int) Min(len - pos, (Size) (1 << 20));

		if (inv_write(desc, data + pos, n) != n)
			ereport(ERROR,
					(errcode(ERRCODE_IO_ERROR),
					 errmsg("could not write large object %u", loid)));
		pos += n;
		CHECK_FOR_INTERRUPTS();
	}
	inv_close(desc);
	/* inv_write opened pg_largeobject for the transaction; the lo_* functions
	 * close it at commit, direct inv_* users must do it themselves */
	close_lo_relation(true);
	return loid;
}

/* Write weights into a new large object owned by the extension's owner
 * (under the 0.1.0 SQL: by the current user, as 0.1.0 did). */
Oid
bft_write_lo(const char *data, Size len)
{
	bool		secured;
	Oid			owner = extension_info(&secured);

	return write_lo_as(data, len, secured ? owner : InvalidOid);
}

/*
 * Under the 0.1.0 SQL (no unlink trigger): unlink the weights of rows
 * bft_drop_model deleted, but only objects the caller could lo_unlink
 * itself (its own, or any for a superuser) and no other row names.
 */
void
bft_unlink_dropped_weights(const Oid *loids, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		Oid			owner;
		Oid		   *refs;
		int			k,
					nrefs,
					still = 0;

		bft_shcache_forget_at_commit(loids[i]);
		if (!lo_owner(loids[i], NULL, &owner))
			continue;
		if (owner != GetUserId() && !superuser())
			continue;
		nrefs = scan_versions(NULL, GetLatestSnapshot(), NULL, &refs);
		for (k = 0; k < nrefs; k++)
			if (refs[k] == loids[i])
				still = 1;
		if (!still)
			inv_drop(loids[i]);
	}
	CacheInvalidateRelcacheByRelid(bft_models_relid());
}

/*
 * A model reference: "name" (the deployed version, or the latest when none
 * is deployed), "name@N" (version N) or "name@latest" (the highest version
 * the caller can see).  The suffix is split off only when it is one of
 * those; "a@b" is the name "a@b".  Returns the palloc'd name; *version
 * receives BFT_VERSION_DEPLOYED, BFT_VERSION_LATEST or N.
 */
char *
bft_parse_model_ref(const char *ref, int32 *version)
{
	const char *at = strrchr(ref, '@');

	*version = BFT_VERSION_DEPLOYED;
	if (at && at > ref)
	{
		const char *s = at + 1;

		if (strcmp(s, "latest") == 0)
		{
			*version = BFT_VERSION_LATEST;
			return pnstrdup(ref, at - ref);
		}
		if (*s >= '0' && *s <= '9')
		{
			const char *d = s;
			int64		v = 0;

			for (; *d >= '0' && *d <= '9'; d++)
				v = Min(v * 10 + (*d - '0'), (int64) PG_INT32_MAX + 1);
			if (*d == '\0')
			{
				if (v < 1 || v > PG_INT32_MAX)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("invalid model version in \"%s\"", ref),
							 errhint("Versions are positive integers: 'name@3', or 'name@latest'.")));
				*version = (int32) v;
				return pnstrdup(ref, at - ref);
			}
		}
	}
	return pstrdup(ref);
}

/*
 * The version a function with both a model reference and a version
 * argument uses: the argument when the reference names none, the
 * reference's when the argument is NULL; both must agree otherwise.
 */
int32
bft_ref_version(const char *ref, int32 ref_version, bool arg_null, int32 arg)
{
	if (arg_null)
		return ref_version;
	if (arg <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("version must be positive")));
	if (ref_version != BFT_VERSION_DEPLOYED && ref_version != arg)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model \"%s\" names another version than version => %d", ref, arg)));
	return arg;
}

/* A name under which new versions may be stored: no '@' (see bft_parse_model_ref). */
void
bft_check_model_name(const char *name)
{
	if (name[0] == '\0' || strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name must have 1 to 63 bytes")));
	if (strchr(name, '@'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name \"%s\" contains '@'", name),
				 errdetail("'name@N' and 'name@latest' refer to versions of a model."),
				 errhint("New versions are stored under the plain name; bft_train returns their number.")));
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
 * The row that name (and version: BFT_VERSION_DEPLOYED, the deployed version
 * or the latest when none is deployed; BFT_VERSION_LATEST, the highest; or a
 * version number) means to the calling user: SPI as the caller, so SELECT
 * on bft.models' id, name, version and deployed_at, and row-level security,
 * decide.  Raises undefined_object when the caller sees no such model.
 * Returns the row's id; *version_out receives its version.
 */
int64
bft_find_model(const char *name, int32 version, int32 *version_out)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	int			ret;
	bool		isnull;
	int64		id;

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	SPI_connect();
	ret = SPI_execute_with_args("SELECT id, version FROM bft.models"
								" WHERE name OPERATOR(pg_catalog.=) $1"
								" AND ($2 OPERATOR(pg_catalog.<=) 0 OR version OPERATOR(pg_catalog.=) $2)"
								" ORDER BY CASE WHEN $2 OPERATOR(pg_catalog.=) 0 THEN deployed_at END DESC NULLS LAST,"
								" version DESC LIMIT 1",
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
	id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (version_out)
		*version_out = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2,
												   &isnull));
	SPI_finish();
	return id;
}

/* Size of large object loid from its last page (active snapshot); -1 if absent. */
static int64
lo_size(Oid loid)
{
	Relation	rel;
	Relation	idx;
	ScanKeyData key;
	SysScanDesc sd;
	HeapTuple	tuple;
	int64		total = -1;
	Snapshot	snapshot = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();

	rel = table_open(LargeObjectRelationId, AccessShareLock);
	idx = index_open(LargeObjectLOidPNIndexId, AccessShareLock);
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

		total = (int64) f->pageno * LOBLKSIZE + (isnull ? 0 : VARSIZE_ANY_EXHDR(DatumGetByteaPP(d)));
	}
	systable_endscan_ordered(sd);
	index_close(idx, AccessShareLock);
	table_close(rel, AccessShareLock);
	return total;
}

/*
 * The weights object of row: it must exist and belong to the extension's
 * owner (or a superuser); bft never reads another object.  Returns its size.
 */
static int64
check_weights(const BftModelRow *row, const char *name)
{
	Oid			owner;
	Oid			extowner = bft_extension_owner();
	Snapshot	snap = ActiveSnapshotSet() ? GetActiveSnapshot() : GetTransactionSnapshot();

	if (!lo_owner(row->weights, snap, &owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("weights of model \"%s\" (large object %u) do not exist", name, row->weights),
				 errhint("A pg_dump made with -B (--no-blobs), or with -n/-t/-e but without -b (--blobs), restores models without their weights.")));
	if (owner != extowner && !superuser_arg(owner) && bft_store_secured())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("weights of model \"%s\" version %d (large object %u) do not belong to the owner of extension bft",
						name, row->version, row->weights),
				 errdetail("bft reads only weights it stored itself. ALTER EXTENSION bft UPDATE leaves alone rows written before bft 0.2.0 whose large object belonged to another role than their creator."),
				 errhint("If that object really holds these weights, a superuser can adopt it: ALTER LARGE OBJECT %u OWNER TO %s;",
						 row->weights, quote_identifier(GetUserNameFromId(extowner, false)))));
	return lo_size(row->weights);
}

/*
 * Row id of bft.models read in full into *row, with what every load needs:
 * its config and vocabulary, and its weights object (check_weights).  Returns
 * the object's size.
 */
static int64
read_loadable_row(int64 id, const char *name, BftModelRow *row)
{
	if (!bft_model_row_read(id, true, row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name)));
	if (row->config == NULL || row->vocab == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("model \"%s\" has no config or vocabulary", name)));
	return check_weights(row, name);
}

/*
 * Load the model of bft.models row id (found with bft_find_model: the
 * caller's right to use it is already established).  The memory for loading
 * plus extra bytes is checked against bft.max_memory first.  Errors about a
 * malformed object never show its bytes.  Returns an engine model the
 * caller must free; *max_length receives its classification length.
 */
bft_model *
bft_load_model_id(int64 id, const char *name, Size extra, int *max_length, char **pooling)
{
	BftModelRow row;
	int64		size;
	char	   *st;
	Size		st_len;
	bft_model  *m;
	bft_error	err;
	int			clen,
				vlen,
				tlen = 0;
	char	   *c8,
			   *v8,
			   *t8 = NULL;

	size = read_loadable_row(id, name, &row);
	/* the object's bytes, the parameters (as many: F32) and the vocabulary */
	bft_memory_require((Size) size * 2 + strlen(row.vocab) * 3 + extra, psprintf("model \"%s\"", name),
					   "Lower bft.model_cache_size or use a smaller model; a superuser can raise bft.max_memory.");
	c8 = bft_to_utf8(row.config, strlen(row.config), &clen);
	v8 = bft_to_utf8(row.vocab, strlen(row.vocab), &vlen);
	if (row.tokenizer_config)
		t8 = bft_to_utf8(row.tokenizer_config, strlen(row.tokenizer_config), &tlen);
	st = bft_read_lo_pages(row.weights, &st_len);
	bft_apply_threads();
	bft_engine_budget();
	m = bft_model_load_mem(c8, clen, v8, vlen, t8, tlen, st, st_len, &err);
	pfree(st);
	if (m == NULL)
	{
		char		msg[256];

		snprintf(msg, sizeof(msg), "could not load model \"%s\"", name);
		bft_engine_interrupt_rethrow();
		if (err.code == BFT_ENOMEM || err.code == BFT_ECANCEL || err.code == BFT_EDEVICE)
			bft_report_engine_error(&err, msg);
		/* the engine's message may quote the object's header: not shown */
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("%s", msg),
				 errdetail("Version %d's config, vocabulary and weights (large object %u, %zu bytes) do not form a valid model.",
						   row.version, row.weights, st_len)));
	}
	if (max_length)
		*max_length = bft_model_max_length(m, row.max_length);
	if (pooling)
		*pooling = row.pooling;
	return m;
}

/*
 * Load one version of a model from bft.models: the deployed version (or the
 * latest when none is deployed) when version is 0.  Which row is decided as
 * the calling user (bft_find_model).  Returns an engine model the caller
 * must free; raises undefined_object when there is no such model.
 */
bft_model *
bft_load_model_row(const char *name, int32 version, int64 *row_id,
				   int32 *version_out, int *max_length)
{
	int32		v;
	int64		id = bft_find_model(name, version, &v);

	if (row_id)
		*row_id = id;
	if (version_out)
		*version_out = v;
	return bft_load_model_id(id, name, 0, max_length, NULL);
}

/* FNV-1a of the parameter layout (names, shapes, offsets): a shared copy is
 * used only by a build of bft that lays the parameters out the same way. */
static uint64
layout_hash(const bft_config *cfg, bft_parts parts)
{
	int			n = 0,
				i;
	bft_tensor_info *list = bft_params_tensors(cfg, parts, &n);
	uint64		h = UINT64CONST(14695981039346656037);

	if (list == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	for (i = 0; i < n; i++)
	{
		const unsigned char *p = (const unsigned char *) list[i].name;
		uint64		v[4] = {list[i].offset, list[i].numel, (uint64) list[i].shape[0], (uint64) list[i].shape[1]};
		const unsigned char *q = (const unsigned char *) v;
		size_t		j;

		for (; *p; p++)
			h = (h ^ *p) * UINT64CONST(1099511628211);
		for (j = 0; j < sizeof(v); j++)
			h = (h ^ q[j]) * UINT64CONST(1099511628211);
	}
	free(list);
	return h;
}

/*
 * The model of row (read in full) from its shared copy, if one is published:
 * mapped read-only, checked against bft.max_memory like a private copy of the
 * same model (sharing changes what the server spends, not what a session may
 * use).  NULL when there is no usable copy (the caller loads one).
 */
static bft_model *
map_shared(const BftShKey *k, const BftModelRow *row, const char *name, int *max_length, BftShMap *map)
{
	BftShHeader h;
	bft_model  *volatile m = NULL;
	bft_error	err;

	if (!bft_shcache_attach(k, map, &h))
		return NULL;
	err.code = BFT_OK;
	PG_TRY();
	{
		int			clen,
					vlen,
					tlen = 0;
		char	   *c8,
				   *v8,
				   *t8 = NULL;

		bft_memory_require((Size) h.num_params * sizeof(float) + strlen(row->vocab) * 3,
						   psprintf("model \"%s\"", name),
						   "Lower bft.model_cache_size or use a smaller model; a superuser can raise bft.max_memory.");
		c8 = bft_to_utf8(row->config, strlen(row->config), &clen);
		v8 = bft_to_utf8(row->vocab, strlen(row->vocab), &vlen);
		if (row->tokenizer_config)
			t8 = bft_to_utf8(row->tokenizer_config, strlen(row->tokenizer_config), &tlen);
		bft_apply_threads();
		bft_engine_budget();
		m = bft_model_wrap_params(c8, clen, v8, vlen, t8, tlen, h.parts, h.num_labels, h.params,
								  h.num_params, &err);
		if (m && layout_hash(&m->cfg, m->parts) != h.layout)
		{
			bft_model_free(m);
			m = NULL;
		}
	}
	PG_CATCH();
	{
		if (m)
			bft_model_free(m);
		bft_shcache_detach(map);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (m == NULL)
	{
		bft_shcache_detach(map);
		bft_engine_interrupt_rethrow();
		if (err.code == BFT_ENOMEM || err.code == BFT_ECANCEL)
			bft_report_engine_error(&err, psprintf("could not load model \"%s\"", name));
		/* not a copy of this row as this build reads it: load a private one */
		return NULL;
	}
	*max_length = bft_model_max_length(m, row->max_length);
	return m;
}

/*
 * The model of bft.models row id (found with bft_find_model: the caller's
 * right to use it is already established) for the per-backend cache: its
 * server-wide shared copy mapped read-only when there is one, else loaded
 * (bft_load_model_id) and then published as the shared copy for every other
 * backend.  While one backend loads a version the others needing it wait for
 * its copy.  A private copy when the shared cache is off
 * (bft.shared_cache_size = 0) or full of models in use.  *map receives the
 * mapping the model points into (addr NULL: private), *pooling the row's stored
 * embedding pooling (NULL when none).
 */
static bft_model *
load_model_cached(int64 id, const char *name, int *max_length, BftShMap *map, char **pooling)
{
	BftModelRow row;
	BftShKey	k;
	bft_model  *volatile m;
	BftShHeader h;
	bool		published = false;

	map->addr = NULL;
	map->fd = -1;
	map->len = 0;
	*pooling = NULL;
	if (!bft_shcache_enabled())
		return bft_load_model_id(id, name, 0, max_length, pooling);
	/* the checks a load makes, whether or not the bytes come from a copy */
	(void) read_loadable_row(id, name, &row);
	*pooling = row.pooling;
	k.db = MyDatabaseId;
	k.weights = row.weights;
	k.id = id;
	k.created = row.created_at;
	if ((m = map_shared(&k, &row, name, max_length, map)) != NULL)
		return m;

	/* one backend loads and publishes it; the others wait, then map it */
	bft_shcache_lock_key(&k);
	if ((m = map_shared(&k, &row, name, max_length, map)) != NULL)
	{
		bft_shcache_unlock_key(&k);
		return m;
	}
	/* a copy this backend could not use would stand in the way of its own */
	bft_shcache_discard(&k);
	bft_shcache_sweep_dropped_databases();
	m = bft_load_model_id(id, name, 0, max_length, pooling);
	PG_TRY();
	{
		bft_error	err;
		uint64		layout = layout_hash(&m->cfg, m->parts);

		if (bft_shcache_publish(&k, m, layout, map, &h))
		{
			published = h.num_params == m->num_params && h.layout == layout &&
				bft_model_share_params(m, h.params, h.num_params, &err) == 0;
			if (!published)
				bft_shcache_detach(map);
		}
		bft_shcache_unlock_key(&k);

		/*
		 * A drop that committed while this backend was loading has already
		 * unlinked the copies of the row; the one just published would
		 * outlive it.  (A parallel operation cannot take a new snapshot; its
		 * copy goes when the cache needs the room.)
		 */
		if (published && !IsInParallelMode() &&
			!model_row_read_snap(id, false, &row, GetLatestSnapshot()))
			bft_shcache_unlink_key(&k);
	}
	PG_CATCH();
	{
		bft_model_free(m);
		bft_shcache_detach(map);
		PG_RE_THROW();
	}
	PG_END_TRY();
	return m;
}

/* A cache entry used by the current statement must stay. */
static bool
entry_pinned(const BftModelEntry *e)
{
	TimestampTz ts;
	uint32		lxid;

	stmt_key(&ts, &lxid);
	return e->checked_ts == ts && e->checked_lxid == lxid;
}

/*
 * Another cache entry holding the same engine model as e (two references to
 * one version, e.g. 'topics' and 'topics@3' while 3 is deployed, share it).
 */
static BftModelEntry *
model_sharer(const BftModelEntry *e)
{
	int			i;

	for (i = 0; i < BFT_CACHE_MAX; i++)
		if (&cache[i] != e && cache[i].name && cache[i].model == e->model)
			return &cache[i];
	return NULL;
}

/* Drop e's reference to its model (and to the shared copy it maps), freeing it
 * unless another entry shares it. */
static void
release_model(BftModelEntry *e)
{
	/* the shared copy's mapping goes with the last entry using the model */
	if (e->model && model_sharer(e) == NULL)
	{
		bft_model_free(e->model);
		bft_shcache_detach(&e->shared);
	}
	e->model = NULL;
	e->shared.addr = NULL;
	e->shared.fd = -1;
	e->shared.len = 0;
}

static void
evict(BftModelEntry *e)
{
	release_model(e);
	if (e->name)
		pfree(e->name);
	if (e->pooling)
		pfree(e->pooling);
	memset(e, 0, sizeof(BftModelEntry));
}

/*
 * Let go of shared copies that were unlinked (their model dropped, or the
 * copy evicted) unless the current statement uses them.  Returns whether any
 * went.
 */
static bool
release_unlinked(void)
{
	bool		any = false;
	int			i;

	if (cache == NULL)
		return false;
	for (i = 0; i < BFT_CACHE_MAX; i++)
		if (cache[i].name && cache[i].shared.addr && !entry_pinned(&cache[i]) &&
			bft_shcache_unlinked(&cache[i].shared))
		{
			evict(&cache[i]);
			any = true;
		}
	if (any)
		bft_device_release();
	return any;
}

/*
 * bft.models changed (a drop commits a relcache invalidation of it, and wakes
 * idle backends to read it): this backend lets go of the copies that went,
 * even if it never classifies again.
 */
static void
models_inval_cb(Datum arg, Oid relid)
{
	if (OidIsValid(relid) && relid != models_relid_seen)
		return;
	(void) release_unlinked();
}

/* Called once from _PG_init. */
void
bft_cache_register_callbacks(void)
{
	CacheRegisterRelcacheCallback(models_inval_cb, (Datum) 0);
}

/* Bytes of the models this backend has cached (a shared model counted once). */
Size
bft_cache_bytes(void)
{
	Size		total = 0;
	int			i,
				j;

	if (cache == NULL)
		return 0;
	for (i = 0; i < BFT_CACHE_MAX; i++)
	{
		bool		seen = false;

		if (!cache[i].name)
			continue;
		for (j = 0; j < i && !seen; j++)
			seen = cache[j].name && cache[j].model == cache[i].model;
		if (!seen)
			total += cache[i].bytes;
	}
	return total;
}

/*
 * Evict least recently used models not used by the current statement until
 * the cache holds at most target bytes.  Returns the bytes still cached.
 */
Size
bft_cache_make_room(Size target)
{
	Size		total = bft_cache_bytes();
	bool		evicted = false;

	while (total > target)
	{
		BftModelEntry *lru = NULL;
		int			i;

		for (i = 0; i < BFT_CACHE_MAX; i++)
			if (cache[i].name && !entry_pinned(&cache[i]) &&
				(lru == NULL || cache[i].last_used < lru->last_used))
				lru = &cache[i];
		if (lru == NULL)
			break;
		evict(lru);
		total = bft_cache_bytes();
		evicted = true;
	}
	if (evicted)
	{
		bft_device_release();
#ifdef __GLIBC__
		malloc_trim(0);
#endif
	}
	return total;
}

/*
 * The default model name: bft.default_model, else the most recently
 * deployed model that has a classifier, among the rows the caller may see.
 * Resolved once per statement and role.
 */
char *
bft_resolve_default_model(void)
{
	TimestampTz ts;
	uint32		lxid;
	Portal		portal;
	bool		found = false;

	if (bft_default_model && bft_default_model[0])
		return bft_default_model;
	stmt_key(&ts, &lxid);
	if (default_name[0] && ts == default_ts && lxid == default_lxid && default_user == GetUserId())
		return default_name;

	SPI_connect();
	portal = SPI_cursor_open_with_args(NULL,
									   "SELECT id, name FROM bft.models WHERE deployed_at IS NOT NULL"
									   " ORDER BY deployed_at DESC, version DESC",
									   0, NULL, NULL, NULL, true, 0);
	while (!found)
	{
		uint64		i;

		SPI_cursor_fetch(portal, true, 64);
		if (SPI_processed == 0)
			break;
		for (i = 0; i < SPI_processed && !found; i++)
		{
			bool		isnull;
			BftModelRow row;
			int64		id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 1, &isnull));

			if (bft_model_row_read(id, false, &row) && row.nlabels > 0)
			{
				strlcpy(default_name, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2),
						sizeof(default_name));
				found = true;
			}
		}
	}
	SPI_cursor_close(portal);
	SPI_finish();
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no model given and no deployed classification model exists"),
				 errhint("Train one with bft_train(), pass model => 'name', or set bft.default_model.")));
	default_ts = ts;
	default_lxid = lxid;
	default_user = GetUserId();
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
		evict(&cache[i]);
	default_name[0] = '\0';
}

/* The cached entry of a reference (name, want), or NULL. */
static BftModelEntry *
cache_lookup(const char *name, int32 want)
{
	int			i;

	for (i = 0; i < BFT_CACHE_MAX; i++)
		if (cache[i].name && cache[i].want == want && strcmp(cache[i].name, name) == 0)
			return &cache[i];
	return NULL;
}

/* Checked for this statement and role: no catalog look-up until the next. */
static void
entry_checked(BftModelEntry *e, TimestampTz ts, uint32 lxid, Oid user)
{
	e->checked_ts = ts;
	e->checked_lxid = lxid;
	e->checked_user = user;
	e->last_used = ++cache_clock;
}

/* A model and what comes with it, loaded or shared with another entry. */
typedef struct CacheLoad
{
	bft_model  *m;
	int			max_length;
	BftShMap	map;
	char	   *pooling;		/* in TopMemoryContext, or NULL */
} CacheLoad;

/*
 * The model of row id (the row read as row): shared with another reference
 * to the same row (e.g. 'x' and 'x@3') when one is cached, else loaded.
 */
static void
cache_load(int64 id, const char *name, const BftModelRow *row, CacheLoad *ld)
{
	BftModelEntry *other = NULL;
	int			i;

	for (i = 0; i < BFT_CACHE_MAX && other == NULL; i++)
		if (cache[i].name && cache[i].row_id == id && cache[i].row_created == row->created_at &&
			cache[i].row_weights == row->weights)
			other = &cache[i];
	if (other)
	{
		ld->m = other->model;
		ld->max_length = other->max_length;
		ld->map = other->shared;
		ld->pooling = other->pooling ? MemoryContextStrdup(TopMemoryContext, other->pooling) : NULL;
		other->last_used = ++cache_clock;	/* not the one evicted for room below */
		return;
	}
	ld->pooling = NULL;
	ld->m = load_model_cached(id, name, &ld->max_length, &ld->map, &ld->pooling);
	if (ld->pooling)
		ld->pooling = MemoryContextStrdup(TopMemoryContext, ld->pooling);
}

/* A slot for a new entry: a free one, or the least recently used when n are in use. */
static BftModelEntry *
cache_slot(int n)
{
	int			used = 0;
	int			i;
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
	return (used >= n || freeslot == NULL) ? lru : freeslot;
}

/* bft.model_cache_size may have been lowered: evict (never keep) down to n entries. True if any went. */
static bool
cache_trim(const BftModelEntry *keep, int n)
{
	bool		evicted = false;

	for (;;)
	{
		int			used = 0;
		int			i;
		BftModelEntry *lru = NULL;

		for (i = 0; i < BFT_CACHE_MAX; i++)
			if (cache[i].name)
			{
				used++;
				if (&cache[i] != keep && (lru == NULL || cache[i].last_used < lru->last_used))
					lru = &cache[i];
			}
		if (used <= n || lru == NULL)
			return evicted;
		evict(lru);
		evicted = true;
	}
}

/*
 * Fill slot e with the reference (name_copy, in TopMemoryContext; want) →
 * row id (version) and its model.  True if e's previous model went.
 */
static bool
entry_fill(BftModelEntry *e, char *name_copy, int32 want, int64 id, int32 version,
		   const BftModelRow *row, const CacheLoad *ld)
{
	bool		evicted = false;

	if (e->model && e->model != ld->m)
	{
		release_model(e);
		evicted = true;
	}
	if (e->name)
		pfree(e->name);
	if (e->pooling)
		pfree(e->pooling);
	e->name = name_copy;
	e->pooling = ld->pooling;
	e->want = want;
	e->model = ld->m;
	e->shared = ld->map;
	e->bytes = bft_mem_model_bytes(&ld->m->cfg, ld->m->parts, ld->m->vocab_len);
	e->row_id = id;
	e->row_created = row->created_at;
	e->row_weights = row->weights;
	e->version = version;
	e->max_length = ld->max_length;
	return evicted;
}

/* After a model left the cache: its GPU copy and its memory go back to the driver and the OS. */
static void
after_eviction(void)
{
	/* a replaced model's GPU copy (device cuda) goes back to the driver */
	bft_device_release();
#ifdef __GLIBC__
	/* give a replaced model's memory back to the OS */
	malloc_trim(0);
#endif
}

/*
 * The model to classify with: the cached copy when it is still the row the
 * calling user's reference resolves to, checked once per statement and role
 * (a SECURITY DEFINER function or SET ROLE inside a statement is checked
 * again); otherwise (re)loaded.  ref: "name", "name@N" or "name@latest"
 * (bft_parse_model_ref); NULL or empty: the default model.  A deployment
 * made by another session is seen from the next statement on, never in the
 * middle of one.
 */
BftModelEntry *
bft_get_model(const char *ref)
{
	char	   *name;
	int32		want;
	TimestampTz ts;
	uint32		lxid;
	Oid			user = GetUserId();
	int			n = Min(bft_model_cache_size, BFT_CACHE_MAX);
	BftModelEntry *e;
	int64		id;
	int32		version;
	BftModelRow row;
	CacheLoad	ld;
	char	   *name_copy;
	bool		evicted;

	if (ref == NULL || ref[0] == '\0')
		ref = bft_resolve_default_model();
	name = bft_parse_model_ref(ref, &want);
	if (cache == NULL)
		cache = MemoryContextAllocZero(TopMemoryContext, sizeof(BftModelEntry) * BFT_CACHE_MAX);
	evicted = release_unlinked();
	stmt_key(&ts, &lxid);
	e = cache_lookup(name, want);
	if (e && e->checked_ts == ts && e->checked_lxid == lxid && e->checked_user == user)
	{
		e->last_used = ++cache_clock;
		return e;
	}

	/* Which row is current for this reference, as this user sees it? */
	id = bft_find_model(name, want, &version);
	if (!bft_model_row_read(id, false, &row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name)));
	if (e && e->row_id == id && e->row_created == row.created_at && e->row_weights == row.weights)
	{
		entry_checked(e, ts, lxid, user);
		return e;
	}

	/* Load it; nothing can fail between the load and the cache insert. */
	if (e)
	{
		/* the stale copy of this reference goes first */
		evict(e);
		evicted = true;
	}
	name_copy = MemoryContextStrdup(TopMemoryContext, name);
	cache_load(id, name, &row, &ld);
	if (e == NULL || e->name != NULL)
		e = cache_slot(n);
	evicted |= entry_fill(e, name_copy, want, id, version, &row, &ld);
	entry_checked(e, ts, lxid, user);
	evicted |= cache_trim(e, n);
	if (evicted)
		after_eviction();
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

/* The error for a role that may not store models. */
static void
store_denied(const char *why)
{
	const char *u = GetUserNameFromId(GetUserId(), false);

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to store models in bft.models"),
			 errdetail("%s", why),
			 errhint("An administrator can run: GRANT SELECT, INSERT ON bft.models TO %s; "
					 "GRANT USAGE ON SEQUENCE bft.models_id_seq TO %s;",
					 quote_identifier(u), quote_identifier(u))));
}

/*
 * Fail fast, before any work, when the caller could not store a version of
 * name: INSERT and SELECT on bft.models and USAGE on its id sequence are
 * needed (each of them), and the name must not be used by versions the
 * caller cannot see (row-level security): a version stored under it would
 * mix owners.  name NULL: privileges only.
 */
void
bft_check_store(const char *name)
{
	Oid			rel = bft_models_relid();
	Oid			seq = get_relname_relid("models_id_seq", get_rel_namespace(rel));
	Oid			user = GetUserId();

	if (pg_class_aclcheck(rel, user, ACL_INSERT) != ACLCHECK_OK)
		store_denied("Storing a model needs INSERT on bft.models.");
	if (pg_class_aclcheck(rel, user, ACL_SELECT) != ACLCHECK_OK)
		store_denied("Storing a model needs SELECT on bft.models (version numbers and deployment read it).");
	if (OidIsValid(seq) && pg_class_aclcheck(seq, user, ACL_USAGE) != ACLCHECK_OK)
		store_denied("Storing a model needs USAGE on the sequence bft.models_id_seq.");
	if (name)
	{
		Oid			argtypes[1] = {TEXTOID};
		Datum		values[1];
		int64		visible;
		bool		isnull;
		int			all = scan_versions(name, GetLatestSnapshot(), NULL, NULL);

		if (all == 0)
			return;
		values[0] = CStringGetTextDatum(name);
		SPI_connect();
		if (SPI_execute_with_args("SELECT pg_catalog.count(*) FROM bft.models WHERE name OPERATOR(pg_catalog.=) $1",
								  1, argtypes, values, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read bft.models");
		visible = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		SPI_finish();
		if (visible < all)
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("model name \"%s\" is used by versions you cannot see", name),
					 errdetail("Row-level security on bft.models hides them from role \"%s\"; a new version would share their name.",
							   GetUserNameFromId(user, false)),
					 errhint("Choose another model name.")));
	}
}

/* bft_check_store without a name (kept for callers that have none). */
void
bft_check_store_privileges(void)
{
	bft_check_store(NULL);
}

/*
 * Functions that reveal what a model learned (its vocabulary, text through
 * fill-mask, a copy of its weights or files) need SELECT on every column of
 * bft.models; classification needs only id, name, version and deployed_at.
 */
void
bft_require_model_read(const char *what)
{
	Oid			rel = bft_models_relid();
	Oid			user = GetUserId();

	if (pg_class_aclcheck(rel, user, ACL_SELECT) == ACLCHECK_OK ||
		pg_attribute_aclcheck_all(rel, user, ACL_SELECT, ACLMASK_ALL) == ACLCHECK_OK)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied: %s needs SELECT on all columns of bft.models", what),
			 errdetail("It reveals the model's vocabulary or what it learned; classifying needs only SELECT (id, name, version, deployed_at).")));
}

/* Serialise versions of one model name: the second training waits here. */
void
bft_lock_model_name(const char *name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];

	values[0] = CStringGetTextDatum(name);
	SPI_connect();
	if (SPI_execute_with_args("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('bft.models'),"
							  " pg_catalog.hashtext($1))",
							  1, argtypes, values, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not lock model name");
	SPI_finish();
}

/*
 * The next version number of name: one above the highest stored, counting
 * every row (also those row-level security hides from the caller) as of the
 * latest snapshot.  Call with the name lock held.
 */
int32
bft_next_version(const char *name)
{
	int32		maxv;

	scan_versions(name, GetLatestSnapshot(), &maxv, NULL);
	if (maxv == PG_INT32_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("model \"%s\" has no version number left", name)));
	return maxv + 1;
}

/*
 * Store m as a new version of name: weights into a new large object owned by
 * the extension's owner, one row in bft.models, all in the caller's
 * transaction.  deploy: mark it deployed.  Returns the version number.
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
	version = bft_next_version(name);

	memset(nulls, ' ', sizeof(nulls));
	values[0] = CStringGetTextDatum(name);
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
	SPI_connect();
	trusted_insert_weights = loid;
	PG_TRY();
	{
		ret = SPI_execute_with_args("INSERT INTO bft.models (name, version, base, config, tokenizer_config,"
									" labels, vocab, weights, params, metrics, has_mlm, size, deployed_at)"
									" VALUES ($1, $2, $3, $4::pg_catalog.jsonb, $5::pg_catalog.jsonb, $6, $7, $8,"
									" $9::pg_catalog.jsonb, $10::pg_catalog.jsonb, $11, $12,"
									" CASE WHEN $13 THEN pg_catalog.clock_timestamp() END)",
									13, argtypes, values, nulls, false, 0);
	}
	PG_FINALLY();
	{
		trusted_insert_weights = InvalidOid;
	}
	PG_END_TRY();
	if (ret != SPI_OK_INSERT)
		elog(ERROR, "could not insert into bft.models: %s", SPI_result_code_string(ret));
	SPI_finish();
	return version;
}

/* ---- triggers on bft.models ---- */

/* Adopt (superuser writes, e.g. pg_restore) a weights object owned by
 * another superuser: it becomes the extension owner's, so that dropping
 * the row unlinks it. */
static void
adopt_weights(Oid loid)
{
	Oid			owner;
	Oid			extowner = bft_extension_owner();

	if (!lo_owner(loid, NULL, &owner) || owner == extowner || !superuser_arg(owner))
		return;
	SPI_connect();
	if (SPI_execute(psprintf("ALTER LARGE OBJECT %u OWNER TO %s", loid,
							 quote_identifier(GetUserNameFromId(extowner, false))),
					false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not change the owner of large object %u", loid);
	SPI_finish();
}

/*
 * BEFORE INSERT OR UPDATE FOR EACH ROW on bft.models: only bft's own C code
 * writes rows (bft_store_model's INSERT of the object it just created, and
 * bft's own UPDATEs); other roles may change deployed_at and nothing else.
 * Superusers may write anything (pg_restore, repairs); a weights object they
 * name that belongs to another superuser is adopted by the extension's owner.
 */
Datum
bft_models_guard(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	newtup;
	TupleDesc	desc;
	const ModelsAtts *a;
	bool		isnull;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "bft.models_guard() must be a BEFORE ... FOR EACH ROW trigger");
	desc = RelationGetDescr(td->tg_relation);
	a = get_models_atts(RelationGetRelid(td->tg_relation));
	newtup = TRIGGER_FIRED_BY_UPDATE(td->tg_event) ? td->tg_newtuple : td->tg_trigtuple;

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event))
	{
		Oid			w = DatumGetObjectId(heap_getattr(newtup, a->weights, desc, &isnull));

		if (OidIsValid(trusted_insert_weights) && !isnull && w == trusted_insert_weights)
		{
			trusted_insert_weights = InvalidOid;	/* exactly one row */
			return PointerGetDatum(newtup);
		}
		if (superuser())
		{
			if (!isnull)
				adopt_weights(w);
			return PointerGetDatum(newtup);
		}
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("rows of bft.models are written only by bft's functions"),
				 errdetail("A row names the large object bft reads its weights from."),
				 errhint("Use bft_train() or bft_import_model(); bft_deploy() and bft_drop_model() manage versions.")));
	}
	else if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		int			i;

		if (trusted_update_depth > 0)
			return PointerGetDatum(newtup);
		for (i = 1; i <= desc->natts; i++)
		{
			Form_pg_attribute att = TupleDescAttr(desc, i - 1);
			bool		onull,
						nnull;
			Datum		od,
						nd;

			if (att->attisdropped || strcmp(NameStr(att->attname), "deployed_at") == 0)
				continue;
			od = heap_getattr(td->tg_trigtuple, i, desc, &onull);
			nd = heap_getattr(newtup, i, desc, &nnull);
			if (onull != nnull ||
				(!onull && !datum_image_eq(od, nd, att->attbyval, att->attlen)))
			{
				if (superuser())
				{
					if (i == a->weights && !nnull)
						adopt_weights(DatumGetObjectId(nd));
					continue;
				}
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("column \"%s\" of bft.models cannot be changed", NameStr(att->attname)),
						 errdetail("Only deployed_at of a stored version may change (bft_deploy()); a new model is a new version."),
						 errhint("Train or import a new version instead.")));
			}
		}
		return PointerGetDatum(newtup);
	}
	return PointerGetDatum(newtup);
}

/*
 * AFTER DELETE FOR EACH ROW on bft.models: a deleted version's weights go
 * with it (bft_drop_model, or DELETE by a role allowed to delete rows).
 * UNIQUE (weights) guarantees no other row names the object.
 */
Datum
bft_models_unlink(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	const ModelsAtts *a;
	bool		isnull;
	Datum		d;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_DELETE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event))
		elog(ERROR, "bft.models_unlink() must be an AFTER DELETE ... FOR EACH ROW trigger");
	a = get_models_atts(RelationGetRelid(td->tg_relation));
	d = heap_getattr(td->tg_trigtuple, a->weights, RelationGetDescr(td->tg_relation), &isnull);
	if (!isnull)
	{
		unlink_weights(DatumGetObjectId(d), bft_extension_owner());
		/* its shared copy goes at commit; other backends let go of theirs */
		bft_shcache_forget_at_commit(DatumGetObjectId(d));
		CacheInvalidateRelcacheByRelid(RelationGetRelid(td->tg_relation));
	}
	return PointerGetDatum(NULL);
}

/* BEFORE TRUNCATE FOR EACH STATEMENT on bft.models: unlink all weights. */
Datum
bft_models_truncate(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BY_TRUNCATE(td->tg_event))
		elog(ERROR, "bft.models_truncate() must be a TRUNCATE trigger");
	unlink_all_weights();
	bft_shcache_forget_at_commit(InvalidOid);
	return PointerGetDatum(NULL);
}

/* Does a DROP OWNED list name role? */
static bool
roles_include(List *roles, Oid role)
{
	ListCell   *lc;

	foreach(lc, roles)
	{
		RoleSpec   *rs = lfirst(lc);

		if (get_rolespec_oid(rs, true) == role)
			return true;
	}
	return false;
}

/*
 * Event trigger on ddl_command_start for DROP EXTENSION, DROP SCHEMA and
 * DROP OWNED: when the command drops extension bft (by name, with its schema,
 * or with its owner's objects) the weights objects go first, so nothing is
 * orphaned.  Should the command fail, its transaction takes the unlinks back.
 */
Datum
bft_drop_guard(PG_FUNCTION_ARGS)
{
	EventTriggerData *trig;
	Node	   *pt;
	bool		drops = false;
	ListCell   *lc;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "bft.drop_guard() must be an event trigger");
	trig = (EventTriggerData *) fcinfo->context;
	pt = trig->parsetree;
	if (IsA(pt, DropStmt))
	{
		DropStmt   *ds = (DropStmt *) pt;

		if (ds->removeType == OBJECT_EXTENSION)
		{
			foreach(lc, ds->objects)
				if (strcmp(strVal(lfirst(lc)), "bft") == 0)
					drops = true;
		}
		else if (ds->removeType == OBJECT_SCHEMA && ds->behavior == DROP_CASCADE)
		{
			Oid			extnsp = InvalidOid;
			Relation	rel = table_open(ExtensionRelationId, AccessShareLock);
			ScanKeyData key;
			SysScanDesc sd;
			HeapTuple	tup;

			ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
						CStringGetDatum("bft"));
			sd = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
			tup = systable_getnext(sd);
			if (HeapTupleIsValid(tup))
				extnsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
			systable_endscan(sd);
			table_close(rel, AccessShareLock);
			foreach(lc, ds->objects)
			{
				Oid			nsp = get_namespace_oid(strVal(lfirst(lc)), true);

				if (OidIsValid(nsp) && nsp == extnsp)
					drops = true;
			}
		}
	}
	else if (IsA(pt, DropOwnedStmt))
		drops = roles_include(((DropOwnedStmt *) pt)->roles, bft_extension_owner());
	if (drops)
	{
		unlink_all_weights();
		bft_shcache_forget_at_commit(InvalidOid);
	}
	PG_RETURN_VOID();
}

/*
 * bft_copy_weights(name, version) RETURNS oid: a new large object owned by
 * the caller with a copy of that version's weights (model.safetensors), for
 * \lo_export by a client; the caller unlinks it afterwards.  Needs SELECT
 * on every column of bft.models (and EXECUTE, not granted to PUBLIC).
 */
Datum
bft_copy_weights_sql(PG_FUNCTION_ARGS)
{
	char	   *ref;
	char	   *name;
	int32		version;
	int64		id;
	BftModelRow row;
	int64		size;
	char	   *st;
	Size		st_len;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = bft_parse_model_ref(ref, &version);
	version = bft_ref_version(ref, version, PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1));
	PreventCommandIfReadOnly("bft_copy_weights()");
	bft_require_model_read("bft_copy_weights()");
	id = bft_find_model(name, version, &version);
	if (!bft_model_row_read(id, false, &row))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" does not exist", name)));
	size = check_weights(&row, name);
	bft_memory_require((Size) size, "copying the weights",
					   "A superuser can raise bft.max_memory.");
	st = bft_read_lo_pages(row.weights, &st_len);
	PG_RETURN_OID(write_lo_as(st, st_len, InvalidOid));
}
