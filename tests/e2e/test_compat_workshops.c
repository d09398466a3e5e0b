/*
 * test_compat_workshops.c - the workshop booking API's guest registration
 * (docs/compat/workshops.md) through the real API: the example request
 * replayed field by field, every error code and message of the mapping
 * table, the statuses the native rules give (waitlisted, pending_approval,
 * a registration anew), the registered guest as the native API shows it,
 * Idempotency-Key, 401 and 429 in that API's error shape, and 20 guests
 * racing for 5 seats.
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
	t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(compat_workshops, .init = setup, .fini = teardown, .timeout = 180);

#define TRACKS "\"tracks\":[{\"id\":7,\"name\":\"Morning\"}]"

/* A native session of org with the attributes attrs (a JSON object's members) and track 7. */
static void workshop_new(const char *attrs, char id[37])
{
	char all[512];
	snprintf(all, sizeof(all), "{\"title\":\"Workshop\",%s%s%s}", TRACKS, attrs ? "," : "",
	         attrs ? attrs : "");
	t_session_new(base, org.token, all, id);
}

/* What a workshop answer says. */
struct ws_answer {
	long status;
	long code;         /* the error's code, or 0 */
	char message[256]; /* the error's message */
	char id[64];       /* registrations.id */
	char reg[32];      /* registrations.status */
	char ctype[64];    /* Content-Type */
	char retry[16];    /* Retry-After */
	bool replayed;     /* Idempotent-Replayed: true */
	bool well_formed;  /* exactly the members of its shape, nothing else */
	char body[1024];
};

static void copy_str(char *out, size_t cap, const json_t *v)
{
	snprintf(out, cap, "%s", json_is_string(v) ? json_string_value(v) : "");
}

/* Reads r into a: the success shape or the error shape, each checked for stray members. */
static void answer_read(const struct t_resp *r, struct ws_answer *a)
{
	memset(a, 0, sizeof(*a));
	a->status = r->status;
	snprintf(a->body, sizeof(a->body), "%s", r->body ? r->body : "");
	const json_t *regs = json_object_get(r->json, "registrations");
	if (regs) {
		copy_str(a->id, sizeof(a->id), json_object_get(regs, "id"));
		copy_str(a->reg, sizeof(a->reg), json_object_get(regs, "status"));
		a->well_formed = json_object_size(r->json) == 1 && json_object_size(regs) == 2;
	} else if (json_is_integer(json_object_get(r->json, "code"))) {
		a->code = (long)json_integer_value(json_object_get(r->json, "code"));
		copy_str(a->message, sizeof(a->message), json_object_get(r->json, "message"));
		a->well_formed = json_object_size(r->json) == 2 &&
		                 json_is_string(json_object_get(r->json, "message"));
	}
}

/* POSTs body to /api/v1/workshops/<wid>/registrations of the API at at. */
static void ws_post_at(const char *at, const char *token, const char *wid, const char *body,
                       const char *const *headers, struct ws_answer *a)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/api/v1/workshops/%s/registrations", at, wid);
	t_http(&r, "POST", url, token, body, headers);
	answer_read(&r, a);
	const char *h = t_resp_header(&r, "Content-Type");
	snprintf(a->ctype, sizeof(a->ctype), "%s", h ? h : "");
	h = t_resp_header(&r, "Retry-After");
	snprintf(a->retry, sizeof(a->retry), "%s", h ? h : "");
	h = t_resp_header(&r, "Idempotent-Replayed");
	a->replayed = h && strcmp(h, "true") == 0;
	t_resp_free(&r);
}

static void ws_post(const char *wid, const char *body, struct ws_answer *a)
{
	ws_post_at(base, org.token, wid, body, NULL, a);
}

/* A guest's body: track 7, no center, waitlist as given. */
static void guest_body(char *out, size_t cap, const char *guest, bool waitlist)
{
	snprintf(out, cap, "{\"track_id\":7,\"guest_id\":\"%s\",\"waitlist\":%s}", guest,
	         waitlist ? "true" : "false");
}

