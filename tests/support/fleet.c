/*
 * fleet.c - a running bulkreg for one fault scenario and the
 * end-of-scenario checks (see fleet.h; the load thread is fleet_load.c).
 *
 * A struct t_fleet belongs to the test's thread, except its job list
 * (behind f->mu), which the load thread appends to through t_fleet_post.
 */
#include "fleet.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <criterion/criterion.h>

#include "mq.h"
#include "strbuf.h"

#define FLEET_ENV_MAX      64
#define FLEET_POST_MS      60000
#define FLEET_DB_WAIT_MS   120000
#define FLEET_MAX_HOOKS    4096
#define FLEET_LOG_LINES    40
#define FLEET_EMAIL_DOMAIN "example.com"

const char *const t_fleet_api_defaults[] = {"BULKREG_RATE_LIMIT=0", NULL};
const char *const t_fleet_worker_defaults[] = {
    "BULKREG_SWEEP_INTERVAL_MS=500", "BULKREG_WEBHOOK_RETRY_SCHEDULE=250ms,500ms,1s,1s,2s,2s,2s",
    "BULKREG_WEBHOOK_TIMEOUT_MS=5000", NULL};

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* Concatenates NULL-terminated lists (each may be NULL) into out (cap entries). */
static void env_merge(const char **out, int cap, const char *const *a, const char *const *b,
                      const char *const *c)
{
	const char *const *lists[] = {a, b, c};
	int n = 0;
	for (int l = 0; l < 3; l++) {
		for (const char *const *kv = lists[l]; kv && *kv; kv++) {
			cr_assert(n < cap - 1, "too many environment entries");
			out[n++] = *kv;
		}
	}
	out[n] = NULL;
}

void t_fleet_note(struct t_fleet *f, const char *fmt, ...)
{
	size_t len = strlen(f->note);
	if (len >= sizeof(f->note) - 1)
		return;
	if (len) {
		f->note[len++] = ' ';
		f->note[len] = '\0';
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->note + len, sizeof(f->note) - len, fmt, ap);
	va_end(ap);
}

static bool broker_reachable(void)
{
	mq_conn *mq = NULL;
	if (mq_open(t_amqp_url(), &(struct mq_opts){0}, &mq) != BR_OK)
		return false;
	mq_close(mq);
	return true;
}

void t_fleet_services_up(void)
{
	/* scripts/ctl costs seconds even for a service already running: ask first. */
	int pg = PQping(t_database_url()) == PQPING_OK ? 0 : t_ctl("start", "postgres");
	int mq = broker_reachable() ? 0 : t_ctl("start", "rabbitmq");
	cr_assert(pg == 0 && mq == 0, "scripts/ctl start: postgres %d, rabbitmq %d", pg, mq);
}

/*
 * Makes f->db usable: after a PostgreSQL restart the old connection is
 * dead, so it is replaced (waiting for the server to accept connections).
 */
static void db_fresh(struct t_fleet *f)
{
	if (f->db && PQstatus(f->db) == CONNECTION_OK) {
		PGresult *res = PQexec(f->db, "SELECT 1");
		bool ok = PQresultStatus(res) == PGRES_TUPLES_OK;
		PQclear(res);
		if (ok)
			return;
	}
	long long deadline = t_now_ms() + FLEET_DB_WAIT_MS;
	for (;;) {
		if (f->db)
			PQfinish(f->db);
		f->db = PQconnectdb(t_database_url());
		if (f->db && PQstatus(f->db) == CONNECTION_OK)
			break;
		cr_assert(t_now_ms() < deadline, "PostgreSQL did not come back within %d ms: %s",
		          FLEET_DB_WAIT_MS, f->db ? PQerrorMessage(f->db) : "out of memory");
		sleep_ms(200);
	}
	PQclear(PQexec(f->db, "SET client_min_messages = warning"));
}

static void make_endpoint(struct t_fleet *f)
{
	char url[256], body[512];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/webhooks", f->api.url);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":[\"job.ended\"]}}}",
	         t_receiver_url(f->rc));
	t_http(&r, "POST", url, f->org.token, body, NULL);
	cr_assert_eq(r.status, 201, "webhook endpoint: %ld %s", r.status, r.body);
	json_t *data = json_object_get(r.json, "data");
	const char *secret =
	    json_string_value(json_object_get(json_object_get(data, "attributes"), "secret"));
	const char *id = json_string_value(json_object_get(data, "id"));
	cr_assert(secret && id, "webhook endpoint without secret or id: %s", r.body);
	snprintf(f->hook_secret, sizeof(f->hook_secret), "%s", secret);
	snprintf(f->hook_id, sizeof(f->hook_id), "%s", id);
	t_resp_free(&r);
}

