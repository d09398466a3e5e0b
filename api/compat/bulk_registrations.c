/*
 * bulk_registrations.c - the Bulk Registration Service compatible API
 * (docs/compat/bulk-registrations.md): /api/v1/bulk-registrations for
 * clients written for a mentoring platform's service. A translation layer
 * with no registration rule of its own: it validates the foreign shape,
 * calls the SQL functions of sql/functions/compat_bulk_registrations.sql,
 * which map onto the activity's session, people (external_id = mentor id),
 * create_job(), retry_failed() and cancel_or_delete_job(), and answers in
 * the foreign shape. Authentication, rate limits, Idempotency-Key, 404 and
 * 405 are the router's (routes.c); their failures come here through the
 * dialect (brs_fail). Publishing after the commit is jobs.h's.
 *
 * Errors: {"error":{"code","message","details":[...]}} with the native
 * statuses; validation problems are all reported at once, one detail
 * {"field","message"} each. Stateless; thread-safe.
 */
#include "compat/bulk_registrations.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "jsonapi.h"
#include "log.h"

#define BRS_TEXT_MAX      255
#define BRS_NOTES_MAX     4096
#define BRS_DURATION_MAX  1440
#define BRS_LIMIT_DEFAULT 20
#define BRS_LIMIT_MAX     100
#define BRS_PAGE_MAX      100000000L
#define BRS_DETAILS_MAX   1000

static const db_stmt stmt_create = {
    "brs_create",
    "SELECT o_id, o_body, o_tasks FROM brs_create($1, $2,"
    " ARRAY(SELECT e FROM jsonb_array_elements_text($3::jsonb) WITH ORDINALITY AS a(e, n)"
    "       ORDER BY n),"
    " $4, $5::date, $6::int, $7, $8::boolean)",
    8};
static const db_stmt stmt_read = {"brs_read", "SELECT brs_read($1, $2)", 2};
static const db_stmt stmt_list = {
    "brs_list", "SELECT total, data FROM brs_list($1, $2, $3, $4, $5::bigint, $6::int)", 6};
static const db_stmt stmt_retry = {
    "brs_retry", "SELECT outcome, o_body, o_tasks FROM brs_retry($1, $2, $3::boolean)", 3};
static const db_stmt stmt_delete = {"brs_delete", "SELECT brs_cancel_or_delete($1, $2)", 2};

/* ---- answers ---- */

/* Answers status with body (a JSON text) as application/json. */
static void send_json(struct api_req *r, unsigned status, const char *body)
{
	http_resp_json(r->resp, status, body);
	r->resp->content_type = "application/json";
}

/* Answers status with {"error":{code, message, details}}; takes details (may be NULL). */
static void send_error(struct api_req *r, unsigned status, const char *code, const char *message,
                       json_t *details)
{
	json_t *doc = json_pack("{s:{s:s,s:s,s:o}}", "error", "code", code, "message", message,
	                        "details", details ? details : json_array());
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	if (text)
		send_json(r, status, text);
	else
		send_json(r, status,
		          "{\"error\":{\"code\":\"unavailable\",\"message\":\"Out of memory.\","
		          "\"details\":[]}}");
	free(text);
	json_decref(doc);
}

/*
 * The dialect: every failure the router or a shared helper answers with
 * ja_fail() on these paths. A native invalid_parameter (a bad
 * Idempotency-Key) is this API's validation_failed; every other code is
 * the native one (docs/compat/bulk-registrations.md, Errors).
 */
static void brs_fail(struct api_req *r, unsigned status, const char *code, const char *detail)
{
	json_t *details = json_array();
	if (strcmp(code, "invalid_parameter") == 0 || strcmp(code, "validation_failed") == 0) {
		code = "validation_failed";
		json_array_append_new(details, json_pack("{s:s}", "message", detail));
	}
	send_error(r, status, code, detail, details);
}

const struct api_dialect compat_brs_dialect = {"/api/v1/bulk-registrations", brs_fail};

/* Adds {"field", "message"} to details (bounded). */
static void problem(json_t *details, const char *field, const char *message)
{
	if (json_array_size(details) < BRS_DETAILS_MAX)
		json_array_append_new(details,
		                      json_pack("{s:s,s:s}", "field", field, "message", message));
}

/* Answers 422 (body) or 400 (query) validation_failed with details; takes details. */
static void send_invalid(struct api_req *r, unsigned status, json_t *details)
{
	send_error(r, status, "validation_failed",
	           status == 400 ? "The query parameters are invalid."
	                         : "The request body is invalid.",
	           details);
}

/* ---- values ---- */

