/*
 * test_task_links.c - tasks keep no foreign keys (sql/005, sql/007), so the
 * schema itself must still remove a job's tasks with the job: deleted
 * alone, with its session, or with its organization (sessions' and
 * organizations' own cascades). And batch_fast()'s claim of the rest of a
 * job (sql/006) starts at the job's lowest delivered index.
 *
 * Everything runs in a transaction that is rolled back.
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

Test(task_links, claim_starts_at_the_lowest_delivered_index)
{
	struct t_org org;
	PGconn *db = begin(&org);
	char sid[37], job[37];
	t_session_sql(db, org.id, "links", sid);
	t_job_sql(db, org.id, sid, 10, job);
	const char *p[] = {job};
	/*
	 * Deliver index 4 only, claiming up to 3: the claim takes 5 and 6, not
	 * 0 to 3 (queued, but below what the broker has handed out).
	 */
	PGresult *res = t_sql(
	    db,
	    "SELECT string_agg(t.idx::text || ':' || b.outcome, ' ' ORDER BY t.idx)"
	    " FROM process_batch((SELECT array_agg(id) FROM tasks WHERE job_id = $1 AND idx = 4),"
	    "                    3) b JOIN tasks t ON t.id = b.task_id",
	    1, p);
	cr_expect_str_eq(PQgetvalue(res, 0, 0), "4:succeeded 5:succeeded 6:succeeded");
	PQclear(res);
	cr_expect_eq(
	    t_sql_long(db, "SELECT count(*) FROM tasks WHERE job_id = $1 AND status = 'queued'", 1,
	               p),
	    7);
	rollback(db);
}
