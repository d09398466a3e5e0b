/*
 * routes_people.c - a session's people (docs/openapi.yaml People): the list
 * with its filters, one person, the synchronous registration, PATCH (the
 * attributes and the registration_status transitions) and DELETE (a
 * cancellation, by id or, as Livestorm unregisters, by email or
 * external_id). Each change is one SQL function in one statement
 * (sql/functions/lifecycle.sql) over the rules of
 * sql/functions/registration.sql, the same a bulk task runs.
 * Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jsonapi.h"
#include "log.h"
#include "validate.h"

static const db_stmt stmt_people_count = {
    "people_count", "SELECT people_count FROM sessions WHERE id = $1 AND organization_id = $2", 2};
/* Unfiltered, people_count numbers every person: a page is a range of positions. */
static const db_stmt stmt_people_page = {
    "people_page",
    "SELECT COALESCE(json_agg(person_resource(p, $4) ORDER BY p.position), '[]'::json)"
    " FROM people p WHERE p.session_id = $1"
    "  AND p.position >= $2::int AND p.position < $2::int + $3::int",
    4};
/* Filtered: no row when the session is not the organization's. */
static const db_stmt stmt_people_filtered = {
    "people_filtered",
    "WITH f AS (SELECT p.* FROM sessions s JOIN people p ON p.session_id = s.id"
    "           WHERE s.id = $1 AND s.organization_id = $2"
    "             AND ($3::text IS NULL OR (email_key(p.email) = email_key($3::text)"
    "                                       AND p.email_conflict_of IS NULL))"
    "             AND ($4::text IS NULL OR p.external_id = $4::text)"
    "             AND ($5::text IS NULL OR p.registration_status = $5::text)"
    "             AND ($6::int IS NULL OR p.track_id = $6::int))"
    " SELECT (SELECT count(*) FROM f),"
    "  (SELECT COALESCE(json_agg(person_resource(x, $7) ORDER BY x.position), '[]'::json)"
    "   FROM (SELECT * FROM f ORDER BY f.position OFFSET $8::bigint LIMIT $9::int) x)"
    " FROM sessions s WHERE s.id = $1 AND s.organization_id = $2",
    9};
static const db_stmt stmt_person_read = {
    "people_read",
    "SELECT person_resource(p, $4) FROM people p JOIN sessions s ON s.id = p.session_id"
    " WHERE p.id = $2 AND p.session_id = $1 AND s.organization_id = $3",
    4};
static const db_stmt stmt_register = {
    "people_register",
    "SELECT outcome, error_code, person"
    " FROM register_one($2, $1, $3::jsonb, $4::boolean, $5::boolean, $6::boolean, $7)",
    7};
static const db_stmt stmt_patch = {
    "people_patch", "SELECT outcome, person FROM person_patch($1, $2, $3, $4::jsonb, $5)", 5};
static const db_stmt stmt_cancel = {
    "people_cancel", "SELECT outcome, person FROM person_cancel($1, $2, $3::uuid, $4, $5, $6)", 6};

static const char *const statuses[] = {"registered", "waitlisted", "pending_approval",
                                       "denied",     "cancelled",  NULL};

/* The filters of the list, checked: false after answering 400. */
static bool filters_ok(struct api_req *r, const char **f)
{
	static const char *const names[] = {"filter[email]", "filter[external_id]",
	                                    "filter[registration_status]", "filter[track_id]"};
	for (int i = 0; i < 4; i++)
		f[i] = http_req_query(r->http, names[i]);
	bool ok = !f[2];
	for (const char *const *s = statuses; f[2] && *s; s++)
		ok = ok || strcmp(*s, f[2]) == 0;
	if (f[3]) {
		char *end;
		long v = strtol(f[3], &end, 10);
		ok = ok && end != f[3] && *end == '\0' && v >= 0 && v <= INT32_MAX;
	}
	if (!ok)
		ja_fail(r, 400, "invalid_parameter", "Invalid parameter",
		        "filter[registration_status] is a registration status; filter[track_id] is "
		        "a track's id.");
	return ok;
}

/* A filtered page: one statement counts and reads. */
static void list_filtered(struct api_req *r, const char **f, const struct ja_page *page)
{
	char from[24], size[24];
	snprintf(from, sizeof(from), "%ld", page->number * page->size);
	snprintf(size, sizeof(size), "%ld", page->size);
	const char *params[] = {
	    r->id, r->org_id, f[0], f[1], f[2], f[3], r->app->cfg->join_url_base, from, size};
	PGresult *res = ja_query(r, &stmt_people_filtered, params);
	if (!res)
		return;
	if (PQntuples(res) == 0) {
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
	} else {
		long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
		if (ja_page_check(r, page, count))
			ja_send_page(r, 200, PQgetvalue(res, 0, 1), page, count);
	}
	PQclear(res);
}

void route_people_list(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]",
	                                      "page[size]",
	                                      "filter[email]",
	                                      "filter[external_id]",
	                                      "filter[registration_status]",
	                                      "filter[track_id]",
	                                      NULL};
	struct ja_page page;
	const char *f[4];
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page) || !filters_ok(r, f))
		return;
	if (f[0] || f[1] || f[2] || f[3]) {
		list_filtered(r, f, &page);
		return;
	}
	const char *params[] = {r->id, r->org_id};
	PGresult *res = ja_query(r, &stmt_people_count, params);
	if (!res)
		return;
	if (PQntuples(res) == 0) {
		PQclear(res);
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
		return;
	}
	long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
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