void t_fleet_endpoint(struct t_fleet *f)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/webhooks/%s", f->api.url, f->hook_id);
	t_http(&r, "DELETE", url, f->org.token, NULL, NULL);
	cr_assert(r.status == 200 || r.status == 204, "DELETE webhook: %ld %s", r.status, r.body);
	t_resp_free(&r);
	make_endpoint(f);
}

static void api_start(struct t_fleet *f)
{
	const char *env[FLEET_ENV_MAX];
	env_merge(env, FLEET_ENV_MAX, t_fleet_api_defaults, f->api_env, NULL);
	t_api_start(&f->api, env);
}

void t_fleet_init(struct t_fleet *f, const char *name, const char *const *api_env,
                  const char *const *worker_env)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->name, sizeof(f->name), "%s", name);
	pthread_mutex_init(&f->mu, NULL);
	f->api_env = api_env;
	f->worker_env = worker_env;
	f->db = t_db();
	t_org_new(&f->org);
	api_start(f);
	f->rc = t_receiver_start();
	make_endpoint(f);
}

void t_fleet_api_restart(struct t_fleet *f, const char *const *api_env)
{
	cr_assert(!t_proc_alive(&f->api), "the API is still running");
	f->api_env = api_env;
	api_start(f);
}

void t_fleet_worker_start(struct t_fleet *f, int i, const char *const *extra)
{
	cr_assert(i >= 0 && i < T_FLEET_MAX_WORKERS, "no worker slot %d", i);
	cr_assert(!t_proc_alive(&f->workers[i]), "worker %d is still running", i);
	const char *env[FLEET_ENV_MAX];
	env_merge(env, FLEET_ENV_MAX, t_fleet_worker_defaults, f->worker_env, extra);
	t_worker_start(&f->workers[i], env);
}

void t_fleet_worker_spawn(struct t_fleet *f, int i, const char *const *extra)
{
	cr_assert(i >= 0 && i < T_FLEET_MAX_WORKERS, "no worker slot %d", i);
	cr_assert(!t_proc_alive(&f->workers[i]), "worker %d is still running", i);
	/* What t_worker_start would add, with the metrics port off; extra may override. */
	static const char *const spawn_defaults[] = {"BULKREG_WORKER_METRICS_PORT=0",
	                                             "BULKREG_WEBHOOK_ALLOW_PRIVATE=1", NULL};
	const char *env[FLEET_ENV_MAX];
	env_merge(env, FLEET_ENV_MAX, spawn_defaults, t_fleet_worker_defaults, f->worker_env);
	const char *all[FLEET_ENV_MAX];
	env_merge(all, FLEET_ENV_MAX, env, extra, NULL);
	t_proc_spawn(&f->workers[i], "bulkreg-worker", NULL, all);
}

int t_fleet_log_count(const struct t_proc *p, const char *needle, const char *and_needle)
{
	FILE *in = fopen(p->log_path, "r");
	if (!in)
		return 0;
	int n = 0;
	char line[8192];
	while (fgets(line, sizeof(line), in)) {
		if (strstr(line, needle) && (!and_needle || strstr(line, and_needle)))
			n++;
	}
	fclose(in);
	return n;
}

void t_fleet_session(struct t_fleet *f, char *sid)
{
	char url[256];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions", f->api.url);
	t_http(&r, "POST", url, f->org.token,
	       "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":\"Fault\"}}}", NULL);
	cr_assert_eq(r.status, 201, "session: %ld %s", r.status, r.body);
	const char *id = json_string_value(json_object_get(json_object_get(r.json, "data"), "id"));
	cr_assert(id, "session without id: %s", r.body);
	snprintf(sid, 37, "%s", id);
	t_resp_free(&r);
}

