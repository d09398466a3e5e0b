/*
 * workshops.c - a workshop booking API's guest registration over bulkreg
 * (docs/compat/workshops.md): POST /api/v1/workshops/:workshop_id/registrations
 * registers one guest in the session workshop_id. A translation layer and
 * nothing more: the guest becomes a person (external_id = guest_id,
 * track_id, center_id), registered by register_one()
 * (sql/functions/lifecycle.sql), the statement of the native
 * POST /v1/sessions/:id/people, so every rule (window, duplicates, tracks,
 * capacity, waiting list, approval, a registration anew) is the native
 * one; its outcome is mapped back to that API's answer and error codes.
 *
 * Also the dialect of the paths under /api/v1/workshops/ (dialect.h):
 * every failure the router or the shared helpers answer through ja_fail()
 * (401, 404, 405, 415, 429, 503, malformed JSON, Idempotency-Key) comes in
 * that API's shape, {"code": N, "message": "..."}.
 *
 * Stateless; thread-safe.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workshops.h"

#include "jsonapi.h"
#include "log.h"
#include "validate.h"

/* The workshop API's own error codes. */
#define WS_WORKSHOP_INVALID  1001 /* 404: no such session (of this organization) */
#define WS_MISSING_PARAMETER 1004 /* 400: guest_id or track_id missing */
#define WS_NOT_OPEN          1009 /* 422: outside the registration window */
#define WS_ALREADY_ENROLLED  1010 /* 409: a duplicate */
#define WS_CAPACITY_EXCEEDED 1011 /* 422: no seat and no waiting list */
#define WS_TRACK_INVALID     502  /* 422: the session has no such track */
/* A failure that API has no code for carries WS_OWN_BASE + its HTTP status. */
#define WS_OWN_BASE 9000

/* The native attributes' limit (validate.h): external_id and center_id. */
#define WS_STRING_MAX VAL_NAME_MAX

/*
 * register_one() with override_duplicates and auto_approve false, as a
 * client of that API cannot ask for either; only the person's id and
 * status are read back.
 */
static const db_stmt stmt_register = {
    "workshop_register",
    "SELECT r.outcome, r.error_code, r.person->>'id',"
    "       r.person->'attributes'->>'registration_status'"
    " FROM register_one($2, $1, $3::jsonb, false, false, $4::boolean, $5) r",
    5};

/*
 * Makes r's response status with {"code": code, "message": message}. A
 * message jansson refuses (not UTF-8) is replaced by a fixed one; out of
 * memory leaves the status with an empty body.
 */
static void ws_reply(struct api_req *r, unsigned status, int code, const char *message)
{
	struct http_resp *resp = r->resp;
	json_t *doc = json_pack("{s:i,s:s}", "code", code, "message", message ? message : "");
	if (!doc)
		doc = json_pack("{s:i,s:s}", "code", code, "message", "The request failed.");
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	resp->status = status;
	resp->content_type = "application/json";
	sb_reset(&resp->body);
	if (!text || sb_appends(&resp->body, text) != BR_OK)
		LOG_ERROR("workshop error body lost (code %d)", code);
	free(text);
}

/*
 * The dialect's failure: a path whose workshop is no session's UUID (the
 * route does not match) or any other not_found is the workshop API's
 * 1001; everything else keeps its status and bulkreg's detail, with the
 * code WS_OWN_BASE + status.
 */
static void workshop_fail(struct api_req *r, unsigned status, const char *code, const char *detail)
{
	if (strcmp(code, "not_found") == 0)
		ws_reply(r, 404, WS_WORKSHOP_INVALID, "Workshop is invalid");
	else
		ws_reply(r, status, WS_OWN_BASE + (int)status, detail);
}

const struct api_dialect compat_workshop_dialect = {"/api/v1/workshops/", workshop_fail};

/* The guest as the native registration takes it. */
struct ws_guest {
	json_t *person; /* external_id, track_id and center_id; owned */
	bool waitlist;
};

/* A string the native attribute takes: at most WS_STRING_MAX characters, no NUL. */
static bool string_ok(const json_t *v)
{
	return json_is_string(v) &&
	       val_utf8_len(json_string_value(v), json_string_length(v)) <= WS_STRING_MAX &&
	       !memchr(json_string_value(v), '\0', json_string_length(v));
}

static bool absent(const json_t *v)
{
	return !v || json_is_null(v);
}

/* Why the body's parameters are of the wrong type, or NULL when they are fine. */
static const char *wrong_type(const json_t *guest, const json_t *track, const json_t *center,
                              const json_t *waitlist)
{
	if (!string_ok(guest))
		return "guest_id must be a string of at most 255 characters.";
	if (!json_is_integer(track) || json_integer_value(track) < 0 ||
	    json_integer_value(track) > INT32_MAX)
		return "track_id must be a whole number (a track's id).";
	if (!absent(center) && !string_ok(center))
		return "center_id must be a string of at most 255 characters.";
	if (!absent(waitlist) && !json_is_boolean(waitlist))
		return "waitlist must be true or false.";
	return NULL;
}

