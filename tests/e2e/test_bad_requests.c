/*
 * test_bad_requests.c - docs/openapi.yaml's request-level errors through the real
 * API: a table of bad requests across every /v1 route (routing, methods,
 * authentication, media types, unparsable bodies, query parameters, and the
 * validation of sessions, people, bulk jobs, job control and webhooks).
 * Each one must answer its status with a JSON:API error document
 * (application/vnd.api+json) whose first error has the expected code and
 * source.pointer. Afterwards the database must hold nothing the requests
 * could have created for the organization: no job, task, person, webhook
 * endpoint or event, and no session but the fixture one; and the API must
 * not have logged a single database error.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(bad_requests, .timeout = 180);

enum tok {
	TOK_ORG, /* the organization's token */
	TOK_NONE,
	TOK_BAD,
};

#define MAX_POINTERS 4

struct bad {
	const char *name;
	const char *method;
	const char *path;         /* {sid}: the fixture session; {none}: an id nobody has */
	const char *body;         /* NULL: no body */
	const char *(*gen)(void); /* a generated body instead of body */
	const char *header;       /* one extra "Name: value" request header */
	enum tok tok;
	long status;
	const char *code;
	/* source.pointer of the first errors (NULL: none); all of them when nerrors. */
	const char *pointers[MAX_POINTERS];
	int nerrors;       /* the exact number of errors, or 0 to check only the first */
	const char *allow; /* the Allow header of a 405 */
};

/* ---- generated bodies (static buffers: the test runs one request at a time) ---- */

static char gen_buf[1 << 16];

static const char *person_body(const char *attrs)
{
	snprintf(gen_buf, sizeof(gen_buf), "{\"data\":{\"type\":\"people\",\"attributes\":%s}}",
	         attrs);
	return gen_buf;
}

static void repeat(char *out, size_t cap, char c, size_t n)
{
	size_t i = 0;
	for (; i < n && i + 1 < cap; i++)
		out[i] = c;
	out[i] = '\0';
}

static const char *gen_deep(void)
{
	size_t o = 0;
	for (int i = 0; i < 40; i++)
		o += (size_t)snprintf(gen_buf + o, sizeof(gen_buf) - o, "{\"a\":");
	o += (size_t)snprintf(gen_buf + o, sizeof(gen_buf) - o, "1");
	for (int i = 0; i < 40; i++)
		o += (size_t)snprintf(gen_buf + o, sizeof(gen_buf) - o, "}");
	return gen_buf;
}

static const char *gen_bad_utf8(void)
{
	return "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"caf\xc3\x28\"}}}";
}

static const char *gen_overlong_utf8(void)
{
	return "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"\xc0\xaf\"}}}";
}

static const char *gen_title_256(void)
{
	char t[300];
	repeat(t, sizeof(t), 't', 256);
	snprintf(gen_buf, sizeof(gen_buf),
	         "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"%s\"}}}", t);
	return gen_buf;
}

static const char *gen_local_65(void)
{
	char l[80], a[160];
	repeat(l, sizeof(l), 'l', 65);
	snprintf(a, sizeof(a), "{\"email\":\"%s@example.com\"}", l);
	return person_body(a);
}

static const char *gen_email_255(void)
{
	/* 64 + "@" + 63 "." 63 "." 58 ".com" = 255 bytes of otherwise valid address. */
	char l[80], d1[80], d2[80], d3[80], a[400];
	repeat(l, sizeof(l), 'l', 64);
	repeat(d1, sizeof(d1), 'a', 63);
	repeat(d2, sizeof(d2), 'b', 63);
	repeat(d3, sizeof(d3), 'c', 58);
	int n = snprintf(a, sizeof(a), "{\"email\":\"%s@%s.%s.%s.com\"}", l, d1, d2, d3);
	cr_assert_eq(n, 12 + 255); /* {"email":"..."} */
	return person_body(a);
}

static const char *gen_reference_256(void)
{
	char ref[300], a[400];
	repeat(ref, sizeof(ref), 'r', 256);
	snprintf(a, sizeof(a), "{\"email\":\"ref@example.com\",\"reference\":\"%s\"}", ref);
	return person_body(a);
}

static const char *gen_fields_51(void)
{
	char a[8192];
	size_t o = (size_t)snprintf(a, sizeof(a), "{\"email\":\"f@example.com\",\"fields\":[");
	for (int i = 0; i < 51; i++)
		o += (size_t)snprintf(a + o, sizeof(a) - o, "%s{\"id\":\"f%d\",\"value\":\"v\"}",
		                      i ? "," : "", i);
	snprintf(a + o, sizeof(a) - o, "]}");
	return person_body(a);
}

static const char *gen_tasks_51(void)
{
	size_t o = (size_t)snprintf(gen_buf, sizeof(gen_buf),
	                            "{\"type\":\"jobs\",\"data\":{\"attributes\":{\"tasks\":[");
	for (int i = 0; i < 51; i++)
		o += (size_t)snprintf(gen_buf + o, sizeof(gen_buf) - o,
		                      "%s{\"attributes\":{\"email\":\"t%d@example.com\"}}",
		                      i ? "," : "", i);
	snprintf(gen_buf + o, sizeof(gen_buf) - o, "]}}}");
	return gen_buf;
}

/* Eight tasks in Livestorm's form: 2, 5 and 7 are wrong, 7 twice. */
static const char *gen_tasks_some_bad(void)
{
	static const char *const people[8] = {
	    "{\"email\":\"b0@example.com\"}",
	    "{\"email\":\"b1@example.com\",\"first_name\":\"B\"}",
	    "{\"email\":\"b2@example.com\",\"phone\":\"+33\"}",
	    "{\"email\":\"b3@example.com\"}",
	    "{\"email\":\"b4@example.com\"}",
	    "{\"email\":\"b5@example.com\",\"fields\":null}",
	    "{\"email\":\"b6@example.com\"}",
	    "{\"email\":\"b7@@example.com\",\"last_name\":7}",
	};
	size_t o = (size_t)snprintf(gen_buf, sizeof(gen_buf),
	                            "{\"type\":\"jobs\",\"data\":{\"attributes\":{\"tasks\":[");
	for (int i = 0; i < 8; i++)
		o += (size_t)snprintf(gen_buf + o, sizeof(gen_buf) - o, "%s{\"attributes\":%s}",
		                      i ? "," : "", people[i]);
	snprintf(gen_buf + o, sizeof(gen_buf) - o, "]}}}");
	return gen_buf;
}

