/*
 * crypto.h - the few primitives bulkreg needs from OpenSSL's libcrypto:
 * random bytes, SHA-256, HMAC-SHA256, base64 (standard and URL-safe),
 * hex and a constant-time compare. Stateless and thread-safe.
 */
#ifndef BULKREG_CRYPTO_H
#define BULKREG_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>

#include "status.h"

#define CR_SHA256_LEN 32

/* Fills buf with n cryptographically secure bytes; BR_CRYPTO on failure. */
br_status cr_random(void *buf, size_t n) BR_MUST_USE;

void cr_sha256(const void *data, size_t len, unsigned char out[CR_SHA256_LEN]);

/* HMAC-SHA256 of data under key; BR_CRYPTO on failure. */
br_status cr_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                         unsigned char out[CR_SHA256_LEN]) BR_MUST_USE;

/*
 * Base64 of n bytes into out (NUL-terminated); url selects the URL-safe
 * alphabet without padding. outcap must be at least cr_base64_len(n) + 1.
 * Returns the length written, or 0 when outcap is too small.
 */
size_t cr_base64(const void *data, size_t n, bool url, char *out, size_t outcap);
size_t cr_base64_len(size_t n, bool url);

/* Decodes standard base64; returns bytes written or -1 on bad input/space. */
long cr_base64_decode(const char *s, size_t len, unsigned char *out, size_t outcap);

/* Lower-case hex of n bytes into out, which holds 2n + 1 bytes. */
void cr_hex(const void *data, size_t n, char *out);

/* Compares n bytes in time independent of their content. */
bool cr_equal(const void *a, const void *b, size_t n);

#endif
