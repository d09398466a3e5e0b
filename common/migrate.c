/*
 * migrate.c - the SQL runner of bulkreg-admin migrate (see migrate.h).
 *
 * Owns no global state; everything it keeps is in the database:
 * schema_migrations (version, name, applied_at, checksum) and
 * schema_functions (name, checksum, applied_at), which it creates or
 * extends itself. One run holds the advisory lock from its first statement
 * to its last, so whatever it reads of those tables stays true until it
 * writes them. Not thread-safe per connection, like db_conn.
 */
#include "migrate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "log.h"

/* Arbitrary constant: "bulkreg" in ASCII. */
#define MIGRATE_LOCK_KEY "109570128184679"

#define CHECKSUM_LEN     (2 * CR_SHA256_LEN + 1)

/*
 * The first development cycle's migrations, which the baseline replaces: a
 * database that recorded exactly these has the baseline's schema.
 */
const char *const migrate_legacy_names[] = {
    "001_schema",
    "002_registration",
    "003_batches",
    "004_register_people",
    "005_task_person_link",
    "006_task_updates_hot",
    "007_task_job_link",
    "008_batch_reads_once",
    "009_batch_plans_by_key",
    "010_job_published_hot",
    "011_events_for_subscribers",
};
const size_t migrate_legacy_count = sizeof(migrate_legacy_names) / sizeof(migrate_legacy_names[0]);

static const db_stmt stmt_lock = {"migrate_lock", "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")",
                                  0};
static const db_stmt stmt_unlock = {"migrate_unlock",
                                    "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")", 0};
static const db_stmt stmt_history = {
    "migrate_history", "SELECT version, name FROM schema_migrations ORDER BY version", 0};
static const db_stmt stmt_forget = {"migrate_forget", "DELETE FROM schema_migrations", 0};
static const db_stmt stmt_recorded = {
    "migrate_recorded", "SELECT name, checksum FROM schema_migrations WHERE version = $1::int", 1};
static const db_stmt stmt_record = {
    "migrate_record",
    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1::int, $2, $3)", 3};
static const db_stmt stmt_fill = {
    "migrate_fill",
    "UPDATE schema_migrations SET checksum = $2 WHERE version = $1::int AND checksum IS NULL", 2};
static const db_stmt stmt_fn_recorded = {
    "migrate_fn_recorded", "SELECT checksum FROM schema_functions WHERE name = $1", 1};
static const db_stmt stmt_fn_record = {
    "migrate_fn_record",
    "INSERT INTO schema_functions (name, checksum) VALUES ($1, $2)"
    " ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()",
    2};

/* The bookkeeping tables, as this runner needs them; notices of what exists are muted. */
static const char sql_setup[] =
    "SET LOCAL client_min_messages = warning;"
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version int PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now());"
    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text;"
    "CREATE TABLE IF NOT EXISTS schema_functions ("
    " name text PRIMARY KEY,"
    " checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

void migrate_checksum(const char *sql, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char d[CR_SHA256_LEN];
	cr_sha256(sql, strlen(sql), d);
	for (size_t i = 0; i < CR_SHA256_LEN; i++) {
		out[2 * i] = hex[d[i] >> 4];
		out[2 * i + 1] = hex[d[i] & 0xf];
	}
	out[2 * CR_SHA256_LEN] = '\0';
}

/* Writes the message into err (when given) and the log; returns st. */
__attribute__((format(printf, 4, 5))) static br_status fail(br_status st, char *err, size_t errlen,
                                                            const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	LOG_ERROR("migrate: %s", msg);
	if (err && errlen > 0)
		snprintf(err, errlen, "%s", msg);
	return st;
}

/* Ends the transaction: COMMIT when st is BR_OK, else ROLLBACK. */
static br_status finish(db_conn *c, br_status st)
{
	if (st == BR_OK)
		return db_cmd(c, "COMMIT");
	db_rollback(c);
	return st;
}

/*
 * A first-cycle history (exactly migrate_legacy_names as versions 1..11) becomes
 * the baseline's one row, without running it. Any other history that
 * starts like the first cycle's is refused. *adopted is set when replaced.
 */
