/*
 * webhook.c - Standard Webhooks signatures, endpoint secrets and the
 * webhook target policy (see webhook.h).
 *
 * Owns nothing beyond the duration of a call. Thread-safe: libcurl's URL
 * API, libidn2 and getaddrinfo are reentrant; no global state.
 *
 * Internationalized hosts are converted with libidn2 rather than libcurl's
 * CURLU_PUNYCODE: in libcurl 7.88 (Debian 12) that flag answers
 * CURLUE_OUT_OF_MEMORY for any non-ASCII host.
 */
#include "webhook.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <idn2.h>
#include <netdb.h>
#include <netinet/in.h>

#include "crypto.h"

#define WH_PREFIX_LEN (sizeof(WH_SECRET_PREFIX) - 1)

br_status wh_secret_new(char out[WH_SECRET_SIZE])
{
	unsigned char key[WH_SECRET_BYTES];
	if (cr_random(key, sizeof(key)) != BR_OK)
		return BR_CRYPTO;
	memcpy(out, WH_SECRET_PREFIX, WH_PREFIX_LEN);
	size_t n =
	    cr_base64(key, sizeof(key), false, out + WH_PREFIX_LEN, WH_SECRET_SIZE - WH_PREFIX_LEN);
	memset(key, 0, sizeof(key));
	return n ? BR_OK : BR_CRYPTO;
}

br_status wh_secret_decode(const char *secret, unsigned char *key, size_t keycap, size_t *keylen)
{
	if (!secret || strncmp(secret, WH_SECRET_PREFIX, WH_PREFIX_LEN) != 0)
		return BR_INVAL;
	const char *b64 = secret + WH_PREFIX_LEN;
	long n = cr_base64_decode(b64, strlen(b64), key, keycap);
	if (n <= 0)
		return BR_INVAL;
	*keylen = (size_t)n;
	return BR_OK;
}

br_status wh_sign(const char *secret, const char *msg_id, long timestamp, const char *body,
                  size_t len, char *out, size_t outcap)
{
	unsigned char key[WH_SECRET_MAX_BYTES];
	unsigned char mac[CR_SHA256_LEN];
	size_t keylen = 0;
	if (outcap < WH_SIGNATURE_SIZE)
		return BR_TOOBIG;
	if (wh_secret_decode(secret, key, sizeof(key), &keylen) != BR_OK)
		return BR_INVAL;

	/* The signed content is id "." timestamp "." body, byte for byte. */
	char ts[24];
	int tslen = snprintf(ts, sizeof(ts), "%ld", timestamp);
	size_t idlen = strlen(msg_id);
	if (len > SIZE_MAX - idlen - (size_t)tslen - 2)
		return BR_TOOBIG;
	size_t total = idlen + 1 + (size_t)tslen + 1 + len;
	char *msg = malloc(total ? total : 1);
	if (!msg)
		return BR_NOMEM;
	memcpy(msg, msg_id, idlen);
	msg[idlen] = '.';
	memcpy(msg + idlen + 1, ts, (size_t)tslen);
	msg[idlen + 1 + (size_t)tslen] = '.';
	if (len)
		memcpy(msg + idlen + (size_t)tslen + 2, body, len);

	br_status st = cr_hmac_sha256(key, keylen, msg, total, mac);
	free(msg);
	memset(key, 0, sizeof(key));
	if (st != BR_OK)
		return st;
	memcpy(out, "v1,", 3);
	if (cr_base64(mac, sizeof(mac), false, out + 3, outcap - 3) == 0)
		return BR_TOOBIG;
	return BR_OK;
}

/* ---- address policy ---- */

/* a is in host byte order. */
static const char *v4_class(uint32_t a)
{
	if (a >> 24 == 0)
		return "unspecified"; /* 0.0.0.0/8: Linux connects 0.0.0.0 to itself */
	if (a >> 24 == 127)
		return "loopback";
	if (a >> 24 == 10 || (a & 0xfff00000u) == 0xac100000u || (a & 0xffff0000u) == 0xc0a80000u)
		return "private";
	if ((a & 0xffc00000u) == 0x64400000u)
		return "shared (carrier-grade NAT)";
	if ((a & 0xffff0000u) == 0xa9fe0000u)
		return "link-local";
	if ((a & 0xf0000000u) == 0xe0000000u)
		return "multicast";
	/* 240/4 (with the broadcast address), IETF protocol assignments, benchmarking. */
	if ((a & 0xf0000000u) == 0xf0000000u || (a & 0xffffff00u) == 0xc0000000u ||
	    (a & 0xfffe0000u) == 0xc6120000u)
		return "reserved";
	return NULL;
}