/* True when s is well-formed UTF-8 of 1 to max code points. */
static bool text_ok(const char *s, size_t len, size_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < len; n++) {
		uint32_t cp;
		size_t k = ja_utf8_decode(s + i, len - i, &cp);
		if (!k || cp == 0)
			return false;
		i += k;
	}
	return n >= 1 && n <= max;
}

/*
 * A string member: absent (or null, when optional) leaves *out NULL;
 * otherwise it must be a string of 1 to max characters without NUL.
 */
static void member_text(const json_t *doc, const char *key, size_t max, bool required,
                        json_t *details, const char **out)
{
	const json_t *v = json_object_get(doc, key);
	char msg[128];
	*out = NULL;
	if (!v || (json_is_null(v) && !required)) {
		if (required)
			problem(details, key, "This field is required.");
		return;
	}
	if (!json_is_string(v) || !text_ok(json_string_value(v), json_string_length(v), max)) {
		snprintf(msg, sizeof(msg),
		         "Must be a non-empty string of at most %zu characters without NUL.", max);
		problem(details, key, msg);
		return;
	}
	*out = json_string_value(v);
}

/* True when s is a calendar date YYYY-MM-DD (years 0001 to 9999). */
static bool date_ok(const char *s)
{
	static const int days[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return false;
	for (int i = 0; i < 10; i++) {
		if (i != 4 && i != 7 && (s[i] < '0' || s[i] > '9'))
			return false;
	}
	int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
	int m = (s[5] - '0') * 10 + (s[6] - '0');
	int d = (s[8] - '0') * 10 + (s[9] - '0');
	if (y < 1 || m < 1 || m > 12 || d < 1 || d > days[m - 1])
		return false;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return !(m == 2 && d == 29 && !leap);
}

/* Refuses members of doc not in allowed (NULL-terminated). */
static void unknown_members(const json_t *doc, const char *const *allowed, json_t *details)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)doc, key, v)
	{
		bool known = false;
		for (const char *const *a = allowed; *a && !known; a++)
			known = strcmp(*a, key) == 0;
		if (!known)
			problem(details, key, "Unknown field.");
	}
}

/* ---- POST ---- */

/* The validated POST body; strings borrowed from the document. */
struct create_req {
	const char *coordinator, *type, *date, *notes;
	const json_t *mentors;
	char duration[16]; /* empty: not given */
	bool override;
};

static void check_mentors(const json_t *v, int max, json_t *details)
{
	char msg[96], field[48];
	if (!json_is_array(v) || json_array_size(v) < 1 || json_array_size(v) > (size_t)max) {
		snprintf(msg, sizeof(msg), "Must be an array of 1 to %d mentor ids.", max);
		problem(details, "mentor_ids", v ? msg : "This field is required.");
		return;
	}
	size_t i;
	const json_t *m;
	json_array_foreach(v, i, m)
	{
		if (!json_is_string(m) ||
		    !text_ok(json_string_value(m), json_string_length(m), BRS_TEXT_MAX)) {
			snprintf(field, sizeof(field), "mentor_ids[%zu]", i);
			problem(details, field,
			        "A mentor id is a non-empty string of at most 255 characters "
			        "without NUL.");
		}
	}
}

static void check_create(const json_t *doc, int max, struct create_req *q, json_t *details)
{
	static const char *const keys[] = {"coordinator_id",      "mentor_ids", "activity_type",
	                                   "activity_date",       "notes",      "duration_minutes",
	                                   "override_duplicates", NULL};
	member_text(doc, "coordinator_id", BRS_TEXT_MAX, true, details, &q->coordinator);
	q->mentors = json_object_get(doc, "mentor_ids");
	check_mentors(q->mentors, max, details);
	member_text(doc, "activity_type", BRS_TEXT_MAX, true, details, &q->type);
	const json_t *date = json_object_get(doc, "activity_date");
	q->date = json_is_string(date) && json_string_length(date) == 10 &&
	                  date_ok(json_string_value(date))
	              ? json_string_value(date)
	              : NULL;
	if (!q->date)
		problem(details, "activity_date",
		        date ? "Must be a date as YYYY-MM-DD." : "This field is required.");
	member_text(doc, "notes", BRS_NOTES_MAX, false, details, &q->notes);
	const json_t *d = json_object_get(doc, "duration_minutes");
	q->duration[0] = '\0';
	if (json_is_integer(d) && json_integer_value(d) >= 1 &&
	    json_integer_value(d) <= BRS_DURATION_MAX)
		snprintf(q->duration, sizeof(q->duration), "%lld",
		         (long long)json_integer_value(d));
	else if (d && !json_is_null(d))
		problem(details, "duration_minutes", "Must be a whole number from 1 to 1440.");
	const json_t *o = json_object_get(doc, "override_duplicates");
	if (o && !json_is_boolean(o))
		problem(details, "override_duplicates", "Must be true or false.");
	q->override = json_is_true(o);
	unknown_members(doc, keys, details);
}

