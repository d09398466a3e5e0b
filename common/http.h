/*
 * http.h - the HTTP server both processes use, over libmicrohttpd.
 *
 * libmicrohttpd's internal epoll threads (io_threads of them) only move
 * bytes: they gather a request's body up to a cap, then suspend the
 * connection and hand the whole request to a fixed pool of handler
 * threads (common/http_pool.h); the handler's response is queued when the
 * connection resumes. A handler that blocks therefore delays only its own
 * request. A request whose body is complete is never cut by a deadline:
 * it is either answered or, if the connection was cut before, not run.
 *
 * A body over the cap is answered 413: at once, without reading any of it,
 * when Content-Length announces it; otherwise (chunked) the rest is read
 * and dropped to answer 413 at its end, and a client still sending 8 MiB
 * past the cap is cut off. Bodies held at once share a budget
 * (body_budget): a request that would exceed it is answered 503
 * unavailable with Retry-After before its body is read. An answer sent
 * before the body was read closes the connection gracefully (lingering
 * close), so a client that sends its whole body before reading gets it.
 *
 * Connection limits in total and per client address, the deadlines of a
 * request's head and body (against slowloris), and the idle timeout are
 * those of http_opts (common/http_conns.h tells how a connection over a
 * limit first makes room by closing an idle one, else is answered 503).
 * Every response carries X-Request-Id; the server counts
 * bulkreg_http_requests_total{route,code} and times
 * bulkreg_http_request_duration_seconds.
 *
 * The handler runs on a pool thread and must be thread-safe.
 */
#ifndef BULKREG_HTTP_H
#define BULKREG_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include "http_form.h"
#include "status.h"
#include "strbuf.h"

#define HTTP_MAX_HEADERS 16

/* Defaults of http_opts (0 there means these). */
#define HTTP_HEADER_TIMEOUT_MS 20000
#define HTTP_BODY_TIMEOUT_MS   60000
#define HTTP_BODY_BUDGET       ((size_t)64 << 20)
#define HTTP_IO_THREADS        2

/*
 * A request target's query: at most HTTP_MAX_QUERY_PARAMS parameters (else
 * 400 invalid_parameter) and HTTP_MAX_QUERY_BYTES bytes (else 414). Past
 * them libmicrohttpd would run out of its per-connection memory storing the
 * parameters and close the connection without an answer. A decoded NUL
 * (%00) anywhere in the path or the query is 400 invalid_parameter: a C
 * string would end there. All three are answered before the handler runs.
 */
#define HTTP_MAX_QUERY_PARAMS 100
#define HTTP_MAX_QUERY_BYTES  8192
/*
 * Sockets MHD accepts beyond conn_limit: those over the limit are answered
 * 503 rather than closed unanswered (plan descriptors for them too).
 */
#define HTTP_CONN_SLACK(limit) ((limit) / 8 + 16)

struct MHD_Connection;
typedef struct http_server http_server;

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

struct http_req {
	struct MHD_Connection *conn; /* borrowed */
	const char *method;
	const char *path; /* without the query string */
	strbuf body;
	char request_id[40];
	const char *route; /* metrics label; a string literal set by the handler */
	/* internal */
	http_form *form;   /* a form body's fields (http_req_form), or NULL */
	br_status form_st; /* BR_NOTFOUND: the body is no form */
	bool too_large;
	bool oom;
	bool over_budget; /* a chunked body outgrew the body budget */
	bool answered;    /* a response is queued already (before the body ended) */
	bool linger;      /* answered early: close gracefully */
	bool handled;     /* a pool thread filled resp: queue it */
	size_t discarded; /* body bytes dropped after the cap */
	size_t reserved;  /* bytes taken from the body budget */
	long long start_ns;
	unsigned status;
	void *track;           /* the connection's hc_conn (http_conns.h) */
	void *server;          /* the http_server */
	struct http_resp resp; /* the handler's response, while suspended */
};

