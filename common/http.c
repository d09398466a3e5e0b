/*
 * http.c - libmicrohttpd server wrapper (see http.h).
 *
 * Owns the MHD daemon, the handler pool (http_pool.h), the connection
 * table (http_conns.h: limits, deadlines, body budget, lingering closes),
 * one http_req per request (freed in the completion callback) and one
 * hc_conn per connection (freed when MHD reports the connection closed).
 *
 * A request's life: its head arrives (on_request's first call: limits,
 * 413 and the body budget are decided here, before any of the body is
 * read); its body is copied out as it arrives; at its end the connection
 * is suspended and the request submitted to the pool; a pool thread runs
 * the handler into req->resp and resumes the connection; MHD then calls
 * on_request again on the connection's own thread, which queues the
 * response. MHD does not time a suspended connection out, and the reaper
 * leaves a connection alone from the body's end until the request
 * completes. A client that disconnects meanwhile is noticed when the
 * response is written (the completion callback then reports an error).
 *
 * Global state: the two HTTP metrics, registered once. The in-flight
 * counter is atomic; everything else is per server or per request, and a
 * request is touched by one thread at a time (its MHD thread, or the pool
 * thread between suspend and resume).
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
#include "http_conns.h"
#include "http_pool.h"
#include "log.h"
#include "metrics.h"

/* How much of an over-limit body of unannounced length is read and dropped. */
#define HTTP_DISCARD_MAX ((size_t)8 << 20)

