/*
 * test_console.c - the operator console (docs/console.md) in a real
 * browser: this file sets up a running API and worker with real data (two
 * organizations, a job that ended, one that failed, one still processing,
 * one with a task the broker dead-lettered, a webhook endpoint whose receiver
 * fails), then runs tests/browser/console.test.mjs, which drives Debian's
 * headless Chromium through puppeteer-core against it. Then it checks the
 * audit lines the browser's actions wrote. BULKREG_CONSOLE's modes are
 * checked over plain HTTP.
 *
 * With BULKREG_TEST_CONSOLE_SCREENSHOTS=DIR the browser test also saves a
 * screenshot of each page into DIR (docs/console/ holds the committed ones).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "support.h"

TestSuite(console, .timeout = 300);

static const char *const env[] = {"BULKREG_WEBHOOK_RETRY_SCHEDULE=200ms",
                                  "BULKREG_WEBHOOK_TIMEOUT_MS=2000", NULL};

/* POSTs a bulk job of the emails (a JSON array of strings) to session sid; returns its id. */
static void post_job(const char *base, const char *token, const char *sid, const char *emails,
                     char job[37])
{
	char url[256], body[2048];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", base, sid);
	json_t *list = json_loads(emails, 0, NULL), *tasks = json_array();
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e) json_array_append_new(
	    tasks, json_pack("{s:{s:O,s:s}}", "attributes", "email", e, "first_name", "Ada"));
	char *t = json_dumps(tasks, JSON_COMPACT);
	snprintf(body, sizeof(body), "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":%s}}}",
	         t);
	free(t);
	json_decref(tasks);
	json_decref(list);
	t_http(&r, "POST", url, token, body, NULL);
	cr_assert_eq(r.status, 202, "bulk: %ld %s", r.status, r.body);
	snprintf(job, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

struct job_wait {
	PGconn *db;
	const char *job;
	const char *status;
};

static bool job_is(void *ctx)
{
	const struct job_wait *w = ctx;
	const char *p[] = {w->job, w->status};
	return t_sql_long(w->db, "SELECT count(*) FROM jobs WHERE id = $1 AND status = $2", 2, p) ==
	       1;
}

static void wait_job(PGconn *db, const char *job, const char *status)
{
	struct job_wait w = {db, job, status};
	cr_assert(t_poll(job_is, &w, 30000), "job %s did not become %s", job, status);
}

struct hook_wait {
	PGconn *db;
	const char *hook;
};

static bool hook_failed(void *ctx)
{
	const struct hook_wait *w = ctx;
	const char *p[] = {w->hook};
	return t_sql_long(w->db,
	                  "SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1"
	                  " AND status = 'failed'",
	                  1, p) >= 2;
}

/* The organization's webhook endpoint at url for job.ended; its id into id. */
static void make_endpoint(const char *base, const char *token, const char *url, char id[37])
{
	char u[256], body[512];
	struct t_resp r;
	snprintf(u, sizeof(u), "%s/v1/webhooks", base);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":[\"job.ended\"]}}}",
	         url);
	t_http(&r, "POST", u, token, body, NULL);
	cr_assert_eq(r.status, 201, "webhook: %ld %s", r.status, r.body);
	snprintf(id, 37, "%s",
	         json_string_value(json_object_get(json_object_get(r.json, "data"), "id")));
	t_resp_free(&r);
}

/*
 * A job of two tasks, the first of which cannot be processed (a first_name
 * over the people CHECK, as tests/e2e/test_fault_poison.c makes one): the
 * broker redelivers it up to its delivery limit, dead-letters it, and it
 * fails with internal_error. Published here, as the API would have.
 */
static void dead_lettered_job(PGconn *db, const char *org_id, const char *sid, char job[37])
{
	t_job_sql(db, org_id, sid, 2, job);
	const char *p[] = {job};
	cr_assert_eq(
	    t_sql_long(db,
	               "WITH u AS (UPDATE tasks SET input = jsonb_set(input, '{first_name}',"
	               "  to_jsonb(repeat('x', 300))) WHERE job_id = $1 AND idx = 0"
	               "  RETURNING 1) SELECT count(*) FROM u",
	               1, p),
	    1);
	t_republish_job(db, job);
}

