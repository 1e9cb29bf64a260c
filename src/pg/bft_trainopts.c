/*
 * bft_trainopts.c — bft_train() options beyond the Trainer hyper-parameters:
 * class weights (weighted cross-entropy), the best epoch and early stopping.
 */
#include "bft_pg.h"

#include <float.h>
#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"

#include "defaults.h"

static void
cw_error(const char *msg, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("class_weights: %s", msg),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("Use 'balanced', a JSON object of weights by label name ('{\"pos\": 4}'), "
					 "or weights by class id as a JSON array ('[1, 4]') or an array literal ('{1,4}').")));
}

/* One weight: a positive finite number. */
static float
cw_value(const char *key, const char *v)
{
	char	   *end;
	double		d;

	if (v == NULL)
		cw_error(psprintf("the weight of %s is null", key), NULL);
	errno = 0;
	d = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || !(d > 0) || isinf(d) || d > FLT_MAX)
		cw_error(psprintf("the weight of %s is \"%s\"", key, v),
				 "Weights must be positive finite numbers.");
	return (float) d;
}

/* 'balanced': class k gets n / (classes present x count_k); a class without training rows keeps 1. */
static void
cw_balanced(float *w, int K, const int32 *labels, int64 n)
{
	int64	   *cnt = palloc0(sizeof(int64) * K);
	int64		i;
	int			present = 0;
	int			k;

	for (i = 0; i < n; i++)
		cnt[labels[i]]++;
	for (k = 0; k < K; k++)
		present += cnt[k] > 0;
	for (k = 0; k < K; k++)
		if (cnt[k] > 0)
			w[k] = (float) ((double) n / ((double) present * (double) cnt[k]));
	pfree(cnt);
}

/*
 * Read weights s into SPI_tuptable as (label name or NULL, value, JSON type):
 * a JSON object (by name; *object set), a JSON array or an array literal (by
 * class id, exactly K).
 */
static void
cw_read(const char *s, int K, bool *object)
{
	/* '{' then '"' or '}': a JSON object; otherwise an array literal */
	const char *p = s + 1;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	int			ret;

	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	*object = s[0] == '{' && (*p == '"' || *p == '}');
	values[0] = CStringGetTextDatum(s);
	if (*object)
		ret = SPI_execute_with_args("SELECT key, value, pg_catalog.jsonb_typeof(value) "
									"FROM pg_catalog.jsonb_each($1::pg_catalog.jsonb)",
									1, argtypes, values, NULL, true, 0);
	else if (s[0] == '[')
		ret = SPI_execute_with_args("SELECT NULL, value, pg_catalog.jsonb_typeof(value) "
									"FROM pg_catalog.jsonb_array_elements($1::pg_catalog.jsonb) "
									"WITH ORDINALITY ORDER BY ordinality",
									1, argtypes, values, NULL, true, 0);
	else
		ret = SPI_execute_with_args("SELECT NULL, value::text, CASE WHEN value IS NULL THEN 'null' ELSE 'number' END "
									"FROM pg_catalog.unnest($1::pg_catalog.float8[]) WITH ORDINALITY AS u(value, o) ORDER BY o",
									1, argtypes, values, NULL, true, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read class_weights");
	if (!*object && SPI_processed != (uint64) K)
		cw_error(psprintf("%llu weights for %d classes", (unsigned long long) SPI_processed, K),
				 "An array gives one weight per class id 0, 1, ..., K-1.");
	if (*object && SPI_processed == 0)
		cw_error("the object names no label", NULL);
}

/* Explicit weights s (a JSON object by label name, or one weight per class id) into w. */
static void
cw_explicit(const char *s, int K, char **names, float *w)
{
	bool		object;
	uint64		i;

	SPI_connect();
	cw_read(s, K, &object);
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		char	   *val = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);
		char	   *typ = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3);
		int			id = (int) i;

		if (object)
		{
			for (id = 0; id < K; id++)
				if (strcmp(names[id], key) == 0)
					break;
			if (id == K)
				cw_error(psprintf("no label is named \"%s\"", key), NULL);
		}
		if (typ == NULL || strcmp(typ, "number") != 0)
			cw_error(psprintf("the weight of %s is not a number (%s)", object ? psprintf("\"%s\"", key) :
							  psprintf("class %d", id), typ ? typ : "null"),
					 "Weights must be positive finite numbers.");
		w[id] = cw_value(object ? psprintf("\"%s\"", key) : psprintf("class %d", id), val);
	}
	SPI_finish();
}

