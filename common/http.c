/*
 * http.c - libmicrohttpd server wrapper (see http.h).
 *
 * Owns the MHD daemon, one http_req per request (freed in the completion
 * callback) and one conn_track per connection (freed when MHD reports the
 * connection closed). The deadlines against slow clients are kept by a
 * reaper thread: MHD only knows an idle timeout, which a client sending a
 * byte every few seconds never trips. The reaper shuts a late connection's
 * socket down (never closes it: the descriptor stays MHD's), and MHD then
 * closes the connection as if the client had hung up. Because MHD reports
 * a connection closed before it closes the descriptor, and the reaper only
 * touches descriptors of tracked connections under the server's mutex, it
 * can never shut down a reused descriptor.
 *
 * Global state: the two HTTP metrics, registered once. The in-flight
 * counter is atomic; the connection list and the deadlines are under the
 * server's mutex; everything else is per request.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "crypto.h"
#include "log.h"
#include "metrics.h"
#include "proc.h"

#define HTTP_REAPER_PERIOD_MS 250
/* How much of an over-limit body of unannounced length is read and dropped. */
#define HTTP_DISCARD_MAX ((size_t)8 << 20)

/* One connection, for the reaper. */
struct conn_track {
	struct conn_track *prev, *next;
	int fd;
	long long deadline_ns; /* 0: none (a handler is running) */
	bool cut;
};

struct http_server {
	struct MHD_Daemon *d;
	http_handler_fn fn;
	void *ctx;
	size_t max_body;
	int in_flight; /* atomic */
	long long header_timeout_ns;
	long long body_timeout_ns;
	pthread_mutex_t mu; /* guards conns, every conn_track and stopping */
	pthread_cond_t wake;
	struct conn_track *conns;
	bool stopping;
	bool reaper_started;
	pthread_t reaper;
};

static met_counter *m_requests;
static met_histogram *m_duration;

br_status http_metrics_init(void)
{
	m_requests = met_counter_new("bulkreg_http_requests_total",
	                             "HTTP requests answered, by route and status code.");
	m_duration = met_histogram_new("bulkreg_http_request_duration_seconds",
	                               "Time from request start to response completion.");
	return m_requests && m_duration ? BR_OK : BR_NOMEM;
}

static long long mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

const char *http_req_header(struct http_req *req, const char *name)
{
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_req_query(struct http_req *req, const char *key)
{
	return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

struct query_iter {
	bool (*fn)(void *ctx, const char *key, const char *value);
	void *ctx;
};

static enum MHD_Result query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
	(void)kind;
	struct query_iter *it = cls;
	return it->fn(it->ctx, key, value ? value : "") ? MHD_YES : MHD_NO;
}

void http_req_query_each(struct http_req *req,
                         bool (*fn)(void *ctx, const char *key, const char *value), void *ctx)
{
	struct query_iter it = {fn, ctx};
	MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, query_cb, &it);
}

br_status http_resp_header(struct http_resp *resp, const char *name, const char *fmt, ...)
{
	if (resp->nheaders >= HTTP_MAX_HEADERS)
		return BR_TOOBIG;
	strbuf sb;
	sb_init(&sb, 4096);
	va_list ap;
	va_start(ap, fmt);
	br_status st = sb_vappendf(&sb, fmt, ap);
	va_end(ap);
	if (st != BR_OK)
		return st;
	char *n = strdup(name);
	if (!n) {
		sb_free(&sb);
		return BR_NOMEM;
	}
	resp->headers[resp->nheaders].name = n;
	resp->headers[resp->nheaders].value = sb_take(&sb);
	if (!resp->headers[resp->nheaders].value)
		resp->headers[resp->nheaders].value = strdup("");
	resp->nheaders++;
	return BR_OK;
}

void http_resp_json(struct http_resp *resp, unsigned status, const char *json)
{
	resp->status = status;
	sb_reset(&resp->body);
	if (sb_appends(&resp->body, json) != BR_OK)
		LOG_ERROR("response body of %zu bytes lost", strlen(json));
}

