/*
 * test_lifecycle.c - the life of a registration through the real API and a
 * worker (docs/openapi.yaml, Sessions, People and Bulk registration;
 * docs/architecture.md, "The life of a registration"): the sessions list,
 * PATCH and DELETE of a session, people known by email and/or external_id,
 * the people filters, PATCH transitions and DELETE (a cancellation), the
 * ordered waiting list and its promotions, explicit waitlisting, bulk
 * approve/deny/cancel jobs, tracks, and person.updated webhooks.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

#define JOIN_BASE "https://join.lifecycle.test/j/"

static const char *const env[] = {"BULKREG_JOIN_URL_BASE=" JOIN_BASE,
                                  "BULKREG_WEBHOOK_RETRY_SCHEDULE=200ms,200ms,200ms",
                                  "BULKREG_WEBHOOK_TIMEOUT_MS=2000", NULL};

static struct t_proc api, worker;
static struct t_org org, other;
static PGconn *db;
static char base[64];

static void setup(void)
{
	db = t_db();
	t_org_new(&org);
	t_org_new(&other);
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
}

static void teardown(void)
{
	t_proc_stop(&worker, SIGTERM, 20000);
	t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(lifecycle, .init = setup, .fini = teardown, .timeout = 240);

/* ---- requests and their answers ---- */

/* method on base + the formatted path, with o's token; free r with t_resp_free. */
__attribute__((format(printf, 5, 6))) static void call(struct t_resp *r, const struct t_org *o,
                                                       const char *method, const char *body,
                                                       const char *fmt, ...)
{
	char url[1024];
	size_t n = (size_t)snprintf(url, sizeof(url), "%s", base);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(url + n, sizeof(url) - n, fmt, ap);
	va_end(ap);
	t_http(r, method, url, o->token, body, NULL);
}

static json_t *attrs_of(const struct t_resp *r)
{
	return json_object_get(json_object_get(r->json, "data"), "attributes");
}

/* A string attribute of the answer's data; "" when absent or null. */
static const char *sattr(const struct t_resp *r, const char *key)
{
	const char *s = json_string_value(json_object_get(attrs_of(r), key));
	return s ? s : "";
}

/* An integer attribute of the answer's data; -1 when absent or null. */
static long iattr(const struct t_resp *r, const char *key)
{
	const json_t *v = json_object_get(attrs_of(r), key);
	return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* A member of the answer's meta as an integer; -1 when absent or null. */
static long meta_of(const struct t_resp *r, const char *key)
{
	const json_t *v = json_object_get(json_object_get(r->json, "meta"), key);
	return json_is_integer(v) ? (long)json_integer_value(v) : -1;
}

/* The code and pointer of error i; "" when absent. */
static const char *err_code(const struct t_resp *r, size_t i)
{
	const char *s = json_string_value(
	    json_object_get(json_array_get(json_object_get(r->json, "errors"), i), "code"));
	return s ? s : "";
}

static const char *err_pointer(const struct t_resp *r, size_t i)
{
	const json_t *e = json_array_get(json_object_get(r->json, "errors"), i);
	const char *s = json_string_value(json_object_get(json_object_get(e, "source"), "pointer"));
	return s ? s : "";
}

/*
 * The attribute key of every element of a list answer's data, space
 * separated, into out ("-" for a null).
 */
static void list_of(const struct t_resp *r, const char *key, char *out, size_t cap)
{
	size_t n = 0, i;
	json_t *item;
	out[0] = '\0';
	json_array_foreach(json_object_get(r->json, "data"), i, item)
	{
		const char *s =
		    json_string_value(json_object_get(json_object_get(item, "attributes"), key));
		n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", i ? " " : "",
		                      s ? s : "-");
	}
}

/* ---- people ---- */

struct person {
	long http;
	char id[37];
	char status[32]; /* registration_status, or the error code */
};

/* POSTs a person with attrs (an object's text) and meta (NULL or an object's text). */
static struct person add(const char *sid, const char *attrs, const char *meta)
{
	char body[1024];
	struct t_resp r;
	struct person p = {0};
	snprintf(body, sizeof(body), "{\"data\":{\"type\":\"people\",\"attributes\":%s}%s%s}",
	         attrs, meta ? ",\"meta\":" : "", meta ? meta : "");
	call(&r, &org, "POST", body, "/v1/sessions/%s/people", sid);
	p.http = r.status;
	if (r.status == 201) {
		snprintf(p.id, sizeof(p.id), "%s",
		         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
		snprintf(p.status, sizeof(p.status), "%s", sattr(&r, "registration_status"));
	} else {
		snprintf(p.status, sizeof(p.status), "%s", err_code(&r, 0));
	}
	t_resp_free(&r);
	return p;
}

/* As add, asserting the answer is 201 with status. */
static struct person add_ok(const char *sid, const char *attrs, const char *meta,
                            const char *status)
{
	struct person p = add(sid, attrs, meta);
	cr_assert_eq(p.http, 201, "register %s: %ld %s", attrs, p.http, p.status);
	cr_assert_str_eq(p.status, status, "register %s", attrs);
	return p;
}

struct state {
	char status[32];
	long position; /* waitlist_position, -1 when null */
};

/* The person as GET shows it (fatal unless 200). */
static struct state state_of(const char *sid, const char *pid)
{
	struct t_resp r;
	struct state s;
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people/%s", sid, pid);
	cr_assert_eq(r.status, 200, "get person: %ld %s", r.status, r.body);
	snprintf(s.status, sizeof(s.status), "%s", sattr(&r, "registration_status"));
	s.position = iattr(&r, "waitlist_position");
	cr_assert((s.position > 0) == (strcmp(s.status, "waitlisted") == 0),
	          "waitlist_position %ld for a %s person", s.position, s.status);
	t_resp_free(&r);
	return s;
}

static void assert_state(const char *sid, const struct person *p, const char *status, long position)
{
	struct state s = state_of(sid, p->id);
	cr_assert_str_eq(s.status, status, "person %s is %s, not %s", p->id, s.status, status);
	cr_assert_eq(s.position, position, "person %s: waitlist_position %ld, not %ld", p->id,
	             s.position, position);
}

/* PATCHes the person's attributes (an object's text): the status; the error code into code. */
static long patch_person(const char *sid, const char *pid, const char *attrs, char code[48])
{
	char body[1024];
	struct t_resp r;
	snprintf(body, sizeof(body), "{\"data\":{\"type\":\"people\",\"attributes\":%s}}", attrs);
	call(&r, &org, "PATCH", body, "/v1/sessions/%s/people/%s", sid, pid);
	long status = r.status;
	snprintf(code, 48, "%s",
	         status == 200 ? sattr(&r, "registration_status") : err_code(&r, 0));
	t_resp_free(&r);
	return status;
}

static long set_status(const char *sid, const char *pid, const char *to, char code[48])
{
	char attrs[96];
	snprintf(attrs, sizeof(attrs), "{\"registration_status\":\"%s\"}", to);
	return patch_person(sid, pid, attrs, code);
}

/* "registered/waitlisted/pending" counts of the session, into out. */
static void counts(const char *sid, char out[64])
{
	struct t_resp r;
	call(&r, &org, "GET", NULL, "/v1/sessions/%s", sid);
	cr_assert_eq(r.status, 200, "get session: %ld %s", r.status, r.body);
	snprintf(out, 64, "%ld/%ld/%ld", iattr(&r, "registrants_count"),
	         iattr(&r, "waitlist_count"), iattr(&r, "pending_count"));
	t_resp_free(&r);
}

/* PATCHes the session's attributes (an object's text) as o; r is the answer. */
static void patch_session(struct t_resp *r, const struct t_org *o, const char *sid,
                          const char *attrs)
{
	char body[1024];
	snprintf(body, sizeof(body), "{\"data\":{\"type\":\"sessions\",\"attributes\":%s}}", attrs);
	call(r, o, "PATCH", body, "/v1/sessions/%s", sid);
}

/* ---- jobs ---- */

/* POSTs a bulk job: members of its attributes (may be "") and the tasks (an array's text). */
static long post_job(const char *sid, const char *members, const char *tasks, char job[37],
                     struct t_resp *keep)
{
	static char body[16384];
	struct t_resp r;
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"jobs\",\"attributes\":{%s%s\"tasks\":%s}}}", members,
	         members[0] ? "," : "", tasks);
	call(&r, &org, "POST", body, "/v1/sessions/%s/people/bulk", sid);
	long status = r.status;
	if (status == 202)
		snprintf(job, 37, "%s",
		         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	if (keep)
		*keep = r;
	else
		t_resp_free(&r);
	return status;
}

static bool job_done(void *ctx)
{
	const char *job = ctx;
	struct t_resp r;
	call(&r, &org, "GET", NULL, "/v1/jobs/%s", job);
	bool done = r.status == 200 && strcmp(sattr(&r, "status"), "processing") != 0;
	t_resp_free(&r);
	return done;
}

/* Waits for the job to end; r is then the job (free it). */
static void job_wait(const char *job, struct t_resp *r)
{
	cr_assert(t_poll(job_done, (void *)job, 60000), "job %s did not end", job);
	call(r, &org, "GET", NULL, "/v1/jobs/%s", job);
	cr_assert_eq(r->status, 200);
}

/*
 * Every task of the job as "index:status[:code]", space separated, into out;
 * ids[i] receives the id of the person of task i ("" when none).
 */
static void job_tasks(const char *job, char *out, size_t cap, char (*ids)[37])
{
	struct t_resp r;
	size_t n = 0, i;
	json_t *t;
	call(&r, &org, "GET", NULL, "/v1/jobs/%s/tasks?page[size]=100", job);
	cr_assert_eq(r.status, 207, "tasks: %ld %s", r.status, r.body);
	out[0] = '\0';
	json_array_foreach(json_object_get(r.json, "data"), i, t)
	{
		const char *code = json_string_value(
		    json_object_get(json_array_get(json_object_get(t, "errors"), 0), "code"));
		n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%lld:%s%s%s", i ? " " : "",
		                      json_integer_value(json_object_get(t, "index")),
		                      json_string_value(json_object_get(t, "status")),
		                      code ? ":" : "", code ? code : "");
		const char *pid =
		    json_string_value(json_object_get(json_object_get(t, "data"), "id"));
		if (ids)
			snprintf(ids[i], 37, "%s", pid ? pid : "");
	}
	t_resp_free(&r);
}

