/*
 * bft_jobs.c — background training jobs: bft_train_async() queues a
 * bft_train() call and returns at once; a dynamic background worker runs it.
 *
 *   submitting backend                    background worker ("bft training job")
 *   ------------------                    ---------------------------------------
 *   INSERT bft.train_jobs (queued)
 *   RegisterDynamicBackgroundWorker ───►  connect to the database as the submitting role
 *   wait until the worker is connected     wait for the submitter's transaction (its xid)
 *   RETURN job id;  ... COMMIT             row gone (rolled back)?  exit
 *                                          row cancelled?           exit
 *                                          mark running, commit
 *                                          SELECT ... FROM bft_train(<args from the row>)
 *                                            and mark succeeded — one transaction: the
 *                                            model version and the job state commit together
 *                                          on error: roll back, mark failed (error text)
 *                                            or cancelled (SQLSTATE 57014), commit
 *
 * Nothing here needs shared_preload_libraries: dynamic workers can be
 * registered from any backend, and the worker loads bft itself
 * (bgw_library_name).  The arguments are kept as jsonb in the job row and
 * turned back into a bft_train() call with one typed parameter, named
 * arguments and casts built from bft_train_async's own signature — user
 * text is never pasted into SQL.
 *
 * Bookkeeping writes to bft.train_jobs are made as the table's owner (the
 * extension owner), so users need no privileges on it: they see their own
 * jobs through the bft.jobs view and cancel them with bft_cancel_job().
 * A worker that dies without recording an outcome (kill -9, a server crash,
 * SIGTERM) shows as failed: bft.job_worker_alive() checks that its process
 * is still a background worker of the job's role in this database.
 *
 * Limits: a submission is checked for everything bft_train would check on
 * bft.models (EXECUTE on bft_train, the store privileges, the model name) and
 * refused when the server already runs bft.max_jobs job workers or the role
 * bft.max_jobs_per_role (counted from the live workers, under a cluster-wide
 * lock held from the count until the new worker is connected).  Finished
 * jobs older than bft.job_retention are deleted at each submission and
 * completion.
 */
#include "bft_pg.h"

#include <signal.h>

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/wait_event.h"

PG_FUNCTION_INFO_V1(bft_train_async_sql);
PG_FUNCTION_INFO_V1(bft_cancel_job_sql);
PG_FUNCTION_INFO_V1(bft_job_worker_alive_sql);

PGDLLEXPORT void bft_job_main(Datum main_arg);

/* What the worker needs before it can read its job row. */
typedef struct BftJobExtra
{
	Oid			dbid;
	Oid			userid;
	TransactionId xid;			/* the submitting transaction */
	int64		jobid;
} BftJobExtra;

/* ---- helpers ---- */

/* Owner of bft.train_jobs: bookkeeping runs as this role. */
static Oid
jobs_table_owner(void)
{
	Oid			nsp = get_namespace_oid("bft", false);
	Oid			relid = get_relname_relid("train_jobs", nsp);
	HeapTuple	tp;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table bft.train_jobs does not exist"),
				 errhint("ALTER EXTENSION bft UPDATE, or recreate the extension.")));
	tp = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tp))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tp))->relowner;
	ReleaseSysCache(tp);
	return owner;
}

/*
 * Run one bookkeeping statement on bft.train_jobs as the table's owner
 * (inside an SPI connection the caller opened), with search_path set to
 * pg_catalog, pg_temp and as a security-restricted operation.  The previous
 * user and search_path are restored; on error the transaction abort
 * restores them.
 */
