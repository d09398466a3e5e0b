/*
 * test_task_order.c - a job's tasks take effect in index order, whichever
 * consumer receives which message (docs/architecture.md, "The processing
 * path"), also while a worker is killed.
 *
 * Two workers of four consumers each, with a prefetch of 2, spread every
 * job's messages over eight channels. Each session gets one job of 50 rows
 * drawn from a few addresses in mixed case (duplicates within the job),
 * with a random capacity, waitlist, approval, auto_approve and
 * override_duplicates. When every job has ended, the referee replays each
 * job, row by row in index order, through person_apply() into a fresh
 * copy of its session (one task at a time: what
 * tests/integration/test_register_people.c holds session_apply() to
 * against its own reference), inside a transaction that is rolled back.
 * Every task's status and error code, and its person's status and
 * position, must be the referee's, and so must the people the job leaves
 * (address, status, the name the last override wrote).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "fleet.h"
#include "strbuf.h"

#define SESSIONS 12
#define TASKS    50
#define ADDRS    20

TestSuite(task_order, .timeout = 600);

static const char *const worker_env[] = {"BULKREG_WORKER_CONCURRENCY=4",
                                         "BULKREG_WORKER_PREFETCH=2", NULL};

/* A session with random rules in f's organization; sid gets 37 bytes. */
static void random_session(struct t_fleet *f, unsigned *seed, char *sid)
{
	char body[512], url[1024], cap[16] = "null";
	if (rand_r(seed) % 5 != 0)
		snprintf(cap, sizeof(cap), "%u", rand_r(seed) % 40 + 1);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"order\","
	         "\"capacity\":%s,\"waitlist\":%s,\"approval\":\"%s\"}}}",
	         cap, rand_r(seed) % 2 ? "true" : "false",
	         rand_r(seed) % 3 ? "automatic" : "manual");
	snprintf(url, sizeof(url), "%s/v1/sessions", f->api.url);
	struct t_resp r;
	t_http(&r, "POST", url, f->org.token, body, NULL);
	cr_assert_eq(r.status, 201, "%s -> %ld %s", body, r.status, r.body);
	const char *id = json_string_value(json_object_get(json_object_get(r.json, "data"), "id"));
	cr_assert_not_null(id);
	snprintf(sid, 37, "%s", id);
	t_resp_free(&r);
}

/* Posts one job of TASKS rows over ADDRS addresses in mixed case. */
static void random_job(struct t_fleet *f, unsigned *seed, const char *sid, int s)
{
	strbuf b;
	sb_init(&b, 1 << 16);
	br_status st =
	    sb_appendf(&b,
	               "{\"data\":{\"type\":\"jobs\",\"attributes\":{"
	               "\"override_duplicates\":%s,\"auto_approve\":%s,\"tasks\":[",
	               rand_r(seed) % 2 ? "true" : "false", rand_r(seed) % 2 ? "true" : "false");
	for (int i = 0; i < TASKS && st == BR_OK; i++) {
		int a = (int)(rand_r(seed) % ADDRS);
		st = sb_appendf(&b,
		                "%s{\"attributes\":{\"email\":\"%s%d-%d@example.com\","
		                "\"first_name\":\"row %d\",\"reference\":\"r%d\"}}",
		                i ? "," : "", rand_r(seed) % 2 ? "Who" : "who", s, a, i, i);
	}
	if (st == BR_OK)
		st = sb_appends(&b, "]}}}");
	cr_assert_eq(st, BR_OK);
	char url[1024];
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", f->api.url, sid);
	struct t_resp r;
	t_http(&r, "POST", url, f->org.token, sb_str(&b), NULL);
	cr_assert_eq(r.status, 202, "%ld %s", r.status, r.body);
	t_resp_free(&r);
	sb_free(&b);
}

/*
 * For every job of the organization: a copy of its session, the job's rows
 * registered one by one in index order, and every difference from what
 * the workers did counted in pg_temp.diffs. Rolled back by the caller.
 */
