/*
 * strbuf.c - bounded string building (see strbuf.h). No global state.
 */
#include "strbuf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SB_MIN_ALLOC 64

void sb_init(strbuf *sb, size_t max)
{
	sb->buf = NULL;
	sb->len = 0;
	sb->cap = 0;
	sb->max = max;
}

void sb_free(strbuf *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = 0;
	sb->cap = 0;
}

void sb_reset(strbuf *sb)
{
	sb->len = 0;
	if (sb->buf)
		sb->buf[0] = '\0';
}

/* Makes room for extra more bytes plus the NUL. */
static br_status sb_grow(strbuf *sb, size_t extra)
{
	if (extra > sb->max || sb->len > sb->max - extra) {
		sb_free(sb);
		return BR_TOOBIG;
	}
	size_t need = sb->len + extra + 1;
	if (need <= sb->cap)
		return BR_OK;
	size_t cap = sb->cap ? sb->cap : SB_MIN_ALLOC;
	while (cap < need)
		cap = cap > SIZE_MAX / 2 ? need : cap * 2;
	if (cap > sb->max + 1)
		cap = sb->max + 1;
	char *p = realloc(sb->buf, cap);
	if (!p) {
		sb_free(sb);
		return BR_NOMEM;
	}
	sb->buf = p;
	sb->cap = cap;
	return BR_OK;
}

br_status sb_append(strbuf *sb, const void *data, size_t len)
{
	br_status st = sb_grow(sb, len);
	if (st != BR_OK)
		return st;
	if (len)
		memcpy(sb->buf + sb->len, data, len);
	sb->len += len;
	sb->buf[sb->len] = '\0';
	return BR_OK;
}

br_status sb_appends(strbuf *sb, const char *s)
{
	return sb_append(sb, s, strlen(s));
}

br_status sb_vappendf(strbuf *sb, const char *fmt, va_list ap)
{
	va_list ap2;
	va_copy(ap2, ap);
	int n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0) {
		sb_free(sb);
		return BR_INVAL;
	}
	br_status st = sb_grow(sb, (size_t)n);
	if (st != BR_OK)
		return st;
	vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
	sb->len += (size_t)n;
	return BR_OK;
}

br_status sb_appendf(strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	br_status st = sb_vappendf(sb, fmt, ap);
	va_end(ap);
	return st;
}

br_status sb_append_json_escaped(strbuf *sb, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t run = 0; /* start of the pending run of plain bytes */
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t elen = 0;
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			elen = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			elen = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			elen = 6;
		} else {
			continue;
		}
		br_status st = sb_append(sb, s + run, i - run);
		if (st == BR_OK)
			st = sb_append(sb, esc, elen);
		if (st != BR_OK)
			return st;
		run = i + 1;
	}
	return sb_append(sb, s + run, len - run);
}

const char *sb_str(const strbuf *sb)
{
	return sb->buf ? sb->buf : "";
}

char *sb_take(strbuf *sb)
{
	char *p = sb->buf;
	sb->buf = NULL;
	sb->len = 0;
	sb->cap = 0;
	return p;
}