static int
exec_as_owner(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls,
			  long tcount)
{
	Oid			save_user;
	int			save_sec;
	int			save_nestlevel;
	int			ret;

	/*
	 * Like a SECURITY DEFINER function with SET search_path: the caller's
	 * search_path must not resolve an operator or function of the caller's
	 * in a statement that runs with the owner's rights.
	 */
	GetUserIdAndSecContext(&save_user, &save_sec);
	SetUserIdAndSecContext(jobs_table_owner(),
						   save_sec | SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	ret = SPI_execute_with_args(sql, nargs, types, values, nulls, false, tcount);
	AtEOXact_GUC(true, save_nestlevel);
	SetUserIdAndSecContext(save_user, save_sec);
	if (ret < 0)
		elog(ERROR, "bft.train_jobs bookkeeping failed: %s", SPI_result_code_string(ret));
	return ret;
}

/*
 * Is pid a live background worker connected as role userid to this
 * database?  (A job whose worker is gone shows as failed.)
 */
static bool
job_worker_alive(int pid, Oid userid)
{
	PGPROC	   *proc;

	if (pid <= 0)
		return false;
	proc = BackendPidGetProc(pid);
	return proc != NULL && proc->isBackgroundWorker &&
		proc->databaseId == MyDatabaseId &&
		(!OidIsValid(userid) || proc->roleId == userid);
}

/*
 * The extension's bft_train_async function (its OID) and its schema (quoted),
 * read within an SPI connection the caller opened.
 */
static Oid
extension_function(const char *proname, char **schema)
{
	Oid			t[1] = {TEXTOID};
	Datum		v[1];
	bool		isnull;
	int			ret;

	v[0] = CStringGetTextDatum(proname);
	ret = SPI_execute_with_args("SELECT p.oid, n.nspname FROM pg_catalog.pg_extension e"
								" JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace"
								" JOIN pg_catalog.pg_proc p ON p.pronamespace = e.extnamespace"
								" WHERE e.extname = 'bft' AND p.proname = $1",
								1, t, v, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "function %s of extension bft not found", proname);
	if (schema)
		*schema = pstrdup(quote_identifier(SPI_getvalue(SPI_tuptable->vals[0],
														SPI_tuptable->tupdesc, 2)));
	return DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Delete finished jobs older than bft.job_retention (0: keep them). */
static void
prune_finished_jobs(void)
{
	Oid			t[1] = {INT4OID};
	Datum		v[1];

	if (bft_job_retention <= 0)
		return;
	v[0] = Int32GetDatum(bft_job_retention);
	exec_as_owner("DELETE FROM bft.train_jobs WHERE state IN ('succeeded', 'failed', 'cancelled')"
				  " AND finished_at < now() - make_interval(secs => $1)", 1, t, v, NULL, 0);
}

/* OID of the extension's function proname (the only one of that name in its schema). */
static Oid
extension_function_oid(const char *proname)
{
	Oid			oid;

	SPI_connect();
	oid = extension_function(proname, NULL);
	SPI_finish();
	return oid;
}

/* Mark queued/running jobs of this database whose worker is gone as failed. */
static void
reap_dead_jobs(void)
{
	int			ret;
	uint64		i,
				n;
	int64	   *ids;
	Oid			types[1] = {INT8OID};

	ret = exec_as_owner("SELECT id, pid, userid FROM bft.train_jobs WHERE state IN ('queued', 'running')",
						0, NULL, NULL, NULL, 0);
	if (ret != SPI_OK_SELECT)
		return;
	n = SPI_processed;
	ids = palloc(sizeof(int64) * (n + 1));
	for (i = 0; i < n; i++)
	{
		bool		isnull,
					pnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	td = SPI_tuptable->tupdesc;
		int64		id = DatumGetInt64(SPI_getbinval(tup, td, 1, &isnull));
		Datum		p = SPI_getbinval(tup, td, 2, &pnull);
		Oid			u = DatumGetObjectId(SPI_getbinval(tup, td, 3, &isnull));

		ids[i] = (!pnull && job_worker_alive(DatumGetInt32(p), u)) ? 0 : id;
	}
	for (i = 0; i < n; i++)
	{
		Datum		v[1];

		if (ids[i] == 0)
			continue;
		v[0] = Int64GetDatum(ids[i]);
		exec_as_owner("UPDATE bft.train_jobs SET state = 'failed', finished_at = now(),"
					  " error = coalesce(error, 'the background worker exited without recording a result"
					  " (server crash, restart or killed process)')"
					  " WHERE id = $1 AND state IN ('queued', 'running')",
					  1, types, v, NULL, 0);
	}
	pfree(ids);
	prune_finished_jobs();
}

#define BFT_JOB_TYPE "bft training job"

/*
 * Live job workers in the whole server, and those of role userid. Every
 * job, queued or running, holds one background worker until it ends.
 */
static void
count_job_workers(Oid userid, int *total, int *mine)
{
	int			cap = ProcGlobal->allProcCount;
	int		   *pids = palloc(sizeof(int) * cap);
	Oid		   *roles = palloc(sizeof(Oid) * cap);
	int			n = 0,
				i;

	LWLockAcquire(ProcArrayLock, LW_SHARED);
	for (i = 0; i < (int) ProcGlobal->allProcCount; i++)
	{
		PGPROC	   *p = &ProcGlobal->allProcs[i];

		if (p->pid != 0 && p->isBackgroundWorker && n < cap)
		{
			pids[n] = p->pid;
			roles[n] = p->roleId;
			n++;
		}
	}
	LWLockRelease(ProcArrayLock);
	*total = *mine = 0;
	for (i = 0; i < n; i++)
	{
		const char *type = GetBackgroundWorkerTypeByPid(pids[i]);

		if (type && strcmp(type, BFT_JOB_TYPE) == 0)
		{
			(*total)++;
			if (roles[i] == userid)
				(*mine)++;
		}
	}
	pfree(pids);
	pfree(roles);
}

/* The cluster-wide lock that serialises job submissions (count → connected). */
static void
job_slot_locktag(LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, InvalidOid, 0x62667400, 0x6a6f6273, 3);
}

/* Refuse a submission over bft.max_jobs or bft.max_jobs_per_role (53400). */
static void
check_job_caps(Oid userid)
{
	int			total,
				mine;

	count_job_workers(userid, &total, &mine);
	if (total >= bft_max_jobs)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many background training jobs: %d running or queued, bft.max_jobs is %d",
						total, bft_max_jobs),
				 errhint("Wait for a job to finish, cancel one with bft_cancel_job(), or ask an administrator to raise bft.max_jobs.")));
	if (mine >= bft_max_jobs_per_role)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many background training jobs for role \"%s\": %d running or queued, bft.max_jobs_per_role is %d",
						GetUserNameFromId(userid, false), mine, bft_max_jobs_per_role),
				 errhint("Wait for one of your jobs to finish, or cancel one with bft_cancel_job().")));
}