void route_people_read(struct api_req *r)
{
	static const char *const none[] = {NULL};
	if (!ja_check_params(r, none))
		return;
	const char *params[] = {r->id, r->sub, r->org_id, r->app->cfg->join_url_base};
	PGresult *res = ja_query(r, &stmt_person_read, params);
	if (!res)
		return;
	if (PQntuples(res) == 0)
		ja_fail(r, 404, "not_found", "Not found", "No such person in this session.");
	else
		ja_send_data(r, 200, PQgetvalue(res, 0, 0));
	PQclear(res);
}

/* Answers a failed registration or change with its code's status. */
static void person_refused(struct api_req *r, const char *code)
{
	if (strcmp(code, "already_registered") == 0)
		ja_fail(r, 409, code, "Already registered",
		        "User already registered for this session.");
	else if (strcmp(code, "invalid_transition") == 0)
		ja_fail(r, 409, code, "Invalid transition",
		        "The person's registration status does not allow this change.");
	else if (strcmp(code, "session_full") == 0)
		ja_fail(r, 422, code, "Session full", "The session has no seat left.");
	else if (strcmp(code, "registration_closed") == 0)
		ja_fail(r, 422, code, "Registration closed",
		        "Registration for this session is not open.");
	else if (strcmp(code, "unknown_track") == 0)
		ja_fail(r, 422, code, "Unknown track", "The session has no such track.");
	else if (strcmp(code, "unidentified") == 0)
		ja_fail(r, 422, "validation_failed", "Validation failed",
		        "A person keeps an email or an external_id.");
	else if (strcmp(code, "not_found") == 0)
		ja_fail(r, 404, "not_found", "Not found", "No such person in this session.");
	else
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
}

/* The single registration's meta: override_duplicates, auto_approve, waitlist. */
static void read_meta(const json_t *doc, bool flags[3], struct ja_errors *e)
{
	static const char *const keys[] = {"override_duplicates", "auto_approve", "waitlist"};
	const json_t *meta = json_object_get(doc, "meta");
	if (!meta)
		return;
	if (!json_is_object(meta)) {
		ja_error_add(e, 422, "validation_failed", "Validation failed",
		             "meta must be an object.", "/meta");
		return;
	}
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)meta, key, v)
	{
		if (strcmp(key, keys[0]) != 0 && strcmp(key, keys[1]) != 0 &&
		    strcmp(key, keys[2]) != 0)
			val_unknown(e, "/meta", key, "member");
	}
	for (int i = 0; i < 3; i++)
		val_optional_bool(meta, keys[i], "/meta", e, &flags[i]);
}

void route_people_create(struct api_req *r)
{
	PGresult *res = NULL;
	char *person = NULL;
	struct ja_errors e;
	ja_errors_init(&e);
	bool flags[3] = {false, false, false};
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	const json_t *attrs = val_data_attributes(doc, "people", &e);
	if (attrs)
		val_person(attrs, VAL_PERSON_NEW, "/data/attributes", &e);
	read_meta(doc, flags, &e);
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
	                        flags[0] ? "true" : "false",
	                        flags[1] ? "true" : "false",
	                        flags[2] ? "true" : "false",
	                        r->app->cfg->join_url_base};
	res = ja_query(r, &stmt_register, params);
	if (!res)
		goto out;
	if (strcmp(PQgetvalue(res, 0, 0), "succeeded") != 0)
		person_refused(r, PQgetvalue(res, 0, 1));
	else
		ja_send_data(r, 201, PQgetvalue(res, 0, 2));
out:
	ja_errors_free(&e);
	free(person);
	PQclear(res);
	json_decref(doc);
}

static bool check_patch(const json_t *attrs, struct ja_errors *e)
{
	return val_person(attrs, VAL_PERSON_PATCH, "/data/attributes", e);
}

void route_people_patch(struct api_req *r)
{
	char *attrs = ja_patch_attributes(r, "people", check_patch);
	if (!attrs)
		return;
	const char *params[] = {r->org_id, r->id, r->sub, attrs, r->app->cfg->join_url_base};
	PGresult *res = ja_query(r, &stmt_patch, params);
	free(attrs);
	if (!res)
		return;
	if (strcmp(PQgetvalue(res, 0, 0), "updated") == 0)
		ja_send_data(r, 200, PQgetvalue(res, 0, 1));
	else
		person_refused(r, PQgetvalue(res, 0, 0));
	PQclear(res);
}

/*
 * DELETE /v1/sessions/:id/people/:person_id, or of the collection with
 * ?email= or ?external_id=: the registration is cancelled (a person already
 * cancelled is answered as is, so a retried DELETE is harmless).
 */
void route_people_delete(struct api_req *r)
{
	/* The router refused other query parameters (routes.c). */
	bool one = r->sub[0] != '\0';
	const char *email = one ? NULL : http_req_query(r->http, "email");
	const char *ext = one ? NULL : http_req_query(r->http, "external_id");
	if (!one && !email && !ext) {
		ja_fail(r, 400, "invalid_parameter", "Invalid parameter",
		        "Name the person to unregister with email or external_id.");
		return;
	}
	const char *params[] = {r->org_id, r->id, one ? r->sub : NULL,
	                        email,     ext,   r->app->cfg->join_url_base};
	PGresult *res = ja_query(r, &stmt_cancel, params);
	if (!res)
		return;
	if (strcmp(PQgetvalue(res, 0, 0), "cancelled") == 0)
		ja_send_data(r, 200, PQgetvalue(res, 0, 1));
	else
		ja_fail(r, 404, "not_found", "Not found", "No such person in this session.");
	PQclear(res);
}
