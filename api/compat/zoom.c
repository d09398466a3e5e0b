/*
 * zoom.c - Zoom's batch registration (see zoom.h and docs/compat/zoom.md):
 * the request read from JSON or multipart/form-data, one SQL call, and
 * Zoom's error shape for every failure on the way (the dialect's fail).
 * Stateless; thread-safe.
 */
#include "zoom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "jsonapi.h"
#include "log.h"
#include "validate.h"

/* Zoom's codes (docs/compat/zoom.md, "Errors"). */
#define ZOOM_INVALID        300
#define ZOOM_BAD_TOKEN      124
#define ZOOM_NO_WEBINAR     3001
#define ZOOM_FULL           3043
#define ZOOM_RATE_LIMITED   429
#define ZOOM_WEBINAR_PREFIX "/v2/webinars/"

/* One statement: registers the whole batch or, when it does not fit, nobody. */
static const db_stmt stmt_batch = {
    "zoom_batch",
    "SELECT outcome, body FROM zoom_batch_register($1, $2, $3::jsonb, $4::boolean, $5)", 5};

static bool refuse(struct zoom_problem *p, const char *field, const char *message)
{
	snprintf(p->field, sizeof(p->field), "%s", field);
	snprintf(p->message, sizeof(p->message), "%s", message);
	return false;
}

/* Registrant i as a native person {email, first_name, last_name}, into people. */
static bool read_registrant(const json_t *in, size_t i, json_t *people, struct zoom_problem *p)
{
	char field[48];
	const json_t *email = json_object_get(in, "email");
	const json_t *first = json_object_get(in, "first_name");
	const json_t *last = json_object_get(in, "last_name");
	snprintf(field, sizeof(field), "registrants[%zu]", i);
	if (!json_is_object(in))
		return refuse(p, field, "A registrant is an object.");
	snprintf(field, sizeof(field), "registrants[%zu].email", i);
	if (!json_is_string(email) ||
	    !val_email(json_string_value(email), json_string_length(email)))
		return refuse(p, field, "Invalid field: email must be a valid email address.");
	snprintf(field, sizeof(field), "registrants[%zu].first_name", i);
	if (!json_is_string(first) || json_string_length(first) == 0)
		return refuse(p, field, "Invalid field: first_name is required.");
	snprintf(field, sizeof(field), "registrants[%zu].last_name", i);
	if (last && !json_is_null(last) && !json_is_string(last))
		return refuse(p, field, "Invalid field: last_name must be a string.");
	json_t *person = json_object();
	if (!person || json_object_set(person, "email", (json_t *)email) ||
	    json_object_set(person, "first_name", (json_t *)first) ||
	    (json_is_string(last) && json_object_set(person, "last_name", (json_t *)last)) ||
	    json_array_append_new(people, person)) {
		json_decref(person);
		return refuse(p, "", "Out of memory.");
	}
	/* The native bounds (lengths, characters) hold for these people too. */
	struct ja_errors e;
	ja_errors_init(&e);
	bool ok = val_person(person, VAL_PERSON_NEW, "", &e);
	if (!ok) {
		snprintf(field, sizeof(field), "registrants[%zu]", i);
		char message[240];
		snprintf(message, sizeof(message), "Invalid field: %.200s", e.detail);
		refuse(p, field, message);
	}
	ja_errors_free(&e);
	return ok;
}

static bool read_registrants(const json_t *list, struct zoom_batch *b, struct zoom_problem *p)
{
	if (!list)
		return refuse(p, "registrants", "Missing field: registrants.");
	if (!json_is_array(list) || json_array_size(list) == 0 ||
	    json_array_size(list) > ZOOM_MAX_REGISTRANTS)
		return refuse(p, "registrants",
		              "registrants must be an array of 1 to 30 registrants.");
	json_t *people = json_array();
	if (!people)
		return refuse(p, "", "Out of memory.");
	size_t i;
	const json_t *in;
	json_array_foreach(list, i, in)
	{
		if (!read_registrant(in, i, people, p)) {
			json_decref(people);
			return false;
		}
	}
	b->people = people;
	return true;
}