/* A job left processing: its tasks are queued and marked published, so no worker takes them. */
static void processing_job(PGconn *db, const char *org_id, const char *sid, char job[37])
{
	t_job_sql(db, org_id, sid, 3, job);
	const char *p[] = {job};
	t_sql_long(db,
	           "WITH u AS (UPDATE jobs SET published_at = now() WHERE id = $1 RETURNING 1)"
	           " SELECT count(*) FROM u",
	           1, p);
}

static char *org_id_of(PGconn *db, const struct t_org *org)
{
	const char *p[] = {org->name};
	return t_sql_text(db, "SELECT id FROM organizations WHERE name = $1", 1, p);
}

/* Counts the lines of path that contain every needle. */
static int log_lines_with(const char *path, const char *const *needles)
{
	FILE *f = fopen(path, "r");
	cr_assert(f, "cannot read %s", path);
	char line[8192];
	int n = 0;
	while (fgets(line, sizeof(line), f)) {
		bool all = true;
		for (const char *const *s = needles; *s && all; s++)
			all = strstr(line, *s) != NULL;
		n += all;
	}
	fclose(f);
	return n;
}

/* bulkreg-admin operator-token create --name name: the token, from the last line of its output. */
static void operator_token(const char *name, char token[128])
{
	char out[4096];
	const char *args[] = {"operator-token", "create", "--name", name, NULL};
	cr_assert_eq(t_admin(out, sizeof(out), args), 0, "operator-token create: %s", out);
	size_t n = strlen(out);
	while (n && out[n - 1] == '\n')
		out[--n] = '\0';
	const char *last = strrchr(out, '\n');
	snprintf(token, 128, "%.127s", last ? last + 1 : out);
	cr_assert(strncmp(token, "bro_", 4) == 0, "not an operator token: %s", token);
}

