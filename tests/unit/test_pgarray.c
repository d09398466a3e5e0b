/*
 * test_pgarray.c - PostgreSQL array literals (common/pgarray.h): writing
 * with the quoting PostgreSQL's array input needs, in caller memory with a
 * hard bound, and reading the elements of a uuid[] literal.
 */
#include <string.h>

#include <criterion/criterion.h>

#include "pgarray.h"

#define ID1 "0b9e2c1a-4f3d-4e8b-9a7c-1d2e3f405162"
#define ID2 "f47ac10b-58cc-4372-a567-0e02b2c3d479"

/* Writes the elements into a buffer of the bound's size; returns a static copy. */
static const char *write_all(const char *const *elems, size_t n)
{
	static char out[512];
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += strlen(elems[i]);
	size_t cap = pga_bound(n, total);
	cr_assert_leq(cap, sizeof(out));
	struct pga_writer w;
	pga_start(&w, out, cap);
	for (size_t i = 0; i < n; i++)
		pga_add(&w, elems[i], strlen(elems[i]));
	const char *lit = pga_finish(&w);
	cr_assert_not_null(lit, "the bound was too small");
	cr_assert_lt(strlen(lit), cap);
	return lit;
}

Test(pgarray, empty_array)
{
	cr_assert_str_eq(write_all(NULL, 0), "{}");
}

Test(pgarray, plain_elements_are_written_as_they_are)
{
	const char *ids[] = {ID1, ID2};
	cr_assert_str_eq(write_all(ids, 2), "{" ID1 "," ID2 "}");
	const char *events[] = {"job.created", "job.ended"};
	cr_assert_str_eq(write_all(events, 2), "{job.created,job.ended}");
}

Test(pgarray, elements_are_quoted_where_postgresql_needs_it)
{
	const char *e1[] = {""};
	cr_assert_str_eq(write_all(e1, 1), "{\"\"}");
	const char *e2[] = {"NULL", "null", "nul"};
	cr_assert_str_eq(write_all(e2, 3), "{\"NULL\",\"null\",nul}");
	const char *e3[] = {"a,b", "{x}", "two words", "tab\there"};
	cr_assert_str_eq(write_all(e3, 4), "{\"a,b\",\"{x}\",\"two words\",\"tab\there\"}");
	const char *e4[] = {"say \"hi\"", "back\\slash"};
	cr_assert_str_eq(write_all(e4, 2), "{\"say \\\"hi\\\"\",\"back\\\\slash\"}");
}

Test(pgarray, worst_case_fits_its_bound)
{
	const char *worst[] = {"\"\\\"", "\\\\", "\"\""};
	cr_assert_str_eq(write_all(worst, 3), "{\"\\\"\\\\\\\"\",\"\\\\\\\\\",\"\\\"\\\"\"}");
}

Test(pgarray, overflow_gives_no_literal)
{
	char buf[8];
	struct pga_writer w;
	pga_start(&w, buf, sizeof(buf));
	pga_add(&w, "abcdef", 6);
	cr_assert_null(pga_finish(&w));
	/* Exactly full: "{abcde}" and its NUL. */
	pga_start(&w, buf, sizeof(buf));
	pga_add(&w, "abcde", 5);
	cr_assert_str_eq(pga_finish(&w), "{abcde}");
	pga_start(&w, buf, 0);
	cr_assert_null(pga_finish(&w));
}

Test(pgarray, reads_the_elements_of_a_uuid_array)
{
	const char *lit = "{" ID1 "," ID2 "}";
	cr_assert_eq(pga_count(lit), 2);
	struct pga_reader r;
	cr_assert_eq(pga_read_start(&r, lit), BR_OK);
	const char *e;
	size_t len;
	cr_assert_eq(pga_read_next(&r, &e, &len), BR_OK);
	cr_assert_eq(len, strlen(ID1));
	cr_assert_eq(strncmp(e, ID1, len), 0);
	cr_assert_eq(pga_read_next(&r, &e, &len), BR_OK);
	cr_assert_eq(len, strlen(ID2));
	cr_assert_eq(strncmp(e, ID2, len), 0);
	cr_assert_eq(pga_read_next(&r, &e, &len), BR_NOTFOUND);
	cr_assert_eq(pga_count("{}"), 0);
	cr_assert_eq(pga_count("{" ID1 "}"), 1);
}

Test(pgarray, refuses_malformed_literals)
{
	static const char *const bad[] = {
	    "", "x", "{", "{a,}", "{,a}", "{a,,b}", "{a}x", "{\"a\"}", "{a,{b}}", NULL,
	};
	for (size_t i = 0; bad[i]; i++)
		cr_assert_eq(pga_count(bad[i]), -1, "accepted %s", bad[i]);
	cr_assert_eq(pga_count(NULL), -1);
	struct pga_reader r;
	cr_assert_eq(pga_read_start(&r, "a,b"), BR_INVAL);
}
