/*
 * routes_sessions.c - sessions (docs/openapi.yaml Sessions): POST, GET (one
 * and the list), PATCH and DELETE. A change that concerns the session's
 * people (a capacity raise promotes waitlisted people; a capacity under the
 * seats taken or a held track is refused) is one SQL function in one
 * statement (sql/functions/lifecycle.sql). Their people are in
 * routes_people.c. Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jsonapi.h"
#include "log.h"
#include "uuid.h"
#include "validate.h"

static const db_stmt stmt_session_insert = {
    "sessions_insert",
    "INSERT INTO sessions (organization_id, title, starts_at, capacity,"
    " registration_opens_at, registration_closes_at, approval, waitlist, tracks)"
    " VALUES ($1, $2, $3::timestamptz, $4::int, $5::timestamptz, $6::timestamptz,"
    "         COALESCE($7, 'automatic'), COALESCE($8::boolean, false),"
    "         COALESCE($9::jsonb, '[]'))"
    " RETURNING id, session_resource(sessions)",
    9};
const struct api_read route_sessions_read = {
    {"sessions_read",
     "SELECT r.n, t.organization_id, t.id,"
     " CASE WHEN s.id IS NOT NULL THEN session_resource(s) END"
     " FROM unnest((SELECT $1::text[]), (SELECT $2::uuid[])) WITH ORDINALITY AS r(hash, id, n)"
     " JOIN api_tokens t ON t.token_hash = decode(r.hash, 'hex') AND t.revoked_at IS NULL"
     " LEFT JOIN sessions s ON s.id = r.id AND s.organization_id = t.organization_id",
     2},
    "No such session."};
/* A JSON member as a text parameter: NULL for absent/null, strings unquoted. */
static char *param_of(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v))
		return NULL;
	if (json_is_string(v))
		return strdup(json_string_value(v));
	return json_dumps(v, JSON_ENCODE_ANY);
}

void route_sessions_create(struct api_req *r)
{
	static const char *const keys[] = {
	    "title",    "starts_at", "capacity", "registration_opens_at", "registration_closes_at",
	    "approval", "waitlist",  "tracks"};
	char *vals[8] = {0};
	PGresult *res = NULL;
	struct ja_errors e;
	ja_errors_init(&e);
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	const json_t *attrs = val_data_attributes(doc, "sessions", &e);
	if (attrs)
		val_session(attrs, false, "/data/attributes", &e);
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	const char *params[9] = {r->org_id};
	for (int i = 0; i < 8; i++) {
		vals[i] = param_of(attrs, keys[i]);
		params[i + 1] = vals[i];
	}
	br_status st = db_run(r->db, &stmt_session_insert, params, &res);
	if (st == BR_DB && strcmp(db_sqlstate(r->db), "23514") == 0) {
		/* val_session checks the window; this is the database's word on it. */
		ja_error_add(&e, 422, "validation_failed", "Validation failed",
		             "registration_closes_at must not be before registration_opens_at.",
		             "/data/attributes/registration_closes_at");
		ja_errors_send(&e, r->resp);
		goto out;
	}
	if (st != BR_OK) {
		ja_db_fail(r, st);
		goto out;
	}
	ja_send_data(r, 201, PQgetvalue(res, 0, 1));
	if (http_resp_header(r->resp, "Location", "/v1/sessions/%s", PQgetvalue(res, 0, 0)) !=
	    BR_OK)
		LOG_WARN("Location header lost");
out:
	ja_errors_free(&e);
	for (int i = 0; i < 8; i++)
		free(vals[i]);
	PQclear(res);
	json_decref(doc);
}

/* Newest first; starts_at filters, each optional. */
static const db_stmt stmt_sessions_list = {
    "sessions_list",
    "WITH f AS (SELECT * FROM sessions s WHERE s.organization_id = $1"
    "           AND ($2::timestamptz IS NULL OR s.starts_at > $2::timestamptz)"
    "           AND ($3::timestamptz IS NULL OR s.starts_at < $3::timestamptz))"
    " SELECT (SELECT count(*) FROM f),"
    " (SELECT COALESCE(json_agg(session_resource(x) ORDER BY x.created_at DESC, x.id DESC),"
    "  '[]'::json) FROM (SELECT * FROM f ORDER BY f.created_at DESC, f.id DESC"
    "  OFFSET $4::bigint LIMIT $5::int) x)",
    5};
