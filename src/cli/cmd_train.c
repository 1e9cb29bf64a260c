/*
 * cmd_train.c — `bft-cli train`: fine-tune a model directory on a CSV file
 * and write the result as a Hugging Face model directory.
 *
 * Labels: when every label field is a non-negative integer, it is the class
 * id; the model's classifier is kept when the ids fit its num_labels (HF
 * semantics), else a fresh head for max id + 1 classes (or --num-labels K) is
 * made. Otherwise labels are names: mapped through the model's id2label when
 * it names them all (head kept), else to ids in sorted (byte) order, the names
 * becoming id2label.
 *
 * Output (stdout): one line per epoch
 *   epoch 1/3 loss 0.693147 samples_per_s 12.3 seconds 45.6 [eval_loss … eval_accuracy … eval_macro_f1 …]
 * then "train_loss … steps … seconds … samples_per_s …" and "saved DIR".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rng.h"
#include "train.h"

static void train_usage(FILE *f)
{
    fprintf(f,
            "usage: bft-cli train --model DIR --csv FILE --text-col C --label-col C --epochs N --out DIR\n"
            "         [--batch-size B] [--lr X] [--warmup-ratio R] [--weight-decay W] [--max-length N]\n"
            "         [--seed S] [--no-shuffle] [--dropout P] [--num-labels K] [--validation-fraction F]\n"
            "         [--mlm-epochs N] [--mlm-lr X] [--group-by-length] [--max-grad-norm G]\n"
            "         [--threads N] [--device cpu|cuda] [--precision auto|fp32|bf16] [--verbose]\n"
            "         [--log-steps]\n"
            "         [--class-weights balanced|W0,W1,...|NAME=W,...]\n"
            "         [--load-best] [--metric-for-best loss|accuracy|macro_f1] [--early-stopping-patience N]\n"
            "         [--save-state FILE [--resume]]\n"
            "       bft-cli train --from-scratch [--vocab-size V] [--lower] [--layers L] [--hidden H]\n"
            "         [--heads A] [--intermediate I] [--max-positions P] --csv FILE ... --out DIR\n"
            "  CSV: RFC 4180 with a header row; columns by name. Labels: integer ids or names.\n"
            "  --validation-fraction F holds out a stratified fraction (from --seed) and\n"
            "  evaluates it after every epoch. --mlm-epochs N first pre-trains the MLM head\n"
            "  and encoder on the CSV texts (the model needs cls.predictions.*).\n"
            "  --from-scratch instead of --model: a WordPiece vocabulary of V tokens is learned\n"
            "  from the CSV texts (cased unless --lower) and a BERT of the given shape is\n"
            "  initialised like Hugging Face (with an MLM head when --mlm-epochs > 0).\n"
            "  --log-steps prints \"step S/T epoch E loss L lr X\" after every optimizer step\n"
            "  (the batch's loss and the learning rate it used; Trainer's logging_steps=1).\n"
            "  --class-weights: weighted cross-entropy; balanced = n / (classes x count) over\n"
            "  the training rows, or one weight per class id, or weights by label name (others 1).\n"
            "  --load-best ends with the weights of the best epoch by --metric-for-best (default\n"
            "  loss) on the validation rows; --early-stopping-patience N stops after N epochs\n"
            "  without improvement (and implies --load-best). Both need --validation-fraction.\n"
            "  --save-state FILE writes the training state after every epoch (FILE.mlm for\n"
            "  --mlm-epochs); --resume continues from it after the last completed epoch (same\n"
            "  data and options: the result is the uninterrupted run's, bit for bit).\n");
}

typedef struct progress_ctx {
    const char *what;
    int verbose;
    double last_print;
    int log_steps;
} progress_ctx;

/* x as the shortest decimal that reads back as the same double (Python's repr). */
static const char *shortest(char *buf, size_t len, double x)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, len, "%.*g", prec, x);
        if (strtod(buf, NULL) == x)
            break;
    }
    return buf;
}

