/*
 * bench_support.c - the load generator's plumbing (see bench.h): buffer,
 * clock, keep-alive HTTP client over libcurl's easy interface, a
 * libmicrohttpd webhook receiver, and PostgreSQL helpers.
 *
 * Thread-safety: a struct bclient and a PGconn belong to one thread at a
 * time; the receiver's state is behind its mutex and may be waited on from
 * any thread. curl_global_init runs once, guarded by pthread_once.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <microhttpd.h>

#define BC_TIMEOUT_MS    120000
#define BRECV_BODY_MAX   (1u << 20)
#define BRECV_MAX_EVENTS 4096

static void bench_vlog(const char *fmt, va_list ap) BENCH_PRINTF(1, 0);

static void bench_vlog(const char *fmt, va_list ap)
{
	fputs("bulkreg-bench: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void bench_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bench_vlog(fmt, ap);
	va_end(ap);
	exit(1);
}

void bench_log(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bench_vlog(fmt, ap);
	va_end(ap);
}

double bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void bench_sleep_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double bench_median(double *v, size_t n)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---- buffer ---- */

void bb_init(struct bbuf *b)
{
	b->cap = 256;
	b->len = 0;
	b->data = malloc(b->cap);
	if (!b->data)
		bench_die("out of memory");
	b->data[0] = '\0';
}

static void bb_reserve(struct bbuf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return;
	size_t cap = b->cap;
	while (cap < b->len + more + 1)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p)
		bench_die("out of memory");
	b->data = p;
	b->cap = cap;
}

void bb_append(struct bbuf *b, const char *s, size_t n)
{
	bb_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

void bb_printf(struct bbuf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n < 0)
		bench_die("bb_printf: bad format");
	if ((size_t)n >= b->cap - b->len) {
		bb_reserve(b, (size_t)n);
		va_start(ap, fmt);
		vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
	}
	b->len += (size_t)n;
}

void bb_reset(struct bbuf *b)
{
	b->len = 0;
	b->data[0] = '\0';
}

void bb_free(struct bbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* ---- HTTP client ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		bench_die("curl_global_init failed");
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
	bb_append(ctx, data, size * nmemb);
	return size * nmemb;
}

void bc_init(struct bclient *c, const char *token)
{
	pthread_once(&curl_once, curl_init_once);
	memset(c, 0, sizeof(*c));
	bb_init(&c->body);
	CURL *e = curl_easy_init();
	if (!e)
		bench_die("curl_easy_init failed");
	char auth[512];
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	struct curl_slist *h = curl_slist_append(NULL, auth);
	h = h ? curl_slist_append(h, "Content-Type: application/json") : NULL;
	/* No "Expect: 100-continue" round trip before large bodies. */
	h = h ? curl_slist_append(h, "Expect:") : NULL;
	if (!h)
		bench_die("out of memory");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, &c->body);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)BC_TIMEOUT_MS);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->error);
	c->easy = e;
	c->headers = h;
}

void bc_free(struct bclient *c)
{
	curl_easy_cleanup(c->easy);
	curl_slist_free_all(c->headers);
	bb_free(&c->body);
	c->easy = NULL;
	c->headers = NULL;
}

long bc_request(struct bclient *c, const char *method, const char *url, const char *body)
{
	CURL *e = c->easy;
	bb_reset(&c->body);
	c->error[0] = '\0';
	curl_easy_setopt(e, CURLOPT_URL, url);
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	} else {
		curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
	}
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST,
	                 strcmp(method, body ? "POST" : "GET") ? method : NULL);
	CURLcode rc = curl_easy_perform(e);
	if (rc != CURLE_OK) {
		if (!c->error[0])
			snprintf(c->error, sizeof(c->error), "%s", curl_easy_strerror(rc));
		return 0;
	}
	long status = 0;
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	return status;
}

json_t *bc_expect(struct bclient *c, const char *method, const char *url, const char *body,
                  long expect)
{
	long status = bc_request(c, method, url, body);
	if (status == 0)
		bench_die("%s %s: %s", method, url, c->error);
	if (status != expect)
		bench_die("%s %s: HTTP %ld (expected %ld): %.500s", method, url, status, expect,
		          c->body.data);
	json_error_t err;
	json_t *doc = json_loadb(c->body.data, c->body.len, 0, &err);
	if (!doc)
		bench_die("%s %s: unparsable answer: %s", method, url, err.text);
	return doc;
}

void bench_data_id(json_t *doc, char out[BENCH_UUID_LEN + 1])
{
	const char *id = json_string_value(json_object_get(json_object_get(doc, "data"), "id"));
	if (!id || strlen(id) != BENCH_UUID_LEN)
		bench_die("answer without data.id");
	memcpy(out, id, BENCH_UUID_LEN + 1);
}

/* ---- webhook receiver ---- */

struct brecv_event {
	char job_id[BENCH_UUID_LEN + 1];
	double at;
};

struct brecv {
	struct MHD_Daemon *daemon;
	char url[64];
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC: an event arrived */
	struct brecv_event events[BRECV_MAX_EVENTS];
	int count; /* ring: the last BRECV_MAX_EVENTS are kept */
};

