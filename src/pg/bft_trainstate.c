/*
 * bft_trainstate.c — where bft_train() keeps the per-epoch state that
 * resume => true continues from.
 *
 * A failed or cancelled bft_train() rolls its transaction back, so the state
 * cannot live in tables: it is a file per (database, role, model name, phase)
 * in $PGDATA/bft_train_state/ (mode 0700, the server's OS user), written by
 * the engine after every completed epoch (atomically: a temporary file
 * renamed over the old state). Only the role that trained can resume (the
 * role is part of the file name), and the engine refuses a state whose
 * fingerprint (data, options, initial weights) differs.
 *
 * Cleanup: the states of a training are deleted when the transaction that
 * stored its version commits; bft_drop_model(name) (all versions) deletes the
 * states of that name at commit; any training first deletes states older
 * than bft.train_state_retention (and temporary files a killed backend left).
 */
#include "bft_pg.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "common/file_perm.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/memutils.h"

#define STATE_DIR "bft_train_state"

bool		bft_save_train_state = true;
int			bft_train_state_retention = 7 * 86400;

/* ---- file names ---- */

/* "<db>_<role>_<hex of the name>" */
static char *hex_name(const char *model);

static char *
state_prefix(Oid db, Oid role, const char *model)
{
	return psprintf("%s/%s/%u_%u_%s", DataDir, STATE_DIR, db, role, hex_name(model));
}

/*
 * The state file of this database, the current role, model and phase
 * ("train" or "mlm"); creates the directory when create.
 */
char *
bft_train_state_path(const char *model, const char *phase, bool create)
{
	if (create)
	{
		char	   *dir = psprintf("%s/%s", DataDir, STATE_DIR);

		if (MakePGDirectory(dir) != 0 && errno != EEXIST)
			ereport(ERROR,
					(errcode_for_file_access(),
					 errmsg("could not create directory \"%s\": %m", dir)));
	}
	return psprintf("%s.%s", state_prefix(MyDatabaseId, GetUserId(), model), phase);
}

/* Does path exist (a regular file)? */
bool
bft_train_state_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* ---- deletion at commit ---- */

typedef struct PendingUnlink
{
	Oid			db;
	Oid			role;			/* InvalidOid: any role */
	char	   *hexname;
	int			nest_level;
	struct PendingUnlink *next;
} PendingUnlink;

static PendingUnlink *pending = NULL;
static bool callbacks_registered = false;

static char *
hex_name(const char *model)
{
	StringInfoData s;
	const unsigned char *p;

	initStringInfo(&s);
	for (p = (const unsigned char *) model; *p; p++)
		appendStringInfo(&s, "%02x", *p);
	return s.data;
}

/* Unlink every state file (any phase, temporary ones too) of p. */
static void
unlink_pending(const PendingUnlink *p)
{
	char	   *dir = psprintf("%s/%s", DataDir, STATE_DIR);
	DIR		   *d = AllocateDir(dir);
	struct dirent *de;
	size_t		hlen = strlen(p->hexname);

	if (d == NULL)
	{
		pfree(dir);
		return;
	}
	while ((de = ReadDirExtended(d, dir, LOG)) != NULL)
	{
		unsigned int db,
					role;
		int			off = 0;

		if (sscanf(de->d_name, "%u_%u_%n", &db, &role, &off) != 2 || off == 0 ||
			db != p->db || (OidIsValid(p->role) && role != p->role) ||
			strncmp(de->d_name + off, p->hexname, hlen) != 0 || de->d_name[off + hlen] != '.')
			continue;
		{
			char	   *path = psprintf("%s/%s", dir, de->d_name);

			if (unlink(path) != 0 && errno != ENOENT)
				ereport(LOG,
						(errcode_for_file_access(),
						 errmsg("could not remove training state \"%s\": %m", path)));
			pfree(path);
		}
	}
	FreeDir(d);
	pfree(dir);
}

static void
free_pending(PendingUnlink *p)
{
	pfree(p->hexname);
	pfree(p);
}

static void
state_xact_cb(XactEvent event, void *arg)
{
	PendingUnlink *p;

	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		for (p = pending; p; p = p->next)
			unlink_pending(p);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
	{
		while (pending)
		{
			p = pending->next;
			free_pending(pending);
			pending = p;
		}
	}
}

static void
state_subxact_cb(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	PendingUnlink **pp = &pending;

	while (*pp)
	{
		PendingUnlink *p = *pp;

		if (p->nest_level >= level)
		{
			if (event == SUBXACT_EVENT_ABORT_SUB)
			{
				*pp = p->next;
				free_pending(p);
				continue;
			}
			if (event == SUBXACT_EVENT_COMMIT_SUB)
				p->nest_level = level - 1;
		}
		pp = &p->next;
	}
}

static void
unlink_at_commit(Oid role, const char *model)
{
	PendingUnlink *p;

	if (!callbacks_registered)
	{
		RegisterXactCallback(state_xact_cb, NULL);
		RegisterSubXactCallback(state_subxact_cb, NULL);
		callbacks_registered = true;
	}
	p = MemoryContextAlloc(TopMemoryContext, sizeof(PendingUnlink));
	p->db = MyDatabaseId;
	p->role = role;
	p->hexname = MemoryContextStrdup(TopMemoryContext, hex_name(model));
	p->nest_level = GetCurrentTransactionNestLevel();
	p->next = pending;
	pending = p;
}

/* The current role's states of model in this database go when the transaction commits. */
void
bft_train_state_discard_at_commit(const char *model)
{
	unlink_at_commit(GetUserId(), model);
}

/* Every role's states of model in this database go when the transaction commits. */
void
bft_train_state_discard_model_at_commit(const char *model)
{
	unlink_at_commit(InvalidOid, model);
}

/* ---- retention ---- */

/*
 * Delete states (and temporary files) older than bft.train_state_retention,
 * of every database and role.
 */
void
bft_train_state_expire(void)
{
	char	   *dir = psprintf("%s/%s", DataDir, STATE_DIR);
	DIR		   *d;
	struct dirent *de;
	time_t		now = time(NULL);

	if (bft_train_state_retention <= 0)
		return;
	d = AllocateDir(dir);
	if (d == NULL)
		return;
	while ((de = ReadDirExtended(d, dir, LOG)) != NULL)
	{
		char	   *path;
		struct stat st;

		if (de->d_name[0] == '.')
			continue;
		path = psprintf("%s/%s", dir, de->d_name);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode) &&
			now - st.st_mtime > bft_train_state_retention)
		{
			if (unlink(path) == 0)
				ereport(DEBUG1, (errmsg("removed expired training state \"%s\"", path)));
		}
		pfree(path);
	}
	FreeDir(d);
}