/* ---- sessions ---- */

Test(lifecycle, sessions_list_pages_newest_first_and_filters)
{
	char ids[5][37], got[256];
	for (int i = 0; i < 5; i++) {
		char attrs[128];
		snprintf(attrs, sizeof(attrs),
		         "{\"title\":\"L%d\",\"starts_at\":\"2030-01-0%dT10:00:00Z\"}", i + 1,
		         i + 1);
		t_session_new(base, org.token, attrs, ids[i]);
	}
	struct t_resp r;
	call(&r, &org, "GET", NULL, "/v1/sessions?page[size]=2");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	list_of(&r, "title", got, sizeof(got));
	cr_assert_str_eq(got, "L5 L4");
	cr_assert_eq(meta_of(&r, "record_count"), 5);
	cr_assert_eq(meta_of(&r, "page_count"), 3);
	cr_assert_eq(meta_of(&r, "next_page"), 1);
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions?page[size]=2&page[number]=2");
	list_of(&r, "title", got, sizeof(got));
	cr_assert_str_eq(got, "L1");
	cr_assert_eq(meta_of(&r, "next_page"), -1);
	cr_assert_eq(meta_of(&r, "previous_page"), 1);
	t_resp_free(&r);

	/* Both bounds are exclusive; an offset is honoured. */
	call(&r, &org, "GET", NULL,
	     "/v1/sessions?filter[starts_after]=2030-01-02T10:00:00Z"
	     "&filter[starts_before]=2030-01-05T10:00:00Z");
	list_of(&r, "title", got, sizeof(got));
	cr_assert_str_eq(got, "L4 L3");
	cr_assert_eq(meta_of(&r, "record_count"), 2);
	t_resp_free(&r);
	call(&r, &org, "GET", NULL,
	     "/v1/sessions?filter[starts_before]=2030-01-02T10:30:00%%2B01:00");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	list_of(&r, "title", got, sizeof(got));
	cr_assert_str_eq(got, "L1");
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions?filter[starts_after]=2030-01-04T10:00:00Z");
	list_of(&r, "title", got, sizeof(got));
	cr_assert_str_eq(got, "L5");
	t_resp_free(&r);

	static const char *const bad[] = {
	    "filter[starts_after]=tomorrow", "filter[starts_before]=2030-02-30T00:00:00Z",
	    "filter[starts_after]=2030-01-01", "filter[starts]=2030-01-01T00:00:00Z"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		call(&r, &org, "GET", NULL, "/v1/sessions?%s", bad[i]);
		cr_assert_eq(r.status, 400, "%s: %ld", bad[i], r.status);
		cr_assert_str_eq(err_code(&r, 0), "invalid_parameter", "%s", bad[i]);
		t_resp_free(&r);
	}
	/* Another organization sees none of them. */
	call(&r, &other, "GET", NULL, "/v1/sessions");
	cr_assert_eq(r.status, 200);
	cr_assert_eq(meta_of(&r, "record_count"), 0);
	cr_assert_eq(json_array_size(json_object_get(r.json, "data")), 0);
	t_resp_free(&r);
}

Test(lifecycle, capacity_raise_promotes_in_waitlist_order)
{
	char sid[37], c[64];
	t_session_new(base, org.token, "{\"title\":\"Raise\",\"capacity\":1,\"waitlist\":true}",
	              sid);
	struct person a = add_ok(sid, "{\"email\":\"a@x.org\"}", NULL, "registered");
	struct person w[4];
	for (int i = 0; i < 4; i++) {
		char attrs[64];
		snprintf(attrs, sizeof(attrs), "{\"email\":\"w%d@x.org\"}", i);
		w[i] = add_ok(sid, attrs, NULL, "waitlisted");
	}
	for (int i = 0; i < 4; i++)
		assert_state(sid, &w[i], "waitlisted", i + 1);

	struct t_resp r;
	patch_session(&r, &org, sid, "{\"capacity\":3}");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_eq(iattr(&r, "capacity"), 3);
	cr_assert_eq(iattr(&r, "registrants_count"), 3);
	cr_assert_eq(iattr(&r, "waitlist_count"), 2);
	cr_assert_eq(iattr(&r, "pending_count"), 0);
	cr_assert_str_eq(sattr(&r, "title"), "Raise", "PATCH is partial");
	t_resp_free(&r);
	assert_state(sid, &a, "registered", -1);
	assert_state(sid, &w[0], "registered", -1);
	assert_state(sid, &w[1], "registered", -1);
	assert_state(sid, &w[2], "waitlisted", 1);
	assert_state(sid, &w[3], "waitlisted", 2);

	/* Unlimited: everybody waiting gets a seat. */
	patch_session(&r, &org, sid, "{\"capacity\":null}");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_eq(iattr(&r, "capacity"), -1);
	t_resp_free(&r);
	counts(sid, c);
	cr_assert_str_eq(c, "5/0/0");
	assert_state(sid, &w[3], "registered", -1);
	t_check_invariants(db);
}

