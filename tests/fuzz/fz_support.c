/*
 * fz_support.c - shared checks of the libFuzzer harnesses (see
 * fz_support.h). No state.
 */
#include "fz_support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fz_fail(const char *file, int line, const char *what)
{
	fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
	abort();
}

char *fz_cstr(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	FZ_CHECK(s != NULL);
	if (size)
		memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

void fz_resp_init(struct http_resp *resp)
{
	memset(resp, 0, sizeof(*resp));
	resp->status = 500;
	sb_init(&resp->body, (size_t)1 << 30);
}

void fz_resp_free(struct http_resp *resp)
{
	sb_free(&resp->body);
	for (int i = 0; i < resp->nheaders; i++) {
		free(resp->headers[i].name);
		free(resp->headers[i].value);
	}
	resp->nheaders = 0;
}

static void check_error(const json_t *err, unsigned status, size_t index)
{
	FZ_CHECK(json_is_object(err));
	const json_t *st = json_object_get(err, "status");
	FZ_CHECK(json_is_string(st));
	if (index == 0) {
		char want[16];
		snprintf(want, sizeof(want), "%u", status);
		FZ_CHECK(strcmp(json_string_value(st), want) == 0);
	}
	FZ_CHECK(json_is_string(json_object_get(err, "code")));
	FZ_CHECK(json_is_string(json_object_get(err, "title")));
	const json_t *detail = json_object_get(err, "detail");
	FZ_CHECK(!detail || json_is_string(detail));
	const json_t *source = json_object_get(err, "source");
	if (source) {
		const json_t *ptr = json_object_get(source, "pointer");
		FZ_CHECK(json_is_string(ptr));
		FZ_CHECK(json_string_value(ptr)[0] == '/');
	}
}

void fz_check_error_doc(const struct http_resp *resp, unsigned status)
{
	FZ_CHECK(resp->status == status);
	json_error_t jerr;
	json_t *doc = json_loadb(sb_str(&resp->body), resp->body.len, 0, &jerr);
	if (!doc)
		fprintf(stderr, "error document is not JSON: %s\n%.*s\n", jerr.text,
		        (int)(resp->body.len > 4096 ? 4096 : resp->body.len), sb_str(&resp->body));
	FZ_CHECK(doc != NULL);
	const json_t *errors = json_object_get(doc, "errors");
	FZ_CHECK(json_is_array(errors) && json_array_size(errors) > 0);
	size_t i;
	const json_t *err;
	json_array_foreach(errors, i, err)
	{
		check_error(err, status, i);
	}
	json_decref(doc);
}
