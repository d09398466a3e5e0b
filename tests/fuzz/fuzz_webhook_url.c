/*
 * fuzz_webhook_url.c - libFuzzer harness for the webhook target policy
 * (common/webhook.h).
 *
 * The input is used twice. As a URL (up to the first NUL) for wh_url_check
 * with allow_private, so that no DNS is done: libcurl's parser and our
 * checks around it. As the raw bytes of a socket address for wh_addr_class:
 * the first byte picks the family (IPv4, IPv6, another), the rest fill the
 * address.
 *
 * Checks: an accepted URL is http(s)://, with no more than WH_URL_MAX
 * characters, and the URL to store is too (an internationalized host in
 * punycode, so ASCII whenever the input's host was not); a refusal says why; an IPv4 address and
 * its IPv4-mapped IPv6 form are classified alike; wh_addr_allowed agrees with wh_addr_class.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "fz_support.h"
#include "webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_url(const uint8_t *data, size_t size)
{
	char *url = fz_cstr(data, size);
	char why[256] = "";
	char *out = NULL;
	br_status st = wh_url_check(url, true, &out, why, sizeof(why));
	if (st == BR_OK) {
		FZ_CHECK(out != NULL);
		FZ_CHECK(strlen(url) <= WH_URL_MAX);
		FZ_CHECK(strlen(out) <= WH_URL_MAX);
		FZ_CHECK(strncasecmp(url, "http://", 7) == 0 ||
		         strncasecmp(url, "https://", 8) == 0);
		FZ_CHECK(strncasecmp(out, "http://", 7) == 0 ||
		         strncasecmp(out, "https://", 8) == 0);
		free(out);
	} else {
		FZ_CHECK(out == NULL);
		FZ_CHECK(st == BR_INVAL || st == BR_NOMEM);
		if (st == BR_INVAL)
			FZ_CHECK(why[0] != '\0' && strnlen(why, sizeof(why)) < sizeof(why));
	}
	free(url);
}

static const char *classify(const struct sockaddr_storage *ss)
{
	const char *cls = wh_addr_class((const struct sockaddr *)ss);
	FZ_CHECK(wh_addr_allowed((const struct sockaddr *)ss) == (cls == NULL));
	return cls;
}

static void check_addr(const uint8_t *data, size_t size)
{
	if (size == 0)
		return;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	size_t n = size - 1;
	switch (data[0] % 3) {
	case 0: {
		struct sockaddr_in in = {.sin_family = AF_INET};
		memcpy(&in.sin_addr, data + 1, n < 4 ? n : 4);
		memcpy(&ss, &in, sizeof(in));
		const char *cls = classify(&ss);

		/* The same address as ::ffff:a.b.c.d must get the same verdict. */
		struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
		in6.sin6_addr.s6_addr[10] = 0xff;
		in6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&in6.sin6_addr.s6_addr[12], &in.sin_addr, 4);
		memset(&ss, 0, sizeof(ss));
		memcpy(&ss, &in6, sizeof(in6));
		const char *cls6 = classify(&ss);
		FZ_CHECK((cls == NULL) == (cls6 == NULL));
		FZ_CHECK(!cls || strcmp(cls, cls6) == 0);
		break;
	}
	case 1: {
		struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
		memcpy(&in6.sin6_addr, data + 1, n < 16 ? n : 16);
		memcpy(&ss, &in6, sizeof(in6));
		classify(&ss);
		break;
	}
	default:
		/* Any other family, with arbitrary bytes after it: refused. */
		memcpy((char *)&ss + sizeof(ss.ss_family), data + 1,
		       n < sizeof(ss) - sizeof(ss.ss_family) ? n
		                                             : sizeof(ss) - sizeof(ss.ss_family));
		ss.ss_family =
		    (sa_family_t)(data[0] == AF_INET || data[0] == AF_INET6 ? AF_UNIX : data[0]);
		FZ_CHECK(classify(&ss) != NULL);
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	check_url(data, size);
	check_addr(data, size);
	return 0;
}
