/*
 * test_webhook.c - unit tests of common/webhook.c: Standard Webhooks
 * signatures (the specification's example and an independent OpenSSL
 * computation), secrets, the address classifier (every refused range, and
 * public addresses that must pass) and the URL policy. No services; the
 * name resolved is "localhost" (/etc/hosts); other hosts are numeric.
 */
#include <string.h>

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "webhook.h"

/* ---- signatures ---- */

Test(webhook_sign, standard_webhooks_example)
{
	/* The example of the Standard Webhooks specification's reference libraries. */
	static const char body[] = "{\"test\": 2432232314}";
	char sig[WH_SIGNATURE_SIZE];
	cr_assert_eq(wh_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
	                     "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330L, body, strlen(body), sig,
	                     sizeof(sig)),
	             BR_OK);
	cr_assert_str_eq(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

/* The signature computed with OpenSSL directly, from the secret's key bytes. */
static void openssl_signature(const unsigned char *key, int keylen, const char *msg, size_t msglen,
                              char *out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;
	cr_assert_not_null(
	    HMAC(EVP_sha256(), key, keylen, (const unsigned char *)msg, msglen, mac, &maclen));
	cr_assert_eq(maclen, 32);
	memcpy(out, "v1,", 3);
	EVP_EncodeBlock((unsigned char *)out + 3, mac, (int)maclen);
}

Test(webhook_sign, matches_openssl_on_every_byte_of_the_body)
{
	char secret[WH_SECRET_SIZE];
	cr_assert_eq(wh_secret_new(secret), BR_OK);
	unsigned char key[64];
	int keylen = EVP_DecodeBlock(key, (const unsigned char *)secret + 6, 44);
	cr_assert_eq(keylen, 33); /* EVP_DecodeBlock counts the padding byte */
	keylen = 32;

	/* A body with a NUL and non-ASCII bytes: signed as given, by length. */
	static const char body[] = "{\"type\":\"job.ended\",\"x\":\"\xc3\xa9\"}\0tail";
	size_t blen = sizeof(body) - 1;
	static const char id[] = "6f1c2b9e-3a4d-4e5f-8a7b-1c2d3e4f5a6b";
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "%s.%ld.", id, 1700000000L);
	memcpy(msg + n, body, blen);

	char want[WH_SIGNATURE_SIZE], got[WH_SIGNATURE_SIZE];
	openssl_signature(key, keylen, msg, (size_t)n + blen, want);
	cr_assert_eq(wh_sign(secret, id, 1700000000L, body, blen, got, sizeof(got)), BR_OK);
	cr_assert_str_eq(got, want);

	/* Any change to id, timestamp or body changes the signature. */
	char other[WH_SIGNATURE_SIZE];
	cr_assert_eq(wh_sign(secret, id, 1700000001L, body, blen, other, sizeof(other)), BR_OK);
	cr_assert_str_neq(other, want);
	cr_assert_eq(wh_sign(secret, id, 1700000000L, body, blen - 1, other, sizeof(other)), BR_OK);
	cr_assert_str_neq(other, want);
}

Test(webhook_sign, refuses_bad_secrets_and_small_buffers)
{
	char sig[WH_SIGNATURE_SIZE] = "untouched";
	cr_assert_eq(
	    wh_sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", 1, "{}", 2, sig, sizeof(sig)),
	    BR_INVAL);
	cr_assert_eq(wh_sign("whsec_not*base64", "id", 1, "{}", 2, sig, sizeof(sig)), BR_INVAL);
	cr_assert_eq(wh_sign("whsec_", "id", 1, "{}", 2, sig, sizeof(sig)), BR_INVAL);
	cr_assert_str_eq(sig, "untouched");
	cr_assert_eq(wh_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", 1, "{}", 2, sig,
	                     WH_SIGNATURE_SIZE - 1),
	             BR_TOOBIG);
	cr_assert_eq(
	    wh_sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "id", 1, "", 0, sig, sizeof(sig)),
	    BR_OK);
}

/* ---- secrets ---- */