static int on_progress(void *ctx, const bft_progress *p)
{
    progress_ctx *c = ctx;
    if (p->phase == 1 && p->restored) {
        printf("%sepoch %d/%d restored\n", c->what, p->epoch, p->epochs);
    } else if (p->phase == 1) {
        printf("%sepoch %d/%d loss %.6f samples_per_s %.2f seconds %.1f", c->what, p->epoch, p->epochs,
               (double)p->loss, p->samples_per_s, p->elapsed_s);
        if (!isnan(p->eval_loss))
            printf(" eval_loss %.6f eval_accuracy %.4f eval_macro_f1 %.4f", (double)p->eval_loss,
                   (double)p->eval_accuracy, (double)p->eval_macro_f1);
        putchar('\n');
        fflush(stdout);
    } else if (c->log_steps) {
        char lr[32];
        printf("%sstep %lld/%lld epoch %d loss %.9g lr %s\n", c->what, (long long)p->step,
               (long long)p->total_steps, p->epoch, (double)p->step_loss,
               shortest(lr, sizeof lr, p->lr));
    } else if (c->verbose && p->elapsed_s - c->last_print >= 5.0) {
        fprintf(stderr, "%sstep %lld/%lld epoch %d loss %.4f lr %.3g samples_per_s %.2f eta %.0fs\n", c->what,
                (long long)p->step, (long long)p->total_steps, p->epoch, (double)p->loss, p->lr,
                p->samples_per_s, p->eta_s);
        c->last_print = p->elapsed_s;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A non-negative decimal integer below 1e6? */
static int as_label_id(const char *s, int *out)
{
    long v = 0;
    if (!*s)
        return 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (*p - '0');
        if (v >= 1000000)
            return 0;
    }
    *out = (int)v;
    return 1;
}

/* Labels → ids; decides K and the names. names (malloc'd array of K
 * pointers into the CSV or the model, or NULL) is what set_labels gets. */
static int map_labels(const cli_csv *csv, const bft_model *m, int num_labels_opt, int32_t *ids, int *K_out,
                      const char ***names_out)
{
    int numeric = 1, maxid = -1, K;
    const char **names = NULL;
    for (int64_t i = 0; i < csv->n; i++) {
        int v;
        if (!csv->label[i][0]) {
            fprintf(stderr, "bft-cli train: record %lld has an empty label\n", (long long)i + 1);
            return -1;
        }
        if (numeric && as_label_id(csv->label[i], &v)) {
            ids[i] = v;
            maxid = v > maxid ? v : maxid;
        } else
            numeric = 0;
    }
    if (numeric) {
        K = maxid + 1;
        if (num_labels_opt > 0) {
            if (num_labels_opt < K) {
                fprintf(stderr, "bft-cli train: --num-labels %d but the data has label %d\n", num_labels_opt, maxid);
                return -1;
            }
            K = num_labels_opt;
        } else if (m->parts.classifier && K <= m->cfg.num_labels)
            K = m->cfg.num_labels; /* the labels fit the existing head: keep it */
        if (K < 2)
            K = 2; /* one class seen: still a two-way softmax head */
        *K_out = K;
        *names_out = NULL;
        return 0;
    }
    /* names: through the model's id2label when it has them all */
    if (m->parts.classifier && m->cfg.id2label) {
        int all = 1;
        for (int64_t i = 0; i < csv->n && all; i++) {
            int found = -1;
            for (int k = 0; k < m->cfg.num_labels; k++)
                if (strcmp(m->cfg.id2label[k], csv->label[i]) == 0) {
                    found = k;
                    break;
                }
            if (found < 0)
                all = 0;
            else
                ids[i] = found;
        }
        if (all && (num_labels_opt <= 0 || num_labels_opt == m->cfg.num_labels)) {
            *K_out = m->cfg.num_labels;
            *names_out = NULL;
            return 0;
        }
    }
    {
        const char **sorted = malloc((size_t)csv->n * sizeof *sorted);
        int64_t u = 0;
        if (!sorted) {
            fprintf(stderr, "bft-cli train: out of memory\n");
            return -1;
        }
        for (int64_t i = 0; i < csv->n; i++)
            sorted[i] = csv->label[i];
        qsort(sorted, (size_t)csv->n, sizeof *sorted, cmp_str);
        for (int64_t i = 0; i < csv->n; i++)
            if (u == 0 || strcmp(sorted[u - 1], sorted[i]) != 0)
                sorted[u++] = sorted[i];
        K = (int)u;
        if (num_labels_opt > 0 && num_labels_opt != K) {
            fprintf(stderr, "bft-cli train: --num-labels %d but the data has %d label names\n", num_labels_opt, K);
            free(sorted);
            return -1;
        }
        if (K < 2) {
            fprintf(stderr, "bft-cli train: the data has a single label name \"%s\"; need at least 2 classes\n",
                    sorted[0]);
            free(sorted);
            return -1;
        }
        for (int64_t i = 0; i < csv->n; i++) {
            const char **hit = bsearch(&csv->label[i], sorted, (size_t)K, sizeof *sorted, cmp_str);
            ids[i] = (int32_t)(hit - sorted);
        }
        names = sorted;
    }
    *K_out = K;
    *names_out = names;
    return 0;
}

/* Stratified split: for each class, a seeded shuffle of its rows, the first
 * round(F * count) go to validation. in_valid[i] = 1 for held-out rows. */
static void stratified_split(const int32_t *ids, int64_t n, int K, float frac, uint64_t seed, char *in_valid)
{
    int64_t *rows = malloc((size_t)n * sizeof *rows);
    bft_rng r;
    bft_rng_seed(&r, seed ^ 0x7a11d5e7ull);
    memset(in_valid, 0, (size_t)n);
    if (!rows)
        return;
    for (int k = 0; k < K; k++) {
        int64_t c = 0, take;
        for (int64_t i = 0; i < n; i++)
            if (ids[i] == k)
                rows[c++] = i;
        for (int64_t i = c - 1; i > 0; i--) {
            int64_t j = (int64_t)bft_rng_below(&r, (uint64_t)i + 1), t = rows[i];
            rows[i] = rows[j];
            rows[j] = t;
        }
        take = (int64_t)floor((double)frac * (double)c + 0.5);
        for (int64_t i = 0; i < take; i++)
            in_valid[rows[i]] = 1;
    }
    free(rows);
}

/* --class-weights SPEC for K classes (names from the model's id2label, or the
 * ids) on the training labels: "balanced" (n / (classes present x count), 1
 * for absent classes), "w0,w1,..." (K weights by id) or "name=w,..." (by
 * label name, others 1). Writes w (K); prints them. Returns 0 or -1. */
static int class_weights(const char *spec, const bft_model *m, const bft_dataset *tr, float *w)
{
    int K = m->cfg.num_labels;
    for (int k = 0; k < K; k++)
        w[k] = 1.0f;
    if (strcmp(spec, "balanced") == 0) {
        int64_t *cnt = calloc((size_t)K, sizeof *cnt);
        int present = 0;
        if (!cnt)
            return -1;
        for (int64_t i = 0; i < tr->n; i++)
            cnt[tr->labels[i]]++;
        for (int k = 0; k < K; k++)
            present += cnt[k] > 0;
        for (int k = 0; k < K; k++)
            if (cnt[k] > 0)
                w[k] = (float)((double)tr->n / ((double)present * (double)cnt[k]));
        free(cnt);
    } else {
        int by_name = strchr(spec, '=') != NULL, n = 0;
        const char *p = spec;
        while (*p) {
            const char *e = strchr(p, ','), *eq;
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char item[512], *end;
            int id = n;
            if (len >= sizeof item) {
                fprintf(stderr, "bft-cli train: --class-weights: item too long\n");
                return -1;
            }
            memcpy(item, p, len);
            item[len] = '\0';
            const char *num = item;
            if (by_name) {
                if (!(eq = strrchr(item, '='))) {
                    fprintf(stderr, "bft-cli train: --class-weights: \"%s\" is not NAME=W\n", item);
                    return -1;
                }
                item[eq - item] = '\0';
                num = eq + 1;
                for (id = 0; id < K; id++) {
                    char buf[32];
                    const char *nm = m->cfg.id2label ? m->cfg.id2label[id] : buf;
                    snprintf(buf, sizeof buf, "%d", id);
                    if (strcmp(nm, item) == 0)
                        break;
                }
                if (id == K) {
                    fprintf(stderr, "bft-cli train: --class-weights: no label is named \"%s\"\n", item);
                    return -1;
                }
            } else if (n >= K) {
                fprintf(stderr, "bft-cli train: --class-weights: more than %d weights\n", K);
                return -1;
            }
            double v = strtod(num, &end);
            if (end == num || *end || !(v > 0) || isinf(v)) {
                fprintf(stderr, "bft-cli train: --class-weights: \"%s\" is not a positive number\n", num);
                return -1;
            }
            w[id] = (float)v;
            n++;
            p += len + (e ? 1 : 0);
        }
        if (!by_name && n != K) {
            fprintf(stderr, "bft-cli train: --class-weights: %d weights for %d classes\n", n, K);
            return -1;
        }
    }
    printf("class weights");
    for (int k = 0; k < K; k++)
        printf(" %.6g", (double)w[k]);
    putchar('\n');
    return 0;
}

/* Rows with sel[i] == want, in file order, as a dataset (arrays malloc'd). */
static int subset(const cli_tokens *t, const int32_t *ids, const char *sel, int want, bft_dataset *ds,
                  int32_t **tok, int64_t **off, int32_t **lab)
{
    int64_t n = 0, used = 0;
    for (int64_t i = 0; i < t->n; i++)
        n += sel[i] == want;
    *tok = malloc(((size_t)t->offsets[t->n] + 1) * sizeof **tok);
    *off = malloc(((size_t)n + 1) * sizeof **off);
    *lab = malloc(((size_t)n + 1) * sizeof **lab);
    if (!*tok || !*off || !*lab)
        return -1;
    (*off)[0] = 0;
    n = 0;
    for (int64_t i = 0; i < t->n; i++) {
        int64_t len;
        if (sel[i] != want)
            continue;
        len = t->offsets[i + 1] - t->offsets[i];
        memcpy(*tok + used, t->tokens + t->offsets[i], (size_t)len * sizeof **tok);
        used += len;
        (*lab)[n] = ids[i];
        (*off)[++n] = used;
    }
    ds->n = n;
    ds->tokens = *tok;
    ds->offsets = *off;
    ds->labels = *lab;
    ds->label_offsets = NULL;
    ds->label_ids = NULL;
    return 0;
}

/* Shape of a from-scratch model. */
typedef struct scratch_opts {
    int vocab_size, lower, layers, hidden, heads, intermediate, max_positions;
} scratch_opts;

/* A fresh model with a vocabulary learned from the CSV texts. */
static bft_model *from_scratch(const cli_csv *csv, const scratch_opts *so, int with_mlm, uint64_t seed)
{
    bft_tokenizer_opts to = bft_tokenizer_default_opts();
    bft_config cfg = bft_config_default();
    bft_parts parts = {1, 0, with_mlm, 0};
    bft_wp_trainer *tr;
    bft_error err;
    char *vocab;
    size_t vlen, lines = 0;
    bft_model *m;

    to.do_lower_case = so->lower;
    to.strip_accents = -1;
    to.model_max_length = so->max_positions;
    if (!(tr = bft_wp_trainer_new(&to, so->vocab_size, 0, &err))) {
        cli_error("train", &err, "vocabulary trainer");
        return NULL;
    }
    for (int64_t i = 0; i < csv->n; i++)
        if (bft_wp_trainer_feed(tr, csv->text[i], csv->text_len[i], &err) != 0) {
            cli_error("train", &err, "vocabulary trainer");
            bft_wp_trainer_free(tr);
            return NULL;
        }
    vocab = bft_wp_trainer_finish(tr, &vlen, &err);
    bft_wp_trainer_free(tr);
    if (!vocab) {
        cli_error("train", &err, "vocabulary trainer");
        return NULL;
    }
    for (size_t i = 0; i < vlen; i++)
        lines += vocab[i] == '\n';
    if (vlen && vocab[vlen - 1] != '\n')
        lines++;
    cfg.vocab_size = (int)lines;
    cfg.num_hidden_layers = so->layers;
    cfg.hidden_size = so->hidden;
    cfg.num_attention_heads = so->heads;
    cfg.intermediate_size = so->intermediate;
    cfg.max_position_embeddings = so->max_positions;
    cfg.tok = to;
    m = bft_model_new(&cfg, vocab, vlen, parts, seed, &err);
    if (!m)
        cli_error("train", &err, "new model");
    else
        printf("from scratch: vocabulary %d tokens, %d layers, hidden %d, %zu parameters\n", cfg.vocab_size,
               so->layers, so->hidden, m->num_params);
    free(vocab);
    return m;
}

/* One `bft-cli train` run: its options, data, model and datasets. */
typedef struct train_run {
    /* options */
    const char *model_dir, *csv_path, *text_col, *label_col, *out_dir;
    const char *device, *precision, *cw_spec, *metric, *state;
    int resume, max_length, num_labels, threads, no_shuffle, verbose, mlm_epochs, group, scratch;
    scratch_opts so;
    float valid_frac;
    double mlm_lr;
    bft_train_opts o;
    progress_ctx pc;
    /* data, model, datasets */
    cli_csv csv;
    cli_tokens t;
    bft_model *m;
    int32_t *ids;                 /* (csv.n) class ids */
    char *sel;                    /* (csv.n) 1: validation row */
    const char **names;
    int K;
    int32_t *tr_tok, *va_tok, *tr_lab, *va_lab;
    int64_t *tr_off, *va_off;
    bft_dataset train_ds, valid_ds;
    float *cw;
    char *mlm_state;              /* state FILE.mlm */
    int resume_cls;
    bft_train_result res;
} train_run;

/* Free what the run holds. */
static void train_run_free(train_run *r)
{
    free(r->mlm_state);
    free(r->cw);
    free(r->names);
    free(r->ids);
    free(r->sel);
    free(r->tr_tok);
    free(r->tr_off);
    free(r->tr_lab);
    free(r->va_tok);
    free(r->va_off);
    free(r->va_lab);
    cli_tokens_free(&r->t);
    cli_csv_free(&r->csv);
    bft_model_free(r->m);
}

/* --metric-for-best NAME (eval_ prefix allowed) as BFT_METRIC_*; -1 when unknown. */
static int metric_by_name(const char *metric)
{
    const char *mn = strncmp(metric, "eval_", 5) == 0 ? metric + 5 : metric;
    if (strcmp(mn, "loss") == 0)
        return BFT_METRIC_LOSS;
    if (strcmp(mn, "accuracy") == 0)
        return BFT_METRIC_ACCURACY;
    if (strcmp(mn, "macro_f1") == 0)
        return BFT_METRIC_MACRO_F1;
    return -1;
}

/* Parse the command line into r; -1 to go on, else the exit status. */
static int train_parse(train_run *r, int argc, char **argv)
{
    bft_train_opts *o = &r->o;
    scratch_opts *so = &r->so;
    int npos, rc;
    cli_opt opts[] = {
        {"model", OPT_STR, &r->model_dir, 0, 0, 0, 0, 0, 0},
        {"from-scratch", OPT_FLAG, &r->scratch, 0, 0, 0, 0, 0, 0},
        {"vocab-size", OPT_INT, &so->vocab_size, 0, 100, 1 << 22, 0, 0, 0},
        {"lower", OPT_FLAG, &so->lower, 0, 0, 0, 0, 0, 0},
        {"layers", OPT_INT, &so->layers, 0, 1, 1024, 0, 0, 0},
        {"hidden", OPT_INT, &so->hidden, 0, 1, 1 << 16, 0, 0, 0},
        {"heads", OPT_INT, &so->heads, 0, 1, 1 << 16, 0, 0, 0},
        {"intermediate", OPT_INT, &so->intermediate, 0, 1, 1 << 18, 0, 0, 0},
        {"max-positions", OPT_INT, &so->max_positions, 0, 2, 1 << 20, 0, 0, 0},
        {"csv", OPT_STR, &r->csv_path, 1, 0, 0, 0, 0, 0},
        {"text-col", OPT_STR, &r->text_col, 1, 0, 0, 0, 0, 0},
        {"label-col", OPT_STR, &r->label_col, 1, 0, 0, 0, 0, 0},
        {"epochs", OPT_INT, &o->epochs, 1, 1, 100000, 0, 0, 0},
        {"out", OPT_STR, &r->out_dir, 1, 0, 0, 0, 0, 0},
        {"batch-size", OPT_INT, &o->batch_size, 0, 1, 1 << 16, 0, 0, 0},
        {"lr", OPT_DOUBLE, &o->learning_rate, 0, 0, 0, 0.0, 10.0, 0},
        {"warmup-ratio", OPT_DOUBLE, &o->warmup_ratio, 0, 0, 0, 0.0, 1.0, 0},
        {"weight-decay", OPT_DOUBLE, &o->weight_decay, 0, 0, 0, 0.0, 10.0, 0},
        {"max-grad-norm", OPT_FLOAT, &o->max_grad_norm, 0, 0, 0, 0.0, 1e30, 0},
        {"max-length", OPT_INT, &r->max_length, 0, 2, 1 << 20, 0, 0, 0},
        {"seed", OPT_U64, &o->seed, 0, 0, 0, 0, 0, 0},
        {"no-shuffle", OPT_FLAG, &r->no_shuffle, 0, 0, 0, 0, 0, 0},
        {"group-by-length", OPT_FLAG, &r->group, 0, 0, 0, 0, 0, 0},
        {"dropout", OPT_FLOAT, &o->dropout, 0, 0, 0, 0.0, 0.999, 0},
        {"num-labels", OPT_INT, &r->num_labels, 0, 2, 1000000, 0, 0, 0},
        {"validation-fraction", OPT_FLOAT, &r->valid_frac, 0, 0, 0, 0.0, 0.9, 0},
        {"mlm-epochs", OPT_INT, &r->mlm_epochs, 0, 0, 100000, 0, 0, 0},
        {"mlm-lr", OPT_DOUBLE, &r->mlm_lr, 0, 0, 0, 0.0, 10.0, 0},
        {"threads", OPT_INT, &r->threads, 0, 0, 1024, 0, 0, 0},
        {"device", OPT_STR, &r->device, 0, 0, 0, 0, 0, 0},
        {"precision", OPT_STR, &r->precision, 0, 0, 0, 0, 0, 0},
        {"verbose", OPT_FLAG, &r->verbose, 0, 0, 0, 0, 0, 0},
        {"log-steps", OPT_FLAG, &r->pc.log_steps, 0, 0, 0, 0, 0, 0},
        {"class-weights", OPT_STR, &r->cw_spec, 0, 0, 0, 0, 0, 0},
        {"load-best", OPT_FLAG, &o->load_best_model_at_end, 0, 0, 0, 0, 0, 0},
        {"metric-for-best", OPT_STR, &r->metric, 0, 0, 0, 0, 0, 0},
        {"early-stopping-patience", OPT_INT, &o->early_stopping_patience, 0, 0, 100000, 0, 0, 0},
        {"save-state", OPT_STR, &r->state, 0, 0, 0, 0, 0, 0},
        {"resume", OPT_FLAG, &r->resume, 0, 0, 0, 0, 0, 0},
    };
    if (cli_wants_help(argc, argv)) {
        train_usage(stdout);
        return 0;
    }
    if (cli_parse_args("train", argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), NULL, 0, &npos) != 0) {
        train_usage(stderr);
        return 2;
    }
    if ((rc = cli_set_precision("train", r->precision)) != 0 || (rc = cli_check_device("train", r->device)) != 0)
        return rc;
    bft_get_device(&o->device, &o->precision); /* --device / --precision */
    return -1;
}