static br_status adopt_legacy(db_conn *c, const struct migrate_set *set, bool *adopted, char *err,
                              size_t errlen)
{
	PGresult *res = NULL;
	char sum[CHECKSUM_LEN];
	br_status st = db_begin(c);
	if (st != BR_OK)
		return st;
	st = db_run(c, &stmt_history, NULL, &res);
	if (st != BR_OK || PQntuples(res) == 0 ||
	    strcmp(PQgetvalue(res, 0, 1), migrate_legacy_names[0]))
		goto out; /* nothing recorded yet, or not a first-cycle database */
	size_t n = (size_t)PQntuples(res);
	bool exact = n == migrate_legacy_count;
	for (size_t i = 0; exact && i < n; i++)
		exact = strtol(PQgetvalue(res, (int)i, 0), NULL, 10) == (long)i + 1 &&
		        !strcmp(PQgetvalue(res, (int)i, 1), migrate_legacy_names[i]);
	if (!exact) {
		st = fail(BR_CONFLICT, err, errlen,
		          "the database has first-cycle migrations up to %s, not exactly 001_schema"
		          " to %s: migrate it with a build from before the baseline first",
		          PQgetvalue(res, (int)n - 1, 1),
		          migrate_legacy_names[migrate_legacy_count - 1]);
		goto out;
	}
	if (set->n_schema == 0 || set->schema[0].version != 1) {
		st = fail(BR_CONFLICT, err, errlen, "this build has no baseline migration 001");
		goto out;
	}
	migrate_checksum(set->schema[0].sql, sum);
	st = db_run(c, &stmt_forget, NULL, NULL);
	if (st == BR_OK) {
		const char *params[] = {"1", set->schema[0].name, sum};
		st = db_run(c, &stmt_record, params, NULL);
	}
	if (st == BR_OK)
		*adopted = true;
out:
	PQclear(res);
	st = finish(c, st);
	if (st == BR_OK && *adopted)
		LOG_INFO("migrate: the database has the first cycle's migrations 001_schema to %s;"
		         " recorded as %s without running it",
		         migrate_legacy_names[migrate_legacy_count - 1], set->schema[0].name);
	return st;
}

/* Refuses a recorded migration whose name or text differs from this build's. */
static br_status check_applied(db_conn *c, const struct migrate_set *set, char *err, size_t errlen)
{
	br_status st = BR_OK;
	for (size_t i = 0; st == BR_OK && i < set->n_schema; i++) {
		const struct migration *m = &set->schema[i];
		char version[16], sum[CHECKSUM_LEN];
		snprintf(version, sizeof(version), "%d", m->version);
		const char *params[] = {version};
		PGresult *res = NULL;
		st = db_run(c, &stmt_recorded, params, &res);
		if (st != BR_OK || PQntuples(res) == 0) {
			PQclear(res);
			continue;
		}
		migrate_checksum(m->sql, sum);
		const char *name = PQgetvalue(res, 0, 0);
		if (strcmp(name, m->name))
			st = fail(BR_CONFLICT, err, errlen,
			          "migration %d was applied as %s, but this build's is"
			          " sql/migrations/%s.sql",
			          m->version, name, m->name);
		else if (!PQgetisnull(res, 0, 1) && strcmp(PQgetvalue(res, 0, 1), sum))
			st = fail(
			    BR_CONFLICT, err, errlen,
			    "sql/migrations/%s.sql was changed after it was applied (sha256 %.12s,"
			    " applied %.12s): an applied migration never changes, a schema"
			    " change is a new migration",
			    m->name, sum, PQgetvalue(res, 0, 1));
		PQclear(res);
	}
	return st;
}

