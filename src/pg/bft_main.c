/*
 * bft_main.c — module initialisation, GUCs, engine error mapping and small
 * helpers shared by the SQL functions.
 */
#include "bft_pg.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "catalog/pg_type.h"
#include "resource.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/tuplestore.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(bft_devices_sql);

int			bft_threads = 0;
int			bft_model_cache_size = 2;
char	   *bft_default_model = NULL;
int			bft_progress_interval = 5;
char	   *bft_device = NULL;
int			bft_cuda_precision = BFT_PRECISION_BF16;
int			bft_cpu_precision = BFT_PRECISION_FP32;
int			bft_max_memory_kb = 0;
int			bft_max_jobs = 4;
int			bft_max_jobs_per_role = 2;
int			bft_job_retention = 30 * 86400;
double		bft_multilabel_threshold = 0.5;
int			bft_long_text = BFT_LONG_TEXT_TRUNCATE;
int			bft_chunk_stride = 32;

/* An interrupt (cancel, statement_timeout) caught by the engine's hook. */
static ErrorData *engine_interrupt = NULL;

static const struct config_enum_entry cuda_precision_options[] = {
	{"bf16", BFT_PRECISION_BF16, false},
	{"fp32", BFT_PRECISION_FP32, false},
	{NULL, 0, false}
};

static const struct config_enum_entry cpu_precision_options[] = {
	{"fp32", BFT_PRECISION_FP32, false},
	{"bf16", BFT_PRECISION_BF16, false},
	{"int8", BFT_PRECISION_INT8, false},
	{NULL, 0, false}
};

static const struct config_enum_entry long_text_options[] = {
	{"truncate", BFT_LONG_TEXT_TRUNCATE, false},
	{"mean", BFT_LONG_TEXT_MEAN, false},
	{"max", BFT_LONG_TEXT_MAX, false},
	{NULL, 0, false}
};

void		_PG_init(void);

/* bft.device: only the name is checked here (no CUDA call: the postmaster may run this). */
static bool
check_bft_device(char **newval, void **extra, GucSource source)
{
	if (*newval == NULL || bft_device_parse(*newval) < 0)
	{
		GUC_check_errdetail("bft.device must be 'cpu' or 'cuda'.");
		return false;
	}
	return true;
}

/*
 * Default of bft.max_memory: a quarter of the memory this server may use —
 * physical RAM, or the cgroup's limit when it is lower — so that one backend
 * asking for too much fails with an error instead of waking the OOM killer
 * (which makes the postmaster restart every session).
 */
static int
default_max_memory_kb(void)
{
	double		bytes = (double) sysconf(_SC_PHYS_PAGES) * (double) sysconf(_SC_PAGESIZE);
	FILE	   *f;

	f = fopen("/sys/fs/cgroup/memory.max", "r");	/* cgroup v2 */
	if (f == NULL)
		f = fopen("/sys/fs/cgroup/memory/memory.limit_in_bytes", "r");	/* v1 */
	if (f != NULL)
	{
		double		lim;

		if (fscanf(f, "%lf", &lim) == 1 && lim > 0 && lim < bytes)
			bytes = lim;
		fclose(f);
	}
	if (!(bytes > 0))
		bytes = 4.0 * 1024 * 1024 * 1024;
	bytes /= 4;
	if (bytes / 1024 > INT_MAX)
		return INT_MAX;
	if (bytes < 64.0 * 1024 * 1024)
		bytes = 64.0 * 1024 * 1024;
	return (int) (bytes / 1024);
}

/*
 * The engine's interrupt hook (resource.h): called on this backend's thread
 * from long engine loops. It runs CHECK_FOR_INTERRUPTS; an error (cancel,
 * statement_timeout) is kept and 1 returned so that the engine unwinds and
 * frees its state; bft_engine_interrupt_rethrow() raises it afterwards.
 */
static int
engine_poll(void *ctx)
{
	return bft_poll_interrupts(&engine_interrupt);
}

/* A caught interrupt never outlives its transaction (its memory does not). */
static void
engine_interrupt_xact_cb(XactEvent event, void *arg)
{
	engine_interrupt = NULL;
}

