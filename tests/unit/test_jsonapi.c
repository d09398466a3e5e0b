/*
 * test_jsonapi.c - error documents (api/jsonapi.c): a list cut at
 * JA_MAX_ERRORS says how many problems it left out (docs/openapi.yaml,
 * ErrorDocument).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <string.h>

#include "jsonapi.h"

/* Sends e into a fresh response and parses its body; the caller frees both. */
static json_t *send_doc(struct ja_errors *e, struct http_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	sb_init(&resp->body, (size_t)1 << 30);
	ja_errors_send(e, resp);
	json_error_t err;
	json_t *doc = json_loadb(sb_str(&resp->body), resp->body.len, 0, &err);
	cr_assert_not_null(doc, "not JSON: %s", err.text);
	return doc;
}

static void add_n(struct ja_errors *e, int n)
{
	for (int i = 0; i < n; i++)
		ja_error_add(e, 422, "validation_failed", "Validation failed", "A problem.",
		             "/data/attributes/x");
}

Test(jsonapi, a_complete_list_has_no_meta)
{
	struct ja_errors e;
	ja_errors_init(&e);
	add_n(&e, JA_MAX_ERRORS);
	struct http_resp resp;
	json_t *doc = send_doc(&e, &resp);
	cr_expect_eq(resp.status, 422);
	cr_expect_eq(json_array_size(json_object_get(doc, "errors")), JA_MAX_ERRORS);
	cr_expect_null(json_object_get(doc, "meta"));
	json_decref(doc);
	sb_free(&resp.body);
}

Test(jsonapi, a_cut_list_says_how_many_were_left_out)
{
	struct ja_errors e;
	ja_errors_init(&e);
	add_n(&e, JA_MAX_ERRORS + 7);
	struct http_resp resp;
	json_t *doc = send_doc(&e, &resp);
	cr_expect_eq(json_array_size(json_object_get(doc, "errors")), JA_MAX_ERRORS);
	json_t *meta = json_object_get(doc, "meta");
	cr_assert_not_null(meta, "no meta in a list cut at %d problems", JA_MAX_ERRORS);
	cr_expect_eq(json_integer_value(json_object_get(meta, "errors_total")), JA_MAX_ERRORS + 7);
	cr_expect_eq(json_integer_value(json_object_get(meta, "errors_omitted")), 7);
	json_decref(doc);
	sb_free(&resp.body);
}

Test(jsonapi, problems_too_big_for_the_document_are_counted)
{
	struct ja_errors e;
	ja_errors_init(&e);
	static char detail[64 * 1024];
	memset(detail, 'x', sizeof(detail) - 1);
	int n = 0;
	while (e.omitted == 0 && n < JA_MAX_ERRORS) {
		ja_error_add(&e, 422, "validation_failed", "Validation failed", detail, NULL);
		n++;
	}
	cr_assert_gt(e.omitted, 0, "the size cap was never reached");
	struct http_resp resp;
	json_t *doc = send_doc(&e, &resp);
	size_t listed = json_array_size(json_object_get(doc, "errors"));
	json_t *meta = json_object_get(doc, "meta");
	cr_assert_not_null(meta);
	cr_expect_eq(json_integer_value(json_object_get(meta, "errors_total")), n);
	cr_expect_eq(json_integer_value(json_object_get(meta, "errors_omitted")), n - (int)listed);
	json_decref(doc);
	sb_free(&resp.body);
}
