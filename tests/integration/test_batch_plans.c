/*
 * test_batch_plans.c - a worker batch finds its rows by key even on a new
 * installation (sql/functions/batches.sql). There every table is a page or two, where a
 * sequential scan is the cheaper way to find `id = ANY (...)`; PL/pgSQL
 * would keep that plan for the connection's life while the tables grow.
 *
 * The batch runs on a freshly migrated throwaway database, inside one
 * transaction, and pg_stat_xact_user_tables counts its scans.
 */
#include <stdio.h>
#include <stdlib.h>

#include <criterion/criterion.h>

#include "support.h"

#define TASKS 4

/* Sequential scans this transaction made of the schema's tables, by name. */
static char *seq_scans(PGconn *db)
{
	return t_sql_text(db,
	                  "SELECT coalesce(string_agg(relname || ':' || seq_scan, ','"
	                  "                           ORDER BY relname), '')"
	                  "  FROM pg_stat_xact_user_tables WHERE seq_scan > 0",
	                  0, NULL);
}

Test(batch_plans, a_new_installation_finds_rows_by_key, .fini = t_scratch_drop_all, .timeout = 120)
{
	char url[1024];
	t_scratch_create(url, sizeof(url));
	t_migrate(url);
	PGconn *db = PQconnectdb(url);
	cr_assert_eq(PQstatus(db), CONNECTION_OK, "cannot connect to %s", url);

	PGresult *res =
	    t_sql(db, "INSERT INTO organizations (name) VALUES ('plans') RETURNING id", 0, NULL);
	char org[37], sid[37], job[37], first[37], second[37];
	snprintf(org, sizeof(org), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	t_session_sql(db, org, "plans", sid);
	t_job_sql(db, org, sid, TASKS, job);
	const char *pj[] = {job};
	res = t_sql(db, "SELECT id FROM tasks WHERE job_id = $1 ORDER BY idx LIMIT 2", 1, pj);
	snprintf(first, sizeof(first), "%s", PQgetvalue(res, 0, 0));
	snprintf(second, sizeof(second), "%s", PQgetvalue(res, 1, 0));
	PQclear(res);

	PQclear(t_sql(db, "BEGIN", 0, NULL));
	char *before = seq_scans(db);
	/* One delivery claims the rest of its job; then a delivery of a done task. */
	const char *p1[] = {first};
	long done = t_sql_long(db,
	                       "SELECT count(*) FILTER (WHERE outcome = 'succeeded')"
	                       "  FROM process_batch(ARRAY[$1::uuid], 64)",
	                       1, p1);
	cr_assert_eq(done, TASKS, "the batch registered %ld of the job's %d tasks", done, TASKS);
	const char *p2[] = {second};
	long skipped = t_sql_long(db,
	                          "SELECT count(*) FILTER (WHERE outcome = 'skipped')"
	                          "  FROM process_batch(ARRAY[$1::uuid], 0)",
	                          1, p2);
	cr_assert_eq(skipped, 1, "a delivery of a done task was not skipped");
	char *after = seq_scans(db);
	cr_expect_str_eq(after, before, "the batches scanned tables sequentially (%s; before: %s)",
	                 after, before);
	free(before);
	free(after);
	PQclear(t_sql(db, "ROLLBACK", 0, NULL));
	PQfinish(db);
}
