/*
 * test_compat_bulk_registrations.c - the Bulk Registration Service
 * compatible API (docs/compat/bulk-registrations.md) against the real API
 * and workers: the example request and every field of every answer, the
 * list, duplicates and override_duplicates, retry_failed, DELETE while
 * processing and after, Idempotency-Key, every error in the foreign shape,
 * one activity under concurrent first uses, and a worker SIGKILLed in the
 * middle of a batch of bulk registrations (nothing lost, nothing doubled).
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fleet.h"
#include "strbuf.h"
#include "support.h"

TestSuite(compat_bulk, .timeout = 600);

#define BRS        "/api/v1/bulk-registrations"
#define DONE_MS    60000
#define FAULT_JOBS 8
#define FAULT_SIZE 50

static const char *const no_rate_limit[] = {"BULKREG_RATE_LIMIT=0", NULL};

struct ctx {
	struct t_org org;
	struct t_proc api;
	struct t_proc worker;
	PGconn *db;
	char uniq[64]; /* makes this test's coordinator, activity and mentor ids its own */
};

static void start(struct ctx *c, const char *const *api_env, bool worker)
{
	memset(c, 0, sizeof(*c));
	c->db = t_db();
	t_org_new(&c->org);
	t_unique_name(c->uniq, sizeof(c->uniq), "brs");
	t_api_start(&c->api, api_env);
	if (worker)
		t_worker_start(&c->worker, NULL);
}

static void stop(struct ctx *c)
{
	t_check_invariants(c->db);
	if (c->worker.pid > 0)
		cr_expect_eq(t_proc_stop(&c->worker, SIGTERM, 30000), 0);
	cr_expect_eq(t_proc_stop(&c->api, SIGTERM, 30000), 0);
	PQfinish(c->db);
}

/* method on BRS + suffix (may be ""), with the organization's token. */
static void call(struct ctx *c, struct t_resp *r, const char *method, const char *suffix,
                 const char *body, const char *const *headers)
{
	char url[1024];
	snprintf(url, sizeof(url), "%s" BRS "%s", c->api.url, suffix);
	t_http(r, method, url, c->org.token, body, headers);
}

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

static long num(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	cr_assert(json_is_integer(v), "%s is not an integer", key);
	return (long)json_integer_value(v);
}

/* The object's keys are exactly keys (a NULL-terminated list). */
static void keys_are(const json_t *o, const char *const *keys)
{
	size_t n = 0;
	for (const char *const *k = keys; *k; k++, n++)
		cr_assert(json_object_get(o, *k), "member %s missing", *k);
	cr_assert_eq(json_object_size(o), n, "%zu members, expected %zu", json_object_size(o), n);
}

/* r is {"error":{"code":code,"message":...,"details":[...]}} with status. */
static const json_t *expect_error(const struct t_resp *r, long status, const char *code)
{
	static const char *const top[] = {"error", NULL};
	static const char *const inner[] = {"code", "message", "details", NULL};
	cr_assert_eq(r->status, status, "status %ld, expected %ld: %s", r->status, status, r->body);
	cr_assert(r->json, "no JSON body: %s", r->body);
	keys_are(r->json, top);
	const json_t *e = json_object_get(r->json, "error");
	keys_are(e, inner);
	cr_assert_str_eq(str(e, "code"), code, "%s", r->body);
	cr_assert(json_is_string(json_object_get(e, "message")));
	cr_assert(json_is_array(json_object_get(e, "details")));
	cr_assert_str_eq(t_resp_header(r, "Content-Type"), "application/json");
	return json_object_get(e, "details");
}

/* The details name exactly these fields, in any order. */
static void details_fields(const json_t *details, const char *const *fields)
{
	size_t n = 0;
	for (const char *const *f = fields; *f; f++, n++) {
		bool found = false;
		for (size_t i = 0; i < json_array_size(details) && !found; i++) {
			const json_t *d = json_array_get(details, i);
			found = str(d, "field") && strcmp(str(d, "field"), *f) == 0 &&
			        json_is_string(json_object_get(d, "message"));
		}
		cr_assert(found, "no detail for %s", *f);
	}
	cr_assert_eq(json_array_size(details), n, "%zu details, expected %zu",
	             json_array_size(details), n);
}

