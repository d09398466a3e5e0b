/*
 * test_rules.c - docs/openapi.yaml's registration rules through the real API and
 * workers: capacity under concurrency, waitlist, manual approval with and
 * without auto_approve, the registration window, case-insensitive
 * duplicates and override_duplicates, for single and bulk registrations.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

static struct t_proc api, w1, w2;
static struct t_org org;
static PGconn *db;
static char base[64];

static void setup(void)
{
	db = t_db();
	t_org_new(&org);
	t_api_start(&api, NULL);
	t_worker_start(&w1, NULL);
	t_worker_start(&w2, NULL);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
}

static void teardown(void)
{
	t_proc_stop(&w1, SIGTERM, 20000);
	t_proc_stop(&w2, SIGTERM, 20000);
	t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(rules, .init = setup, .fini = teardown, .timeout = 180);

static void make_session(const char *attrs, char *id)
{
	t_session_new(base, org.token, attrs, id);
}

/* POSTs one person; returns the status, and the registration_status or code in what. */
static long register_one(const char *sid, const char *email, const char *meta, char *what,
                         size_t cap)
{
	char url[256], body[512];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"%s\","
	         "\"first_name\":\"N\"}}%s%s}",
	         email, meta ? ",\"meta\":" : "", meta ? meta : "");
	t_http(&r, "POST", url, org.token, body, NULL);
	long status = r.status;
	const char *s = NULL;
	if (status == 201)
		s = json_string_value(
		    json_object_get(json_object_get(json_object_get(r.json, "data"), "attributes"),
		                    "registration_status"));
	else
		s = json_string_value(
		    json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code"));
	snprintf(what, cap, "%s", s ? s : "?");
	t_resp_free(&r);
	return status;
}

struct job_wait {
	char url[384];
};

static bool terminal(void *ctx)
{
	struct job_wait *w = ctx;
	struct t_resp r;
	t_http(&r, "GET", w->url, org.token, NULL, NULL);
	const char *st = json_string_value(json_object_get(
	    json_object_get(json_object_get(r.json, "data"), "attributes"), "status"));
	bool done = st && strcmp(st, "processing") != 0;
	t_resp_free(&r);
	return done;
}

/* Posts a bulk job of n people named prefix<i>@example.com; returns its URL in w. */
static void post_bulk(const char *sid, const char *prefix, int n, const char *opts,
                      struct job_wait *w)
{
	static char body[65536];
	size_t len = (size_t)snprintf(
	    body, sizeof(body), "{\"data\":{\"type\":\"jobs\",\"attributes\":{%s%s\"tasks\":[",
	    opts ? opts : "", opts ? "," : "");
	for (int i = 0; i < n; i++)
		len += (size_t)snprintf(body + len, sizeof(body) - len,
		                        "%s{\"attributes\":{\"email\":\"%s%d@example.com\"}}",
		                        i ? "," : "", prefix, i);
	snprintf(body + len, sizeof(body) - len, "]}}}");
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	t_http(&r, "POST", url, org.token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	snprintf(w->url, sizeof(w->url), "%s%s", base, r.location);
	t_resp_free(&r);
}

Test(rules, capacity_holds_under_four_concurrent_jobs)
{
	char sid[37];
	make_session("{\"title\":\"Cap\",\"capacity\":20}", sid);
	struct job_wait w[4];
	const char *prefixes[4] = {"a", "b", "c", "d"};
	for (int i = 0; i < 4; i++)
		post_bulk(sid, prefixes[i], 50, NULL, &w[i]);
	for (int i = 0; i < 4; i++)
		cr_assert(t_poll(terminal, &w[i], 60000), "job %d did not finish", i);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p), 20);
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id "
	                        "WHERE j.session_id = $1 AND t.error_code = 'session_full'",
	                        1, p),
	             180);
	cr_assert_eq(
	    t_sql_long(db, "SELECT sum(total_success) FROM jobs WHERE session_id = $1", 1, p), 20);
	t_check_invariants(db);
}

