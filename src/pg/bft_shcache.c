/*
 * bft_shcache.c — one copy of a model's weights per server: the shared
 * read-only cache.
 *
 * The first backend that needs a model version loads it as before (from the
 * large object, checked against bft.max_memory) and publishes its parameter
 * block, already converted to fp32 in the engine's layout, as a file:
 *
 *   base/pgsql_tmp/pgsql_tmp_bft_shared/<db>_<weights>_<id>_<created>.w
 *
 * (a 4 kB header naming the row and the layout, then the floats).  Every
 * other backend, and every parallel worker, maps that file read-only
 * (MAP_SHARED, PROT_READ) and points the engine at it
 * (bft_model_wrap_params): the weights exist once, in the page cache, however
 * many sessions use them, and a new session's first call costs a mapping
 * instead of a load.
 *
 * Why a file and not dynamic shared memory:
 *  - it needs no shared_preload_libraries: the directory is the registry (a
 *    name is the key), where a DSM segment would need a handle kept in memory
 *    every backend can find, i.e. preloaded shared memory;
 *  - DSM segments live in /dev/shm, which containers often cap at 64 MB; a
 *    BERT-base model is 440 MB;
 *  - the kernel keeps an unlinked file's pages for as long as someone maps
 *    them, so a drop or a newer version never changes the bytes under a
 *    backend still using the old ones, and frees them when the last one lets
 *    go;
 *  - clean page-cache pages can be reclaimed under memory pressure and read
 *    back, where shared memory stays resident;
 *  - a name starting with pgsql_tmp under base/pgsql_tmp is PostgreSQL's
 *    temporary-file convention: the postmaster removes the whole directory at
 *    start-up and after a crash (remove_temp_files_after_crash), and base
 *    backups and pg_rewind skip it.  So a kill -9 (which restarts every
 *    backend) leaves nothing behind, and no cached copy outlives a restart.
 *
 * Coordination, with locks the kernel releases when a process dies however it
 * dies:
 *  - a backend mapping a file holds flock(LOCK_SH) on it for as long as it
 *    maps it; eviction takes flock(LOCK_EX|LOCK_NB), so only unmapped files
 *    are evicted;
 *  - a file being written is a .tmp that its writer holds flock(LOCK_EX) on
 *    (a .tmp anyone else can lock is a dead writer's: removed);
 *  - one backend builds a given version at a time (a heavyweight advisory
 *    lock of bft's own kind, so that waits are interruptible and seen by the
 *    deadlock detector); the others wait and then map its file;
 *  - the size accounting (bft.shared_cache_size bounds all files together)
 *    happens under flock(LOCK_EX) of the directory's .lock, held only for a
 *    directory scan.
 *
 * Nothing here decides who may use a model: the callers in bft_store.c find
 * the row as the calling user and check its weights first, exactly as for a
 * private load, and only then look for its file.
 */
#include "bft_pg.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "common/file_perm.h"
#include "storage/fd.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "storage/procsignal.h"
#include "storage/sinvaladt.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"

#define SH_PARENT "base/pgsql_tmp"
#define SH_DIR SH_PARENT "/pgsql_tmp_bft_shared"
#define SH_DIRLOCK SH_DIR "/.lock"
#define SH_HEADER 4096
#define SH_MAGIC "bftshw1"
#define SH_ADVISORY_KIND 16966	/* locktag field4 (pg_locks.objsubid): not
								 * one SQL's advisory locks use (1, 2) */

int			bft_shared_cache_size_kb = 0;

/* The file's first bytes (the rest of its 4 kB header is zero). */
typedef struct ShHeader
{
	char		magic[8];
	uint32		header_size;
	uint32		db;
	uint32		weights;
	uint32		pad;
	int64		id;
	int64		created;
	uint64		num_params;
	uint64		layout;
	int32		pooler;
	int32		classifier;
	int32		mlm;
	int32		num_labels;
	int32		ngram;			/* the n-gram head's features (0: none) */
} ShHeader;

/* Files of dropped rows to unlink when the transaction commits. */
typedef struct PendingForget
{
	Oid			db;
	Oid			weights;		/* InvalidOid: every file of db */
} PendingForget;

static PendingForget *pending = NULL;
static int	npending = 0;
static int	cap_pending = 0;
static bool xact_cb_registered = false;
static bool wake_at_commit = false;