void brs_create(struct api_req *r)
{
	PGresult *res = NULL;
	char *mentors = NULL;
	json_t *details = json_array();
	struct create_req q;
	json_t *doc = NULL;
	if (!details) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	doc = ja_parse_body(r);
	if (!doc)
		goto out;
	check_create(doc, r->app->cfg->max_tasks, &q, details);
	if (json_array_size(details)) {
		send_invalid(r, 422, details);
		details = NULL;
		goto out;
	}
	mentors = json_dumps(q.mentors, JSON_COMPACT);
	if (!mentors) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	const char *params[] = {r->org_id, q.coordinator,
	                        mentors,   q.type,
	                        q.date,    q.duration[0] ? q.duration : NULL,
	                        q.notes,   q.override ? "true" : "false"};
	res = ja_query(r, &stmt_create, params);
	if (!res)
		goto out;
	/* Committed (or in the key's transaction): publish after the commit. */
	const char *job_id = PQgetvalue(res, 0, 0);
	log_set_job_id(job_id);
	jobs_defer_publish(r, job_id, PQgetvalue(res, 0, 2));
	send_json(r, 202, PQgetvalue(res, 0, 1));
	if (http_resp_header(r->resp, "Location", "/api/v1/bulk-registrations/%s", job_id) != BR_OK)
		LOG_WARN("Location header lost");
out:
	json_decref(details);
	free(mentors);
	PQclear(res);
	json_decref(doc);
}

/* ---- query parameters ---- */

struct query_check {
	const char *const *allowed;
	json_t *details;
};

static bool query_one(void *ctx, const char *key, const char *value)
{
	(void)value;
	struct query_check *qc = ctx;
	for (const char *const *a = qc->allowed; *a; a++) {
		if (strcmp(*a, key) == 0)
			return true;
	}
	char field[128];
	snprintf(field, sizeof(field), "%.100s", key);
	for (char *p = field; *p; p++) {
		if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
			*p = '?'; /* a detail stays valid UTF-8 whatever the key */
	}
	problem(qc->details, field, "Unknown query parameter.");
	return true;
}

/* Refuses query parameters not in allowed; details collects them. */
static void check_query(struct api_req *r, const char *const *allowed, json_t *details)
{
	struct query_check qc = {allowed, details};
	http_req_query_each(r->http, query_one, &qc);
}

/* Routes without query parameters: true when there is none, else answers 400. */
static bool no_query(struct api_req *r)
{
	static const char *const none[] = {NULL};
	json_t *details = json_array();
	if (!details) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return false;
	}
	check_query(r, none, details);
	if (!json_array_size(details)) {
		json_decref(details);
		return true;
	}
	send_invalid(r, 400, details);
	return false;
}

/* A whole number from 1 to max, or absent (*out = dflt); else a detail. */
static void query_number(struct api_req *r, const char *key, long max, long dflt, long *out,
                         json_t *details)
{
	const char *s = http_req_query(r->http, key);
	*out = dflt;
	if (!s)
		return;
	char *end = NULL;
	errno = 0;
	long v = (*s >= '0' && *s <= '9') ? strtol(s, &end, 10) : 0;
	if (errno || !end || *end || v < 1 || v > max) {
		char msg[64];
		snprintf(msg, sizeof(msg), "Must be a whole number from 1 to %ld.", max);
		problem(details, key, msg);
		return;
	}
	*out = v;
}

/* A filter of 1 to 255 characters, or absent (NULL). */
static const char *query_text(struct api_req *r, const char *key, json_t *details)
{
	const char *s = http_req_query(r->http, key);
	if (s && !text_ok(s, strlen(s), BRS_TEXT_MAX)) {
		problem(details, key, "Must be a non-empty string of at most 255 characters.");
		return NULL;
	}
	return s;
}