/* ---- bft_train_async ---- */

/* Argument types and names of function fn (palloc'ed); returns their number. */
static int
function_args(Oid fn, Oid **argtypes, char ***argnames)
{
	HeapTuple	proctup = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn));
	char	   *argmodes;
	int			nargs;

	if (!HeapTupleIsValid(proctup))
		elog(ERROR, "cache lookup failed for function %u", fn);
	nargs = get_func_arg_info(proctup, argtypes, argnames, &argmodes);
	ReleaseSysCache(proctup);
	return nargs;
}

/* A background worker connects as the role: it must be able to log in. */
static void
check_role_can_login(Oid userid)
{
	HeapTuple	roletup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(userid));
	bool		canlogin;

	if (!HeapTupleIsValid(roletup))
		elog(ERROR, "cache lookup failed for role %u", userid);
	canlogin = ((Form_pg_authid) GETSTRUCT(roletup))->rolcanlogin;
	ReleaseSysCache(roletup);
	if (!canlogin)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" cannot log in, so a background job cannot run as it",
						GetUserNameFromId(userid, false)),
				 errhint("Submit the job as a role with LOGIN, or call bft_train() directly.")));
}

/*
 * Fail now, not in the background, on what can be checked now: the source
 * and its privilege, the model name, deploy, what bft_train would check on
 * bft.models, the role.  Returns the model name.
 */
