/*
 * test_compat_zoom.c - Zoom's batch registration, a compatible API
 * (docs/compat/zoom.md), through the real API: Zoom's documentation example
 * as JSON and as multipart/form-data, registrants returned for emails
 * already registered, all-or-nothing capacity, every error code in Zoom's
 * shape, Idempotency-Key replay, and two batches racing for the last seats.
 * The registration is synchronous: no worker runs.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

static struct t_proc api;
static struct t_org org;
static PGconn *db;
static char base[64];

static void setup(void)
{
	db = t_db();
	t_org_new(&org);
	t_api_start(&api, NULL);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
}

static void teardown(void)
{
	t_check_invariants(db);
	t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(compat_zoom, .init = setup, .fini = teardown, .timeout = 180);

/* Zoom's documentation example of the request body. */
static const char example_registrants[] =
    "[{\"email\":\"jchill@example.com\",\"first_name\":\"Jill\",\"last_name\":\"Chill\"},"
    "{\"email\":\"bwillis@example.com\",\"first_name\":\"Bruce\",\"last_name\":\"Willis\"}]";

static void batch_url(char *out, size_t cap, const char *sid)
{
	snprintf(out, cap, "%s/v2/webinars/%s/batch_registrants", base, sid);
}

/* POSTs a JSON batch; the response into r (free it). */
static void post_json(struct t_resp *r, const char *sid, const char *body,
                      const char *const *headers)
{
	char url[256];
	batch_url(url, sizeof(url), sid);
	t_http(r, "POST", url, org.token, body, headers);
}

/* {"auto_approve":true,"registrants":<list>} */
static void post_list(struct t_resp *r, const char *sid, const char *list)
{
	char body[8192 + 64];
	snprintf(body, sizeof(body), "{\"auto_approve\":true,\"registrants\":%.8192s}", list);
	post_json(r, sid, body, NULL);
}

/* Asserts r is Zoom's error {"code": code, "message": message (or any when NULL)}. */
static void assert_zoom_error(const struct t_resp *r, long status, long code, const char *message)
{
	cr_assert_eq(r->status, status, "status %ld, want %ld: %s", r->status, status, r->body);
	cr_assert_not_null(r->json, "not JSON: %s", r->body);
	cr_assert_eq(json_integer_value(json_object_get(r->json, "code")), code, "%s", r->body);
	const char *m = json_string_value(json_object_get(r->json, "message"));
	cr_assert_not_null(m, "no message: %s", r->body);
	if (message)
		cr_assert_str_eq(m, message);
	const char *ct = t_resp_header(r, "Content-Type");
	cr_assert(ct && strncmp(ct, "application/json", 16) == 0, "content type %s", ct);
}

/* The person's id, email and join_url as the native API serves them. */
static void native_person(const char *sid, const char *email, char id[37], char *join, size_t cap)
{
	char url[512];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people?filter[email]=%s", base, sid, email);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *p = json_array_get(json_object_get(r.json, "data"), 0);
	cr_assert_not_null(p, "no person %s: %s", email, r.body);
	snprintf(id, 37, "%s", json_string_value(json_object_get(p, "id")));
	snprintf(join, cap, "%s",
	         json_string_value(json_object_get(json_object_get(p, "attributes"), "join_url")));
	t_resp_free(&r);
}

/* Checks registrant i of r against the native person with email. */
static void assert_registrant(const struct t_resp *r, size_t i, const char *sid, const char *email)
{
	json_t *list = json_object_get(r->json, "registrants");
	cr_assert(json_is_array(list), "%s", r->body);
	json_t *g = json_array_get(list, i);
	cr_assert_eq(json_object_size(g), 3, "registrant %zu: %s", i, r->body);
	char id[37], join[512];
	native_person(sid, email, id, join, sizeof(join));
	cr_assert_str_eq(json_string_value(json_object_get(g, "registrant_id")), id);
	cr_assert_str_eq(json_string_value(json_object_get(g, "email")), email);
	cr_assert_str_eq(json_string_value(json_object_get(g, "join_url")), join);
}

static long people_count(const char *sid)
{
	const char *p[] = {sid};
	return t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p);
}

