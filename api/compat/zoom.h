/*
 * zoom.h - Zoom's batch registration, a compatible API (docs/compat/zoom.md):
 * POST /v2/webinars/:webinarId/batch_registrants, where webinarId is a
 * session's id. A translation layer only: the request becomes one call of
 * zoom_batch_register() (sql/functions/compat_zoom.sql) over the rules of
 * sql/functions/registration.sql, and every failure, the router's included,
 * is answered in Zoom's shape {"code": N, "message": "..."} (the dialect).
 *
 * The reading of a request (zoom_batch_json, zoom_batch_form) is pure, for
 * the route and the fuzz harness. Stateless; thread-safe.
 */
#ifndef BULKREG_API_COMPAT_ZOOM_H
#define BULKREG_API_COMPAT_ZOOM_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "app.h"
#include "dialect.h"

/* Zoom's bound on one batch. */
#define ZOOM_MAX_REGISTRANTS 30

/* The dialect of every path under /v2/ (api/routes.c). */
extern const struct api_dialect compat_zoom_dialect;

/* A batch read from a request. */
struct zoom_batch {
	json_t *people; /* the registrants as native person objects, in order; owned */
	bool auto_approve;
};

/* Why a request was refused (code 300): the field and its problem. */
struct zoom_problem {
	char field[48];    /* e.g. "registrants[2].email", or empty */
	char message[240]; /* what is wrong with it */
};

/*
 * Reads a JSON body {"auto_approve": bool, "registrants": [{"email",
 * "first_name", "last_name"}, ...]}. Returns true with b->people set (the
 * caller frees it with zoom_batch_free); false with p filled and b
 * untouched. Other members are ignored, as Zoom ignores what it does not
 * know.
 */
bool zoom_batch_json(const json_t *doc, struct zoom_batch *b, struct zoom_problem *p);

/*
 * Reads the fields of a multipart/form-data body: auto_approve ("true" or
 * "false", may be NULL) and registrants (len bytes of a JSON array, may be
 * NULL). As zoom_batch_json otherwise.
 */
bool zoom_batch_form(const char *auto_approve, const char *registrants, size_t len,
                     struct zoom_batch *b, struct zoom_problem *p);

/* Frees what a successful read holds; accepts a zeroed batch. */
void zoom_batch_free(struct zoom_batch *b);

/*
 * Writes Zoom's error document {"code","message"} with, when p names a
 * field, "errors": [{"field","message"}]. Bytes of message that are not
 * UTF-8 become U+FFFD. BR_NOMEM / BR_TOOBIG from the buffer.
 */
br_status zoom_error_doc(strbuf *sb, int code, const char *message,
                         const struct zoom_problem *p) BR_MUST_USE;

/* The route: POST /v2/webinars/:id/batch_registrants. */
void zoom_route_batch_registrants(struct api_req *r);

#endif