/* Runs one schema migration unless recorded; *ran = 1 when it ran. */
static br_status migrate_one(db_conn *c, const struct migration *m, int *ran, char *err,
                             size_t errlen)
{
	char version[16], sum[CHECKSUM_LEN];
	snprintf(version, sizeof(version), "%d", m->version);
	migrate_checksum(m->sql, sum);
	const char *params[] = {version, m->name, sum};
	const char *fill[] = {version, sum};
	PGresult *res = NULL;
	br_status st = db_begin(c);
	if (st != BR_OK)
		return st;
	st = db_run(c, &stmt_recorded, params, &res);
	if (st != BR_OK)
		goto out;
	if (PQntuples(res) > 0) {
		/* Applied; check_applied saw the same name and text. */
		st = db_run(c, &stmt_fill, fill, NULL);
		goto out;
	}
	st = db_cmd(c, m->sql);
	if (st != BR_OK) {
		st = fail(st, err, errlen, "sql/migrations/%s.sql failed: %s", m->name,
		          db_errmsg(c));
		goto out;
	}
	st = db_run(c, &stmt_record, params, NULL);
	if (st == BR_OK)
		*ran = 1;
out:
	PQclear(res);
	st = finish(c, st);
	if (st == BR_OK && *ran)
		LOG_INFO("applied migration %s", m->name);
	return st;
}

/* Applies one function file when new or changed; *ran = 1 when it did. */
static br_status function_one(db_conn *c, const struct migration *f, int *ran, char *err,
                              size_t errlen)
{
	char sum[CHECKSUM_LEN];
	migrate_checksum(f->sql, sum);
	const char *params[] = {f->name, sum};
	PGresult *res = NULL;
	br_status st = db_begin(c);
	if (st != BR_OK)
		return st;
	st = db_run(c, &stmt_fn_recorded, params, &res);
	if (st != BR_OK || (PQntuples(res) > 0 && !strcmp(PQgetvalue(res, 0, 0), sum)))
		goto out; /* unchanged since it was applied */
	st = db_cmd(c, f->sql);
	if (st != BR_OK) {
		st =
		    fail(st, err, errlen, "sql/functions/%s.sql failed: %s", f->name, db_errmsg(c));
		goto out;
	}
	st = db_run(c, &stmt_fn_record, params, NULL);
	if (st == BR_OK)
		*ran = 1;
out:
	PQclear(res);
	st = finish(c, st);
	if (st == BR_OK && *ran)
		LOG_INFO("applied function file %s", f->name);
	return st;
}

/* Everything migrate_run does while it holds the lock. */
static br_status run_locked(db_conn *c, const struct migrate_set *set, struct migrate_counts *n,
                            char *err, size_t errlen)
{
	br_status st = db_begin(c);
	if (st == BR_OK)
		st = db_cmd(c, sql_setup);
	st = finish(c, st);
	if (st != BR_OK)
		return fail(st, err, errlen, "cannot set up schema_migrations: %s", db_errmsg(c));
	st = adopt_legacy(c, set, &n->adopted, err, errlen);
	if (st == BR_OK)
		st = check_applied(c, set, err, errlen);
	for (size_t i = 0; st == BR_OK && i < set->n_schema; i++) {
		int ran = 0;
		st = migrate_one(c, &set->schema[i], &ran, err, errlen);
		n->schema += ran;
	}
	for (size_t i = 0; st == BR_OK && i < set->n_functions; i++) {
		int ran = 0;
		st = function_one(c, &set->functions[i], &ran, err, errlen);
		n->functions += ran;
	}
	return st;
}

br_status migrate_run(db_conn *c, const struct migrate_set *set, struct migrate_counts *counts,
                      char *err, size_t errlen)
{
	struct migrate_counts n = {0};
	if (err && errlen > 0)
		err[0] = '\0';
	br_status st = db_run(c, &stmt_lock, NULL, NULL);
	if (st != BR_OK)
		return fail(st, err, errlen, "cannot take the migration lock: %s", db_errmsg(c));
	st = run_locked(c, set, &n, err, errlen);
	if (db_run(c, &stmt_unlock, NULL, NULL) != BR_OK && st == BR_OK)
		st =
		    fail(BR_DB, err, errlen, "cannot release the migration lock: %s", db_errmsg(c));
	if (st != BR_OK && err && errlen > 0 && err[0] == '\0')
		snprintf(err, errlen, "%s", db_errmsg(c));
	if (st == BR_OK && counts)
		*counts = n;
	return st;
}
