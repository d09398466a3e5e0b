/*
 * test_uuid.c - the one UUID validator (common/uuid.h): the 8-4-4-4-12
 * form, upper-case hex only where the caller accepts what PostgreSQL reads.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "uuid.h"

#define LOWER "0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f405162"
#define UPPER "0B9E2C1A-4F3D-4E8B-9A7C-1D2E3F405162"
#define MIXED "0b9e2c1a-4F3D-4e8b-9a7c-1d2e3f405162"

static bool any(const char *s)
{
	return uuid_valid(s, strlen(s), UUID_ANY_CASE);
}

static bool lower(const char *s)
{
	return uuid_valid(s, strlen(s), UUID_LOWER_CASE);
}

Test(uuid, length_constant_is_the_text_form)
{
	cr_assert_eq(UUID_LEN, strlen(LOWER));
}

Test(uuid, lower_case_is_valid_either_way)
{
	cr_assert(any(LOWER));
	cr_assert(lower(LOWER));
	cr_assert(lower("00000000-0000-0000-0000-000000000000"));
	cr_assert(lower("ffffffff-ffff-ffff-ffff-ffffffffffff"));
}

Test(uuid, upper_case_only_where_any_case_is_allowed)
{
	cr_assert(any(UPPER));
	cr_assert(any(MIXED));
	cr_assert_not(lower(UPPER));
	cr_assert_not(lower(MIXED));
}

Test(uuid, rejects_other_shapes)
{
	static const char *const bad[] = {
	    "",
	    "0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516",    /* short */
	    "0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f4051620",  /* long */
	    "0b9e2c1a4f3d-4e8b-9a7c-1d2e3f4051620",   /* dash moved */
	    "0b9e2c1a_4f3d-4e8b-9a7c-1d2e3f405162",   /* not a dash */
	    "0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f40516-",   /* dash for a digit */
	    "0b9e2c1g-4f3d-4e8b-9a7c-1d2e3f405162",   /* not hex */
	    "{0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f405162}", /* braces PostgreSQL reads, we do not */
	    "0b9e2c1a4f3d4e8b9a7c1d2e3f405162",       /* no dashes */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert_not(any(bad[i]), "accepted %s", bad[i]);
		cr_assert_not(lower(bad[i]), "accepted %s", bad[i]);
	}
}

Test(uuid, length_is_the_given_one_not_the_nul)
{
	/* The first 36 bytes of a longer string are a UUID when len says so. */
	cr_assert(uuid_valid(LOWER "tail", UUID_LEN, UUID_LOWER_CASE));
	cr_assert_not(uuid_valid(LOWER, UUID_LEN - 1, UUID_ANY_CASE));
}
