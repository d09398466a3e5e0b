/*
 * test_fault_idempotency.c - an API killed while keyed bulk requests are in
 * flight (docs/architecture.md, "Idempotency-Key"): every retry of every
 * key finds the first job or creates it once.
 *
 * KEYS clients post a bulk job each, with its own Idempotency-Key and its
 * own session, all at once, to an API armed to SIGKILL itself at a fault
 * point the Nth time a keyed request gets there:
 *   api_before_commit  the job, its tasks and the key's record are written
 *                      and not committed: that request and every one not
 *                      yet committed are lost with the process;
 *   api_after_commit   they are committed, the answer is not sent.
 * Some requests are answered before the crash, the others get no answer.
 * The API is restarted and every client retries its key until answered:
 * none may get 409 (no key stays blocked by a request that did not
 * commit), every retry gets 202, and each session ends with exactly one
 * job, whose tasks all succeed. The fleet's checks (fleet.h) then prove
 * nothing lost or doubled.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define KEYS        16
#define TASKS       50
#define CRASH_AT    5
#define RETRY_MS    60000
#define CRASH_WAIT  60000
#define ANSWER_WAIT 30000

TestSuite(fault_idempotency, .timeout = 600);

struct client {
	struct t_fleet *f;
	pthread_barrier_t *start;
	char sid[37];
	char key[48];
	char prefix[32];
	long status; /* of the first attempt; 0: no answer */
	char job[37];
};

static void *first_attempt(void *arg)
{
	struct client *c = arg;
	pthread_barrier_wait(c->start);
	t_fleet_post_keyed(c->f, c->sid, c->prefix, TASKS, c->key, ANSWER_WAIT, c->job, &c->status);
	return NULL;
}

static long jobs_of_session(PGconn *db, const char *sid)
{
	const char *p[] = {sid};
	return t_sql_long(db, "SELECT count(*) FROM jobs WHERE session_id = $1", 1, p);
}

static void crash_and_retry(const char *point)
{
	char fault[64], name[64];
	snprintf(fault, sizeof(fault), "BULKREG_FAULT=%s:%d", point, CRASH_AT);
	snprintf(name, sizeof(name), "idempotency_%s", point);
	const char *api_env[] = {fault, NULL};
	struct t_fleet f;
	t_fleet_init(&f, name, api_env, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);

	struct client c[KEYS];
	pthread_t th[KEYS];
	pthread_barrier_t start;
	pthread_barrier_init(&start, NULL, KEYS);
	for (int i = 0; i < KEYS; i++) {
		c[i] = (struct client){.f = &f, .start = &start};
		t_fleet_session(&f, c[i].sid);
		snprintf(c[i].key, sizeof(c[i].key), "%s-key-%d", point, i);
		snprintf(c[i].prefix, sizeof(c[i].prefix), "k%d", i);
	}
	for (int i = 0; i < KEYS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, first_attempt, &c[i]), 0);
	for (int i = 0; i < KEYS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&start);

	int rc = t_proc_stop(&f.api, 0, CRASH_WAIT);
	cr_assert_eq(rc, 128 + SIGKILL, "the API armed at %s ended with %d", point, rc);
	int answered = 0;
	for (int i = 0; i < KEYS; i++) {
		if (c[i].status == 202)
			answered++;
		else
			cr_assert_eq(c[i].status, 0, "key %d got %ld before the crash", i,
			             c[i].status);
	}
	cr_assert_lt(answered, KEYS, "every request was answered: the crash came after all");
	t_fleet_note(&f, "%d of %d keyed requests answered before the crash;", answered, KEYS);

	t_fleet_api_restart(&f, NULL);
	int replayed = 0;
	for (int i = 0; i < KEYS; i++) {
		char job[37] = "";
		long status = 0;
		bool ok = t_fleet_post_keyed(&f, c[i].sid, c[i].prefix, TASKS, c[i].key, RETRY_MS,
		                             job, &status);
		cr_assert(ok, "retry of key %d answered %ld", i, status);
		if (c[i].status == 202) {
			cr_assert_str_eq(job, c[i].job, "key %d: the retry names another job", i);
			replayed++;
		}
		cr_assert_eq(jobs_of_session(f.db, c[i].sid), 1, "key %d made %ld jobs", i,
		             jobs_of_session(f.db, c[i].sid));
	}
	t_fleet_note(&f, "%d retries replayed an answered job;", replayed);
	t_fleet_verify(&f);
	const char *p[] = {f.org.id};
	cr_assert_eq(t_sql_long(f.db,
	                        "SELECT count(*) FROM tasks t JOIN jobs j ON j.id = t.job_id"
	                        " WHERE j.organization_id = $1 AND t.status = 'succeeded'",
	                        1, p),
	             KEYS * TASKS);
	t_fleet_stop(&f);
}

Test(fault_idempotency, api_killed_before_commit)
{
	crash_and_retry("api_before_commit");
}

Test(fault_idempotency, api_killed_after_commit)
{
	crash_and_retry("api_after_commit");
}
