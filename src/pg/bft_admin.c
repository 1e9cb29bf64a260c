/*
 * bft_admin.c — model management: import (server directory or client large
 * object), export, deploy, drop.  Storing goes through bft_store_model (the
 * only writer of bft.models rows); dropping deletes rows as the caller and
 * the store's AFTER DELETE trigger unlinks exactly their weights.
 */
#include "bft_pg.h"

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/large_object.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

#include "embed.h"

PG_FUNCTION_INFO_V1(bft_import_model_dir_sql);
PG_FUNCTION_INFO_V1(bft_import_model_lo_sql);
PG_FUNCTION_INFO_V1(bft_export_model_sql);
PG_FUNCTION_INFO_V1(bft_deploy_sql);
PG_FUNCTION_INFO_V1(bft_drop_model_sql);

/* result columns of the import functions: (model text, version int) */
static const Oid import_types[2] = {TEXTOID, INT4OID};

/* A context whose reset frees *slot (an engine model). */
static bft_model **
model_holder(MemoryContext cxt)
{
	bft_model **slot = MemoryContextAllocZero(cxt, sizeof(bft_model *));
	MemoryContextCallback *cb = MemoryContextAllocZero(cxt, sizeof(MemoryContextCallback));

	cb->func = bft_free_model_cb;
	cb->arg = slot;
	MemoryContextRegisterResetCallback(cxt, cb);
	return slot;
}

/* Store an imported model as a new (deployed) version; returns (name, version).
 * pooling_json: the embedding pooling for params->'pooling', or NULL. */
static Datum
finish_import(FunctionCallInfo fcinfo, const char *name, bft_model **slot,
			  const char *source_json, const char *pooling_json, MemoryContext cxt)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	int32		version;
	Datum		values[2];
	bool		nulls[2] = {false, false};
	StringInfoData params;

	initStringInfo(&params);
	appendStringInfo(&params, "{\"imported_from\": %s, \"parameters\": " UINT64_FORMAT,
					 source_json, (uint64) (*slot)->num_params);
	if (pooling_json)
		appendStringInfo(&params, ", \"pooling\": %s", pooling_json);
	appendStringInfoChar(&params, '}');
	version = bft_store_model(name, NULL, *slot, params.data, "{}", true);
	bft_srf_materialize(fcinfo, &tupdesc, &ts, import_types, 2);
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	tuplestore_putvalues(ts, tupdesc, values, nulls);
	MemoryContextDelete(cxt);
	PG_RETURN_NULL();
}

/*
 * The embedding pooling of a sentence-transformers directory (modules.json,
 * the Pooling module's config.json, sentence_bert_config.json) as JSON for
 * params->'pooling'; NULL without modules.json.  A pipeline bft cannot
 * compute (a Dense module, ...) is recorded as {"unsupported": why}, with a
 * WARNING: the model still imports (for fine-tuning), and bft_embed asks for
 * a pooling argument.
 */
static char *
import_pooling(const char *name, const char *dir)
{
	bft_pooling p;
	bft_error	err;
	int			found;
	int			rc = bft_pooling_load_dir(dir, &p, &found, &err);
	char	   *s;
	char	   *out;
	StringInfoData buf;

	if (rc == BFT_EUNSUPPORTED)
	{
		ereport(WARNING,
				(errmsg("model \"%s\": bft_embed cannot compute its sentence-transformers pipeline", name),
				 errdetail("%s", err.msg),
				 errhint("bft_embed() on it needs a pooling argument.")));
		initStringInfo(&buf);
		appendStringInfoString(&buf, "{\"unsupported\": ");
		escape_json(&buf, bft_from_utf8(err.msg, strlen(err.msg)));
		appendStringInfoChar(&buf, '}');
		return buf.data;
	}
	if (rc != BFT_OK)
	{
		char	   *msg = psprintf("could not import model \"%s\" from \"%s\"", name, dir);

		bft_report_engine_error(&err, msg);
	}
	if (!found)
		return NULL;
	s = bft_pooling_to_json(&p);
	if (s == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	out = pstrdup(s);
	free(s);
	return out;
}

/* bft_import_model(name, directory): an HF directory on the server. */
Datum
bft_import_model_dir_sql(PG_FUNCTION_ARGS)
{
	char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	char	   *dir = text_to_cstring(PG_GETARG_TEXT_PP(1));
	MemoryContext cxt;
	bft_model **slot;
	bft_error	err;
	StringInfoData src;
	char	   *pooling;

	bft_check_model_name(name);
	PreventCommandIfReadOnly("bft_import_model()");
	PreventCommandDuringRecovery("bft_import_model()");
	if (!has_privs_of_role(GetUserId(), ROLE_PG_READ_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to import a model from a server directory"),
				 errdetail("Only superusers and members of pg_read_server_files may read server files."),
				 errhint("Upload the weights with \\lo_import and use bft_import_model(name, config, vocab, weights).")));
	bft_check_store(name);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "bft_import", ALLOCSET_DEFAULT_SIZES);
	slot = model_holder(cxt);
	bft_apply_threads();
	/* files over bft.max_memory are refused before they are read */
	bft_engine_budget();
	*slot = bft_model_load_dir(dir, &err);
	if (*slot == NULL)
	{
		char	   *msg = psprintf("could not import model \"%s\" from \"%s\"", name, dir);

		bft_report_engine_error(&err, msg);
	}
	pooling = import_pooling(name, dir);
	initStringInfo(&src);
	escape_json(&src, dir);
	return finish_import(fcinfo, name, slot, src.data, pooling, cxt);
}