static char *
async_check_submission(FunctionCallInfo fcinfo, Oid userid, BftSource *src)
{
	Oid			relid;
	char	   *model;

	if (PG_ARGISNULL(TA_RELATION) || PG_ARGISNULL(TA_TEXT_COLUMN) || PG_ARGISNULL(TA_LABEL_COLUMN))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("relation, text_column and label_column must not be NULL")));
	PreventCommandIfReadOnly("bft_train_async()");
	PreventCommandDuringRecovery("bft_train_async()");
	relid = PG_GETARG_OID(TA_RELATION);
	bft_prepare_source(relid, PG_GETARG_NAME(TA_TEXT_COLUMN), PG_GETARG_NAME(TA_LABEL_COLUMN), src);
	if (pg_class_aclcheck(relid, userid, ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", src->relname)));
	model = PG_ARGISNULL(TA_MODEL) ? get_rel_name(relid) : text_to_cstring(PG_GETARG_TEXT_PP(TA_MODEL));
	if (model == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	bft_check_model_name(model);
	if (!PG_ARGISNULL(TA_DEPLOY))
	{
		int			metric;

		(void) bft_parse_deploy(text_to_cstring(PG_GETARG_TEXT_PP(TA_DEPLOY)), &metric);
	}
	/* train_precision: a bad value or int8 fails now */
	if (PG_NARGS() > TA_TRAIN_PRECISION && !PG_ARGISNULL(TA_TRAIN_PRECISION))
		(void) bft_parse_train_precision(text_to_cstring(PG_GETARG_TEXT_PP(TA_TRAIN_PRECISION)));
	/* what bft_train would check on bft.models, now rather than in the background */
	if (pg_proc_aclcheck(extension_function_oid("bft_train"), userid, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function bft_train"),
				 errdetail("A background job calls bft_train() as the submitting role.")));
	bft_check_store(model);
	if (!PG_ARGISNULL(TA_BASE))
		bft_require_model_read("bft_train(base => ...)");
	check_role_can_login(userid);
	return model;
}

/*
 * The arguments as jsonb, keyed by this function's parameter names (a
 * regclass kept as its OID, immune to search_path and renames).  Runs in
 * the caller's SPI connection: the value lives until SPI_finish.
 */
static Datum
async_args_json(FunctionCallInfo fcinfo)
{
	Oid		   *argtypes;
	char	  **argnames;
	int			nargs = function_args(fcinfo->flinfo->fn_oid, &argtypes, &argnames);
	Datum	   *values;
	char	   *nulls;
	StringInfoData q;
	bool		isnull;
	int			i;

	if (nargs != PG_NARGS() || argnames == NULL)
		elog(ERROR, "bft_train_async: unexpected signature");
	values = palloc(sizeof(Datum) * nargs);
	nulls = palloc(nargs + 1);
	initStringInfo(&q);
	appendStringInfoString(&q, "SELECT pg_catalog.jsonb_build_object(");
	for (i = 0; i < nargs; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		if (i > 0)
			appendStringInfoString(&q, ", ");
		appendStringInfo(&q, "%s, $%d%s", quote_literal_cstr(argnames[i]), i + 1,
						 argtypes[i] == REGCLASSOID ? "::pg_catalog.oid" : "");
	}
	nulls[nargs] = '\0';
	appendStringInfoChar(&q, ')');
	if (SPI_execute_with_args(q.data, nargs, argtypes, values, nulls, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not encode the job's arguments");
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
}

/* Queue the job (bft.train_jobs) with the submitting session's engine settings; its id. */
static int64
async_insert_job(const char *model, Datum argsjson, Oid userid, const char *relname)
{
	Oid			t[8] = {TEXTOID, JSONBOID, OIDOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID, TEXTOID};
	Datum		v[8];
	const char *threads = GetConfigOption("bft.threads", true, false);
	const char *device = GetConfigOption("bft.device", true, false);
	const char *precision = GetConfigOption("bft.cuda_precision", true, false);
	const char *cpu_precision = GetConfigOption("bft.cpu_precision", true, false);
	bool		isnull;
	int			ret;

	v[0] = CStringGetTextDatum(model);
	v[1] = argsjson;
	v[2] = ObjectIdGetDatum(userid);
	v[3] = CStringGetTextDatum(relname);
	v[4] = CStringGetTextDatum(threads ? threads : "0");
	v[5] = CStringGetTextDatum(device ? device : "cpu");
	v[6] = CStringGetTextDatum(precision ? precision : "bf16");
	v[7] = CStringGetTextDatum(cpu_precision ? cpu_precision : "fp32");
	ret = exec_as_owner("INSERT INTO bft.train_jobs (model, args, userid, username, relation, settings)"
						" VALUES ($1, $2, $3, (SELECT rolname FROM pg_catalog.pg_authid WHERE oid = $3),"
						" $4, pg_catalog.jsonb_build_object('bft.threads', $5, 'bft.device', $6,"
						" 'bft.cuda_precision', $7, 'bft.cpu_precision', $8)) RETURNING id",
						8, t, v, NULL, 1);
	if (ret != SPI_OK_INSERT_RETURNING || SPI_processed != 1)
		elog(ERROR, "could not insert into bft.train_jobs");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Register the job's background worker (it waits for this transaction to end) and wait for it to start. */
static BackgroundWorkerHandle *
async_start_worker(int64 jobid, Oid userid, pid_t *pid)
{
	BftJobExtra extra;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	memset(&extra, 0, sizeof(extra));
	extra.dbid = MyDatabaseId;
	extra.userid = userid;
	extra.xid = GetTopTransactionId();
	extra.jobid = jobid;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bft");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bft_job_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bft training job " INT64_FORMAT, jobid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "bft training job");
	worker.bgw_main_arg = Int64GetDatum(jobid);
	memcpy(worker.bgw_extra, &extra, sizeof(extra));
	worker.bgw_notify_pid = MyProcPid;
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("could not start a background worker for the training job"),
				 errdetail("All background worker slots are in use."),
				 errhint("Raise max_worker_processes (it also serves parallel queries and pg_cron), "
						 "or wait for running jobs to finish.")));
	if (WaitForBackgroundWorkerStartup(handle, pid) != BGWH_STARTED)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("the background worker for the training job could not be started"),
				 errhint("See the server log.")));
	return handle;
}

