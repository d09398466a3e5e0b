/*
 * auth.c - token authentication (see auth.h). Stateless; thread-safe.
 */
#include "auth.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "jsonapi.h"
#include "log.h"
#include "token.h"

#define AUTH_TOKEN_MAX 256

/*
 * Every 401 names the scheme (RFC 7235 section 3.1 requires the header);
 * when a token was sent but is not one we know, it says so as RFC 6750
 * section 3.1 does, so a client can tell "log in" from "your token is bad".
 */
static void unauthorized(struct api_req *r, bool token_given, const char *detail)
{
	br_status st = http_resp_header(r->resp, "WWW-Authenticate", "Bearer realm=\"bulkreg\"%s",
	                                token_given ? ", error=\"invalid_token\"" : "");
	if (st != BR_OK)
		LOG_WARN("WWW-Authenticate header lost");
	ja_fail(r, 401, "unauthorized", "Unauthorized", detail);
}

static const db_stmt stmt_token = {"auth_token",
                                   "SELECT organization_id, id FROM api_tokens WHERE token_hash = "
                                   "$1::bytea AND revoked_at IS NULL",
                                   1};

bool auth_digest(struct api_req *r, char digest[AUTH_DIGEST_LEN])
{
	const char *h = http_req_header(r->http, "Authorization");
	if (h && strncasecmp(h, "Bearer ", 7) == 0)
		h += 7;
	while (h && *h == ' ')
		h++;
	size_t len = h ? strlen(h) : 0;
	while (len && h[len - 1] == ' ')
		len--;
	if (len == 0 || len > AUTH_TOKEN_MAX) {
		unauthorized(r, len > 0, "Send a valid API token in the Authorization header.");
		return false;
	}
	token_digest_param(h, len, digest);
	return true;
}

bool auth_accept(struct api_req *r, const char *org_id, const char *token_id)
{
	if (!org_id || !token_id) {
		unauthorized(r, true, "The API token is unknown or has been revoked.");
		return false;
	}
	snprintf(r->org_id, sizeof(r->org_id), "%s", org_id);
	snprintf(r->token_id, sizeof(r->token_id), "%s", token_id);
	return true;
}

bool auth_request(struct api_req *r)
{
	char digest[AUTH_DIGEST_LEN];
	if (!auth_digest(r, digest))
		return false;
	const char *params[] = {digest};
	PGresult *res = ja_query(r, &stmt_token, params);
	if (!res)
		return false;
	bool found = PQntuples(res) > 0;
	bool ok = auth_accept(r, found ? PQgetvalue(res, 0, 0) : NULL,
	                      found ? PQgetvalue(res, 0, 1) : NULL);
	PQclear(res);
	return ok;
}