static uint32_t be32_at(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool all_zero(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i])
			return false;
	}
	return true;
}

static const char *v6_class(const unsigned char b[16])
{
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
	static const unsigned char siit[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
	static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};

	if (all_zero(b, 15) && b[15] == 0)
		return "unspecified";
	if (all_zero(b, 15) && b[15] == 1)
		return "loopback";
	/* Forms that carry an IPv4 address: judge that address. */
	if (memcmp(b, mapped, 12) == 0 || memcmp(b, siit, 12) == 0 || all_zero(b, 12) ||
	    memcmp(b, nat64, 12) == 0)
		return v4_class(be32_at(b + 12));
	if (b[0] == 0x20 && b[1] == 0x02) /* 6to4 2002::/16 */
		return v4_class(be32_at(b + 2));
	if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0 &&
	    b[5] == 1) /* 64:ff9b:1::/48, local-use NAT64 */
		return "private";
	if ((b[0] & 0xfe) == 0xfc)
		return "private"; /* fc00::/7 unique local */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return "link-local"; /* fe80::/10 */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
		return "private"; /* fec0::/10, deprecated site-local */
	if (b[0] == 0xff)
		return "multicast";
	if (b[0] == 0x01 && b[1] == 0x00 && all_zero(b + 2, 6))
		return "reserved"; /* 100::/64 discard-only */
	if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
		return "reserved"; /* 2001:db8::/32 documentation */
	return NULL;
}

const char *wh_addr_class(const struct sockaddr *sa)
{
	if (!sa)
		return "unsupported family";
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in in;
		memcpy(&in, sa, sizeof(in));
		return v4_class(ntohl(in.sin_addr.s_addr));
	}
	if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 in6;
		memcpy(&in6, sa, sizeof(in6));
		return v6_class(in6.sin6_addr.s6_addr);
	}
	return "unsupported family";
}

bool wh_addr_allowed(const struct sockaddr *sa)
{
	return wh_addr_class(sa) == NULL;
}

/* ---- URL policy ---- */

/* Resolves host and refuses it when any of its addresses is not public. */
static br_status check_host(const char *host, char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *ai = NULL;
	int rc = getaddrinfo(host, NULL, &hints, &ai);
	if (rc == EAI_MEMORY)
		return BR_NOMEM;
	if (rc != 0 || !ai) {
		snprintf(why, whylen, "The host of the URL cannot be resolved.");
		return BR_INVAL;
	}
	br_status st = BR_OK;
	for (struct addrinfo *p = ai; p; p = p->ai_next) {
		const char *cls = wh_addr_class(p->ai_addr);
		if (!cls)
			continue;
		char addr[INET6_ADDRSTRLEN] = "?";
		if (getnameinfo(p->ai_addr, p->ai_addrlen, addr, sizeof(addr), NULL, 0,
		                NI_NUMERICHOST) != 0)
			snprintf(addr, sizeof(addr), "?");
		snprintf(why, whylen,
		         "The URL's host resolves to %s, a %s address; webhook targets must be "
		         "public.",
		         addr, cls);
		st = BR_INVAL;
		break;
	}
	freeaddrinfo(ai);
	return st;
}

/* Host as getaddrinfo wants it: without the brackets of an IPv6 literal. */
static void unbracket(char *host)
{
	size_t n = strlen(host);
	if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
		memmove(host, host + 1, n - 2);
		host[n - 2] = '\0';
	}
}

static bool ascii_only(const char *s)
{
	for (; *s; s++) {
		if ((unsigned char)*s >= 0x80)
			return false;
	}
	return true;
}

/*
 * An internationalized host in u becomes its punycode (IDNA2008 with UTS#46
 * mapping, so "BÜCHER.example" and "bücher.example" are one host); *host is
 * replaced by the new form. BR_INVAL with a sentence in why when it is no
 * valid domain name.
 */