static void
key_name(const BftShKey *k, const char *suffix, char *buf, size_t len)
{
	snprintf(buf, len, SH_DIR "/%u_%u_" INT64_FORMAT "_%llx%s", k->db, k->weights, k->id,
			 (unsigned long long) k->created, suffix);
}

/* Is sharing on (bft.shared_cache_size > 0)? */
bool
bft_shcache_enabled(void)
{
	return bft_shared_cache_size_kb > 0;
}

/* Create the directory if missing; false (with errno) when impossible. */
static bool
ensure_dir(void)
{
	if (mkdir(SH_PARENT, pg_dir_create_mode) < 0 && errno != EEXIST)
		return false;
	if (mkdir(SH_DIR, pg_dir_create_mode) < 0 && errno != EEXIST)
		return false;
	return true;
}

static void
unmap_close(BftShMap *map)
{
	if (map->addr == NULL)
		return;
	munmap(map->addr, map->len);
	close(map->fd);
	ReleaseExternalFD();
	map->addr = NULL;
	map->fd = -1;
	map->len = 0;
}

/*
 * Map fd (held with LOCK_SH or LOCK_EX by the caller, of the file of k)
 * read-only and check its header.  Fills map and *h; false when the file is
 * not a complete copy of k (or on any system error).
 */
