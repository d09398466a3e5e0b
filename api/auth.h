/*
 * auth.h - bearer-token authentication of /v1 requests.
 */
#ifndef BULKREG_API_AUTH_H
#define BULKREG_API_AUTH_H

#include <stdbool.h>

#include "app.h"

/*
 * Resolves the request's token (Authorization: Bearer <token>, or the bare
 * token as Livestorm sends it) to r->org_id. The token is looked up by its
 * SHA-256 digest, so no comparison ever touches the secret itself. On
 * failure the response is set (401, or 503 when the database is down) and
 * false is returned.
 */
bool auth_request(struct api_req *r);

#endif
