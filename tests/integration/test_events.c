/*
 * test_events.c - which events emit_event() writes (sql/functions/events.sql): a job.created
 * event only when an endpoint of the organization wants it, with one
 * delivery per such endpoint; a job.ended event always, since its row is
 * also the record that the completion emitted its one event.
 *
 * Everything runs in a transaction that is rolled back.
 */
#include <stdio.h>

#include <criterion/criterion.h>

#include "support.h"

/* Events of type in org, and deliveries of them. */
static long events(PGconn *db, const char *org, const char *type)
{
	const char *p[] = {org, type};
	return t_sql_long(
	    db, "SELECT count(*) FROM webhook_events WHERE organization_id = $1 AND type = $2", 2,
	    p);
}

static long deliveries(PGconn *db, const char *org, const char *type)
{
	const char *p[] = {org, type};
	return t_sql_long(db,
	                  "SELECT count(*) FROM webhook_deliveries d"
	                  " JOIN webhook_events e ON e.id = d.event_id"
	                  " WHERE e.organization_id = $1 AND e.type = $2",
	                  2, p);
}

static void endpoint(PGconn *db, const char *org, const char *events_array)
{
	const char *p[] = {org, events_array};
	PQclear(t_sql(db,
	              "INSERT INTO webhook_endpoints (organization_id, url, events, secret)"
	              " VALUES ($1, 'https://hooks.example.com/x', $2::text[], 'whsec_test')",
	              2, p));
}

Test(events, job_created_is_written_for_its_subscribers_only)
{
	PGconn *db = t_db();
	PQclear(t_sql(db, "BEGIN", 0, NULL));
	PGresult *res =
	    t_sql(db, "INSERT INTO organizations (name) VALUES ('events') RETURNING id", 0, NULL);
	char org[37], sid[37], job[37];
	snprintf(org, sizeof(org), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	t_session_sql(db, org, "events", sid);

	t_job_sql(db, org, sid, 2, job);
	cr_expect_eq(events(db, org, "job.created"), 0, "job.created written with no endpoint");

	endpoint(db, org, "{job.ended}");
	t_job_sql(db, org, sid, 2, job);
	cr_expect_eq(events(db, org, "job.created"), 0,
	             "job.created written with only a job.ended endpoint");

	endpoint(db, org, "{job.created}");
	endpoint(db, org, "{job.created,job.ended}");
	t_job_sql(db, org, sid, 2, job);
	cr_expect_eq(events(db, org, "job.created"), 1);
	cr_expect_eq(deliveries(db, org, "job.created"), 2, "one delivery per subscribed endpoint");

	/* Every completion writes its job.ended, wanted or not. */
	const char *pj[] = {job};
	PQclear(t_sql(db,
	              "SELECT * FROM process_batch("
	              "  (SELECT array_agg(id) FROM tasks WHERE job_id = $1), 64)",
	              1, pj));
	cr_expect_eq(events(db, org, "job.ended"), 1);
	cr_expect_eq(deliveries(db, org, "job.ended"), 2);
	PQclear(t_sql(db, "DELETE FROM webhook_endpoints WHERE organization_id = $1", 1,
	              (const char *const[]){org}));
	t_job_sql(db, org, sid, 1, job);
	const char *pk[] = {job};
	PQclear(t_sql(db,
	              "SELECT * FROM process_batch("
	              "  (SELECT array_agg(id) FROM tasks WHERE job_id = $1), 64)",
	              1, pk));
	cr_expect_eq(events(db, org, "job.ended"), 2,
	             "a job.ended without endpoints was not written");

	PQclear(t_sql(db, "ROLLBACK", 0, NULL));
	PQfinish(db);
}
