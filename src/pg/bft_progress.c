/*
 * bft_progress.c — live progress of running trainings, visible from any
 * session through the bft.progress view.
 *
 * With bft in shared_preload_libraries, each training backend owns a slot
 * of a small shared-memory array.  Without preloading (the common case: the
 * extension is loaded on first use) an extension cannot add shared memory,
 * so each training backend keeps a small status file,
 * $PGDATA/pg_stat_tmp/bft_progress.<pid>, replaced atomically (write to a
 * temporary file, rename) at most twice a second and removed when the
 * training ends; files of backends that no longer exist are ignored.
 */
#include "bft_pg.h"

#include <sys/stat.h>
#include <unistd.h>

#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "commands/dbcommands.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

PG_FUNCTION_INFO_V1(bft_progress_sql);

#define BFT_PROGRESS_SLOTS 64
#define BFT_PROGRESS_MAGIC 0x62667470	/* "bftp" */
#define BFT_PROGRESS_PREFIX "bft_progress."

typedef struct BftProgressRecord
{
	uint32		magic;
	int32		pid;
	Oid			userid;
	Oid			dbid;
	BftProgressInfo info;
} BftProgressRecord;

typedef struct BftProgressShared
{
	slock_t		mutex;
	BftProgressRecord slots[BFT_PROGRESS_SLOTS];
} BftProgressShared;

static BftProgressShared *shared = NULL;
static bool use_shmem = false;
static int	my_slot = -1;
static bool active = false;
static bool exit_cb_registered = false;
static double last_write = 0;
static BftProgressRecord current;

#if PG_VERSION_NUM >= 150000
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
progress_shmem_request(void)
{
#if PG_VERSION_NUM >= 150000
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(sizeof(BftProgressShared));
}

static void
progress_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	shared = ShmemInitStruct("bft progress", sizeof(BftProgressShared), &found);
	if (!found)
	{
		memset(shared, 0, sizeof(BftProgressShared));
		SpinLockInit(&shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Called from _PG_init: shared memory only when preloaded. */
void
bft_progress_shmem_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	use_shmem = true;
#if PG_VERSION_NUM >= 150000
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = progress_shmem_request;
#else
	progress_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = progress_shmem_startup;
}

static void
file_path(char *buf, size_t len, int pid, bool tmp)
{
	snprintf(buf, len, "%s/%s%d%s", PG_STAT_TMP_DIR, BFT_PROGRESS_PREFIX, pid, tmp ? ".tmp" : "");
}

/* Publish the current record (never raises an error: progress is optional). */
static void
publish(void)
{
	if (use_shmem && shared)
	{
		SpinLockAcquire(&shared->mutex);
		if (my_slot < 0)
		{
			int			i;

			for (i = 0; i < BFT_PROGRESS_SLOTS; i++)
				if (shared->slots[i].pid == 0 || shared->slots[i].pid == MyProcPid)
				{
					my_slot = i;
					break;
				}
		}
		if (my_slot >= 0)
			shared->slots[my_slot] = current;
		SpinLockRelease(&shared->mutex);
	}
	else
	{
		char		tmp[MAXPGPATH];
		char		path[MAXPGPATH];
		int			fd;

		file_path(tmp, sizeof(tmp), MyProcPid, true);
		file_path(path, sizeof(path), MyProcPid, false);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | PG_BINARY, S_IRUSR | S_IWUSR);
		if (fd < 0)
			return;
		if (write(fd, &current, sizeof(current)) != sizeof(current))
		{
			close(fd);
			unlink(tmp);
			return;
		}
		close(fd);
		if (rename(tmp, path) != 0)
			unlink(tmp);
	}
}

static void
unpublish(void)
{
	if (use_shmem && shared)
	{
		if (my_slot >= 0)
		{
			SpinLockAcquire(&shared->mutex);
			if (shared->slots[my_slot].pid == MyProcPid)
				memset(&shared->slots[my_slot], 0, sizeof(BftProgressRecord));
			SpinLockRelease(&shared->mutex);
			my_slot = -1;
		}
	}
	else
	{
		char		path[MAXPGPATH];

		file_path(path, sizeof(path), MyProcPid, false);
		unlink(path);
	}
}

static void
progress_exit(int code, Datum arg)
{
	if (active)
		unpublish();
	active = false;
}

/* A training (or one of its phases) starts. */
void
bft_progress_begin(const char *model, const char *phase)
{
	if (!exit_cb_registered)
	{
		before_shmem_exit(progress_exit, (Datum) 0);
		exit_cb_registered = true;
	}
	if (!active)
	{
		memset(&current, 0, sizeof(current));
		current.magic = BFT_PROGRESS_MAGIC;
		current.pid = MyProcPid;
		current.userid = GetUserId();
		current.dbid = MyDatabaseId;
		current.info.started = GetCurrentTimestamp();
		current.info.eta_s = -1;
		active = true;
	}
	strlcpy(current.info.model, model, sizeof(current.info.model));
	strlcpy(current.info.phase, phase, sizeof(current.info.phase));
	publish();
	last_write = bft_now_seconds();
}