static void expect_error(const struct ws_answer *a, long status, long code, const char *message)
{
	cr_assert_eq(a->status, status, "status %ld, wanted %ld: %s", a->status, status, a->body);
	cr_assert_eq(a->code, code, "code %ld, wanted %ld: %s", a->code, code, a->body);
	cr_assert(a->well_formed, "not {code, message}: %s", a->body);
	cr_assert_str_eq(a->ctype, "application/json");
	if (message)
		cr_assert_str_eq(a->message, message);
	else
		cr_assert(a->message[0], "an empty message: %s", a->body);
}

static void expect_registered(const struct ws_answer *a, const char *status)
{
	cr_assert_eq(a->status, 201, "status %ld: %s", a->status, a->body);
	cr_assert(a->well_formed, "not {registrations: {id, status}}: %s", a->body);
	cr_assert_eq(strlen(a->id), 36, "id %s", a->id);
	cr_assert_str_eq(a->reg, status, "%s", a->body);
	cr_assert_str_eq(a->ctype, "application/json");
}

static long people_of(const char *sid)
{
	const char *p[] = {sid};
	return t_sql_long(db, "SELECT count(*) FROM people WHERE session_id = $1", 1, p);
}

/* The native person with external_id guest in sid (fatal unless exactly one); caller decrefs. */
static json_t *native_person(const char *sid, const char *guest)
{
	char url[384];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people?filter[external_id]=%s", base, sid,
	         guest);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	json_t *data = json_object_get(r.json, "data");
	cr_assert_eq(json_array_size(data), 1, "%s", r.body);
	json_t *p = json_incref(json_array_get(data, 0));
	t_resp_free(&r);
	return p;
}

Test(compat_workshops, example_request_registers_the_guest)
{
	char sid[37];
	workshop_new("\"capacity\":10", sid);
	struct ws_answer a;
	ws_post(sid,
	        "{\"track_id\":7,\"guest_id\":\"guest-0042\",\"center_id\":\"center-3\","
	        "\"waitlist\":false}",
	        &a);
	expect_registered(&a, "registered");

	json_t *p = native_person(sid, "guest-0042");
	const json_t *at = json_object_get(p, "attributes");
	cr_assert_str_eq(json_string_value(json_object_get(p, "id")), a.id);
	cr_assert_str_eq(json_string_value(json_object_get(at, "external_id")), "guest-0042");
	cr_assert_eq(json_integer_value(json_object_get(at, "track_id")), 7);
	cr_assert_str_eq(json_string_value(json_object_get(at, "center_id")), "center-3");
	cr_assert_str_eq(json_string_value(json_object_get(at, "registration_status")),
	                 "registered");
	cr_assert(json_is_null(json_object_get(at, "email")));
	json_decref(p);
	cr_assert_eq(people_of(sid), 1);
	t_check_invariants(db);
}

