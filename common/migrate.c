/*
 * migrate.c - schema migration runner (see migrate.h). No global state.
 */
#include "migrate.h"

#include <stdio.h>
#include <stdlib.h>

#include "log.h"

/* Arbitrary constant: "bulkreg" in ASCII. */
#define MIGRATE_LOCK_KEY "109570128184679"

static const db_stmt stmt_lock = {"migrate_lock", "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                                  0};
static const db_stmt stmt_unlock = {"migrate_unlock",
                                    "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0};
static const db_stmt stmt_applied = {"migrate_applied",
                                     "SELECT 1 FROM schema_migrations WHERE version = $1::int", 1};
static const db_stmt stmt_record = {
    "migrate_record", "INSERT INTO schema_migrations (version, name) VALUES ($1::int, $2)", 2};

static br_status migrate_one(db_conn *c, const struct migration *m, int *ran)
{
	char version[16];
	snprintf(version, sizeof(version), "%d", m->version);
	const char *params[] = {version, m->name};
	PGresult *res = NULL;
	br_status st = db_cmd(c, "BEGIN");
	if (st != BR_OK)
		return st;
	st = db_run(c, &stmt_applied, params, &res);
	if (st != BR_OK)
		goto out;
	if (PQntuples(res) > 0)
		goto out; /* already applied */
	st = db_cmd(c, m->sql);
	if (st != BR_OK) {
		LOG_ERROR("migration %s failed: %s", m->name, db_errmsg(c));
		goto out;
	}
	st = db_run(c, &stmt_record, params, NULL);
	if (st != BR_OK)
		goto out;
	*ran = 1;
out:
	PQclear(res);
	if (st == BR_OK)
		st = db_cmd(c, "COMMIT");
	else
		db_rollback(c);
	if (st == BR_OK && *ran)
		LOG_INFO("applied migration %s", m->name);
	return st;
}

br_status migrate_run(db_conn *c, const struct migration *list, size_t n, int *applied)
{
	int count = 0;
	br_status st = db_run(c, &stmt_lock, NULL, NULL);
	if (st != BR_OK)
		return st;
	st = db_cmd(c, "CREATE TABLE IF NOT EXISTS schema_migrations ("
	               " version int PRIMARY KEY,"
	               " name text NOT NULL,"
	               " applied_at timestamptz NOT NULL DEFAULT now())");
	for (size_t i = 0; st == BR_OK && i < n; i++) {
		int ran = 0;
		st = migrate_one(c, &list[i], &ran);
		count += ran;
	}
	if (db_run(c, &stmt_unlock, NULL, NULL) != BR_OK && st == BR_OK)
		st = BR_DB;
	if (st == BR_OK && applied)
		*applied = count;
	return st;
}