/*
 * bft_import_model(name, config, vocab, weights, tokenizer_config): weights
 * is a large object the client uploaded (SELECT on it is required).  The
 * model is validated by loading it and stored as a copy; the client's large
 * object is left alone.
 */
Datum
bft_import_model_lo_sql(PG_FUNCTION_ARGS)
{
	char	   *name;
	char	   *config;
	char	   *vocab;
	char	   *tokcfg = NULL;
	Oid			loid;
	char	   *c8,
			   *v8,
			   *t8 = NULL;
	int			clen,
				vlen,
				tlen = 0;
	char	   *st;
	Size		st_len;
	MemoryContext cxt;
	bft_model **slot;
	bft_error	err;
	StringInfoData src;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name, config, vocab and weights must not be NULL")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	bft_check_model_name(name);
	PreventCommandIfReadOnly("bft_import_model()");
	config = JsonbToCString(NULL, &PG_GETARG_JSONB_P(1)->root, VARSIZE(PG_GETARG_JSONB_P(1)));
	vocab = text_to_cstring(PG_GETARG_TEXT_PP(2));
	loid = PG_GETARG_OID(3);
	if (!PG_ARGISNULL(4))
		tokcfg = JsonbToCString(NULL, &PG_GETARG_JSONB_P(4)->root, VARSIZE(PG_GETARG_JSONB_P(4)));

	PreventCommandDuringRecovery("bft_import_model()");
	bft_check_store(name);
	cxt = AllocSetContextCreate(CurrentMemoryContext, "bft_import", ALLOCSET_DEFAULT_SIZES);
	slot = model_holder(cxt);
	st = bft_read_lo_checked(loid, &st_len);
	c8 = bft_to_utf8(config, strlen(config), &clen);
	v8 = bft_to_utf8(vocab, strlen(vocab), &vlen);
	if (tokcfg)
		t8 = bft_to_utf8(tokcfg, strlen(tokcfg), &tlen);
	bft_apply_threads();
	bft_engine_budget();
	*slot = bft_model_load_mem(c8, clen, v8, vlen, t8, tlen, st, st_len, &err);
	pfree(st);
	if (*slot == NULL)
	{
		char	   *msg = psprintf("could not import model \"%s\" from large object %u", name, loid);

		bft_report_engine_error(&err, msg);
	}
	initStringInfo(&src);
	appendStringInfo(&src, "\"large object %u\"", loid);
	return finish_import(fcinfo, name, slot, src.data, NULL, cxt);
}

/*
 * bft_export_model(model, directory, version): an HF directory on the
 * server.  model may name the version ('topics@3'); version => agrees.
 */
Datum
bft_export_model_sql(PG_FUNCTION_ARGS)
{
	char	   *ref;
	char	   *name;
	char	   *dir;
	int32		version;
	int32		got;
	MemoryContext cxt;
	bft_model **slot;
	bft_error	err;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name and directory must not be NULL")));
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = bft_parse_model_ref(ref, &version);
	version = bft_ref_version(ref, version, PG_ARGISNULL(2), PG_ARGISNULL(2) ? 0 : PG_GETARG_INT32(2));
	dir = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!has_privs_of_role(GetUserId(), ROLE_PG_WRITE_SERVER_FILES))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to export a model to a server directory"),
				 errdetail("Only superusers and members of pg_write_server_files may write server files."),
				 errhint("bft_copy_weights() gives a large object to \\lo_export as model.safetensors.")));
	bft_require_model_read("bft_export_model()");
	cxt = AllocSetContextCreate(CurrentMemoryContext, "bft_export", ALLOCSET_DEFAULT_SIZES);
	slot = model_holder(cxt);
	*slot = bft_load_model_row(name, version, NULL, &got, NULL);
	if (bft_model_save_dir(*slot, dir, &err) != 0)
	{
		char	   *msg = psprintf("could not export model \"%s\" to \"%s\"", name, dir);

		bft_report_engine_error(&err, msg);
	}
	if ((*slot)->parts.ngram > 0)
		ereport(NOTICE,
				(errmsg("model \"%s\" version %d has an n-gram head: model.safetensors holds it as the bft_ngram.* tensors",
						name, got),
				 errdetail("transformers loads the encoder and its classifier and ignores the n-gram head, so its predictions differ from bft_classify()'s; bft_import_model() reads the directory back whole.")));
	MemoryContextDelete(cxt);
	PG_RETURN_INT32(got);
}

