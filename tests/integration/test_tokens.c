/*
 * test_tokens.c - `bulkreg-admin token create|revoke` (README.md) and
 * what the API makes of the tokens (§5): the token is printed alone on the
 * last line, only its SHA-256 is stored, the API accepts it as a bearer
 * token and bare, and refuses it once revoked. Also the admin's usage
 * errors and every program's exit status 2 on a bad configuration (§3).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "crypto.h"
#include "support.h"

#define TOKEN_CHARS        36
#define REVOKE_DEADLINE_MS 10000

static bool is_token(const char *s)
{
	if (strlen(s) != TOKEN_CHARS || strncmp(s, "brk_", 4) != 0)
		return false;
	for (const char *p = s + 4; *p; p++) {
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			return false;
	}
	return true;
}

static int occurrences(const char *hay, const char *needle)
{
	int n = 0;
	for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
		n++;
	return n;
}

/* Runs token create for org; checks the output's shape; the token into token. */
static void token_create(const char *org, char token[TOKEN_CHARS + 1])
{
	char out[4096];
	const char *args[] = {"token", "create", "--org", org, NULL};
	int rc = t_admin(out, sizeof(out), args);
	cr_assert_eq(rc, 0, "token create exited %d: %s", rc, out);
	size_t len = strlen(out);
	cr_assert(len > 0 && out[len - 1] == '\n', "output does not end with a line: %s", out);
	out[len - 1] = '\0';
	const char *last = strrchr(out, '\n');
	last = last ? last + 1 : out;
	cr_assert(is_token(last), "the last line is not a token alone: \"%s\"", last);
	cr_assert_eq(occurrences(out, last), 1, "the token is printed more than once:\n%s", out);
	memcpy(token, last, TOKEN_CHARS + 1);
}

Test(tokens, create_prints_the_token_and_stores_its_digest)
{
	char org[64], token[TOKEN_CHARS + 1];
	t_unique_name(org, sizeof(org), "t-tokens");
	token_create(org, token);

	PGconn *db = t_db();
	const char *params[] = {org};
	PGresult *res = t_sql(db,
	                      "SELECT encode(t.token_hash, 'hex'), t.prefix, t.revoked_at IS NULL,"
	                      "       row_to_json(t)::text"
	                      "  FROM api_tokens t JOIN organizations o ON o.id = t.organization_id"
	                      " WHERE o.name = $1",
	                      1, params);
	cr_assert_eq(PQntuples(res), 1, "%d tokens stored for a new organization", PQntuples(res));
	unsigned char digest[CR_SHA256_LEN];
	char hex[2 * CR_SHA256_LEN + 1];
	cr_sha256(token, strlen(token), digest);
	cr_hex(digest, sizeof(digest), hex);
	cr_expect_str_eq(PQgetvalue(res, 0, 0), hex, "the stored hash is not SHA-256(token)");
	cr_expect(strncmp(PQgetvalue(res, 0, 1), token, 12) == 0 &&
	              strlen(PQgetvalue(res, 0, 1)) == 12,
	          "prefix %s is not the token's first 12 characters", PQgetvalue(res, 0, 1));
	cr_expect_str_eq(PQgetvalue(res, 0, 2), "t", "a new token is revoked");
	cr_expect_null(strstr(PQgetvalue(res, 0, 3), token + 12),
	               "the token's secret part is stored: %s", PQgetvalue(res, 0, 3));
	PQclear(res);

	/* A second token for the same name reuses the organization. */
	char token2[TOKEN_CHARS + 1];
	token_create(org, token2);
	cr_expect_str_neq(token2, token, "the same token twice");
	cr_expect_eq(
	    t_sql_long(db, "SELECT count(*) FROM organizations WHERE name = $1", 1, params), 1);
	cr_expect_eq(t_sql_long(db,
	                        "SELECT count(*) FROM api_tokens t JOIN organizations o"
	                        " ON o.id = t.organization_id WHERE o.name = $1",
	                        1, params),
	             2);
	PQfinish(db);
}

struct auth_probe {
	const char *url;
	const char *token;
	long want;
	long last;
};

static bool status_is(void *ctx)
{
	struct auth_probe *p = ctx;
	struct t_resp r;
	t_http(&r, "GET", p->url, p->token, NULL, NULL);
	p->last = r.status;
	t_resp_free(&r);
	return p->last == p->want;
}

static void expect_error(const struct t_resp *r, long status, const char *code)
{
	cr_expect_eq(r->status, status, "status %ld, body %s", r->status, r->body);
	json_t *first = json_array_get(json_object_get(r->json, "errors"), 0);
	const char *got = json_string_value(json_object_get(first, "code"));
	cr_expect(got && strcmp(got, code) == 0, "error code is not %s: %s", code, r->body);
}