Test(compat_zoom, documentation_example_as_json)
{
	char sid[37];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Zoom JSON\",\"capacity\":10}", sid);
	post_list(&r, sid, example_registrants);
	cr_assert_eq(r.status, 201, "%s", r.body);
	cr_assert(strncmp(t_resp_header(&r, "Content-Type"), "application/json", 16) == 0);
	cr_assert_eq(json_object_size(r.json), 1, "%s", r.body);
	cr_assert_eq(json_array_size(json_object_get(r.json, "registrants")), 2);
	assert_registrant(&r, 0, sid, "jchill@example.com");
	assert_registrant(&r, 1, sid, "bwillis@example.com");
	t_resp_free(&r);
	const char *p[] = {sid};
	cr_assert_eq(
	    t_sql_long(db,
	               "SELECT count(*) FROM people WHERE session_id = $1 AND "
	               "registration_status = 'registered' AND "
	               "(first_name, last_name) IN (('Jill', 'Chill'), ('Bruce', 'Willis'))",
	               1, p),
	    2);
}

/*
 * curl -F 'auto_approve=true' -F 'registrants=<list' as curl sends it, with
 * boundary, and header (NULL or "Name: value") added.
 */
static void post_form(struct t_resp *r, const char *sid, const char *auto_approve, const char *list,
                      const char *boundary, const char *header)
{
	char body[8192], url[256], ct[160];
	int n = snprintf(body, sizeof(body), "--%s\r\n", boundary);
	if (auto_approve)
		n += snprintf(body + n, sizeof(body) - (size_t)n,
		              "Content-Disposition: form-data; name=\"auto_approve\"\r\n\r\n%s\r\n"
		              "--%s\r\n",
		              auto_approve, boundary);
	snprintf(body + n, sizeof(body) - (size_t)n,
	         "Content-Disposition: form-data; name=\"registrants\"\r\n\r\n%s\r\n--%s--\r\n",
	         list, boundary);
	snprintf(ct, sizeof(ct), "Content-Type: multipart/form-data; boundary=%s", boundary);
	const char *headers[] = {ct, header, NULL};
	batch_url(url, sizeof(url), sid);
	t_http(r, "POST", url, org.token, body, headers);
}

static void post_multipart(struct t_resp *r, const char *sid, const char *auto_approve,
                           const char *list)
{
	post_form(r, sid, auto_approve, list, "------------------------d74496d66958873e", NULL);
}

Test(compat_zoom, documentation_example_as_multipart)
{
	char sid[37];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Zoom form\",\"approval\":\"manual\"}", sid);
	post_multipart(&r, sid, "true", example_registrants);
	cr_assert_eq(r.status, 201, "%s", r.body);
	assert_registrant(&r, 0, sid, "jchill@example.com");
	assert_registrant(&r, 1, sid, "bwillis@example.com");
	t_resp_free(&r);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'registered'",
	                        1, p),
	             2, "auto_approve=true in the form approves");
}

Test(compat_zoom, manual_approval_without_auto_approve_is_pending)
{
	char sid[37];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Manual\",\"approval\":\"manual\"}", sid);
	post_json(&r, sid, "{\"registrants\":[{\"email\":\"p@example.com\",\"first_name\":\"P\"}]}",
	          NULL);
	cr_assert_eq(r.status, 201, "%s", r.body);
	assert_registrant(&r, 0, sid, "p@example.com");
	t_resp_free(&r);
	post_multipart(&r, sid, NULL, "[{\"email\":\"q@example.com\",\"first_name\":\"Q\"}]");
	cr_assert_eq(r.status, 201, "%s", r.body);
	t_resp_free(&r);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'pending_approval'",
	                        1, p),
	             2);
}

Test(compat_zoom, existing_registrant_is_returned_not_refused)
{
	char sid[37], url[256], id[37], join[512];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Existing\",\"capacity\":3}", sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
	t_http(&r, "POST", url, org.token,
	       "{\"data\":{\"type\":\"people\",\"attributes\":{\"email\":\"old@example.com\","
	       "\"first_name\":\"Old\"}}}",
	       NULL);
	cr_assert_eq(r.status, 201, "%s", r.body);
	t_resp_free(&r);
	native_person(sid, "old@example.com", id, join, sizeof(join));
	/* The same address in another case, a newcomer, and the newcomer again. */
	post_list(&r, sid,
	          "[{\"email\":\"OLD@example.com\",\"first_name\":\"Again\"},"
	          "{\"email\":\"new@example.com\",\"first_name\":\"New\"},"
	          "{\"email\":\"new@example.com\",\"first_name\":\"Twice\"}]");
	cr_assert_eq(r.status, 201, "%s", r.body);
	json_t *list = json_object_get(r.json, "registrants");
	cr_assert_eq(json_array_size(list), 3);
	json_t *first = json_array_get(list, 0);
	cr_assert_str_eq(json_string_value(json_object_get(first, "registrant_id")), id);
	cr_assert_str_eq(json_string_value(json_object_get(first, "join_url")), join);
	assert_registrant(&r, 1, sid, "new@example.com");
	cr_assert(json_equal(json_array_get(list, 1), json_array_get(list, 2)), "%s", r.body);
	t_resp_free(&r);
	cr_assert_eq(people_count(sid), 2);
	/* A whole batch of known people needs no seat, even in a full session. */
	post_list(&r, sid, "[{\"email\":\"new@example.com\",\"first_name\":\"N\"}]");
	cr_assert_eq(r.status, 201, "%s", r.body);
	t_resp_free(&r);
}

