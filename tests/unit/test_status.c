/*
 * test_status.c - every br_status code has its name and a message, names
 * are distinct, and out-of-range codes are handled (STYLE: "a test checks
 * every code has a message").
 */
#include <string.h>

#include <criterion/criterion.h>

#include "status.h"

/* The expected name and message of each code, from the same X-macro. */
static const struct {
	br_status code;
	const char *name;
	const char *message;
} expected[] = {
#define T_STATUS_ROW(name, msg) {BR_##name, #name, msg},
    BR_STATUS_MAP(T_STATUS_ROW)
#undef T_STATUS_ROW
};
#define NCODES ((int)(sizeof(expected) / sizeof(expected[0])))

Test(status, ok_is_zero_and_codes_are_dense)
{
	cr_assert_eq(BR_OK, 0);
	cr_assert_eq(NCODES, (int)BR_STATUS_COUNT_);
	for (int i = 0; i < NCODES; i++)
		cr_assert_eq((int)expected[i].code, i, "code %s is %d", expected[i].name,
		             (int)expected[i].code);
}

Test(status, every_code_has_a_message_and_its_name)
{
	for (int i = 0; i < NCODES; i++) {
		br_status st = expected[i].code;
		const char *msg = br_strerror(st);
		const char *name = br_status_name(st);
		cr_assert_not_null(msg, "code %d has no message", i);
		cr_assert_not_null(name, "code %d has no name", i);
		cr_expect_gt(strlen(msg), 0, "%s has an empty message", expected[i].name);
		cr_expect_str_eq(msg, expected[i].message);
		cr_expect_str_eq(name, expected[i].name);
		cr_expect_str_neq(msg, "unknown status", "%s", expected[i].name);
		cr_expect_str_neq(name, "UNKNOWN", "%s", expected[i].name);
	}
}

Test(status, names_and_messages_are_distinct)
{
	for (int i = 0; i < NCODES; i++) {
		for (int j = i + 1; j < NCODES; j++) {
			cr_expect_str_neq(br_status_name(expected[i].code),
			                  br_status_name(expected[j].code), "codes %d and %d", i,
			                  j);
			cr_expect_str_neq(br_strerror(expected[i].code),
			                  br_strerror(expected[j].code), "codes %d and %d", i, j);
		}
	}
}

Test(status, out_of_range_is_unknown)
{
	const int codes[] = {BR_STATUS_COUNT_, BR_STATUS_COUNT_ + 1, 1000, -1, -1000};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		cr_expect_str_eq(br_strerror((br_status)codes[i]), "unknown status", "code %d",
		                 codes[i]);
		cr_expect_str_eq(br_status_name((br_status)codes[i]), "UNKNOWN", "code %d",
		                 codes[i]);
	}
}