typedef void (*http_handler_fn)(void *ctx, struct http_req *req, struct http_resp *resp);

/*
 * Renders an answer the server gives by itself, before or instead of the
 * handler (413 body too large, 503 at a connection or memory bound), for
 * req's path: what the handler would answer for that failure. Called on
 * MHD's threads: it must not block. Without one, http_resp_error().
 */
typedef void (*http_error_fn)(void *ctx, struct http_req *req, struct http_resp *resp,
                              unsigned status, const char *code, const char *title,
                              const char *detail);

struct http_opts {
	const char *bind; /* IPv4 or IPv6 literal */
	int port;
	int threads;                /* handler threads: requests handled at once */
	int io_threads;             /* MHD network threads; 0 = HTTP_IO_THREADS */
	size_t max_body;            /* larger bodies are answered 413 */
	size_t body_budget;         /* bytes of bodies held at once; 0 = HTTP_BODY_BUDGET */
	unsigned conn_limit;        /* connections at once, over all threads */
	unsigned per_ip_limit;      /* connections at once from one address; 0 = no limit */
	unsigned idle_timeout_ms;   /* a connection silent this long is closed (whole seconds) */
	unsigned header_timeout_ms; /* a request head must be complete within; 0 = default */
	unsigned body_timeout_ms;   /* its body within, after the head; 0 = default */
	size_t conn_memory;         /* per-connection buffer memory */
	http_error_fn error;        /* the server's own errors; NULL: http_resp_error */
};

/* Registers the HTTP metrics; call once before http_start. */
br_status http_metrics_init(void) BR_MUST_USE;

/*
 * Creates the series {route, code} of bulkreg_http_requests_total at 0 if
 * it does not exist (so it is there before its first request). route is a
 * route label as handlers set req->route. Call after http_metrics_init.
 */
void http_metrics_zero(const char *route, unsigned code);

/*
 * Whether libmicrohttpd's own refusals of requests it cannot parse (414,
 * 431, 505, a malformed header or body framing) reach the client as JSON:API
 * documents (http_layer.c). http_start warns when they would not.
 */
bool http_layer_json(void);

/* Starts listening. BR_IO when the address cannot be bound. */
br_status http_start(const struct http_opts *o, http_handler_fn fn, void *ctx,
                     http_server **out) BR_MUST_USE;

/*
 * Stops accepting connections, waits up to wait_ms for requests in flight
 * to finish, then lets the handlers finish what they run or was queued
 * (however long), stops and frees the server. Accepts NULL.
 */
void http_stop(http_server *s, int wait_ms);

/* A request header (case-insensitive name); borrowed, NULL if absent. */
const char *http_req_header(struct http_req *req, const char *name);

/* A query argument; borrowed, NULL if absent. */
const char *http_req_query(struct http_req *req, const char *key);

/* Calls fn for every query argument; stops early when fn returns false. */
void http_req_query_each(struct http_req *req,
                         bool (*fn)(void *ctx, const char *key, const char *value), void *ctx);

/*
 * A form body (Content-Type multipart/form-data or
 * application/x-www-form-urlencoded) is parsed into its fields by the
 * server once it is complete, before the handler runs (http_form.h; the
 * fields count against the body budget). How that went: BR_OK (the fields
 * are there), BR_NOTFOUND (the body is no form), BR_INVAL (malformed),
 * BR_TOOBIG (more than HTTP_FORM_MAX_FIELDS fields or too long a name).
 */
br_status http_req_form_status(const struct http_req *req);

/*
 * A form field's value (the first field named name), its length in *len
 * (may be NULL; the value may hold NUL bytes); borrowed, NULL if absent or
 * the body is no form.
 */
const char *http_req_form(const struct http_req *req, const char *name, size_t *len);

/* The request's form (http_form.h), borrowed; NULL unless http_req_form_status is BR_OK. */
const http_form *http_req_form_fields(const struct http_req *req);

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