void brs_list(struct api_req *r)
{
	static const char *const allowed[] = {"page",           "limit",         "status",
	                                      "coordinator_id", "activity_type", NULL};
	json_t *details = json_array();
	if (!details) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return;
	}
	long page, limit;
	check_query(r, allowed, details);
	query_number(r, "page", BRS_PAGE_MAX, 1, &page, details);
	query_number(r, "limit", BRS_LIMIT_MAX, BRS_LIMIT_DEFAULT, &limit, details);
	const char *status = http_req_query(r->http, "status");
	if (status && strcmp(status, "processing") != 0 && strcmp(status, "completed") != 0 &&
	    strcmp(status, "cancelled") != 0)
		problem(details, "status", "Must be processing, completed or cancelled.");
	const char *coordinator = query_text(r, "coordinator_id", details);
	const char *type = query_text(r, "activity_type", details);
	if (json_array_size(details)) {
		send_invalid(r, 400, details);
		return;
	}
	json_decref(details);
	char from[24], size[24];
	snprintf(from, sizeof(from), "%ld", (page - 1) * limit);
	snprintf(size, sizeof(size), "%ld", limit);
	const char *params[] = {r->org_id, status, coordinator, type, from, size};
	PGresult *res = ja_query(r, &stmt_list, params);
	if (!res)
		return;
	strbuf *b = &r->resp->body;
	sb_reset(b);
	br_status st = sb_appendf(b,
	                          "{\"data\":%s,\"pagination\":{\"page\":%ld,\"limit\":%ld,"
	                          "\"total\":%s}}",
	                          PQgetvalue(res, 0, 1), page, limit, PQgetvalue(res, 0, 0));
	PQclear(res);
	if (st != BR_OK) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		return;
	}
	r->resp->status = 200;
	r->resp->content_type = "application/json";
}

/* ---- one bulk registration ---- */

static void not_found(struct api_req *r)
{
	ja_fail(r, 404, "not_found", "Not found", "No such bulk registration.");
}

void brs_read(struct api_req *r)
{
	if (!no_query(r))
		return;
	const char *params[] = {r->org_id, r->id};
	PGresult *res = ja_query(r, &stmt_read, params);
	if (!res)
		return;
	if (PQgetisnull(res, 0, 0))
		not_found(r);
	else
		send_json(r, 200, PQgetvalue(res, 0, 0));
	PQclear(res);
}

/* The PUT body: {"action":"retry_failed"[,"override_duplicates":bool]}. */
static void check_update(const json_t *doc, json_t *details)
{
	static const char *const keys[] = {"action", "override_duplicates", NULL};
	const json_t *action = json_object_get(doc, "action");
	if (!json_is_string(action) || strcmp(json_string_value(action), "retry_failed") != 0)
		problem(details, "action",
		        action ? "Must be retry_failed." : "This field is required.");
	const json_t *o = json_object_get(doc, "override_duplicates");
	if (o && !json_is_boolean(o))
		problem(details, "override_duplicates", "Must be true or false.");
	unknown_members(doc, keys, details);
}

/* The answer of a retry that did not happen. */
static void retry_refused(struct api_req *r, const char *outcome)
{
	if (strcmp(outcome, "not_found") == 0)
		not_found(r);
	else if (strcmp(outcome, "job_in_progress") == 0)
		ja_fail(
		    r, 409, "job_in_progress", "Job in progress",
		    "The bulk registration is still processing; retry it once it has finished.");
	else
		ja_fail(r, 409, "nothing_to_retry", "Nothing to retry",
		        "The bulk registration has no failed mentor.");
}

void brs_update(struct api_req *r)
{
	PGresult *res = NULL;
	json_t *details = json_array();
	json_t *doc = NULL;
	if (!details) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	if (!no_query(r))
		goto out;
	doc = ja_parse_body(r);
	if (!doc)
		goto out;
	check_update(doc, details);
	if (json_array_size(details)) {
		send_invalid(r, 422, details);
		details = NULL;
		goto out;
	}
	/* Absent, the job keeps the override_duplicates it had (as natively). */
	const json_t *o = json_object_get(doc, "override_duplicates");
	const char *params[] = {r->org_id, r->id, !o ? NULL : json_is_true(o) ? "true" : "false"};
	res = ja_query(r, &stmt_retry, params);
	if (!res)
		goto out;
	const char *outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "retried") != 0) {
		retry_refused(r, outcome);
		goto out;
	}
	log_set_job_id(r->id);
	jobs_defer_publish(r, r->id, PQgetvalue(res, 0, 2));
	send_json(r, 202, PQgetvalue(res, 0, 1));
out:
	json_decref(details);
	PQclear(res);
	json_decref(doc);
}

void brs_delete(struct api_req *r)
{
	if (!no_query(r))
		return;
	const char *params[] = {r->org_id, r->id};
	PGresult *res = ja_query(r, &stmt_delete, params);
	if (!res)
		return;
	const char *outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "not_found") == 0) {
		not_found(r);
	} else {
		char body[160];
		snprintf(body, sizeof(body),
		         "{\"message\":\"Bulk registration job %s %s successfully\"}", r->id,
		         strcmp(outcome, "deleted") == 0 ? "deleted" : "cancelled");
		send_json(r, 200, body);
	}
	PQclear(res);
}