/* Records job id once; false when the table is full. */
static bool record_job(struct t_fleet *f, const char *id, int n)
{
	bool ok = true;
	pthread_mutex_lock(&f->mu);
	bool known = false;
	for (int i = 0; i < f->njobs && !known; i++)
		known = strcmp(f->jobs[i], id) == 0;
	if (!known && f->njobs < T_FLEET_MAX_JOBS) {
		snprintf(f->jobs[f->njobs++], 37, "%s", id);
		f->tasks_accepted += n;
	} else if (!known) {
		ok = false;
	}
	pthread_mutex_unlock(&f->mu);
	return ok;
}

static bool post(struct t_fleet *f, const char *sid, const char *prefix, int n, const char *key,
                 int timeout_ms, char *job_id, long *status, long long *latency_ms)
{
	strbuf body;
	sb_init(&body, (size_t)n * 128 + 256);
	bool built =
	    sb_appends(&body, "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":[") == BR_OK;
	for (int i = 0; i < n && built; i++)
		built = sb_appendf(&body,
		                   "%s{\"attributes\":{\"email\":\"%s-%d@" FLEET_EMAIL_DOMAIN
		                   "\",\"reference\":\"%s/%d\"}}",
		                   i ? "," : "", prefix, i, prefix, i) == BR_OK;
	built = built && sb_appends(&body, "]}}}") == BR_OK;
	*status = 0;
	if (!built) {
		sb_free(&body);
		return false;
	}
	char url[256], err[512], header[300];
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", f->api.url, sid);
	snprintf(header, sizeof(header), "Idempotency-Key: %s", key ? key : "");
	const char *headers[] = {header, NULL};
	struct t_resp r;
	long long t0 = t_now_ms();
	bool answered =
	    t_http_try(&r, "POST", url, f->org.token, sb_str(&body), key ? headers : NULL,
	               timeout_ms > 0 ? timeout_ms : FLEET_POST_MS, err, sizeof(err));
	if (latency_ms)
		*latency_ms = t_now_ms() - t0;
	sb_free(&body);
	*status = answered ? r.status : 0;
	const char *id = json_string_value(json_object_get(json_object_get(r.json, "data"), "id"));
	bool ok = answered && r.status == 202 && id && strlen(id) == 36 && record_job(f, id, n);
	if (ok && job_id)
		snprintf(job_id, 37, "%s", id);
	t_resp_free(&r);
	return ok;
}

bool t_fleet_post(struct t_fleet *f, const char *sid, const char *prefix, int n, int timeout_ms,
                  char *job_id, long *status, long long *latency_ms)
{
	return post(f, sid, prefix, n, NULL, timeout_ms, job_id, status, latency_ms);
}

bool t_fleet_post_keyed(struct t_fleet *f, const char *sid, const char *prefix, int n,
                        const char *key, int timeout_ms, char *job_id, long *status)
{
	return post(f, sid, prefix, n, key, timeout_ms, job_id, status, NULL);
}

void t_fleet_post_ok(struct t_fleet *f, const char *sid, const char *prefix, int n, char *job_id)
{
	long status = 0;
	bool ok = t_fleet_post(f, sid, prefix, n, 0, job_id, &status, NULL);
	cr_assert(ok, "POST bulk (%s, %d people) answered %ld, not 202", prefix, n, status);
}

long t_fleet_processed(struct t_fleet *f)
{
	db_fresh(f);
	const char *p[] = {f->org.id};
	return t_sql_long(f->db,
	                  "SELECT COALESCE(sum(total_processed_items), 0) FROM jobs"
	                  " WHERE organization_id = $1",
	                  1, p);
}

struct processed_wait {
	struct t_fleet *f;
	long n;
};

static bool processed_reached(void *ctx)
{
	struct processed_wait *w = ctx;
	return t_fleet_processed(w->f) >= w->n;
}

bool t_fleet_wait_processed(struct t_fleet *f, long n, int timeout_ms)
{
	struct processed_wait w = {f, n};
	return t_poll(processed_reached, &w, timeout_ms);
}

static long org_long(struct t_fleet *f, const char *sql)
{
	const char *p[] = {f->org.id};
	return t_sql_long(f->db, sql, 1, p);
}

static bool all_done(void *ctx)
{
	struct t_fleet *f = ctx;
	db_fresh(f);
	return org_long(f, "SELECT count(*) FROM jobs WHERE organization_id = $1"
	                   " AND status = 'processing'") == 0;
}

static void print_logs(struct t_fleet *f)
{
	t_proc_print_log(&f->api, FLEET_LOG_LINES);
	for (int i = 0; i < T_FLEET_MAX_WORKERS; i++) {
		if (f->workers[i].log_path[0])
			t_proc_print_log(&f->workers[i], FLEET_LOG_LINES);
	}
}

void t_fleet_wait_done(struct t_fleet *f)
{
	if (t_poll(all_done, f, T_FLEET_DONE_MS))
		return;
	PGresult *res = t_sql(f->db,
	                      "SELECT id, total_items, total_processed_items, published_at IS NULL"
	                      " FROM jobs WHERE organization_id = $1 AND status = 'processing'"
	                      " LIMIT 10",
	                      1, (const char *const[]){f->org.id});
	for (int i = 0; i < PQntuples(res); i++)
		fprintf(stderr, "still processing: job %s, %s of %s tasks, unpublished %s\n",
		        PQgetvalue(res, i, 0), PQgetvalue(res, i, 2), PQgetvalue(res, i, 1),
		        PQgetvalue(res, i, 3));
	PQclear(res);
	print_logs(f);
	cr_assert_fail("%s: jobs still processing after %d ms", f->name, T_FLEET_DONE_MS);
}

/* Ready messages in queue, or -1 when the broker cannot be asked. */
static long queue_messages(const char *queue)
{
	mq_conn *mq = NULL;
	uint32_t msgs = 0, consumers = 0;
	if (mq_open(t_amqp_url(), &(struct mq_opts){0}, &mq) != BR_OK)
		return -1;
	long n = mq_queue_stats(mq, queue, &msgs, &consumers) == BR_OK ? (long)msgs : -1;
	mq_close(mq);
	return n;
}

long t_fleet_queue_depth(void)
{
	return queue_messages(MQ_QUEUE_TASKS);
}

static bool queues_empty(void *ctx)
{
	(void)ctx;
	return queue_messages(MQ_QUEUE_TASKS) == 0 && queue_messages(MQ_QUEUE_DEAD) == 0;
}

static bool hooks_delivered(void *ctx)
{
	struct t_fleet *f = ctx;
	return org_long(f, "SELECT count(*) FROM webhook_deliveries d"
	                   " JOIN webhook_events e ON e.id = d.event_id"
	                   " WHERE e.organization_id = $1 AND d.status <> 'succeeded'") == 0;
}

/*
 * Checks the receiver saw every job.ended event of the organization, each
 * under its event id and correctly signed; returns the distinct ids seen
 * and, in *repeats, how many deliveries repeated an id (at least once).
 */
static int check_receiver(struct t_fleet *f, int *repeats)
{
	int n = t_receiver_count(f->rc);
	cr_assert(n <= FLEET_MAX_HOOKS, "too many webhook requests (%d)", n);
	char(*ids)[128] = calloc((size_t)(n ? n : 1), sizeof(*ids));
	cr_assert_not_null(ids, "out of memory");
	int distinct = 0;
	*repeats = 0;
	for (int i = 0; i < n; i++) {
		struct t_hook h;
		cr_assert(t_receiver_get(f->rc, i, &h), "webhook request %d missing", i);
		bool signed_ok = t_hook_verify(&h, f->hook_secret);
		free(h.body);
		cr_assert(signed_ok, "webhook %s: bad signature", h.id);
		bool seen = false;
		for (int k = 0; k < distinct && !seen; k++)
			seen = strcmp(ids[k], h.id) == 0;
		if (seen)
			(*repeats)++;
		else
			snprintf(ids[distinct++], sizeof(ids[0]), "%s", h.id);
	}
	PGresult *res = t_sql(f->db,
	                      "SELECT id FROM webhook_events WHERE organization_id = $1"
	                      " AND type = 'job.ended'",
	                      1, (const char *const[]){f->org.id});
	int events = PQntuples(res);
	for (int e = 0; e < events; e++) {
		const char *id = PQgetvalue(res, e, 0);
		bool seen = false;
		for (int k = 0; k < distinct && !seen; k++)
			seen = strcmp(ids[k], id) == 0;
		cr_expect(seen, "job.ended event %s was never delivered", id);
	}
	PQclear(res);
	free(ids);
	cr_assert_eq(distinct, events,
	             "%s: the receiver saw %d distinct webhook ids for %d job.ended events",
	             f->name, distinct, events);
	return distinct;
}

/* Every accepted (202) job is in the database. Returns how many are not. */
static long accepted_missing(struct t_fleet *f)
{
	strbuf arr;
	sb_init(&arr, (size_t)T_FLEET_MAX_JOBS * 40 + 8);
	pthread_mutex_lock(&f->mu);
	int n = f->njobs;
	br_status st = sb_appends(&arr, "{");
	for (int i = 0; i < n && st == BR_OK; i++)
		st = sb_appendf(&arr, "%s%s", i ? "," : "", f->jobs[i]);
	pthread_mutex_unlock(&f->mu);
	if (st == BR_OK)
		st = sb_appends(&arr, "}");
	cr_assert_eq(st, BR_OK, "job list too long");
	const char *p[] = {sb_str(&arr)};
	long found =
	    t_sql_long(f->db, "SELECT count(*) FROM jobs WHERE id = ANY ($1::uuid[])", 1, p);
	sb_free(&arr);
	return n - found;
}

/* Task-level figures of the organization's jobs. */
struct task_counts {
	long total, queued, failed, internal, dup_failures, orphans;
};

static void count_tasks(struct t_fleet *f, struct task_counts *c)
{
	PGresult *res = t_sql(
	    f->db,
	    "SELECT count(*), count(*) FILTER (WHERE t.status = 'queued'),"
	    "       count(*) FILTER (WHERE t.status = 'failed'),"
	    "       count(*) FILTER (WHERE t.error_code = 'internal_error'),"
	    "       count(*) FILTER (WHERE t.error_code = 'already_registered'),"
	    "       count(*) FILTER (WHERE t.status = 'succeeded' AND NOT EXISTS"
	    "           (SELECT 1 FROM people p WHERE p.id = t.person_id AND p.task_id = t.id))"
	    "  FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.organization_id = $1",
	    1, (const char *const[]){f->org.id});
	long *out[] = {&c->total,    &c->queued,       &c->failed,
	               &c->internal, &c->dup_failures, &c->orphans};
	for (int i = 0; i < 6; i++)
		*out[i] = strtol(PQgetvalue(res, 0, i), NULL, 10);
	PQclear(res);
}

/*
 * Per session: people, distinct identities (the address, or the external id
 * of a person without one), and the sum of total_success of its jobs.
 */
static void count_people(struct t_fleet *f, long *people, long *extra, long *missing)
{
	PGresult *res = t_sql(f->db,
	                      "SELECT (SELECT count(*) FROM people p WHERE p.session_id = s.id),"
	                      "       (SELECT count(DISTINCT COALESCE('e:' || email_key(p.email),"
	                      "                                       'x:' || p.external_id))"
	                      "          FROM people p WHERE p.session_id = s.id),"
	                      "       (SELECT COALESCE(sum(j.total_success), 0) FROM jobs j WHERE "
	                      "j.session_id = s.id)"
	                      "  FROM sessions s WHERE s.organization_id = $1",
	                      1, (const char *const[]){f->org.id});
	*people = *extra = *missing = 0;
	for (int i = 0; i < PQntuples(res); i++) {
		long n = strtol(PQgetvalue(res, i, 0), NULL, 10);
		long distinct = strtol(PQgetvalue(res, i, 1), NULL, 10);
		long success = strtol(PQgetvalue(res, i, 2), NULL, 10);
		*people += n;
		*extra += n - distinct;
		if (n > success)
			*extra += n - success;
		else
			*missing += success - n;
	}
	PQclear(res);
}

/* Prints the summary line with the scenario's note, once. */
static void summary(struct t_fleet *f)
{
	if (!f->summary[0])
		return;
	fprintf(stderr, "%s | %s\n", f->summary, f->note);
	const char *path = getenv("BULKREG_FAULT_SUMMARY");
	FILE *out = path && *path ? fopen(path, "a") : NULL;
	if (out) {
		fprintf(out, "%s | %s\n", f->summary, f->note);
		fclose(out);
	}
	f->summary[0] = '\0';
}

void t_fleet_verify(struct t_fleet *f)
{
	long long t0 = t_now_ms();
	t_fleet_wait_done(f);
	long long t_done = t_now_ms();
	if (!t_poll(queues_empty, NULL, T_FLEET_DRAIN_MS)) {
		print_logs(f);
		cr_assert_fail(
		    "%s: messages left in bulkreg.tasks (%ld) or bulkreg.tasks.dead (%ld)", f->name,
		    queue_messages(MQ_QUEUE_TASKS), queue_messages(MQ_QUEUE_DEAD));
	}
	db_fresh(f);
	if (!t_poll(hooks_delivered, f, T_FLEET_DRAIN_MS)) {
		print_logs(f);
		cr_assert_fail("%s: job.ended deliveries not all succeeded", f->name);
	}
	long long t_hooks = t_now_ms();
	t_check_invariants(f->db);

	struct task_counts tc;
	count_tasks(f, &tc);
	long people, extra, missing;
	count_people(f, &people, &extra, &missing);
	long not_accepted = accepted_missing(f);
	long ended_wrong = org_long(f, "SELECT count(*) FROM jobs j WHERE j.organization_id = $1"
	                               "   AND (SELECT count(*) FROM webhook_events e"
	                               "        WHERE e.job_id = j.id AND e.type = 'job.ended'"
	                               "          AND e.run = j.retry_count) <> 1");
	long jobs = org_long(f, "SELECT count(*) FROM jobs WHERE organization_id = $1");
	int repeats = 0;
	int hooks = check_receiver(f, &repeats);

	/* Lost: accepted work that is not there, did not finish, or failed unexpectedly. */
	long unexpected_fail = tc.failed - f->expected_failed;
	long lost = not_accepted + tc.queued + (unexpected_fail > 0 ? unexpected_fail : 0) +
	            missing + tc.orphans;
	/* Doubled: a person twice, a task failing against its own earlier effect, two events. */
	long doubled = extra + tc.dup_failures + ended_wrong;

	snprintf(f->summary, sizeof(f->summary),
	         "fault summary | %-26s | registrations %5ld | lost %ld | doubled %ld | jobs %ld,"
	         " tasks %ld (accepted %ld), failed %ld | job.ended %d (%d repeated deliveries)",
	         f->name, people, lost, doubled, jobs, tc.total, f->tasks_accepted, tc.failed,
	         hooks, repeats);
	t_fleet_note(f, "(settled: jobs %lld ms, queues and webhooks %lld ms)", t_done - t0,
	             t_hooks - t_done);
	if (lost || doubled)
		summary(f);

	cr_expect_eq(not_accepted, 0, "%ld accepted job(s) are not in the database", not_accepted);
	cr_expect_eq(tc.queued, 0, "%ld task(s) still queued", tc.queued);
	cr_expect_eq(tc.failed, f->expected_failed, "%ld task(s) failed, expected %d", tc.failed,
	             f->expected_failed);
	cr_expect_eq(tc.internal, f->expected_failed, "%ld task(s) failed with internal_error",
	             tc.internal);
	cr_expect_eq(tc.dup_failures, 0, "%ld task(s) failed as already_registered",
	             tc.dup_failures);
	cr_expect_eq(tc.orphans, 0, "%ld succeeded task(s) without their person", tc.orphans);
	cr_expect_eq(extra, 0, "%ld person(s) registered more than once", extra);
	cr_expect_eq(missing, 0, "%ld success(es) counted without a person", missing);
	cr_expect_eq(ended_wrong, 0, "%ld job(s) without exactly one job.ended", ended_wrong);
	cr_expect_eq(people + tc.failed, tc.total, "people %ld + failed %ld != tasks %ld", people,
	             tc.failed, tc.total);
	cr_assert(lost == 0 && doubled == 0, "%s: lost %ld, doubled %ld", f->name, lost, doubled);
}

void t_fleet_stop(struct t_fleet *f)
{
	summary(f);
	for (int i = 0; i < T_FLEET_MAX_WORKERS; i++) {
		if (f->workers[i].pid <= 0)
			continue;
		int rc = t_proc_stop(&f->workers[i], SIGTERM, T_FLEET_STOP_MS);
		cr_expect_eq(rc, 0, "worker %d exited %d on SIGTERM", i, rc);
	}
	if (f->api.pid > 0) {
		int rc = t_proc_stop(&f->api, SIGTERM, T_FLEET_STOP_MS);
		cr_expect_eq(rc, 0, "the API exited %d on SIGTERM", rc);
	}
	t_receiver_stop(f->rc);
	f->rc = NULL;
	if (f->db)
		PQfinish(f->db);
	f->db = NULL;
	pthread_mutex_destroy(&f->mu);
}