Test(rules, waitlist_takes_who_does_not_fit)
{
	char sid[37], what[64];
	make_session("{\"title\":\"WL\",\"capacity\":2,\"waitlist\":true}", sid);
	struct job_wait w;
	post_bulk(sid, "wl", 5, NULL, &w);
	cr_assert(t_poll(terminal, &w, 30000));
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'registered'",
	                        1, p),
	             2);
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'waitlisted'",
	                        1, p),
	             3);
	cr_assert_eq(register_one(sid, "late@example.com", NULL, what, sizeof(what)), 201);
	cr_assert_str_eq(what, "waitlisted");
	struct t_resp r;
	char url[256];
	snprintf(url, sizeof(url), "%s/v1/sessions/%s", base, sid);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	json_t *a = json_object_get(json_object_get(r.json, "data"), "attributes");
	cr_assert_eq(json_integer_value(json_object_get(a, "registrants_count")), 2);
	cr_assert_eq(json_integer_value(json_object_get(a, "waitlist_count")), 4);
	t_resp_free(&r);
	t_check_invariants(db);
}

Test(rules, full_session_without_waitlist)
{
	char sid[37], what[64];
	make_session("{\"title\":\"Full\",\"capacity\":1}", sid);
	cr_assert_eq(register_one(sid, "one@example.com", NULL, what, sizeof(what)), 201);
	cr_assert_eq(register_one(sid, "two@example.com", NULL, what, sizeof(what)), 422);
	cr_assert_str_eq(what, "session_full");
	t_check_invariants(db);
}

Test(rules, manual_approval_and_auto_approve)
{
	char sid[37], what[64];
	make_session("{\"title\":\"Manual\",\"approval\":\"manual\"}", sid);
	cr_assert_eq(register_one(sid, "m1@example.com", NULL, what, sizeof(what)), 201);
	cr_assert_str_eq(what, "pending_approval");
	cr_assert_eq(
	    register_one(sid, "m2@example.com", "{\"auto_approve\":true}", what, sizeof(what)),
	    201);
	cr_assert_str_eq(what, "registered");
	struct job_wait w1j, w2j;
	post_bulk(sid, "mp", 3, NULL, &w1j);
	post_bulk(sid, "ma", 3, "\"auto_approve\":true", &w2j);
	cr_assert(t_poll(terminal, &w1j, 30000));
	cr_assert(t_poll(terminal, &w2j, 30000));
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'pending_approval'",
	                        1, p),
	             4);
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'registered'",
	                        1, p),
	             4);
	t_check_invariants(db);
}

Test(rules, registration_window)
{
	char closed[37], future[37], what[64];
	make_session("{\"title\":\"Closed\",\"registration_closes_at\":\"2001-01-01T00:00:00Z\"}",
	             closed);
	make_session("{\"title\":\"Later\",\"registration_opens_at\":\"2999-01-01T00:00:00Z\"}",
	             future);
	cr_assert_eq(register_one(closed, "w@example.com", NULL, what, sizeof(what)), 422);
	cr_assert_str_eq(what, "registration_closed");
	cr_assert_eq(register_one(future, "w@example.com", NULL, what, sizeof(what)), 422);
	cr_assert_str_eq(what, "registration_closed");
	struct job_wait w;
	post_bulk(closed, "wc", 3, NULL, &w);
	cr_assert(t_poll(terminal, &w, 30000));
	const char *p[] = {closed};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id "
	                        "WHERE j.session_id = $1 AND t.error_code = 'registration_closed'",
	                        1, p),
	             3);
	t_check_invariants(db);
}