static const char referee[] =
    "DO $$\n"
    "DECLARE\n"
    "  j record; t record; s sessions; ref uuid; reg record; mine people; theirs people;\n"
    "BEGIN\n"
    "  FOR j IN SELECT * FROM jobs WHERE organization_id = "
    "current_setting('bulkreg_test.org')::uuid\n"
    "  LOOP\n"
    "    SELECT * INTO s FROM sessions WHERE id = j.session_id;\n"
    "    INSERT INTO sessions (organization_id, title, capacity, approval, waitlist, tracks)\n"
    "    VALUES (s.organization_id, 'referee', s.capacity, s.approval, s.waitlist, s.tracks)\n"
    "    RETURNING id INTO ref;\n"
    "    FOR t IN SELECT * FROM tasks WHERE job_id = j.id ORDER BY idx LOOP\n"
    "      reg := person_apply(ref, j.action, t.input, j.override_duplicates, j.auto_approve,\n"
    "                          j.waitlist, NULL);\n"
    "      SELECT * INTO mine FROM people WHERE id = t.person_id;\n"
    "      SELECT * INTO theirs FROM people WHERE id = reg.person_id;\n"
    "      IF reg.outcome IS DISTINCT FROM t.status OR reg.error_code IS DISTINCT FROM "
    "t.error_code\n"
    "         OR mine.registration_status IS DISTINCT FROM theirs.registration_status\n"
    "         OR mine.position IS DISTINCT FROM theirs.position THEN\n"
    "        INSERT INTO pg_temp.diffs VALUES (j.id, t.idx, t.status || '/' ||\n"
    "          coalesce(t.error_code, '-') || '/' || coalesce(mine.registration_status, '-') ||\n"
    "          '@' || coalesce(mine.position::text, '-'), reg.outcome || '/' ||\n"
    "          coalesce(reg.error_code, '-') || '/' || coalesce(theirs.registration_status, '-') "
    "||\n"
    "          '@' || coalesce(theirs.position::text, '-'));\n"
    "      END IF;\n"
    "    END LOOP;\n"
    "    -- The people as the job left them: addresses, statuses and the fields\n"
    "    -- the last override wrote, position by position.\n"
    "    INSERT INTO pg_temp.diffs\n"
    "    SELECT j.id, -1, format('%s %s %s', a.email, a.registration_status, a.first_name),\n"
    "           format('%s %s %s', b.email, b.registration_status, b.first_name)\n"
    "    FROM (SELECT * FROM people WHERE session_id = j.session_id) a\n"
    "    FULL JOIN (SELECT * FROM people WHERE session_id = ref) b USING (position)\n"
    "    WHERE (a.email, a.registration_status, a.first_name)\n"
    "          IS DISTINCT FROM (b.email, b.registration_status, b.first_name);\n"
    "  END LOOP;\n"
    "END $$";

static bool org_done(void *ctx)
{
	struct t_fleet *f = ctx;
	const char *p[] = {f->org.id};
	return t_sql_long(f->db,
	                  "SELECT count(*) FROM jobs WHERE organization_id = $1"
	                  " AND status = 'processing'",
	                  1, p) == 0;
}

static void check_against_referee(struct t_fleet *f)
{
	cr_assert(t_poll(org_done, f, T_FLEET_DONE_MS), "jobs still processing");
	t_check_invariants(f->db);
	PQclear(t_sql(f->db, "BEGIN", 0, NULL));
	const char *p[] = {f->org.id};
	PQclear(t_sql(f->db, "SELECT set_config('bulkreg_test.org', $1, true)", 1, p));
	PQclear(t_sql(f->db,
	              "CREATE TEMP TABLE diffs (job uuid, idx int, got text, want text)"
	              " ON COMMIT DROP",
	              0, NULL));
	PQclear(t_sql(f->db, referee, 0, NULL));
	PGresult *res =
	    t_sql(f->db, "SELECT job, idx, got, want FROM pg_temp.diffs ORDER BY job, idx LIMIT 10",
	          0, NULL);
	int n = PQntuples(res);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "job %s row %s: %s, in order %s\n", PQgetvalue(res, i, 0),
		        PQgetvalue(res, i, 1), PQgetvalue(res, i, 2), PQgetvalue(res, i, 3));
	PQclear(res);
	long rows = t_sql_long(f->db, "SELECT count(*) FROM pg_temp.diffs", 0, NULL);
	PQclear(t_sql(f->db, "ROLLBACK", 0, NULL));
	cr_assert_eq(rows, 0, "%ld rows differ from registering in index order", rows);
}

static void run(const char *name, bool kill_one, unsigned seed)
{
	struct t_fleet f;
	t_fleet_init(&f, name, NULL, worker_env);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	char sid[SESSIONS][37];
	for (int s = 0; s < SESSIONS; s++)
		random_session(&f, &seed, sid[s]);
	for (int s = 0; s < SESSIONS; s++) {
		random_job(&f, &seed, sid[s], s);
		if (kill_one && s == SESSIONS / 2) {
			int rc = t_proc_stop(&f.workers[0], SIGKILL, T_FLEET_STOP_MS);
			cr_assert_eq(rc, 128 + SIGKILL, "worker 0 ended with %d", rc);
			t_fleet_worker_start(&f, 0, NULL);
		}
	}
	check_against_referee(&f);
	t_fleet_stop(&f);
}

Test(task_order, every_job_as_if_one_by_one)
{
	run("task order", false, 7);
}

Test(task_order, every_job_as_if_one_by_one_with_a_worker_killed)
{
	run("task order, a worker killed", true, 11);
}
