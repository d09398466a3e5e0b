/*
 * http_form.h - the fields of a form body (multipart/form-data or
 * application/x-www-form-urlencoded), read by libmicrohttpd's post
 * processor: bulkreg parses no form syntax of its own.
 *
 * The post processor needs the request's connection (it reads the
 * Content-Type and its boundary from it), so a form is parsed where a
 * connection is at hand: by the HTTP server once a body is complete
 * (common/http.c, http_req_form), or by the fuzz harness on a connection
 * of its own (tests/fuzz/fuzz_form.c).
 *
 * Bounded: at most HTTP_FORM_MAX_FIELDS fields, names of at most
 * HTTP_FORM_NAME_MAX bytes, and max_bytes of names and values together.
 * A form is written by one thread, then only read; reading is thread-safe.
 */
#ifndef BULKREG_HTTP_FORM_H
#define BULKREG_HTTP_FORM_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define HTTP_FORM_MAX_FIELDS 32
#define HTTP_FORM_NAME_MAX   256

struct MHD_Connection;
typedef struct http_form http_form;

/* True when the Content-Type value ct names a form media type. */
bool http_form_type(const char *ct);

/*
 * Parses body (len bytes) as the form the connection's Content-Type
 * announces. Returns BR_OK with *out (the caller frees it with
 * http_form_free); BR_INVAL when the body is not a well-formed form of
 * that type (or the Content-Type is no form, or has no usable boundary);
 * BR_TOOBIG past a bound; BR_NOMEM. *out is written only on success.
 */
br_status http_form_parse(struct MHD_Connection *conn, const char *body, size_t len,
                          size_t max_bytes, http_form **out) BR_MUST_USE;

/*
 * The value of the first field named name, or NULL; its length in *len
 * (may be NULL). The value is NUL-terminated but may hold NUL bytes: use
 * *len. Borrowed from f.
 */
const char *http_form_get(const http_form *f, const char *name, size_t *len);

/* Number of fields, and the name and value (length in *len) of field i (borrowed). */
int http_form_count(const http_form *f);
const char *http_form_name(const http_form *f, int i);
const char *http_form_value(const http_form *f, int i, size_t *len);

/* Bytes of names and values held, what the server counts against its body budget. */
size_t http_form_bytes(const http_form *f);

/* Accepts NULL. */
void http_form_free(http_form *f);

#endif
