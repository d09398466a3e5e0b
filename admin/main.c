/*
 * bulkreg-admin - operator commands (README.md, "Administration"):
 *   migrate                     apply pending sql/ migrations and function files,
 *                               then declare the broker topology
 *   token create --org NAME     create the organization if new and a token
 *   token revoke TOKEN_PREFIX   revoke the token(s) with that prefix
 *   operator-token create [--name NAME]
 *                               a token that opens the operator console
 *                               (docs/console.md), of no organization
 *   operator-token revoke TOKEN_PREFIX
 *   status                      queue depth, consumers, members, jobs in flight
 *
 * Exit status: 0 success, 1 failure, 2 usage or configuration error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "migrate.h"
#include "mq.h"
#include "mq_mgmt.h"
#include "token.h"

#define ADMIN_STATEMENT_TIMEOUT_MS 600000
/* How long status waits for the management API (all nodes together). */
#define ADMIN_MGMT_MS 5000

static const struct mq_opts status_mq_opts = {.role = "status"};

static const db_stmt stmt_org_upsert = {
    "admin_org_upsert",
    "INSERT INTO organizations (name) VALUES ($1)"
    " ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
    1};
static const db_stmt stmt_token_insert = {
    "admin_token_insert",
    "INSERT INTO api_tokens (organization_id, prefix, token_hash)"
    " VALUES ($1, $2, $3::bytea)",
    3};
static const db_stmt stmt_token_revoke = {
    "admin_token_revoke",
    "UPDATE api_tokens SET revoked_at = now()"
    " WHERE prefix = left($1, 12) AND revoked_at IS NULL"
    "   AND (length($1) <= 12 OR token_hash = sha256(convert_to($1, 'UTF8')))"
    " RETURNING prefix",
    1};
static const db_stmt stmt_operator_insert = {
    "admin_operator_insert",
    "INSERT INTO operator_tokens (name, prefix, token_hash) VALUES ($1, $2, $3::bytea)", 3};
static const db_stmt stmt_operator_revoke = {
    "admin_operator_revoke",
    "UPDATE operator_tokens SET revoked_at = now()"
    " WHERE prefix = left($1, 12) AND revoked_at IS NULL"
    "   AND (length($1) <= 12 OR token_hash = sha256(convert_to($1, 'UTF8')))"
    " RETURNING prefix",
    1};
static const db_stmt stmt_in_flight = {"admin_in_flight",
                                       "SELECT count(*) FROM jobs WHERE status = 'processing'", 0};

static int usage(void)
{
	fputs("usage: bulkreg-admin migrate\n"
	      "       bulkreg-admin token create --org NAME\n"
	      "       bulkreg-admin token revoke TOKEN_PREFIX\n"
	      "       bulkreg-admin operator-token create [--name NAME]\n"
	      "       bulkreg-admin operator-token revoke TOKEN_PREFIX\n"
	      "       bulkreg-admin status\n",
	      stderr);
	return 2;
}

/*
 * Declares the exchanges, queues and bindings (docs/operations.md) on one
 * node of AMQP_URL. On a cluster, run once every node has joined: the
 * quorum queue gets a member on each node of the cluster as it is then.
 */
static int declare_topology(const struct br_config *cfg)
{
	mq_conn *mq = NULL;
	char node[128];
	const struct mq_opts opts = {.lazy = true, .declares = true, .role = "migrate"};
	br_status st = mq_open(cfg->amqp_url, &opts, &mq);
	if (st == BR_OK)
		st = mq_ensure(mq);
	if (st == BR_OK)
		st = mq_declare_topology(mq);
	if (st != BR_OK) {
		fprintf(stderr, "bulkreg-admin: declaring the broker topology failed: %s\n",
		        mq ? mq_errmsg(mq) : br_strerror(st));
		mq_close(mq);
		return 1;
	}
	mq_node_name(mq, node, sizeof(node));
	printf("broker topology declared (on %s)\n", node);
	mq_close(mq);
	return 0;
}

static int cmd_migrate(db_conn *db, const struct br_config *cfg)
{
	struct migrate_counts n = {0};
	char why[512];
	br_status st = migrate_run(db, &migrate_embedded_set, &n, why, sizeof(why));
	if (st != BR_OK) {
		fprintf(stderr, "bulkreg-admin: migrate failed: %s\n", why);
		return 1;
	}
	if (n.adopted)
		printf("recognised a database of the first cycle's migrations 001-013:"
		       " recorded as %s\n",
		       migrate_embedded[0].name);
	printf("migrations applied: %d (schema has %zu)\n", n.schema, migrate_embedded_count);
	printf("function files applied: %d (of %zu)\n", n.functions, migrate_functions_count);
	return declare_topology(cfg);
}