/*
 * Wait (briefly) until the worker is connected, so that from now on a
 * missing worker process means a dead job.
 */
static void
async_wait_connected(BackgroundWorkerHandle *handle, pid_t *pid, Oid userid)
{
	int			waited;

	for (waited = 0;; waited++)
	{
		if (job_worker_alive(*pid, userid))
			break;
		if (GetBackgroundWorkerPid(handle, pid) == BGWH_STOPPED)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the background worker for the training job exited while connecting"),
					 errhint("See the server log (connection limits of the role or database?).")));
		if (waited >= 3000)
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("the background worker for the training job did not connect within 30 s")));
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
}

/* Queue the job, start its worker and record the worker's pid. */
static int64
async_submit(const char *model, Datum argsjson, Oid userid, const char *relname)
{
	int64		jobid;
	BackgroundWorkerHandle *handle;
	pid_t		pid;
	Oid			t[2] = {INT8OID, INT4OID};
	Datum		v[2];

	check_job_caps(userid);
	reap_dead_jobs();
	jobid = async_insert_job(model, argsjson, userid, relname);
	handle = async_start_worker(jobid, userid, &pid);
	async_wait_connected(handle, &pid, userid);
	v[0] = Int64GetDatum(jobid);
	v[1] = Int32GetDatum((int32) pid);
	exec_as_owner("UPDATE bft.train_jobs SET pid = $2 WHERE id = $1", 2, t, v, NULL, 0);
	return jobid;
}

/*
 * bft_train_async(<the arguments of bft_train>) RETURNS bigint: queue a
 * training job and return its id at once.  The job starts when the calling
 * transaction commits (it is dropped if the transaction rolls back).
 */