Test(compat_zoom, capacity_is_all_or_nothing)
{
	char sid[37];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Tight\",\"capacity\":2}", sid);
	post_list(&r, sid, "[{\"email\":\"a@example.com\",\"first_name\":\"A\"}]");
	cr_assert_eq(r.status, 201, "%s", r.body);
	t_resp_free(&r);
	/* One seat left, two newcomers: nobody is registered. */
	post_list(&r, sid,
	          "[{\"email\":\"b@example.com\",\"first_name\":\"B\"},"
	          "{\"email\":\"c@example.com\",\"first_name\":\"C\"}]");
	assert_zoom_error(&r, 400, 3043, "Webinar has reached maximum attendee capacity.");
	t_resp_free(&r);
	cr_assert_eq(people_count(sid), 1);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db, "SELECT registrants_count FROM sessions WHERE id = $1", 1, p),
	             1);
	/* The one known and one newcomer fit. */
	post_list(&r, sid,
	          "[{\"email\":\"a@example.com\",\"first_name\":\"A\"},"
	          "{\"email\":\"b@example.com\",\"first_name\":\"B\"}]");
	cr_assert_eq(r.status, 201, "%s", r.body);
	t_resp_free(&r);
	cr_assert_eq(people_count(sid), 2);
}

Test(compat_zoom, waiting_list_takes_who_does_not_fit)
{
	char sid[37];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"WL\",\"capacity\":1,\"waitlist\":true}", sid);
	post_list(&r, sid, example_registrants);
	cr_assert_eq(r.status, 201, "%s", r.body);
	t_resp_free(&r);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1 AND "
	                        "registration_status = 'waitlisted'",
	                        1, p),
	             1);
}

Test(compat_zoom, invalid_requests_are_300)
{
	char sid[37], list[8192];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Invalid\"}", sid);
	/* 31 registrants. */
	int n = snprintf(list, sizeof(list), "[");
	for (int i = 0; i < 31; i++)
		n += snprintf(list + n, sizeof(list) - (size_t)n,
		              "%s{\"email\":\"p%d@example.com\",\"first_name\":\"P\"}",
		              i ? "," : "", i);
	snprintf(list + n, sizeof(list) - (size_t)n, "]");
	post_list(&r, sid, list);
	assert_zoom_error(&r, 400, 300, NULL);
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "errors"), 0), "field")),
	                 "registrants");
	t_resp_free(&r);
	post_list(&r, sid, "[]");
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	post_list(&r, sid, "[{\"email\":\"not-an-email\",\"first_name\":\"X\"}]");
	assert_zoom_error(&r, 400, 300, "Validation Failed.");
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "errors"), 0), "field")),
	                 "registrants[0].email");
	t_resp_free(&r);
	post_list(&r, sid, "[{\"email\":\"x@example.com\"}]");
	assert_zoom_error(&r, 400, 300, "Validation Failed.");
	t_resp_free(&r);
	post_json(&r, sid, "{\"registrants\":[", NULL);
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	post_json(&r, sid, "{\"auto_approve\":true}", NULL);
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	post_json(&r, sid, "{\"auto_approve\":\"yes\",\"registrants\":[]}", NULL);
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	post_multipart(&r, sid, "true", "[{\"email\":");
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	post_multipart(&r, sid, "maybe", example_registrants);
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	/* A form cut before its closing boundary. */
	const char *headers[] = {"Content-Type: multipart/form-data; boundary=XyZ", NULL};
	post_json(&r, sid, "--XyZ\r\nContent-Disposition: form-data; name=\"registrants\"\r\n\r\n[",
	          headers);
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
	cr_assert_eq(people_count(sid), 0);
}

Test(compat_zoom, registration_window_closed_is_300)
{
	char sid[37];
	struct t_resp r;
	t_session_new(base, org.token,
	              "{\"title\":\"Closed\",\"registration_opens_at\":\"2020-01-01T00:00:00Z\","
	              "\"registration_closes_at\":\"2020-01-02T00:00:00Z\"}",
	              sid);
	post_list(&r, sid, example_registrants);
	assert_zoom_error(&r, 400, 300, "Registration for this webinar is closed.");
	t_resp_free(&r);
	cr_assert_eq(people_count(sid), 0);
}

