/*
 * http_conns.h - the HTTP server's defences against hostile clients
 * (common/http.c): its own count of connections in total and per client
 * address, the deadlines of a request's head and body, the budget of
 * request-body bytes the process holds, and the lingering close that lets
 * an early answer reach a client still sending its body.
 *
 * Connections: at most max_conns are "admitted", and at most max_per_ip
 * from one address. A new connection over a limit first makes room by
 * cutting the oldest connection of the same scope that has no request in
 * progress (an idle keep-alive or a head still trickling in) and has had
 * HC_EVICT_AGE_MS to send one; failing that it is refused: the server
 * answers its request 503 and closes it (hc_refused).
 *
 * Deadlines: a connection with no request in progress must deliver a head
 * within header_timeout; once the head is in, its body within
 * body_timeout. From the body's end until the request completes there is
 * no deadline: a request being handled is never cut. A connection past its
 * deadline is shut down by a reaper thread (never closed: the descriptor
 * stays MHD's until it reports the connection closed).
 *
 * Ownership: hc_table owns every hc_conn (hc_open to hc_close) and the
 * duplicated descriptors of lingering closes. Thread-safe: one mutex.
 */
#ifndef BULKREG_HTTP_CONNS_H
#define BULKREG_HTTP_CONNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "status.h"

/* A connection younger than this (or idle for less) is never cut to make room. */
#define HC_EVICT_AGE_MS 1000
/* A refused connection's head must arrive within this (or its header timeout). */
#define HC_REFUSED_HEAD_MS 2000
/* Lingering closes at once, and the body bytes one of them reads and drops. */
#define HC_LINGER_MAX       128
#define HC_LINGER_MAX_BYTES ((size_t)8 << 20)

typedef struct hc_table hc_table;
typedef struct hc_conn hc_conn;

struct hc_limits {
	unsigned max_conns;
	unsigned max_per_ip; /* 0: none */
	long long header_timeout_ns;
	long long body_timeout_ns;
	size_t body_budget; /* bytes of request bodies held at once */
};

/* Starts the reaper. BR_NOMEM / BR_IO. */
br_status hc_new(const struct hc_limits *l, hc_table **out) BR_MUST_USE;

/* Stops the reaper, closes lingering descriptors, frees every hc_conn. Accepts NULL. */
void hc_free(hc_table *t);

/*
 * A new connection (MHD's socket fd, the client's address): admitted, or
 * refused when over a limit and nothing could be cut. NULL when out of
 * memory (the connection is then only under MHD's own limits).
 */
hc_conn *hc_open(hc_table *t, int fd, const struct sockaddr *addr);

/* MHD reported the connection closed; c is freed. Accepts NULL. */
void hc_close(hc_table *t, hc_conn *c);

/* True when the connection was refused at hc_open (answer 503 and close). */
bool hc_refused(hc_table *t, const hc_conn *c);

/*
 * A request's head arrived: its body deadline starts. false when the
 * connection was cut meanwhile (drop the request). NULL c: true.
 */
bool hc_head_done(hc_table *t, hc_conn *c);

/*
 * The body is complete and the request is to be handled: no deadline until
 * hc_request_done. false when it was cut meanwhile: the request must not run.
 */
bool hc_body_done(hc_table *t, hc_conn *c);

/* The request completed: the connection waits for the next head. */
void hc_request_done(hc_table *t, hc_conn *c);

/*
 * Keeps the socket of c open after MHD closes its descriptor, reading and
 * dropping what the client still sends (up to HC_LINGER_MAX_BYTES, until
 * it closes or pauses for a second, at most the body timeout or 10 s), so
 * that the kernel does not answer the unread bytes
 * with a reset that would destroy the response already sent. Call it after
 * the response was written, before MHD closes the connection.
 */
void hc_linger(hc_conn *c);

/*
 * Reserves n body bytes from the budget. A body over HC_SMALL_BODY may use
 * only seven eighths of it, so that small requests are still served while
 * large bodies hold the rest. false when it would not fit.
 */
#define HC_SMALL_BODY ((size_t)64 << 10)
bool hc_budget_take(hc_table *t, size_t n, bool large) BR_MUST_USE;

/* Gives back n reserved bytes. */
void hc_budget_give(hc_table *t, size_t n);

#endif
