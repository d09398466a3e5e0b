/*
 * test_strbuf.c - the bounded string builder: appends, formatting, JSON
 * escaping, the size cap (a failed append frees the buffer), take and reset.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <jansson.h>

#include "strbuf.h"

Test(strbuf, starts_empty)
{
	strbuf sb;
	sb_init(&sb, 100);
	cr_assert_null(sb.buf);
	cr_assert_eq(sb.len, 0);
	cr_assert_eq(sb.max, 100);
	cr_assert_str_eq(sb_str(&sb), "");
	cr_assert_null(sb_take(&sb));
	sb_free(&sb); /* freeing an empty buffer is fine */
	sb_free(&sb);
}

Test(strbuf, append_and_appends)
{
	strbuf sb;
	sb_init(&sb, 1000);
	cr_assert_eq(sb_appends(&sb, "hello"), BR_OK);
	cr_assert_eq(sb_append(&sb, ", world!!", 7), BR_OK);
	cr_assert_eq(sb_append(&sb, "", 0), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "hello, world");
	cr_assert_eq(sb.len, 12);
	/* Bytes are bytes, NULs included. */
	cr_assert_eq(sb_append(&sb, "a\0b", 3), BR_OK);
	cr_assert_eq(sb.len, 15);
	cr_assert(memcmp(sb.buf + 12, "a\0b", 4) == 0, "content or terminator wrong");
	sb_free(&sb);
	cr_assert_null(sb.buf);
	cr_assert_eq(sb.len, 0);
}

Test(strbuf, grows_past_its_first_allocation)
{
	strbuf sb;
	sb_init(&sb, 1 << 20);
	for (int i = 0; i < 10000; i++)
		cr_assert_eq(sb_append(&sb, "0123456789", 10), BR_OK);
	cr_assert_eq(sb.len, 100000);
	cr_assert_geq(sb.cap, sb.len + 1);
	for (size_t i = 0; i < sb.len; i += 9973)
		cr_assert_eq(sb.buf[i], (char)('0' + i % 10));
	cr_assert_eq(sb.buf[sb.len], '\0');
	sb_free(&sb);
}

Test(strbuf, appendf)
{
	strbuf sb;
	sb_init(&sb, 4096);
	cr_assert_eq(sb_appendf(&sb, "%d-%s-%05.1f", 42, "x", 3.14159), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "42-x-003.1");
	cr_assert_eq(sb_appendf(&sb, "%s", ""), BR_OK);
	cr_assert_eq(sb.len, 10);
	/* Longer than the first allocation in a single call. */
	cr_assert_eq(sb_appendf(&sb, "%0300d|", 7), BR_OK);
	cr_assert_eq(sb.len, 311);
	cr_assert_eq(sb.buf[309], '7');
	cr_assert_eq(sb.buf[310], '|');
	cr_assert_eq(sb.buf[311], '\0');
	sb_free(&sb);
}