bool zoom_batch_json(const json_t *doc, struct zoom_batch *b, struct zoom_problem *p)
{
	const json_t *aa = json_object_get(doc, "auto_approve");
	if (!json_is_object(doc))
		return refuse(p, "", "The body must be a JSON object.");
	if (aa && !json_is_boolean(aa))
		return refuse(p, "auto_approve", "Invalid field: auto_approve must be a boolean.");
	if (!read_registrants(json_object_get(doc, "registrants"), b, p))
		return false;
	b->auto_approve = json_is_true(aa);
	return true;
}

bool zoom_batch_form(const char *auto_approve, const char *registrants, size_t len,
                     struct zoom_batch *b, struct zoom_problem *p)
{
	bool aa = false;
	if (auto_approve && strcasecmp(auto_approve, "true") == 0)
		aa = true;
	else if (auto_approve && strcasecmp(auto_approve, "false") != 0)
		return refuse(p, "auto_approve", "Invalid field: auto_approve is true or false.");
	if (!registrants)
		return refuse(p, "registrants", "Missing field: registrants.");
	json_error_t jerr;
	json_t *list = json_loadb(registrants, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!list)
		return refuse(p, "registrants", "Invalid field: registrants is not valid JSON.");
	bool ok = read_registrants(list, b, p);
	json_decref(list);
	if (ok)
		b->auto_approve = aa;
	return ok;
}

void zoom_batch_free(struct zoom_batch *b)
{
	json_decref(b->people);
	b->people = NULL;
}

br_status zoom_error_doc(strbuf *sb, int code, const char *message, const struct zoom_problem *p)
{
	br_status st = sb_appendf(sb, "{\"code\":%d,\"message\":\"", code);
	if (st == BR_OK)
		st = ja_append_text(sb, message);
	if (st == BR_OK && p && p->field[0]) {
		st = sb_appends(sb, "\",\"errors\":[{\"field\":\"");
		if (st == BR_OK)
			st = ja_append_text(sb, p->field);
		if (st == BR_OK)
			st = sb_appends(sb, "\",\"message\":\"");
		if (st == BR_OK)
			st = ja_append_text(sb, p->message);
		if (st == BR_OK)
			st = sb_appends(sb, "\"}]}");
	} else if (st == BR_OK) {
		st = sb_appends(sb, "\"}");
	}
	return st;
}

/* Answers status with Zoom's error document; headers already set stay. */
static void reply(struct api_req *r, unsigned status, int code, const char *message,
                  const struct zoom_problem *p)
{
	struct http_resp *resp = r->resp;
	resp->status = status;
	resp->content_type = "application/json";
	sb_reset(&resp->body);
	if (zoom_error_doc(&resp->body, code, message, p) != BR_OK) {
		sb_reset(&resp->body);
		LOG_WARN("zoom: error document of %zu bytes lost", strlen(message));
	}
}

/*
 * The webinar id of a path /v2/webinars/<id>/batch_registrants whatever
 * <id> is (Zoom's ids are numbers: no session has one), cut to cap - 1
 * bytes; false for any other path.
 */
static bool webinar_of(const char *path, char *id, size_t cap)
{
	size_t plen = strlen(ZOOM_WEBINAR_PREFIX);
	if (strncmp(path, ZOOM_WEBINAR_PREFIX, plen) != 0)
		return false;
	const char *seg = path + plen;
	size_t n = strcspn(seg, "/");
	const char *rest = seg + n;
	if (n == 0 ||
	    (strcmp(rest, "/batch_registrants") != 0 && strcmp(rest, "/batch_registrants/") != 0))
		return false;
	snprintf(id, cap, "%.*s", (int)(n < cap ? n : cap - 1), seg);
	return true;
}

/*
 * The dialect's fail: a native failure (docs/openapi.yaml codes) in Zoom's
 * shape. Codes Zoom documents are mapped (docs/compat/zoom.md); any other
 * failure keeps its HTTP status, which is also its code, as Zoom's own 429.
 */
