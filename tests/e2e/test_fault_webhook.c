/*
 * test_fault_webhook.c - a webhook receiver that is down for the first
 * attempts and then comes back (issue 6, fault test 7; docs/guarantees.md §3).
 *
 * The job.ended event is in the outbox from the moment the job's last task
 * commits; while the receiver's port refuses connections every attempt is
 * recorded and rescheduled; once it listens again (same URL) the event is
 * delivered exactly once, under the same webhook-id as every attempt
 * before, and signed.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define TASKS      50
#define DOWN_TRIES 2
#define WAIT_MS    120000

TestSuite(fault_webhook, .timeout = 600);

/* Room for the receiver to come back before the schedule runs out. */
static const char *const retries[] = {"BULKREG_WEBHOOK_RETRY_SCHEDULE=300ms,300ms,1s,2s,5s,10s,10s",
                                      NULL};

struct attempts {
	struct t_fleet *f;
	long n;
};

static long failed_attempts(struct t_fleet *f)
{
	const char *p[] = {f->org.id};
	return t_sql_long(f->db,
	                  "SELECT count(*) FROM webhook_attempts a"
	                  "  JOIN webhook_deliveries d ON d.id = a.delivery_id"
	                  "  JOIN webhook_events e ON e.id = d.event_id"
	                  " WHERE e.organization_id = $1 AND a.http_status IS NULL",
	                  1, p);
}

static bool attempts_reached(void *ctx)
{
	struct attempts *a = ctx;
	return failed_attempts(a->f) >= a->n;
}

Test(fault_webhook, receiver_down_then_up)
{
	struct t_fleet f;
	t_fleet_init(&f, "webhook receiver down, then up", NULL, retries);
	/*
	 * The endpoint names a port outside the kernel's ephemeral range, so
	 * no outgoing connection of any process takes it while it is closed.
	 */
	int port = t_quiet_port();
	t_receiver_stop(f.rc);
	f.rc = t_receiver_start_on(port);
	t_fleet_endpoint(&f);
	t_receiver_stop(f.rc);
	f.rc = NULL;

	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	char sid[37], job[37];
	t_fleet_session(&f, sid);
	t_fleet_post_ok(&f, sid, "hook", TASKS, job);
	t_fleet_wait_done(&f);
	struct attempts a = {&f, DOWN_TRIES};
	cr_assert(t_poll(attempts_reached, &a, WAIT_MS), "the deliverer did not try %d times",
	          DOWN_TRIES);

	f.rc = t_receiver_start_on(port);
	t_fleet_verify(&f);

	cr_assert_eq(t_receiver_count(f.rc), 1, "the receiver got %d requests, not 1",
	             t_receiver_count(f.rc));
	struct t_hook h;
	cr_assert(t_receiver_get(f.rc, 0, &h));
	const char *pj[] = {job};
	PGresult *res = t_sql(f.db,
	                      "SELECT e.id, d.attempts, d.status FROM webhook_events e"
	                      "  JOIN webhook_deliveries d ON d.event_id = e.id"
	                      " WHERE e.job_id = $1 AND e.type = 'job.ended'",
	                      1, pj);
	cr_assert_eq(PQntuples(res), 1);
	cr_assert_str_eq(h.id, PQgetvalue(res, 0, 0), "webhook-id %s is not the event's id", h.id);
	long tries = strtol(PQgetvalue(res, 0, 1), NULL, 10);
	cr_assert_str_eq(PQgetvalue(res, 0, 2), "succeeded");
	PQclear(res);
	json_t *body = json_loads(h.body, 0, NULL);
	const char *id = json_string_value(json_object_get(json_object_get(body, "data"), "id"));
	cr_assert(id && strcmp(id, job) == 0, "the delivered event is not the job's");
	json_decref(body);
	free(h.body);

	long refused = failed_attempts(&f);
	cr_assert_geq(refused, DOWN_TRIES);
	cr_assert_eq(tries, refused + 1, "%ld attempts recorded, %ld refused + 1 delivered", tries,
	             refused);
	t_fleet_note(&f, "%ld attempts refused, then delivered once under the same id;", refused);
	t_fleet_stop(&f);
}
