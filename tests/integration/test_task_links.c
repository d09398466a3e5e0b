/*
 * test_task_links.c - tasks keep no foreign keys (sql/migrations/001_baseline.sql), so the
 * schema itself must still remove a job's tasks with the job: deleted
 * alone, with its session, or with its organization (sessions' and
 * organizations' own cascades). And a batch (sql/functions/batches.sql)
 * registers a job's tasks from its lowest queued index, never waiting for
 * a job or session another transaction holds.
 *
 * Everything runs in a transaction that is rolled back, unless a second
 * connection must see it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

/* A connection in an open transaction, and a new organization in org. */
static PGconn *begin(struct t_org *org)
{
	t_org_new(org);
	PGconn *db = t_db();
	PQclear(t_sql(db, "BEGIN", 0, NULL));
	return db;
}

static void rollback(PGconn *db)
{
	PQclear(t_sql(db, "ROLLBACK", 0, NULL));
	PQfinish(db);
}

static long tasks_of(PGconn *db, const char *job)
{
	const char *p[] = {job};
	return t_sql_long(db, "SELECT count(*) FROM tasks WHERE job_id = $1", 1, p);
}

Test(task_links, deleting_jobs_deletes_their_tasks_and_only_theirs)
{
	struct t_org org;
	PGconn *db = begin(&org);
	PGresult *res =
	    t_sql(db, "INSERT INTO organizations (name) VALUES ('links') RETURNING id", 0, NULL);
	char other[37];
	snprintf(other, sizeof(other), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);

	char s1[37], s2[37], s3[37], keep[37], alone[37], with_session[37], with_org[37];
	t_session_sql(db, org.id, "links", s1);
	t_session_sql(db, org.id, "links", s2);
	t_session_sql(db, other, "links", s3);
	t_job_sql(db, org.id, s1, 3, keep);
	t_job_sql(db, org.id, s1, 4, alone);
	t_job_sql(db, org.id, s2, 5, with_session);
	t_job_sql(db, other, s3, 6, with_org);
	cr_assert_eq(tasks_of(db, alone), 4);

	const char *pa[] = {alone};
	PQclear(t_sql(db, "DELETE FROM jobs WHERE id = $1", 1, pa));
	cr_expect_eq(tasks_of(db, alone), 0, "a job deleted alone left its tasks");

	const char *ps[] = {s2};
	PQclear(t_sql(db, "DELETE FROM sessions WHERE id = $1", 1, ps));
	cr_expect_eq(tasks_of(db, with_session), 0, "a job deleted with its session left tasks");

	const char *po[] = {other};
	PQclear(t_sql(db, "DELETE FROM organizations WHERE id = $1", 1, po));
	cr_expect_eq(tasks_of(db, with_org), 0, "a job deleted with its organization left tasks");

	cr_expect_eq(tasks_of(db, keep), 3, "another job's tasks went too");
	const char *pk[] = {keep};
	cr_expect_eq(t_sql_long(db,
	                        "SELECT count(*) FROM tasks t WHERE t.job_id = $1"
	                        " AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = t.job_id)",
	                        1, pk),
	             0);
	rollback(db);
}

/* process_batch() of the given indexes of job with claim; "idx:outcome[:detail] ..." (caller
 * frees). */
static char *batch(PGconn *db, const char *job, const char *indexes, const char *claim)
{
	const char *p[] = {job, indexes, claim};
	return t_sql_text(db,
	                  "SELECT string_agg(t.idx::text || ':' || b.outcome"
	                  "                  || coalesce(':' || b.detail, ''), ' ' ORDER BY t.idx)"
	                  " FROM process_batch((SELECT array_agg(id) FROM tasks WHERE job_id = $1"
	                  "                     AND idx = ANY ($2::int[])), $3::int) b"
	                  " JOIN tasks t ON t.id = b.task_id",
	                  3, p);
}

Test(task_links, a_batch_starts_at_the_lowest_queued_index)
{
	struct t_org org;
	PGconn *db = begin(&org);
	char sid[37], job[37];
	t_session_sql(db, org.id, "links", sid);
	t_job_sql(db, org.id, sid, 10, job);
	const char *p[] = {job};
	/*
	 * Index 4 delivered, claiming up to 3: 0 to 4 are registered, in
	 * order, whatever the claim (every task below a delivered one first).
	 */
	char *got = batch(db, job, "{4}", "3");
	cr_expect_str_eq(got, "0:succeeded 1:succeeded 2:succeeded 3:succeeded 4:succeeded");
	free(got);
	/* Index 9 delivered: 5 to 9; index 6 delivered again: already done. */
	got = batch(db, job, "{6,9}", "0");
	cr_expect_str_eq(got, "5:succeeded 6:succeeded 7:succeeded 8:succeeded 9:succeeded");
	free(got);
	got = batch(db, job, "{6}", "64");
	cr_expect_str_eq(got, "6:skipped:succeeded");
	free(got);
	cr_expect_eq(
	    t_sql_long(db, "SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'queued'", 1,
	               p),
	    0);
	rollback(db);
}

Test(task_links, a_batch_claims_the_rest_while_the_claim_allows)
{
	struct t_org org;
	PGconn *db = begin(&org);
	char sid[37], job[37];
	t_session_sql(db, org.id, "links", sid);
	t_job_sql(db, org.id, sid, 10, job);
	char *got = batch(db, job, "{1}", "6");
	cr_expect_str_eq(got, "0:succeeded 1:succeeded 2:succeeded 3:succeeded 4:succeeded "
	                      "5:succeeded");
	free(got);
	rollback(db);
}

/*
 * A job or session row that another transaction holds is never waited
 * for: the delivered tasks come back busy, naming which, and nothing is
 * written; once the holder is gone they run.
 */
Test(task_links, a_held_job_or_session_is_left_for_later)
{
	struct t_org org;
	t_org_new(&org);
	PGconn *db = t_db(), *holder = t_db();
	/* A hang would be a failure, not a stuck test. */
	PQclear(t_sql(db, "SET statement_timeout = '20s'", 0, NULL));
	char sid[37], job[37];
	t_session_sql(db, org.id, "held", sid);
	t_job_sql(db, org.id, sid, 3, job);
	const char *pj[] = {job}, *ps[] = {sid};

	PQclear(t_sql(holder, "BEGIN", 0, NULL));
	PQclear(t_sql(holder, "SELECT 1 FROM jobs WHERE id = $1 FOR NO KEY UPDATE", 1, pj));
	char *got = batch(db, job, "{0,2}", "64");
	cr_expect_str_eq(got, "0:busy:job 2:busy:job");
	free(got);
	PQclear(t_sql(holder, "ROLLBACK", 0, NULL));

	PQclear(t_sql(holder, "BEGIN", 0, NULL));
	PQclear(t_sql(holder, "SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE", 1, ps));
	got = batch(db, job, "{1}", "64");
	cr_expect_str_eq(got, "1:busy:session");
	free(got);
	PQclear(t_sql(holder, "ROLLBACK", 0, NULL));
	cr_expect_eq(
	    t_sql_long(db, "SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'queued'", 1,
	               pj),
	    3);

	got = batch(db, job, "{1}", "64");
	cr_expect_str_eq(got, "0:succeeded 1:succeeded 2:succeeded");
	free(got);
	t_check_invariants(db);
	PQfinish(holder);
	PQfinish(db);
}