Test(lifecycle, capacity_raise_in_manual_session_promotes_to_pending)
{
	char sid[37], c[64];
	t_session_new(base, org.token,
	              "{\"title\":\"Manual raise\",\"capacity\":1,\"waitlist\":true,"
	              "\"approval\":\"manual\"}",
	              sid);
	add_ok(sid, "{\"email\":\"p@x.org\"}", NULL, "pending_approval");
	struct person w0 = add_ok(sid, "{\"email\":\"w0@x.org\"}", NULL, "waitlisted");
	struct person w1 = add_ok(sid, "{\"email\":\"w1@x.org\"}", NULL, "waitlisted");
	struct t_resp r;
	patch_session(&r, &org, sid, "{\"capacity\":2}");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	counts(sid, c);
	cr_assert_str_eq(c, "0/1/2");
	assert_state(sid, &w0, "pending_approval", -1);
	assert_state(sid, &w1, "waitlisted", 1);
	t_check_invariants(db);
}

Test(lifecycle, capacity_below_registrants_is_refused)
{
	char sid[37], c[64];
	t_session_new(base, org.token,
	              "{\"title\":\"Shrink\",\"capacity\":3,\"approval\":\"manual\"}", sid);
	add_ok(sid, "{\"email\":\"r@x.org\"}", "{\"auto_approve\":true}", "registered");
	add_ok(sid, "{\"email\":\"p@x.org\"}", NULL, "pending_approval");
	struct person w =
	    add_ok(sid, "{\"email\":\"w@x.org\"}", "{\"waitlist\":true}", "waitlisted");
	struct t_resp r;
	static const char *const too_small[] = {"{\"capacity\":1}", "{\"capacity\":0}"};
	for (int i = 0; i < 2; i++) {
		patch_session(&r, &org, sid, too_small[i]);
		cr_assert_eq(r.status, 422, "%s: %ld %s", too_small[i], r.status, r.body);
		cr_assert_str_eq(err_code(&r, 0), "capacity_below_registrants");
		cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/capacity");
		t_resp_free(&r);
	}
	call(&r, &org, "GET", NULL, "/v1/sessions/%s", sid);
	cr_assert_eq(iattr(&r, "capacity"), 3, "a refused PATCH changed the capacity");
	t_resp_free(&r);
	/* Registered + pending exactly: allowed; the waitlisted person holds no seat. */
	patch_session(&r, &org, sid, "{\"capacity\":2,\"title\":\"Shrunk\"}");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_eq(iattr(&r, "capacity"), 2);
	cr_assert_str_eq(sattr(&r, "title"), "Shrunk");
	t_resp_free(&r);
	counts(sid, c);
	cr_assert_str_eq(c, "1/1/1");
	assert_state(sid, &w, "waitlisted", 1);
	/* Another organization's session is not found. */
	patch_session(&r, &other, sid, "{\"capacity\":10}");
	cr_assert_eq(r.status, 404, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	t_check_invariants(db);
}

Test(lifecycle, a_held_track_cannot_be_removed)
{
	char sid[37], code[48];
	t_session_new(base, org.token,
	              "{\"title\":\"Tracks\",\"approval\":\"manual\",\"tracks\":"
	              "[{\"id\":1,\"name\":\"Morning\"},{\"id\":2,\"name\":\"Evening\"}]}",
	              sid);
	struct person m = add_ok(sid, "{\"email\":\"m@x.org\",\"track_id\":1}",
	                         "{\"auto_approve\":true}", "registered");
	struct person e1 = add_ok(sid, "{\"email\":\"e1@x.org\",\"track_id\":2}",
	                          "{\"auto_approve\":true}", "registered");
	struct person e2 =
	    add_ok(sid, "{\"email\":\"e2@x.org\",\"track_id\":2}", NULL, "pending_approval");
	const char *only_morning = "{\"tracks\":[{\"id\":1,\"name\":\"Morning\"}]}";
	struct t_resp r;
	patch_session(&r, &org, sid, only_morning);
	cr_assert_eq(r.status, 422, "%ld %s", r.status, r.body);
	cr_assert_str_eq(err_code(&r, 0), "validation_failed");
	cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/tracks");
	t_resp_free(&r);

	/* Cancelled and denied people do not hold their track. */
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, e1.id);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	patch_session(&r, &org, sid, only_morning);
	cr_assert_eq(r.status, 422, "e2 still holds track 2: %ld %s", r.status, r.body);
	t_resp_free(&r);
	cr_assert_eq(set_status(sid, e2.id, "denied", code), 200, "%s", code);
	patch_session(&r, &org, sid, only_morning);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_eq(json_array_size(json_object_get(attrs_of(&r), "tracks")), 1);
	t_resp_free(&r);
	patch_session(&r, &org, sid, "{\"title\":\"Renamed\"}");
	cr_assert_eq(r.status, 200);
	cr_assert_eq(json_array_size(json_object_get(attrs_of(&r), "tracks")), 1,
	             "a PATCH without tracks changed them");
	t_resp_free(&r);
	struct person late = add(sid, "{\"email\":\"late@x.org\",\"track_id\":2}", NULL);
	cr_assert_eq(late.http, 422);
	cr_assert_str_eq(late.status, "unknown_track");

	/* null tracks are none, as at creation: refused while m holds track 1. */
	patch_session(&r, &org, sid, "{\"tracks\":null}");
	cr_assert_eq(r.status, 422, "%ld %s", r.status, r.body);
	cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/tracks");
	t_resp_free(&r);
	cr_assert_eq(set_status(sid, m.id, "cancelled", code), 200, "%s", code);
	patch_session(&r, &org, sid, "{\"tracks\":null}");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert(json_is_array(json_object_get(attrs_of(&r), "tracks")), "%s", r.body);
	cr_assert_eq(json_array_size(json_object_get(attrs_of(&r), "tracks")), 0);
	t_resp_free(&r);

	patch_session(&r, &org, sid,
	              "{\"tracks\":[{\"id\":1,\"name\":\"A\"},{\"id\":1,\"name\":\"B\"}]}");
	cr_assert_eq(r.status, 422, "duplicate track ids: %ld", r.status);
	cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/tracks/1/id");
	t_resp_free(&r);
	t_check_invariants(db);
}

Test(lifecycle, delete_session_unless_a_job_is_processing)
{
	char sid[37], busy[37], job[37];
	t_session_new(base, org.token, "{\"title\":\"Gone\"}", sid);
	add_ok(sid, "{\"email\":\"g@x.org\"}", NULL, "registered");
	struct t_resp r;
	call(&r, &other, "DELETE", NULL, "/v1/sessions/%s", sid);
	cr_assert_eq(r.status, 404, "another organization deleted it: %ld", r.status);
	t_resp_free(&r);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s", sid);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	char msg[96];
	snprintf(msg, sizeof(msg), "Session %s deleted", sid);
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(r.json, "meta"), "message")), msg);
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions/%s", sid);
	cr_assert_eq(r.status, 404);
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people", sid);
	cr_assert_eq(r.status, 404);
	t_resp_free(&r);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s", sid);
	cr_assert_eq(r.status, 404, "deleted twice: %ld", r.status);
	t_resp_free(&r);

	/* With no worker running, a job stays processing. */
	t_session_new(base, org.token, "{\"title\":\"Busy\"}", busy);
	cr_assert_eq(t_proc_stop(&worker, SIGTERM, 30000), 0);
	cr_assert_eq(post_job(busy, "", "[{\"attributes\":{\"email\":\"b@x.org\"}}]", job, NULL),
	             202);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s", busy);
	cr_assert_eq(r.status, 409, "%ld %s", r.status, r.body);
	cr_assert_str_eq(err_code(&r, 0), "job_in_progress");
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions/%s", busy);
	cr_assert_eq(r.status, 200, "a refused DELETE removed the session");
	t_resp_free(&r);
	t_worker_start(&worker, env);
	job_wait(job, &r);
	cr_assert_str_eq(sattr(&r, "status"), "ended");
	t_resp_free(&r);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s", busy);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/jobs/%s", job);
	cr_assert_eq(r.status, 404, "the session's job outlived it");
	t_resp_free(&r);
	t_check_invariants(db);
}