/* New numbers; written at most twice a second unless forced. */
void
bft_progress_update(const BftProgressInfo *info, bool force)
{
	double		now;
	TimestampTz started = current.info.started;

	if (!active)
		return;
	current.info = *info;
	current.info.started = started;
	if (use_shmem)
	{
		publish();
		return;
	}
	now = bft_now_seconds();
	if (force || now - last_write >= 0.5)
	{
		publish();
		last_write = now;
	}
}

/* The training ended (success or error). */
void
bft_progress_end(void)
{
	if (active)
		unpublish();
	active = false;
}

static bool
visible(const BftProgressRecord *r)
{
	return r->userid == GetUserId() || superuser() ||
		has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS) ||
		has_privs_of_role(GetUserId(), r->userid);
}

static void
put_row(Tuplestorestate *ts, TupleDesc td, const BftProgressRecord *r)
{
	Datum		values[13];
	bool		nulls[13];
	char	   *user;
	char	   *db;

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int32GetDatum(r->pid);
	user = GetUserNameFromId(r->userid, true);
	if (user)
	{
		NameData   *n = palloc0(sizeof(NameData));

		namestrcpy(n, user);
		values[1] = NameGetDatum(n);
	}
	else
		nulls[1] = true;
	db = get_database_name(r->dbid);
	if (db)
	{
		NameData   *n = palloc0(sizeof(NameData));

		namestrcpy(n, db);
		values[2] = NameGetDatum(n);
	}
	else
		nulls[2] = true;
	values[3] = CStringGetTextDatum(r->info.model);
	values[4] = CStringGetTextDatum(r->info.phase);
	values[5] = Int32GetDatum(r->info.epoch);
	values[6] = Int32GetDatum(r->info.epochs);
	values[7] = Int64GetDatum(r->info.step);
	values[8] = Int64GetDatum(r->info.steps);
	values[9] = Float4GetDatum(r->info.loss);
	values[10] = Float4GetDatum((float4) r->info.samples_per_s);
	values[11] = TimestampTzGetDatum(r->info.started);
	if (r->info.eta_s >= 0 && r->info.eta_s < 1e9 && r->info.steps > 0)
	{
		Interval   *iv = palloc0(sizeof(Interval));

		iv->time = (int64) (r->info.eta_s * USECS_PER_SEC);
		values[12] = IntervalPGetDatum(iv);
	}
	else
		nulls[12] = true;
	if (r->info.steps == 0)
	{
		nulls[5] = nulls[6] = nulls[7] = nulls[8] = nulls[9] = nulls[10] = true;
	}
	tuplestore_putvalues(ts, td, values, nulls);
}

/* bft_progress(): one row per running training the caller may see. */
Datum
bft_progress_sql(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Tuplestorestate *ts;

	static const Oid types[13] = {INT4OID, NAMEOID, NAMEOID, TEXTOID, TEXTOID, INT4OID, INT4OID,
	INT8OID, INT8OID, FLOAT4OID, FLOAT4OID, TIMESTAMPTZOID, INTERVALOID};

	bft_srf_materialize(fcinfo, &tupdesc, &ts, types, 13);
	if (use_shmem && shared)
	{
		BftProgressRecord *copy = palloc(sizeof(BftProgressRecord) * BFT_PROGRESS_SLOTS);
		int			i;

		SpinLockAcquire(&shared->mutex);
		memcpy(copy, shared->slots, sizeof(BftProgressRecord) * BFT_PROGRESS_SLOTS);
		SpinLockRelease(&shared->mutex);
		for (i = 0; i < BFT_PROGRESS_SLOTS; i++)
			if (copy[i].pid != 0 && BackendPidGetProc(copy[i].pid) != NULL && visible(&copy[i]))
				put_row(ts, tupdesc, &copy[i]);
	}
	else
	{
		DIR		   *dir = AllocateDir(PG_STAT_TMP_DIR);
		struct dirent *de;

		while (dir && (de = ReadDir(dir, PG_STAT_TMP_DIR)) != NULL)
		{
			char		path[MAXPGPATH];
			BftProgressRecord r;
			int			fd;
			ssize_t		got;
			size_t		plen = strlen(BFT_PROGRESS_PREFIX);
			size_t		nlen = strlen(de->d_name);

			if (nlen <= plen || strncmp(de->d_name, BFT_PROGRESS_PREFIX, plen) != 0 ||
				strcmp(de->d_name + nlen - 4, ".tmp") == 0)
				continue;
			snprintf(path, sizeof(path), "%s/%s", PG_STAT_TMP_DIR, de->d_name);
			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
			if (fd < 0)
				continue;
			got = read(fd, &r, sizeof(r));
			CloseTransientFile(fd);
			if (got != sizeof(r) || r.magic != BFT_PROGRESS_MAGIC)
				continue;
			/* stale file of a backend that is gone (e.g. killed) */
			if (BackendPidGetProc(r.pid) == NULL)
				continue;
			r.info.model[NAMEDATALEN - 1] = '\0';
			r.info.phase[sizeof(r.info.phase) - 1] = '\0';
			if (visible(&r))
				put_row(ts, tupdesc, &r);
		}
		if (dir)
			FreeDir(dir);
	}
	PG_RETURN_NULL();
}