static const db_stmt stmt_session_patch = {
    "sessions_patch", "SELECT outcome, session FROM session_patch($1, $2, $3::jsonb)", 3};
static const db_stmt stmt_session_delete = {"sessions_delete",
                                            "SELECT outcome FROM session_delete($1, $2)", 2};

void route_sessions_list(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]", "page[size]", "filter[starts_after]",
	                                      "filter[starts_before]", NULL};
	struct ja_page page;
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page))
		return;
	const char *after = http_req_query(r->http, "filter[starts_after]");
	const char *before = http_req_query(r->http, "filter[starts_before]");
	if ((after && !val_rfc3339(after)) || (before && !val_rfc3339(before))) {
		ja_fail(r, 400, "invalid_parameter", "Invalid parameter",
		        "filter[starts_after] and filter[starts_before] are RFC 3339 date-times.");
		return;
	}
	char from[24], size[24];
	snprintf(from, sizeof(from), "%ld", page.number * page.size);
	snprintf(size, sizeof(size), "%ld", page.size);
	const char *params[] = {r->org_id, after, before, from, size};
	PGresult *res = ja_query(r, &stmt_sessions_list, params);
	if (!res)
		return;
	long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	if (ja_page_check(r, &page, count))
		ja_send_page(r, 200, PQgetvalue(res, 0, 1), &page, count);
	PQclear(res);
}

/* Answers a session_patch() outcome other than updated. */
static void patch_refused(struct api_req *r, const char *outcome)
{
	struct ja_errors e;
	ja_errors_init(&e);
	if (strcmp(outcome, "capacity_below_registrants") == 0)
		ja_error_add(
		    &e, 422, outcome, "Capacity below registrants",
		    "The session has more registered and pending people than this capacity.",
		    "/data/attributes/capacity");
	else if (strcmp(outcome, "track_held") == 0)
		ja_error_add(&e, 422, "validation_failed", "Validation failed",
		             "A track that people hold cannot be removed.",
		             "/data/attributes/tracks");
	else if (strcmp(outcome, "invalid_window") == 0)
		ja_error_add(&e, 422, "validation_failed", "Validation failed",
		             "registration_closes_at must not be before registration_opens_at.",
		             "/data/attributes/registration_closes_at");
	else
		ja_error_add(&e, 404, "not_found", "Not found", "No such session.", NULL);
	ja_errors_send(&e, r->resp);
}

static bool check_patch(const json_t *attrs, struct ja_errors *e)
{
	return val_session(attrs, true, "/data/attributes", e);
}

void route_sessions_patch(struct api_req *r)
{
	char *attrs = ja_patch_attributes(r, "sessions", check_patch);
	if (!attrs)
		return;
	const char *params[] = {r->org_id, r->id, attrs};
	PGresult *res = ja_query(r, &stmt_session_patch, params);
	free(attrs);
	if (!res)
		return;
	if (strcmp(PQgetvalue(res, 0, 0), "updated") == 0)
		ja_send_data(r, 200, PQgetvalue(res, 0, 1));
	else
		patch_refused(r, PQgetvalue(res, 0, 0));
	PQclear(res);
}

void route_sessions_delete(struct api_req *r)
{
	const char *params[] = {r->org_id, r->id};
	PGresult *res = ja_query(r, &stmt_session_delete, params);
	if (!res)
		return;
	const char *outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "deleted") == 0) {
		char body[128];
		snprintf(body, sizeof(body), "{\"meta\":{\"message\":\"Session %s deleted\"}}",
		         r->id);
		http_resp_json(r->resp, 200, body);
		r->resp->content_type = "application/vnd.api+json";
	} else if (strcmp(outcome, "job_in_progress") == 0) {
		ja_fail(r, 409, "job_in_progress", "Job in progress",
		        "A job of this session is still processing.");
	} else {
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
	}
	PQclear(res);
}