/* The body of a POST: mentors "<uniq>-<prefix><i>" for i in [from, to). */
static char *create_body(struct ctx *c, const char *activity, const char *prefix, int from, int to,
                         const char *extra)
{
	strbuf b;
	sb_init(&b, 1 << 20);
	br_status st = sb_appendf(&b, "{\"coordinator_id\":\"coord-%s\",\"mentor_ids\":[", c->uniq);
	for (int i = from; i < to && st == BR_OK; i++)
		st = sb_appendf(&b, "%s\"%s-%s%d\"", i > from ? "," : "", c->uniq, prefix, i);
	if (st == BR_OK)
		st = sb_appendf(&b,
		                "],\"activity_type\":\"%s-%s\",\"activity_date\":\"2026-03-28\""
		                "%s%s}",
		                activity, c->uniq, extra ? "," : "", extra ? extra : "");
	cr_assert_eq(st, BR_OK);
	char *s = strdup(sb_str(&b));
	sb_free(&b);
	return s;
}

/* POSTs body, asserts 202; the id into id. */
static void post_ok(struct ctx *c, const char *body, char id[37])
{
	struct t_resp r;
	call(c, &r, "POST", "", body, NULL);
	cr_assert_eq(r.status, 202, "POST: %ld %s", r.status, r.body);
	snprintf(id, 37, "%s", str(r.json, "id"));
	t_resp_free(&r);
}

/* GETs one, asserting 200; the caller frees the result. */
static json_t *get_one(struct ctx *c, const char *id)
{
	char path[64];
	struct t_resp r;
	snprintf(path, sizeof(path), "/%s", id);
	call(c, &r, "GET", path, NULL, NULL);
	cr_assert_eq(r.status, 200, "GET: %ld %s", r.status, r.body);
	json_t *j = json_incref(r.json);
	t_resp_free(&r);
	return j;
}

struct wait {
	struct ctx *c;
	const char *id;
	const char *status;
};

static bool has_status(void *arg)
{
	struct wait *w = arg;
	json_t *j = get_one(w->c, w->id);
	bool ok = strcmp(str(j, "status"), w->status) == 0;
	json_decref(j);
	return ok;
}

static json_t *wait_status(struct ctx *c, const char *id, const char *status)
{
	struct wait w = {c, id, status};
	cr_assert(t_poll(has_status, &w, DONE_MS), "%s never became %s", id, status);
	return get_one(c, id);
}

/* Every field of a GET answer; results checked by the caller. */
static void check_full(const json_t *j, const char *status, long mentors, long ok, long failed,
                       long retries)
{
	static const char *const keys[] = {"id",
	                                   "coordinator_id",
	                                   "mentor_ids",
	                                   "activity_type",
	                                   "activity_date",
	                                   "mentor_count",
	                                   "status",
	                                   "created_at",
	                                   "duration_minutes",
	                                   "success_count",
	                                   "failure_count",
	                                   "retry_count",
	                                   "results",
	                                   "updated_at",
	                                   "completed_at",
	                                   NULL};
	keys_are(j, keys);
	cr_assert_str_eq(str(j, "status"), status);
	cr_assert_eq(num(j, "mentor_count"), mentors);
	cr_assert_eq(json_array_size(json_object_get(j, "mentor_ids")), (size_t)mentors);
	cr_assert_eq(json_array_size(json_object_get(j, "results")), (size_t)mentors);
	cr_assert_eq(num(j, "success_count"), ok);
	cr_assert_eq(num(j, "failure_count"), failed);
	cr_assert_eq(num(j, "retry_count"), retries);
	cr_assert(json_is_string(json_object_get(j, "created_at")));
	cr_assert(json_is_string(json_object_get(j, "updated_at")));
	cr_assert_eq(json_is_null(json_object_get(j, "completed_at")),
	             strcmp(status, "processing") == 0, "completed_at vs status %s", status);
}

/* results[i] is {mentor_id, activity_id, status, error} as expected. */
static void check_result(struct ctx *c, const json_t *j, size_t i, const char *mentor,
                         const char *status, const char *code)
{
	static const char *const keys[] = {"mentor_id", "activity_id", "status", "error", NULL};
	const json_t *res = json_array_get(json_object_get(j, "results"), i);
	keys_are(res, keys);
	cr_assert_str_eq(str(res, "mentor_id"), mentor);
	cr_assert_str_eq(str(res, "status"), status, "result %zu", i);
	const json_t *err = json_object_get(res, "error");
	if (strcmp(status, "pending") == 0) {
		cr_assert(json_is_null(err) && json_is_null(json_object_get(res, "activity_id")));
		return;
	}
	if (!code) {
		cr_assert(json_is_null(err));
		const char *p[] = {str(res, "activity_id"), mentor};
		cr_assert_eq(t_sql_long(c->db,
		                        "SELECT count(*) FROM people WHERE id = $1::uuid"
		                        " AND external_id = $2",
		                        2, p),
		             1, "activity_id of %s is not its person", mentor);
		return;
	}
	cr_assert(json_is_null(json_object_get(res, "activity_id")));
	cr_assert_str_eq(str(err, "code"), code);
	cr_assert(json_is_string(json_object_get(err, "message")));
}