struct http_server {
	struct MHD_Daemon *d;
	http_handler_fn fn;
	http_error_fn error;
	void *ctx;
	size_t max_body;
	int in_flight; /* atomic */
	hc_table *conns;
	hp_pool *pool;
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

void http_metrics_zero(const char *route, unsigned code)
{
	char labels[160];
	snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%u\"", route, code);
	met_counter_add(m_requests, labels, 0);
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

br_status http_req_form_status(const struct http_req *req)
{
	return req->form_st;
}

const char *http_req_form(const struct http_req *req, const char *name, size_t *len)
{
	return http_form_get(req->form, name, len);
}

const http_form *http_req_form_fields(const struct http_req *req)
{
	return req->form;
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

/* An answer of the server's own, in the shape the handler gives req's path. */
static void server_error(struct http_req *req, struct http_resp *resp, unsigned status,
                         const char *code, const char *title, const char *detail)
{
	http_server *s = req->server;
	if (s && s->error)
		s->error(s->ctx, req, resp, status, code, title, detail);
	else
		http_resp_error(resp, status, code, title, detail);
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

/*
 * Queues an answer on the request's head, before any of its body, with
 * Connection: close: MHD reads none of the body and closes the connection
 * after the answer, gracefully (hc_linger in on_completed). route labels
 * the metric; retry_after > 0 adds Retry-After. MHD_NO when MHD refused.
 */
static enum MHD_Result answer_early(struct http_req *req, const char *route, unsigned status,
                                    const char *code, const char *title, const char *detail,
                                    int retry_after)
{
	struct http_resp resp;
	resp_init(&resp);
	req->route = route;
	server_error(req, &resp, status, code, title, detail);
	if (http_resp_header(&resp, "Connection", "close") != BR_OK ||
	    (retry_after > 0 && http_resp_header(&resp, "Retry-After", "%d", retry_after) != BR_OK))
		LOG_WARN("http: a header of an early answer was lost");
	enum MHD_Result ret = send_resp(req, &resp);
	req->answered = ret == MHD_YES;
	req->linger = req->answered;
	return ret;
}

static enum MHD_Result answer_too_large(struct http_req *req)
{
	return answer_early(req, "body_limit", 413, "payload_too_large", "Payload too large",
	                    "The request body exceeds the configured maximum size.", 0);
}

static enum MHD_Result answer_busy(struct http_req *req, const char *route, const char *detail)
{
	return answer_early(req, route, 503, "unavailable", "Service unavailable", detail, 1);
}

/*
 * The announced Content-Length: true with *n when the header is present and
 * a number (*n is SIZE_MAX when it overflows).
 */
static bool announced_length(struct MHD_Connection *conn, size_t *n)
{
	const char *cl =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (!cl || *cl < '0' || *cl > '9')
		return false;
	errno = 0;
	char *end = NULL;
	unsigned long long v = strtoull(cl, &end, 10);
	*n = errno == ERANGE || v > SIZE_MAX ? SIZE_MAX : (size_t)v;
	return true;
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

/*
 * What uri_check found wrong with a request target: MHD hands its result to
 * on_request as the request's first context, so these are told apart from
 * an http_req by their address.
 */
static char uri_nul, uri_too_many, uri_too_long;

static bool uri_flagged(const void *ctx)
{
	return ctx == &uri_nul || ctx == &uri_too_many || ctx == &uri_too_long;
}

/*
 * MHD_OPTION_URI_LOG_CALLBACK: the request target as sent, before MHD
 * decodes it and stores its query parameters (each one takes a record of
 * the connection's memory pool; past the pool MHD gives up on the request
 * and closes the connection without a usable answer). A query over the
 * limits is cut here to nothing, in MHD's own buffer of the request line,
 * which it parses after this call; the request is then answered by
 * begin_request. A NUL would be decoded from "%00" only (MHD leaves any
 * other '%' as is).
 */
static void *uri_check(void *cls, const char *uri, struct MHD_Connection *conn)
{
	(void)cls;
	(void)conn;
	char *q = strchr(uri, '?');
	if (q) {
		size_t n = strlen(q + 1), params = 1;
		for (const char *p = q + 1; *p; p++)
			params += *p == '&';
		if (n > HTTP_MAX_QUERY_BYTES || params > HTTP_MAX_QUERY_PARAMS) {
			q[1] = '\0';
			return n > HTTP_MAX_QUERY_BYTES ? &uri_too_long : &uri_too_many;
		}
	}
	for (const char *p = strchr(uri, '%'); p; p = strchr(p + 1, '%')) {
		if (p[1] == '0' && p[2] == '0')
			return &uri_nul;
	}
	return NULL;
}

/* Answers a request whose target uri_check refused (flag). */
static enum MHD_Result answer_bad_uri(struct http_req *req, const void *flag)
{
	char detail[128];
	if (flag == &uri_too_long) {
		snprintf(detail, sizeof(detail), "The query string is longer than %d bytes.",
		         HTTP_MAX_QUERY_BYTES);
		return answer_early(req, "bad_uri", 414, "uri_too_long", "URI too long", detail, 0);
	}
	if (flag == &uri_too_many)
		snprintf(detail, sizeof(detail), "More than %d query parameters.",
		         HTTP_MAX_QUERY_PARAMS);
	else
		snprintf(detail, sizeof(detail), "The path or the query contains a NUL (%%00).");
	return answer_early(req, "bad_uri", 400, "invalid_parameter", "Invalid parameter", detail,
	                    0);
}

/* on_request's first call: the head is in, none of the body is read. */
static enum MHD_Result begin_request(http_server *s, struct MHD_Connection *conn, const char *url,
                                     const char *method, void **con_cls)
{
	const void *flag = *con_cls;
	struct http_req *req = calloc(1, sizeof(*req));
	if (!req)
		return MHD_NO;
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	req->conn = conn;
	req->server = s;
	req->track = ci ? ci->socket_context : NULL;
	req->method = method;
	req->path = url;
	req->route = "unmatched";
	req->form_st = BR_NOTFOUND;
	req->start_ns = mono_ns();
	sb_init(&req->body, s->max_body);
	assign_request_id(req);
	__atomic_add_fetch(&s->in_flight, 1, __ATOMIC_SEQ_CST);
	*con_cls = req;
	if (hc_refused(s->conns, req->track))
		return answer_busy(req, "conn_limit", "Too many connections; retry shortly.");
	if (flag)
		return answer_bad_uri(req, flag);
	size_t len = 0;
	if (announced_length(conn, &len)) {
		/* Answered before any of the body is read (no 100 Continue). */
		if (len > s->max_body) {
			req->too_large = true;
			return answer_too_large(req);
		}
		if (len > 0 && !hc_budget_take(s->conns, len, len > HC_SMALL_BODY))
			return answer_busy(req, "body_budget",
			                   "Too many request bodies in flight; retry shortly.");
		req->reserved = len;
	}
	return hc_head_done(s->conns, req->track) ? MHD_YES : MHD_NO;
}

/* Takes n more body bytes of a request. */
static enum MHD_Result take_body(http_server *s, struct http_req *req, const char *data, size_t n)
{
	if (req->too_large || req->oom || req->over_budget) {
		/*
		 * A body without Content-Length passed the cap or the budget.
		 * MHD (0.9.75) refuses a response in the middle of an upload, so
		 * the rest is read and dropped, to answer at its end; a client
		 * that keeps sending past HTTP_DISCARD_MAX gets its connection cut.
		 */
		req->discarded += n;
		if (req->discarded <= HTTP_DISCARD_MAX)
			return MHD_YES;
		LOG_INFO("http: cut a connection sending a body far over the limit");
		return MHD_NO;
	}
	size_t need = req->body.len + n;
	if (need > req->reserved) {
		/* Chunked, or more than announced: reserve as it grows. */
		if (need <= s->max_body &&
		    !hc_budget_take(s->conns, need - req->reserved, need > HC_SMALL_BODY)) {
			req->over_budget = true;
			req->discarded += n;
			sb_free(&req->body);
			return MHD_YES;
		}
		if (need <= s->max_body)
			req->reserved = need;
	}
	br_status st = sb_append(&req->body, data, n);
	req->too_large = st == BR_TOOBIG;
	req->oom = st == BR_NOMEM;
	return MHD_YES;
}

/* Runs on a pool thread: the handler, then the connection resumes. */
static void run_request(void *ctx, void *item)
{
	http_server *s = ctx;
	struct http_req *req = item;
	log_set_request_id(req->request_id);
	s->fn(s->ctx, req, &req->resp);
	log_clear_context();
	req->handled = true;
	MHD_resume_connection(req->conn);
}

/*
 * A complete form body into its fields (http_form.h), their bytes taken
 * from the body budget like the body's own. false when the budget has no
 * room for them (the request is then answered 503 like a body over it); a
 * malformed form is for the handler to answer (http_req_form_status).
 */
static bool parse_form(http_server *s, struct http_req *req)
{
	const char *ct = http_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);
	if (!http_form_type(ct))
		return true;
	http_form *f = NULL;
	req->form_st =
	    http_form_parse(req->conn, sb_str(&req->body), req->body.len, s->max_body, &f);
	if (req->form_st != BR_OK)
		return true;
	size_t n = http_form_bytes(f);
	if (n && !hc_budget_take(s->conns, n, req->reserved + n > HC_SMALL_BODY)) {
		http_form_free(f);
		return false;
	}
	req->reserved += n;
	req->form = f;
	return true;
}

/* The body is complete: answer what needs no handler, else hand it to the pool. */
static enum MHD_Result end_request(http_server *s, struct http_req *req)
{
	if (!hc_body_done(s->conns, req->track))
		return MHD_NO; /* cut just before: not run */
	if (req->too_large)
		return answer_too_large(req); /* MHD refused it early: the body is read now */
	resp_init(&req->resp);
	if (!req->over_budget && !req->oom && !parse_form(s, req))
		req->over_budget = true;
	if (req->over_budget || req->oom) {
		req->route = "body_budget";
		server_error(req, &req->resp, 503, "unavailable", "Service unavailable",
		             "Too many request bodies in flight; retry shortly.");
		if (http_resp_header(&req->resp, "Retry-After", "1") != BR_OK)
			LOG_WARN("http: Retry-After header lost");
		return send_resp(req, &req->resp);
	}
	MHD_suspend_connection(req->conn);
	br_status st = hp_submit(s->pool, req);
	if (st != BR_OK) {
		/* Stopping (or, impossibly, more requests than connections). */
		server_error(req, &req->resp, 503, "unavailable", "Service unavailable",
		             "The server is shutting down; retry shortly.");
		req->handled = true;
		MHD_resume_connection(req->conn);
	}
	return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
	(void)version;
	http_server *s = cls;
	struct http_req *req = *con_cls;
	if (!req || uri_flagged(req))
		return begin_request(s, conn, url, method, con_cls);
	if (req->handled) {
		req->handled = false;
		return send_resp(req, &req->resp);
	}
	if (req->answered) {
		*upload_data_size = 0;
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;
		*upload_data_size = 0;
		return take_body(s, req, upload_data, n);
	}
	return end_request(s, req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
	(void)conn;
	http_server *s = cls;
	struct http_req *req = *con_cls;
	*con_cls = NULL;
	if (!req || uri_flagged(req))
		return; /* ended before on_request: nothing of ours */
	/* A kept-alive connection now waits for its next request's head. */
	hc_request_done(s->conns, req->track);
	if (req->linger && toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
		hc_linger(req->track);
	if (req->status) {
		char labels[160];
		snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%u\"", req->route,
		         req->status);
		met_counter_add(m_requests, labels, 1);
		met_histogram_observe(m_duration, (double)(mono_ns() - req->start_ns) / 1e9);
	}
	hc_budget_give(s->conns, req->reserved);
	resp_free(&req->resp);
	sb_free(&req->body);
	http_form_free(req->form);
	free(req);
	__atomic_sub_fetch(&s->in_flight, 1, __ATOMIC_SEQ_CST);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
	http_server *s = cls;
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
		const union MHD_ConnectionInfo *addr =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		/* Untracked when out of memory: only MHD's own limits apply. */
		*socket_context =
		    fd ? hc_open(s->conns, fd->connect_fd, addr ? addr->client_addr : NULL) : NULL;
		return;
	}
	hc_close(s->conns, *socket_context);
	*socket_context = NULL;
}

static void server_free(http_server *s)
{
	hp_free(s->pool);
	hc_free(s->conns);
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

/* The socket address of o->bind and o->port into ss; MHD_USE_IPv6 into *flags for v6. */
static br_status bind_addr(const struct http_opts *o, struct sockaddr_storage *ss, unsigned *flags)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, o->bind, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)o->port);
		return BR_OK;
	}
	if (inet_pton(AF_INET6, o->bind, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)o->port);
		*flags |= MHD_USE_IPv6;
		return BR_OK;
	}
	LOG_ERROR("http: %s is not an IP address", o->bind);
	return BR_INVAL;
}