Datum
bft_train_async_sql(PG_FUNCTION_ARGS)
{
	Oid			userid = GetUserId();
	BftSource	src;
	char	   *model = async_check_submission(fcinfo, userid, &src);
	Datum		argsjson;
	int64		jobid = 0;
	LOCKTAG		slot_tag;

	SPI_connect();
	argsjson = async_args_json(fcinfo);
	/* one submission at a time in the server: count, then start and connect */
	job_slot_locktag(&slot_tag);
	(void) LockAcquire(&slot_tag, ExclusiveLock, true, false);
	PG_TRY();
	{
		jobid = async_submit(model, argsjson, userid, src.relname);
	}
	PG_FINALLY();
	{
		LockRelease(&slot_tag, ExclusiveLock, true);
	}
	PG_END_TRY();
	SPI_finish();
	PG_RETURN_INT64(jobid);
}

/* ---- bft_cancel_job ---- */

/*
 * bft_cancel_job(id) RETURNS bool: a queued job is marked cancelled (its
 * worker exits without training); a running job's worker gets a query
 * cancel (SIGINT), rolls back and records 'cancelled'.  Returns false when
 * the job had already finished.  Only the job's role (or a member of it, or
 * a superuser) may cancel it; to everyone else it does not exist (the same
 * error as an unknown id, so the call reveals nothing about other roles).
 */
Datum
bft_cancel_job_sql(PG_FUNCTION_ARGS)
{
	int64		id;
	Oid			t[1] = {INT8OID};
	Datum		v[1];
	int			ret;
	bool		isnull,
				pnull;
	char	   *state;
	int			pid = 0;
	Oid			userid = InvalidOid;
	bool		mine = false;
	bool		result = false;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	id = PG_GETARG_INT64(0);
	PreventCommandIfReadOnly("bft_cancel_job()");
	v[0] = Int64GetDatum(id);
	SPI_connect();
	ret = exec_as_owner("SELECT state, pid, userid FROM bft.train_jobs WHERE id = $1 FOR UPDATE",
						1, t, v, NULL, 1);
	/* a job of another role looks exactly like one that does not exist */
	if (ret == SPI_OK_SELECT && SPI_processed == 1)
	{
		userid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
		mine = has_privs_of_role(GetUserId(), userid);
	}
	if (!mine)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("training job " INT64_FORMAT " does not exist", id),
				 errhint("bft.jobs lists the jobs of the roles you are a member of; only those can be cancelled.")));
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	{
		Datum		p = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &pnull);

		if (!pnull)
			pid = DatumGetInt32(p);
	}

	if (strcmp(state, "queued") == 0 || strcmp(state, "running") == 0)
	{
		if (strcmp(state, "queued") == 0)
		{
			exec_as_owner("UPDATE bft.train_jobs SET state = 'cancelled', finished_at = now(),"
						  " error = 'cancelled before it started' WHERE id = $1", 1, t, v, NULL, 0);
			result = true;
		}
		else if (job_worker_alive(pid, userid))
		{
			/* the worker rolls back and records the cancellation itself */
			if (kill(pid, SIGINT) != 0)
				ereport(WARNING,
						(errmsg("could not send a cancel signal to process %d: %m", pid)));
			else
				result = true;
		}
		else
			exec_as_owner("UPDATE bft.train_jobs SET state = 'failed', finished_at = now(),"
						  " error = coalesce(error, 'the background worker exited without recording a result"
						  " (server crash, restart or killed process)') WHERE id = $1", 1, t, v, NULL, 0);
	}
	else
		ereport(NOTICE,
				(errmsg("training job " INT64_FORMAT " has already finished (%s)", id, state)));
	SPI_finish();
	PG_RETURN_BOOL(result);
}

/*
 * bft.job_worker_alive(pid, userid): used by the bft.jobs view.  On a hot
 * standby the workers run on the primary, so the replayed state is shown as
 * recorded (true) rather than every queued/running job as failed.
 */
Datum
bft_job_worker_alive_sql(PG_FUNCTION_ARGS)
{
	if (RecoveryInProgress())
		PG_RETURN_BOOL(true);
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(job_worker_alive(PG_GETARG_INT32(0),
									PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1)));
}

/* ---- the worker ---- */

