/*
 * validate_text.c - the text formats requests carry: e-mail addresses,
 * RFC 3339 date-times, UTF-8 lengths (validate.h). No state.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "validate.h"

/* PostgreSQL refuses UTC offsets of 16 hours or more. */
#define VAL_TZ_MAX_HOURS 15
#define VAL_US_PER_DAY   (86400LL * 1000000LL)

size_t val_utf8_len(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)s[i] & 0xc0) != 0x80;
	return n;
}

static bool is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/*
 * Code points never part of an address: controls (C0, DEL, C1), spaces of
 * every kind, and invisible format characters (soft hyphen, zero-width and
 * bidirectional marks, byte order mark, interlinear annotation).
 */
static bool cp_forbidden(uint32_t c)
{
	return c <= 0x20 || (c >= 0x7f && c <= 0xa0) || c == 0xad || c == 0x34f || c == 0x61c ||
	       c == 0x1680 || c == 0x180e || (c >= 0x2000 && c <= 0x200f) ||
	       (c >= 0x2028 && c <= 0x202f) || (c >= 0x205f && c <= 0x206f) || c == 0x3000 ||
	       c == 0xfeff || (c >= 0xfff9 && c <= 0xfffb);
}

static bool local_part_ok(const char *s, size_t n)
{
	static const char specials[] = "\"(),:;<>[\\]@ ";
	if (n == 0 || n > VAL_EMAIL_LOCAL || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (is_ctl(c) || (c < 0x80 && strchr(specials, c)))
			return false;
		if (c == '.' && i + 1 < n && s[i + 1] == '.')
			return false;
	}
	return true;
}

/*
 * Labels of letters, digits, hyphens (not at either end) and non-ASCII
 * characters (internationalised names), 1 to 63 bytes each, at least two,
 * the last not all digits.
 */
static bool domain_ok(const char *s, size_t n)
{
	size_t labels = 0, start = 0;
	bool numeric = true;
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i <= n; i++) {
		if (i < n && s[i] != '.') {
			unsigned char c = (unsigned char)s[i];
			bool digit = c >= '0' && c <= '9';
			bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || digit ||
			          c == '-' || c >= 0x80;
			if (!ok)
				return false;
			numeric = numeric && digit;
			continue;
		}
		size_t len = i - start;
		if (len == 0 || len > 63 || s[start] == '-' || s[i - 1] == '-')
			return false;
		labels++;
		if (i < n) {
			start = i + 1;
			numeric = true;
		}
	}
	return labels >= 2 && !numeric;
}

bool val_email(const char *s, size_t len)
{
	if (len < 3 || len > VAL_EMAIL_MAX)
		return false;
	size_t at = len;
	for (size_t i = 0; i < len;) {
		uint32_t cp = 0;
		size_t n = ja_utf8_decode(s + i, len - i, &cp);
		if (n == 0 || cp_forbidden(cp))
			return false;
		if (cp == '@') {
			if (at != len)
				return false; /* a second @ */
			at = i;
		}
		i += n;
	}
	if (at == len)
		return false;
	return local_part_ok(s, at) && domain_ok(s + at + 1, len - at - 1);
}

static bool digits(const char *s, int n)
{
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
	}
	return true;
}

static int num(const char *s, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++)
		v = v * 10 + (s[i] - '0');
	return v;
}

/* Days from 1970-01-01 to y-m-d, proleptic Gregorian calendar, y >= 0. */
static long long days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	long long era = y / 400;
	long long yoe = y - era * 400;
	long long doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

/*
 * Parses YYYY-MM-DDTHH:MM:SS[.frac](Z|+hh:mm|-hh:mm) into microseconds since
 * the Unix epoch (the fraction rounded to microseconds, as PostgreSQL
 * stores it). False when malformed, when the offset is past +-15:59 (which
 * PostgreSQL refuses) or when the instant is outside years 1 to 9999 in UTC
 * (which rfc3339() could not print as RFC 3339).
 */
bool val_rfc3339_us(const char *s, long long *us)
{
	size_t len = strlen(s);
	if (len < 20 || !digits(s, 4) || s[4] != '-' || !digits(s + 5, 2) || s[7] != '-' ||
	    !digits(s + 8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2) ||
	    s[13] != ':' || !digits(s + 14, 2) || s[16] != ':' || !digits(s + 17, 2))
		return false;
	int year = num(s, 4), mon = num(s + 5, 2), day = num(s + 8, 2);
	int hh = num(s + 11, 2), mi = num(s + 14, 2), ss = num(s + 17, 2);
	static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	if (year < 1 || mon < 1 || mon > 12 || day < 1 || day > mdays[mon - 1] || hh > 23 ||
	    mi > 59 || ss > 60)
		return false;
	bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	if (mon == 2 && day == 29 && !leap)
		return false;
	const char *p = s + 19;
	long long frac = 0;
	if (*p == '.') {
		p++;
		int n = 0;
		long long nanos = 0;
		while (p[n] >= '0' && p[n] <= '9' && n <= 9)
			nanos = nanos * 10 + (p[n++] - '0');
		if (n == 0 || n > 9)
			return false;
		for (int k = n; k < 9; k++)
			nanos *= 10;
		frac = (nanos + 500) / 1000;
		p += n;
	}
	int off;
	if ((*p == 'Z' || *p == 'z') && p[1] == '\0')
		off = 0;
	else if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) &&
	         p[6] == '\0' && num(p + 1, 2) <= VAL_TZ_MAX_HOURS && num(p + 4, 2) <= 59)
		off = (*p == '-' ? -1 : 1) * (num(p + 1, 2) * 60 + num(p + 4, 2));
	else
		return false;
	long long t = days_from_civil(year, mon, day) * VAL_US_PER_DAY +
	              ((long long)hh * 3600 + mi * 60 + ss - off * 60LL) * 1000000LL + frac;
	if (t < days_from_civil(1, 1, 1) * VAL_US_PER_DAY ||
	    t >= days_from_civil(10000, 1, 1) * VAL_US_PER_DAY)
		return false;
	*us = t;
	return true;
}

bool val_rfc3339(const char *s)
{
	long long us;
	return val_rfc3339_us(s, &us);
}