Test(console, pages_figures_and_actions_in_a_real_browser)
{
	PGconn *db = t_db();
	struct t_org a, b;
	t_org_new(&a);
	t_org_new(&b);
	t_receiver *rc = t_receiver_start();
	static const int fail[] = {500, 500, 500, 500, 500, 500};
	t_receiver_script(rc, fail, 6, 0);
	struct t_proc api, worker;
	t_api_start(&api, env);
	t_worker_start(&worker, env);
	char base[64], sid[37], hook[37], ended[37], failed[37], processing[37], dead[37];
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
	make_endpoint(base, a.token, t_receiver_url(rc), hook);
	t_session_new(base, a.token, "{\"title\":\"Console\"}", sid);
	post_job(base, a.token, sid, "[\"ana@example.com\",\"bo@example.com\",\"cy@example.com\"]",
	         ended);
	wait_job(db, ended, "ended");
	post_job(base, a.token, sid, "[\"ana@example.com\",\"bo@example.com\",\"di@example.com\"]",
	         failed);
	wait_job(db, failed, "failed");
	struct hook_wait hw = {db, hook};
	cr_assert(t_poll(hook_failed, &hw, 20000), "the two job.ended deliveries did not fail");

	char *b_id = org_id_of(db, &b), bsid[37];
	t_session_sql(db, b_id, "Console B", bsid);
	processing_job(db, b_id, bsid, processing);
	dead_lettered_job(db, b_id, bsid, dead);
	wait_job(db, dead, "failed");

	char operator[128];
	operator_token("browser-test", operator);

	char script[512], kv[11][256];
	snprintf(script, sizeof(script), "%s/tests/browser/console.test.mjs", BULKREG_SOURCE_DIR);
	snprintf(kv[0], sizeof(kv[0]), "CONSOLE_API_URL=%s", base);
	snprintf(kv[1], sizeof(kv[1]), "CONSOLE_OPERATOR_TOKEN=%s", operator);
	snprintf(kv[2], sizeof(kv[2]), "CONSOLE_ORG_TOKEN=%s", a.token);
	snprintf(kv[3], sizeof(kv[3]), "CONSOLE_JOB_FAILED=%s", failed);
	snprintf(kv[4], sizeof(kv[4]), "CONSOLE_JOB_PROCESSING=%s", processing);
	snprintf(kv[5], sizeof(kv[5]), "CONSOLE_JOB_DEAD=%s", dead);
	snprintf(kv[6], sizeof(kv[6]), "CONSOLE_HOOK_ID=%s", hook);
	snprintf(kv[7], sizeof(kv[7]), "CONSOLE_HOOK_URL=%s", t_receiver_url(rc));
	snprintf(kv[8], sizeof(kv[8]), "CONSOLE_DATABASE_URL=%s", t_database_url());
	snprintf(kv[9], sizeof(kv[9]), "CONSOLE_WORKER_METRICS_PORT=%d", worker.port);
	const char *node_env[] = {kv[0], kv[1], kv[2], kv[3], kv[4], kv[5],
	                          kv[6], kv[7], kv[8], kv[9], NULL};
	const char *node_args[] = {"--test", "--test-reporter=spec", script, NULL};
	int rc_node = t_run("/usr/bin/node", node_args, node_env, NULL, 0, NULL, 0, 240000);
	cr_assert_eq(rc_node, 0, "the browser test failed (exit %d): its output is above", rc_node);

	/* Every action the browser took wrote its audit line, naming the operator. */
	char prefix[40];
	snprintf(prefix, sizeof(prefix), "\"operator\":\"%.12s\"", operator);
	const char *retry[] = {"\"msg\":\"console action\"",      prefix,
	                       "\"action\":\"job.retry_failed\"", failed,
	                       "\"outcome\":\"retried\"",         NULL};
	const char *cancel[] = {"\"msg\":\"console action\"", prefix,
	                        "\"action\":\"job.cancel\"",  processing,
	                        "\"outcome\":\"cancelled\"",  NULL};
	const char *resend[] = {"\"msg\":\"console action\"", prefix,
	                        "\"action\":\"webhook_delivery.retry\"", "\"outcome\":\"retried\"",
	                        NULL};
	const char *refused[] = {"\"msg\":\"console action\"", prefix, "\"action\":\"refused\"",
	                         "\"outcome\":\"csrf\"", NULL};
	cr_expect_eq(log_lines_with(api.log_path, retry), 1, "retry audit line");
	cr_expect_eq(log_lines_with(api.log_path, cancel), 1, "cancel audit line");
	cr_expect_eq(log_lines_with(api.log_path, resend), 1, "resend audit line");
	cr_expect_geq(log_lines_with(api.log_path, refused), 1, "refused audit line");

	free(b_id);
	t_check_invariants(db);
	/* A worker that stops removes its heartbeat: the console does not list it. */
	char pid[24];
	snprintf(pid, sizeof(pid), "%ld", (long)worker.pid);
	const char *pp[] = {pid};
	static const char beats[] = "SELECT count(*) FROM process_heartbeats WHERE pid = $1::int";
	cr_assert_eq(t_sql_long(db, beats, 1, pp), 1);
	cr_assert_eq(t_proc_stop(&worker, SIGTERM, 30000), 0);
	cr_assert_eq(t_sql_long(db, beats, 1, pp), 0);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	t_receiver_stop(rc);
	PQfinish(db);
}

/* The status of GET path on the API at base. */
static long status_of(const char *base, const char *path)
{
	char url[256];
	snprintf(url, sizeof(url), "%s%s", base, path);
	return t_http_status(url, 5000);
}

static bool healthy(void *ctx)
{
	const struct t_proc *p = ctx;
	return status_of(p->url, "/healthz") == 200;
}

/*
 * Starts the API with BULKREG_API_BIND=0.0.0.0 and the extra setting kv, on
 * a quiet port (a free one of the ephemeral range may be a client's on
 * another address, which 0.0.0.0 cannot take); waits for /healthz.
 */
static void start_on_every_address(struct t_proc *p, const char *kv)
{
	char port[32];
	int n = t_quiet_port();
	snprintf(port, sizeof(port), "BULKREG_API_PORT=%d", n);
	const char *env_all[] = {"BULKREG_API_BIND=0.0.0.0", port, kv, NULL};
	t_proc_spawn(p, "bulkreg-api", NULL, env_all);
	p->port = n;
	snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", n);
	cr_assert(t_poll(healthy, p, 20000), "bulkreg-api did not start (log %s)", p->log_path);
}

/*
 * BULKREG_CONSOLE=auto on an address others reach: /console is a 404 until
 * an operator token exists (a database of its own, which has none).
 */