/*
 * Reads the body into g. guest_id and track_id are required (absent, null
 * or an empty guest_id: 400 1004 naming them); center_id and waitlist
 * (default false) are optional; other members are ignored. A wrong type is
 * 422 9422. Returns false after answering; g->person is the caller's to
 * release either way.
 */
static bool read_guest(struct api_req *r, const json_t *body, struct ws_guest *g)
{
	const json_t *guest = json_object_get(body, "guest_id");
	const json_t *track = json_object_get(body, "track_id");
	const json_t *center = json_object_get(body, "center_id");
	const json_t *waitlist = json_object_get(body, "waitlist");
	bool no_guest = absent(guest) || (json_is_string(guest) && json_string_length(guest) == 0);
	bool no_track = absent(track);
	if (no_guest || no_track) {
		char message[96];
		snprintf(message, sizeof(message), "Missing required parameter: %s",
		         no_guest && no_track ? "track_id, guest_id"
		                              : (no_track ? "track_id" : "guest_id"));
		ws_reply(r, 400, WS_MISSING_PARAMETER, message);
		return false;
	}
	const char *why = wrong_type(guest, track, center, waitlist);
	if (why) {
		ws_reply(r, 422, WS_OWN_BASE + 422, why);
		return false;
	}
	g->waitlist = json_is_true(waitlist);
	g->person = json_pack("{s:O,s:O}", "external_id", guest, "track_id", track);
	if (g->person && !absent(center) &&
	    json_object_set(g->person, "center_id", (json_t *)center) != 0) {
		json_decref(g->person);
		g->person = NULL;
	}
	if (!g->person) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return false;
	}
	/* The native checks, for what the checks above may have missed. */
	struct ja_errors e;
	ja_errors_init(&e);
	bool valid = val_person(g->person, VAL_PERSON_NEW, "", &e);
	ja_errors_free(&e);
	if (!valid)
		ws_reply(r, 422, WS_OWN_BASE + 422, "A parameter has an invalid value.");
	return valid;
}

/* 201 {"registrations": {"id", "status"}}: the person's id and registration_status. */
static void registered(struct api_req *r, const char *id, const char *status)
{
	json_t *doc = json_pack("{s:{s:s,s:s}}", "registrations", "id", id, "status", status);
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	json_decref(doc);
	struct http_resp *resp = r->resp;
	sb_reset(&resp->body);
	if (!text || sb_appends(&resp->body, text) != BR_OK) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
	} else {
		resp->status = 201;
		resp->content_type = "application/json";
	}
	free(text);
}

/* A registration register_one() refused, as the workshop API's error. */
static void refused(struct api_req *r, const char *code, bool waitlist)
{
	static const struct {
		const char *native;
		unsigned status;
		int code;
		const char *message;
	} map[] = {
	    {"session_not_found", 404, WS_WORKSHOP_INVALID, "Workshop is invalid"},
	    {"unknown_track", 422, WS_TRACK_INVALID,
	     "The track passed is not associated with the passed workshop"},
	    {"already_registered", 409, WS_ALREADY_ENROLLED,
	     "Guest is already enrolled to the workshop or is on the waiting list"},
	    {"registration_closed", 422, WS_NOT_OPEN,
	     "Workshop is not open for registrations, cannot register to class"},
	    {"session_full", 422, WS_CAPACITY_EXCEEDED,
	     "Workshop capacity exceeded, cannot register to Workshop"},
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(code, map[i].native) != 0)
			continue;
		const char *message = map[i].message;
		if (map[i].code == WS_NOT_OPEN && waitlist)
			message =
			    "Workshop is not open for registrations, cannot add guest to waitlist";
		ws_reply(r, map[i].status, map[i].code, message);
		return;
	}
	LOG_ERROR("workshop registration: unexpected outcome %s", code);
	ja_fail(r, 500, "internal_error", "Internal error",
	        "The request failed unexpectedly; nothing was written.");
}

void compat_workshop_register(struct api_req *r)
{
	struct ws_guest g = {NULL, false};
	char *person = NULL;
	PGresult *res = NULL;
	json_t *body = ja_parse_body(r);
	if (!body || !read_guest(r, body, &g))
		goto out;
	person = json_dumps(g.person, JSON_COMPACT);
	if (!person) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	const char *params[] = {r->id, r->org_id, person, g.waitlist ? "true" : "false",
	                        r->app->cfg->join_url_base};
	res = ja_query(r, &stmt_register, params);
	if (!res)
		goto out;
	if (strcmp(PQgetvalue(res, 0, 0), "succeeded") == 0)
		registered(r, PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 3));
	else
		refused(r, PQgetvalue(res, 0, 1), g.waitlist);
out:
	PQclear(res);
	free(person);
	json_decref(g.person);
	json_decref(body);
}
