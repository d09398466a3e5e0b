/*
 * token.h - API tokens: generation and the digest that is stored.
 *
 * A token is a kind ("brk_" for an organization's API token, "bro_" for an
 * operator's console token) followed by 32 URL-safe base64 characters (192
 * random bits). The database keeps only SHA-256(token) and the first
 * TOKEN_PREFIX_LEN characters, which name the token for revocation.
 */
#ifndef BULKREG_TOKEN_H
#define BULKREG_TOKEN_H

#include <stddef.h>

#include "crypto.h"
#include "status.h"

#define TOKEN_LEN           36
#define TOKEN_PREFIX_LEN    12

#define TOKEN_KIND_API      "brk_"
#define TOKEN_KIND_OPERATOR "bro_"

/*
 * Writes a new token of kind (TOKEN_KIND_*) into out (TOKEN_LEN + 1 bytes).
 * BR_CRYPTO on failure.
 */
br_status token_generate(const char *kind, char out[TOKEN_LEN + 1]) BR_MUST_USE;

/* The stored digest of a presented token, as "\\x<hex>" for a bytea parameter. */
void token_digest_param(const char *token, size_t len, char out[2 + 2 * CR_SHA256_LEN + 1]);

#endif