Test(compat_workshops, a_missing_guest_id_or_track_id_is_1004)
{
	char sid[37];
	workshop_new("\"capacity\":10", sid);
	static const struct {
		const char *body;
		const char *message;
	} cases[] = {
	    {"{\"track_id\":7}", "Missing required parameter: guest_id"},
	    {"{\"track_id\":7,\"guest_id\":null}", "Missing required parameter: guest_id"},
	    {"{\"track_id\":7,\"guest_id\":\"\"}", "Missing required parameter: guest_id"},
	    {"{\"guest_id\":\"g1\"}", "Missing required parameter: track_id"},
	    {"{\"guest_id\":\"g1\",\"track_id\":null,\"center_id\":\"c\"}",
	     "Missing required parameter: track_id"},
	    {"{}", "Missing required parameter: track_id, guest_id"},
	    {"{\"center_id\":\"c\",\"waitlist\":true}",
	     "Missing required parameter: track_id, guest_id"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct ws_answer a;
		ws_post(sid, cases[i].body, &a);
		expect_error(&a, 400, 1004, cases[i].message);
	}
	cr_assert_eq(people_of(sid), 0);
	t_check_invariants(db);
}

Test(compat_workshops, an_unknown_workshop_is_1001)
{
	char sid[37], other_sid[37], missing[37];
	workshop_new("\"capacity\":10", sid);
	t_uuid(missing);
	struct ws_answer a;
	char body[256];
	guest_body(body, sizeof(body), "g1", false);
	ws_post(missing, body, &a);
	expect_error(&a, 404, 1001, "Workshop is invalid");
	/* No UUID: the route does not match; the router's 404 in this API's shape. */
	ws_post("workshop-12", body, &a);
	expect_error(&a, 404, 1001, "Workshop is invalid");
	/* Another organization's session is no workshop of this token's. */
	struct t_org other;
	t_org_new(&other);
	char attrs[256];
	snprintf(attrs, sizeof(attrs), "{\"title\":\"Theirs\",%s}", TRACKS);
	t_session_new(base, other.token, attrs, other_sid);
	ws_post(other_sid, body, &a);
	expect_error(&a, 404, 1001, "Workshop is invalid");
	cr_assert_eq(people_of(other_sid), 0);
	t_check_invariants(db);
}

Test(compat_workshops, a_track_of_another_workshop_is_502)
{
	char sid[37];
	workshop_new("\"capacity\":10", sid);
	struct ws_answer a;
	ws_post(sid, "{\"track_id\":8,\"guest_id\":\"g1\"}", &a);
	expect_error(&a, 422, 502, "The track passed is not associated with the passed workshop");
	cr_assert_eq(people_of(sid), 0);
	t_check_invariants(db);
}

Test(compat_workshops, a_guest_enrolled_or_waiting_is_1010)
{
	char sid[37];
	workshop_new("\"capacity\":1,\"waitlist\":true", sid);
	char body[256];
	struct ws_answer a;
	const char *message = "Guest is already enrolled to the workshop or is on the waiting list";
	guest_body(body, sizeof(body), "g1", false);
	ws_post(sid, body, &a);
	expect_registered(&a, "registered");
	ws_post(sid, body, &a);
	expect_error(&a, 409, 1010, message);
	guest_body(body, sizeof(body), "g2", false);
	ws_post(sid, body, &a);
	expect_registered(&a, "waitlisted");
	ws_post(sid, body, &a);
	expect_error(&a, 409, 1010, message);
	guest_body(body, sizeof(body), "g2", true);
	ws_post(sid, body, &a);
	expect_error(&a, 409, 1010, message);
	cr_assert_eq(people_of(sid), 2);
	t_check_invariants(db);
}

Test(compat_workshops, a_workshop_not_open_is_1009_with_either_message)
{
	char closed[37], later[37];
	workshop_new("\"registration_closes_at\":\"2001-01-01T00:00:00Z\"", closed);
	workshop_new("\"registration_opens_at\":\"2999-01-01T00:00:00Z\"", later);
	const char *sids[] = {closed, later};
	char body[256];
	for (int i = 0; i < 2; i++) {
		struct ws_answer a;
		guest_body(body, sizeof(body), "g1", false);
		ws_post(sids[i], body, &a);
		expect_error(&a, 422, 1009,
		             "Workshop is not open for registrations, cannot register to class");
		guest_body(body, sizeof(body), "g1", true);
		ws_post(sids[i], body, &a);
		expect_error(
		    &a, 422, 1009,
		    "Workshop is not open for registrations, cannot add guest to waitlist");
		/* No waitlist member at all is the same as false. */
		ws_post(sids[i], "{\"track_id\":7,\"guest_id\":\"g1\"}", &a);
		expect_error(&a, 422, 1009,
		             "Workshop is not open for registrations, cannot register to class");
		cr_assert_eq(people_of(sids[i]), 0);
	}
	t_check_invariants(db);
}

Test(compat_workshops, a_full_workshop_without_waitlist_is_1011)
{
	char sid[37];
	workshop_new("\"capacity\":1", sid);
	char body[256];
	struct ws_answer a;
	guest_body(body, sizeof(body), "g1", false);
	ws_post(sid, body, &a);
	expect_registered(&a, "registered");
	guest_body(body, sizeof(body), "g2", false);
	ws_post(sid, body, &a);
	expect_error(&a, 422, 1011, "Workshop capacity exceeded, cannot register to Workshop");
	cr_assert_eq(people_of(sid), 1);
	t_check_invariants(db);
}

Test(compat_workshops, statuses_follow_the_native_rules)
{
	char waiting[37], manual[37], roomy[37];
	workshop_new("\"capacity\":1,\"waitlist\":true", waiting);
	workshop_new("\"capacity\":5,\"approval\":\"manual\"", manual);
	workshop_new("\"capacity\":5", roomy);
	char body[256];
	struct ws_answer a;
	guest_body(body, sizeof(body), "g1", false);
	ws_post(waiting, body, &a);
	expect_registered(&a, "registered");
	guest_body(body, sizeof(body), "g2", false);
	ws_post(waiting, body, &a);
	expect_registered(&a, "waitlisted"); /* full, with a waiting list */
	ws_post(manual, body, &a);
	expect_registered(&a, "pending_approval");
	/* waitlist: true asks for the waiting list even with seats free. */
	guest_body(body, sizeof(body), "g3", true);
	ws_post(roomy, body, &a);
	expect_registered(&a, "waitlisted");
	json_t *p = native_person(roomy, "g3");
	cr_assert_str_eq(json_string_value(json_object_get(json_object_get(p, "attributes"),
	                                                   "registration_status")),
	                 "waitlisted");
	json_decref(p);
	t_check_invariants(db);
}

Test(compat_workshops, a_cancelled_guest_registers_anew_with_the_same_id)
{
	char sid[37];
	workshop_new("\"capacity\":5", sid);
	struct ws_answer a;
	ws_post(sid, "{\"track_id\":7,\"guest_id\":\"g1\",\"center_id\":\"c1\"}", &a);
	expect_registered(&a, "registered");
	char first[64], url[384];
	snprintf(first, sizeof(first), "%s", a.id);
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/%s", base, sid, first);
	t_http(&r, "DELETE", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 200, "%s", r.body);
	t_resp_free(&r);
	ws_post(sid, "{\"track_id\":7,\"guest_id\":\"g1\",\"center_id\":\"c2\"}", &a);
	expect_registered(&a, "registered");
	cr_assert_str_eq(a.id, first);
	json_t *p = native_person(sid, "g1");
	cr_assert_str_eq(
	    json_string_value(json_object_get(json_object_get(p, "attributes"), "center_id")),
	    "c2");
	json_decref(p);
	cr_assert_eq(people_of(sid), 1);
	t_check_invariants(db);
}

Test(compat_workshops, bad_bodies_and_methods_answer_in_this_shape)
{
	char sid[37];
	workshop_new("\"capacity\":5", sid);
	static const struct {
		const char *body;
		long status, code;
	} cases[] = {
	    {"{\"track_id\":\"7\",\"guest_id\":\"g1\"}", 422, 9422},
	    {"{\"track_id\":-1,\"guest_id\":\"g1\"}", 422, 9422},
	    {"{\"track_id\":7.5,\"guest_id\":\"g1\"}", 422, 9422},
	    {"{\"track_id\":7,\"guest_id\":5}", 422, 9422},
	    {"{\"track_id\":7,\"guest_id\":\"g1\",\"center_id\":3}", 422, 9422},
	    {"{\"track_id\":7,\"guest_id\":\"g1\",\"waitlist\":\"yes\"}", 422, 9422},
	    {"{\"track_id\":7,", 400, 9400},
	    {"[{\"track_id\":7,\"guest_id\":\"g1\"}]", 400, 9400},
	    {"", 400, 9400},
	};
	struct ws_answer a;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ws_post(sid, cases[i].body, &a);
		expect_error(&a, cases[i].status, cases[i].code, NULL);
	}
	char long_id[300];
	memset(long_id, 'x', 256);
	long_id[256] = '\0';
	char body[512];
	guest_body(body, sizeof(body), long_id, false);
	ws_post(sid, body, &a);
	expect_error(&a, 422, 9422, NULL);

	/* Over BULKREG_MAX_BODY_BYTES: the HTTP server's own 413, in this shape too. */
	size_t big = 1100 * 1024;
	char *huge = malloc(big + 64);
	cr_assert_not_null(huge);
	int at = snprintf(huge, 64, "{\"track_id\":7,\"guest_id\":\"");
	memset(huge + at, 'x', big);
	snprintf(huge + at + big, 8, "\"}");
	ws_post(sid, huge, &a);
	free(huge);
	expect_error(&a, 413, 9413, NULL);

	const char *text[] = {"Content-Type: text/plain", NULL};
	guest_body(body, sizeof(body), "g1", false);
	ws_post_at(base, org.token, sid, body, text, &a);
	expect_error(&a, 415, 9415, NULL);

	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/api/v1/workshops/%s/registrations", base, sid);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	answer_read(&r, &a);
	cr_assert_eq(a.status, 405, "%s", r.body);
	cr_assert_eq(a.code, 9405, "%s", r.body);
	cr_assert(a.well_formed, "%s", r.body);
	cr_assert_str_eq(t_resp_header(&r, "Allow"), "POST");
	t_resp_free(&r);
	/* The native path is untouched: JSON:API errors there. */
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people", base, sid);
	t_http(&r, "POST", url, org.token, "{", NULL);
	cr_assert_eq(r.status, 400);
	cr_assert(json_is_array(json_object_get(r.json, "errors")), "%s", r.body);
	t_resp_free(&r);
	cr_assert_eq(people_of(sid), 0);
	t_check_invariants(db);
}

