/*
 * routes_sessions.c - sessions and their people (docs/openapi.yaml Sessions, A
 * person): POST /v1/sessions, GET /v1/sessions/:id, GET and POST
 * /v1/sessions/:id/people. The synchronous registration runs the same SQL
 * function as every bulk task, register_person(), so the rules have one
 * implementation. Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jsonapi.h"
#include "log.h"
#include "validate.h"

static const db_stmt stmt_session_insert = {
    "sessions_insert",
    "INSERT INTO sessions (organization_id, title, starts_at, capacity,"
    " registration_opens_at, registration_closes_at, approval, waitlist)"
    " VALUES ($1, $2, $3::timestamptz, $4::int, $5::timestamptz, $6::timestamptz,"
    "         COALESCE($7, 'automatic'), COALESCE($8::boolean, false))"
    " RETURNING id, session_resource(sessions)",
    8};
const struct api_read route_sessions_read = {
    {"sessions_read",
     "SELECT r.n, t.organization_id, t.id,"
     " CASE WHEN s.id IS NOT NULL THEN session_resource(s) END"
     " FROM unnest((SELECT $1::text[]), (SELECT $2::uuid[])) WITH ORDINALITY AS r(hash, id, n)"
     " JOIN api_tokens t ON t.token_hash = decode(r.hash, 'hex') AND t.revoked_at IS NULL"
     " LEFT JOIN sessions s ON s.id = r.id AND s.organization_id = t.organization_id",
     2},
    "No such session."};
static const db_stmt stmt_people_count = {
    "people_count", "SELECT people_count FROM sessions WHERE id = $1 AND organization_id = $2", 2};
/* people_count numbers every person: a page is a range of positions. */
static const db_stmt stmt_people_page = {
    "people_page",
    "SELECT COALESCE(json_agg(person_resource(p, $4) ORDER BY p.position), '[]'::json)"
    " FROM people p WHERE p.session_id = $1"
    "  AND p.position >= $2::int AND p.position < $2::int + $3::int",
    4};
static const db_stmt stmt_register = {
    "people_register",
    "SELECT outcome, error_code, person"
    " FROM register_one($2, $1, $3::jsonb, $4::boolean, $5::boolean, $6)",
    6};

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
	    "approval", "waitlist"};
	char *vals[7] = {0};
	PGresult *res = NULL;
	struct ja_errors e;
	ja_errors_init(&e);
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	const json_t *attrs = val_data_attributes(doc, "sessions", &e);
	if (attrs)
		val_session(attrs, "/data/attributes", &e);
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	const char *params[8] = {r->org_id};
	for (int i = 0; i < 7; i++) {
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
	for (int i = 0; i < 7; i++)
		free(vals[i]);
	PQclear(res);
	json_decref(doc);
}

void route_people_list(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]", "page[size]", NULL};
	struct ja_page page;
	PGresult *res = NULL;
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page))
		return;
	const char *params[] = {r->id, r->org_id};
	res = ja_query(r, &stmt_people_count, params);
	if (!res)
		return;
	if (PQntuples(res) == 0) {
		PQclear(res);
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
		return;
	}
	long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	res = NULL;
	if (!ja_page_check(r, &page, count))
		return;
	char from[24], size[24];
	snprintf(from, sizeof(from), "%ld", page.number * page.size);
	snprintf(size, sizeof(size), "%ld", page.size);
	const char *pparams[] = {r->id, from, size, r->app->cfg->join_url_base};
	res = ja_query(r, &stmt_people_page, pparams);
	if (!res)
		return;
	ja_send_page(r, 200, PQgetvalue(res, 0, 0), &page, count);
	PQclear(res);
}

static void registration_failed(struct api_req *r, const char *code)
{
	if (strcmp(code, "already_registered") == 0)
		ja_fail(r, 409, code, "Already registered",
		        "User already registered for this session.");
	else if (strcmp(code, "session_full") == 0)
		ja_fail(r, 422, code, "Session full", "The session has no seat left.");
	else if (strcmp(code, "registration_closed") == 0)
		ja_fail(r, 422, code, "Registration closed",
		        "Registration for this session is not open.");
	else
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
}

void route_people_create(struct api_req *r)
{
	PGresult *res = NULL;
	char *person = NULL;
	struct ja_errors e;
	ja_errors_init(&e);
	bool override = false, auto_approve = false;
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	const json_t *attrs = val_data_attributes(doc, "people", &e);
	if (attrs)
		val_person(attrs, "/data/attributes", &e);
	const json_t *meta = json_object_get(doc, "meta");
	if (meta && !json_is_object(meta))
		ja_error_add(&e, 422, "validation_failed", "Validation failed",
		             "meta must be an object.", "/meta");
	if (json_is_object(meta)) {
		const char *key;
		json_t *v;
		json_object_foreach((json_t *)meta, key, v)
		{
			if (strcmp(key, "override_duplicates") != 0 &&
			    strcmp(key, "auto_approve") != 0)
				val_unknown(&e, "/meta", key, "member");
		}
		val_optional_bool(meta, "override_duplicates", "/meta", &e, &override);
		val_optional_bool(meta, "auto_approve", "/meta", &e, &auto_approve);
	}
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	person = json_dumps(attrs, JSON_COMPACT);
	if (!person) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	const char *params[] = {r->id,
	                        r->org_id,
	                        person,
	                        override ? "true" : "false",
	                        auto_approve ? "true" : "false",
	                        r->app->cfg->join_url_base};
	res = ja_query(r, &stmt_register, params);
	if (!res)
		goto out;
	if (PQntuples(res) == 0)
		registration_failed(r, "session_not_found");
	else if (strcmp(PQgetvalue(res, 0, 0), "succeeded") != 0)
		registration_failed(r, PQgetvalue(res, 0, 1));
	else
		ja_send_data(r, 201, PQgetvalue(res, 0, 2));
out:
	ja_errors_free(&e);
	free(person);
	PQclear(res);
	json_decref(doc);
}