/* ", \"class_weights\": {name: w, ...}" */
static void
cw_append_json(StringInfo buf, char **names, const float *w, int K)
{
	int			k;

	appendStringInfoString(buf, ", \"class_weights\": {");
	for (k = 0; k < K; k++)
	{
		if (k > 0)
			appendStringInfoString(buf, ", ");
		escape_json(buf, names[k]);
		appendStringInfo(buf, ": %.6g", w[k]);
	}
	appendStringInfoChar(buf, '}');
}

/*
 * Resolve the class_weights argument for K classes named names[] (ids 0..K-1)
 * on the n training labels: NULL when spec is NULL or 'none'; 'balanced' gives
 * class k the weight n / (classes present x count_k) (scikit-learn's
 * compute_class_weight; a class without training rows gets 1); a JSON object
 * gives weights by label name (labels it does not name get 1); a JSON array
 * or an array literal gives one weight per class id (exactly K).  The
 * resolved weights are appended to metrics as "class_weights": {name: w},
 * and the argument to params as "class_weights" ("balanced" or the object).
 * Returns a palloc'd array of K weights.
 */
float *
bft_class_weights(const char *spec, int K, char **names, const int32 *labels, int64 n,
				  StringInfo params, StringInfo metrics)
{
	float	   *w;
	const char *s = spec;
	int			k;

	if (spec == NULL)
		return NULL;
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	if (pg_strcasecmp(s, "none") == 0)
		return NULL;
	w = palloc(sizeof(float) * K);
	for (k = 0; k < K; k++)
		w[k] = 1.0f;
	if (pg_strcasecmp(s, "balanced") == 0)
	{
		cw_balanced(w, K, labels, n);
		appendStringInfoString(params, ", \"class_weights\": \"balanced\"");
	}
	else if (s[0] == '{' || s[0] == '[')
	{
		cw_explicit(s, K, names, w);
		cw_append_json(params, names, w, K);
	}
	else
		cw_error(psprintf("\"%s\" is not understood", s), NULL);
	cw_append_json(metrics, names, w, K);
	return w;
}

/* "loss", "accuracy" or "macro_f1". */
const char *
bft_metric_name(int metric)
{
	return metric == BFT_METRIC_ACCURACY ? "accuracy" :
		metric == BFT_METRIC_MACRO_F1 ? "macro_f1" : "loss";
}

/*
 * Check and resolve load_best_model_at_end (-1: not given), metric_for_best_model
 * (NULL: not given) and early_stopping_patience (has_patience: given; 0: none) as Trainer:
 * the metric defaults to the loss; early stopping implies keeping the best
 * epoch unless load_best_model_at_end => false says otherwise; both need a
 * validation split (vfrac > 0).
 */
void
bft_best_opts(int load_best, const char *metric, bool has_patience, int patience, double vfrac,
			  BftBestOpts *out)
{
	out->metric = BFT_METRIC_LOSS;
	if (metric)
	{
		const char *m = metric;

		if (strncmp(m, "eval_", 5) == 0)
			m += 5;
		if (strcmp(m, "loss") == 0)
			out->metric = BFT_METRIC_LOSS;
		else if (strcmp(m, "accuracy") == 0)
			out->metric = BFT_METRIC_ACCURACY;
		else if (strcmp(m, "macro_f1") == 0)
			out->metric = BFT_METRIC_MACRO_F1;
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("metric_for_best_model must be 'loss', 'accuracy' or 'macro_f1', not \"%s\"",
							metric)));
	}
	if (has_patience && (patience < 0 || patience > 100000))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("early_stopping_patience must be between 0 (no early stopping) and 100000")));
	out->patience = has_patience ? patience : 0;
	out->load_best = load_best >= 0 ? load_best != 0 : out->patience > 0;
	if ((out->load_best || out->patience > 0 || metric) && !(vfrac > 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s needs a validation_fraction above 0",
						out->patience > 0 ? "early_stopping_patience" :
						out->load_best ? "load_best_model_at_end" : "metric_for_best_model"),
				 errhint("The epochs are compared on the validation rows.")));
}