/* ---- people ---- */

Test(lifecycle, people_by_email_and_or_external_id)
{
	char sid[37], got[256];
	t_session_new(base, org.token, "{\"title\":\"Ids\"}", sid);
	struct t_resp r;
	struct person ext = add_ok(sid, "{\"external_id\":\"crm-1\"}", NULL, "registered");
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people/%s", sid, ext.id);
	cr_assert(json_is_null(json_object_get(attrs_of(&r), "email")));
	cr_assert_str_eq(sattr(&r, "external_id"), "crm-1");
	t_resp_free(&r);
	add_ok(sid, "{\"email\":\"Both@X.org\",\"external_id\":\"crm-2\"}", NULL, "registered");
	add_ok(sid, "{\"email\":\"solo@x.org\"}", NULL, "registered");

	static const struct {
		const char *attrs, *meta;
	} dup[] = {
	    {"{\"external_id\":\"crm-1\"}", NULL},
	    {"{\"email\":\"both@x.ORG\"}", NULL},
	    {"{\"email\":\"new@x.org\",\"external_id\":\"crm-2\"}", NULL},
	    {"{\"email\":\"BOTH@x.org\",\"external_id\":\"crm-9\"}", NULL},
	    {"{\"email\":\"solo@x.org\",\"external_id\":\"crm-1\"}", NULL},
	    /* Two people named: no override can make them one. */
	    {"{\"email\":\"solo@x.org\",\"external_id\":\"crm-1\"}",
	     "{\"override_duplicates\":true}"},
	};
	for (size_t i = 0; i < sizeof(dup) / sizeof(dup[0]); i++) {
		struct person p = add(sid, dup[i].attrs, dup[i].meta);
		cr_assert_eq(p.http, 409, "%s: %ld %s", dup[i].attrs, p.http, p.status);
		cr_assert_str_eq(p.status, "already_registered", "%s", dup[i].attrs);
	}
	/* external_id is compared exactly. */
	struct person upper = add_ok(sid, "{\"external_id\":\"CRM-1\"}", NULL, "registered");
	cr_assert_str_neq(upper.id, ext.id);
	struct person none = add(sid, "{\"first_name\":\"Nobody\"}", NULL);
	cr_assert_eq(none.http, 422);
	cr_assert_str_eq(none.status, "validation_failed");
	/* override_duplicates finds the person by external_id. */
	struct person again = add_ok(sid, "{\"external_id\":\"crm-1\",\"first_name\":\"Ada\"}",
	                             "{\"override_duplicates\":true}", "registered");
	cr_assert_str_eq(again.id, ext.id);

	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people", sid);
	cr_assert_eq(meta_of(&r, "record_count"), 4);
	list_of(&r, "external_id", got, sizeof(got));
	cr_assert_str_eq(got, "crm-1 crm-2 - CRM-1");
	list_of(&r, "first_name", got, sizeof(got));
	cr_assert_str_eq(got, "Ada - - -");
	t_resp_free(&r);
	t_check_invariants(db);
}

Test(lifecycle, people_filters)
{
	char sid[37], got[256];
	t_session_new(base, org.token,
	              "{\"title\":\"Filters\",\"approval\":\"manual\",\"tracks\":"
	              "[{\"id\":1,\"name\":\"One\"},{\"id\":2,\"name\":\"Two\"}]}",
	              sid);
	add_ok(sid, "{\"email\":\"a@x.org\",\"external_id\":\"ext-a\",\"track_id\":1}",
	       "{\"auto_approve\":true}", "registered");
	struct person b =
	    add_ok(sid, "{\"email\":\"B@x.org\",\"track_id\":2,\"center_id\":\"c-7\"}", NULL,
	           "pending_approval");
	add_ok(sid, "{\"external_id\":\"ext-c\",\"track_id\":1}", NULL, "pending_approval");
	add_ok(sid, "{\"email\":\"d@x.org\"}", "{\"waitlist\":true}", "waitlisted");

	static const struct {
		const char *query, *expect; /* the external_id or email of each, in order */
		long count;
	} cases[] = {
	    {"filter[email]=b@X.ORG", "B@x.org", 1},
	    {"filter[external_id]=ext-c", "-", 1},
	    {"filter[external_id]=EXT-C", "", 0},
	    {"filter[registration_status]=pending_approval", "B@x.org -", 2},
	    {"filter[registration_status]=waitlisted", "d@x.org", 1},
	    {"filter[track_id]=1", "a@x.org -", 2},
	    {"filter[track_id]=1&filter[registration_status]=registered", "a@x.org", 1},
	    {"filter[track_id]=3", "", 0},
	    {"filter[registration_status]=pending_approval&page[size]=1&page[number]=1", "-", 2},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct t_resp r;
		call(&r, &org, "GET", NULL, "/v1/sessions/%s/people?%s", sid, cases[i].query);
		cr_assert_eq(r.status, 200, "%s: %ld %s", cases[i].query, r.status, r.body);
		list_of(&r, "email", got, sizeof(got));
		cr_assert_str_eq(got, cases[i].expect, "%s", cases[i].query);
		cr_assert_eq(meta_of(&r, "record_count"), cases[i].count, "%s", cases[i].query);
		t_resp_free(&r);
	}
	struct t_resp r;
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people?filter[email]=b@x.org", sid);
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "data"), 0), "id")),
	                 b.id);
	t_resp_free(&r);

	static const char *const bad[] = {"filter[registration_status]=gone", "filter[track_id]=x",
	                                  "filter[track_id]=-1", "filter[name]=a"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		call(&r, &org, "GET", NULL, "/v1/sessions/%s/people?%s", sid, bad[i]);
		cr_assert_eq(r.status, 400, "%s: %ld", bad[i], r.status);
		cr_assert_str_eq(err_code(&r, 0), "invalid_parameter", "%s", bad[i]);
		t_resp_free(&r);
	}
	call(&r, &other, "GET", NULL, "/v1/sessions/%s/people?filter[email]=b@x.org", sid);
	cr_assert_eq(r.status, 404, "another organization filtered them: %ld", r.status);
	t_resp_free(&r);
}