static void zoom_fail(struct api_req *r, unsigned status, const char *code, const char *detail)
{
	static const struct {
		const char *native;
		unsigned status;
		int code;
		const char *message; /* NULL: the native detail */
	} map[] = {
	    {"unauthorized", 401, ZOOM_BAD_TOKEN, "Invalid access token."},
	    {"rate_limited", 429, ZOOM_RATE_LIMITED,
	     "You have reached the maximum per-second rate limit for this API. Try again later."},
	    {"invalid_json", 400, ZOOM_INVALID, NULL},
	    {"validation_failed", 400, ZOOM_INVALID, NULL},
	    {"invalid_parameter", 400, ZOOM_INVALID, NULL},
	    {"unsupported_media_type", 415, 415,
	     "Send the body as application/json or multipart/form-data."},
	};
	char id[65], message[128];
	if (strcmp(code, "not_found") == 0 && webinar_of(r->http->path, id, sizeof(id))) {
		snprintf(message, sizeof(message), "Webinar does not exist: %s.", id);
		reply(r, 404, ZOOM_NO_WEBINAR, message, NULL);
		return;
	}
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		if (strcmp(code, map[i].native) == 0) {
			reply(r, map[i].status, map[i].code,
			      map[i].message ? map[i].message : detail, NULL);
			return;
		}
	}
	reply(r, status, (int)status, detail, NULL);
}

const struct api_dialect compat_zoom_dialect = {"/v2/", zoom_fail};

/* The batch of the request, JSON or form; false after answering. */
static bool read_request(struct api_req *r, struct zoom_batch *b)
{
	struct zoom_problem p = {"", ""};
	br_status fst = http_req_form_status(r->http);
	bool ok;
	if (fst == BR_NOTFOUND) {
		json_t *doc = ja_parse_body(r); /* 415 or 400 answered through zoom_fail */
		if (!doc)
			return false;
		ok = zoom_batch_json(doc, b, &p);
		json_decref(doc);
	} else if (fst != BR_OK) {
		ok = refuse(&p, "",
		            fst == BR_TOOBIG ? "The form has too many fields."
		                             : "The form body is malformed.");
	} else {
		size_t len = 0;
		const char *list = http_req_form(r->http, "registrants", &len);
		ok =
		    zoom_batch_form(http_req_form(r->http, "auto_approve", NULL), list, len, b, &p);
	}
	if (!ok)
		reply(r, 400, ZOOM_INVALID, p.field[0] ? "Validation Failed." : p.message, &p);
	return ok;
}

/* Answers the outcome of zoom_batch_register(). */
static void answer(struct api_req *r, const PGresult *res)
{
	const char *outcome = PQntuples(res) ? PQgetvalue(res, 0, 0) : "";
	if (strcmp(outcome, "registered") == 0) {
		http_resp_json(r->resp, 201, PQgetvalue(res, 0, 1));
		r->resp->content_type = "application/json";
	} else if (strcmp(outcome, "session_full") == 0) {
		reply(r, 400, ZOOM_FULL, "Webinar has reached maximum attendee capacity.", NULL);
	} else if (strcmp(outcome, "registration_closed") == 0) {
		reply(r, 400, ZOOM_INVALID, "Registration for this webinar is closed.", NULL);
	} else if (strcmp(outcome, "session_not_found") == 0) {
		zoom_fail(r, 404, "not_found", "No such webinar.");
	} else {
		LOG_ERROR("zoom: unexpected outcome '%s'", outcome);
		zoom_fail(r, 500, "internal_error", "The request failed unexpectedly.");
	}
}

void zoom_route_batch_registrants(struct api_req *r)
{
	struct zoom_batch b = {NULL, false};
	char *people = NULL;
	PGresult *res = NULL;
	if (!read_request(r, &b))
		goto out;
	people = json_dumps(b.people, JSON_COMPACT);
	if (!people) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	const char *params[] = {r->org_id, r->id, people, b.auto_approve ? "true" : "false",
	                        r->app->cfg->join_url_base};
	res = ja_query(r, &stmt_batch, params);
	if (res)
		answer(r, res);
out:
	PQclear(res);
	free(people);
	zoom_batch_free(&b);
}