/* Records a job.ended delivery; anything else is answered and ignored. */
static void brecv_record(brecv *r, const struct bbuf *body, double at)
{
	json_t *doc = json_loadb(body->data, body->len, 0, NULL);
	const char *type = json_string_value(json_object_get(doc, "type"));
	const char *id = json_string_value(json_object_get(json_object_get(doc, "data"), "id"));
	if (type && id && strcmp(type, "job.ended") == 0 && strlen(id) == BENCH_UUID_LEN) {
		pthread_mutex_lock(&r->mu);
		struct brecv_event *ev = &r->events[r->count % BRECV_MAX_EVENTS];
		memcpy(ev->job_id, id, BENCH_UUID_LEN + 1);
		ev->at = at;
		r->count++;
		pthread_cond_broadcast(&r->cond);
		pthread_mutex_unlock(&r->mu);
	}
	json_decref(doc);
}

static enum MHD_Result brecv_answer(struct MHD_Connection *conn, unsigned status)
{
	static char ok[] = "{}";
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(sizeof(ok) - 1, ok, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	enum MHD_Result res = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return res;
}

static enum MHD_Result brecv_request(void *cls, struct MHD_Connection *conn, const char *url,
                                     const char *method, const char *version, const char *upload,
                                     size_t *upload_size, void **con_cls)
{
	(void)url;
	(void)version;
	if (strcmp(method, "POST") != 0)
		return brecv_answer(conn, 405);
	struct bbuf *body = *con_cls;
	if (!body) {
		body = malloc(sizeof(*body));
		if (!body)
			return MHD_NO;
		bb_init(body);
		*con_cls = body;
		return MHD_YES;
	}
	if (*upload_size) {
		if (body->len + *upload_size > BRECV_BODY_MAX)
			return MHD_NO;
		bb_append(body, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	brecv_record(cls, body, bench_now());
	return brecv_answer(conn, 200);
}

static void brecv_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                            enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct bbuf *body = *con_cls;
	if (body) {
		bb_free(body);
		free(body);
		*con_cls = NULL;
	}
}

brecv *brecv_start(void)
{
	brecv *r = calloc(1, sizeof(*r));
	if (!r)
		bench_die("out of memory");
	pthread_mutex_init(&r->mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->cond, &ca);
	pthread_condattr_destroy(&ca);
	struct sockaddr_in addr;
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->daemon = MHD_start_daemon(
	    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
	    NULL, NULL, brecv_request, r, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
	    MHD_OPTION_NOTIFY_COMPLETED, brecv_completed, r, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)60, MHD_OPTION_END);
	if (!r->daemon)
		bench_die("cannot start the webhook receiver");
	const union MHD_DaemonInfo *info =
	    MHD_get_daemon_info(r->daemon, MHD_DAEMON_INFO_BIND_PORT);
	if (!info || !info->port)
		bench_die("webhook receiver: no port");
	snprintf(r->url, sizeof(r->url), "http://127.0.0.1:%u/hook", (unsigned)info->port);
	return r;
}

const char *brecv_url(const brecv *r)
{
	return r->url;
}

void brecv_stop(brecv *r)
{
	if (!r)
		return;
	MHD_stop_daemon(r->daemon);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

double brecv_wait(brecv *r, const char *job_id, double timeout_s)
{
	struct timespec deadline;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += (time_t)timeout_s;
	double at = -1;
	pthread_mutex_lock(&r->mu);
	for (;;) {
		int first = r->count > BRECV_MAX_EVENTS ? r->count - BRECV_MAX_EVENTS : 0;
		for (int i = first; i < r->count && at < 0; i++) {
			const struct brecv_event *ev = &r->events[i % BRECV_MAX_EVENTS];
			if (strcmp(ev->job_id, job_id) == 0)
				at = ev->at;
		}
		if (at >= 0 || pthread_cond_timedwait(&r->cond, &r->mu, &deadline) == ETIMEDOUT)
			break;
	}
	pthread_mutex_unlock(&r->mu);
	return at;
}

/* ---- PostgreSQL ---- */

PGconn *bench_db(const char *url)
{
	PGconn *db = PQconnectdb(url);
	if (PQstatus(db) != CONNECTION_OK)
		bench_die("cannot connect to %s: %s", url, PQerrorMessage(db));
	return db;
}

PGresult *bench_sql(PGconn *db, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = PQexecParams(db, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
		bench_die("SQL failed: %s: %s", sql, PQerrorMessage(db));
	return res;
}

double bench_wait_jobs(PGconn *db, const char *ids, int poll_ms, double timeout_s)
{
	static const char *const sql = "SELECT count(*) FROM jobs"
	                               " WHERE id = ANY ($1::uuid[]) AND status = 'processing'";
	const char *params[] = {ids};
	double deadline = bench_now() + timeout_s;
	for (;;) {
		PGresult *res = bench_sql(db, sql, 1, params);
		long left = strtol(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		double now = bench_now();
		if (left == 0)
			return now;
		if (now > deadline)
			bench_die("%ld job(s) still processing after %.0f s", left, timeout_s);
		bench_sleep_ms(poll_ms);
	}
}