Test(lifecycle, get_one_person)
{
	char sid[37], theirs[37], random[37];
	t_session_new(base, org.token,
	              "{\"title\":\"One\",\"tracks\":[{\"id\":4,\"name\":\"Four\"}]}", sid);
	struct person p = add_ok(sid,
	                         "{\"email\":\"one@x.org\",\"external_id\":\"e-1\",\"track_id\":4,"
	                         "\"center_id\":\"paris\"}",
	                         NULL, "registered");
	struct t_resp r;
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people/%s", sid, p.id);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_str_eq(sattr(&r, "email"), "one@x.org");
	cr_assert_str_eq(sattr(&r, "external_id"), "e-1");
	cr_assert_eq(iattr(&r, "track_id"), 4);
	cr_assert_str_eq(sattr(&r, "center_id"), "paris");
	cr_assert_str_eq(sattr(&r, "registration_status"), "registered");
	cr_assert(json_is_null(json_object_get(attrs_of(&r), "waitlist_position")));
	cr_assert_geq(strlen(sattr(&r, "updated_at")), 20, "updated_at %s",
	              sattr(&r, "updated_at"));
	cr_assert_eq(strncmp(sattr(&r, "join_url"), JOIN_BASE, strlen(JOIN_BASE)), 0, "%s",
	             sattr(&r, "join_url"));
	t_resp_free(&r);

	/* Another organization's person, through its session or through ours. */
	t_session_new(base, other.token, "{\"title\":\"Theirs\"}", theirs);
	char url[256];
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, theirs);
	t_http(&r, "POST", url, other.token,
	       "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"t@x.org\"}}}", NULL);
	cr_assert_eq(r.status, 201);
	char tid[37];
	snprintf(tid, sizeof(tid), "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people/%s", theirs, tid);
	cr_assert_eq(r.status, 404, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people/%s", sid, tid);
	cr_assert_eq(r.status, 404, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	t_uuid(random);
	call(&r, &org, "GET", NULL, "/v1/sessions/%s/people/%s", sid, random);
	cr_assert_eq(r.status, 404);
	cr_assert_str_eq(err_code(&r, 0), "not_found");
	t_resp_free(&r);
}

/* A person of a new session (manual approval, unlimited, with a waitlist) now in state. */
static struct person person_in(const char *state, char sid[37])
{
	char code[48];
	t_session_new(base, org.token,
	              "{\"title\":\"Transition\",\"approval\":\"manual\",\"waitlist\":true}", sid);
	const char *attrs = "{\"email\":\"t@x.org\"}";
	struct person p;
	if (strcmp(state, "registered") == 0 || strcmp(state, "cancelled") == 0)
		p = add_ok(sid, attrs, "{\"auto_approve\":true}", "registered");
	else if (strcmp(state, "waitlisted") == 0)
		p = add_ok(sid, attrs, "{\"waitlist\":true}", "waitlisted");
	else
		p = add_ok(sid, attrs, NULL, "pending_approval");
	if (strcmp(state, "denied") == 0 || strcmp(state, "cancelled") == 0)
		cr_assert_eq(set_status(sid, p.id, state, code), 200, "to %s: %s", state, code);
	return p;
}

Test(lifecycle, patch_registration_status_transitions)
{
	static const struct {
		const char *from, *to;
		long http; /* 200: the person is then `to`; else unchanged */
		const char *code;
	} table[] = {
	    {"pending_approval", "registered", 200, NULL},
	    {"pending_approval", "denied", 200, NULL},
	    {"pending_approval", "cancelled", 200, NULL},
	    {"pending_approval", "pending_approval", 200, NULL},
	    {"pending_approval", "waitlisted", 409, "invalid_transition"},
	    {"waitlisted", "registered", 200, NULL},
	    {"waitlisted", "cancelled", 200, NULL},
	    {"waitlisted", "waitlisted", 200, NULL},
	    {"waitlisted", "denied", 409, "invalid_transition"},
	    {"waitlisted", "pending_approval", 409, "invalid_transition"},
	    {"registered", "cancelled", 200, NULL},
	    {"registered", "registered", 200, NULL},
	    {"registered", "denied", 409, "invalid_transition"},
	    {"registered", "pending_approval", 409, "invalid_transition"},
	    {"registered", "waitlisted", 409, "invalid_transition"},
	    {"denied", "cancelled", 200, NULL},
	    {"denied", "denied", 200, NULL},
	    {"denied", "registered", 409, "invalid_transition"},
	    {"denied", "pending_approval", 409, "invalid_transition"},
	    {"cancelled", "cancelled", 200, NULL},
	    {"cancelled", "registered", 409, "invalid_transition"},
	    {"cancelled", "pending_approval", 409, "invalid_transition"},
	    {"cancelled", "waitlisted", 409, "invalid_transition"},
	    {"cancelled", "denied", 409, "invalid_transition"},
	};
	for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
		char sid[37], code[48];
		struct person p = person_in(table[i].from, sid);
		long http = set_status(sid, p.id, table[i].to, code);
		cr_assert_eq(http, table[i].http, "%s -> %s: %ld %s", table[i].from, table[i].to,
		             http, code);
		if (table[i].code)
			cr_assert_str_eq(code, table[i].code, "%s -> %s", table[i].from,
			                 table[i].to);
		else
			cr_assert_str_eq(code, table[i].to, "%s -> %s", table[i].from, table[i].to);
		struct state s = state_of(sid, p.id);
		cr_assert_str_eq(s.status, http == 200 ? table[i].to : table[i].from, "%s -> %s",
		                 table[i].from, table[i].to);
	}
	t_check_invariants(db);
}

Test(lifecycle, waitlisted_to_registered_needs_a_free_seat)
{
	char sid[37], code[48], c[64];
	t_session_new(base, org.token, "{\"title\":\"Seat\",\"capacity\":1,\"waitlist\":true}",
	              sid);
	struct person a = add_ok(sid, "{\"email\":\"a@x.org\"}", NULL, "registered");
	struct person w = add_ok(sid, "{\"email\":\"w@x.org\"}", NULL, "waitlisted");
	cr_assert_eq(set_status(sid, w.id, "registered", code), 422);
	cr_assert_str_eq(code, "session_full");
	assert_state(sid, &w, "waitlisted", 1);
	counts(sid, c);
	cr_assert_str_eq(c, "1/1/0");
	/* A seat frees: the head of the waiting list takes it at once. */
	cr_assert_eq(set_status(sid, a.id, "cancelled", code), 200, "%s", code);
	assert_state(sid, &w, "registered", -1);
	t_check_invariants(db);
}

Test(lifecycle, patch_person_attributes)
{
	char sid[37], code[48], random[37];
	t_session_new(base, org.token,
	              "{\"title\":\"Attrs\",\"tracks\":[{\"id\":1,\"name\":\"A\"}]}", sid);
	struct person p =
	    add_ok(sid, "{\"email\":\"p@x.org\",\"external_id\":\"ext-p\"}", NULL, "registered");
	add_ok(sid, "{\"email\":\"q@x.org\",\"external_id\":\"ext-q\"}", NULL, "registered");
	static const struct {
		const char *attrs;
		long http;
		const char *code;
	} refused[] = {
	    {"{\"email\":\"Q@X.org\"}", 409, "already_registered"},
	    {"{\"external_id\":\"ext-q\"}", 409, "already_registered"},
	    /* Checked whole before anything is written: no cancellation either. */
	    {"{\"registration_status\":\"cancelled\",\"external_id\":\"ext-q\"}", 409,
	     "already_registered"},
	    {"{\"email\":null,\"external_id\":null}", 422, "validation_failed"},
	    {"{\"track_id\":9}", 422, "unknown_track"},
	    {"{\"registration_status\":\"gone\"}", 422, "validation_failed"},
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		long http = patch_person(sid, p.id, refused[i].attrs, code);
		cr_assert_eq(http, refused[i].http, "%s: %ld %s", refused[i].attrs, http, code);
		cr_assert_str_eq(code, refused[i].code, "%s", refused[i].attrs);
	}
	assert_state(sid, &p, "registered", -1);

	struct t_resp r;
	call(&r, &org, "PATCH",
	     "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":null,\"track_id\":1,"
	     "\"center_id\":\"lyon\",\"first_name\":\"Pat\"}}}",
	     "/v1/sessions/%s/people/%s", sid, p.id);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert(json_is_null(json_object_get(attrs_of(&r), "email")));
	cr_assert_str_eq(sattr(&r, "external_id"), "ext-p");
	cr_assert_eq(iattr(&r, "track_id"), 1);
	cr_assert_str_eq(sattr(&r, "center_id"), "lyon");
	cr_assert_str_eq(sattr(&r, "first_name"), "Pat");
	t_resp_free(&r);
	/* Its old address is free again; the new one is taken. */
	add_ok(sid, "{\"email\":\"P@x.org\"}", NULL, "registered");
	cr_assert_eq(patch_person(sid, p.id, "{\"email\":\"new@x.org\"}", code), 200, "%s", code);
	struct person dup = add(sid, "{\"email\":\"NEW@x.org\"}", NULL);
	cr_assert_eq(dup.http, 409);

	call(&r, &other, "PATCH", "{\"data\":{\"type\":\"people\",\"attributes\":{}}}",
	     "/v1/sessions/%s/people/%s", sid, p.id);
	cr_assert_eq(r.status, 404, "another organization changed them: %ld", r.status);
	t_resp_free(&r);
	t_uuid(random);
	cr_assert_eq(patch_person(sid, random, "{\"first_name\":\"X\"}", code), 404);
	t_check_invariants(db);
}