Test(compat_workshops, no_or_a_wrong_token_is_401_in_this_shape)
{
	char sid[37];
	workshop_new("\"capacity\":5", sid);
	char body[256];
	guest_body(body, sizeof(body), "g1", false);
	struct ws_answer a;
	ws_post_at(base, NULL, sid, body, NULL, &a);
	expect_error(&a, 401, 9401, NULL);
	ws_post_at(base, "br_not_a_token", sid, body, NULL, &a);
	expect_error(&a, 401, 9401, NULL);
	/* Even where no route matches, authentication comes first. */
	ws_post_at(base, NULL, "nope", body, NULL, &a);
	expect_error(&a, 401, 9401, NULL);
	cr_assert_eq(people_of(sid), 0);
	t_check_invariants(db);
}

Test(compat_workshops, an_idempotency_key_replays_the_answer)
{
	char sid[37];
	workshop_new("\"capacity\":5", sid);
	char key[64], hdr[96], body[256];
	t_unique_name(key, sizeof(key), "ws");
	snprintf(hdr, sizeof(hdr), "Idempotency-Key: %s", key);
	const char *headers[] = {hdr, NULL};
	guest_body(body, sizeof(body), "g1", false);
	struct ws_answer first, again;
	ws_post_at(base, org.token, sid, body, headers, &first);
	expect_registered(&first, "registered");
	cr_assert_not(first.replayed);
	ws_post_at(base, org.token, sid, body, headers, &again);
	expect_registered(&again, "registered");
	cr_assert(again.replayed, "not a replay: %s", again.body);
	cr_assert_str_eq(again.body, first.body);
	/* Without the key the same body is a duplicate: the replay registered nobody. */
	ws_post(sid, body, &again);
	expect_error(&again, 409, 1010, NULL);
	/* The same key with another body. */
	guest_body(body, sizeof(body), "g2", false);
	ws_post_at(base, org.token, sid, body, headers, &again);
	expect_error(&again, 422, 9422, NULL);
	/* An unusable key, in this shape too. */
	char long_key[320] = "Idempotency-Key: ";
	memset(long_key + strlen(long_key), 'k', 300);
	long_key[sizeof(long_key) - 1] = '\0';
	const char *bad[] = {long_key, NULL};
	ws_post_at(base, org.token, sid, body, bad, &again);
	expect_error(&again, 400, 9400, NULL);
	cr_assert_eq(people_of(sid), 1);
	t_check_invariants(db);
}