Test(compat_bulk, example_request_every_field_and_the_list)
{
	struct ctx c;
	start(&c, no_rate_limit, true);
	char *body = create_body(&c, "group_workshop", "mentor-", 17, 20,
	                         "\"duration_minutes\":120,\"notes\":\"Quarterly session\","
	                         "\"override_duplicates\":false");
	struct t_resp r;
	call(&c, &r, "POST", "", body, NULL);
	cr_assert_eq(r.status, 202, "%s", r.body);
	static const char *const created[] = {"id",
	                                      "coordinator_id",
	                                      "mentor_ids",
	                                      "activity_type",
	                                      "activity_date",
	                                      "mentor_count",
	                                      "status",
	                                      "created_at",
	                                      NULL};
	keys_are(r.json, created);
	char id[37], type[128], coord[96], loc[128];
	snprintf(id, sizeof(id), "%s", str(r.json, "id"));
	snprintf(type, sizeof(type), "group_workshop-%s", c.uniq);
	snprintf(coord, sizeof(coord), "coord-%s", c.uniq);
	snprintf(loc, sizeof(loc), BRS "/%s", id);
	cr_assert_str_eq(r.location, loc);
	cr_assert_str_eq(str(r.json, "coordinator_id"), coord);
	cr_assert_str_eq(str(r.json, "activity_type"), type);
	cr_assert_str_eq(str(r.json, "activity_date"), "2026-03-28");
	cr_assert_str_eq(str(r.json, "status"), "processing");
	cr_assert_eq(num(r.json, "mentor_count"), 3);
	char m[3][96];
	for (int i = 0; i < 3; i++) {
		snprintf(m[i], sizeof(m[i]), "%s-mentor-%d", c.uniq, 17 + i);
		cr_assert_str_eq(
		    json_string_value(json_array_get(json_object_get(r.json, "mentor_ids"), i)),
		    m[i]);
	}
	t_resp_free(&r);

	json_t *j = wait_status(&c, id, "completed");
	check_full(j, "completed", 3, 3, 0, 0);
	cr_assert_eq(num(j, "duration_minutes"), 120);
	cr_assert_str_eq(str(j, "coordinator_id"), coord);
	for (int i = 0; i < 3; i++)
		check_result(&c, j, (size_t)i, m[i], "success", NULL);
	json_decref(j);

	/* The activity is one session; each mentor one person with the fields kept. */
	const char *pa[] = {c.org.id, type};
	cr_assert_eq(t_sql_long(c.db,
	                        "SELECT count(*) FROM sessions WHERE organization_id = $1"
	                        " AND activity_type = $2 AND activity_date = '2026-03-28'",
	                        2, pa),
	             1);
	cr_assert_eq(
	    t_sql_long(c.db,
	               "SELECT count(*) FROM people p JOIN sessions s ON s.id = p.session_id"
	               " WHERE s.organization_id = $1 AND s.activity_type = $2"
	               "   AND p.email IS NULL AND p.fields = '[{\"id\":\"duration_minutes\","
	               "\"value\":\"120\"},{\"id\":\"notes\",\"value\":\"Quarterly "
	               "session\"}]'::jsonb",
	               2, pa),
	    3);

	/* A native job of the same organization is no bulk registration. */
	char sid[37], native[37];
	t_session_sql(c.db, c.org.id, "native", sid);
	t_job_sql(c.db, c.org.id, sid, 2, native);
	char path[256];
	snprintf(path, sizeof(path), "/%s", native);
	call(&c, &r, "GET", path, NULL, NULL);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);

	/* The list, its filters and pages. */
	static const char *const page_keys[] = {"page", "limit", "total", NULL};
	call(&c, &r, "GET", "", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	const json_t *pg = json_object_get(r.json, "pagination");
	keys_are(pg, page_keys);
	cr_assert_eq(num(pg, "page"), 1);
	cr_assert_eq(num(pg, "limit"), 20);
	cr_assert_eq(num(pg, "total"), 1, "the native job is listed: %s", r.body);
	const json_t *item = json_array_get(json_object_get(r.json, "data"), 0);
	cr_assert_str_eq(str(item, "id"), id);
	cr_assert_str_eq(str(item, "status"), "completed");
	cr_assert_eq(num(item, "success_count"), 3);
	t_resp_free(&r);
	char second[37];
	free(body);
	body = create_body(&c, "group_workshop", "other-", 0, 2, NULL);
	post_ok(&c, body, second);
	json_decref(wait_status(&c, second, "completed"));
	call(&c, &r, "GET", "?page=1&limit=1", NULL, NULL);
	cr_assert_eq(num(json_object_get(r.json, "pagination"), "total"), 2);
	cr_assert_eq(json_array_size(json_object_get(r.json, "data")), 1);
	cr_assert_str_eq(str(json_array_get(json_object_get(r.json, "data"), 0), "id"), second,
	                 "not newest first");
	t_resp_free(&r);
	call(&c, &r, "GET", "?page=2&limit=1", NULL, NULL);
	cr_assert_str_eq(str(json_array_get(json_object_get(r.json, "data"), 0), "id"), id);
	t_resp_free(&r);
	call(&c, &r, "GET", "?page=3&limit=1", NULL, NULL);
	cr_assert_eq(json_array_size(json_object_get(r.json, "data")), 0);
	t_resp_free(&r);
	char query[512];
	snprintf(query, sizeof(query), "?status=completed&activity_type=%s&coordinator_id=%s", type,
	         coord);
	call(&c, &r, "GET", query, NULL, NULL);
	cr_assert_eq(num(json_object_get(r.json, "pagination"), "total"), 2);
	t_resp_free(&r);
	call(&c, &r, "GET", "?status=processing", NULL, NULL);
	cr_assert_eq(num(json_object_get(r.json, "pagination"), "total"), 0);
	t_resp_free(&r);
	call(&c, &r, "GET", "?coordinator_id=nobody", NULL, NULL);
	cr_assert_eq(num(json_object_get(r.json, "pagination"), "total"), 0);
	t_resp_free(&r);

	/* DELETE once finished: deleted; the people stay. */
	snprintf(path, sizeof(path), "/%s", id);
	call(&c, &r, "DELETE", path, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	char msg[160];
	snprintf(msg, sizeof(msg), "Bulk registration job %s deleted successfully", id);
	cr_assert_str_eq(str(r.json, "message"), msg);
	cr_assert_eq(json_object_size(r.json), 1);
	t_resp_free(&r);
	call(&c, &r, "GET", path, NULL, NULL);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);
	const char *pi[] = {id};
	cr_assert_eq(
	    t_sql_long(c.db, "SELECT count(*) FROM bulk_registrations WHERE id = $1", 1, pi), 0);
	cr_assert_eq(
	    t_sql_long(c.db,
	               "SELECT count(*) FROM people p JOIN sessions s ON s.id = p.session_id"
	               " WHERE s.organization_id = $1 AND s.activity_type = $2",
	               2, pa),
	    5);
	free(body);
	stop(&c);
}