/* Options that depend on each other; -1 to go on, else the exit status. */
static int train_check_options(train_run *r)
{
    bft_train_opts *o = &r->o;
    o->shuffle = !r->no_shuffle;
    if (r->metric && (o->metric_for_best = metric_by_name(r->metric)) < 0) {
        fprintf(stderr, "bft-cli train: --metric-for-best must be loss, accuracy or macro_f1\n");
        return 2;
    }
    if (o->early_stopping_patience > 0)
        o->load_best_model_at_end = 1;
    if ((o->load_best_model_at_end || r->metric) && !(r->valid_frac > 0)) {
        fprintf(stderr, "bft-cli train: --load-best, --metric-for-best and --early-stopping-patience "
                        "need --validation-fraction\n");
        return 2;
    }
    o->group_by_length = r->group;
    r->pc.verbose = r->verbose;
    bft_set_threads(r->threads);
    if (!r->model_dir == !r->scratch) {
        fprintf(stderr, "bft-cli train: give exactly one of --model DIR and --from-scratch\n");
        train_usage(stderr);
        return 2;
    }
    return -1;
}

/* The CSV rows and the model (a directory, or new from scratch); 0, else the exit status. */
static int train_load(train_run *r)
{
    bft_error err;
    char msg[600];
    if (cli_read_csv(r->csv_path, r->text_col, r->label_col, &r->csv, msg, sizeof msg) != 0) {
        fprintf(stderr, "bft-cli train: %s\n", msg);
        return 1;
    }
    if (r->csv.n == 0) {
        fprintf(stderr, "bft-cli train: %s has no data rows\n", r->csv_path);
        return 1;
    }
    if (r->scratch)
        r->m = from_scratch(&r->csv, &r->so, r->mlm_epochs > 0, r->o.seed);
    else if (!(r->m = bft_model_load_dir(r->model_dir, &err)))
        cli_error("train", &err, "loading %s", r->model_dir);
    if (!r->m)
        return 1;
    if ((r->max_length = cli_max_length("train", r->m, r->max_length)) < 0)
        return 2;
    return 0;
}