/* Start a transaction with a snapshot and an SPI connection. */
static void
worker_begin(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

static void
worker_commit(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * The bft_train() call for a job: named arguments, each taken from the
 * args jsonb ($1) and cast to bft_train_async's parameter type.
 */
static char *
build_train_call(void)
{
	Oid		   *argtypes;
	char	  **argnames;
	int			i;
	StringInfoData q;
	char	   *schema;
	int			nargs = function_args(extension_function("bft_train_async", &schema),
									  &argtypes, &argnames);

	initStringInfo(&q);
	appendStringInfo(&q, "SELECT t.model, t.version, pg_catalog.to_jsonb(t) FROM %s.bft_train(", schema);
	for (i = 0; i < nargs; i++)
	{
		const char *key = quote_literal_cstr(argnames[i]);

		if (i > 0)
			appendStringInfoString(&q, ", ");
		appendStringInfo(&q, "%s => ", quote_identifier(argnames[i]));
		/* operators schema-qualified: the role's search_path plays no part */
		if (argtypes[i] == REGCLASSOID)
			appendStringInfo(&q, "($1::pg_catalog.jsonb OPERATOR(pg_catalog.->>) %s)::pg_catalog.oid::pg_catalog.regclass",
							 key);
		else if (argtypes[i] == JSONBOID)
			appendStringInfo(&q, "CASE WHEN pg_catalog.jsonb_typeof($1::pg_catalog.jsonb OPERATOR(pg_catalog.->) %s)"
							 " OPERATOR(pg_catalog.=) 'null' THEN NULL"
							 " ELSE $1::pg_catalog.jsonb OPERATOR(pg_catalog.->) %s END", key, key);
		else
			appendStringInfo(&q, "($1::pg_catalog.jsonb OPERATOR(pg_catalog.->>) %s)::%s", key,
							 format_type_be_qualified(argtypes[i]));
	}
	appendStringInfoString(&q, ") t");
	return q.data;
}

static void
record_outcome(int64 jobid, const char *state, const char *error)
{
	Oid			t[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		v[3];
	char		n[4] = "   ";

	v[0] = Int64GetDatum(jobid);
	v[1] = CStringGetTextDatum(state);
	if (error)
		v[2] = CStringGetTextDatum(error);
	else
		n[2] = 'n';
	exec_as_owner("UPDATE bft.train_jobs SET state = $2, error = $3, finished_at = now() WHERE id = $1",
				  3, t, v, n, 0);
	prune_finished_jobs();
}

/* the engine settings of the submitting session (bft.train_jobs.settings) */
static const char *const job_setting_names[] = {"bft.threads", "bft.device", "bft.cuda_precision",
"bft.cpu_precision"};

#define JOB_NSETTINGS ((int) lengthof(job_setting_names))

/*
 * Claim the job: queued → running, committed; its arguments (jsonb text) and
 * settings into jobcxt.  False when there is nothing to do (the submitting
 * transaction rolled back, or the job was cancelled before it started).
 */
static bool
job_claim(int64 jobid, const char *activity, MemoryContext jobcxt, char **args, char **settings)
{
	Oid			t[2] = {INT8OID, INT4OID};
	Datum		v[2];
	int			ret;
	int			i;

	worker_begin(activity);
	v[0] = Int64GetDatum(jobid);
	v[1] = Int32GetDatum(MyProcPid);
	ret = exec_as_owner("SELECT state, args::text, settings->>'bft.threads', settings->>'bft.device',"
						" settings->>'bft.cuda_precision', settings->>'bft.cpu_precision'"
						" FROM bft.train_jobs WHERE id = $1 FOR UPDATE", 1, t, v, NULL, 1);
	/* no row: the submitting transaction rolled back; not queued: cancelled before it started */
	if (ret != SPI_OK_SELECT || SPI_processed == 0 ||
		strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1), "queued") != 0)
	{
		worker_commit();
		return false;
	}
	*args = MemoryContextStrdup(jobcxt, SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	for (i = 0; i < JOB_NSETTINGS; i++)
	{
		char	   *val = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3 + i);

		if (val)
			settings[i] = MemoryContextStrdup(jobcxt, val);
	}
	exec_as_owner("UPDATE bft.train_jobs SET state = 'running', started_at = now(), pid = $2"
				  " WHERE id = $1", 2, t, v, NULL, 0);
	worker_commit();
	return true;
}

/* Call bft_train with the job's arguments and settings; record success (same transaction). */
static void
job_train(int64 jobid, const char *activity, const char *args, char **settings)
{
	Oid			t[1] = {TEXTOID};
	Datum		v[1];
	Oid			t2[4] = {INT8OID, TEXTOID, INT4OID, JSONBOID};
	Datum		v2[4];
	bool		isnull;
	int			ret;
	int			i;

	worker_begin(activity);
	for (i = 0; i < JOB_NSETTINGS; i++)
		if (settings[i])
			SetConfigOption(job_setting_names[i], settings[i], PGC_USERSET, PGC_S_SESSION);
	v[0] = CStringGetTextDatum(args);
	ret = SPI_execute_with_args(build_train_call(), 1, t, v, NULL, false, 0);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "bft_train returned no row");
	v2[0] = Int64GetDatum(jobid);
	v2[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	v2[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	v2[3] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	exec_as_owner("UPDATE bft.train_jobs SET state = 'succeeded', finished_at = now(),"
				  " model = $2, version = $3, result = $4 WHERE id = $1",
				  4, t2, v2, NULL, 0);
	prune_finished_jobs();
	worker_commit();
}

/* A failed job: record its error (cancelled for a query cancel). */
static void
job_record_error(int64 jobid, const char *activity, const ErrorData *edata)
{
	bool		cancelled = edata->sqlerrcode == ERRCODE_QUERY_CANCELED;
	StringInfoData msg;

	initStringInfo(&msg);
	appendStringInfoString(&msg, edata->message ? edata->message : "unknown error");
	if (edata->detail)
		appendStringInfo(&msg, " (%s)", edata->detail);
	/* a cancel that arrives now must not stop the bookkeeping */
	QueryCancelPending = false;
	worker_begin(activity);
	record_outcome(jobid, cancelled ? "cancelled" : "failed", msg.data);
	worker_commit();
}

/* Entry point of a job's background worker. */
void
bft_job_main(Datum main_arg)
{
	BftJobExtra extra;
	int64		jobid;
	char	   *args = NULL;
	char	   *settings[JOB_NSETTINGS] = {NULL};
	MemoryContext jobcxt;
	ErrorData  *edata = NULL;
	char		activity[64];

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	jobid = DatumGetInt64(main_arg);
	if (jobid != extra.jobid)
		elog(FATAL, "bft training job: inconsistent job id");
	pqsignal(SIGTERM, die);
	pqsignal(SIGINT, StatementCancelHandler);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(extra.dbid, extra.userid, 0);
	jobcxt = AllocSetContextCreate(TopMemoryContext, "bft job", ALLOCSET_DEFAULT_SIZES);
	snprintf(activity, sizeof(activity), "bft training job " INT64_FORMAT, jobid);

	/* 1. Wait for the submitting transaction to end. */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	pgstat_report_activity(STATE_RUNNING, "waiting for the submitting transaction");
	if (TransactionIdIsValid(extra.xid))
		XactLockTableWait(extra.xid, NULL, NULL, XLTW_None);
	CommitTransactionCommand();

	/* 2. Claim the job: queued → running, committed. */
	if (!job_claim(jobid, activity, jobcxt, &args, settings))
		proc_exit(0);

	/* 3. Train and record success in one transaction. */
	PG_TRY();
	{
		job_train(jobid, activity, args, settings);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(jobcxt);
		edata = CopyErrorData();
		EmitErrorReport();
		FlushErrorState();
		AbortCurrentTransaction();
	}
	PG_END_TRY();

	/* 4. On error: record it (cancelled for a query cancel). */
	if (edata)
		job_record_error(jobid, activity, edata);
	proc_exit(0);
}