/* PUT retry_failed with a body; asserts its 202 and returns retry_count. */
static long retry_ok(struct ctx *c, const char *id, const char *body)
{
	static const char *const keys[] = {"id", "status", "retry_count", "updated_at", NULL};
	char path[64];
	struct t_resp r;
	snprintf(path, sizeof(path), "/%s", id);
	call(c, &r, "PUT", path, body, NULL);
	cr_assert_eq(r.status, 202, "PUT: %ld %s", r.status, r.body);
	keys_are(r.json, keys);
	cr_assert_str_eq(str(r.json, "id"), id);
	cr_assert_str_eq(str(r.json, "status"), "processing");
	long n = num(r.json, "retry_count");
	t_resp_free(&r);
	return n;
}

Test(compat_bulk, duplicates_override_and_retry_failed)
{
	struct ctx c;
	start(&c, no_rate_limit, true);
	char first[37], id[37], path[64], m[3][96];
	char *body = create_body(&c, "mentoring", "m", 0, 2, NULL);
	post_ok(&c, body, first);
	free(body);
	json_decref(wait_status(&c, first, "completed"));

	/* m0 and m1 are in the activity already: they fail, m2 registers. */
	body = create_body(&c, "mentoring", "m", 0, 3, "\"override_duplicates\":false");
	post_ok(&c, body, id);
	free(body);
	json_t *j = wait_status(&c, id, "completed");
	check_full(j, "completed", 3, 1, 2, 0);
	for (int i = 0; i < 3; i++)
		snprintf(m[i], sizeof(m[i]), "%s-m%d", c.uniq, i);
	check_result(&c, j, 0, m[0], "failed", "already_registered");
	check_result(&c, j, 1, m[1], "failed", "already_registered");
	check_result(&c, j, 2, m[2], "success", NULL);
	json_decref(j);

	/* Without override they fail again; with it they succeed. */
	cr_assert_eq(retry_ok(&c, id, "{\"action\":\"retry_failed\"}"), 1);
	j = wait_status(&c, id, "completed");
	check_full(j, "completed", 3, 1, 2, 1);
	json_decref(j);
	cr_assert_eq(retry_ok(&c, id, "{\"action\":\"retry_failed\",\"override_duplicates\":true}"),
	             2);
	j = wait_status(&c, id, "completed");
	check_full(j, "completed", 3, 3, 0, 2);
	for (int i = 0; i < 3; i++)
		check_result(&c, j, (size_t)i, m[i], "success", NULL);
	json_decref(j);

	/* Nothing left to retry: 409. */
	struct t_resp r;
	snprintf(path, sizeof(path), "/%s", id);
	call(&c, &r, "PUT", path, "{\"action\":\"retry_failed\"}", NULL);
	expect_error(&r, 409, "nothing_to_retry");
	t_resp_free(&r);

	/* Every mentor once in the activity. */
	char type[128];
	snprintf(type, sizeof(type), "mentoring-%s", c.uniq);
	const char *pa[] = {c.org.id, type};
	cr_assert_eq(
	    t_sql_long(c.db,
	               "SELECT count(*) FROM people p JOIN sessions s ON s.id = p.session_id"
	               " WHERE s.organization_id = $1 AND s.activity_type = $2",
	               2, pa),
	    3);
	stop(&c);
}