static void
engine_interrupt_subxact_cb(SubXactEvent event, SubTransactionId mySubid,
							SubTransactionId parentSubid, void *arg)
{
	if (event == SUBXACT_EVENT_ABORT_SUB)
		engine_interrupt = NULL;
}

void
bft_engine_interrupt_rethrow(void)
{
	if (engine_interrupt != NULL)
	{
		ErrorData  *ed = engine_interrupt;

		engine_interrupt = NULL;
		ReThrowError(ed);
	}
}

/* GUCs of the engine: threads, the model cache, the default model, progress, device and precision. */
static void
define_engine_gucs(void)
{
	DefineCustomIntVariable("bft.threads",
							"Threads used by bft's engine (BLAS and its own loops); 0 means all CPUs.",
							NULL, &bft_threads, 0, 0, 1024,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.model_cache_size",
							"Number of models each backend keeps loaded for classification.",
							"The least recently used model is freed when a new one is needed.",
							&bft_model_cache_size, 2, 1, 100,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("bft.default_model",
							   "Model used by bft_classify() and friends when none is given.",
							   "Empty: the most recently deployed model with a classifier.",
							   &bft_default_model, "",
							   PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.progress_interval",
							"Seconds between NOTICE progress messages of bft_train(); 0 disables them.",
							NULL, &bft_progress_interval, 5, 0, 86400,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomStringVariable("bft.device",
							   "Compute device of bft's engine: 'cpu' or 'cuda'.",
							   "Classification always uses it; bft_train() when its device argument is NULL. "
							   "'cuda' needs a CUDA build of bft and an NVIDIA GPU of compute capability 8.0 "
							   "or newer; without one it is an ERROR, never a silent fallback to the CPU.",
							   &bft_device, "cpu",
							   PGC_USERSET, 0, check_bft_device, NULL, NULL);
	DefineCustomEnumVariable("bft.cuda_precision",
							 "Arithmetic of bft's engine on the CUDA device: 'bf16' or 'fp32'.",
							 "bf16 (the default): matrix products with bf16 operands and fp32 "
							 "accumulation, fp32 master weights, optimizer state and statistics. "
							 "fp32: everything in fp32 (slower; agrees with the CPU to rounding). "
							 "The CPU follows bft.cpu_precision.",
							 &bft_cuda_precision, BFT_PRECISION_BF16, cuda_precision_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("bft.cpu_precision",
							 "Arithmetic of bft's engine on the CPU: 'fp32', 'bf16' or 'int8'.",
							 "fp32 (the default): OpenBLAS sgemm, everything in fp32. bf16: matrix "
							 "products with bf16 operands and fp32 accumulation through oneDNN, fp32 "
							 "master weights, optimizer state and statistics (bft.cuda_precision's bf16); "
							 "needs AVX512-BF16 or AMX. int8 (classification only): linear layers with "
							 "int8 weights per output channel and int8 activations per row; needs VNNI or "
							 "AMX. Both need oneDNN (libdnnl2); without it or the instructions they are "
							 "an ERROR, never a silent fallback to fp32. bft_train's train_precision "
							 "argument overrides it for one training.",
							 &bft_cpu_precision, BFT_PRECISION_FP32, cpu_precision_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
}

/* GUCs of resources: memory, the shared cache, background jobs. */
static void
define_resource_gucs(void)
{
	DefineCustomIntVariable("bft.max_memory",
							"Memory bft's engine may use in one backend: cached models plus the current operation.",
							"A model, batch, vocabulary or architecture that would need more fails up front "
							"(SQLSTATE 53200) instead of risking the OOM killer. Default: a quarter of the "
							"server's memory (RAM or cgroup limit).",
							&bft_max_memory_kb, default_max_memory_kb(), 16 * 1024, INT_MAX,
							PGC_SUSET, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.shared_cache_size",
							"Memory for the one copy of each model's weights that all backends share; 0 turns sharing off.",
							"The first backend that classifies with a model version publishes its weights, and every "
							"other backend and parallel worker maps them read-only instead of loading its own copy. "
							"Copies nobody maps are evicted, least recently used first, to stay within this size; "
							"when copies in use fill it a backend loads a private copy as with 0. Default: a quarter "
							"of the server's memory (RAM or cgroup limit).",
							&bft_shared_cache_size_kb, default_max_memory_kb(), 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.max_jobs",
							"Background training jobs (queued or running) allowed at once in the whole server.",
							"Each job holds one of max_worker_processes until it ends.",
							&bft_max_jobs, 4, 0, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.max_jobs_per_role",
							"Background training jobs (queued or running) one role may have at once.",
							NULL, &bft_max_jobs_per_role, 2, 0, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.job_retention",
							"How long finished background jobs stay in bft.train_jobs; 0 keeps them.",
							"Older finished jobs are deleted when a job is submitted or finishes.",
							&bft_job_retention, 30 * 86400, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* GUCs of classification: multi-label threshold, long texts. */
static void
define_classify_gucs(void)
{
	/* multi-label classifiers */
	DefineCustomRealVariable("bft.multilabel_threshold",
							 "Probability from which a multi-label classifier assigns a label.",
							 "bft_predict, bft_classify_labels and bft_evaluate of multi-label models "
							 "return every label whose sigmoid probability is at least this.",
							 &bft_multilabel_threshold, 0.5, 0.0, 1.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	/* texts longer than max_length */
	DefineCustomEnumVariable("bft.long_text",
							 "How classification and embedding treat texts longer than the model's max_length.",
							 "'truncate' (the default) keeps the first max_length tokens; 'mean' and 'max' "
							 "run every window of max_length tokens (consecutive windows sharing "
							 "bft.chunk_stride tokens) and average the windows' probabilities (embeddings: "
							 "weighted by the windows' token counts) or take each label's (dimension's) largest.",
							 &bft_long_text, BFT_LONG_TEXT_TRUNCATE, long_text_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.chunk_stride",
							"Tokens consecutive windows of a long text share (bft.long_text 'mean' or 'max').",
							"At most half a window is shared, so windows always advance.",
							&bft_chunk_stride, 32, 0, 8192,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

/* GUCs of saved training states (resume => true). */
static void
define_train_state_gucs(void)
{
	DefineCustomBoolVariable("bft.save_train_state",
							 "Whether bft_train() saves its state after every epoch, for resume => true.",
							 "The state (weights and optimizer moments, about 3-4 times the model's size) "
							 "is a file in the data directory, deleted when the training's version is stored.",
							 &bft_save_train_state, true,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bft.train_state_retention",
							"How long the saved state of an interrupted bft_train() is kept for resume => true; 0 saves none.",
							"Older states are deleted when a training starts.",
							&bft_train_state_retention, 7 * 86400, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* Loading bft: its GUCs, the engine's interrupt hook, cache and transaction callbacks, shared memory. */
void
_PG_init(void)
{
	define_engine_gucs();
	define_resource_gucs();
	define_classify_gucs();
	define_train_state_gucs();
	bft_set_interrupt_hook(engine_poll, NULL);
	bft_cache_register_callbacks();
	RegisterXactCallback(engine_interrupt_xact_cb, NULL);
	RegisterSubXactCallback(engine_interrupt_subxact_cb, NULL);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("bft");
#else
	EmitWarningsOnPlaceholders("bft");
#endif

	/* Shared memory for bft.progress when preloaded; files otherwise. */
	bft_progress_shmem_init();
}

/*
 * BFT_DEVICE_* for a device name (NULL: bft.device). ERROR when the name is
 * unknown or the device unusable in this backend (CUDA is initialised here,
 * lazily, never in the postmaster).
 */
int
bft_resolve_device(const char *name)
{
	const char *n = name ? name : (bft_device ? bft_device : "cpu");
	int			dev = bft_device_parse(n);
	bft_error	err;

	if (dev < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown device \"%s\"", n),
				 errhint("Use 'cpu' or 'cuda'.")));
	if (dev != BFT_DEVICE_CPU && bft_device_available(dev, &err) != BFT_OK)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("device \"%s\" is not available", n),
				 errdetail("%s", err.msg),
				 errhint("Use device => 'cpu', or SET bft.device = 'cpu'.")));
	return dev;
}

/* Apply bft.threads before an engine call (threads start lazily there). */
void
bft_apply_threads(void)
{
	bft_set_threads(bft_threads);
}

/* The engine precision for device: bft.cuda_precision on CUDA, bft.cpu_precision on the CPU. */
int
bft_precision_for(int device)
{
	return device == BFT_DEVICE_CUDA ? bft_cuda_precision : bft_cpu_precision;
}

/*
 * ERROR (0A000) when device cannot compute in precision prec in this
 * backend: bf16 or int8 on a CPU without the instructions or without oneDNN
 * (loaded here, at the first request), or int8 for a training. Never a
 * silent fallback. from_arg: prec is bft_train's train_precision argument
 * (named in the messages instead of bft.cpu_precision).
 */
static void
check_precision(int device, int prec, bool training, bool from_arg)
{
	bft_error	err;
	const char *src = from_arg ? "train_precision =>" : "bft.cpu_precision =";
	const char *fix = from_arg ? "Pass train_precision => 'fp32'" : "SET bft.cpu_precision = 'fp32'";

	if (training && prec == BFT_PRECISION_INT8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s 'int8' is for classification only", src),
				 errhint("%s or 'bf16' to train; int8 classifies a trained model (SET bft.cpu_precision = 'int8').",
						 fix)));
	if (device != BFT_DEVICE_CPU || prec == BFT_PRECISION_FP32)
		return;
	if (bft_precision_available(device, prec, &err) != BFT_OK)
		ereport(ERROR,
				(errcode(bft_engine_errcode(err.code)),
				 errmsg("%s arithmetic on the CPU is not available", bft_precision_name(prec)),
				 errdetail("%s", err.msg),
				 errhint("%s, or run on a CPU with %s with oneDNN (libdnnl2) installed.", fix,
						 prec == BFT_PRECISION_INT8 ? "AVX512-VNNI, AVX-VNNI or AMX"
						 : "AVX512-BF16 or AMX")));
}

/* check_precision with device's configured precision (bft_precision_for). */
void
bft_check_precision(int device, bool training)
{
	check_precision(device, bft_precision_for(device), training, false);
}

/*
 * bft_train's train_precision argument: 'fp32', 'bf16' or 'int8' (refused: 0A000,
 * classification only); anything else is 22023. NULL: -1 (the device's
 * setting applies).
 */
int
bft_parse_train_precision(const char *arg)
{
	int			prec;

	if (arg == NULL)
		return -1;
	prec = bft_precision_parse(arg);
	if (prec != BFT_PRECISION_FP32 && prec != BFT_PRECISION_BF16 && prec != BFT_PRECISION_INT8)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid precision \"%s\"", arg),
				 errhint("Use 'fp32' or 'bf16', or NULL for bft.cpu_precision (bft.cuda_precision on CUDA).")));
	if (prec == BFT_PRECISION_INT8)
		check_precision(BFT_DEVICE_CPU, prec, true, true);
	return prec;
}

/*
 * The precision a training on device computes in: prec (from
 * bft_parse_train_precision) when given, else the device's setting; ERROR
 * (0A000) when the device cannot compute in it here.
 */
int
bft_train_precision(int device, int prec)
{
	if (prec < 0)
	{
		bft_check_precision(device, true);
		return bft_precision_for(device);
	}
	check_precision(device, prec, true, true);
	return prec;
}

/* Apply bft.device before an inference call (bft_train takes its device from its argument). */
void
bft_apply_device(void)
{
	bft_error	err;

	int			dev = bft_resolve_device(NULL);

	bft_check_precision(dev, false);
	if (bft_set_device(dev, bft_precision_for(dev), &err) != BFT_OK)
		bft_report_engine_error(&err, "could not select bft.device");
}

/*
 * bft_devices() -> (device, available, name, detail): the CPU and the CUDA
 * device as this backend sees them; detail is the arithmetic used, or why the
 * device cannot be used. Asking initialises CUDA in this backend (a context on
 * the GPU for the rest of the session), never in the postmaster.
 */
Datum
bft_devices_sql(PG_FUNCTION_ARGS)
{
	static const Oid types[4] = {TEXTOID, BOOLOID, TEXTOID, TEXTOID};
	TupleDesc	tupdesc;
	Tuplestorestate *ts;
	bft_error	err;
	int			devs[2] = {BFT_DEVICE_CPU, BFT_DEVICE_CUDA};
	int			i;

	bft_srf_materialize(fcinfo, &tupdesc, &ts, types, 4);
	for (i = 0; i < 2; i++)
	{
		Datum		values[4];
		bool		nulls[4] = {false, false, false, false};
		bool		ok = bft_device_available(devs[i], &err) == BFT_OK;
		char		detail[sizeof(err.msg) + 64];

		/* the CPU in bf16 or int8: usable when oneDNN and the instructions are there */
		if (ok && devs[i] == BFT_DEVICE_CPU && bft_cpu_precision != BFT_PRECISION_FP32)
			ok = bft_precision_available(BFT_DEVICE_CPU, bft_cpu_precision, &err) == BFT_OK;
		if (!ok)
			snprintf(detail, sizeof(detail), "%s", err.msg);
		else if (devs[i] == BFT_DEVICE_CPU)
			snprintf(detail, sizeof(detail), "%s (bft.cpu_precision), %ld CPUs online, bft.threads = %d",
					 bft_cpu_precision == BFT_PRECISION_BF16 ? "bf16 mixed precision"
					 : bft_cpu_precision == BFT_PRECISION_INT8 ? "int8 classification" : "fp32",
					 sysconf(_SC_NPROCESSORS_ONLN), bft_threads);
		else
			snprintf(detail, sizeof(detail), "%s (bft.cuda_precision)",
					 bft_cuda_precision == BFT_PRECISION_FP32 ? "fp32"
					 : "bf16 mixed precision");
		values[0] = CStringGetTextDatum(devs[i] == BFT_DEVICE_CPU ? "cpu" : "cuda");
		values[1] = BoolGetDatum(ok);
		values[2] = CStringGetTextDatum(bft_device_name(devs[i]));
		values[3] = CStringGetTextDatum(detail);
		tuplestore_putvalues(ts, tupdesc, values, nulls);
	}
	PG_RETURN_NULL();
}

/* SQLSTATE for an engine status. */
int
bft_engine_errcode(int code)
{
	switch (code)
	{
		case BFT_EINVAL:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case BFT_EFORMAT:
		case BFT_EMISMATCH:
			return ERRCODE_DATA_CORRUPTED;
		case BFT_ENOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		case BFT_EIO:
			return ERRCODE_IO_ERROR;
		case BFT_ECANCEL:
			return ERRCODE_QUERY_CANCELED;
		case BFT_EDEVICE:
			return ERRCODE_SYSTEM_ERROR;
		case BFT_EUNSUPPORTED:
			return ERRCODE_FEATURE_NOT_SUPPORTED;
		case BFT_EUNSAFE:
			/* a checkpoint asking to run code: refused, never executed */
			return ERRCODE_INSUFFICIENT_PRIVILEGE;
		default:
			return ERRCODE_INTERNAL_ERROR;
	}
}

/*
 * ereport(ERROR) for a failed engine call: "what" is the message, the
 * engine's own text goes to the DETAIL.
 */
void
bft_report_engine_error(const bft_error *err, const char *what)
{
	int			code = err ? err->code : BFT_EINVAL;
	const char *msg = (err && err->msg[0]) ? err->msg : "unknown engine error";

	/* the engine stopped because of a cancel or timeout: raise that one */
	bft_engine_interrupt_rethrow();
	ereport(ERROR,
			(errcode(bft_engine_errcode(code)),
			 errmsg("%s", what),
			 errdetail("%s", msg),
			 code == BFT_ENOMEM ?
			 errhint("Use a smaller batch_size, max_length or model, or raise bft.max_memory if the server has the memory.") :
			 (code == BFT_EMISMATCH || code == BFT_EFORMAT) ?
			 errhint("The model's config, vocabulary and weights must come from the same checkpoint.") :
			 code == BFT_EUNSAFE ?
			 errhint("Only the tensors of a state dict saved with torch.save are read; convert other files to model.safetensors with a trusted tool.") : 0));
}

/* Append "key": v to a JSON object being built (null for NaN/inf). */
void
bft_json_key_float(StringInfo buf, const char *key, double v, bool comma)
{
	if (comma)
		appendStringInfoString(buf, ", ");
	escape_json(buf, key);
	if (isnan(v) || isinf(v))
		appendStringInfoString(buf, ": null");
	else
		appendStringInfo(buf, ": %.6g", v);
}

/*
 * Set up a materialized set-returning function: the caller puts rows into
 * *tupstore with tuplestore_putvalues.  Works on PostgreSQL 13-17.
 */
void
bft_srf_materialize(FunctionCallInfo fcinfo, TupleDesc *tupdesc,
					Tuplestorestate **tupstore, const Oid *types, int natts)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext oldcxt;
	TupleDesc	td;
	int			i;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		(rsinfo->allowedModes & SFRM_Materialize) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &td) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* a stale SQL definition must give an error, never a crash */
	for (i = 0; i < natts && td->natts == natts; i++)
		if (TupleDescAttr(td, i)->atttypid != types[i])
			break;
	if (td->natts != natts || i < natts)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("the SQL definition of this bft function does not match the bft library"),
				 errhint("Run ALTER EXTENSION bft UPDATE, or reinstall bft.")));

	oldcxt = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	td = CreateTupleDescCopy(td);
	*tupstore = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = *tupstore;
	rsinfo->setDesc = td;
	MemoryContextSwitchTo(oldcxt);
	*tupdesc = td;
}