/* Labels → class ids and the classifier head, token ids, the split and its datasets. */
static int train_prepare_data(train_run *r)
{
    bft_error err;
    r->ids = malloc((size_t)r->csv.n * sizeof *r->ids);
    r->sel = calloc((size_t)r->csv.n, 1);
    if (!r->ids || !r->sel) {
        fprintf(stderr, "bft-cli train: out of memory\n");
        return 1;
    }
    if (map_labels(&r->csv, r->m, r->num_labels, r->ids, &r->K, &r->names) != 0)
        return 1;
    if (bft_model_set_labels(r->m, r->K, r->names, r->o.seed, &err) != 0) {
        cli_error("train", &err, "classifier head");
        return 1;
    }
    if (cli_encode(r->m->tok, (const char *const *)r->csv.text, r->csv.text_len, r->csv.n, r->max_length,
                   &r->t, &err) != 0) {
        cli_error("train", &err, "tokenizing %s", r->csv_path);
        return 1;
    }
    if (r->valid_frac > 0)
        stratified_split(r->ids, r->csv.n, r->K, r->valid_frac, r->o.seed, r->sel);
    if (subset(&r->t, r->ids, r->sel, 0, &r->train_ds, &r->tr_tok, &r->tr_off, &r->tr_lab) != 0 ||
        (r->valid_frac > 0 &&
         subset(&r->t, r->ids, r->sel, 1, &r->valid_ds, &r->va_tok, &r->va_off, &r->va_lab) != 0)) {
        fprintf(stderr, "bft-cli train: out of memory\n");
        return 1;
    }
    if (r->train_ds.n == 0) {
        fprintf(stderr, "bft-cli train: no training rows left after the validation split\n");
        return 1;
    }
    if (r->valid_frac > 0 && r->valid_ds.n > 0)
        r->o.valid = &r->valid_ds;
    return 0;
}

