/*
 * crypto.c - thin wrappers over libcrypto (see crypto.h). No global state.
 */
#include "crypto.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

br_status cr_random(void *buf, size_t n)
{
	if (n > (size_t)0x7fffffff || RAND_bytes(buf, (int)n) != 1)
		return BR_CRYPTO;
	return BR_OK;
}

void cr_sha256(const void *data, size_t len, unsigned char out[CR_SHA256_LEN])
{
	SHA256(data, len, out);
}

br_status cr_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                         unsigned char out[CR_SHA256_LEN])
{
	unsigned int outlen = 0;
	if (keylen > (size_t)0x7fffffff)
		return BR_CRYPTO;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen) ||
	    outlen != CR_SHA256_LEN)
		return BR_CRYPTO;
	return BR_OK;
}

size_t cr_base64_len(size_t n, bool url)
{
	if (!url)
		return (n + 2) / 3 * 4;
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

size_t cr_base64(const void *data, size_t n, bool url, char *out, size_t outcap)
{
	static const char std[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	static const char safe[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const char *abc = url ? safe : std;
	const unsigned char *p = data;
	size_t need = cr_base64_len(n, url);
	if (outcap < need + 1)
		return 0;
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		out[o++] = abc[v >> 6 & 63];
		out[o++] = abc[v & 63];
	}
	if (i < n) {
		unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
		out[o++] = abc[v >> 18 & 63];
		out[o++] = abc[v >> 12 & 63];
		if (i + 1 < n)
			out[o++] = abc[v >> 6 & 63];
		else if (!url)
			out[o++] = '=';
		if (!url)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

long cr_base64_decode(const char *s, size_t len, unsigned char *out, size_t outcap)
{
	if (len % 4 != 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < len; i += 4) {
		unsigned v = 0;
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			char c = s[i + k];
			unsigned d;
			if (c >= 'A' && c <= 'Z')
				d = (unsigned)(c - 'A');
			else if (c >= 'a' && c <= 'z')
				d = (unsigned)(c - 'a' + 26);
			else if (c >= '0' && c <= '9')
				d = (unsigned)(c - '0' + 52);
			else if (c == '+')
				d = 62;
			else if (c == '/')
				d = 63;
			else if (c == '=' && i + 4 == len && k >= 2)
				d = 0, pad++;
			else
				return -1;
			if (pad && c != '=')
				return -1;
			v = v << 6 | d;
		}
		int bytes = 3 - pad;
		if (o + (size_t)bytes > outcap)
			return -1;
		out[o++] = (unsigned char)(v >> 16);
		if (bytes > 1)
			out[o++] = (unsigned char)(v >> 8);
		if (bytes > 2)
			out[o++] = (unsigned char)v;
	}
	return (long)o;
}

void cr_hex(const void *data, size_t n, char *out)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = data;
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = hex[p[i] >> 4];
		out[2 * i + 1] = hex[p[i] & 15];
	}
	out[2 * n] = '\0';
}

bool cr_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}
