/*
 * receiver.c - a webhook receiver for end-to-end tests (see support.h).
 *
 * A libmicrohttpd daemon on 127.0.0.1:<port chosen by the kernel>, one
 * thread per connection so a scripted delay holds up only its own request.
 * It owns the list of received requests and the script of answers, both
 * behind its mutex; its condition variable wakes t_receiver_wait on every
 * request and cuts delays short when the receiver stops. All functions are
 * thread-safe.
 */
#include "support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>
#include <microhttpd.h>

#include "crypto.h"
#include "proc.h"
#include "strbuf.h"

#define T_RECEIVER_BODY_MAX   (8u << 20)
#define T_RECEIVER_SCRIPT_MAX 256

struct t_receiver {
	struct MHD_Daemon *daemon;
	int port;
	char url[64];
	pthread_mutex_t mu;
	pthread_cond_t cond; /* CLOCK_MONOTONIC; a request arrived, or stopping */
	struct t_hook *hooks;
	int count, cap;
	int script[T_RECEIVER_SCRIPT_MAX];
	char retry_after[T_RECEIVER_SCRIPT_MAX][40]; /* "" for none */
	int nscript, next;
	int delay_ms;
	bool stopping;
};

/* One request being received. */
struct req {
	strbuf body;
	bool too_big;
	char retry_after[64]; /* the Retry-After header to answer with, "" for none */
};

/* The header value for spec: "date+N" is the HTTP-date N seconds from now. */
static void retry_after_value(const char *spec, char *out, size_t cap)
{
	long n;
	char *end;
	if (strncmp(spec, "date+", 5) != 0) {
		snprintf(out, cap, "%s", spec);
		return;
	}
	n = strtol(spec + 5, &end, 10);
	time_t t = time(NULL) + n;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static void copy_header(struct MHD_Connection *conn, const char *name, char *out, size_t cap)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
	snprintf(out, cap, "%s", v ? v : "");
}

/* Records a finished POST and returns the status to answer (after any delay). */
static int record(t_receiver *rc, struct MHD_Connection *conn, struct req *q)
{
	struct t_hook h;
	memset(&h, 0, sizeof(h));
	copy_header(conn, "webhook-id", h.id, sizeof(h.id));
	copy_header(conn, "webhook-timestamp", h.timestamp, sizeof(h.timestamp));
	copy_header(conn, "webhook-signature", h.signature, sizeof(h.signature));
	copy_header(conn, "Content-Type", h.content_type, sizeof(h.content_type));
	h.at_ms = t_now_ms();
	h.body = q->too_big ? strdup("") : sb_take(&q->body);
	if (!h.body)
		h.body = strdup("");

	pthread_mutex_lock(&rc->mu);
	int status = 200;
	if (q->too_big)
		status = 413;
	else if (rc->next < rc->nscript) {
		retry_after_value(rc->retry_after[rc->next], q->retry_after,
		                  sizeof(q->retry_after));
		status = rc->script[rc->next++];
	}
	h.answered = status;
	int delay = rc->delay_ms;
	if (rc->count == rc->cap) {
		int cap = rc->cap ? rc->cap * 2 : 16;
		struct t_hook *p = realloc(rc->hooks, (size_t)cap * sizeof(*p));
		if (p) {
			rc->hooks = p;
			rc->cap = cap;
		}
	}
	if (rc->count < rc->cap && h.body) {
		rc->hooks[rc->count++] = h;
	} else {
		free(h.body);
		status = 500;
	}
	pthread_cond_broadcast(&rc->cond);

	if (delay > 0) {
		struct timespec until = proc_deadline(delay);
		while (!rc->stopping &&
		       pthread_cond_timedwait(&rc->cond, &rc->mu, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&rc->mu);
	return status;
}

static enum MHD_Result answer(struct MHD_Connection *conn, int status, const char *retry_after)
{
	static char ok[] = "ok\n";
	struct MHD_Response *resp =
	    MHD_create_response_from_buffer(sizeof(ok) - 1, ok, MHD_RESPMEM_PERSISTENT);
	if (!resp)
		return MHD_NO;
	MHD_add_response_header(resp, "Content-Type", "text/plain");
	if (retry_after && retry_after[0])
		MHD_add_response_header(resp, "Retry-After", retry_after);
	enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	(void)url;
	(void)version;
	t_receiver *rc = cls;
	struct req *q = *con_cls;
	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		sb_init(&q->body, T_RECEIVER_BODY_MAX);
		*con_cls = q;
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!q->too_big && sb_append(&q->body, upload_data, *upload_data_size) != BR_OK)
			q->too_big = true;
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (strcmp(method, "POST") != 0)
		return answer(conn, 405, NULL);
	int status = record(rc, conn, q);
	return answer(conn, status, q->retry_after);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)conn;
	(void)toe;
	struct req *q = *con_cls;
	if (q) {
		sb_free(&q->body);
		free(q);
		*con_cls = NULL;
	}
}

t_receiver *t_receiver_start(void)
{
	return t_receiver_start_on(0);
}