Test(compat_workshops, over_the_rate_limit_is_429_in_this_shape)
{
	struct t_proc limited;
	const char *env[] = {"BULKREG_RATE_LIMIT=1/s,1", NULL};
	t_api_start(&limited, env);
	char sid[37];
	workshop_new("\"capacity\":5", sid);
	char body[256];
	guest_body(body, sizeof(body), "g1", false);
	struct ws_answer a;
	ws_post_at(limited.url, org.token, sid, body, NULL, &a);
	expect_registered(&a, "registered");
	guest_body(body, sizeof(body), "g2", false);
	ws_post_at(limited.url, org.token, sid, body, NULL, &a);
	expect_error(&a, 429, 9429, NULL);
	cr_assert(a.retry[0] >= '1' && a.retry[0] <= '9', "Retry-After \"%s\"", a.retry);
	t_proc_stop(&limited, SIGTERM, 20000);
	cr_assert_eq(people_of(sid), 1);
	t_check_invariants(db);
}

struct racer {
	const char *sid;
	int n;
	long status;
	long code;
	char reg[32];
	char err[256];
};

static void *race(void *arg)
{
	struct racer *rc = arg;
	char url[256], body[256];
	snprintf(url, sizeof(url), "%s/api/v1/workshops/%s/registrations", base, rc->sid);
	snprintf(body, sizeof(body), "{\"track_id\":7,\"guest_id\":\"racer-%d\"}", rc->n);
	struct t_resp r;
	if (t_http_try(&r, "POST", url, org.token, body, NULL, 60000, rc->err, sizeof(rc->err))) {
		struct ws_answer a;
		answer_read(&r, &a);
		rc->status = a.status;
		rc->code = a.code;
		snprintf(rc->reg, sizeof(rc->reg), "%s", a.reg);
	}
	t_resp_free(&r);
	return NULL;
}