Test(compat_zoom, unknown_webinar_is_3001)
{
	char sid[37], msg[128], url[256];
	struct t_resp r;
	t_uuid(sid);
	post_list(&r, sid, example_registrants);
	snprintf(msg, sizeof(msg), "Webinar does not exist: %s.", sid);
	assert_zoom_error(&r, 404, 3001, msg);
	t_resp_free(&r);
	/* A Zoom webinar id is a number: no session has one. */
	post_list(&r, "85746065432", example_registrants);
	assert_zoom_error(&r, 404, 3001, "Webinar does not exist: 85746065432.");
	t_resp_free(&r);
	/* Another organization's session does not exist for this token. */
	struct t_org other;
	t_org_new(&other);
	t_session_new(base, other.token, "{\"title\":\"Theirs\"}", sid);
	post_list(&r, sid, example_registrants);
	snprintf(msg, sizeof(msg), "Webinar does not exist: %s.", sid);
	assert_zoom_error(&r, 404, 3001, msg);
	t_resp_free(&r);
	cr_assert_eq(people_count(sid), 0);
	/* Another path under /v2/ is no webinar. */
	snprintf(url, sizeof(url), "%s/v2/users/me", base);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	assert_zoom_error(&r, 404, 404, NULL);
	t_resp_free(&r);
}

Test(compat_zoom, invalid_token_is_124)
{
	char sid[37], url[256];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Auth\"}", sid);
	batch_url(url, sizeof(url), sid);
	t_http(&r, "POST", url, NULL, "{\"registrants\":[]}", NULL);
	assert_zoom_error(&r, 401, 124, "Invalid access token.");
	t_resp_free(&r);
	t_http(&r, "POST", url, "not-a-token", "{\"registrants\":[]}", NULL);
	assert_zoom_error(&r, 401, 124, "Invalid access token.");
	t_resp_free(&r);
}

Test(compat_zoom, other_failures_keep_their_status_as_code)
{
	char sid[37], url[256];
	struct t_resp r;
	t_session_new(base, org.token, "{\"title\":\"Other\"}", sid);
	batch_url(url, sizeof(url), sid);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	assert_zoom_error(&r, 405, 405, NULL);
	cr_assert_str_eq(t_resp_header(&r, "Allow"), "POST");
	t_resp_free(&r);
	const char *text[] = {"Content-Type: text/plain", NULL};
	t_http(&r, "POST", url, org.token, "registrants", text);
	assert_zoom_error(&r, 415, 415, NULL);
	t_resp_free(&r);
	char long_key[300] = "Idempotency-Key: ";
	memset(long_key + strlen(long_key), 'k', 270);
	long_key[sizeof(long_key) - 1] = '\0';
	const char *bad_key[] = {long_key, NULL};
	t_http(&r, "POST", url, org.token, "{}", bad_key);
	assert_zoom_error(&r, 400, 300, NULL);
	t_resp_free(&r);
}

Test(compat_zoom, idempotency_key_replays)
{
	char sid[37], body[2048];
	struct t_resp r1, r2;
	t_session_new(base, org.token, "{\"title\":\"Idem\",\"capacity\":5}", sid);
	const char *headers[] = {"Idempotency-Key: zoom-batch-1", NULL};
	snprintf(body, sizeof(body), "{\"registrants\":%s}", example_registrants);
	post_json(&r1, sid, body, headers);
	cr_assert_eq(r1.status, 201, "%s", r1.body);
	post_json(&r2, sid, body, headers);
	cr_assert_eq(r2.status, 201, "%s", r2.body);
	cr_assert(json_equal(r1.json, r2.json), "%s / %s", r1.body, r2.body);
	cr_assert_str_eq(t_resp_header(&r2, "Idempotent-Replayed"), "true");
	cr_assert(strncmp(t_resp_header(&r2, "Content-Type"), "application/json", 16) == 0);
	t_resp_free(&r1);
	t_resp_free(&r2);
	/* A form retried with another boundary, as curl draws one per request, replays. */
	const char *key = "Idempotency-Key: zoom-form-1";
	post_form(&r1, sid, "true", example_registrants, "------------------------aaaa", key);
	cr_assert_eq(r1.status, 201, "%s", r1.body);
	post_form(&r2, sid, "true", example_registrants, "------------------------bbbb", key);
	cr_assert_eq(r2.status, 201, "%s", r2.body);
	cr_assert_str_eq(t_resp_header(&r2, "Idempotent-Replayed"), "true");
	cr_assert(json_equal(r1.json, r2.json));
	t_resp_free(&r1);
	t_resp_free(&r2);
	post_form(&r1, sid, "false", example_registrants, "------------------------cccc", key);
	assert_zoom_error(&r1, 422, 422, NULL);
	t_resp_free(&r1);
	/* The same key with another body. */
	post_json(&r1, sid,
	          "{\"registrants\":[{\"email\":\"z@example.com\",\"first_name\":\"Z\"}]}",
	          headers);
	assert_zoom_error(&r1, 422, 422, NULL);
	t_resp_free(&r1);
	cr_assert_eq(people_count(sid), 2);
}

