/*
 * bft_rows.c — reading a table's (text, label) rows for bft_train() and
 * bft_evaluate(): one SPI cursor over the source's query as the calling
 * user, in batches, NULL rows counted and reported the same way, label
 * values (one per row, or a label set) handed over as an array; and the map
 * of label names to class ids both use.
 */
#include "bft_pg.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/hsearch.h"

#include "defaults.h"

/* ---- label names → class ids ---- */

typedef struct LabelMapEnt
{
	char		key[BFT_MAX_LABEL_BYTES + 1];
	int			id;
} LabelMapEnt;

/* An empty map in cxt, room for about cap names to start with. */
void
bft_label_map_init(BftLabelMap *map, const char *what, int cap, MemoryContext cxt)
{
	HASHCTL		hctl;

	memset(&hctl, 0, sizeof(hctl));
	hctl.keysize = BFT_MAX_LABEL_BYTES + 1;
	hctl.entrysize = sizeof(LabelMapEnt);
	hctl.hcxt = cxt;
	map->ids = hash_create(what, Max(cap, 16), &hctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	map->cap = Max(cap, 16);
	map->names = MemoryContextAlloc(cxt, sizeof(char *) * map->cap);
	map->n = 0;
	map->cxt = cxt;
}

/* The class id of a name, or -1 when the map does not hold it. */
int
bft_label_map_find(const BftLabelMap *map, const char *name)
{
	LabelMapEnt *le;

	if (strlen(name) > BFT_MAX_LABEL_BYTES)
		return -1;
	le = hash_search(map->ids, name, HASH_FIND, NULL);
	return le ? le->id : -1;
}

/*
 * Append name as class map->n and return that id.  A name already held keeps
 * its first id for look-ups (the new class is reached by its id only), as
 * does a name longer than BFT_MAX_LABEL_BYTES.
 */
int
bft_label_map_add(BftLabelMap *map, const char *name)
{
	int			id = map->n;

	if (map->n == map->cap)
	{
		map->cap *= 2;
		map->names = repalloc(map->names, sizeof(char *) * map->cap);
	}
	map->names[id] = MemoryContextStrdup(map->cxt, name);
	map->n++;
	if (strlen(name) <= BFT_MAX_LABEL_BYTES)
	{
		bool		found;
		LabelMapEnt *le = hash_search(map->ids, name, HASH_ENTER, &found);

		if (!found)
			le->id = id;
	}
	return id;
}

/* The class id of a name, added as a new class when the map does not hold it. */
int
bft_label_map_get(BftLabelMap *map, const char *name)
{
	int			id = bft_label_map_find(map, name);

	return id >= 0 ? id : bft_label_map_add(map, name);
}

/* ---- the rows ---- */

/*
 * Label values of one row: a label set's non-NULL elements, or the row's one
 * label (*el and *elnull palloc'd for a label set).
 */
static int
row_labels(const BftSource *src, Datum ldat, Datum *one, bool *onenull, Datum **el, bool **elnull)
{
	int			nel;

	if (!src->label_is_array)
	{
		one[0] = ldat;
		onenull[0] = false;
		*el = one;
		*elnull = onenull;
		return 1;
	}
	if (src->label_is_int)
		deconstruct_array(DatumGetArrayTypeP(ldat), INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
						  el, elnull, &nel);
	else
		deconstruct_array(DatumGetArrayTypeP(ldat), TEXTOID, -1, false, TYPALIGN_INT,
						  el, elnull, &nel);
	return nel;
}

/*
 * One pass over rd->src's rows with an SPI cursor, BFT_FETCH_ROWS at a time:
 * a row with a text and a NULL label goes to rd->unlabeled when set; other
 * rows with a NULL text or label are counted in rd->skipped; every other
 * row goes to rd->row (in rd->cxt, not SPI's) with its label values when
 * rd->want_labels.  rd->batch_start and rd->batch_end (optional) run
 * around each batch; interrupts are checked after each.
 */
void
bft_read_rows(BftRowReader *rd)
{
	Portal		portal;

	rd->rows = 0;
	rd->skipped = 0;
	rd->unlabeled_rows = 0;
	SPI_connect();
	portal = SPI_cursor_open_with_args(NULL, rd->src->query, 0, NULL, NULL, NULL, true, 0);
	for (;;)
	{
		uint64		r;

		SPI_cursor_fetch(portal, true, BFT_FETCH_ROWS);
		if (SPI_processed == 0)
			break;
		if (rd->batch_start)
			rd->batch_start(rd->arg);
		for (r = 0; r < SPI_processed; r++)
		{
			bool		tnull,
						lnull;
			Datum		tdat = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1, &tnull);
			Datum		ldat = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &lnull);
			Datum		one[1];
			bool		onenull[1];
			Datum	   *el = NULL;
			bool	   *elnull = NULL;
			int			nel = 0;
			text	   *t;
			MemoryContext old;

			if (!tnull && lnull && rd->unlabeled)
			{
				t = DatumGetTextPP(tdat);
				old = MemoryContextSwitchTo(rd->cxt);
				rd->unlabeled(rd->arg, t);
				MemoryContextSwitchTo(old);
				rd->unlabeled_rows++;
				if ((Pointer) t != DatumGetPointer(tdat))
					pfree(t);
				continue;
			}
			if (tnull || lnull)
			{
				rd->skipped++;
				continue;
			}
			if (rd->want_labels)
				nel = row_labels(rd->src, ldat, one, onenull, &el, &elnull);
			t = DatumGetTextPP(tdat);
			old = MemoryContextSwitchTo(rd->cxt);
			rd->row(rd->arg, t, el, elnull, nel);
			MemoryContextSwitchTo(old);
			rd->rows++;
			if ((Pointer) t != DatumGetPointer(tdat))
				pfree(t);
			if (el != NULL && el != one)
			{
				pfree(el);
				pfree(elnull);
			}
		}
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
		if (rd->batch_end)
			rd->batch_end(rd->arg);
	}
	SPI_cursor_close(portal);
	SPI_finish();
}

/*
 * After a pass: a NOTICE for the rows skipped and for the unlabeled rows
 * taken, an ERROR when no labeled row was read.
 */
void
bft_rows_report(const BftRowReader *rd)
{
	if (rd->skipped > 0)
		ereport(NOTICE,
				(errmsg("skipped " INT64_FORMAT " rows with NULL text or label", rd->skipped)));
	if (rd->unlabeled_rows > 0)
		ereport(NOTICE,
				(errmsg("used " INT64_FORMAT " rows with a NULL label for masked-language-model pre-training only",
						rd->unlabeled_rows)));
	if (rd->rows == 0)
		ereport(ERROR,
				(errcode(ERRCODE_NO_DATA_FOUND),
				 errmsg("relation %s has no rows with non-NULL text and label", rd->src->relname)));
}
