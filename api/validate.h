/*
 * validate.h - validation of request bodies before anything is written:
 * people (single and bulk tasks) and sessions (validate.c), and the text
 * formats they carry (validate_text.c). Every problem is reported
 * with its JSON pointer into the request; a caller answers 422 when any was
 * found. Pure functions over jansson values; thread-safe.
 */
#ifndef BULKREG_API_VALIDATE_H
#define BULKREG_API_VALIDATE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "jsonapi.h"

#define VAL_EMAIL_MAX     254
#define VAL_EMAIL_LOCAL   64
#define VAL_NAME_MAX      255
#define VAL_REFERRER_MAX  2048
#define VAL_FIELDS_MAX    50
#define VAL_FIELD_VAL_MAX 4096

/*
 * True when s (len bytes) is an acceptable e-mail address: well-formed
 * UTF-8 of at most 254 bytes without controls, spaces or invisible
 * characters; exactly one @; a dot-atom local part of at most 64 bytes; a
 * domain of at least two valid labels whose last is not all digits.
 */
bool val_email(const char *s, size_t len);

/*
 * True when s is an RFC 3339 date-time with a time zone (Z or +-hh:mm) that
 * PostgreSQL stores as given: offset at most 15:59, the instant within years
 * 1 to 9999 in UTC.
 */
bool val_rfc3339(const char *s);

/* val_rfc3339, writing the instant in microseconds since the Unix epoch to *us. */
bool val_rfc3339_us(const char *s, long long *us);

/* Number of UTF-8 code points in s. */
size_t val_utf8_len(const char *s, size_t len);

#define VAL_TRACKS_MAX 100

/* What a person's attributes are for. */
enum val_person_mode {
	VAL_PERSON_NEW,   /* a registration: email or external_id required */
	VAL_PERSON_PATCH, /* a PATCH: nothing required, registration_status allowed */
	VAL_PERSON_NAMED  /* a bulk action's task: email and/or external_id, reference */
};

/*
 * Checks a person's attributes object (docs/openapi.yaml "A person") for
 * mode; pointer is the JSON pointer of the object itself. Returns true
 * when valid.
 */
bool val_person(const json_t *attrs, enum val_person_mode mode, const char *pointer,
                struct ja_errors *e);

/*
 * Checks a session's attributes for POST /v1/sessions, or with patch for
 * PATCH /v1/sessions/:id (nothing required; null approval or waitlist
 * refused). Returns true when valid.
 */
bool val_session(const json_t *attrs, bool patch, const char *pointer, struct ja_errors *e);

/*
 * Adds a 422 validation_failed problem for an unknown member key of the
 * object at pointer: "Unknown <what> <key>." with the exact pointer of the
 * member. what is a short noun ("attribute", "member").
 */
void val_unknown(struct ja_errors *e, const char *pointer, const char *key, const char *what);

/* An optional boolean member; false (and a problem) when present and not boolean. */
bool val_optional_bool(const json_t *obj, const char *key, const char *pointer, struct ja_errors *e,
                       bool *out);

/*
 * Finds the attributes object of a JSON:API document: data.attributes.
 * When type is non-NULL and data.type or the top-level type is present,
 * it must equal type. Adds a problem and returns NULL when absent.
 */
const json_t *val_data_attributes(const json_t *doc, const char *type, struct ja_errors *e);

/* The validated pieces of a bulk request (docs/openapi.yaml Bulk registration). */
struct val_bulk {
	json_t *people;     /* array of the tasks' person attribute objects; the caller
	                       creates it (json_array()) and owns it */
	const char *action; /* register, approve, deny or cancel (static) */
	bool override;
	bool auto_approve;
	bool waitlist;
};

/*
 * Checks a whole bulk request body in either accepted form, collecting
 * every problem; on success every task's attributes were appended to
 * b->people. On an allocation failure b->people is released and set NULL.
 */
void val_bulk(const json_t *doc, int max_tasks, struct val_bulk *b, struct ja_errors *e);

#endif
