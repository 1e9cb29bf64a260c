/*
 * bft_pg.h — declarations shared by the PostgreSQL glue (src/pg).
 *
 * The glue is thin: SQL functions, the model store (bft.models rows plus
 * large objects), the per-backend model cache, progress reporting, GUCs and
 * the mapping of engine errors to ereport.  All math is in src/engine.
 */
#ifndef BFT_PG_H
#define BFT_PG_H

#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "utils/json.h"
#include "utils/timestamp.h"

#include "bft_error.h"
#include "model.h"
#include "tokenizer.h"
#include "train.h"

/* GUCs (bft_main.c) */
extern int	bft_threads;
extern int	bft_model_cache_size;
extern char *bft_default_model;
extern int	bft_progress_interval;
extern int	bft_max_memory_kb;
extern int	bft_max_jobs;
extern int	bft_max_jobs_per_role;
extern int	bft_job_retention;
extern double bft_multilabel_threshold;
extern int	bft_long_text;
extern int	bft_chunk_stride;

/* bft.long_text */
#define BFT_LONG_TEXT_TRUNCATE	0
#define BFT_LONG_TEXT_MEAN		1
#define BFT_LONG_TEXT_MAX		2

/* bft_main.c: errors and small helpers */
extern void bft_apply_threads(void);
extern char *bft_device;
extern int	bft_cuda_precision;
extern int	bft_cpu_precision;
extern int	bft_resolve_device(const char *name);
extern int	bft_precision_for(int device);
extern void bft_check_precision(int device, bool training);
extern int	bft_parse_train_precision(const char *arg);
extern int	bft_train_precision(int device, int prec);
extern void bft_apply_device(void);
extern void bft_report_engine_error(const bft_error *err, const char *what) pg_attribute_noreturn();
extern int	bft_engine_errcode(int code);
extern void bft_json_key_float(StringInfo buf, const char *key, double v, bool comma);
extern void bft_srf_materialize(FunctionCallInfo fcinfo, TupleDesc *tupdesc,
								struct Tuplestorestate **tupstore,
								const Oid *types, int natts);
extern double bft_now_seconds(void);
extern int	bft_poll_interrupts(void *ctx);
extern void bft_engine_interrupt_rethrow(void);
extern Size bft_memory_limit(void);
extern void bft_memory_require(Size need, const char *what, const char *hint);
extern void bft_engine_budget(void);

/* bft_shcache.c: the server-wide shared read-only copy of a model's weights */
typedef struct BftShKey
{
	Oid			db;				/* MyDatabaseId */
	Oid			weights;		/* the row's identity: weights object, */
	int64		id;				/* id and created_at */
	TimestampTz created;
} BftShKey;

/* A mapping of a shared copy (addr NULL: none). */
typedef struct BftShMap
{
	int			fd;				/* held with flock(LOCK_SH) while mapped */
	char	   *addr;
	Size		len;
} BftShMap;

/* What a shared copy's header says. */
typedef struct BftShHeader
{
	uint64		num_params;
	uint64		layout;			/* hash of the parameter layout */
	bft_parts	parts;
	int			num_labels;
	const float *params;		/* num_params floats, read-only */
} BftShHeader;

extern int	bft_shared_cache_size_kb;
extern bool bft_shcache_enabled(void);
extern bool bft_shcache_attach(const BftShKey *k, BftShMap *map, BftShHeader *h);
extern bool bft_shcache_publish(const BftShKey *k, const bft_model *m, uint64 layout,
								BftShMap *map, BftShHeader *h);
extern void bft_shcache_detach(BftShMap *map);
extern bool bft_shcache_unlinked(const BftShMap *map);
extern void bft_shcache_lock_key(const BftShKey *k);
extern void bft_shcache_unlock_key(const BftShKey *k);
extern void bft_shcache_unlink_key(const BftShKey *k);
extern void bft_shcache_discard(const BftShKey *k);
extern void bft_shcache_forget_at_commit(Oid weights);
extern void bft_shcache_sweep_dropped_databases(void);

/*
 * A model read from bft.models and loaded by the engine.  Entries of the
 * per-backend cache own their bft_model (malloc'd by the engine); its
 * parameters may be a mapping of the shared copy (shared.addr set).
 */
typedef struct BftModelEntry
{
	char	   *name;			/* model name (TopMemoryContext) */
	int32		want;			/* the version asked for: BFT_VERSION_* or N */
	int64		row_id;			/* bft.models.id of the loaded version */
	TimestampTz row_created;	/* its created_at and weights: with the id, the */
	Oid			row_weights;	/* row's identity (ids repeat after DROP/CREATE
								 * EXTENSION or a restore into the database) */
	int32		version;
	int			max_length;		/* sequence length used when classifying */
	bft_model  *model;			/* engine model (malloc'd) */
	TimestampTz checked_ts;		/* statement start of the last revalidation */
	uint32		checked_lxid;	/* ... and its local transaction id */
	Oid			checked_user;	/* ... and the role it was done as */
	uint64		last_used;		/* LRU clock */
	Size		bytes;			/* memory the loaded model takes */
	BftShMap	shared;			/* the shared copy its parameters point into */
	char	   *pooling;		/* its stored embedding pooling (bft_pooling JSON;
								 * "unsupported:<why>"), NULL when none
								 * (TopMemoryContext) */
} BftModelEntry;

