/*
 * test_taskmsg.c - task message bodies: encode/parse round trip, and the
 * parser's refusal of anything but {"task_id":"<canonical uuid>",...}:
 * bodies come from the broker and are untrusted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "taskmsg.h"

#define TASK "0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f405162"
#define JOB  "f47ac10b-58cc-4372-a567-0e02b2c3d479"

Test(taskmsg, encode_parse_round_trip)
{
	char body[TASKMSG_MAX];
	size_t n = taskmsg_encode(TASK, JOB, body);
	cr_assert_eq(n, strlen(body));
	cr_assert_lt(n, TASKMSG_MAX);

	json_error_t jerr;
	json_t *doc = json_loads(body, 0, &jerr);
	cr_assert_not_null(doc, "not JSON: %s (%s)", body, jerr.text);
	cr_assert_str_eq(json_string_value(json_object_get(doc, "task_id")), TASK);
	cr_assert_str_eq(json_string_value(json_object_get(doc, "job_id")), JOB);
	json_decref(doc);

	char id[UUID_LEN + 1];
	cr_assert_eq(taskmsg_parse(body, n, id), BR_OK);
	cr_assert_str_eq(id, TASK);
}

Test(taskmsg, parse_accepts_other_members_and_order)
{
	const char *body = "{\"job_id\":\"" JOB "\",\"extra\":[1,2],\"task_id\":\"" TASK "\"}";
	char id[UUID_LEN + 1];
	cr_assert_eq(taskmsg_parse(body, strlen(body), id), BR_OK);
	cr_assert_str_eq(id, TASK);
	/* Only len bytes are read. */
	char padded[256];
	int n = snprintf(padded, sizeof(padded), "{\"task_id\":\"%s\"}garbage", TASK);
	cr_assert_gt(n, 0);
	cr_assert_eq(taskmsg_parse(padded, (size_t)n - 7, id), BR_OK);
	cr_assert_str_eq(id, TASK);
}

static void assert_rejected(const char *body, size_t len, const char *why)
{
	char id[UUID_LEN + 1];
	memset(id, 'Z', sizeof(id));
	cr_expect_eq(taskmsg_parse(body, len, id), BR_INVAL, "accepted %s: %.80s", why, body);
	for (size_t i = 0; i < sizeof(id); i++)
		cr_expect_eq(id[i], 'Z', "%s: output written on failure", why);
}

static void rejected(const char *body, const char *why)
{
	assert_rejected(body, strlen(body), why);
}

Test(taskmsg, rejects_not_json)
{
	rejected("", "an empty body");
	rejected("nope", "text");
	rejected("{", "a truncated object");
	rejected("{\"task_id\":\"" TASK "\"", "a missing brace");
	rejected("{\"task_id\":\"" TASK "\"} {}", "two documents");
	rejected("\xff\xfe{}", "binary");
	assert_rejected("{\"task_id\":\"" TASK "\"}", 5, "a cut body");
}

Test(taskmsg, rejects_wrong_types)
{
	rejected("[\"" TASK "\"]", "an array");
	rejected("\"" TASK "\"", "a bare string");
	rejected("42", "a number");
	rejected("null", "null");
	rejected("{}", "an empty object");
	rejected("{\"job_id\":\"" JOB "\"}", "no task_id");
	rejected("{\"task_id\":42}", "a numeric task_id");
	rejected("{\"task_id\":null}", "a null task_id");
	rejected("{\"task_id\":true}", "a boolean task_id");
	rejected("{\"task_id\":[\"" TASK "\"]}", "an array task_id");
	rejected("{\"task_id\":{\"id\":\"" TASK "\"}}", "an object task_id");
	rejected("{\"TASK_ID\":\"" TASK "\"}", "a differently cased key");
}

Test(taskmsg, rejects_bad_uuids)
{
	rejected("{\"task_id\":\"\"}", "an empty id");
	rejected("{\"task_id\":\"0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516\"}", "35 characters");
	rejected("{\"task_id\":\"0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f4051622\"}", "37 characters");
	rejected("{\"task_id\":\"0b9e2c1a4f3d4e8b9a7c1d2e3f405162\"}", "no dashes");
	rejected("{\"task_id\":\"0b9e2c1a-4f3d4-e8b-9a7c-1d2e3f405162\"}", "a misplaced dash");
	rejected("{\"task_id\":\"0b9e2c1g-4f3d-4e8b-9a7c-1d2e3f405162\"}", "a non-hex digit");
	rejected("{\"task_id\":\"{0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516}\"}", "braces");
	rejected("{\"task_id\":\" 0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516\"}", "a space");
	rejected("{\"task_id\":\"0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516\\u0000\"}", "a NUL");
}

Test(taskmsg, rejects_upper_case_uuid)
{
	rejected("{\"task_id\":\"0B9E2C1A-4F3D-4E8B-9A7C-1D2E3F405162\"}", "upper case");
	rejected("{\"task_id\":\"0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516F\"}", "one upper-case digit");
}

Test(taskmsg, rejects_duplicate_keys)
{
	rejected("{\"task_id\":\"" TASK "\",\"task_id\":\"" JOB "\"}", "a duplicate task_id");
}

Test(taskmsg, rejects_huge_input)
{
	/* Valid JSON with a valid id, padded to 1 MiB: refused for its size alone. */
	size_t size = 1 << 20;
	char *body = malloc(size + 1);
	cr_assert_not_null(body);
	int head = snprintf(body, size, "{\"task_id\":\"%s\",\"pad\":\"", TASK);
	cr_assert_gt(head, 0);
	memset(body + head, 'a', size - (size_t)head - 2);
	memcpy(body + size - 2, "\"}", 3);
	cr_assert_eq(strlen(body), size);
	assert_rejected(body, size, "a 1 MiB body");

	/* Deep nesting is refused, not a stack overflow. */
	size_t depth = 100000;
	char *deep = malloc(2 * depth + 1);
	cr_assert_not_null(deep);
	memset(deep, '[', depth);
	memset(deep + depth, ']', depth);
	deep[2 * depth] = '\0';
	assert_rejected(deep, 2 * depth, "deep nesting");
	free(deep);
	free(body);
}

Test(taskmsg, is_uuid)
{
	cr_assert(taskmsg_is_uuid(TASK, 36));
	cr_assert(taskmsg_is_uuid("00000000-0000-0000-0000-000000000000", 36));
	cr_assert_not(taskmsg_is_uuid(TASK, 35));
	cr_assert_not(taskmsg_is_uuid("", 0));
	cr_assert_not(taskmsg_is_uuid("0B9E2C1A-4F3D-4E8B-9A7C-1D2E3F405162", 36));
	cr_assert_not(taskmsg_is_uuid("0b9e2c1a_4f3d-4e8b-9a7c-1d2e3f405162", 36));
	cr_assert_not(taskmsg_is_uuid("0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516-", 36));
}
