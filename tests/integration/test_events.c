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

/* A t_poll condition: ctx's statement waits for a lock, or has finished. */
static bool waits_or_done(void *ctx)
{
	PGconn *c = ctx;
	if (!PQconsumeInput(c) || !PQisBusy(c))
		return true;
	return t_waits_for_lock(ctx);
}

/*
 * A 410 that disables an endpoint while an event with a delivery for it is
 * being written (webhook_endpoint_disable(), sql/functions/webhooks.sql):
 * whichever comes first, no delivery stays pending behind the disabled
 * endpoint. Round 0: the event's transaction is open when the disable
 * starts (the disable waits, then fails the delivery). Round 1: the disable
 * holds the endpoint when the event is written (the event waits, then
 * leaves the endpoint out).
 */
Test(events, a_disabled_endpoint_keeps_no_pending_delivery)
{
	for (int round = 0; round < 2; round++) {
		PGconn *db = t_db(), *writer = t_db(), *disabler = t_db();
		PQclear(t_sql(db, "SET statement_timeout = '20s'", 0, NULL));
		struct t_org o;
		t_org_new(&o);
		const char *org = o.id;
		char ep[37], sid[37], job[37];
		PGresult *res;
		/* The job first: its creation must not write the event itself. */
		t_session_sql(db, org, "disable", sid);
		t_job_sql(db, org, sid, 1, job);
		const char *p[] = {org, job};
		res = t_sql(db,
		            "INSERT INTO webhook_endpoints (organization_id, url, events, secret)"
		            " VALUES ($1, 'https://hooks.example.com/x', '{job.created}',"
		            " 'whsec_test') RETURNING id",
		            1, p);
		snprintf(ep, sizeof(ep), "%s", PQgetvalue(res, 0, 0));
		PQclear(res);
		const char *e[] = {ep};
		static const char emit[] =
		    "SELECT emit_event($1, 'job.created', $2, 0, '{}'::json, NULL)";

		PGconn *first = round == 0 ? writer : disabler;
		PGconn *second = round == 0 ? disabler : writer;
		PQclear(t_sql(first, "BEGIN", 0, NULL));
		if (round == 0)
			PQclear(t_sql(writer, emit, 2, p));
		else
			PQclear(t_sql(disabler, "SELECT webhook_endpoint_disable($1)", 1, e));
		cr_assert(round == 0
		              ? PQsendQueryParams(disabler, "SELECT webhook_endpoint_disable($1)",
		                                  1, NULL, e, NULL, NULL, 0)
		              : PQsendQueryParams(writer, emit, 2, NULL, p, NULL, NULL, 0),
		          "%s", PQerrorMessage(second));
		cr_assert(t_poll(waits_or_done, second, 10000),
		          "round %d: the second statement hangs", round);
		PQclear(t_sql(first, "COMMIT", 0, NULL));
		while ((res = PQgetResult(second)) != NULL) {
			cr_expect_eq(PQresultStatus(res), PGRES_TUPLES_OK, "round %d: %s", round,
			             PQresultErrorMessage(res));
			PQclear(res);
		}
		cr_expect_eq(t_sql_long(db,
		                        "SELECT count(*) FROM webhook_deliveries"
		                        " WHERE endpoint_id = $1 AND status = 'pending'",
		                        1, e),
		             0, "round %d: a delivery stays pending behind the disabled endpoint",
		             round);
		cr_expect_eq(t_sql_long(db,
		                        "SELECT count(*) FROM webhook_endpoints"
		                        " WHERE id = $1 AND disabled_at IS NOT NULL",
		                        1, e),
		             1, "round %d: the endpoint is not disabled", round);
		PQfinish(disabler);
		PQfinish(writer);
		PQfinish(db);
	}
}