static const char *gen_url_2049(void)
{
	char path[2100];
	repeat(path, sizeof(path), 'p', 2049 - strlen("https://example.com/"));
	snprintf(
	    gen_buf, sizeof(gen_buf),
	    "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"https://example.com/%s\","
	    "\"events\":[\"job.ended\"]}}}",
	    path);
	return gen_buf;
}

/* ---- the table ---- */

#define SESSION(attrs) "{\"data\":{\"type\":\"sessions\",\"attributes\":" attrs "}}"
#define PERSON(attrs)  "{\"data\":{\"type\":\"people\",\"attributes\":" attrs "}}"
#define BULK(attrs)    "{\"data\":{\"type\":\"jobs\",\"attributes\":" attrs "}}"
#define HOOK(attrs)    "{\"data\":{\"type\":\"webhooks\",\"attributes\":" attrs "}}"
#define ONE_TASK       "\"tasks\":[{\"attributes\":{\"email\":\"one@example.com\"}}]"

#define A              "/data/attributes"

/* The common rows: the organization's token, one body (or none), one pointer (or none). */
#define BAD(n, m, p, b, s, c, ptr)                                                    \
	{                                                                             \
		.name = n, .method = m, .path = p, .body = b, .status = s, .code = c, \
		.pointers[0] = ptr                                                    \
	}
#define GEN(n, m, p, g, s, c, ptr)                                                   \
	{                                                                            \
		.name = n, .method = m, .path = p, .gen = g, .status = s, .code = c, \
		.pointers[0] = ptr                                                   \
	}
/* A request with one extra header (a media type, an Authorization) and the given token. */
#define HDR(n, m, p, b, h, t, s, c)                                                               \
	{                                                                                         \
		.name = n, .method = m, .path = p, .body = b, .header = h, .tok = t, .status = s, \
		.code = c                                                                         \
	}
#define NOT_ALLOWED(n, m, p, b, al)                                          \
	{                                                                    \
		.name = n, .method = m, .path = p, .body = b, .status = 405, \
		.code = "method_not_allowed", .allow = al                    \
	}