Test(webhook_secret, format_and_decoding)
{
	char a[WH_SECRET_SIZE], b[WH_SECRET_SIZE];
	cr_assert_eq(wh_secret_new(a), BR_OK);
	cr_assert_eq(wh_secret_new(b), BR_OK);
	cr_assert_eq(strncmp(a, "whsec_", 6), 0);
	cr_assert_eq(strlen(a), 6 + 44, "secret %s", a);
	cr_assert_eq(a[49], '=', "32 bytes end in one padding character");
	cr_assert_str_neq(a, b);
	for (const char *p = a + 6; *p; p++)
		cr_assert(strchr(
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", *p));

	unsigned char key[WH_SECRET_MAX_BYTES];
	size_t keylen = 0;
	cr_assert_eq(wh_secret_decode(a, key, sizeof(key), &keylen), BR_OK);
	cr_assert_eq(keylen, WH_SECRET_BYTES);
	cr_assert_eq(
	    wh_secret_decode("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, sizeof(key), &keylen),
	    BR_OK);
	cr_assert_eq(keylen, 24);
	keylen = 7;
	cr_assert_eq(
	    wh_secret_decode("wh_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, sizeof(key), &keylen),
	    BR_INVAL);
	cr_assert_eq(wh_secret_decode("whsec_abc", key, sizeof(key), &keylen), BR_INVAL);
	cr_assert_eq(wh_secret_decode(a, key, 16, &keylen), BR_INVAL, "key larger than the buffer");
	cr_assert_eq(keylen, 7, "out-param untouched on failure");
}

/* ---- address classifier ---- */

static const char *classify(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		cr_assert_eq(inet_pton(AF_INET6, text, &in6->sin6_addr), 1, "%s", text);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		cr_assert_eq(inet_pton(AF_INET, text, &in->sin_addr), 1, "%s", text);
	}
	const char *cls = wh_addr_class((const struct sockaddr *)&ss);
	cr_assert_eq(cls == NULL, wh_addr_allowed((const struct sockaddr *)&ss), "%s", text);
	return cls;
}

static void assert_refused(const char *addr, const char *cls)
{
	const char *got = classify(addr);
	cr_assert_not_null(got, "%s must be refused", addr);
	cr_assert_str_eq(got, cls, "%s", addr);
}

Test(webhook_addr, refuses_ipv4_non_public_ranges)
{
	assert_refused("127.0.0.1", "loopback");
	assert_refused("127.255.255.254", "loopback");
	assert_refused("10.0.0.1", "private");
	assert_refused("10.255.255.255", "private");
	assert_refused("172.16.0.1", "private");
	assert_refused("172.31.255.255", "private");
	assert_refused("192.168.1.10", "private");
	assert_refused("100.64.0.1", "shared (carrier-grade NAT)");
	assert_refused("100.127.255.255", "shared (carrier-grade NAT)");
	assert_refused("169.254.169.254", "link-local");
	assert_refused("224.0.0.1", "multicast");
	assert_refused("239.255.255.250", "multicast");
	assert_refused("0.0.0.0", "unspecified");
	assert_refused("0.1.2.3", "unspecified");
	assert_refused("255.255.255.255", "reserved");
	assert_refused("240.0.0.1", "reserved");
	assert_refused("192.0.0.8", "reserved");
	assert_refused("198.18.0.1", "reserved");
}

Test(webhook_addr, allows_public_ipv4_including_range_neighbours)
{
	static const char *const ok[] = {
	    "8.8.8.8",        "1.1.1.1",         "93.184.216.34", "9.255.255.255",
	    "11.0.0.0",       "172.15.255.255",  "172.32.0.0",    "192.167.255.255",
	    "192.169.0.0",    "100.63.255.255",  "100.128.0.0",   "169.253.255.255",
	    "169.255.0.0",    "126.255.255.255", "128.0.0.1",     "223.255.255.255",
	    "198.17.255.255", "198.20.0.0",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		cr_assert_null(classify(ok[i]), "%s must be allowed", ok[i]);
}

Test(webhook_addr, refuses_ipv6_non_public_ranges)
{
	assert_refused("::", "unspecified");
	assert_refused("::1", "loopback");
	assert_refused("fc00::1", "private");
	assert_refused("fd12:3456:789a::1", "private");
	assert_refused("fe80::1", "link-local");
	assert_refused("febf:ffff::1", "link-local");
	assert_refused("fec0::1", "private");
	assert_refused("ff02::1", "multicast");
	assert_refused("ff0e::101", "multicast");
	assert_refused("2001:db8::1", "reserved");
	assert_refused("100::1", "reserved");
	assert_refused("64:ff9b:1::1", "private");
}

Test(webhook_addr, judges_ipv6_forms_that_embed_ipv4)
{
	assert_refused("::ffff:127.0.0.1", "loopback");
	assert_refused("::ffff:10.1.2.3", "private");
	assert_refused("::ffff:169.254.169.254", "link-local");
	assert_refused("::ffff:0.0.0.0", "unspecified");
	assert_refused("::ffff:0:192.168.0.1", "private");
	assert_refused("::127.0.0.1", "loopback");
	assert_refused("64:ff9b::10.0.0.1", "private");
	assert_refused("2002:7f00:1::", "loopback");
	assert_refused("2002:c0a8:101::1", "private");
	cr_assert_null(classify("::ffff:8.8.8.8"));
	cr_assert_null(classify("64:ff9b::8.8.8.8"));
	cr_assert_null(classify("2002:808:808::1"));
}

Test(webhook_addr, allows_public_ipv6)
{
	static const char *const ok[] = {"2606:4700:4700::1111",
	                                 "2001:4860:4860::8888",
	                                 "2a00:1450:4001:80b::200e",
	                                 "fbff:ffff::1",
	                                 "fe00::1",
	                                 "2001:db9::1"};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		cr_assert_null(classify(ok[i]), "%s must be allowed", ok[i]);
}

Test(webhook_addr, refuses_other_families)
{
	struct sockaddr sa = {.sa_family = AF_UNIX};
	cr_assert_not_null(wh_addr_class(&sa));
	cr_assert_not(wh_addr_allowed(&sa));
	cr_assert_not(wh_addr_allowed(NULL));
}

/* ---- URL policy ---- */

/* The URL to store of the last accepted check. */
static char stored[WH_URL_MAX + 1];

static br_status check(const char *url, bool allow_private, char *why)
{
	why[0] = '\0';
	stored[0] = '\0';
	char *out = NULL;
	br_status st = wh_url_check(url, allow_private, &out, why, 256);
	if (st == BR_OK) {
		cr_assert_not_null(out);
		cr_assert_leq(strlen(out), WH_URL_MAX);
		memcpy(stored, out, strlen(out) + 1);
	}
	free(out);
	return st;
}

Test(webhook_url, schemes)
{
	char why[256];
	cr_assert_eq(check("http://93.184.216.34/hook", false, why), BR_OK, "%s", why);
	cr_assert_eq(check("https://93.184.216.34:8443/a?b=c", false, why), BR_OK, "%s", why);
	cr_assert_eq(check("HTTPS://93.184.216.34/", false, why), BR_OK, "%s", why);
	cr_assert_eq(check("http://user:pw@93.184.216.34/", false, why), BR_OK, "%s", why);
	cr_assert_eq(check("ftp://93.184.216.34/file", true, why), BR_INVAL);
	cr_assert(strstr(why, "http or https"), "%s", why);
	cr_assert_eq(check("file:///etc/passwd", true, why), BR_INVAL);
	cr_assert_eq(check("gopher://93.184.216.34/", true, why), BR_INVAL);
	cr_assert_eq(check("javascript:alert(1)", true, why), BR_INVAL);
	cr_assert_eq(check("93.184.216.34/hook", true, why), BR_INVAL, "no scheme");
}

Test(webhook_url, needs_a_host_and_a_valid_url)
{
	char why[256];
	cr_assert_eq(check("http://", true, why), BR_INVAL);
	cr_assert(why[0]);
	cr_assert_eq(check("https:///path", true, why), BR_INVAL);
	cr_assert_eq(check("http:/93.184.216.34/x", true, why), BR_INVAL);
	cr_assert_eq(check("http://exa mple.com/", true, why), BR_INVAL);
	cr_assert_eq(check("", true, why), BR_INVAL);
	cr_assert_eq(check("http://93.184.216.34:99999/", true, why), BR_INVAL);
}

Test(webhook_url, length_limit)
{
	static char url[WH_URL_MAX + 2];
	memcpy(url, "http://93.184.216.34/", 21);
	memset(url + 21, 'a', sizeof(url) - 22);
	url[sizeof(url) - 1] = '\0';
	char why[256];
	cr_assert_eq(check(url, true, why), BR_INVAL, "%zu characters", strlen(url));
	url[WH_URL_MAX] = '\0';
	cr_assert_eq(check(url, true, why), BR_OK, "%s", why);
}

Test(webhook_url, private_targets_need_the_switch)
{
	static const char *const urls[] = {
	    "http://127.0.0.1:8080/hook",
	    "http://localhost/hook",
	    "http://[::1]/hook",
	    "http://10.0.0.5/",
	    "http://[::ffff:192.168.0.1]/",
	    "http://169.254.169.254/",
	    "http://0x7f000001/",
	    "http://2130706433/",
	    "http://[fe80::1%25eth0]/",
	    "http://0.0.0.0:9000/",
	};
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		char why[256];
		cr_assert_eq(check(urls[i], false, why), BR_INVAL, "%s accepted", urls[i]);
		cr_assert(why[0], "%s: no reason", urls[i]);
		cr_assert_eq(check(urls[i], true, why), BR_OK, "%s with the switch: %s", urls[i],
		             why);
	}
}

Test(webhook_url, nothing_is_resolved_when_private_targets_are_allowed)
{
	/* .invalid never resolves (RFC 6761); with the switch on it is not looked up. */
	char why[256];
	cr_assert_eq(check("https://no-such-host.invalid/hook", true, why), BR_OK, "%s", why);
}

Test(webhook_url, an_ascii_url_is_stored_as_given)
{
	char why[256];
	cr_assert_eq(check("HTTPS://93.184.216.34:8443/a/../b?c=d", true, why), BR_OK, "%s", why);
	cr_assert_str_eq(stored, "HTTPS://93.184.216.34:8443/a/../b?c=d");
}

/*
 * An internationalized host is stored and delivered to in punycode; before,
 * libcurl's CURLU_PUNYCODE made it a 503 "Out of memory." (libcurl 7.88).
 */
Test(webhook_url, internationalized_hosts_become_punycode)
{
	char why[256];
	cr_assert_eq(check("https://b\xc3\xbc"
	                   "cher.example/hook?x=1",
	                   true, why),
	             BR_OK, "%s", why);
	cr_assert_str_eq(stored, "https://xn--bcher-kva.example/hook?x=1");
	/* UTS#46 mapping: upper case folds to the same host. */
	cr_assert_eq(check("https://B\xc3\x9c"
	                   "CHER.example/hook",
	                   true, why),
	             BR_OK, "%s", why);
	cr_assert_str_eq(stored, "https://xn--bcher-kva.example/hook");
	cr_assert_eq(check("http://user:pw@\xe4\xbe\x8b\xe3\x81\x88.jp:8080/", true, why), BR_OK,
	             "%s", why);
	cr_assert_str_eq(stored, "http://user:pw@xn--r8jz45g.jp:8080/");
	/* Already punycode: as given. */
	cr_assert_eq(check("https://xn--bcher-kva.example/hook", true, why), BR_OK, "%s", why);
	cr_assert_str_eq(stored, "https://xn--bcher-kva.example/hook");
}

Test(webhook_url, invalid_internationalized_hosts_are_refused_with_a_reason)
{
	char why[256];
	/* Not UTF-8. */
	cr_assert_eq(check("https://b\xfc"
	                   "cher.example/",
	                   true, why),
	             BR_INVAL);
	cr_assert(why[0]);
	/* A label that IDNA2008 disallows (a symbol). */
	cr_assert_eq(check("https://\xe2\x98\x83.example/", true, why), BR_INVAL);
	cr_assert(strstr(why, "internationalized"), "%s", why);
}

Test(webhook_url, internationalized_hosts_are_resolved_in_punycode)
{
	/* .invalid never resolves: refused as unresolvable, not as out of memory. */
	char why[256];
	cr_assert_eq(check("https://b\xc3\xbc"
	                   "cher.invalid/hook",
	                   false, why),
	             BR_INVAL);
	cr_assert(strstr(why, "resolved"), "%s", why);
}