void http_resp_error(struct http_resp *resp, unsigned status, const char *code, const char *title,
                     const char *detail)
{
	resp->status = status;
	resp->content_type = "application/vnd.api+json";
	sb_reset(&resp->body);
	br_status st =
	    sb_appendf(&resp->body, "{\"errors\":[{\"status\":\"%u\",\"code\":\"%s\",\"title\":\"",
	               status, code);
	if (st == BR_OK)
		st = sb_append_json_escaped(&resp->body, title, strlen(title));
	if (st == BR_OK)
		st = sb_appends(&resp->body, "\",\"detail\":\"");
	if (st == BR_OK)
		st = sb_append_json_escaped(&resp->body, detail, strlen(detail));
	if (st == BR_OK)
		st = sb_appends(&resp->body, "\"}]}");
	if (st != BR_OK)
		sb_free(&resp->body);
}

static void resp_free(struct http_resp *resp)
{
	sb_free(&resp->body);
	for (int i = 0; i < resp->nheaders; i++) {
		free(resp->headers[i].name);
		free(resp->headers[i].value);
	}
	resp->nheaders = 0;
}

static enum MHD_Result send_resp(struct http_req *req, struct http_resp *resp)
{
	size_t len = resp->body.len;
	char *body = sb_take(&resp->body);
	struct MHD_Response *r = MHD_create_response_from_buffer(
	    len, body ? body : (void *)"", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (!r) {
		free(body);
		resp_free(resp);
		return MHD_NO;
	}
	MHD_add_response_header(r, "Content-Type",
	                        resp->content_type ? resp->content_type : "application/json");
	MHD_add_response_header(r, "X-Request-Id", req->request_id);
	for (int i = 0; i < resp->nheaders; i++)
		MHD_add_response_header(r, resp->headers[i].name, resp->headers[i].value);
	enum MHD_Result ret = MHD_queue_response(req->conn, resp->status, r);
	if (ret == MHD_YES)
		req->status = resp->status;
	MHD_destroy_response(r);
	resp_free(resp);
	return ret;
}

static void resp_init(struct http_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = 500;
	sb_init(&resp->body, (size_t)1 << 30);
}

/* Sets the connection's deadline, deadline_ns from now (0: none). */
static void set_deadline(http_server *s, struct MHD_Connection *conn, long long in_ns)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn_track *t = ci ? ci->socket_context : NULL;
	if (!t)
		return;
	long long deadline = in_ns ? mono_ns() + in_ns : 0;
	pthread_mutex_lock(&s->mu);
	t->deadline_ns = deadline;
	pthread_mutex_unlock(&s->mu);
}

/*
 * Queues the 413 for a body over the cap, with Connection: close. Queued on
 * the request's head, before any of the body, MHD reads none of it and
 * closes the connection after the answer. MHD_NO when MHD refused the
 * response.
 */
static enum MHD_Result answer_too_large(struct http_req *req)
{
	struct http_resp resp;
	resp_init(&resp);
	req->route = "body_limit";
	http_resp_error(&resp, 413, "payload_too_large", "Payload too large",
	                "The request body exceeds the configured maximum size.");
	if (http_resp_header(&resp, "Connection", "close") != BR_OK)
		LOG_WARN("Connection header lost");
	enum MHD_Result ret = send_resp(req, &resp);
	req->answered = ret == MHD_YES;
	return ret;
}

/* True when the request announces a body longer than the cap. */
static bool announced_too_large(http_server *s, struct MHD_Connection *conn)
{
	const char *cl =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (!cl || *cl < '0' || *cl > '9')
		return false;
	errno = 0;
	char *end = NULL;
	unsigned long long n = strtoull(cl, &end, 10);
	return errno == ERANGE || n > s->max_body;
}

/*
 * A request id must be unique, not secret: each thread draws a random
 * 64-bit prefix once and numbers its requests after it, the number
 * scrambled by a bijection so ids do not look sequential. (Random bytes
 * per request cost a getpid system call each, a measurable share of a
 * small GET.) Writes 32 hex digits.
 */
static void new_request_id(char out[33])
{
	static _Thread_local uint64_t prefix, counter;
	static _Thread_local bool seeded;
	if (!seeded) {
		if (cr_random(&prefix, sizeof(prefix)) != BR_OK)
			prefix = (uint64_t)mono_ns() ^ (uint64_t)(uintptr_t)&counter;
		seeded = true;
	}
	/* splitmix64's finalizer: a bijection of the counter. */
	uint64_t z = ++counter + 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	unsigned char raw[16];
	for (int i = 0; i < 8; i++) {
		raw[i] = (unsigned char)(prefix >> (56 - 8 * i));
		raw[8 + i] = (unsigned char)(z >> (56 - 8 * i));
	}
	cr_hex(raw, sizeof(raw), out);
}