/* One row of bft.models as bft reads it (bft_model_row_read). */
typedef struct BftModelRow
{
	int64		id;
	int32		version;
	Oid			weights;
	TimestampTz created_at;
	int			nlabels;
	int64		size;			/* -1 when NULL */
	bool		has_mlm;
	/* full reads only (palloc'd, server encoding; NULL when SQL NULL): */
	char	   *name;
	char	   *config;
	char	   *tokenizer_config;
	char	   *vocab;
	int			max_length;		/* params->>'max_length', 0 when absent */
	char	   *pooling;		/* params->'pooling' as in BftModelEntry, or NULL */
} BftModelRow;

/* bft_store.c: the model store */
#define BFT_VERSION_DEPLOYED	0	/* "name": the deployed version (latest when none is) */
#define BFT_VERSION_LATEST		(-1)	/* "name@latest": the highest version */
extern char *bft_parse_model_ref(const char *ref, int32 *version);
extern int32 bft_ref_version(const char *ref, int32 ref_version, bool arg_null, int32 arg);
extern void bft_check_model_name(const char *name);
extern Oid	bft_models_relid(void);
extern Oid	bft_extension_owner(void);
extern bool bft_store_secured(void);
extern void bft_unlink_dropped_weights(const Oid *loids, int n);
extern BftModelEntry *bft_get_model(const char *name);
extern char *bft_resolve_default_model(void);
extern void bft_cache_invalidate_all(void);
extern void bft_cache_register_callbacks(void);
extern Size bft_cache_bytes(void);
extern Size bft_cache_make_room(Size target);
extern char *bft_read_lo_pages(Oid loid, Size *len);
extern char *bft_read_lo_checked(Oid loid, Size *len);
extern Oid	bft_write_lo(const char *data, Size len);
extern int	bft_model_max_length(const bft_model *m, int stored);
extern int64 bft_find_model(const char *name, int32 version, int32 *version_out);
extern bool bft_model_row_read(int64 id, bool full, BftModelRow *row);
extern bft_model *bft_load_model_id(int64 id, const char *name, Size extra, int *max_length,
								   char **pooling);
extern bft_model *bft_load_model_row(const char *name, int32 version, int64 *row_id,
									 int32 *version_out, int *max_length);
extern int32 bft_next_version(const char *name);
extern int32 bft_store_model(const char *name, const char *base, bft_model *m,
							 const char *params_json, const char *metrics_json,
							 bool deploy);
extern char **bft_model_label_names(const bft_model *m);
extern char *bft_to_utf8(const char *s, int len, int *outlen);
extern char *bft_from_utf8(const char *s, int len);
extern void bft_lock_model_name(const char *name);
extern void bft_check_store(const char *name);
extern void bft_check_store_privileges(void);
extern void bft_require_model_read(const char *what);
extern void bft_free_model_cb(void *arg);

/* bft_train.c: reading a table's (text, label) rows */
typedef struct BftSource
{
	Oid			relid;
	char	   *relname;		/* qualified, quoted */
	char	   *query;			/* SELECT text::text, label::int8|text|int8[]|text[] FROM rel */
	bool		label_is_int;	/* integer labels (class ids) */
	bool		label_is_array; /* label sets: a multi-label classifier */
} BftSource;

extern void bft_prepare_source(Oid relid, Name text_col, Name label_col, BftSource *src);

/* bft_rows.c: label names → class ids (names[id]; look-ups by name) */
typedef struct BftLabelMap
{
	struct HTAB *ids;			/* name → first class id of that name */
	char	  **names;			/* (n) class id → name */
	int			n;
	int			cap;
	MemoryContext cxt;
} BftLabelMap;

extern void bft_label_map_init(BftLabelMap *map, const char *what, int cap, MemoryContext cxt);
extern int	bft_label_map_find(const BftLabelMap *map, const char *name);
extern int	bft_label_map_add(BftLabelMap *map, const char *name);
extern int	bft_label_map_get(BftLabelMap *map, const char *name);

/* bft_rows.c: one pass over a source's rows (bft_read_rows) */
typedef struct BftRowReader
{
	const BftSource *src;
	MemoryContext cxt;			/* where row() runs */
	bool		want_labels;	/* decode the label values for row() */
	/* one row: its text and label values el[0 .. nel) (elnull[i]: NULL element) */
	void		(*row) (void *arg, text *t, Datum *el, bool *elnull, int nel);
	/* a row with a text and a NULL label, or NULL: such rows are skipped */
	void		(*unlabeled) (void *arg, text *t);
	void		(*batch_start) (void *arg); /* before each fetched batch, or NULL */
	void		(*batch_end) (void *arg);	/* after each batch, or NULL */
	void	   *arg;
	int64		rows;			/* rows passed to row() */
	int64		skipped;		/* rows with a NULL text or label (not passed on) */
	int64		unlabeled_rows; /* rows passed to unlabeled() */
} BftRowReader;