#define RACERS 8
#define SEATS  10

struct racer {
	const char *sid;
	int i;
	pthread_barrier_t *start;
	long status;
	long code;
};

static void *race(void *arg)
{
	struct racer *x = arg;
	char url[256], body[1024], err[256];
	batch_url(url, sizeof(url), x->sid);
	snprintf(body, sizeof(body),
	         "{\"registrants\":[{\"email\":\"r%d-1@example.com\",\"first_name\":\"R\"},"
	         "{\"email\":\"r%d-2@example.com\",\"first_name\":\"R\"},"
	         "{\"email\":\"r%d-3@example.com\",\"first_name\":\"R\"}]}",
	         x->i, x->i, x->i);
	struct t_resp r;
	pthread_barrier_wait(x->start);
	if (t_http_try(&r, "POST", url, org.token, body, NULL, 0, err, sizeof(err))) {
		x->status = r.status;
		x->code = json_integer_value(json_object_get(r.json, "code"));
	}
	t_resp_free(&r);
	return NULL;
}

Test(compat_zoom, racing_batches_never_oversell)
{
	char sid[37], attrs[128];
	snprintf(attrs, sizeof(attrs), "{\"title\":\"Race\",\"capacity\":%d}", SEATS);
	t_session_new(base, org.token, attrs, sid);
	pthread_t th[RACERS];
	struct racer x[RACERS];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, RACERS);
	for (int i = 0; i < RACERS; i++) {
		x[i] = (struct racer){.sid = sid, .i = i, .start = &start};
		cr_assert_eq(pthread_create(&th[i], NULL, race, &x[i]), 0);
	}
	int won = 0;
	for (int i = 0; i < RACERS; i++) {
		pthread_join(th[i], NULL);
		if (x[i].status == 201)
			won++;
		else
			cr_assert(x[i].status == 400 && x[i].code == 3043, "racer %d: %ld %ld", i,
			          x[i].status, x[i].code);
	}
	pthread_barrier_destroy(&start);
	/* Batches of three into ten seats: three fit, whatever the order. */
	cr_assert_eq(won, SEATS / 3);
	cr_assert_eq(people_count(sid), 3 * won);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db, "SELECT registrants_count FROM sessions WHERE id = $1", 1, p),
	             3 * won);
	t_check_invariants(db);
}

/* Its own API, with a limit of one request a second. */
Test(compat_zoom_rate, rate_limited_is_429, .timeout = 120)
{
	struct t_proc limited;
	struct t_org o;
	char url[256], sid[37], lbase[64];
	const char *env[] = {"BULKREG_RATE_LIMIT=1/s,1", NULL};
	t_org_new(&o);
	t_api_start(&limited, env);
	snprintf(lbase, sizeof(lbase), "http://127.0.0.1:%d", limited.port);
	t_uuid(sid);
	snprintf(url, sizeof(url), "%s/v2/webinars/%s/batch_registrants", lbase, sid);
	struct t_resp r;
	long last = 0;
	/* The bucket holds one token: of a few quick requests, one at most passes. */
	for (int i = 0; i < 3 && last != 429; i++) {
		t_http(&r, "POST", url, o.token, "{\"registrants\":[]}", NULL);
		last = r.status;
		if (last == 429) {
			cr_assert_eq(json_integer_value(json_object_get(r.json, "code")), 429, "%s",
			             r.body);
			cr_assert_not_null(json_string_value(json_object_get(r.json, "message")));
			const char *ra = t_resp_header(&r, "Retry-After");
			cr_assert(ra && strtol(ra, NULL, 10) >= 1, "Retry-After %s",
			          ra ? ra : "(none)");
		}
		t_resp_free(&r);
	}
	cr_assert_eq(last, 429);
	t_proc_stop(&limited, SIGTERM, 20000);
}