/* A client's X-Request-Id is kept when it is short and printable. */
static void assign_request_id(struct http_req *req)
{
	const char *given = http_req_header(req, "X-Request-Id");
	if (given && *given && strlen(given) < sizeof(req->request_id)) {
		bool ok = true;
		for (const char *p = given; *p; p++)
			ok = ok && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
			            (*p >= 'A' && *p <= 'Z') || *p == '-' || *p == '_');
		if (ok) {
			memcpy(req->request_id, given, strlen(given) + 1);
			return;
		}
	}
	new_request_id(req->request_id);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	(void)version;
	http_server *s = cls;
	struct http_req *req = *con_cls;
	if (!req) {
		req = calloc(1, sizeof(*req));
		if (!req)
			return MHD_NO;
		req->conn = conn;
		req->method = method;
		req->path = url;
		req->route = "unmatched";
		req->start_ns = mono_ns();
		sb_init(&req->body, s->max_body);
		assign_request_id(req);
		__atomic_add_fetch(&s->in_flight, 1, __ATOMIC_SEQ_CST);
		*con_cls = req;
		if (announced_too_large(s, conn)) {
			/* Answered before any of the body is read (no 100 Continue). */
			req->too_large = true;
			return answer_too_large(req);
		}
		set_deadline(s, conn, s->body_timeout_ns);
		return MHD_YES;
	}
	if (req->answered) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		if (req->too_large || req->oom) {
			/*
			 * A body without Content-Length passed the cap. MHD (0.9.75)
			 * refuses a response in the middle of an upload, so the rest
			 * is read and dropped, to answer 413 at its end; a client that
			 * keeps sending past HTTP_DISCARD_MAX gets its connection cut.
			 */
			req->discarded += n;
			if (req->discarded <= HTTP_DISCARD_MAX)
				return MHD_YES;
			LOG_INFO("http: cut a connection sending a body far over the limit");
			return MHD_NO;
		}
		br_status st = sb_append(&req->body, upload_data, n);
		req->too_large = st == BR_TOOBIG;
		req->oom = st == BR_NOMEM;
		return MHD_YES;
	}

	set_deadline(s, conn, 0); /* the client is done; the handler's time is ours */
	if (req->too_large)
		return answer_too_large(req); /* MHD refused it early: the body is read now */
	struct http_resp resp;
	resp_init(&resp);
	log_set_request_id(req->request_id);
	if (req->oom) {
		http_resp_error(&resp, 503, "unavailable", "Service unavailable",
		                "The server is short of memory; retry later.");
	} else {
		s->fn(s->ctx, req, &resp);
	}
	log_clear_context();
	return send_resp(req, &resp);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)toe;
	http_server *s = cls;
	struct http_req *req = *con_cls;
	/* A kept-alive connection now waits for its next request's head. */
	set_deadline(s, conn, s->header_timeout_ns);
	if (!req)
		return;
	if (req->status) {
		char labels[160];
		snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%u\"", req->route,
		         req->status);
		met_counter_add(m_requests, labels, 1);
		met_histogram_observe(m_duration, (double)(mono_ns() - req->start_ns) / 1e9);
	}
	sb_free(&req->body);
	free(req);
	*con_cls = NULL;
	__atomic_sub_fetch(&s->in_flight, 1, __ATOMIC_SEQ_CST);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
	http_server *s = cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		struct conn_track *t = ci ? calloc(1, sizeof(*t)) : NULL;
		*socket_context = t;
		if (!t)
			return; /* untracked: only MHD's idle timeout applies */
		t->fd = ci->connect_fd;
		t->deadline_ns = mono_ns() + s->header_timeout_ns;
		pthread_mutex_lock(&s->mu);
		t->next = s->conns;
		if (s->conns)
			s->conns->prev = t;
		s->conns = t;
		pthread_mutex_unlock(&s->mu);
		return;
	}
	struct conn_track *t = *socket_context;
	if (!t)
		return;
	pthread_mutex_lock(&s->mu);
	if (t->prev)
		t->prev->next = t->next;
	else
		s->conns = t->next;
	if (t->next)
		t->next->prev = t->prev;
	pthread_mutex_unlock(&s->mu);
	free(t);
	*socket_context = NULL;
}