static const struct bad table[] = {
    /* Routing: unknown routes and ids that are not UUIDs are 404, never a database error. */
    BAD("unknown route", "GET", "/v1/nothing", NULL, 404, "not_found", NULL),
    BAD("unknown route outside /v1", "GET", "/v9/sessions", NULL, 404, "not_found", NULL),
    BAD("session id not a uuid", "GET", "/v1/sessions/not-a-uuid", NULL, 404, "not_found", NULL),
    BAD("person id not a uuid", "GET", "/v1/sessions/{sid}/people/not-a-uuid", NULL, 404,
        "not_found", NULL),
    BAD("job id of uuid length, not hex", "GET", "/v1/jobs/zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
        NULL, 404, "not_found", NULL),
    BAD("job id with SQL in it", "GET", "/v1/jobs/1'%20OR%20'1'='1/tasks", NULL, 404, "not_found",
        NULL),
    BAD("webhook id not a uuid", "DELETE", "/v1/webhooks/42", NULL, 404, "not_found", NULL),
    BAD("route with a trailing segment", "POST", "/v1/sessions/{sid}/people/bulk/extra", "{}", 404,
        "not_found", NULL),
    BAD("no such session", "GET", "/v1/sessions/{none}", NULL, 404, "not_found", NULL),
    BAD("people of no such session", "GET", "/v1/sessions/{none}/people", NULL, 404, "not_found",
        NULL),
    BAD("register in no such session", "POST", "/v1/sessions/{none}/people",
        PERSON("{\"email\":\"nobody@example.com\"}"), 404, "not_found", NULL),
    BAD("bulk into no such session", "POST", "/v1/sessions/{none}/people/bulk",
        BULK("{" ONE_TASK "}"), 404, "not_found", NULL),
    BAD("no such job", "GET", "/v1/jobs/{none}", NULL, 404, "not_found", NULL),
    BAD("tasks of no such job", "GET", "/v1/jobs/{none}/tasks", NULL, 404, "not_found", NULL),
    BAD("retry no such job", "PUT", "/v1/jobs/{none}", "{\"action\":\"retry_failed\"}", 404,
        "not_found", NULL),
    BAD("delete no such job", "DELETE", "/v1/jobs/{none}", NULL, 404, "not_found", NULL),
    BAD("delete no such webhook", "DELETE", "/v1/webhooks/{none}", NULL, 404, "not_found", NULL),
    BAD("deliveries of no such webhook", "GET", "/v1/webhooks/{none}/deliveries", NULL, 404,
        "not_found", NULL),

    /* Methods. */
    NOT_ALLOWED("PUT a session", "PUT", "/v1/sessions/{sid}", "{}", "GET, PATCH, DELETE"),
    NOT_ALLOWED("DELETE the sessions collection", "DELETE", "/v1/sessions", NULL, "GET, POST"),
    NOT_ALLOWED("POST the jobs collection", "POST", "/v1/jobs", "{}", "GET"),
    NOT_ALLOWED("POST a job", "POST", "/v1/jobs/{none}", "{}", "GET, PUT, DELETE"),
    NOT_ALLOWED("GET bulk", "GET", "/v1/sessions/{sid}/people/bulk", NULL, "POST"),
    NOT_ALLOWED("PUT a person", "PUT", "/v1/sessions/{sid}/people/{none}", "{}",
                "GET, PATCH, DELETE"),
    NOT_ALLOWED("PUT the people collection", "PUT", "/v1/sessions/{sid}/people", "{}",
                "GET, POST, DELETE"),
    NOT_ALLOWED("PUT the webhooks collection", "PUT", "/v1/webhooks", "{}", "GET, POST"),

    /* Authentication. */
    HDR("no token", "GET", "/v1/jobs", NULL, NULL, TOK_NONE, 401, "unauthorized"),
    HDR("unknown token", "POST", "/v1/sessions", SESSION("{\"title\":\"x\"}"), NULL, TOK_BAD, 401,
        "unauthorized"),
    HDR("empty bearer", "GET", "/v1/webhooks", NULL, "Authorization: Bearer ", TOK_NONE, 401,
        "unauthorized"),

    /* Media type and unparsable bodies. */
    HDR("text/plain body", "POST", "/v1/sessions", SESSION("{\"title\":\"x\"}"),
        "Content-Type: text/plain", TOK_ORG, 415, "unsupported_media_type"),
    HDR("gzip body", "POST", "/v1/sessions", SESSION("{\"title\":\"x\"}"), "Content-Encoding: gzip",
        TOK_ORG, 415, "unsupported_media_type"),
    HDR("form body", "POST", "/v1/sessions/{sid}/people/bulk", "tasks=1",
        "Content-Type: application/x-www-form-urlencoded", TOK_ORG, 415, "unsupported_media_type"),
    HDR("XML job control", "PUT", "/v1/jobs/{none}", "<action/>", "Content-Type: application/xml",
        TOK_ORG, 415, "unsupported_media_type"),
    BAD("empty body", "POST", "/v1/sessions", NULL, 400, "invalid_json", NULL),
    BAD("truncated JSON", "POST", "/v1/sessions/{sid}/people",
        "{\"data\":{\"attributes\":{\"email\":", 400, "invalid_json", NULL),
    BAD("JSON array body", "POST", "/v1/webhooks", "[]", 400, "invalid_json", NULL),
    GEN("invalid UTF-8", "POST", "/v1/sessions", gen_bad_utf8, 400, "invalid_json", NULL),
    GEN("overlong UTF-8", "POST", "/v1/sessions", gen_overlong_utf8, 400, "invalid_json", NULL),
    BAD("lone surrogate escape", "POST", "/v1/sessions", SESSION("{\"title\":\"\\ud800\"}"), 400,
        "invalid_json", NULL),
    BAD("NUL in a string", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"nul@example.com\",\"first_name\":\"a\\u0000b\"}"), 400, "invalid_json",
        NULL),
    BAD("NUL in a key", "POST", "/v1/webhooks", "{\"da\\u0000ta\":{}}", 400, "invalid_json", NULL),
    BAD("duplicate keys", "POST", "/v1/sessions/{sid}/people",
        "{\"data\":{\"attributes\":{\"email\":\"a@example.com\",\"email\":\"b@example.com\"}}}",
        400, "invalid_json", NULL),
    GEN("nested 40 deep", "POST", "/v1/sessions/{sid}/people/bulk", gen_deep, 400, "invalid_json",
        NULL),
    BAD("empty job control body", "PUT", "/v1/jobs/{none}", NULL, 400, "invalid_json", NULL),

    /* Query parameters. */
    BAD("page size 0", "GET", "/v1/jobs?page[size]=0", NULL, 400, "invalid_parameter", NULL),
    BAD("page size 101", "GET", "/v1/jobs?page[size]=101", NULL, 400, "invalid_parameter", NULL),
    BAD("negative page", "GET", "/v1/webhooks?page[number]=-1", NULL, 400, "invalid_parameter",
        NULL),
    BAD("page not a number", "GET", "/v1/sessions/{sid}/people?page[number]=two", NULL, 400,
        "invalid_parameter", NULL),
    BAD("page past the end", "GET", "/v1/sessions/{sid}/people?page[number]=1", NULL, 400,
        "invalid_page", NULL),
    BAD("far page of jobs", "GET", "/v1/jobs?page[number]=100000000&page[size]=100", NULL, 400,
        "invalid_page", NULL),
    BAD("unknown job status filter", "GET", "/v1/jobs?filter[status]=done", NULL, 400,
        "invalid_parameter", NULL),
    BAD("session filter not a uuid", "GET", "/v1/jobs?filter[session_id]=1%27%3B--", NULL, 400,
        "invalid_parameter", NULL),
    BAD("unknown filter", "GET", "/v1/jobs?filter[email]=x", NULL, 400, "invalid_parameter", NULL),
    BAD("unknown task status filter", "GET", "/v1/jobs/{none}/tasks?filter[status]=done", NULL, 400,
        "invalid_parameter", NULL),
    BAD("parameter on a single resource", "GET", "/v1/sessions/{sid}?include=people", NULL, 400,
        "invalid_parameter", NULL),
    BAD("parameter on delete", "DELETE", "/v1/webhooks/{none}?force=1", NULL, 400,
        "invalid_parameter", NULL),
    /* Every /v1 route, whatever its method, refuses a parameter it does not take. */
    BAD("parameter on create session", "POST", "/v1/sessions?notify=1",
        SESSION("{\"title\":\"x\"}"), 400, "invalid_parameter", NULL),
    BAD("parameter on register", "POST", "/v1/sessions/{sid}/people?notify=1",
        PERSON("{\"email\":\"q1@example.com\"}"), 400, "invalid_parameter", NULL),
    BAD("parameter on bulk", "POST", "/v1/sessions/{sid}/people/bulk?dry_run=1",
        BULK("{" ONE_TASK "}"), 400, "invalid_parameter", NULL),
    BAD("parameter on retry", "PUT", "/v1/jobs/{none}?force=1", "{\"action\":\"retry_failed\"}",
        400, "invalid_parameter", NULL),
    BAD("parameter on create webhook", "POST", "/v1/webhooks?verify=0",
        HOOK("{\"url\":\"https://example.com/h\"}"), 400, "invalid_parameter", NULL),
    BAD("parameter on patch session", "PATCH", "/v1/sessions/{sid}?x=1",
        SESSION("{\"title\":\"y\"}"), 400, "invalid_parameter", NULL),
    BAD("unknown parameter beside email", "DELETE", "/v1/sessions/{sid}/people?email=a@b.co&x=1",
        NULL, 400, "invalid_parameter", NULL),
    BAD("email on one person's delete", "DELETE", "/v1/sessions/{sid}/people/{none}?email=a@b.co",
        NULL, 400, "invalid_parameter", NULL),
    /* A NUL (%00) would end the C string it is decoded into. */
    BAD("NUL as the id", "GET", "/v1/jobs/%00", NULL, 400, "invalid_parameter", NULL),
    BAD("NUL after an id", "GET", "/v1/jobs/{none}%00junk", NULL, 400, "invalid_parameter", NULL),
    BAD("NUL in a list path", "GET", "/v1/jobs%00", NULL, 400, "invalid_parameter", NULL),
    BAD("NUL in a value", "GET", "/v1/jobs?filter[status]=queued%00x", NULL, 400,
        "invalid_parameter", NULL),
    BAD("NUL in a key", "DELETE", "/v1/sessions/{sid}/people?email%00=a@b.co", NULL, 400,
        "invalid_parameter", NULL),

    /* POST /v1/sessions. */
    BAD("session without data", "POST", "/v1/sessions", "{\"type\":\"sessions\"}", 422,
        "validation_failed", "/data"),
    BAD("session of another type", "POST", "/v1/sessions",
        "{\"data\":{\"type\":\"people\",\"attributes\":{\"title\":\"x\"}}}", 422,
        "validation_failed", "/data/type"),
    BAD("session attributes not an object", "POST", "/v1/sessions",
        "{\"data\":{\"type\":\"sessions\",\"attributes\":[]}}", 422, "validation_failed", A),
    BAD("session without title", "POST", "/v1/sessions", SESSION("{\"capacity\":3}"), 422,
        "validation_failed", A "/title"),
    GEN("title of 256 characters", "POST", "/v1/sessions", gen_title_256, 422, "validation_failed",
        A "/title"),
    BAD("huge capacity", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"capacity\":99999999999}"), 422, "validation_failed",
        A "/capacity"),
    BAD("negative capacity", "POST", "/v1/sessions", SESSION("{\"title\":\"x\",\"capacity\":-1}"),
        422, "validation_failed", A "/capacity"),
    BAD("capacity not an integer", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"capacity\":2.5}"), 422, "validation_failed", A "/capacity"),
    BAD("year 0", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"starts_at\":\"0000-01-01T00:00:00Z\"}"), 422,
        "validation_failed", A "/starts_at"),
    BAD("year 99999", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"starts_at\":\"99999-01-01T00:00:00Z\"}"), 422,
        "validation_failed", A "/starts_at"),
    BAD("offset PostgreSQL refuses", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"starts_at\":\"2030-01-01T00:00:00+23:00\"}"), 422,
        "validation_failed", A "/starts_at"),
    BAD("instant before year 1 in UTC", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"registration_opens_at\":\"0001-01-01T00:00:00+01:00\"}"), 422,
        "validation_failed", A "/registration_opens_at"),
    BAD("instant after year 9999 in UTC", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"registration_closes_at\":\"9999-12-31T23:30:00-01:00\"}"), 422,
        "validation_failed", A "/registration_closes_at"),
    BAD("30 February", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"starts_at\":\"2030-02-30T10:00:00Z\"}"), 422,
        "validation_failed", A "/starts_at"),
    BAD("date without zone", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"starts_at\":\"2030-01-01T10:00:00\"}"), 422,
        "validation_failed", A "/starts_at"),
    BAD("window closes before it opens", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"registration_opens_at\":\"2030-01-02T00:00:00Z\","
                "\"registration_closes_at\":\"2030-01-02T00:30:00+01:00\"}"),
        422, "validation_failed", A "/registration_closes_at"),
    BAD("unknown approval", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"approval\":\"auto\"}"), 422, "validation_failed",
        A "/approval"),
    BAD("waitlist not boolean", "POST", "/v1/sessions",
        SESSION("{\"title\":\"x\",\"waitlist\":\"yes\"}"), 422, "validation_failed", A "/waitlist"),
    {.name = "session problems all at once",
     .method = "POST",
     .path = "/v1/sessions",
     .body = SESSION("{\"location\":\"Paris\",\"capacity\":\"ten\",\"approval\":7}"),
     .status = 422,
     .code = "validation_failed",
     .pointers = {A "/location", A "/title", A "/capacity", A "/approval"},
     .nerrors = 4},

    /* POST /v1/sessions/:id/people. */
    BAD("person without email", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"first_name\":\"Ann\"}"), 422, "validation_failed", A "/email"),
    BAD("email with two @", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"a@b@example.com\"}"), 422, "validation_failed", A "/email"),
    GEN("email local part of 65", "POST", "/v1/sessions/{sid}/people", gen_local_65, 422,
        "validation_failed", A "/email"),
    GEN("email of 255", "POST", "/v1/sessions/{sid}/people", gen_email_255, 422,
        "validation_failed", A "/email"),
    BAD("email domain label with _", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann@exa_mple.com\"}"), 422, "validation_failed", A "/email"),
    BAD("email domain label starting with -", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann@-example.com\"}"), 422, "validation_failed", A "/email"),
    BAD("email domain of one label", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann@localhost\"}"), 422, "validation_failed", A "/email"),
    BAD("email with a space", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann smith@example.com\"}"), 422, "validation_failed", A "/email"),
    BAD("email with a tab", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann\\t@example.com\"}"), 422, "validation_failed", A "/email"),
    BAD("email with a no-break space", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann\\u00a0smith@example.com\"}"), 422, "validation_failed",
        A "/email"),
    BAD("email with a C1 control", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann@exam\\u0085ple.com\"}"), 422, "validation_failed", A "/email"),
    BAD("email with a zero-width space", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"ann\\u200b@example.com\"}"), 422, "validation_failed", A "/email"),
    BAD("email not a string", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":[\"ann@example.com\"]}"), 422, "validation_failed", A "/email"),
    BAD("fields not an array", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"f@example.com\",\"fields\":{\"id\":\"a\",\"value\":\"b\"}}"), 422,
        "validation_failed", A "/fields"),
    BAD("fields null", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"f@example.com\",\"fields\":null}"), 422, "validation_failed",
        A "/fields"),
    GEN("51 fields", "POST", "/v1/sessions/{sid}/people", gen_fields_51, 422, "validation_failed",
        A "/fields"),
    BAD("field without id", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"f@example.com\",\"fields\":[{\"id\":\"a\",\"value\":\"b\"},"
               "{\"value\":\"b\"}]}"),
        422, "validation_failed", A "/fields/1"),
    BAD("field value a number", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"f@example.com\",\"fields\":[{\"id\":\"a\",\"value\":3}]}"), 422,
        "validation_failed", A "/fields/0/value"),
    GEN("reference of 256", "POST", "/v1/sessions/{sid}/people", gen_reference_256, 422,
        "validation_failed", A "/reference"),
    BAD("first_name not a string", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"n@example.com\",\"first_name\":42}"), 422, "validation_failed",
        A "/first_name"),
    BAD("unknown attribute, escaped in the pointer", "POST", "/v1/sessions/{sid}/people",
        PERSON("{\"email\":\"u@example.com\",\"a/b~c\":1}"), 422, "validation_failed",
        A "/a~1b~0c"),
    BAD("meta override not boolean", "POST", "/v1/sessions/{sid}/people",
        "{\"data\":{\"attributes\":{\"email\":\"m@example.com\"}},"
        "\"meta\":{\"override_duplicates\":\"yes\"}}",
        422, "validation_failed", "/meta/override_duplicates"),
    BAD("meta member misspelt", "POST", "/v1/sessions/{sid}/people",
        "{\"data\":{\"attributes\":{\"email\":\"m@example.com\"}},"
        "\"meta\":{\"overide_duplicates\":true}}",
        422, "validation_failed", "/meta/overide_duplicates"),
    BAD("person of type jobs", "POST", "/v1/sessions/{sid}/people",
        "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"email\":\"t@example.com\"}}}", 422,
        "validation_failed", "/data/type"),

    /* POST /v1/sessions/:id/people/bulk. */
    BAD("no tasks", "POST", "/v1/sessions/{sid}/people/bulk", BULK("{\"tasks\":[]}"), 422,
        "validation_failed", A "/tasks"),
    BAD("tasks not an array", "POST", "/v1/sessions/{sid}/people/bulk",
        "{\"type\":\"jobs\",\"data\":{\"attributes\":{\"tasks\":{\"email\":\"x@example.com\"}}}}",
        422, "validation_failed", A "/tasks"),
    GEN("51 tasks", "POST", "/v1/sessions/{sid}/people/bulk", gen_tasks_51, 422, "too_many_tasks",
        A "/tasks"),
    {.name = "every bad task at once",
     .method = "POST",
     .path = "/v1/sessions/{sid}/people/bulk",
     .gen = gen_tasks_some_bad,
     .status = 422,
     .code = "validation_failed",
     .pointers = {A "/tasks/2/attributes/phone", A "/tasks/5/attributes/fields",
                  A "/tasks/7/attributes/email", A "/tasks/7/attributes/last_name"},
     .nerrors = 4},
    {.name = "task not an object",
     .method = "POST",
     .path = "/v1/sessions/{sid}/people/bulk",
     .body = BULK("{\"tasks\":[{\"attributes\":{\"email\":\"ok@example.com\"}},\"x\"]}"),
     .status = 422,
     .code = "validation_failed",
     .pointers = {A "/tasks/1"},
     .nerrors = 1},
    BAD("override_duplicates a string", "POST", "/v1/sessions/{sid}/people/bulk",
        BULK("{\"override_duplicates\":\"true\"," ONE_TASK "}"), 422, "validation_failed",
        A "/override_duplicates"),
    BAD("unknown bulk attribute", "POST", "/v1/sessions/{sid}/people/bulk",
        BULK("{\"callback_url\":\"https://x.example\"," ONE_TASK "}"), 422, "validation_failed",
        A "/callback_url"),
    BAD("top-level type people", "POST", "/v1/sessions/{sid}/people/bulk",
        "{\"type\":\"people\",\"data\":{\"attributes\":{" ONE_TASK "}}}", 422, "validation_failed",
        "/type"),

    /* PUT /v1/jobs/:id (validated before the job is looked up). */
    BAD("unknown action", "PUT", "/v1/jobs/{none}", "{\"action\":\"cancel\"}", 422,
        "validation_failed", "/action"),
    {.name = "job control in JSON:API form",
     .method = "PUT",
     .path = "/v1/jobs/{none}",
     .body = "{\"data\":{\"attributes\":{\"action\":\"retry_failed\"}}}",
     .status = 422,
     .code = "validation_failed",
     .pointers = {"/action", "/data"},
     .nerrors = 2},
    BAD("retry override not boolean", "PUT", "/v1/jobs/{none}",
        "{\"action\":\"retry_failed\",\"override_duplicates\":1}", 422, "validation_failed",
        "/override_duplicates"),

    /* POST /v1/webhooks (private targets refused: BULKREG_WEBHOOK_ALLOW_PRIVATE=0). */
    BAD("webhook without url", "POST", "/v1/webhooks", HOOK("{\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("webhook url not a string", "POST", "/v1/webhooks",
        HOOK("{\"url\":7,\"events\":[\"job.ended\"]}"), 422, "validation_failed", A "/url"),
    BAD("ftp webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"ftp://93.184.216.34/x\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("loopback webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"http://127.0.0.1:8080/hook\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("IPv6 loopback webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"https://[::1]/hook\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("private webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"http://10.1.2.3/hook\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("link-local webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"http://169.254.169.254/latest\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("multicast webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"http://224.0.0.1/hook\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    BAD("unspecified-address webhook", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"http://0.0.0.0/hook\",\"events\":[\"job.ended\"]}"), 422,
        "validation_failed", A "/url"),
    GEN("webhook url of 2049", "POST", "/v1/webhooks", gen_url_2049, 422, "validation_failed",
        A "/url"),
    BAD("webhook without events", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"https://93.184.216.34/hook\"}"), 422, "validation_failed", A "/events"),
    BAD("unknown event type", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"https://93.184.216.34/hook\",\"events\":[\"job.ended\","
             "\"job.started\"]}"),
        422, "validation_failed", A "/events/1"),
    BAD("event type twice", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"https://93.184.216.34/hook\",\"events\":[\"job.ended\","
             "\"job.ended\"]}"),
        422, "validation_failed", A "/events/1"),
    BAD("client-chosen secret", "POST", "/v1/webhooks",
        HOOK("{\"url\":\"https://93.184.216.34/hook\",\"events\":[\"job.ended\"],"
             "\"secret\":\"whsec_AAAA\"}"),
        422, "validation_failed", A "/secret"),
    BAD("webhook of another type", "POST", "/v1/webhooks",
        "{\"data\":{\"type\":\"hooks\",\"attributes\":{\"url\":\"https://93.184.216.34/h\","
        "\"events\":[\"job.ended\"]}}}",
        422, "validation_failed", "/data/type"),
};