/*
 * Cancellation poll handed to the engine (bft_train_opts.poll,
 * bft_predict_poll): runs on the calling thread between encoder layers.
 * When an interrupt is pending it runs CHECK_FOR_INTERRUPTS; if that raises
 * an error (cancel, statement_timeout), the error is copied into *ctx (an
 * ErrorData **), the error state flushed and 1 returned so the engine
 * unwinds and frees its state; the caller re-throws it afterwards.
 */
int
bft_poll_interrupts(void *ctx)
{
	ErrorData **edata = (ErrorData **) ctx;
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile int stop = 0;

	if (*edata != NULL)
		return 1;
	if (!InterruptPending)
		return 0;
	PG_TRY();
	{
		CHECK_FOR_INTERRUPTS();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		*edata = CopyErrorData();
		FlushErrorState();
		stop = 1;
	}
	PG_END_TRY();
	return stop;
}

/* bft.max_memory in bytes. */
Size
bft_memory_limit(void)
{
	return (Size) bft_max_memory_kb * 1024;
}

/*
 * Refuse, before any work, an operation that needs more than bft.max_memory
 * leaves beside the models this backend has cached (cached models not used by
 * the current statement are evicted first). SQLSTATE 53200, with a hint
 * naming what to lower.
 */
void
bft_memory_require(Size need, const char *what, const char *hint)
{
	Size		limit = bft_memory_limit();
	Size		cached = bft_cache_make_room(need > limit ? limit : limit - need);

	if (need <= limit && cached <= limit - need)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OUT_OF_MEMORY),
			 errmsg("%s needs %zu MB, more than bft.max_memory allows", what,
					(need + (1 << 20) - 1) >> 20),
			 errdetail("bft.max_memory is %zu MB; models cached by this backend use %zu MB.",
					   limit >> 20, cached >> 20),
			 errhint("%s", hint)));
}

/* Give the engine what bft.max_memory leaves beside the cached models. */
void
bft_engine_budget(void)
{
	Size		limit = bft_memory_limit();
	Size		cached = bft_cache_bytes();

	bft_set_memory_budget(cached >= limit ? 1 : limit - cached);
}

/* Monotonic seconds. */
double
bft_now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double) ts.tv_sec + ts.tv_nsec * 1e-9;
}