/* Shuts down connections past their deadline, every HTTP_REAPER_PERIOD_MS. */
static void *reaper_main(void *arg)
{
	http_server *s = arg;
	pthread_mutex_lock(&s->mu);
	while (!s->stopping) {
		long long now = mono_ns();
		int cut = 0;
		for (struct conn_track *t = s->conns; t; t = t->next) {
			if (t->cut || !t->deadline_ns || now < t->deadline_ns)
				continue;
			shutdown(t->fd, SHUT_RDWR);
			t->cut = true;
			cut++;
		}
		if (cut) {
			/* Not under the lock: MHD threads wait on it for every request. */
			pthread_mutex_unlock(&s->mu);
			LOG_INFO("http: cut %d connection(s) too slow to send their request", cut);
			pthread_mutex_lock(&s->mu);
			if (s->stopping)
				break;
		}
		struct timespec ts = proc_deadline(HTTP_REAPER_PERIOD_MS);
		pthread_cond_timedwait(&s->wake, &s->mu, &ts);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

static void server_free(http_server *s)
{
	if (s->reaper_started) {
		pthread_mutex_lock(&s->mu);
		s->stopping = true;
		pthread_cond_signal(&s->wake);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->reaper, NULL);
	}
	while (s->conns) {
		struct conn_track *t = s->conns;
		s->conns = t->next;
		free(t);
	}
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	char line[512];
	vsnprintf(line, sizeof(line), fmt, ap);
	size_t n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	LOG_WARN("http: %s", line);
}

br_status http_start(const struct http_opts *o, http_handler_fn fn, void *ctx, http_server **out)
{
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	const struct sockaddr *addr;
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
	memset(&sin, 0, sizeof(sin));
	memset(&sin6, 0, sizeof(sin6));
	if (inet_pton(AF_INET, o->bind, &sin.sin_addr) == 1) {
		sin.sin_family = AF_INET;
		sin.sin_port = htons((uint16_t)o->port);
		addr = (const struct sockaddr *)&sin;
	} else if (inet_pton(AF_INET6, o->bind, &sin6.sin6_addr) == 1) {
		sin6.sin6_family = AF_INET6;
		sin6.sin6_port = htons((uint16_t)o->port);
		addr = (const struct sockaddr *)&sin6;
		flags |= MHD_USE_IPv6;
	} else {
		LOG_ERROR("http: %s is not an IP address", o->bind);
		return BR_INVAL;
	}
	http_server *s = calloc(1, sizeof(*s));
	if (!s)
		return BR_NOMEM;
	s->fn = fn;
	s->ctx = ctx;
	s->max_body = o->max_body;
	s->header_timeout_ns =
	    (long long)(o->header_timeout_s ? o->header_timeout_s : HTTP_HEADER_TIMEOUT_S) *
	    1000000000LL;
	s->body_timeout_ns =
	    (long long)(o->body_timeout_s ? o->body_timeout_s : HTTP_BODY_TIMEOUT_S) * 1000000000LL;
	proc_cond_init(&s->wake);
	pthread_mutex_init(&s->mu, NULL);
	s->d = MHD_start_daemon(
	    flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
	    mhd_log, NULL, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_THREAD_POOL_SIZE,
	    (unsigned)o->threads, MHD_OPTION_CONNECTION_LIMIT, o->conn_limit,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->per_ip_limit, MHD_OPTION_CONNECTION_TIMEOUT,
	    o->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->conn_memory,
	    MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION,
	    on_connection, s, MHD_OPTION_END);
	if (!s->d) {
		LOG_ERROR("http: cannot listen on %s:%d", o->bind, o->port);
		server_free(s);
		return BR_IO;
	}
	if (pthread_create(&s->reaper, NULL, reaper_main, s) != 0) {
		LOG_ERROR("http: cannot start the slow-client reaper");
		MHD_stop_daemon(s->d);
		server_free(s);
		return BR_IO;
	}
	s->reaper_started = true;
	*out = s;
	return BR_OK;
}

void http_stop(http_server *s, int wait_ms)
{
	if (!s)
		return;
	MHD_socket fd = MHD_quiesce_daemon(s->d);
	if (fd != MHD_INVALID_SOCKET)
		close(fd);
	long long deadline = mono_ns() + (long long)wait_ms * 1000000LL;
	while (__atomic_load_n(&s->in_flight, __ATOMIC_SEQ_CST) > 0 && mono_ns() < deadline)
		usleep(10000);
	MHD_stop_daemon(s->d);
	server_free(s);
}
