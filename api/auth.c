/*
 * auth.c - token authentication (see auth.h). Stateless; thread-safe.
 */
#include "auth.h"

#include <string.h>
#include <strings.h>

#include "jsonapi.h"
#include "token.h"

#define AUTH_TOKEN_MAX 256

static const db_stmt stmt_token = {"auth_token",
                                   "SELECT organization_id, id FROM api_tokens WHERE token_hash = "
                                   "$1::bytea AND revoked_at IS NULL",
                                   1};

bool auth_request(struct api_req *r)
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
		ja_fail(r, 401, "unauthorized", "Unauthorized",
		        "Send a valid API token in the Authorization header.");
		return false;
	}
	char digest[2 + 2 * CR_SHA256_LEN + 1];
	token_digest_param(h, len, digest);
	const char *params[] = {digest};
	PGresult *res = NULL;
	br_status st = db_run(r->db, &stmt_token, params, &res);
	if (st != BR_OK) {
		ja_db_fail(r, st);
		return false;
	}
	bool ok = PQntuples(res) == 1;
	if (ok) {
		memcpy(r->org_id, PQgetvalue(res, 0, 0), API_UUID_LEN + 1);
		memcpy(r->token_id, PQgetvalue(res, 0, 1), API_UUID_LEN + 1);
	}
	PQclear(res);
	if (!ok)
		ja_fail(r, 401, "unauthorized", "Unauthorized",
		        "The API token is unknown or has been revoked.");
	return ok;
}
