/*
 * http.c - libmicrohttpd server wrapper (see http.h).
 *
 * Owns the MHD daemon and one http_req per request (freed in the completion
 * callback). Global state: the two HTTP metrics, registered once. The
 * in-flight counter is atomic; everything else is per request.
 */
#include "http.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>

#include "crypto.h"
#include "log.h"
#include "metrics.h"

struct http_server {
	struct MHD_Daemon *d;
	http_handler_fn fn;
	void *ctx;
	size_t max_body;
	int in_flight; /* atomic */
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

void http_resp_error(struct http_resp *resp, unsigned status, const char *code,
		     const char *title, const char *detail)
{
	resp->status = status;
	resp->content_type = "application/vnd.api+json";
	sb_reset(&resp->body);
	br_status st = sb_appendf(&resp->body,
				  "{\"errors\":[{\"status\":\"%u\",\"code\":\"%s\",\"title\":\"",
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
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, body ? body : (void *)"",
						body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
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
	req->status = resp->status;
	enum MHD_Result ret = MHD_queue_response(req->conn, resp->status, r);
	MHD_destroy_response(r);
	resp_free(resp);
	return ret;
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
	unsigned char raw[16];
	if (cr_random(raw, sizeof(raw)) != BR_OK)
		memset(raw, 0, sizeof(raw));
	cr_hex(raw, sizeof(raw), req->request_id);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version,
				  const char *upload_data, size_t *upload_data_size,
				  void **con_cls)
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
		return MHD_YES;
	}
	if (*upload_data_size) {
		if (!req->too_large && !req->oom) {
			br_status st = sb_append(&req->body, upload_data, *upload_data_size);
			req->too_large = st == BR_TOOBIG;
			req->oom = st == BR_NOMEM;
		}
		*upload_data_size = 0;
		return MHD_YES;
	}

	struct http_resp resp;
	memset(&resp, 0, sizeof(resp));
	resp.status = 500;
	sb_init(&resp.body, (size_t)1 << 30);
	log_set_request_id(req->request_id);
	if (req->too_large) {
		req->route = "body_limit";
		http_resp_error(&resp, 413, "payload_too_large", "Payload too large",
				"The request body exceeds the configured maximum size.");
	} else if (req->oom) {
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
	(void)conn;
	(void)toe;
	http_server *s = cls;
	struct http_req *req = *con_cls;
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
	s->d = MHD_start_daemon(
		flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
		mhd_log, NULL, MHD_OPTION_SOCK_ADDR, addr,
		MHD_OPTION_THREAD_POOL_SIZE, (unsigned)o->threads, MHD_OPTION_CONNECTION_LIMIT,
		o->conn_limit, MHD_OPTION_PER_IP_CONNECTION_LIMIT, o->per_ip_limit,
		MHD_OPTION_CONNECTION_TIMEOUT, o->idle_timeout_s,
		MHD_OPTION_CONNECTION_MEMORY_LIMIT, o->conn_memory, MHD_OPTION_NOTIFY_COMPLETED,
		on_completed, s, MHD_OPTION_END);
	if (!s->d) {
		LOG_ERROR("http: cannot listen on %s:%d", o->bind, o->port);
		free(s);
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
	MHD_stop_daemon(s->d);
	free(s);
}
