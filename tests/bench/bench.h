/*
 * bench.h - what the files of bulkreg's load generator (tests/bench,
 * `bulkreg-bench`, driven by scripts/bench) share: a growable buffer, a
 * monotonic clock, a keep-alive HTTP client, a webhook receiver and a few
 * PostgreSQL helpers.
 *
 * This is a measuring tool, not product code and not a test: it links none
 * of bulkreg's modules, so it measures the programs as a client sees them.
 * Fatal problems (the API answering something unexpected, the database
 * unreachable) end the program through bench_die() with status 1: a figure
 * from a run that went wrong is worse than none.
 */
#ifndef BULKREG_BENCH_H
#define BULKREG_BENCH_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <libpq-fe.h>

#define BENCH_UUID_LEN     36

#define BENCH_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Prints "bulkreg-bench: <message>" on stderr and exits with status 1. */
_Noreturn void bench_die(const char *fmt, ...) BENCH_PRINTF(1, 2);

/* Progress on stderr (stdout carries only the key=value results). */
void bench_log(const char *fmt, ...) BENCH_PRINTF(1, 2);

/* Seconds on CLOCK_MONOTONIC. */
double bench_now(void);

/* Sleeps for ms milliseconds. */
void bench_sleep_ms(int ms);

/* The median of n values (sorts v in place); 0 when n is 0. */
double bench_median(double *v, size_t n);

/* ---- growable buffer: always NUL-terminated; out of memory is fatal ---- */

struct bbuf {
	char *data;
	size_t len, cap;
};

void bb_init(struct bbuf *b);
void bb_append(struct bbuf *b, const char *s, size_t n);
void bb_printf(struct bbuf *b, const char *fmt, ...) BENCH_PRINTF(2, 3);
void bb_reset(struct bbuf *b);
void bb_free(struct bbuf *b);

/* ---- HTTP client: one connection kept alive; one thread at a time ---- */

struct bclient {
	void *easy;       /* CURL * */
	void *headers;    /* struct curl_slist *: Authorization, Content-Type */
	struct bbuf body; /* the last response's body */
	char error[256];  /* the last transport error */
};

/* A client sending token as a bearer token (curl_global_init is done once). */
void bc_init(struct bclient *c, const char *token);
void bc_free(struct bclient *c);

/*
 * Sends method url with body (NULL for none) and waits for the answer.
 * Returns the HTTP status, 0 on a transport failure (c->error says why).
 * The response body is in c->body until the next request.
 */
long bc_request(struct bclient *c, const char *method, const char *url, const char *body);

/* As bc_request, fatal unless the status is `expect`; returns the parsed body (decref it). */
json_t *bc_expect(struct bclient *c, const char *method, const char *url, const char *body,
                  long expect);

/* Copies the string at data.id of a JSON:API document into out (fatal if absent). */
void bench_data_id(json_t *doc, char out[BENCH_UUID_LEN + 1]);

/* ---- webhook receiver: records the arrival time of each job.ended ---- */

typedef struct brecv brecv;

/* Starts a receiver on 127.0.0.1 (a port the kernel picks); fatal on failure. */
brecv *brecv_start(void);
const char *brecv_url(const brecv *r);
void brecv_stop(brecv *r);

/*
 * Waits until a job.ended event for job_id has arrived; returns its arrival
 * time (bench_now), or a negative value when timeout_s passed first.
 */
double brecv_wait(brecv *r, const char *job_id, double timeout_s);

/* ---- PostgreSQL ---- */

/* Connects to url; fatal on failure. */
PGconn *bench_db(const char *url);

/* Runs sql with text params; fatal on error. Returns the result (PQclear it). */
PGresult *bench_sql(PGconn *db, const char *sql, int nparams, const char *const *params);

/*
 * Polls, every poll_ms, until every job of the array literal ids
 * ("{uuid,...}") has left `processing`; returns bench_now() at the first
 * poll that saw it, fatal after timeout_s.
 */
double bench_wait_jobs(PGconn *db, const char *ids, int poll_ms, double timeout_s);

#endif