/* --save-state / --resume: the salt of what the engine cannot see, the MLM
 * phase's file; --class-weights. 0, else the exit status. */
static int train_prepare_options(train_run *r)
{
    bft_model *m = r->m;
    if (r->resume && !r->state) {
        fprintf(stderr, "bft-cli train: --resume needs --save-state FILE\n");
        return 2;
    }
    if (r->state) {
        /* the initial weights, vocabulary and label names, which the engine cannot see */
        uint64_t salt = bft_train_hash(0, m->params_mem, m->num_params * sizeof(float));
        salt = bft_train_hash(salt, m->vocab, m->vocab_len);
        for (int k = 0; k < r->K && m->cfg.id2label; k++)
            salt = bft_train_hash(salt, m->cfg.id2label[k], strlen(m->cfg.id2label[k]) + 1);
        r->o.state_salt = salt;
        if (!(r->mlm_state = malloc(strlen(r->state) + 5))) {
            fprintf(stderr, "bft-cli train: out of memory\n");
            return 1;
        }
        sprintf(r->mlm_state, "%s.mlm", r->state);
    }
    if (r->cw_spec) {
        if (!(r->cw = malloc((size_t)r->K * sizeof *r->cw)) || class_weights(r->cw_spec, m, &r->train_ds, r->cw) != 0)
            return 2;
        r->o.class_weights = r->cw;
    }
    printf("data %lld rows (train %lld, validation %lld), %d labels, max_length %d\n", (long long)r->csv.n,
           (long long)r->train_ds.n, (long long)(r->o.valid ? r->valid_ds.n : 0), r->K, r->max_length);
    fflush(stdout);
    return 0;
}