Test(lifecycle, delete_person_by_id_email_or_external_id)
{
	char sid[37], c[64], random[37];
	t_session_new(base, org.token, "{\"title\":\"Del\",\"capacity\":1,\"waitlist\":true}", sid);
	struct person a =
	    add_ok(sid, "{\"email\":\"a@x.org\",\"external_id\":\"ext-a\"}", NULL, "registered");
	struct person b = add_ok(sid, "{\"email\":\"b@x.org\"}", NULL, "waitlisted");
	struct person c3 = add_ok(sid, "{\"external_id\":\"ext-c\"}", NULL, "waitlisted");
	struct t_resp r;
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, a.id);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_str_eq(sattr(&r, "registration_status"), "cancelled");
	char updated[64];
	snprintf(updated, sizeof(updated), "%s", sattr(&r, "updated_at"));
	t_resp_free(&r);
	assert_state(sid, &b, "registered", -1);
	assert_state(sid, &c3, "waitlisted", 1);
	/* Again: answered as it stands, nothing changes. */
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, a.id);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_str_eq(sattr(&r, "registration_status"), "cancelled");
	cr_assert_str_eq(sattr(&r, "updated_at"), updated, "a repeated DELETE changed the person");
	t_resp_free(&r);
	counts(sid, c);
	cr_assert_str_eq(c, "1/1/0");

	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people?email=B@X.org", sid);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "data"), "id")),
	                 b.id);
	cr_assert_str_eq(sattr(&r, "registration_status"), "cancelled");
	t_resp_free(&r);
	assert_state(sid, &c3, "registered", -1);
	for (int i = 0; i < 2; i++) {
		call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people?external_id=ext-c", sid);
		cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
		cr_assert_str_eq(
		    json_string_value(json_object_get(json_object_get(r.json, "data"), "id")),
		    c3.id);
		cr_assert_str_eq(sattr(&r, "registration_status"), "cancelled");
		t_resp_free(&r);
	}
	counts(sid, c);
	cr_assert_str_eq(c, "0/0/0");

	static const char *const missing[] = {"people?email=nobody@x.org",
	                                      "people?external_id=EXT-C", NULL};
	for (int i = 0; missing[i]; i++) {
		call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/%s", sid, missing[i]);
		cr_assert_eq(r.status, 404, "%s: %ld", missing[i], r.status);
		t_resp_free(&r);
	}
	t_uuid(random);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, random);
	cr_assert_eq(r.status, 404);
	t_resp_free(&r);
	call(&r, &other, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, a.id);
	cr_assert_eq(r.status, 404, "another organization cancelled them: %ld", r.status);
	t_resp_free(&r);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people", sid);
	cr_assert_eq(r.status, 400, "%ld %s", r.status, r.body);
	cr_assert_str_eq(err_code(&r, 0), "invalid_parameter");
	t_resp_free(&r);
	t_check_invariants(db);
}

Test(lifecycle, registering_again_is_the_same_person)
{
	char sid[37], manual[37], full[37], code[48], job[37], got[256], ids[2][37];
	t_session_new(base, org.token, "{\"title\":\"Again\"}", sid);
	struct person r1 =
	    add_ok(sid, "{\"email\":\"r@x.org\",\"first_name\":\"One\"}", NULL, "registered");
	cr_assert_eq(set_status(sid, r1.id, "cancelled", code), 200);
	struct person r2 = add_ok(sid, "{\"email\":\"R@X.org\"}", NULL, "registered");
	cr_assert_str_eq(r2.id, r1.id, "a cancelled person registered anew is a new person");
	/* By bulk too. */
	cr_assert_eq(set_status(sid, r1.id, "cancelled", code), 200);
	cr_assert_eq(post_job(sid, "", "[{\"attributes\":{\"email\":\"r@x.org\"}}]", job, NULL),
	             202);
	struct t_resp r;
	job_wait(job, &r);
	t_resp_free(&r);
	job_tasks(job, got, sizeof(got), ids);
	cr_assert_str_eq(got, "0:succeeded");
	cr_assert_str_eq(ids[0], r1.id);
	assert_state(sid, &r1, "registered", -1);

	/* Denied, then registered again: the same person, pending again. */
	t_session_new(base, org.token, "{\"title\":\"Again manual\",\"approval\":\"manual\"}",
	              manual);
	struct person d1 = add_ok(manual, "{\"external_id\":\"d-1\"}", NULL, "pending_approval");
	cr_assert_eq(set_status(manual, d1.id, "denied", code), 200);
	struct person d2 = add_ok(manual, "{\"external_id\":\"d-1\"}", NULL, "pending_approval");
	cr_assert_str_eq(d2.id, d1.id);

	/* No seat for them: session_full, and they stay cancelled. */
	t_session_new(base, org.token, "{\"title\":\"Again full\",\"capacity\":1}", full);
	struct person f = add_ok(full, "{\"email\":\"f@x.org\"}", NULL, "registered");
	cr_assert_eq(set_status(full, f.id, "cancelled", code), 200);
	add_ok(full, "{\"email\":\"g@x.org\"}", NULL, "registered");
	struct person f2 = add(full, "{\"email\":\"f@x.org\"}", NULL);
	cr_assert_eq(f2.http, 422);
	cr_assert_str_eq(f2.status, "session_full");
	assert_state(full, &f, "cancelled", -1);
	t_check_invariants(db);
}

Test(lifecycle, explicit_waitlist_with_free_seats)
{
	char sid[37], job[37], got[256], ids[2][37], c[64];
	t_session_new(base, org.token, "{\"title\":\"Explicit\",\"capacity\":10}", sid);
	struct person a =
	    add_ok(sid, "{\"email\":\"a@x.org\"}", "{\"waitlist\":true}", "waitlisted");
	assert_state(sid, &a, "waitlisted", 1);
	struct t_resp r;
	cr_assert_eq(post_job(sid, "\"waitlist\":true",
	                      "[{\"attributes\":{\"email\":\"b@x.org\"}},"
	                      "{\"attributes\":{\"external_id\":\"c\"}}]",
	                      job, &r),
	             202);
	cr_assert(json_is_true(json_object_get(attrs_of(&r), "waitlist")));
	cr_assert_str_eq(sattr(&r, "action"), "register");
	t_resp_free(&r);
	job_wait(job, &r);
	cr_assert_str_eq(sattr(&r, "status"), "ended");
	cr_assert(json_is_true(json_object_get(attrs_of(&r), "waitlist")));
	t_resp_free(&r);
	job_tasks(job, got, sizeof(got), ids);
	cr_assert_str_eq(got, "0:succeeded 1:succeeded");
	for (int i = 0; i < 2; i++) {
		struct state s = state_of(sid, ids[i]);
		cr_assert_str_eq(s.status, "waitlisted");
		cr_assert_eq(s.position, i + 2);
	}
	/* Without it, a newcomer takes a free seat. */
	add_ok(sid, "{\"email\":\"d@x.org\"}", NULL, "registered");
	struct person e = add(sid, "{\"email\":\"e@x.org\"}", "{\"waitlist\":\"yes\"}");
	cr_assert_eq(e.http, 422);
	cr_assert_str_eq(e.status, "validation_failed");
	counts(sid, c);
	cr_assert_str_eq(c, "1/3/0");
	t_check_invariants(db);
}