static br_status host_to_ascii(CURLU *u, char **host, char *why, size_t whylen)
{
	if (ascii_only(*host))
		return BR_OK;
	char *ace = NULL;
	int rc = idn2_to_ascii_8z(*host, &ace, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
	if (rc == IDN2_MALLOC)
		return BR_NOMEM;
	if (rc != IDN2_OK || !ace) {
		idn2_free(ace);
		snprintf(why, whylen,
		         "The URL's host is not a valid internationalized domain name (%s).",
		         idn2_strerror(rc));
		return BR_INVAL;
	}
	CURLUcode uc = curl_url_set(u, CURLUPART_HOST, ace, 0);
	idn2_free(ace);
	char *copy = NULL;
	if (uc == CURLUE_OK)
		uc = curl_url_get(u, CURLUPART_HOST, &copy, 0);
	if (uc == CURLUE_OUT_OF_MEMORY)
		return BR_NOMEM;
	if (uc != CURLUE_OK) {
		snprintf(why, whylen, "The URL's host is not valid: %s.", curl_url_strerror(uc));
		return BR_INVAL;
	}
	curl_free(*host);
	*host = copy;
	return BR_OK;
}

/* The URL to store: as given, or rebuilt by libcurl when its host was converted. */
static br_status url_to_store(CURLU *u, const char *url, bool converted, char **out)
{
	if (!converted) {
		*out = strdup(url);
		return *out ? BR_OK : BR_NOMEM;
	}
	char *s = NULL;
	CURLUcode uc = curl_url_get(u, CURLUPART_URL, &s, 0);
	if (uc != CURLUE_OK)
		return uc == CURLUE_OUT_OF_MEMORY ? BR_NOMEM : BR_INVAL;
	*out = strlen(s) <= WH_URL_MAX ? strdup(s) : NULL;
	bool too_long = strlen(s) > WH_URL_MAX;
	curl_free(s);
	if (too_long)
		return BR_TOOBIG;
	return *out ? BR_OK : BR_NOMEM;
}

/* Parses url into u; BR_INVAL with a sentence in why when it is no http(s) URL with a host. */
static br_status parse_url(CURLU *u, const char *url, char *why, size_t whylen)
{
	CURLUcode uc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (uc == CURLUE_OUT_OF_MEMORY)
		return BR_NOMEM;
	if (uc == CURLUE_NO_HOST) {
		snprintf(why, whylen, "The URL must include a host.");
		return BR_INVAL;
	}
	if (uc != CURLUE_OK) {
		snprintf(why, whylen, "The URL is not valid: %s.", curl_url_strerror(uc));
		return BR_INVAL;
	}
	char *scheme = NULL;
	uc = curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	bool web = uc == CURLUE_OK &&
	           (strcasecmp(scheme, "http") == 0 || strcasecmp(scheme, "https") == 0);
	curl_free(scheme);
	if (uc == CURLUE_OUT_OF_MEMORY)
		return BR_NOMEM;
	if (!web) {
		snprintf(why, whylen, "The URL must use http or https.");
		return BR_INVAL;
	}
	/* curl also takes "http:/h" and "http:///h"; an address has exactly two slashes. */
	const char *colon = strchr(url, ':');
	if (!colon || strncmp(colon, "://", 3) != 0 || colon[3] == '/' || colon[3] == '\\') {
		snprintf(why, whylen, "The URL must start with http:// or https:// and a host.");
		return BR_INVAL;
	}
	return BR_OK;
}

br_status wh_url_check(const char *url, bool allow_private, char **out, char *why, size_t whylen)
{
	CURLU *u = NULL;
	char *host = NULL;
	br_status st = BR_INVAL;
	if (!url || strlen(url) > WH_URL_MAX) {
		snprintf(why, whylen, "The URL must be at most %d characters.", WH_URL_MAX);
		goto out;
	}
	u = curl_url();
	st = u ? parse_url(u, url, why, whylen) : BR_NOMEM;
	if (st != BR_OK)
		goto out;
	CURLUcode uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
	if (uc == CURLUE_OUT_OF_MEMORY) {
		st = BR_NOMEM;
		goto out;
	}
	if (uc != CURLUE_OK || !host[0]) {
		snprintf(why, whylen, "The URL must include a host.");
		st = BR_INVAL;
		goto out;
	}
	bool idn = !ascii_only(host);
	st = host_to_ascii(u, &host, why, whylen);
	if (st != BR_OK)
		goto out;
	if (!allow_private) {
		unbracket(host);
		st = check_host(host, why, whylen);
		if (st != BR_OK)
			goto out;
	}
	st = url_to_store(u, url, idn, out);
	if (st == BR_TOOBIG || st == BR_INVAL) {
		snprintf(why, whylen,
		         "The URL must be at most %d characters once its host is in "
		         "punycode.",
		         WH_URL_MAX);
		st = BR_INVAL;
	}
out:
	curl_free(host);
	curl_url_cleanup(u);
	return st;
}