t_receiver *t_receiver_start_on(int port)
{
	t_receiver *rc = calloc(1, sizeof(*rc));
	cr_assert_not_null(rc, "out of memory");
	pthread_mutex_init(&rc->mu, NULL);
	proc_cond_init(&rc->cond);

	struct sockaddr_in addr;
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = htons((uint16_t)port);
	rc->daemon = MHD_start_daemon(
	    MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
	    NULL, NULL, on_request, rc, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, rc, MHD_OPTION_CONNECTION_TIMEOUT,
	    (unsigned int)120, MHD_OPTION_END);
	cr_assert_not_null(rc->daemon, "the webhook receiver could not start on port %d", port);
	const union MHD_DaemonInfo *info =
	    MHD_get_daemon_info(rc->daemon, MHD_DAEMON_INFO_BIND_PORT);
	cr_assert(info && info->port, "the webhook receiver has no port");
	rc->port = info->port;
	snprintf(rc->url, sizeof(rc->url), "http://127.0.0.1:%d/hook", rc->port);
	return rc;
}

const char *t_receiver_url(t_receiver *rc)
{
	return rc->url;
}

int t_receiver_port(t_receiver *rc)
{
	return rc->port;
}

void t_receiver_stop(t_receiver *rc)
{
	if (!rc)
		return;
	pthread_mutex_lock(&rc->mu);
	rc->stopping = true;
	pthread_cond_broadcast(&rc->cond);
	pthread_mutex_unlock(&rc->mu);
	MHD_stop_daemon(rc->daemon);
	for (int i = 0; i < rc->count; i++)
		free(rc->hooks[i].body);
	free(rc->hooks);
	pthread_cond_destroy(&rc->cond);
	pthread_mutex_destroy(&rc->mu);
	free(rc);
}

void t_receiver_script(t_receiver *rc, const int *statuses, int n, int delay_ms)
{
	cr_assert(n >= 0 && n <= T_RECEIVER_SCRIPT_MAX, "script of %d statuses is too long", n);
	pthread_mutex_lock(&rc->mu);
	if (n > 0)
		memcpy(rc->script, statuses, (size_t)n * sizeof(*statuses));
	memset(rc->retry_after, 0, sizeof(rc->retry_after));
	rc->nscript = n;
	rc->next = 0;
	rc->delay_ms = delay_ms;
	pthread_mutex_unlock(&rc->mu);
}

void t_receiver_retry_after(t_receiver *rc, const char *const *values, int n)
{
	cr_assert(n >= 0 && n <= T_RECEIVER_SCRIPT_MAX, "%d Retry-After values is too many", n);
	pthread_mutex_lock(&rc->mu);
	for (int i = 0; i < n; i++) {
		const char *v = values[i] ? values[i] : "";
		cr_assert(strlen(v) < sizeof(rc->retry_after[i]), "Retry-After value too long");
		snprintf(rc->retry_after[i], sizeof(rc->retry_after[i]), "%s", v);
	}
	pthread_mutex_unlock(&rc->mu);
}

int t_receiver_count(t_receiver *rc)
{
	pthread_mutex_lock(&rc->mu);
	int n = rc->count;
	pthread_mutex_unlock(&rc->mu);
	return n;
}

bool t_receiver_get(t_receiver *rc, int i, struct t_hook *out)
{
	bool ok = false;
	pthread_mutex_lock(&rc->mu);
	if (i >= 0 && i < rc->count) {
		*out = rc->hooks[i];
		out->body = strdup(rc->hooks[i].body);
		ok = out->body != NULL;
	}
	pthread_mutex_unlock(&rc->mu);
	return ok;
}

bool t_receiver_wait(t_receiver *rc, int n, int timeout_ms)
{
	struct timespec until = proc_deadline(timeout_ms);
	pthread_mutex_lock(&rc->mu);
	while (rc->count < n && !rc->stopping &&
	       pthread_cond_timedwait(&rc->cond, &rc->mu, &until) != ETIMEDOUT)
		;
	bool ok = rc->count >= n;
	pthread_mutex_unlock(&rc->mu);
	return ok;
}

bool t_hook_verify(const struct t_hook *hook, const char *secret)
{
	static const char prefix[] = "whsec_";
	if (strncmp(secret, prefix, sizeof(prefix) - 1) != 0)
		return false;
	const char *b64 = secret + sizeof(prefix) - 1;
	unsigned char key[256];
	long keylen = cr_base64_decode(b64, strlen(b64), key, sizeof(key));
	if (keylen <= 0)
		return false;

	strbuf msg;
	sb_init(&msg, T_RECEIVER_BODY_MAX + 512);
	if (sb_appendf(&msg, "%s.%s.", hook->id, hook->timestamp) != BR_OK ||
	    sb_appends(&msg, hook->body ? hook->body : "") != BR_OK)
		return false;
	unsigned char mac[CR_SHA256_LEN];
	br_status st = cr_hmac_sha256(key, (size_t)keylen, msg.buf, msg.len, mac);
	sb_free(&msg);
	if (st != BR_OK)
		return false;
	char expect[64];
	size_t elen = cr_base64(mac, sizeof(mac), false, expect, sizeof(expect));

	/* The header may carry several space-separated "v1,<base64>" signatures. */
	const char *p = hook->signature;
	while (*p) {
		while (*p == ' ')
			p++;
		const char *end = strchr(p, ' ');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		if (len == 3 + elen && strncmp(p, "v1,", 3) == 0 && cr_equal(p + 3, expect, elen))
			return true;
		p += len;
	}
	return false;
}