/* ---- bulk actions ---- */

/* Posts and waits for a bulk action job; checks its counters and action. */
static void action_job(const char *sid, const char *action, const char *tasks, long success,
                       long fail, char job[37])
{
	char members[64];
	struct t_resp r;
	snprintf(members, sizeof(members), "\"action\":\"%s\"", action);
	cr_assert_eq(post_job(sid, members, tasks, job, &r), 202, "%s: %s", action, r.body);
	cr_assert_str_eq(sattr(&r, "action"), action);
	t_resp_free(&r);
	job_wait(job, &r);
	cr_assert_str_eq(sattr(&r, "action"), action);
	cr_assert_str_eq(sattr(&r, "status"), fail ? "failed" : "ended");
	cr_assert_eq(iattr(&r, "total_items"), success + fail);
	cr_assert_eq(iattr(&r, "total_processed_items"), success + fail);
	cr_assert_eq(iattr(&r, "total_success"), success);
	cr_assert_eq(iattr(&r, "total_fail"), fail);
	t_resp_free(&r);
}

Test(lifecycle, bulk_approve_deny_cancel)
{
	char sid[37], job[37], got[512], ids[8][37], c[64];
	t_session_new(base, org.token,
	              "{\"title\":\"Actions\",\"capacity\":3,\"waitlist\":true,"
	              "\"approval\":\"manual\"}",
	              sid);
	struct person p0 = add_ok(sid, "{\"email\":\"p0@x.org\"}", NULL, "pending_approval");
	struct person p1 = add_ok(sid, "{\"email\":\"p1@x.org\",\"external_id\":\"ext-p1\"}", NULL,
	                          "pending_approval");
	struct person p2 = add_ok(sid, "{\"email\":\"p2@x.org\"}", NULL, "pending_approval");
	struct person w[5];
	for (int i = 0; i < 5; i++) {
		char attrs[64];
		snprintf(attrs, sizeof(attrs), "{\"email\":\"w%d@x.org\"}", i);
		w[i] = add_ok(sid, attrs, NULL, "waitlisted");
	}

	action_job(sid, "approve",
	           "[{\"attributes\":{\"email\":\"P0@x.org\",\"reference\":\"r0\"}},"
	           "{\"attributes\":{\"external_id\":\"ext-p1\"}},"
	           "{\"attributes\":{\"email\":\"nobody@x.org\"}},"
	           "{\"attributes\":{\"email\":\"w0@x.org\"}},"
	           "{\"attributes\":{\"email\":\"p2@x.org\",\"external_id\":\"ext-p1\"}}]",
	           2, 3, job);
	job_tasks(job, got, sizeof(got), ids);
	cr_assert_str_eq(got, "0:succeeded 1:succeeded 2:failed:person_not_found "
	                      "3:failed:invalid_transition 4:failed:person_not_found");
	cr_assert_str_eq(ids[0], p0.id);
	cr_assert_str_eq(ids[1], p1.id);
	assert_state(sid, &p0, "registered", -1);
	assert_state(sid, &p1, "registered", -1);
	assert_state(sid, &p2, "pending_approval", -1);
	assert_state(sid, &w[0], "waitlisted", 1);

	/* A denial frees a seat: the head of the list takes it, pending approval. */
	action_job(sid, "deny",
	           "[{\"attributes\":{\"email\":\"p2@x.org\"}},"
	           "{\"attributes\":{\"email\":\"p0@x.org\"}}]",
	           1, 1, job);
	job_tasks(job, got, sizeof(got), NULL);
	cr_assert_str_eq(got, "0:succeeded 1:failed:invalid_transition");
	assert_state(sid, &p2, "denied", -1);
	assert_state(sid, &w[0], "pending_approval", -1);
	assert_state(sid, &w[1], "waitlisted", 1);

	/*
	 * Cancellations, one by one in task order: p0's seat goes to w1, p1's
	 * to w2, then w3 (still waiting) is cancelled; w4 waits on.
	 */
	action_job(sid, "cancel",
	           "[{\"attributes\":{\"email\":\"p0@x.org\"}},"
	           "{\"attributes\":{\"external_id\":\"ext-p1\"}},"
	           "{\"attributes\":{\"email\":\"p0@x.org\"}},"
	           "{\"attributes\":{\"email\":\"w3@x.org\"}}]",
	           3, 1, job);
	job_tasks(job, got, sizeof(got), ids);
	cr_assert_str_eq(got, "0:succeeded 1:succeeded 2:failed:invalid_transition 3:succeeded");
	cr_assert_str_eq(ids[3], w[3].id);
	assert_state(sid, &p0, "cancelled", -1);
	assert_state(sid, &p1, "cancelled", -1);
	assert_state(sid, &w[1], "pending_approval", -1);
	assert_state(sid, &w[2], "pending_approval", -1);
	assert_state(sid, &w[3], "cancelled", -1);
	assert_state(sid, &w[4], "waitlisted", 1);
	counts(sid, c);
	cr_assert_str_eq(c, "0/1/3");

	/* Action tasks name a person and nothing else; the action is one of four. */
	struct t_resp r;
	cr_assert_eq(post_job(sid, "\"action\":\"approve\"",
	                      "[{\"attributes\":{\"email\":\"w4@x.org\",\"first_name\":\"W\"}},"
	                      "{\"attributes\":{\"reference\":\"r\"}}]",
	                      job, &r),
	             422);
	cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/tasks/0/attributes/first_name");
	cr_assert_str_eq(err_pointer(&r, 1), "/data/attributes/tasks/1/attributes/email");
	t_resp_free(&r);
	cr_assert_eq(post_job(sid, "\"action\":\"promote\"",
	                      "[{\"attributes\":{\"email\":\"w4@x.org\"}}]", job, &r),
	             422);
	cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/action");
	t_resp_free(&r);
	t_check_invariants(db);
}

/* ---- tracks ---- */

Test(lifecycle, unknown_track_single_and_bulk)
{
	char sid[37], plain[37], job[37], code[48];
	t_session_new(base, org.token,
	              "{\"title\":\"Known\",\"tracks\":[{\"id\":1,\"name\":\"A\"}]}", sid);
	struct person bad = add(sid, "{\"email\":\"a@x.org\",\"track_id\":2}", NULL);
	cr_assert_eq(bad.http, 422);
	cr_assert_str_eq(bad.status, "unknown_track");
	struct person ok =
	    add_ok(sid, "{\"email\":\"a@x.org\",\"track_id\":1}", NULL, "registered");
	cr_assert_eq(patch_person(sid, ok.id, "{\"track_id\":5}", code), 422);
	cr_assert_str_eq(code, "unknown_track");

	struct t_resp r;
	cr_assert_eq(post_job(sid, "",
	                      "[{\"attributes\":{\"email\":\"b@x.org\",\"track_id\":1}},"
	                      "{\"attributes\":{\"email\":\"c@x.org\",\"track_id\":5}},"
	                      "{\"attributes\":{\"email\":\"d@x.org\"}},"
	                      "{\"attributes\":{\"email\":\"e@x.org\",\"track_id\":7}}]",
	                      job, &r),
	             422);
	cr_assert_eq(json_array_size(json_object_get(r.json, "errors")), 2, "%s", r.body);
	cr_assert_str_eq(err_code(&r, 0), "unknown_track");
	cr_assert_str_eq(err_pointer(&r, 0), "/data/attributes/tasks/1/attributes/track_id");
	cr_assert_str_eq(err_code(&r, 1), "unknown_track");
	cr_assert_str_eq(err_pointer(&r, 1), "/data/attributes/tasks/3/attributes/track_id");
	t_resp_free(&r);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM jobs WHERE session_id = $1", 1, p), 0,
	             "a refused bulk request left a job");

	/* A session without tracks knows none. */
	t_session_new(base, org.token, "{\"title\":\"Plain\"}", plain);
	bad = add(plain, "{\"email\":\"a@x.org\",\"track_id\":1}", NULL);
	cr_assert_eq(bad.http, 422);
	cr_assert_str_eq(bad.status, "unknown_track");
	t_check_invariants(db);
}