Test(tokens, api_accepts_then_refuses_a_revoked_token, .timeout = 300)
{
	struct t_org org;
	t_org_new(&org);
	char other[TOKEN_CHARS + 1];
	token_create(org.name, other);

	struct t_proc api;
	t_api_start(&api, NULL);
	char id[37], url[256], bare[128];
	t_uuid(id);
	snprintf(url, sizeof(url), "%s/v1/jobs/%s", api.url, id);
	struct t_resp r;

	/* Known token: authenticated, and the job does not exist. */
	t_http(&r, "GET", url, org.token, NULL, NULL);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);
	snprintf(bare, sizeof(bare), "Authorization: %s", org.token);
	const char *bare_hdr[] = {bare, NULL};
	t_http(&r, "GET", url, NULL, NULL, bare_hdr);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);

	/* Missing, unknown and altered tokens. */
	t_http(&r, "GET", url, NULL, NULL, NULL);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);
	t_http(&r, "GET", url, "brk_thisisnotatokenthatexistsanywhere", NULL, NULL);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);
	char altered[TOKEN_CHARS + 1];
	memcpy(altered, org.token, sizeof(altered));
	altered[TOKEN_CHARS - 1] = altered[TOKEN_CHARS - 1] == 'A' ? 'B' : 'A';
	t_http(&r, "GET", url, altered, NULL, NULL);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);

	/* Revoke by prefix: that token stops working, the other one does not. */
	char prefix[13];
	memcpy(prefix, org.token, 12);
	prefix[12] = '\0';
	char out[1024];
	const char *revoke[] = {"token", "revoke", prefix, NULL};
	int rc = t_admin(out, sizeof(out), revoke);
	cr_assert_eq(rc, 0, "token revoke %s exited %d: %s", prefix, rc, out);
	struct auth_probe probe = {url, org.token, 401, 0};
	cr_assert(t_poll(status_is, &probe, REVOKE_DEADLINE_MS),
	          "a revoked token still answers %ld after %d ms", probe.last, REVOKE_DEADLINE_MS);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);
	t_http(&r, "GET", url, NULL, NULL, bare_hdr);
	expect_error(&r, 401, "unauthorized");
	t_resp_free(&r);
	t_http(&r, "GET", url, other, NULL, NULL);
	expect_error(&r, 404, "not_found");
	t_resp_free(&r);

	/* Nothing is left to revoke under that prefix. */
	rc = t_admin(out, sizeof(out), revoke);
	cr_expect_neq(rc, 0, "revoking twice succeeded: %s", out);

	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	PGconn *db = t_db();
	t_check_invariants(db);
	PQfinish(db);
}

Test(tokens, revoking_an_unknown_prefix_fails)
{
	char id[37], prefix[32];
	t_uuid(id);
	/* A random 12-character prefix: no token of any test has it (1 in 2^32). */
	snprintf(prefix, sizeof(prefix), "brk_%.8s", id);
	char out[1024];
	const char *args[] = {"token", "revoke", "brk_$$$$$$$$", NULL};
	int rc = t_admin(out, sizeof(out), args);
	cr_expect_neq(rc, 0, "revoking an unknown prefix succeeded: %s", out);
	cr_expect_neq(rc, 2, "an unknown prefix is not a usage error");
	args[2] = prefix;
	rc = t_admin(out, sizeof(out), args);
	cr_expect_neq(rc, 0, "revoking unknown prefix %s succeeded: %s", prefix, out);
}

Test(tokens, bad_usage_exits_2)
{
	static const char *const cases[][6] = {
	    {NULL},
	    {"frobnicate", NULL},
	    {"token", NULL},
	    {"token", "create", NULL},
	    {"token", "create", "--org", NULL},
	    {"token", "create", "--name", "x", NULL},
	    {"token", "create", "--org", "", NULL},
	    {"token", "create", "--org", "a", "b", NULL},
	    {"token", "revoke", NULL},
	    {"token", "revoke", "short", NULL},
	    {"token", "delete", "brk_abcdefgh", NULL},
	    {"migrate", "now", NULL},
	    {"status", "all", NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[1024], err[2048];
		int rc = t_run("bulkreg-admin", cases[i], NULL, out, sizeof(out), err, sizeof(err),
		               60000);
		char shown[128] = "";
		size_t len = 0;
		for (const char *const *a = cases[i]; *a && len < sizeof(shown); a++)
			len += (size_t)snprintf(shown + len, sizeof(shown) - len, " '%s'", *a);
		cr_expect_eq(rc, 2, "bulkreg-admin%s exited %d (stderr: %s)", shown, rc, err);
		cr_expect(err[0] != '\0', "bulkreg-admin%s printed nothing on stderr", shown);
	}
}

/* Runs prog (args) with one bad variable; expects exit 2 and a line naming it. */
static void expect_config_error(const char *prog, const char *const *args, const char *kv)
{
	char var[64];
	size_t n = strcspn(kv, "=");
	cr_assert_lt(n, sizeof(var));
	memcpy(var, kv, n);
	var[n] = '\0';
	const char *env[] = {kv, NULL};
	char out[4096], err[4096];
	int rc = t_run(prog, args, env, out, sizeof(out), err, sizeof(err), 30000);
	cr_expect_eq(rc, 2, "%s with %s exited %d (stderr: %s)", prog, kv, rc, err);
	bool named = false;
	for (const char *line = err; line && *line && !named;) {
		const char *eol = strchr(line, '\n');
		size_t len = eol ? (size_t)(eol - line) : strlen(line);
		const char *hit = strstr(line, var);
		named = hit && hit < line + len;
		line = eol ? eol + 1 : NULL;
	}
	cr_expect(named, "%s with %s: no line names %s (stderr: %s)", prog, kv, var, err);
}

Test(tokens, bad_configuration_exits_2, .timeout = 300)
{
	const char *migrate[] = {"migrate", NULL};
	expect_config_error("bulkreg-api", NULL, "BULKREG_API_PORT=abc");
	expect_config_error("bulkreg-api", NULL, "BULKREG_RATE_LIMIT=fast");
	expect_config_error("bulkreg-api", NULL, "DATABASE_URL=mysql://root@localhost/x");
	expect_config_error("bulkreg-admin", migrate, "BULKREG_API_PORT=abc");
	expect_config_error("bulkreg-admin", migrate, "DATABASE_URL=mysql://root@localhost/x");
	expect_config_error("bulkreg-worker", NULL, "BULKREG_WORKER_CONCURRENCY=0");
	expect_config_error("bulkreg-worker", NULL, "BULKREG_WEBHOOK_RETRY_SCHEDULE=5x");
	expect_config_error("bulkreg-worker", NULL, "AMQP_URL=http://localhost/");
}
