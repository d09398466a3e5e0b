/*
 * auth.h - bearer-token authentication of /v1 requests.
 */
#ifndef BULKREG_API_AUTH_H
#define BULKREG_API_AUTH_H

#include <stdbool.h>

#include "app.h"
#include "crypto.h"

/* Size of the token digest parameter ("\\x" and 64 hex digits). */
#define AUTH_DIGEST_LEN (2 + 2 * CR_SHA256_LEN + 1)

/* The digest's hex digits, without the "\\x" of a bytea parameter. */
#define AUTH_DIGEST_HEX(digest) ((digest) + 2)

/*
 * Resolves the request's token (Authorization: Bearer <token>, or the bare
 * token as Livestorm sends it) to r->org_id. The token is looked up by its
 * SHA-256 digest, so no comparison ever touches the secret itself. On
 * failure the response is set (401, or 503 when the database is down) and
 * false is returned.
 */
bool auth_request(struct api_req *r);

/*
 * The two halves of auth_request, for a route that looks the token up in
 * its own statement. auth_digest writes the token's digest parameter, or
 * sets 401 and returns false when the request carries no usable token.
 * auth_accept copies the token's organization and id (as the statement
 * found them) to r->org_id and r->token_id, or sets 401 and returns false
 * when org_id is NULL: no such token, or a revoked one.
 */
bool auth_digest(struct api_req *r, char digest[AUTH_DIGEST_LEN]);
bool auth_accept(struct api_req *r, const char *org_id, const char *token_id);

#endif