/* ---- person.updated ---- */

struct hook_wait {
	t_receiver *rc;
	int n;
};

static bool hooks_in(void *ctx)
{
	struct hook_wait *w = ctx;
	return t_receiver_count(w->rc) >= w->n;
}

static int line_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * The events received as "<who>:<previous>><status>" sorted lines, where
 * who is the index of the person in ids; each body checked on the way.
 */
static void hook_summary(t_receiver *rc, const char *secret, char (*ids)[37], int nids, char *out,
                         size_t cap)
{
	char lines[16][96];
	int n = t_receiver_count(rc);
	cr_assert_leq(n, 16);
	for (int i = 0; i < n; i++) {
		struct t_hook h;
		cr_assert(t_receiver_get(rc, i, &h));
		cr_assert(t_hook_verify(&h, secret), "event %d not signed right", i);
		json_t *doc = json_loads(h.body, 0, NULL);
		cr_assert_not_null(doc, "%s", h.body);
		json_t *data = json_object_get(doc, "data");
		json_t *a = json_object_get(data, "attributes");
		const char *id = json_string_value(json_object_get(data, "id"));
		const char *prev = json_string_value(
		    json_object_get(json_object_get(data, "meta"), "previous_status"));
		const char *join = json_string_value(json_object_get(a, "join_url"));
		cr_assert_str_eq(json_string_value(json_object_get(doc, "type")), "person.updated");
		cr_assert_not_null(json_string_value(json_object_get(doc, "timestamp")));
		cr_assert_str_eq(json_string_value(json_object_get(data, "type")), "people");
		cr_assert(join && strncmp(join, JOIN_BASE, strlen(JOIN_BASE)) == 0, "join_url %s",
		          join ? join : "(none)");
		int who = -1;
		for (int k = 0; k < nids && id; k++)
			who = strcmp(ids[k], id) == 0 ? k : who;
		snprintf(lines[i], sizeof(lines[i]), "%d:%s>%s", who, prev ? prev : "null",
		         json_string_value(json_object_get(a, "registration_status")));
		json_decref(doc);
		free(h.body);
	}
	qsort(lines, (size_t)n, sizeof(lines[0]), line_cmp);
	size_t len = 0;
	out[0] = '\0';
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s", i ? " " : "",
		                        lines[i]);
}

Test(lifecycle, person_updated_webhooks)
{
	char sid[37], code[48], job[37], got[512], secret[128], ids[2][37];
	t_receiver *rc = t_receiver_start();
	struct t_resp r;
	char body[512];
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":[\"person.updated\"]}}}",
	         t_receiver_url(rc));
	call(&r, &org, "POST", body, "/v1/webhooks");
	cr_assert_eq(r.status, 201, "webhook: %ld %s", r.status, r.body);
	snprintf(secret, sizeof(secret), "%s", sattr(&r, "secret"));
	t_resp_free(&r);

	t_session_new(
	    base, org.token,
	    "{\"title\":\"Hooks\",\"capacity\":1,\"waitlist\":true,\"approval\":\"manual\"}", sid);
	/* Creating registrations: no event. */
	struct person a = add_ok(sid, "{\"email\":\"a@x.org\"}", NULL, "pending_approval");
	struct person b = add_ok(sid, "{\"email\":\"b@x.org\"}", NULL, "waitlisted");
	snprintf(ids[0], 37, "%s", a.id);
	snprintf(ids[1], 37, "%s", b.id);
	cr_assert_eq(set_status(sid, a.id, "registered", code), 200);           /* a approved */
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, a.id); /* a cancelled */
	cr_assert_eq(r.status, 200);
	t_resp_free(&r);
	assert_state(sid, &b, "pending_approval", -1); /* b promoted */
	action_job(sid, "approve", "[{\"attributes\":{\"email\":\"b@x.org\"}}]", 1, 0, job);
	/* a registers anew: waitlisted behind b's seat. */
	struct person a2 = add_ok(sid, "{\"email\":\"a@x.org\"}", NULL, "waitlisted");
	cr_assert_str_eq(a2.id, a.id);
	/* No change of status, no event. */
	cr_assert_eq(set_status(sid, b.id, "registered", code), 200, "%s", code);
	cr_assert_eq(patch_person(sid, b.id, "{\"first_name\":\"Bea\"}", code), 200, "%s", code);

	struct hook_wait w = {rc, 5};
	cr_assert(t_poll(hooks_in, &w, 30000), "got %d events of 5", t_receiver_count(rc));
	const char *p[] = {org.id};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM webhook_events WHERE organization_id = $1"
	                        " AND type = 'person.updated'",
	                        1, p),
	             5, "events other than the five changes were written");
	hook_summary(rc, secret, ids, 2, got, sizeof(got));
	cr_assert_str_eq(got, "0:cancelled>waitlisted 0:pending_approval>registered "
	                      "0:registered>cancelled 1:pending_approval>registered "
	                      "1:waitlisted>pending_approval");
	t_receiver_stop(rc);
	t_check_invariants(db);
}

Test(lifecycle, actions_are_not_bound_by_the_registration_window)
{
	char sid[37], code[48], job[37], got[256];
	t_session_new(base, org.token, "{\"title\":\"Window\",\"approval\":\"manual\"}", sid);
	struct person p0 = add_ok(sid, "{\"email\":\"p0@x.org\"}", NULL, "pending_approval");
	struct person p1 = add_ok(sid, "{\"email\":\"p1@x.org\"}", NULL, "pending_approval");
	struct person p2 = add_ok(sid, "{\"email\":\"p2@x.org\"}", NULL, "pending_approval");
	struct t_resp r;
	patch_session(&r, &org, sid, "{\"registration_closes_at\":\"2001-01-01T00:00:00Z\"}");
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	t_resp_free(&r);

	/* Registrations are refused, single or bulk, new or anew. */
	struct person late = add(sid, "{\"email\":\"late@x.org\"}", NULL);
	cr_assert_eq(late.http, 422, "%ld %s", late.http, late.status);
	cr_assert_str_eq(late.status, "registration_closed");
	cr_assert_eq(post_job(sid, "", "[{\"attributes\":{\"email\":\"late@x.org\"}}]", job, NULL),
	             202);
	job_wait(job, &r);
	cr_assert_str_eq(sattr(&r, "status"), "failed");
	t_resp_free(&r);
	job_tasks(job, got, sizeof(got), NULL);
	cr_assert_str_eq(got, "0:failed:registration_closed");

	/* Changes to the people it has are not. */
	action_job(sid, "approve", "[{\"attributes\":{\"email\":\"p0@x.org\"}}]", 1, 0, job);
	assert_state(sid, &p0, "registered", -1);
	cr_assert_eq(set_status(sid, p1.id, "denied", code), 200, "%s", code);
	call(&r, &org, "DELETE", NULL, "/v1/sessions/%s/people/%s", sid, p2.id);
	cr_assert_eq(r.status, 200, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	struct person again = add(sid, "{\"email\":\"p2@x.org\"}", NULL);
	cr_assert_eq(again.http, 422);
	cr_assert_str_eq(again.status, "registration_closed");
	assert_state(sid, &p2, "cancelled", -1);
	t_check_invariants(db);
}