Test(console, auto_off_loopback_waits_for_an_operator_token)
{
	char url[512], db_kv[600];
	t_scratch_create(url, sizeof(url));
	t_migrate(url);
	snprintf(db_kv, sizeof(db_kv), "DATABASE_URL=%s", url);
	struct t_proc api;
	start_on_every_address(&api, db_kv);
	cr_assert_eq(status_of(api.url, "/console/login"), 404);
	const char *args[] = {"operator-token", "create", NULL};
	const char *admin_env[] = {db_kv, NULL};
	char out[2048];
	cr_assert_eq(t_run("bulkreg-admin", args, admin_env, out, sizeof(out), NULL, 0, 30000), 0,
	             "%s", out);
	cr_assert_eq(status_of(api.url, "/console/login"), 200);
	cr_assert_eq(status_of(api.url, "/console"), 303, "no token: to the login page");
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
	t_scratch_drop_all();
}

/* BULKREG_CONSOLE=off: /console is the API's 404; an organization's token never opens it. */
Test(console, off_is_a_404_and_org_tokens_never_open_it)
{
	struct t_org org;
	t_org_new(&org);
	static const char *const off[] = {"BULKREG_CONSOLE=off", NULL};
	struct t_proc api;
	t_api_start(&api, off);
	char url[128];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/console/login", api.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_eq(r.status, 404, "off: %ld %s", r.status, r.body);
	cr_assert_str_eq(json_string_value(json_object_get(
	                     json_array_get(json_object_get(r.json, "errors"), 0), "code")),
	                 "not_found");
	t_resp_free(&r);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);

	start_on_every_address(&api, "BULKREG_CONSOLE=on");
	snprintf(url, sizeof(url), "%s/console/overview.json", api.url);
	t_http(&r, "GET", url, org.token, NULL, NULL);
	cr_assert_eq(r.status, 401, "an organization's token: %ld", r.status);
	cr_assert(t_resp_header(&r, "WWW-Authenticate"));
	t_resp_free(&r);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_eq(r.status, 401, "no token: %ld", r.status);
	t_resp_free(&r);
	snprintf(url, sizeof(url), "%s/console/login", api.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert_eq(r.status, 200, "on: the login page: %ld", r.status);
	cr_assert(strstr(r.body, "Operator token"));
	t_resp_free(&r);
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
}

struct silent_wait {
	const char *url;
	const char *token;
	long pid;
	const char *state; /* "ready" or "silent" */
};

/* The overview lists the worker of pid w->pid, ready and heard from, or silent. */
static bool worker_is(void *ctx)
{
	const struct silent_wait *w = ctx;
	struct t_resp r;
	t_http(&r, "GET", w->url, w->token, NULL, NULL);
	cr_assert_eq(r.status, 200, "overview.json: %ld %s", r.status, r.body);
	bool found = false;
	size_t i;
	json_t *p;
	json_array_foreach(json_object_get(r.json, "workers"), i, p)
	{
		if (json_integer_value(json_object_get(p, "pid")) != w->pid)
			continue;
		bool silent = json_is_true(json_object_get(p, "silent"));
		bool ready = json_is_true(json_object_get(p, "ready"));
		found = strcmp(w->state, "silent") == 0 ? silent : ready && !silent;
	}
	t_resp_free(&r);
	return found;
}

/* A worker killed outright stops sending heartbeats: within three sweep intervals it is silent. */
Test(console, a_killed_worker_goes_silent)
{
	static const char *const fast[] = {"BULKREG_SWEEP_INTERVAL_MS=200", NULL};
	struct t_proc api, worker;
	t_api_start(&api, NULL);
	t_worker_start(&worker, fast);
	char token[128], url[128];
	operator_token("silence-test", token);
	snprintf(url, sizeof(url), "%s/console/overview.json", api.url);
	struct silent_wait w = {url, token, (long)worker.pid, "ready"};
	cr_assert(t_poll(worker_is, &w, 10000), "the worker is not listed as ready");
	t_proc_stop(&worker, SIGKILL, 10000);
	w.state = "silent";
	cr_assert(t_poll(worker_is, &w, 5000), "the killed worker is not listed as silent");
	cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0);
}
