/*
 * token.c - API token generation and digests (see token.h). Thread-safe.
 */
#include "token.h"

#include <string.h>

#define TOKEN_RANDOM_BYTES 24

br_status token_generate(const char *kind, char out[TOKEN_LEN + 1])
{
	unsigned char raw[TOKEN_RANDOM_BYTES];
	br_status st = cr_random(raw, sizeof(raw));
	if (st != BR_OK)
		return st;
	memcpy(out, kind, 4);
	cr_base64(raw, sizeof(raw), true, out + 4, TOKEN_LEN + 1 - 4);
	return BR_OK;
}

void token_digest_param(const char *token, size_t len, char out[2 + 2 * CR_SHA256_LEN + 1])
{
	unsigned char d[CR_SHA256_LEN];
	cr_sha256(token, len, d);
	out[0] = '\\';
	out[1] = 'x';
	cr_hex(d, sizeof(d), out + 2);
}