#define NBAD (sizeof(table) / sizeof(table[0]))

/* ---- running it ---- */

struct ctx {
	struct t_proc api;
	struct t_org org;
	PGconn *db;
	char base[64];
	char sid[37];
	char none[37];
};

/* Replaces {sid} and {none} in path. */
static void expand(const struct ctx *c, const char *path, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "%s", c->base);
	for (const char *p = path; *p && o + 1 < cap;) {
		const char *with = NULL;
		if (strncmp(p, "{sid}", 5) == 0)
			with = c->sid;
		else if (strncmp(p, "{none}", 6) == 0)
			with = c->none;
		if (with) {
			o += (size_t)snprintf(out + o, cap - o, "%s", with);
			p += strchr(p, '}') - p + 1;
		} else {
			out[o++] = *p++;
		}
	}
	out[o < cap ? o : cap - 1] = '\0';
}

static const char *error_pointer(const json_t *err)
{
	return json_string_value(json_object_get(json_object_get(err, "source"), "pointer"));
}

/* Checks one response against its row; every mismatch is reported, none stops the run. */
static void check(const struct bad *b, const struct t_resp *r)
{
	const char *n = b->name;
	cr_expect_eq(r->status, b->status, "%s: status %ld, expected %ld: %s", n, r->status,
	             b->status, r->body);
	const char *ct = t_resp_header(r, "Content-Type");
	cr_expect(ct && strncmp(ct, "application/vnd.api+json", 24) == 0, "%s: content type %s", n,
	          ct ? ct : "(none)");
	json_t *errors = json_object_get(r->json, "errors");
	size_t count = json_array_size(errors);
	cr_expect(json_is_array(errors) && count > 0, "%s: not an error document: %s", n, r->body);
	if (!count)
		return;
	if (b->nerrors)
		cr_expect_eq(count, (size_t)b->nerrors, "%s: %zu errors, expected %d: %s", n, count,
		             b->nerrors, r->body);
	char status[8];
	snprintf(status, sizeof(status), "%ld", b->status);
	for (size_t i = 0; i < count; i++) {
		const json_t *err = json_array_get(errors, i);
		const char *st = json_string_value(json_object_get(err, "status"));
		cr_expect(st && strcmp(st, status) == 0, "%s: error %zu has status %s", n, i,
		          st ? st : "(none)");
		cr_expect(json_is_string(json_object_get(err, "title")), "%s: error %zu: no title",
		          n, i);
	}
	const char *code = json_string_value(json_object_get(json_array_get(errors, 0), "code"));
	cr_expect(code && strcmp(code, b->code) == 0, "%s: code %s, expected %s", n,
	          code ? code : "(none)", b->code);
	size_t checked = b->nerrors ? (size_t)b->nerrors : 1;
	for (size_t i = 0; i < checked && i < count && i < MAX_POINTERS; i++) {
		const char *want = b->pointers[i];
		const char *got = error_pointer(json_array_get(errors, i));
		if (want)
			cr_expect(got && strcmp(got, want) == 0,
			          "%s: error %zu pointer %s, expected %s", n, i,
			          got ? got : "(none)", want);
		else
			cr_expect(got == NULL, "%s: error %zu has pointer %s, expected none", n, i,
			          got);
	}
	if (b->status == 401) {
		/* RFC 7235: a 401 names its scheme; RFC 6750: a token sent but unknown says so. */
		const char *wa = t_resp_header(r, "WWW-Authenticate");
		const char *want = b->tok == TOK_BAD
		                       ? "Bearer realm=\"bulkreg\", error=\"invalid_token\""
		                       : "Bearer realm=\"bulkreg\"";
		cr_expect(wa && strcmp(wa, want) == 0, "%s: WWW-Authenticate %s, expected %s", n,
		          wa ? wa : "(none)", want);
	}
	if (b->allow) {
		const char *allow = t_resp_header(r, "Allow");
		cr_expect(allow && strcmp(allow, b->allow) == 0, "%s: Allow %s, expected %s", n,
		          allow ? allow : "(none)", b->allow);
	}
}