Test(compat_workshops, twenty_guests_race_for_five_seats)
{
	char sid[37];
	workshop_new("\"capacity\":5", sid);
	struct racer rc[20];
	pthread_t th[20];
	for (int i = 0; i < 20; i++) {
		rc[i] = (struct racer){.sid = sid, .n = i};
		cr_assert_eq(pthread_create(&th[i], NULL, race, &rc[i]), 0);
	}
	for (int i = 0; i < 20; i++)
		pthread_join(th[i], NULL);
	int n_registered = 0, n_full = 0;
	for (int i = 0; i < 20; i++) {
		if (rc[i].status == 201 && strcmp(rc[i].reg, "registered") == 0)
			n_registered++;
		else if (rc[i].status == 422 && rc[i].code == 1011)
			n_full++;
		else
			cr_assert_fail("racer %d: %ld %ld %s", i, rc[i].status, rc[i].code,
			               rc[i].err);
	}
	cr_assert_eq(n_registered, 5);
	cr_assert_eq(n_full, 15);
	const char *p[] = {sid};
	cr_assert_eq(t_sql_long(db,
	                        "SELECT count(*) FROM people WHERE session_id = $1"
	                        " AND registration_status = 'registered'",
	                        1, p),
	             5);
	cr_assert_eq(t_sql_long(db, "SELECT registrants_count FROM sessions WHERE id = $1", 1, p),
	             5);
	t_check_invariants(db);
}