/*
 * bft_deploy(model, version): make this version the one classification
 * uses.  The version comes from the reference ('topics@3', 'topics@latest')
 * or the argument (both given: they must agree).
 */
Datum
bft_deploy_sql(PG_FUNCTION_ARGS)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	int			ret;
	char	   *ref;
	char	   *name;
	int32		version;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = bft_parse_model_ref(ref, &version);
	version = bft_ref_version(ref, version, PG_NARGS() < 2 || PG_ARGISNULL(1),
							  PG_NARGS() < 2 || PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1));
	if (version == BFT_VERSION_DEPLOYED)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("bft_deploy needs a version"),
				 errhint("bft_deploy('%s', 3), bft_deploy('%s@3') or bft_deploy('%s@latest').",
						 name, name, name)));
	if (version == BFT_VERSION_LATEST)
		(void) bft_find_model(name, BFT_VERSION_LATEST, &version);

	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	SPI_connect();
	ret = SPI_execute_with_args("UPDATE bft.models SET deployed_at = pg_catalog.clock_timestamp()"
								" WHERE name OPERATOR(pg_catalog.=) $1 AND version OPERATOR(pg_catalog.=) $2",
								2, argtypes, values, NULL, false, 0);
	if (ret != SPI_OK_UPDATE)
		elog(ERROR, "could not update bft.models");
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d does not exist", name, version)));
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * bft_drop_model(name, version): delete one version (or all versions when
 * version is NULL) as the caller (DELETE privilege and row-level security
 * decide which rows go); the AFTER DELETE trigger on bft.models unlinks
 * exactly their weights.  Returns the number of versions dropped.  Without
 * a version it also deletes, at commit, the saved training states of the
 * name (every role's; resume => true), and a name with no version but a
 * saved state of the caller's is not an error: its state goes (0 returned).
 */
Datum
bft_drop_model_sql(PG_FUNCTION_ARGS)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	int			ret;
	char	   *ref;
	char	   *name;
	int32		version;
	uint64		n;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be NULL")));
	ref = text_to_cstring(PG_GETARG_TEXT_PP(0));
	name = bft_parse_model_ref(ref, &version);
	version = bft_ref_version(ref, version, PG_ARGISNULL(1), PG_ARGISNULL(1) ? 0 : PG_GETARG_INT32(1));
	/* 'name@latest': the highest version the caller sees */
	if (version == BFT_VERSION_LATEST)
		(void) bft_find_model(name, BFT_VERSION_LATEST, &version);
	values[0] = CStringGetTextDatum(name);
	values[1] = Int32GetDatum(version);
	if (version == BFT_VERSION_DEPLOYED)
		nulls[1] = 'n';
	SPI_connect();
	ret = SPI_execute_with_args("DELETE FROM bft.models WHERE name OPERATOR(pg_catalog.=) $1"
								" AND ($2::pg_catalog.int4 IS NULL OR version OPERATOR(pg_catalog.=) $2)"
								" RETURNING weights",
								2, argtypes, values, nulls, false, 0);
	if (ret != SPI_OK_DELETE_RETURNING)
		elog(ERROR, "could not delete from bft.models");
	n = SPI_processed;
	if (n > 0 && !bft_store_secured())
	{
		/* the 0.1.0 SQL has no unlink trigger */
		Oid		   *loids = palloc(sizeof(Oid) * n);
		uint64		i;

		for (i = 0; i < n; i++)
		{
			bool		isnull;

			loids[i] = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1,
													  &isnull));
		}
		bft_unlink_dropped_weights(loids, (int) n);
	}
	if (PG_ARGISNULL(1) && n > 0)
		bft_train_state_discard_model_at_commit(name);
	if (n == 0 && PG_ARGISNULL(1) &&
		(bft_train_state_exists(bft_train_state_path(name, "train", false)) ||
		 bft_train_state_exists(bft_train_state_path(name, "mlm", false))))
	{
		bft_train_state_discard_at_commit(name);
		ereport(NOTICE,
				(errmsg("model \"%s\" has no version; its saved training state is discarded", name)));
		SPI_finish();
		PG_RETURN_INT32(0);
	}
	if (n == 0)
	{
		if (version == BFT_VERSION_DEPLOYED)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("model \"%s\" does not exist", name)));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("model \"%s\" version %d does not exist", name, version)));
	}
	SPI_finish();
	PG_RETURN_INT32((int32) n);
}
