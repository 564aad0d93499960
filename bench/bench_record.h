/* One measurement of gpurnn-bench or of a peer, and its JSON form.
 *
 * Every program of the benchmark (gpurnn-bench, bench/peers/cudnn_rnn.c and
 * bench/peers/torch_rnn.py) prints the same flat JSON objects, one per line, so that
 * gpurnn-bench can read its peers' output. The fields are documented in bench/README.md;
 * the table below (bench_record.c) is the one place that names them in C. */
#ifndef GPURNN_BENCH_RECORD_H
#define GPURNN_BENCH_RECORD_H

#include <stddef.h>
#include <stdio.h>

typedef struct bench_record {
    /* strings: empty means "not set" and the field is left out of the JSON */
    char kind[16];      /* "step", "gemm", "skip", "ratio" */
    char impl[16];      /* "gpurnn", "torch", "cudnn", "openblas", "cublas" */
    char backend[8];    /* "cpu", "cuda" */
    char variant[32];   /* torch: "onehot", "embedding"; cudnn: the RNN algorithm */
    char preset[24];    /* the preset's name, or "custom" */
    char device[96];    /* CPU model or GPU name */
    char dtype[4];      /* "f32", "f64" */
    char optimizer[12]; /* "sgd", "adagrad", "adam" */
    char reduction[8];  /* "sum", "mean" */
    char status[8];     /* "ok", "skipped", "error" */
    char reason[320];   /* why a measurement was skipped or failed */
    char peer[48];      /* ratio records: what the ratio divides by */
    char cell[8];       /* "tanh", "relu", "gru", "lstm"; empty: tanh */
    /* integers: -1 means "not set" */
    long long V, H, B, T;
    long long layers;   /* L; -1: 1 */
    long long threads, warmup, repeats;
    long long M, N, K; /* GEMM records: the product's shape */
    /* reals: NaN means "not set" */
    double median_s, min_s, max_s; /* seconds per training step (or per GEMM) */
    double tokens_per_s;
    double flops_per_step, gflops;
    double gemm_gflops, gemm_fraction;
    double loss; /* loss of the last timed step, per token */
    double peak_rss_bytes, base_rss_bytes, theory_bytes;
    double dev_mem_bytes, dev_total_bytes;
    /* gpurnn: gpurnn_model_memory's figures and the resolved BPTT checkpoint interval */
    long long bptt_checkpoint_every; /* -1: the full history */
    double model_host_bytes, model_device_bytes, activation_bytes;
    double ratio;      /* ratio records: tokens/s over the peer's, from the medians */
    double ratio_best; /* the same from the fastest repeats (less sensitive to a busy machine) */
} bench_record;

void bench_record_init(bench_record *r);

/* Writes r as one line of JSON (with the newline) to f. */
void bench_record_write_json(FILE *f, const bench_record *r);

/* Parses one line of JSON into r (initialised first). Unknown fields are ignored.
 * Returns 0 on success, -1 if the line is not a flat JSON object. */
int bench_record_parse_json(const char *line, bench_record *r);

/* snprintf that may truncate on purpose (messages into fixed-size fields). */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
void bench_format(char *dst, size_t size, const char *fmt, ...);

/* Copies src into a fixed-size field, truncating. */
void bench_set_string(char *dst, size_t size, const char *src);
#define BENCH_SET(field, src) bench_set_string((field), sizeof(field), (src))

/* Model FLOPs of one training step; see bench_record.c and bench/README.md. */
/* Seconds on the monotonic clock. */
double bench_now_s(void);

/* Sorts the n > 0 step times t and sets r's median_s, min_s, max_s and repeats. */
void bench_summarize_times(double *t, int n, bench_record *r);

/* Gates per layer of a cell name: 3 for "gru", 4 for "lstm", else 1 (tanh, relu, empty). */
int bench_cell_gates(const char *cell);
/* Model FLOPs of one training step of L layers of cell; see bench_record.c and bench/README.md. */
double bench_model_flops(const char *cell, long long L, long long V, long long H, long long B, long long T);
/* Bytes the training state cannot do without: activations (T+1)·B·H per stream (h of
 * every layer, c of every LSTM layer, and the 4 gates a GRU/LSTM layer keeps for backward),
 * parameters P, gradients P, optimizer state k·P (k = 0 for plain SGD, 1 for SGD with
 * momentum or Adagrad, 2 for Adam), each of elem_size bytes; P as in gpurnn.h's layout
 * (2HV + H² + H + V for one tanh layer). */
double bench_theory_bytes(const char *cell, long long L, long long V, long long H, long long B, long long T,
                          int opt_slots, size_t elem_size);
#endif