Test(rules, duplicates_case_insensitive_and_override)
{
	char sid[37], what[64];
	make_session("{\"title\":\"Dup\"}", sid);
	cr_assert_eq(register_one(sid, "Case@Example.com", NULL, what, sizeof(what)), 201);
	cr_assert_eq(register_one(sid, "case@example.COM", NULL, what, sizeof(what)), 409);
	cr_assert_str_eq(what, "already_registered");
	cr_assert_eq(register_one(sid, "CASE@example.com", "{\"override_duplicates\":true}", what,
	                          sizeof(what)),
	             201);
	/* Bulk: the same address twice plus an existing one, with and without override. */
	struct job_wait w;
	post_bulk(sid, "case", 1, NULL, &w); /* case0@example.com, new */
	cr_assert(t_poll(terminal, &w, 30000));
	post_bulk(sid, "case", 1, NULL, &w); /* again: already_registered */
	cr_assert(t_poll(terminal, &w, 30000));
	post_bulk(sid, "CASE", 1, "\"override_duplicates\":true", &w);
	cr_assert(t_poll(terminal, &w, 30000));
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p), 2);
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id "
	                        "WHERE j.session_id = $1 AND t.error_code = 'already_registered'",
	                        1, p),
	             1);
	cr_assert_eq(
	    t_sql_long(db, "SELECT count(*) FROM jobs WHERE session_id = $1 AND status = 'ended'",
	               1, p),
	    2);
	t_check_invariants(db);
}

/*
 * One address however it is cased or composed, across Unicode
 * (email_key(), sql/migrations/001_baseline.sql): single and bulk registrations, and the
 * duplicate found by override_duplicates.
 */
Test(rules, duplicates_fold_case_across_unicode)
{
	char sid[37], what[64];
	make_session("{\"title\":\"Unicode\",\"capacity\":3}", sid);
	cr_assert_eq(register_one(sid, "ÉMILE@x.org", NULL, what, sizeof(what)), 201);
	cr_assert_eq(register_one(sid, "émile@x.org", NULL, what, sizeof(what)), 409);
	cr_assert_str_eq(what, "already_registered");
	/* e + U+0301 COMBINING ACUTE ACCENT: the same é, decomposed. */
	cr_assert_eq(register_one(sid, "e\xcc\x81mile@X.ORG", NULL, what, sizeof(what)), 409);
	cr_assert_str_eq(what, "already_registered");
	cr_assert_eq(register_one(sid, "STRASSE@x.org", NULL, what, sizeof(what)), 201);
	cr_assert_eq(
	    register_one(sid, "straße@x.org", "{\"override_duplicates\":true}", what, sizeof(what)),
	    201);

	/* Bulk: two spellings of one address in one job; the first is registered. */
	const char *body = "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":["
	                   "{\"attributes\":{\"email\":\"user@BÜCHER.de\",\"first_name\":\"A\"}},"
	                   "{\"attributes\":{\"email\":\"user@bücher.de\",\"first_name\":\"B\"}},"
	                   "{\"attributes\":{\"email\":\"ÉMILE@X.ORG\"}}]}}}";
	char url[256];
	struct t_resp r;
	struct job_wait w;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	t_http(&r, "POST", url, org.token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	snprintf(w.url, sizeof(w.url), "%s%s", base, r.location);
	t_resp_free(&r);
	cr_assert(t_poll(terminal, &w, 30000));
	const char *p[] = {sid};
	char *got = t_sql_text(db,
	                       "SELECT string_agg(t.idx || ':' || t.status || ':'"
	                       "  || coalesce(t.error_code, p.first_name), ' ' ORDER BY t.idx)"
	                       " FROM tasks t JOIN jobs j ON j.id = t.job_id"
	                       " LEFT JOIN people p ON p.id = t.person_id WHERE j.session_id = $1",
	                       1, p);
	cr_assert_str_eq(got,
	                 "0:succeeded:A 1:failed:already_registered 2:failed:already_registered");
	free(got);
	cr_assert_eq(t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p), 3);
	cr_assert_eq(t_sql_long(db, "SELECT registrants_count FROM sessions WHERE id = $1", 1, p),
	             3);
	t_check_invariants(db);
}
