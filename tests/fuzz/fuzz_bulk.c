/*
 * fuzz_bulk.c - libFuzzer harness for request bodies: the JSON parsing of
 * api/jsonapi.c and the validators of api/validate.h.
 *
 * The input is a request body. It goes through the API's own ja_parse_body
 * (json_loadb with JSON_REJECT_DUPLICATES, an object only, the nesting
 * limit) on a request without a connection: libmicrohttpd answers a header
 * lookup on a NULL connection with NULL, i.e. no Content-Type, which the API
 * takes as JSON. A document that parses then goes through every validator a
 * route applies to a body: val_bulk (POST /v1/sessions/:id/people/bulk, both
 * accepted forms), val_data_attributes + val_person + the meta booleans
 * (POST /v1/sessions/:id/people), val_session (POST /v1/sessions) and
 * val_optional_bool (PUT /v1/jobs/:id). Every error document is parsed back
 * and must be a well-formed JSON:API document. The raw input also goes to
 * val_email, val_rfc3339 and val_utf8_len.
 *
 * Memory errors, leaks, undefined behaviour and failed checks abort.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "fz_support.h"
#include "jsonapi.h"
#include "validate.h"

/* Small, so that the fuzzer also reaches too_many_tasks (production: 50). */
#define FUZZ_MAX_TASKS 8
#define FUZZ_MAX_BODY  ((size_t)1 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* What val_email promises of an address it accepts. */
static void check_email(const char *s, size_t len)
{
	if (!val_email(s, len))
		return;
	FZ_CHECK(len <= VAL_EMAIL_MAX);
	const char *at = memchr(s, '@', len);
	FZ_CHECK(at != NULL && at > s && (size_t)(at - s) <= VAL_EMAIL_LOCAL);
	FZ_CHECK(memchr(at + 1, '@', len - (size_t)(at - s) - 1) == NULL);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		FZ_CHECK(c >= 0x20 && c != 0x7f && c != ' ');
	}
}

static void check_raw(const uint8_t *data, size_t size)
{
	char *s = fz_cstr(data, size);
	check_email(s, size);
	if (val_rfc3339(s))
		FZ_CHECK(strlen(s) >= 20 && s[4] == '-' && s[7] == '-');
	FZ_CHECK(val_utf8_len(s, size) <= size);
	free(s);
}

/* Sends e as the route would and checks the document; frees e. */
static void send_and_check(struct ja_errors *e, unsigned status)
{
	struct http_resp resp;
	fz_resp_init(&resp);
	FZ_CHECK(e->status == status);
	ja_errors_send(e, &resp);
	fz_check_error_doc(&resp, status);
	fz_resp_free(&resp);
}

static void check_bulk(const json_t *doc)
{
	struct val_bulk b = {.people = json_array()};
	struct ja_errors e;
	ja_errors_init(&e);
	val_bulk(doc, FUZZ_MAX_TASKS, &b, &e);
	if (e.count == 0) {
		/* Accepted: every task's person is in people, in order. */
		const json_t *data = json_object_get(doc, "data");
		const json_t *tasks = json_object_get(json_object_get(data, "attributes"), "tasks");
		FZ_CHECK(b.people != NULL);
		FZ_CHECK(json_array_size(tasks) >= 1 && json_array_size(tasks) <= FUZZ_MAX_TASKS);
		FZ_CHECK(json_array_size(b.people) == json_array_size(tasks));
		for (size_t i = 0; i < json_array_size(tasks); i++) {
			const json_t *attrs =
			    json_object_get(json_array_get(tasks, i), "attributes");
			FZ_CHECK(json_array_get(b.people, i) == attrs);
			FZ_CHECK(json_is_string(json_object_get(attrs, "email")));
		}
		ja_errors_free(&e);
	} else {
		send_and_check(&e, 422);
	}
	json_decref(b.people);
}

/* As route_people_create validates its body. */
static void check_person(const json_t *doc)
{
	struct ja_errors e;
	ja_errors_init(&e);
	bool override = false, auto_approve = false;
	const json_t *attrs = val_data_attributes(doc, "people", &e);
	if (attrs && val_person(attrs, VAL_PERSON_NEW, "/data/attributes", &e)) {
		/* A valid person is named: a valid address, an external id, or both. */
		const json_t *email = json_object_get(attrs, "email");
		const json_t *ext = json_object_get(attrs, "external_id");
		FZ_CHECK(json_is_string(email) || json_is_string(ext));
		if (json_is_string(email))
			check_email(json_string_value(email), json_string_length(email));
	}
	/* As route_people_patch: no identity required, a status allowed. */
	if (attrs) {
		struct ja_errors pe;
		ja_errors_init(&pe);
		if (val_person(attrs, VAL_PERSON_PATCH, "/data/attributes", &pe))
			FZ_CHECK(pe.count == 0);
		ja_errors_free(&pe);
	}
	const json_t *meta = json_object_get(doc, "meta");
	if (meta && !json_is_object(meta))
		ja_error_add(&e, 422, "validation_failed", "Validation failed",
		             "meta must be an object.", "/meta");
	if (json_is_object(meta)) {
		val_optional_bool(meta, "override_duplicates", "/meta", &e, &override);
		val_optional_bool(meta, "auto_approve", "/meta", &e, &auto_approve);
	}
	if (e.count)
		send_and_check(&e, 422);
	else
		ja_errors_free(&e);
}

/* As route_sessions_create and route_jobs_update validate theirs. */
static void check_session_and_update(const json_t *doc)
{
	struct ja_errors e;
	ja_errors_init(&e);
	const json_t *attrs = val_data_attributes(doc, "sessions", &e);
	if (attrs)
		val_session(attrs, false, "/data/attributes", &e);
	if (e.count)
		send_and_check(&e, 422);
	else
		ja_errors_free(&e);

	/* As route_sessions_patch. */
	ja_errors_init(&e);
	if (attrs)
		val_session(attrs, true, "/data/attributes", &e);
	if (e.count)
		send_and_check(&e, 422);
	else
		ja_errors_free(&e);

	ja_errors_init(&e);
	bool override = true;
	if (val_optional_bool(doc, "override_duplicates", "", &e, &override))
		FZ_CHECK(override == json_is_true(json_object_get(doc, "override_duplicates")));
	else
		FZ_CHECK(e.count == 1);
	if (e.count)
		send_and_check(&e, 422);
	else
		ja_errors_free(&e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_raw(data, size);
	if (size > FUZZ_MAX_BODY)
		return 0;

	struct http_req req;
	struct http_resp resp;
	memset(&req, 0, sizeof(req));
	sb_init(&req.body, FUZZ_MAX_BODY);
	FZ_CHECK(sb_append(&req.body, data, size) == BR_OK);
	fz_resp_init(&resp);
	struct api_req r = {.http = &req, .resp = &resp};

	json_t *doc = ja_parse_body(&r);
	if (!doc) {
		fz_check_error_doc(&resp, 400);
	} else {
		FZ_CHECK(json_is_object(doc));
		check_bulk(doc);
		check_person(doc);
		check_session_and_update(doc);
		json_decref(doc);
	}
	fz_resp_free(&resp);
	sb_free(&req.body);
	return 0;
}