static br_status via_va_list(strbuf *sb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static br_status via_va_list(strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	br_status st = sb_vappendf(sb, fmt, ap);
	va_end(ap);
	return st;
}

Test(strbuf, vappendf)
{
	strbuf sb;
	sb_init(&sb, 64);
	cr_assert_eq(via_va_list(&sb, "[%s:%u]", "a", 7u), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "[a:7]");
	sb_free(&sb);
}

Test(strbuf, exactly_max_fits)
{
	strbuf sb;
	sb_init(&sb, 10);
	cr_assert_eq(sb_appends(&sb, "12345"), BR_OK);
	cr_assert_eq(sb_appends(&sb, "67890"), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "1234567890");
	cr_assert_eq(sb_append(&sb, "", 0), BR_OK);
	cr_assert_eq(sb.len, 10);
	sb_free(&sb);
}

static void assert_freed(const strbuf *sb)
{
	cr_assert_null(sb->buf, "the buffer was not freed");
	cr_assert_eq(sb->len, 0);
	cr_assert_str_eq(sb_str(sb), "");
}

Test(strbuf, exceeding_max_frees)
{
	strbuf sb;
	sb_init(&sb, 10);
	cr_assert_eq(sb_appends(&sb, "12345"), BR_OK);
	cr_assert_eq(sb_appends(&sb, "678901"), BR_TOOBIG);
	assert_freed(&sb);

	/* The buffer is usable again, with the same cap. */
	cr_assert_eq(sb_appends(&sb, "abc"), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "abc");
	cr_assert_eq(sb_appendf(&sb, "%s", "defghijk"), BR_TOOBIG);
	assert_freed(&sb);

	cr_assert_eq(sb_appends(&sb, "0123456789"), BR_OK);
	cr_assert_eq(sb_append_json_escaped(&sb, "\"", 1), BR_TOOBIG);
	assert_freed(&sb);

	/* A single append larger than max, and a huge length. */
	cr_assert_eq(sb_appends(&sb, "this is much longer than ten"), BR_TOOBIG);
	assert_freed(&sb);
	cr_assert_eq(sb_appends(&sb, "x"), BR_OK);
	cr_assert_eq(sb_append(&sb, "y", (size_t)-1), BR_TOOBIG);
	assert_freed(&sb);
}

Test(strbuf, zero_max_only_holds_nothing)
{
	strbuf sb;
	sb_init(&sb, 0);
	cr_assert_eq(sb_append(&sb, "", 0), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "");
	cr_assert_eq(sb_appends(&sb, "a"), BR_TOOBIG);
	assert_freed(&sb);
}

Test(strbuf, take_hands_over_the_content)
{
	strbuf sb;
	sb_init(&sb, 100);
	cr_assert_eq(sb_appends(&sb, "owned"), BR_OK);
	char *s = sb_take(&sb);
	cr_assert_str_eq(s, "owned");
	assert_freed(&sb);
	cr_assert_eq(sb.max, 100);
	/* sb is independent of the taken string now. */
	cr_assert_eq(sb_appends(&sb, "again"), BR_OK);
	cr_assert_str_eq(s, "owned");
	cr_assert_str_eq(sb_str(&sb), "again");
	free(s);
	sb_free(&sb);
}

Test(strbuf, reset_keeps_the_allocation)
{
	strbuf sb;
	sb_init(&sb, 100);
	cr_assert_eq(sb_appends(&sb, "some content"), BR_OK);
	char *before = sb.buf;
	size_t cap = sb.cap;
	sb_reset(&sb);
	cr_assert_eq(sb.len, 0);
	cr_assert_str_eq(sb_str(&sb), "");
	cr_assert_eq(sb.buf, before);
	cr_assert_eq(sb.cap, cap);
	cr_assert_eq(sb_appends(&sb, "new"), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "new");
	sb_reset(&sb);
	sb_free(&sb);
	sb_reset(&sb); /* on an empty buffer too */
	cr_assert_str_eq(sb_str(&sb), "");
}

/* Escapes s, wraps it in quotes and parses it back with jansson. */
static void assert_json_round_trip(const char *s, size_t len)
{
	strbuf sb;
	sb_init(&sb, 1 << 16);
	cr_assert_eq(sb_appends(&sb, "\""), BR_OK);
	cr_assert_eq(sb_append_json_escaped(&sb, s, len), BR_OK);
	cr_assert_eq(sb_appends(&sb, "\""), BR_OK);
	for (size_t i = 0; i < sb.len; i++)
		cr_assert((unsigned char)sb.buf[i] >= 0x20 && sb.buf[i] != 0x7f,
		          "raw control byte 0x%02x at %zu in %s", (unsigned char)sb.buf[i], i,
		          sb.buf);
	json_error_t jerr;
	json_t *v = json_loadb(sb.buf, sb.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	cr_assert_not_null(v, "not a JSON string: %s (%s)", sb.buf, jerr.text);
	cr_assert(json_is_string(v));
	cr_assert_eq(json_string_length(v), len);
	cr_assert(memcmp(json_string_value(v), s, len) == 0, "round trip changed %s", sb.buf);
	json_decref(v);
	sb_free(&sb);
}

Test(strbuf, json_escaping)
{
	strbuf sb;
	sb_init(&sb, 1000);
	cr_assert_eq(sb_append_json_escaped(&sb, "a\"b\\c\nd", 7), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "a\\\"b\\\\c\\nd");
	sb_reset(&sb);
	cr_assert_eq(sb_append_json_escaped(&sb, "plain / text é", strlen("plain / text é")),
	             BR_OK);
	cr_assert_str_eq(sb_str(&sb), "plain / text é");
	sb_reset(&sb);
	cr_assert_eq(sb_append_json_escaped(&sb, "\x01", 1), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "\\u0001");
	sb_reset(&sb);
	cr_assert_eq(sb_append_json_escaped(&sb, "", 0), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "");
	/* Only len bytes are read. */
	cr_assert_eq(sb_append_json_escaped(&sb, "abc\"def", 3), BR_OK);
	cr_assert_str_eq(sb_str(&sb), "abc");
	sb_free(&sb);
}

Test(strbuf, json_escaping_round_trips_every_byte)
{
	char all[128];
	for (int i = 0; i < 128; i++)
		all[i] = (char)i; /* NUL, every control character, DEL */
	assert_json_round_trip(all, sizeof(all));
	const char *utf8 = "Zoë \xe2\x80\x94 \xf0\x9f\x8e\x89 \"quoted\" back\\slash\ttab\r\n";
	assert_json_round_trip(utf8, strlen(utf8));
	assert_json_round_trip("", 0);
}