br_status http_start(const struct http_opts *o, http_handler_fn fn, void *ctx, http_server **out)
{
	struct sockaddr_storage ss;
	unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC |
	                 MHD_ALLOW_SUSPEND_RESUME;
	if (bind_addr(o, &ss, &flags) != BR_OK)
		return BR_INVAL;
	http_server *s = calloc(1, sizeof(*s));
	if (!s)
		return BR_NOMEM;
	s->fn = fn;
	s->ctx = ctx;
	s->error = o->error;
	s->max_body = o->max_body;
	unsigned header_ms = o->header_timeout_ms ? o->header_timeout_ms : HTTP_HEADER_TIMEOUT_MS;
	unsigned body_ms = o->body_timeout_ms ? o->body_timeout_ms : HTTP_BODY_TIMEOUT_MS;
	struct hc_limits lim = {
	    .max_conns = o->conn_limit,
	    .max_per_ip = o->per_ip_limit,
	    .header_timeout_ns = (long long)header_ms * 1000000LL,
	    .body_timeout_ns = (long long)body_ms * 1000000LL,
	    .body_budget = o->body_budget ? o->body_budget : HTTP_BODY_BUDGET,
	};
	/* Every connection MHD may hold has at most one request queued. */
	unsigned mhd_limit = o->conn_limit + HTTP_CONN_SLACK(o->conn_limit);
	int io = o->io_threads ? o->io_threads : HTTP_IO_THREADS;
	if (io > o->threads)
		io = o->threads;
	if (!http_layer_json())
		LOG_WARN(
		    "libmicrohttpd's own refusals (414, 431, 505, malformed requests) will not be "
		    "JSON: its MHD_queue_response is not interposed");
	br_status st = hc_new(&lim, &s->conns);
	if (st == BR_OK)
		st = hp_new(o->threads, mhd_limit, run_request, s, &s->pool);
	if (st != BR_OK) {
		server_free(s);
		return st;
	}
	s->d = MHD_start_daemon(
	    flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
	    mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_THREAD_POOL_SIZE, (unsigned)io, MHD_OPTION_CONNECTION_LIMIT, mhd_limit,
	    MHD_OPTION_CONNECTION_TIMEOUT, (o->idle_timeout_ms + 999) / 1000,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->conn_memory, MHD_OPTION_URI_LOG_CALLBACK,
	    uri_check, NULL, MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
	    MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_END);
	if (!s->d) {
		LOG_ERROR("http: cannot listen on %s:%d", o->bind, o->port);
		server_free(s);
		return BR_IO;
	}
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
	/*
	 * MHD must not be stopped with a connection suspended: the pool runs
	 * what it holds and every handler resumes its connection before the
	 * pool is gone. Requests arriving after that are answered 503.
	 */
	hp_stop(s->pool);
	MHD_stop_daemon(s->d);
	server_free(s);
}