static void send_one(struct ctx *c, const struct bad *b)
{
	char url[512];
	expand(c, b->path, url, sizeof(url));
	const char *token = b->tok == TOK_ORG   ? c->org.token
	                    : b->tok == TOK_BAD ? "brk_this-token-does-not-exist"
	                                        : NULL;
	const char *headers[] = {b->header, NULL};
	struct t_resp r;
	t_http(&r, b->method, url, token, b->gen ? b->gen() : b->body, headers);
	check(b, &r);
	t_resp_free(&r);
}

static long org_count(struct ctx *c, const char *sql)
{
	const char *p[] = {c->org.id};
	return t_sql_long(c->db, sql, 1, p);
}

/* True when a line of the process's log holds needle. */
static bool log_has(const struct t_proc *p, const char *needle)
{
	FILE *f = fopen(p->log_path, "r");
	if (!f)
		return false;
	char line[4096];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

Test(bad_requests, each_answers_its_error_and_writes_nothing)
{
	static const char *const env[] = {"BULKREG_WEBHOOK_ALLOW_PRIVATE=0", "BULKREG_RATE_LIMIT=0",
	                                  NULL};
	struct ctx c;
	memset(&c, 0, sizeof(c));
	c.db = t_db();
	t_org_new(&c.org);
	t_api_start(&c.api, env);
	snprintf(c.base, sizeof(c.base), "http://127.0.0.1:%d", c.api.port);
	t_uuid(c.none);

	/* The one fixture session; everything else must stay unwritten. */
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions", c.base);
	t_http(&r, "POST", url, c.org.token, SESSION("{\"title\":\"Fixture\",\"capacity\":5}"),
	       NULL);
	cr_assert_eq(r.status, 201, "fixture session: %ld %s", r.status, r.body);
	snprintf(c.sid, sizeof(c.sid), "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);

	cr_assert_geq(NBAD, 40, "the table holds %zu bad requests", NBAD);
	for (size_t i = 0; i < NBAD; i++)
		send_one(&c, &table[i]);

	cr_expect_eq(org_count(&c, "SELECT count(*) FROM sessions WHERE organization_id = $1"), 1,
	             "sessions were created");
	cr_expect_eq(org_count(&c, "SELECT count(*) FROM people p JOIN sessions s"
	                           " ON s.id = p.session_id WHERE s.organization_id = $1"),
	             0, "people were created");
	cr_expect_eq(org_count(&c, "SELECT count(*) FROM jobs WHERE organization_id = $1"), 0,
	             "jobs were created");
	cr_expect_eq(org_count(&c, "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id"
	                           " WHERE j.organization_id = $1"),
	             0, "tasks were created");
	cr_expect_eq(
	    org_count(&c, "SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1"), 0,
	    "webhook endpoints were created");
	cr_expect_eq(
	    org_count(&c, "SELECT count(*) FROM webhook_events WHERE organization_id = $1"), 0,
	    "webhook events were created");
	cr_expect_eq(org_count(&c, "SELECT people_count + registrants_count + waitlist_count +"
	                           " pending_count FROM sessions WHERE organization_id = $1"),
	             0, "the fixture session's counters moved");

	cr_expect(t_proc_stop(&c.api, SIGTERM, 20000) == 0, "the API did not exit cleanly");
	cr_expect(!log_has(&c.api, "database error"),
	          "the API logged a database error (a bad request reached PostgreSQL)");
	PQfinish(c.db);
}

/*
 * More query parameters, or a longer query, than the server takes is a JSON
 * answer (libmicrohttpd alone runs out of connection memory storing them
 * and closes the connection without one); the connection is closed after.
 */
Test(bad_requests, oversized_queries_are_answered)
{
	struct t_proc api;
	t_api_start(&api, NULL);
	static char url[64 * 1024];
	for (int round = 0; round < 3; round++) {
		int n = snprintf(url, sizeof(url), "%s/v1/jobs?", api.url);
		size_t len = (size_t)n;
		int params = round == 0 ? 1000 : round == 1 ? 101 : 1;
		for (int i = 0; i < params; i++)
			len += (size_t)snprintf(url + len, sizeof(url) - len, "%sa%d=1",
			                        i ? "&" : "", i);
		if (round == 2) {
			/* One parameter, 9,000 bytes long. */
			for (int i = 0; i < 9000; i++)
				url[len++] = 'x';
			url[len] = '\0';
		}
		struct t_resp r;
		t_http(&r, "GET", url, NULL, NULL, NULL);
		long want = round == 2 ? 414 : 400;
		cr_expect_eq(r.status, want, "round %d: %ld %s", round, r.status, r.body);
		const char *code = json_string_value(
		    json_object_get(json_array_get(json_object_get(r.json, "errors"), 0), "code"));
		cr_expect(code &&
		              strcmp(code, round == 2 ? "uri_too_long" : "invalid_parameter") == 0,
		          "round %d: code %s", round, code ? code : "(none)");
		t_resp_free(&r);
	}
	/* 100 parameters are still the route's to judge (unknown ones here: 401 first). */
	int n = snprintf(url, sizeof(url), "%s/v1/jobs?", api.url);
	size_t len = (size_t)n;
	for (int i = 0; i < 100; i++)
		len += (size_t)snprintf(url + len, sizeof(url) - len, "%sa%d=1", i ? "&" : "", i);
	struct t_resp r;
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_expect_eq(r.status, 401, "100 parameters: %ld %s", r.status, r.body);
	t_resp_free(&r);
	cr_expect(t_proc_stop(&api, SIGTERM, 20000) == 0, "the API did not exit cleanly");
}

/*
 * Sends req (len bytes, then extra filler bytes of a body, as a client that
 * writes everything before reading) on a new connection to 127.0.0.1:port
 * and reads until the server closes it; the answer into out.
 */
static size_t raw_exchange(int port, const char *req, size_t len, size_t extra, char *out,
                           size_t cap)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	cr_assert(fd >= 0);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	cr_assert(send(fd, req, len, MSG_NOSIGNAL) == (ssize_t)len);
	static char filler[64 * 1024];
	memset(filler, 'f', sizeof(filler));
	for (size_t sent = 0; sent < extra;) {
		ssize_t n = send(fd, filler, sizeof(filler), MSG_NOSIGNAL);
		if (n <= 0)
			break; /* the server may close first: what it answered must be readable */
		sent += (size_t)n;
	}
	size_t got = 0;
	for (;;) {
		ssize_t n = recv(fd, out + got, cap - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	out[got] = '\0';
	close(fd);
	return got;
}

/*
 * out is one HTTP answer with status and a JSON:API error document whose
 * first error has code; its Content-Length is its body's length.
 */
static void expect_json_refusal(const char *what, const char *out, int status, const char *code)
{
	int got = 0;
	cr_expect(sscanf(out, "HTTP/1.1 %d ", &got) == 1 && got == status, "%s: status %d: %.300s",
	          what, got, out);
	const char *end = strstr(out, "\r\n\r\n");
	cr_assert_not_null(end, "%s: no end of head: %.300s", what, out);
	const char *body = end + 4;
	const char *ctype = strstr(out, "Content-Type: application/vnd.api+json");
	cr_expect(ctype && ctype < end, "%s: not a JSON:API document: %.300s", what, out);
	const char *clen = strstr(out, "Content-Length: ");
	cr_expect(clen && clen < end && strtoul(clen + 16, NULL, 10) == strlen(body),
	          "%s: Content-Length is not the body's length: %.400s", what, out);
	json_error_t jerr;
	json_t *doc = json_loads(body, 0, &jerr);
	cr_assert_not_null(doc, "%s: body is not JSON (%s): %.300s", what, jerr.text, body);
	json_t *e = json_array_get(json_object_get(doc, "errors"), 0);
	char want[8];
	snprintf(want, sizeof(want), "%d", status);
	const char *st = json_string_value(json_object_get(e, "status"));
	const char *c = json_string_value(json_object_get(e, "code"));
	cr_expect(st && strcmp(st, want) == 0, "%s: errors[0].status %s", what, st ? st : "-");
	cr_expect(c && strcmp(c, code) == 0, "%s: errors[0].code %s, not %s", what, c ? c : "-",
	          code);
	json_decref(doc);
}

/*
 * What the HTTP library refuses before (or while) reading a request is
 * answered as a JSON:API document too, once, and reaches a client that
 * sends all it has before reading (docs/openapi.yaml, Errors): a request
 * line or header block over the connection's memory, a malformed
 * Content-Length or chunk, an HTTP/2 preface, on the API and on a worker's
 * metrics port, on a new connection and on a kept-alive one.
 */
Test(bad_requests, http_layer_refusals_are_json_documents)
{
	struct t_proc api, worker;
	t_api_start(&api, NULL);
	t_worker_start(&worker, NULL);
	static char req[256 * 1024], out[256 * 1024];
	struct {
		const char *what;
		int status;
		const char *code;
		size_t extra;
	} cases[] = {
	    {"request line of 70 KiB", 414, "uri_too_long", 0},
	    {"header of 70 KiB", 431, "header_fields_too_large", 0},
	    {"Content-Length: abc", 400, "malformed_request", 0},
	    {"Content-Length past 2^64", 413, "payload_too_large", 0},
	    {"HTTP/2 preface", 505, "http_version_not_supported", 0},
	    {"malformed chunk, then 1 MiB more", 400, "malformed_request", 1 << 20},
	    {"Content-Length: 1x after a kept-alive request", 400, "malformed_request", 0},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int len = 0;
		switch (i) {
		case 0:
			len = snprintf(req, sizeof(req),
			               "GET /v1/jobs?q=%070000d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
			break;
		case 1:
			len = snprintf(
			    req, sizeof(req),
			    "GET /v1/jobs HTTP/1.1\r\nHost: x\r\nX-Big: %070000d\r\n\r\n", 0);
			break;
		case 2:
			len = snprintf(req, sizeof(req),
			               "POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
			               "Content-Length: abc\r\n\r\n");
			break;
		case 3:
			len = snprintf(req, sizeof(req),
			               "POST /v1/sessions HTTP/1.1\r\nHost: x\r\n"
			               "Content-Length: 99999999999999999999999\r\n\r\n");
			break;
		case 4:
			len = snprintf(req, sizeof(req), "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
			break;
		case 5:
			len = snprintf(
			    req, sizeof(req),
			    "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\n"
			    "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
			    "ZZ\r\n");
			break;
		default:
			len = snprintf(
			    req, sizeof(req),
			    "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
			    "POST /v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n");
			break;
		}
		cr_assert(len > 0 && (size_t)len < sizeof(req));
		for (int on = 0; on < 2; on++) {
			int port = on ? worker.port : api.port;
			raw_exchange(port, req, (size_t)len, cases[i].extra, out, sizeof(out));
			char what[128];
			snprintf(what, sizeof(what), "%s (%s)", cases[i].what,
			         on ? "worker" : "API");
			const char *answer = out;
			if (i == 6) {
				/* The first answer is the health check's; the refusal follows it.
				 */
				cr_expect(strncmp(out, "HTTP/1.1 200 ", 13) == 0, "%s: %.200s",
				          what, out);
				answer = strstr(out + 1, "HTTP/1.1 400 ");
				cr_assert_not_null(answer, "%s: no second answer: %.400s", what,
				                   out);
			}
			expect_json_refusal(what, answer, cases[i].status, cases[i].code);
		}
	}
	/* Both still serve. */
	char health[96];
	snprintf(health, sizeof(health), "%s/healthz", api.url);
	cr_expect_eq(t_http_status(health, 5000), 200);
	cr_expect(t_proc_stop(&worker, SIGTERM, 20000) == 0, "the worker did not exit cleanly");
	cr_expect(t_proc_stop(&api, SIGTERM, 20000) == 0, "the API did not exit cleanly");
}
