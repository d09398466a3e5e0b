/*
 * console.h - the operator console under /console (docs/console.md):
 * server-rendered pages over every organization's jobs, dead letters and
 * webhook deliveries, and the actions an operator takes on them.
 *
 * console.c serves the requests: whether the console is on
 * (BULKREG_CONSOLE), the operator token (Authorization: Bearer, or the
 * cookie the login form sets), CSRF on every POST, the actions, and the
 * audit line each action writes. console_pages.c renders the pages.
 *
 * Stateless; thread-safe (a request is handled on one pool thread).
 */
#ifndef BULKREG_API_CONSOLE_H
#define BULKREG_API_CONSOLE_H

#include <stdbool.h>

#include "app.h"
#include "console_html.h"

/* The CSRF token: hex of HMAC-SHA256(operator token, a fixed label). */
#define CONSOLE_CSRF_LEN 64

/* A console request of an authenticated operator. */
struct console_req {
	struct api_req *r; /* r->db is borrowed for the request */
	char operator[64]; /* the operator token's name */
	char prefix[16];   /* its first 12 characters, in the log */
	char csrf[CONSOLE_CSRF_LEN + 1];
};

/*
 * Serves r when its path is /console or below it and the console is on;
 * returns false otherwise (the caller answers 404). Borrows and returns a
 * database connection of its own.
 */
bool console_handle(struct api_req *r);

/* Pages (console_pages.c). Each sets the response: the page, or 404/503. */
void console_overview(struct console_req *c);
void console_overview_json(struct console_req *c);
void console_jobs(struct console_req *c);
void console_job(struct console_req *c);
void console_dead(struct console_req *c);
void console_webhooks(struct console_req *c);

/* Runs stmt on the request's connection; on failure answers the 503 page and returns NULL. */
PGresult *console_query(struct console_req *c, const db_stmt *stmt, const char *const *params);

/* A page that says why: 404 for an unknown id, 503 when the database failed, and so on. */
void console_message(struct console_req *c, unsigned status, const char *title, const char *text);

#endif