static bool
map_fd(int fd, const BftShKey *k, BftShMap *map, BftShHeader *h)
{
	struct stat st;
	void	   *addr;
	const ShHeader *fh;

	if (fstat(fd, &st) < 0 || st.st_nlink == 0 || st.st_size < SH_HEADER)
		return false;
	addr = mmap(NULL, (size_t) st.st_size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (addr == MAP_FAILED)
		return false;
	fh = (const ShHeader *) addr;
	if (memcmp(fh->magic, SH_MAGIC, sizeof(fh->magic)) != 0 || fh->header_size != SH_HEADER ||
		fh->db != k->db || fh->weights != k->weights || fh->id != k->id || fh->created != k->created ||
		fh->num_params == 0 ||
		fh->num_params > ((uint64) st.st_size - SH_HEADER) / sizeof(float) ||
		(uint64) st.st_size != SH_HEADER + fh->num_params * sizeof(float))
	{
		munmap(addr, (size_t) st.st_size);
		return false;
	}
	map->fd = fd;
	map->addr = addr;
	map->len = (Size) st.st_size;
	h->num_params = fh->num_params;
	h->layout = fh->layout;
	h->parts.pooler = fh->pooler;
	h->parts.classifier = fh->classifier;
	h->parts.mlm = fh->mlm;
	h->parts.ngram = fh->ngram;
	h->num_labels = fh->num_labels;
	h->params = (const float *) ((const char *) addr + SH_HEADER);
	return true;
}

/*
 * Map the published copy of k, if there is one: the file's shared lock marks
 * it in use until bft_shcache_detach.  false when there is none (or it cannot
 * be used: the caller then loads a private copy).
 */
bool
bft_shcache_attach(const BftShKey *k, BftShMap *map, BftShHeader *h)
{
	char		path[MAXPGPATH];
	int			fd;

	map->fd = -1;
	map->addr = NULL;
	map->len = 0;
	if (!AcquireExternalFD())
		return false;
	key_name(k, ".w", path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
	{
		ReleaseExternalFD();
		return false;
	}
	/* LOCK_EX is only ever held for an instant (eviction, publishing) */
	if (flock(fd, LOCK_SH) < 0 || !map_fd(fd, k, map, h))
	{
		close(fd);
		ReleaseExternalFD();
		return false;
	}
	return true;
}

/* Unmap and release (the file may then be evicted). */
void
bft_shcache_detach(BftShMap *map)
{
	if (map->addr)
		(void) futimens(map->fd, NULL); /* mtime: when it was last let go */
	unmap_close(map);
}

/* Was the mapped file unlinked (dropped, evicted) since it was mapped? */
bool
bft_shcache_unlinked(const BftShMap *map)
{
	struct stat st;

	return map->addr != NULL && fstat(map->fd, &st) == 0 && st.st_nlink == 0;
}

/* The heavyweight lock serialising the build of k's file. */
static void
key_locktag(const BftShKey *k, LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, k->db, k->weights, (uint32) k->id, SH_ADVISORY_KIND);
}

/* Take k's build lock (waits while another backend loads and publishes k;
 * released by bft_shcache_unlock_key or at the end of the transaction). */
void
bft_shcache_lock_key(const BftShKey *k)
{
	LOCKTAG		tag;

	key_locktag(k, &tag);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

/* Release k's build lock. */
void
bft_shcache_unlock_key(const BftShKey *k)
{
	LOCKTAG		tag;

	key_locktag(k, &tag);
	(void) LockRelease(&tag, ExclusiveLock, false);
}

typedef struct DirFile
{
	char		name[NAME_MAX + 1];
	off_t		size;
	time_t		mtime;
	long		mtime_ns;
} DirFile;

static int
dirfile_cmp(const void *a, const void *b)
{
	const DirFile *x = a;
	const DirFile *y = b;

	if (x->mtime != y->mtime)
		return x->mtime < y->mtime ? -1 : 1;
	if (x->mtime_ns != y->mtime_ns)
		return x->mtime_ns < y->mtime_ns ? -1 : 1;
	return strcmp(x->name, y->name);
}

static bool
has_suffix(const char *s, const char *suffix)
{
	size_t		n = strlen(s),
				m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Unlink dir/name if nobody holds a lock on it (unmapped copy, dead writer). */
static bool
unlink_if_unlocked(const char *name)
{
	char		path[MAXPGPATH];
	int			fd;
	bool		done = false;

	snprintf(path, sizeof(path), SH_DIR "/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	if (flock(fd, LOCK_EX | LOCK_NB) == 0)
		done = unlink(path) == 0 || errno == ENOENT;
	close(fd);
	return done;
}

/*
 * Under the directory lock: make room for need more bytes within
 * bft.shared_cache_size, evicting the least recently let go copies nobody
 * maps (and a dead writer's leftovers).  true when it fits.  Only system
 * calls and malloc: never raises an error.
 */
static bool
make_room(Size need)
{
	Size		limit = (Size) bft_shared_cache_size_kb * 1024;
	DIR		   *dir;
	struct dirent *de;
	DirFile    *files = NULL;
	int			n = 0,
				cap = 0,
				i;
	Size		total = 0;
	bool		fits;

	if (need > limit)
		return false;
	dir = opendir(SH_DIR);
	if (dir == NULL)
		return false;
	while ((de = readdir(dir)) != NULL)
	{
		struct stat st;
		char		path[MAXPGPATH];
		bool		tmp = has_suffix(de->d_name, ".tmp");

		if (!tmp && !has_suffix(de->d_name, ".w"))
			continue;
		snprintf(path, sizeof(path), SH_DIR "/%s", de->d_name);
		if (stat(path, &st) < 0)
			continue;
		if (tmp)
		{
			/* a writer holds its .tmp locked until it is published */
			if (!unlink_if_unlocked(de->d_name))
				total += (Size) st.st_size;
			continue;
		}
		total += (Size) st.st_size;
		if (n == cap)
		{
			DirFile    *nf;

			cap = cap ? cap * 2 : 32;
			nf = realloc(files, sizeof(DirFile) * cap);
			if (nf == NULL)
			{
				free(files);
				closedir(dir);
				return false;
			}
			files = nf;
		}
		strlcpy(files[n].name, de->d_name, sizeof(files[n].name));
		files[n].size = st.st_size;
		files[n].mtime = st.st_mtim.tv_sec;
		files[n].mtime_ns = st.st_mtim.tv_nsec;
		n++;
	}
	closedir(dir);
	if (n > 1)
		qsort(files, n, sizeof(DirFile), dirfile_cmp);
	for (i = 0; i < n && total + need > limit; i++)
		if (unlink_if_unlocked(files[i].name))
			total -= Min(total, (Size) files[i].size);
	fits = total + need <= limit;
	free(files);
	return fits;
}

static bool
write_all(int fd, const char *p, Size len, off_t off)
{
	while (len > 0)
	{
		ssize_t		w;

		/* a cancel stops the copy (the caller keeps its private model) */
		if (InterruptPending)
			return false;
		w = pwrite(fd, p, Min(len, (Size) 8 << 20), off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return false;
		p += w;
		off += w;
		len -= (Size) w;
	}
	return true;
}

/*
 * Publish m's parameters as the shared copy of k (the caller holds k's build
 * lock) and map it: on success map and *h describe the mapping, whose block
 * holds exactly m's parameters.  false (nothing published, map empty) when
 * the cache is off or full of copies in use, or on any system error: the
 * caller keeps its private model.  Never raises an error (m is not yet in a
 * cache that would free it).
 */
bool
bft_shcache_publish(const BftShKey *k, const bft_model *m, uint64 layout, BftShMap *map, BftShHeader *h)
{
	char		tmp[MAXPGPATH];
	char		suffix[32];
	char		path[MAXPGPATH];
	Size		len = SH_HEADER + m->num_params * sizeof(float);
	char	   *hdr;
	ShHeader	fh;
	int			lockfd,
				fd = -1;
	bool		ok;

	map->fd = -1;
	map->addr = NULL;
	map->len = 0;
	if (!bft_shcache_enabled() || !ensure_dir())
		return false;
	if (!AcquireExternalFD())
		return false;
	/* one writer per .tmp (a parallel worker and its leader may both build) */
	snprintf(suffix, sizeof(suffix), ".%d.tmp", MyProcPid);
	key_name(k, suffix, tmp, sizeof(tmp));
	key_name(k, ".w", path, sizeof(path));

	/* reserve the space: a .tmp of the full size, locked by its writer */
	lockfd = open(SH_DIRLOCK, O_RDWR | O_CREAT | O_CLOEXEC, pg_file_create_mode);
	if (lockfd < 0)
	{
		ReleaseExternalFD();
		return false;
	}
	ok = flock(lockfd, LOCK_EX) == 0 && make_room(len);
	if (ok)
	{
		fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, pg_file_create_mode);
		ok = fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0 && ftruncate(fd, (off_t) len) == 0;
	}
	close(lockfd);				/* releases the directory lock */
	if (!ok)
	{
		if (fd >= 0)
		{
			unlink(tmp);
			close(fd);
		}
		ReleaseExternalFD();
		return false;
	}

	memset(&fh, 0, sizeof(fh));
	memcpy(fh.magic, SH_MAGIC, sizeof(fh.magic));
	fh.header_size = SH_HEADER;
	fh.db = k->db;
	fh.weights = k->weights;
	fh.id = k->id;
	fh.created = k->created;
	fh.num_params = m->num_params;
	fh.layout = layout;
	fh.pooler = m->parts.pooler;
	fh.classifier = m->parts.classifier;
	fh.mlm = m->parts.mlm;
	fh.ngram = m->parts.ngram;
	fh.num_labels = m->cfg.num_labels;
	hdr = calloc(1, SH_HEADER);
	ok = hdr != NULL;
	if (ok)
	{
		memcpy(hdr, &fh, sizeof(fh));
		ok = write_all(fd, hdr, SH_HEADER, 0) &&
			write_all(fd, (const char *) m->params_mem, m->num_params * sizeof(float), SH_HEADER);
		free(hdr);
	}
	/* publish under the final name unless another copy got there first */
	if (ok && link(tmp, path) < 0)
		ok = false;
	unlink(tmp);
	if (!ok)
	{
		close(fd);
		ReleaseExternalFD();
		/* a copy published meanwhile is as good as ours */
		return bft_shcache_attach(k, map, h);
	}
	/* still holding LOCK_EX from the .tmp: a shared lock from here on */
	if (flock(fd, LOCK_SH) < 0 || !map_fd(fd, k, map, h))
	{
		unlink(path);
		close(fd);
		ReleaseExternalFD();
		return false;
	}
	return true;
}

/* Unlink k's copy: it exists but this backend cannot use it (a damaged
 * file, or another build's parameter layout).  A backend mapping it keeps
 * its pages; the copy this backend publishes takes the name. */
void
bft_shcache_discard(const BftShKey *k)
{
	char		path[MAXPGPATH];

	key_name(k, ".w", path, sizeof(path));
	(void) unlink(path);
}

/* Unlink the published files of k's row if they are still there (the row
 * turned out to be gone). */
void
bft_shcache_unlink_key(const BftShKey *k)
{
	char		path[MAXPGPATH];

	key_name(k, ".w", path, sizeof(path));
	(void) unlink(path);
}

/* Unlink every file of db (weights: of that weights object only). */
static void
forget_files(Oid db, Oid weights)
{
	char		prefix[64];
	size_t		plen;
	DIR		   *dir;
	struct dirent *de;

	if (OidIsValid(weights))
		snprintf(prefix, sizeof(prefix), "%u_%u_", db, weights);
	else
		snprintf(prefix, sizeof(prefix), "%u_", db);
	plen = strlen(prefix);
	dir = opendir(SH_DIR);
	if (dir == NULL)
		return;
	while ((de = readdir(dir)) != NULL)
	{
		char		path[MAXPGPATH];

		if (strncmp(de->d_name, prefix, plen) != 0 || !has_suffix(de->d_name, ".w"))
			continue;
		snprintf(path, sizeof(path), SH_DIR "/%s", de->d_name);
		/* mapped or not: a backend using it keeps its pages until it lets go */
		if (unlink(path) < 0 && errno != ENOENT)
			elog(LOG, "could not remove \"%s\": %m", path);
	}
	closedir(dir);
}

/*
 * Unlink the copies of databases that no longer exist (DROP DATABASE runs no
 * trigger of bft's; nobody can map them any more).  Called before a publish.
 */
void
bft_shcache_sweep_dropped_databases(void)
{
	DIR		   *dir = opendir(SH_DIR);
	struct dirent *de;
	Oid			known[16];
	bool		exists[16];
	int			nknown = 0;

	if (dir == NULL)
		return;
	while ((de = readdir(dir)) != NULL)
	{
		char		path[MAXPGPATH];
		char	   *end;
		unsigned long db = strtoul(de->d_name, &end, 10);
		bool		there = true;
		int			i;

		if (end == de->d_name || *end != '_' || !has_suffix(de->d_name, ".w") || db == MyDatabaseId)
			continue;
		for (i = 0; i < nknown && known[i] != (Oid) db; i++)
			;
		if (i < nknown)
			there = exists[i];
		else
		{
			there = SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum((Oid) db));
			if (nknown < lengthof(known))
			{
				known[nknown] = (Oid) db;
				exists[nknown++] = there;
			}
		}
		if (there)
			continue;
		snprintf(path, sizeof(path), SH_DIR "/%s", de->d_name);
		(void) unlink(path);
	}
	closedir(dir);
}

static void
shcache_xact_cb(XactEvent event, void *arg)
{
	int			i;

	if (event == XACT_EVENT_COMMIT)
		for (i = 0; i < npending; i++)
			forget_files(pending[i].db, pending[i].weights);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE ||
		event == XACT_EVENT_PARALLEL_COMMIT || event == XACT_EVENT_PARALLEL_ABORT)
		npending = 0;
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_ABORT)
		wake_at_commit = false;
}

/*
 * After a commit that unlinked copies, once its invalidation messages are
 * sent (they are sent after the commit callbacks, before the locks go): ask
 * the other backends of this database to read them now, as PostgreSQL asks
 * a backend that falls behind, so that idle sessions let go of the dropped
 * copies (bft's relcache callback) instead of at their next statement.
 */
static void
shcache_release_cb(ResourceReleasePhase phase, bool isCommit, bool isTopLevel, void *arg)
{
	int			id;

	if (phase != RESOURCE_RELEASE_AFTER_LOCKS || !isTopLevel || !wake_at_commit)
		return;
	wake_at_commit = false;
	if (!isCommit)
		return;
	for (id = 1; id <= MaxBackends; id++)
	{
		PGPROC	   *proc = BackendIdGetProc(id);

		if (proc != NULL && proc->pid != 0 && proc->pid != MyProcPid && proc->databaseId == MyDatabaseId)
			(void) SendProcSignal(proc->pid, PROCSIG_CATCHUP_INTERRUPT, id);
	}
}

/*
 * When this transaction commits, unlink the shared copies of weights object
 * weights of this database (InvalidOid: of every model of this database):
 * the rows are being deleted.  Backends that map one keep their copy until
 * they let go of it: a statement using it finishes with it; the others let
 * go when they read the commit's invalidation (woken to do so at once).
 */
void
bft_shcache_forget_at_commit(Oid weights)
{
	if (!xact_cb_registered)
	{
		RegisterXactCallback(shcache_xact_cb, NULL);
		RegisterResourceReleaseCallback(shcache_release_cb, NULL);
		xact_cb_registered = true;
	}
	wake_at_commit = true;
	if (npending == cap_pending)
	{
		int			ncap = cap_pending ? cap_pending * 2 : 16;

		if (pending == NULL)
			pending = MemoryContextAlloc(TopMemoryContext, sizeof(PendingForget) * ncap);
		else
			pending = repalloc(pending, sizeof(PendingForget) * ncap);
		cap_pending = ncap;
	}
	pending[npending].db = MyDatabaseId;
	pending[npending].weights = weights;
	npending++;
}