/* No worker: the job stays processing, so PUT is 409 and DELETE cancels. */
Test(compat_bulk, delete_while_processing_then_after)
{
	struct ctx c;
	start(&c, no_rate_limit, false);
	char id[37], path[64], msg[160];
	char *body = create_body(&c, "standby", "s", 0, 4, NULL);
	post_ok(&c, body, id);
	free(body);
	snprintf(path, sizeof(path), "/%s", id);
	json_t *j = get_one(&c, id);
	check_full(j, "processing", 4, 0, 0, 0);
	char m0[96];
	snprintf(m0, sizeof(m0), "%s-s0", c.uniq);
	check_result(&c, j, 0, m0, "pending", NULL);
	json_decref(j);

	struct t_resp r;
	call(&c, &r, "PUT", path, "{\"action\":\"retry_failed\"}", NULL);
	expect_error(&r, 409, "job_in_progress");
	t_resp_free(&r);

	call(&c, &r, "DELETE", path, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	snprintf(msg, sizeof(msg), "Bulk registration job %s cancelled successfully", id);
	cr_assert_str_eq(str(r.json, "message"), msg);
	t_resp_free(&r);
	j = get_one(&c, id);
	check_full(j, "cancelled", 4, 0, 0, 0);
	for (int i = 0; i < 4; i++) {
		snprintf(m0, sizeof(m0), "%s-s%d", c.uniq, i);
		check_result(&c, j, (size_t)i, m0, "cancelled", "job_cancelled");
	}
	json_decref(j);

	call(&c, &r, "DELETE", path, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	snprintf(msg, sizeof(msg), "Bulk registration job %s deleted successfully", id);
	cr_assert_str_eq(str(r.json, "message"), msg);
	t_resp_free(&r);
	call(&c, &r, "DELETE", path, NULL, NULL);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);
	stop(&c);
}

/* Sends method path (BRS + suffix) with body and extra headers; expects an error. */
static void expect_call(struct ctx *c, const char *method, const char *suffix, const char *body,
                        const char *const *headers, long status, const char *code)
{
	struct t_resp r;
	call(c, &r, method, suffix, body, headers);
	expect_error(&r, status, code);
	t_resp_free(&r);
}

/* A 422 or 400 validation_failed naming exactly fields. */
static void expect_invalid(struct ctx *c, const char *method, const char *suffix, const char *body,
                           long status, const char *const *fields)
{
	struct t_resp r;
	call(c, &r, method, suffix, body, NULL);
	details_fields(expect_error(&r, status, "validation_failed"), fields);
	t_resp_free(&r);
}

Test(compat_bulk, every_error_in_the_foreign_shape)
{
	struct ctx c;
	start(&c, no_rate_limit, false);
	char id[37], path[64], url[256], unknown[37];
	char *body = create_body(&c, "errors", "e", 0, 1, NULL);
	post_ok(&c, body, id);
	free(body);
	snprintf(path, sizeof(path), "/%s", id);
	struct t_resp r;

	/* 401: no token, an unknown token. */
	snprintf(url, sizeof(url), "%s" BRS, c.api.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);
	t_http(&r, "POST", url, "brk_live_nope", "{}", NULL);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);

	/* 404: an unknown id, an id that is no UUID, a path under the prefix. */
	t_uuid(unknown);
	snprintf(url, sizeof(url), "/%s", unknown);
	expect_call(&c, "GET", url, NULL, NULL, 404, "not_found");
	expect_call(&c, "PUT", url, "{\"action\":\"retry_failed\"}", NULL, 404, "not_found");
	expect_call(&c, "DELETE", url, NULL, NULL, 404, "not_found");
	expect_call(&c, "GET", "/not-a-uuid", NULL, NULL, 404, "not_found");
	snprintf(url, sizeof(url), "/%s/results", id);
	expect_call(&c, "GET", url, NULL, NULL, 404, "not_found");
	/* Another organization's bulk registration is not found either. */
	struct t_org other;
	t_org_new(&other);
	snprintf(url, sizeof(url), "%s" BRS "/%s", c.api.url, id);
	t_http(&r, "GET", url, other.token, NULL, NULL);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);

	/* 405 with Allow. */
	call(&c, &r, "PATCH", path, "{}", NULL);
	expect_error(&r, 405, "method_not_allowed");
	cr_assert_str_eq(t_resp_header(&r, "Allow"), "GET, PUT, DELETE");
	t_resp_free(&r);
	call(&c, &r, "DELETE", "", NULL, NULL);
	expect_error(&r, 405, "method_not_allowed");
	cr_assert_str_eq(t_resp_header(&r, "Allow"), "GET, POST");
	t_resp_free(&r);

	/* 415, 400 invalid JSON. */
	static const char *const text[] = {"Content-Type: text/plain", NULL};
	expect_call(&c, "POST", "", "{}", text, 415, "unsupported_media_type");
	expect_call(&c, "POST", "", "{\"coordinator_id\":", NULL, 400, "invalid_json");
	expect_call(&c, "POST", "", "[1]", NULL, 400, "invalid_json");

	/* 422: every problem of the body at once. */
	static const char *const all[] = {"coordinator_id", "mentor_ids", "activity_type",
	                                  "activity_date", NULL};
	expect_invalid(&c, "POST", "", "{}", 422, all);
	static const char *const each[] = {"coordinator_id", "mentor_ids[1]",
	                                   "mentor_ids[3]",  "activity_type",
	                                   "activity_date",  "duration_minutes",
	                                   "notes",          "override_duplicates",
	                                   "colour",         NULL};
	expect_invalid(&c, "POST", "",
	               "{\"coordinator_id\":\"\",\"mentor_ids\":[\"a\",\"\",\"b\",7],"
	               "\"activity_type\":5,\"activity_date\":\"2026-02-30\","
	               "\"duration_minutes\":0,\"notes\":[],\"override_duplicates\":\"yes\","
	               "\"colour\":\"red\"}",
	               422, each);
	static const char *const mentors[] = {"mentor_ids", NULL};
	strbuf b;
	sb_init(&b, 1 << 16);
	cr_assert_eq(sb_appends(&b, "{\"coordinator_id\":\"c\",\"activity_type\":\"t\","
	                            "\"activity_date\":\"2026-03-28\",\"mentor_ids\":["),
	             BR_OK);
	for (int i = 0; i < 51; i++) /* BULKREG_MAX_TASKS is 50 */
		cr_assert_eq(sb_appendf(&b, "%s\"m%d\"", i ? "," : "", i), BR_OK);
	cr_assert_eq(sb_appends(&b, "]}"), BR_OK);
	expect_invalid(&c, "POST", "", sb_str(&b), 422, mentors);
	sb_free(&b);
	expect_invalid(&c, "POST", "",
	               "{\"coordinator_id\":\"c\",\"activity_type\":\"t\","
	               "\"activity_date\":\"2026-03-28\",\"mentor_ids\":[]}",
	               422, mentors);
	static const char *const action[] = {"action", "override_duplicates", NULL};
	expect_invalid(&c, "PUT", path, "{\"action\":\"rerun\",\"override_duplicates\":1}", 422,
	               action);

	/* 400: the list's query. */
	static const char *const query[] = {"page", "limit", "status", "sort", NULL};
	expect_invalid(&c, "GET", "?page=0&limit=101&status=ended&sort=asc", NULL, 400, query);
	static const char *const limit0[] = {"limit", NULL};
	expect_invalid(&c, "GET", "?limit=0", NULL, 400, limit0);
	static const char *const page_x[] = {"page", NULL};
	expect_invalid(&c, "GET", "?page=x", NULL, 400, page_x);

	/* 409 while processing (no worker runs). */
	expect_call(&c, "PUT", path, "{\"action\":\"retry_failed\"}", NULL, 409, "job_in_progress");
	stop(&c);
}

