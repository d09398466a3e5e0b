/*
 * test_crypto.c - the libcrypto wrappers against published vectors:
 * SHA-256 (FIPS 180-2 "abc"), HMAC-SHA256 (RFC 4231), base64 (RFC 4648
 * §10, standard and URL-safe), plus hex, constant-time compare and random
 * bytes.
 */
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "crypto.h"
#include "support.h"

static void hex_of(const unsigned char *d, size_t n, char *out)
{
	cr_hex(d, n, out);
}

Test(sha256, known_vectors)
{
	unsigned char d[CR_SHA256_LEN];
	char hex[2 * CR_SHA256_LEN + 1];
	cr_sha256("abc", 3, d);
	hex_of(d, sizeof(d), hex);
	cr_assert_str_eq(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	cr_sha256("", 0, d);
	hex_of(d, sizeof(d), hex);
	cr_assert_str_eq(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	const char *two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	cr_sha256(two_blocks, strlen(two_blocks), d);
	hex_of(d, sizeof(d), hex);
	cr_assert_str_eq(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

Test(hmac_sha256, rfc4231)
{
	unsigned char mac[CR_SHA256_LEN];
	char hex[2 * CR_SHA256_LEN + 1];

	/* Test case 2: a key shorter than the output. */
	const char *data2 = "what do ya want for nothing?";
	cr_assert_eq(cr_hmac_sha256("Jefe", 4, data2, strlen(data2), mac), BR_OK);
	hex_of(mac, sizeof(mac), hex);
	cr_assert_str_eq(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");

	/* Test case 1. */
	unsigned char key1[20];
	memset(key1, 0x0b, sizeof(key1));
	cr_assert_eq(cr_hmac_sha256(key1, sizeof(key1), "Hi There", 8, mac), BR_OK);
	hex_of(mac, sizeof(mac), hex);
	cr_assert_str_eq(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");

	/* Test case 6: a key longer than the block size is hashed first. */
	unsigned char key6[131];
	memset(key6, 0xaa, sizeof(key6));
	const char *data6 = "Test Using Larger Than Block-Size Key - Hash Key First";
	cr_assert_eq(cr_hmac_sha256(key6, sizeof(key6), data6, strlen(data6), mac), BR_OK);
	hex_of(mac, sizeof(mac), hex);
	cr_assert_str_eq(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

Test(hmac_sha256, standard_webhooks_example)
{
	/*
	 * The Standard Webhooks reference example: secret
	 * whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw, id msg_p5jXN8AQM9LWM0D4loKWxJek,
	 * timestamp 1614265330, body {"test": 2432232314}.
	 */
	unsigned char key[64];
	long klen = cr_base64_decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 32, key, sizeof(key));
	cr_assert_eq(klen, 24);
	const char *msg = "msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{\"test\": 2432232314}";
	unsigned char mac[CR_SHA256_LEN];
	cr_assert_eq(cr_hmac_sha256(key, (size_t)klen, msg, strlen(msg), mac), BR_OK);
	char b64[64];
	cr_assert_gt(cr_base64(mac, sizeof(mac), false, b64, sizeof(b64)), 0);
	cr_assert_str_eq(b64, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
}

static const struct {
	const char *in, *std, *url;
} b64_vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};

Test(base64, rfc4648_vectors)
{
	for (size_t i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		const char *in = b64_vectors[i].in;
		size_t n = strlen(in);
		char out[32];
		cr_expect_eq(cr_base64(in, n, false, out, sizeof(out)), strlen(b64_vectors[i].std));
		cr_expect_str_eq(out, b64_vectors[i].std);
		cr_expect_eq(cr_base64_len(n, false), strlen(b64_vectors[i].std));
		cr_expect_eq(cr_base64(in, n, true, out, sizeof(out)), strlen(b64_vectors[i].url));
		cr_expect_str_eq(out, b64_vectors[i].url);
		cr_expect_eq(cr_base64_len(n, true), strlen(b64_vectors[i].url));

		unsigned char back[32];
		long m = cr_base64_decode(b64_vectors[i].std, strlen(b64_vectors[i].std), back,
		                          sizeof(back));
		cr_expect_eq(m, (long)n, "decoding %s", b64_vectors[i].std);
		cr_expect(m == (long)n && memcmp(back, in, n) == 0, "decoding %s",
		          b64_vectors[i].std);
	}
}

Test(base64, alphabets_differ_in_62_and_63)
{
	const unsigned char in[] = {0xfb, 0xff, 0xbf};
	char out[16];
	cr_assert_eq(cr_base64(in, 3, false, out, sizeof(out)), 4);
	cr_assert_str_eq(out, "+/+/");
	cr_assert_eq(cr_base64(in, 3, true, out, sizeof(out)), 4);
	cr_assert_str_eq(out, "-_-_");
	cr_assert_eq(cr_base64(in, 2, false, out, sizeof(out)), 4);
	cr_assert_str_eq(out, "+/8=");
	cr_assert_eq(cr_base64(in, 2, true, out, sizeof(out)), 3);
	cr_assert_str_eq(out, "-_8");
}

Test(base64, output_buffer_too_small)
{
	char out[8];
	memset(out, 'x', sizeof(out));
	/* "foob" needs 8 characters plus the NUL. */
	cr_assert_eq(cr_base64("foob", 4, false, out, 8), 0);
	cr_assert_eq(cr_base64("foob", 4, false, out, 0), 0);
	cr_assert_eq(cr_base64("foob", 4, true, out, 6), 0);
	cr_assert_eq(cr_base64("foob", 4, true, out, 7), 6);
	cr_assert_str_eq(out, "Zm9vYg");
}

Test(base64, decode_round_trips)
{
	unsigned char in[70], back[80];
	char enc[128];
	cr_assert_eq(cr_random(in, sizeof(in)), BR_OK);
	for (size_t n = 0; n <= sizeof(in); n++) {
		size_t len = cr_base64(in, n, false, enc, sizeof(enc));
		cr_assert_eq(len, cr_base64_len(n, false));
		cr_assert_eq(len % 4, 0);
		long m = cr_base64_decode(enc, len, back, sizeof(back));
		cr_assert_eq(m, (long)n, "length %zu: decoded %ld bytes", n, m);
		cr_assert(memcmp(in, back, n) == 0, "length %zu: round trip differs", n);
	}
	/* Exactly enough room is enough. */
	cr_assert_eq(cr_base64_decode("Zm9vYmFy", 8, back, 6), 6);
	cr_assert_eq(cr_base64_decode("Zm9vYg==", 8, back, 4), 4);
}

Test(base64, decode_rejects_bad_input)
{
	static const char *const cases[] = {
	    "Zg=",                       /* length not a multiple of 4 */
	    "Z",        "Zm9vY", "Z===", /* padding too early */
	    "====",     "Zg=A",          /* data after padding */
	    "Zg==Zm8=",                  /* padding in the middle */
	    "Zm9v!A==", "Zm 9v", "-_8=", /* URL-safe alphabet */
	    "Zm9\n",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned char out[16];
		cr_expect_eq(cr_base64_decode(cases[i], strlen(cases[i]), out, sizeof(out)), -1,
		             "\"%s\" accepted", cases[i]);
	}
	unsigned char small[5];
	cr_expect_eq(cr_base64_decode("Zm9vYmFy", 8, small, sizeof(small)), -1,
	             "decoded past the output's end");
}

Test(hex, lower_case)
{
	const unsigned char in[] = {0x00, 0x01, 0xab, 0x7f, 0xff};
	char out[11];
	memset(out, 'x', sizeof(out));
	cr_hex(in, sizeof(in), out);
	cr_assert_str_eq(out, "0001ab7fff");
	cr_hex(in, 0, out);
	cr_assert_str_eq(out, "");
}

Test(cr_equal, compares_all_bytes)
{
	unsigned char a[32], b[32];
	memset(a, 0x5a, sizeof(a));
	memcpy(b, a, sizeof(b));
	cr_assert(cr_equal(a, b, sizeof(a)));
	cr_assert(cr_equal(a, b, 0));
	b[31] ^= 1;
	cr_assert_not(cr_equal(a, b, sizeof(a)));
	cr_assert(cr_equal(a, b, 31));
	b[31] ^= 1;
	b[0] ^= 0x80;
	cr_assert_not(cr_equal(a, b, sizeof(a)));
	cr_assert(cr_equal("same", "same", 4));
	cr_assert_not(cr_equal("same", "sane", 4));
}

Test(cr_random, fills_and_differs)
{
	unsigned char a[32], b[32], zero[32];
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	memset(zero, 0, sizeof(zero));
	cr_assert_eq(cr_random(a, sizeof(a)), BR_OK);
	cr_assert_eq(cr_random(b, sizeof(b)), BR_OK);
	cr_assert(memcmp(a, b, sizeof(a)) != 0, "two draws of 256 bits are equal");
	cr_assert(memcmp(a, zero, sizeof(a)) != 0, "no bytes written");
	cr_assert_eq(cr_random(a, 0), BR_OK);
}

/* The suite's own verifier (tests/support) against the same reference example. */
Test(hook_verify, standard_webhooks_example)
{
	char body[] = "{\"test\": 2432232314}";
	struct t_hook h;
	memset(&h, 0, sizeof(h));
	snprintf(h.id, sizeof(h.id), "msg_p5jXN8AQM9LWM0D4loKWxJek");
	snprintf(h.timestamp, sizeof(h.timestamp), "1614265330");
	snprintf(h.signature, sizeof(h.signature),
	         "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	h.body = body;
	const char *secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
	cr_assert(t_hook_verify(&h, secret));

	/* Any of several signatures may match. */
	snprintf(h.signature, sizeof(h.signature),
	         "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= "
	         "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	cr_assert(t_hook_verify(&h, secret));

	body[2] = 'T';
	cr_assert_not(t_hook_verify(&h, secret), "a changed body verified");
	body[2] = 't';
	snprintf(h.timestamp, sizeof(h.timestamp), "1614265331");
	cr_assert_not(t_hook_verify(&h, secret), "a changed timestamp verified");
	snprintf(h.timestamp, sizeof(h.timestamp), "1614265330");
	cr_assert_not(t_hook_verify(&h, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx"));
	cr_assert_not(t_hook_verify(&h, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), "no whsec_ prefix");
	snprintf(h.signature, sizeof(h.signature),
	         "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	cr_assert_not(t_hook_verify(&h, secret), "a v2 signature verified");
}
