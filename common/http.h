/*
 * http.h - the HTTP server both processes use, over libmicrohttpd.
 *
 * The server runs libmicrohttpd's internal epoll thread pool. It gathers a
 * request's body up to a cap, then calls one handler with the whole
 * request. A body over the cap is answered 413: at once, without reading
 * any of it, when Content-Length announces it (then the connection is
 * closed); otherwise (chunked) the rest is read and dropped to answer 413
 * at its end, and a client still sending 8 MiB past the cap is cut off.
 * Nothing past the cap is ever kept, so memory stays flat whatever a
 * client sends.
 *
 * It applies the connection limits of http_opts: connections in total and
 * per client address, buffer memory per connection, an idle timeout, and
 * two deadlines against slow clients (slowloris): a request's head must
 * arrive within header_timeout_s, its body within body_timeout_s, however
 * steadily the bytes trickle in. A connection past a deadline is shut
 * down. It stamps every response with X-Request-Id, counts
 * bulkreg_http_requests_total{route,code} and times
 * bulkreg_http_request_duration_seconds.
 *
 * The handler runs on a pool thread and must be thread-safe.
 */
#ifndef BULKREG_HTTP_H
#define BULKREG_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"
#include "strbuf.h"

#define HTTP_MAX_HEADERS 16

/* Defaults of the http_opts deadlines (0 there means these). */
#define HTTP_HEADER_TIMEOUT_S 20
#define HTTP_BODY_TIMEOUT_S   60

struct MHD_Connection;
typedef struct http_server http_server;

struct http_req {
	struct MHD_Connection *conn; /* borrowed */
	const char *method;
	const char *path; /* without the query string */
	strbuf body;
	char request_id[40];
	const char *route; /* metrics label; a string literal set by the handler */
	/* internal */
	bool too_large;
	bool oom;
	bool answered;    /* a response is queued already (413 before the body ended) */
	size_t discarded; /* body bytes dropped after the cap */
	long long start_ns;
	unsigned status;
};

struct http_resp {
	unsigned status;
	const char *content_type; /* a string literal; default application/json */
	strbuf body;
	int nheaders;
	struct {
		char *name;
		char *value;
	} headers[HTTP_MAX_HEADERS];
};

typedef void (*http_handler_fn)(void *ctx, struct http_req *req, struct http_resp *resp);

struct http_opts {
	const char *bind; /* IPv4 or IPv6 literal */
	int port;
	int threads;
	size_t max_body;           /* larger bodies are answered 413 */
	unsigned conn_limit;       /* connections at once, over all threads */
	unsigned per_ip_limit;     /* connections at once from one address; 0 = no limit */
	unsigned idle_timeout_s;   /* a connection silent this long is closed */
	unsigned header_timeout_s; /* a request head must be complete within; 0 = default */
	unsigned body_timeout_s;   /* its body within, after the head; 0 = default */
	size_t conn_memory;        /* per-connection buffer memory */
};

/* Registers the HTTP metrics; call once before http_start. */
br_status http_metrics_init(void) BR_MUST_USE;

/* Starts listening. BR_IO when the address cannot be bound. */
br_status http_start(const struct http_opts *o, http_handler_fn fn, void *ctx,
                     http_server **out) BR_MUST_USE;

/*
 * Stops accepting connections, waits up to wait_ms for requests in flight
 * to finish, then stops and frees the server. Accepts NULL.
 */
void http_stop(http_server *s, int wait_ms);

/* A request header (case-insensitive name); borrowed, NULL if absent. */
const char *http_req_header(struct http_req *req, const char *name);

/* A query argument; borrowed, NULL if absent. */
const char *http_req_query(struct http_req *req, const char *key);

/* Calls fn for every query argument; stops early when fn returns false. */
void http_req_query_each(struct http_req *req,
                         bool (*fn)(void *ctx, const char *key, const char *value), void *ctx);

/* Adds a response header (copied). BR_NOMEM / BR_TOOBIG when full. */
br_status http_resp_header(struct http_resp *resp, const char *name, const char *fmt,
                           ...) BR_MUST_USE __attribute__((format(printf, 3, 4)));

/*
 * Makes resp a JSON:API error document with one error. Out of memory leaves
 * a bodiless response with the same status.
 */
void http_resp_error(struct http_resp *resp, unsigned status, const char *code, const char *title,
                     const char *detail);

/* Sets a JSON body from a NUL-terminated string (copied). */
void http_resp_json(struct http_resp *resp, unsigned status, const char *json);

#endif