Test(compat_bulk, rate_limited)
{
	static const char *const env[] = {"BULKREG_RATE_LIMIT=1/s,1", NULL};
	struct ctx c;
	start(&c, env, false);
	struct t_resp r;
	call(&c, &r, "GET", "", NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	t_resp_free(&r);
	call(&c, &r, "GET", "", NULL, NULL);
	expect_error(&r, 429, "rate_limited");
	cr_assert(t_resp_header(&r, "Retry-After"), "no Retry-After");
	t_resp_free(&r);
	stop(&c);
}

Test(compat_bulk, idempotency_key_replay)
{
	struct ctx c;
	start(&c, no_rate_limit, true);
	char key[96], header[128];
	snprintf(key, sizeof(key), "key-%s", c.uniq);
	snprintf(header, sizeof(header), "Idempotency-Key: %s", key);
	const char *headers[] = {header, NULL};
	char *body = create_body(&c, "keyed", "k", 0, 3, NULL);
	struct t_resp a, b;
	call(&c, &a, "POST", "", body, headers);
	cr_assert_eq(a.status, 202, "%s", a.body);
	call(&c, &b, "POST", "", body, headers);
	cr_assert_eq(b.status, 202, "%s", b.body);
	cr_assert_str_eq(b.body, a.body, "the replay differs");
	cr_assert_str_eq(t_resp_header(&b, "Idempotent-Replayed"), "true");
	cr_assert_str_eq(t_resp_header(&b, "Content-Type"), "application/json");
	cr_assert_str_eq(b.location, a.location);
	char id[37];
	snprintf(id, sizeof(id), "%s", str(a.json, "id"));
	t_resp_free(&a);
	t_resp_free(&b);
	const char *po[] = {c.org.id};
	cr_assert_eq(
	    t_sql_long(c.db, "SELECT count(*) FROM jobs WHERE organization_id = $1", 1, po), 1);
	free(body);

	/* The same key with another body; a malformed key. */
	body = create_body(&c, "keyed", "k", 0, 4, NULL);
	expect_call(&c, "POST", "", body, headers, 422, "idempotency_key_reused");
	static const char *const bad[] = {"Idempotency-Key: caf\xc3\xa9", NULL};
	expect_call(&c, "POST", "", body, bad, 400, "validation_failed");
	free(body);
	json_t *j = wait_status(&c, id, "completed");
	check_full(j, "completed", 3, 3, 0, 0);
	json_decref(j);
	stop(&c);
}

struct racer {
	struct ctx *c;
	pthread_barrier_t *go;
	int n;
	long status;
	char id[37];
};

static void *race(void *arg)
{
	struct racer *rc = arg;
	char prefix[16];
	snprintf(prefix, sizeof(prefix), "r%d-", rc->n);
	char *body = create_body(rc->c, "first_use", prefix, 0, 5, NULL);
	char url[256], err[256];
	snprintf(url, sizeof(url), "%s" BRS, rc->c->api.url);
	struct t_resp r;
	pthread_barrier_wait(rc->go);
	t_http_try(&r, "POST", url, rc->c->org.token, body, NULL, 0, err, sizeof(err));
	rc->status = r.status;
	const char *id = json_string_value(json_object_get(r.json, "id"));
	snprintf(rc->id, sizeof(rc->id), "%s", id ? id : "");
	t_resp_free(&r);
	free(body);
	return NULL;
}

#define RACERS 8

Test(compat_bulk, concurrent_first_uses_make_one_activity)
{
	struct ctx c;
	start(&c, no_rate_limit, true);
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, RACERS);
	struct racer rs[RACERS];
	pthread_t th[RACERS];
	for (int i = 0; i < RACERS; i++) {
		rs[i] = (struct racer){.c = &c, .go = &go, .n = i};
		pthread_create(&th[i], NULL, race, &rs[i]);
	}
	for (int i = 0; i < RACERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&go);
	char type[128];
	snprintf(type, sizeof(type), "first_use-%s", c.uniq);
	const char *pa[] = {c.org.id, type};
	cr_assert_eq(t_sql_long(c.db,
	                        "SELECT count(*) FROM sessions WHERE organization_id = $1"
	                        " AND activity_type = $2",
	                        2, pa),
	             1, "concurrent first uses made several activities");
	for (int i = 0; i < RACERS; i++) {
		cr_assert_eq(rs[i].status, 202, "racer %d answered %ld", i, rs[i].status);
		json_t *j = wait_status(&c, rs[i].id, "completed");
		check_full(j, "completed", 5, 5, 0, 0);
		json_decref(j);
	}
	cr_assert_eq(t_sql_long(c.db,
	                        "SELECT count(DISTINCT j.session_id) FROM bulk_registrations b"
	                        " JOIN jobs j ON j.id = b.id WHERE b.organization_id = $1"
	                        "   AND b.activity_type = $2",
	                        2, pa),
	             1);
	cr_assert_eq(
	    t_sql_long(c.db,
	               "SELECT count(*) FROM people p JOIN sessions s ON s.id = p.session_id"
	               " WHERE s.organization_id = $1 AND s.activity_type = $2",
	               2, pa),
	    RACERS * 5);
	stop(&c);
}