/* --mlm-epochs: MLM pre-training on every CSV text (skipped when fine-tuning resumes). */
static int train_mlm_phase(train_run *r)
{
    bft_train_state_info_t sinfo;
    bft_train_opts mo = r->o;
    bft_dataset all = {r->t.n, r->t.tokens, r->t.offsets, NULL, NULL, NULL};
    bft_error err;
    if (r->resume) {
        bft_error se;
        r->resume_cls = bft_train_state_info(r->state, &sinfo, &se) == 0 && sinfo.task == 0;
        if (r->resume_cls)
            printf("resuming training after epoch %d of %d\n", sinfo.epochs_done, sinfo.epochs);
    }
    if (!(r->mlm_epochs > 0) || r->resume_cls)
        return 0;
    if (!r->m->parts.mlm) {
        fprintf(stderr, "bft-cli train: --mlm-epochs needs a model with an MLM head (cls.predictions.*)\n");
        return 1;
    }
    mo.epochs = r->mlm_epochs;
    mo.valid = NULL;
    mo.class_weights = NULL;
    if (r->mlm_lr > 0)
        mo.learning_rate = r->mlm_lr;
    r->pc.what = "mlm ";
    mo.state_path = r->mlm_state;
    if (r->resume) {
        bft_error se;
        if (bft_train_state_info(r->mlm_state, &sinfo, &se) == 0 && sinfo.task == 1) {
            printf("resuming MLM pre-training after epoch %d of %d\n", sinfo.epochs_done, sinfo.epochs);
            mo.resume_path = r->mlm_state;
        }
    }
    if (bft_pretrain_mlm(r->m, &all, &mo, on_progress, &r->pc, &r->res, &err) != 0) {
        cli_error("train", &err, "MLM pre-training");
        return 1;
    }
    r->pc.what = "";
    return 0;
}