static int cmd_token_create(db_conn *db, const char *org)
{
	char token[TOKEN_LEN + 1], prefix[TOKEN_PREFIX_LEN + 1];
	char digest[2 + 2 * CR_SHA256_LEN + 1];
	PGresult *res = NULL;
	int rc = 1;
	if (strlen(org) == 0 || strlen(org) > 255) {
		fputs("bulkreg-admin: --org needs a name of 1 to 255 characters\n", stderr);
		return 2;
	}
	if (token_generate(TOKEN_KIND_API, token) != BR_OK) {
		fputs("bulkreg-admin: no random bytes available\n", stderr);
		return 1;
	}
	memcpy(prefix, token, TOKEN_PREFIX_LEN);
	prefix[TOKEN_PREFIX_LEN] = '\0';
	token_digest_param(token, strlen(token), digest);

	const char *org_params[] = {org};
	if (db_cmd(db, "BEGIN") != BR_OK || db_run(db, &stmt_org_upsert, org_params, &res) != BR_OK)
		goto out;
	const char *tok_params[] = {PQgetvalue(res, 0, 0), prefix, digest};
	if (db_run(db, &stmt_token_insert, tok_params, NULL) != BR_OK ||
	    db_cmd(db, "COMMIT") != BR_OK)
		goto out;
	printf("organization: %s (%s)\n", org, PQgetvalue(res, 0, 0));
	printf("token prefix: %s (revoke with: bulkreg-admin token revoke %s)\n", prefix, prefix);
	printf("%s\n", token);
	rc = 0;
out:
	if (rc != 0) {
		fprintf(stderr, "bulkreg-admin: token create failed: %s\n", db_errmsg(db));
		db_rollback(db);
	}
	PQclear(res);
	return rc;
}

static int cmd_token_revoke(db_conn *db, const db_stmt *stmt, const char *prefix)
{
	PGresult *res = NULL;
	if (strlen(prefix) < 8) {
		fputs("bulkreg-admin: give at least 8 characters of the token\n", stderr);
		return 2;
	}
	const char *params[] = {prefix};
	if (db_run(db, stmt, params, &res) != BR_OK) {
		fprintf(stderr, "bulkreg-admin: token revoke failed: %s\n", db_errmsg(db));
		return 1;
	}
	int n = PQntuples(res);
	PQclear(res);
	if (n == 0) {
		fprintf(stderr, "bulkreg-admin: no active token with prefix %s\n", prefix);
		return 1;
	}
	printf("revoked %d token(s) with prefix %.12s\n", n, prefix);
	return 0;
}

/* An operator token: opens /console, belongs to no organization. */
static int cmd_operator_create(db_conn *db, const char *name)
{
	char token[TOKEN_LEN + 1], prefix[TOKEN_PREFIX_LEN + 1];
	char digest[2 + 2 * CR_SHA256_LEN + 1];
	if (strlen(name) == 0 || strlen(name) > 255) {
		fputs("bulkreg-admin: --name needs 1 to 255 characters\n", stderr);
		return 2;
	}
	if (token_generate(TOKEN_KIND_OPERATOR, token) != BR_OK) {
		fputs("bulkreg-admin: no random bytes available\n", stderr);
		return 1;
	}
	memcpy(prefix, token, TOKEN_PREFIX_LEN);
	prefix[TOKEN_PREFIX_LEN] = '\0';
	token_digest_param(token, strlen(token), digest);
	const char *params[] = {name, prefix, digest};
	if (db_run(db, &stmt_operator_insert, params, NULL) != BR_OK) {
		fprintf(stderr, "bulkreg-admin: operator-token create failed: %s\n", db_errmsg(db));
		return 1;
	}
	printf("operator: %s\n", name);
	printf("token prefix: %s (revoke with: bulkreg-admin operator-token revoke %s)\n", prefix,
	       prefix);
	printf("%s\n", token);
	return 0;
}

/*
 * The quorum queue's members, from the management API: a queue with fewer
 * members than the cluster has nodes lost replicas (docs/operations.md).
 * "unknown" when the API cannot be asked: status still succeeds.
 */