/* Posts a bulk registration of FAULT_SIZE fresh mentors through the fleet's API. */
static void fleet_post(struct t_fleet *f, const char *activity, int n)
{
	strbuf b;
	sb_init(&b, 1 << 16);
	br_status st = sb_appendf(&b, "{\"coordinator_id\":\"fault\",\"mentor_ids\":[");
	for (int i = 0; i < FAULT_SIZE && st == BR_OK; i++)
		st = sb_appendf(&b, "%s\"%s-%d-%d\"", i ? "," : "", activity, n, i);
	if (st == BR_OK)
		st = sb_appendf(&b,
		                "],\"activity_type\":\"%s\",\"activity_date\":\"2026-03-28\","
		                "\"duration_minutes\":45}",
		                activity);
	cr_assert_eq(st, BR_OK);
	char url[256];
	snprintf(url, sizeof(url), "%s" BRS, f->api.url);
	struct t_resp r;
	t_http(&r, "POST", url, f->org.token, sb_str(&b), NULL);
	sb_free(&b);
	cr_assert_eq(r.status, 202, "POST: %ld %s", r.status, r.body);
	pthread_mutex_lock(&f->mu);
	cr_assert_lt(f->njobs, T_FLEET_MAX_JOBS);
	snprintf(f->jobs[f->njobs++], 37, "%s", json_string_value(json_object_get(r.json, "id")));
	f->tasks_accepted += FAULT_SIZE;
	pthread_mutex_unlock(&f->mu);
	t_resp_free(&r);
}