extern void bft_read_rows(BftRowReader *rd);
extern void bft_rows_report(const BftRowReader *rd);

/* Positions of the SQL arguments of bft_train and bft_train_async (sql/bft--0.2.0.sql). */
typedef enum BftTrainArg
{
	TA_RELATION,
	TA_TEXT_COLUMN,
	TA_LABEL_COLUMN,
	TA_EPOCHS,
	TA_MODEL,
	TA_BASE,
	TA_BATCH_SIZE,
	TA_LEARNING_RATE,
	TA_MAX_LENGTH,
	TA_WARMUP_RATIO,
	TA_WEIGHT_DECAY,
	TA_DROPOUT,
	TA_SHUFFLE,
	TA_SEED,
	TA_VALIDATION_FRACTION,
	TA_DEPLOY,
	TA_DEVICE,
	TA_ARCHITECTURE,
	TA_MLM_EPOCHS,
	TA_GROUP_BY_LENGTH,
	TA_CLASS_WEIGHTS,			/* the first argument after bft 0.1.0's 20 */
	TA_LOAD_BEST_MODEL_AT_END,
	TA_METRIC_FOR_BEST_MODEL,
	TA_EARLY_STOPPING_PATIENCE,
	TA_RESUME,
	TA_TRAIN_PRECISION
} BftTrainArg;

/* bft 0.1.0's SQL definition of bft_train has the first 20 */
#define TA_COUNT_0_1_0 TA_CLASS_WEIGHTS

/* deploy => policies (bft_parse_deploy; its metrics are the engine's
 * BFT_METRIC_*, train.h) */
#define BFT_DEPLOY_ALWAYS		0
#define BFT_DEPLOY_NEVER		1
#define BFT_DEPLOY_IF_BETTER	2
extern int	bft_parse_deploy(const char *deploy, int *metric);

/*
 * bft_classify.c: encoded texts — windows of token ids ([CLS] … [SEP]) and,
 * per text, its windows first[i] .. first[i+1] (one when truncating).
 */
typedef struct BftEncoded
{
	int64		ntext;
	int64		nwin;
	int32	   *tokens;			/* window w at tokens[offsets[w] .. offsets[w+1]) */
	Size		tok_cap;
	int64		total;
	int64	   *offsets;		/* (nwin + 1) */
	Size		off_cap;
	int64	   *first;			/* (ntext + 1) */
	Size		first_cap;
	float	   *ng_logp;		/* (ntext, K): the n-gram head's log-probabilities of
								 * each text (bft_encoded_add_text), or NULL */
	Size		ng_cap;			/* floats */
} BftEncoded;

extern void bft_encoded_init(BftEncoded *enc);
extern void bft_encoded_add(BftEncoded *enc, const bft_tokenizer *tok, int max_length,
							const char *s, int len);
extern void bft_encoded_add_text(BftEncoded *enc, const bft_model *m, int max_length,
								 const char *s, int len);
extern Size bft_encoded_bytes(const BftEncoded *enc);
extern void bft_encoded_probs(const bft_model *m, const BftEncoded *enc, float *probs);

/* bft_classify.c: batched inference helpers */
extern int32 *bft_encode_text(const bft_tokenizer *tok, const char *s, int len, int max_length,
							  int *n);
extern void bft_predict_encoded(const bft_model *m, int64 n, const int32 *tokens,
								const int64 *offsets, float *probs);

/* bft_progress.c: live progress (shared memory or per-backend files) */
typedef struct BftProgressInfo
{
	char		model[NAMEDATALEN];
	char		phase[16];
	int32		epoch;
	int32		epochs;
	int64		step;
	int64		steps;
	float4		loss;
	float8		samples_per_s;
	TimestampTz started;
	float8		eta_s;
} BftProgressInfo;

extern void bft_progress_shmem_init(void);
extern void bft_progress_begin(const char *model, const char *phase);
extern void bft_progress_update(const BftProgressInfo *info, bool force);
extern void bft_progress_end(void);

/* bft_trainopts.c: bft_train() options (class weights) */
extern float *bft_class_weights(const char *spec, int K, char **names, const int32 *labels,
								int64 n, StringInfo params, StringInfo metrics);

/* load_best_model_at_end, metric_for_best_model, early_stopping_patience */
typedef struct BftBestOpts
{
	bool		load_best;
	int			metric;			/* BFT_METRIC_* */
	int			patience;		/* 0: no early stopping */
} BftBestOpts;

extern void bft_best_opts(int load_best, const char *metric, bool has_patience, int patience,
						  double vfrac, BftBestOpts *out);
extern const char *bft_metric_name(int metric);

/* bft_trainstate.c: per-epoch training states for resume => true */
extern bool bft_save_train_state;
extern int	bft_train_state_retention;
extern char *bft_train_state_path(const char *model, const char *phase, bool create);
extern bool bft_train_state_exists(const char *path);
extern void bft_train_state_discard_at_commit(const char *model);
extern void bft_train_state_discard_model_at_commit(const char *model);
extern void bft_train_state_expire(void);

#endif							/* BFT_PG_H */