/* Fine-tuning and its summary line. */
static int train_finetune_phase(train_run *r)
{
    bft_train_result *res = &r->res;
    bft_error err;
    r->o.state_path = r->state;
    r->o.resume_path = r->resume_cls ? r->state : NULL;
    if (r->resume && !r->resume_cls && !(r->mlm_epochs > 0))
        printf("no saved training state in %s: training from the start\n", r->state);
    if (bft_train(r->m, &r->train_ds, &r->o, on_progress, &r->pc, res, &err) != 0) {
        cli_error("train", &err, NULL);
        return 1;
    }
    if (res->early_stopped)
        printf("early stopping after epoch %d (best epoch %d)\n", res->epochs, res->best_epoch);
    if (r->o.load_best_model_at_end)
        printf("kept epoch %d\n", res->kept_epoch);
    printf("train_loss %.6f steps %lld warmup_steps %lld seconds %.1f samples_per_s %.2f",
           (double)res->train_loss, (long long)res->steps, (long long)res->warmup_steps, res->seconds,
           res->samples_per_s);
    if (!isnan(res->eval_accuracy))
        printf(" eval_loss %.6f eval_accuracy %.4f eval_macro_f1 %.4f", (double)res->eval_loss,
               (double)res->eval_accuracy, (double)res->eval_macro_f1);
    putchar('\n');
    return 0;
}

/* The trained model as a Hugging Face directory. */
static int train_save(train_run *r)
{
    bft_error err;
    if (bft_model_save_dir(r->m, r->out_dir, &err) != 0) {
        cli_error("train", &err, "writing %s", r->out_dir);
        return 1;
    }
    printf("saved %s\n", r->out_dir);
    return 0;
}

int cmd_train(int argc, char **argv)
{
    train_run r;
    int rc;
    memset(&r, 0, sizeof r);
    r.device = "cpu";
    r.precision = "auto";
    r.so = (scratch_opts){8000, 0, 4, 256, 4, 1024, 512};
    r.o = bft_train_default_opts();
    r.pc.what = "";
    if ((rc = train_parse(&r, argc, argv)) >= 0 || (rc = train_check_options(&r)) >= 0)
        return rc;
    if ((rc = train_load(&r)) == 0 && (rc = train_prepare_data(&r)) == 0 &&
        (rc = train_prepare_options(&r)) == 0 && (rc = train_mlm_phase(&r)) == 0 &&
        (rc = train_finetune_phase(&r)) == 0)
        rc = train_save(&r);
    train_run_free(&r);
    return rc;
}