/*
 * A worker alone on a backlog of bulk registrations is SIGKILLed inside its
 * 3rd batch's transaction (test_fault_points.c); a clean pair finishes.
 * Every mentor is registered exactly once and every count is exact, through
 * this API as natively.
 */
Test(compat_bulk, worker_killed_mid_transaction)
{
	struct t_fleet f;
	t_fleet_init(&f, "brs worker_mid_transaction", NULL, NULL);
	char act[2][64];
	for (int a = 0; a < 2; a++) {
		t_unique_name(act[a], sizeof(act[a]), a ? "fault-b" : "fault-a");
		for (int i = 0; i < FAULT_JOBS / 2; i++)
			fleet_post(&f, act[a], i);
	}
	static const char *const armed[] = {"BULKREG_FAULT=worker_mid_transaction:3", NULL};
	t_fleet_worker_spawn(&f, 0, armed);
	int rc = t_proc_stop(&f.workers[0], 0, 120000);
	if (rc != 128 + SIGKILL)
		t_proc_print_log(&f.workers[0], 40);
	cr_assert_eq(rc, 128 + SIGKILL, "the armed worker ended with %d", rc);
	long before = t_fleet_processed(&f);
	cr_assert_lt(before, FAULT_JOBS * FAULT_SIZE, "the crash came after all the work");
	t_fleet_note(&f, "crashed with %ld of %d tasks committed;", before,
	             FAULT_JOBS * FAULT_SIZE);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	t_fleet_verify(&f);

	/* Every mentor exactly once, and the foreign answers exact. */
	for (int a = 0; a < 2; a++) {
		const char *pa[] = {f.org.id, act[a]};
		PGresult *res = t_sql(f.db,
		                      "SELECT count(*), count(DISTINCT p.external_id)"
		                      " FROM people p JOIN sessions s ON s.id = p.session_id"
		                      " WHERE s.organization_id = $1 AND s.activity_type = $2",
		                      2, pa);
		cr_assert_eq(strtol(PQgetvalue(res, 0, 0), NULL, 10), FAULT_JOBS / 2 * FAULT_SIZE);
		cr_assert_eq(strtol(PQgetvalue(res, 0, 1), NULL, 10), FAULT_JOBS / 2 * FAULT_SIZE);
		PQclear(res);
	}
	struct ctx c = {.org = f.org, .api = f.api, .db = f.db};
	for (int i = 0; i < f.njobs; i++) {
		json_t *j = get_one(&c, f.jobs[i]);
		check_full(j, "completed", FAULT_SIZE, FAULT_SIZE, 0, 0);
		const json_t *results = json_object_get(j, "results");
		for (size_t k = 0; k < json_array_size(results); k++)
			cr_assert_str_eq(str(json_array_get(results, k), "status"), "success");
		json_decref(j);
	}
	const char *po[] = {f.org.id};
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(DISTINCT t.person_id) FROM tasks t"
	                        " JOIN jobs j ON j.id = t.job_id WHERE j.organization_id = $1",
	                        1, po),
	             FAULT_JOBS * FAULT_SIZE);
	t_fleet_stop(&f);
}