static void print_members(const struct br_config *cfg)
{
	mq_mgmt *mgmt = NULL;
	struct mq_members m;
	char why[256] = "management API off (BULKREG_MQ_MANAGEMENT_URL)";
	br_status st = mq_mgmt_new(cfg->mq_management_url, cfg->amqp_url, &mgmt);
	if (st == BR_OK && mgmt)
		st = mq_mgmt_members(mgmt, MQ_QUEUE_TASKS, ADMIN_MGMT_MS, &m, why, sizeof(why));
	if (st == BR_OK && mgmt)
		printf("queue %s members %d online %d\n", MQ_QUEUE_TASKS, m.members, m.online);
	else
		printf("queue %s members unknown (%s)\n", MQ_QUEUE_TASKS, why);
	mq_mgmt_free(mgmt);
}

static int cmd_status(db_conn *db, const struct br_config *cfg)
{
	PGresult *res = NULL;
	mq_conn *mq = NULL;
	int rc = 1;
	if (db_run(db, &stmt_in_flight, NULL, &res) != BR_OK) {
		fprintf(stderr, "bulkreg-admin: status failed: %s\n", db_errmsg(db));
		return 1;
	}
	printf("jobs_in_flight %s\n", PQgetvalue(res, 0, 0));
	PQclear(res);
	if (mq_open(cfg->amqp_url, &status_mq_opts, &mq) != BR_OK) {
		fputs("bulkreg-admin: broker unreachable\n", stderr);
		return 1;
	}
	const char *queues[] = {MQ_QUEUE_TASKS, MQ_QUEUE_DEAD};
	for (size_t i = 0; i < 2; i++) {
		uint32_t msgs = 0, consumers = 0;
		if (mq_queue_stats(mq, queues[i], &msgs, &consumers) != BR_OK) {
			fprintf(stderr, "bulkreg-admin: queue %s: %s\n", queues[i], mq_errmsg(mq));
			goto out;
		}
		printf("queue %s messages %u consumers %u\n", queues[i], msgs, consumers);
	}
	print_members(cfg);
	rc = 0;
out:
	mq_close(mq);
	return rc;
}

int main(int argc, char **argv)
{
	struct br_config cfg;
	char err[256];
	db_conn *db = NULL;
	int rc;

	if (argc < 2)
		return usage();
	if (cfg_load(&cfg, err, sizeof(err)) != BR_OK) {
		fprintf(stderr, "bulkreg-admin: %s\n", err);
		return CFG_CONFIG_EXIT;
	}
	log_init(cfg.log_format, cfg.log_level);

	bool is_migrate = strcmp(argv[1], "migrate") == 0 && argc == 2;
	bool is_create = argc == 5 && strcmp(argv[1], "token") == 0 &&
	                 strcmp(argv[2], "create") == 0 && strcmp(argv[3], "--org") == 0;
	bool is_revoke =
	    argc == 4 && strcmp(argv[1], "token") == 0 && strcmp(argv[2], "revoke") == 0;
	bool is_status = argc == 2 && strcmp(argv[1], "status") == 0;
	bool is_operator = strcmp(argv[1], "operator-token") == 0;
	bool is_op_create = is_operator && argc >= 3 && strcmp(argv[2], "create") == 0 &&
	                    (argc == 3 || (argc == 5 && strcmp(argv[3], "--name") == 0));
	bool is_op_revoke = is_operator && argc == 4 && strcmp(argv[2], "revoke") == 0;
	if (!is_migrate && !is_create && !is_revoke && !is_status && !is_op_create && !is_op_revoke)
		return usage();

	/* Migrations may wait for locks and run long: only the statement is bounded. */
	static const struct db_opts opts = {.statement_timeout_ms = ADMIN_STATEMENT_TIMEOUT_MS};
	if (db_open(cfg.database_url, &opts, false, &db) != BR_OK) {
		fputs("bulkreg-admin: cannot connect to the database (DATABASE_URL)\n", stderr);
		return 1;
	}
	if (is_migrate)
		rc = cmd_migrate(db, &cfg);
	else if (is_create)
		rc = cmd_token_create(db, argv[4]);
	else if (is_revoke)
		rc = cmd_token_revoke(db, &stmt_token_revoke, argv[3]);
	else if (is_op_create)
		rc = cmd_operator_create(db, argc == 5 ? argv[4] : "operator");
	else if (is_op_revoke)
		rc = cmd_token_revoke(db, &stmt_operator_revoke, argv[3]);
	else
		rc = cmd_status(db, &cfg);
	db_close(db);
	return rc;
}
