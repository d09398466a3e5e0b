/*
 * bench_load.c - bulkreg-bench, the load generator of scripts/bench.
 *
 *   bulkreg-bench SCENARIO [--jobs N] [--tasks N] [--sessions N] [--clients N]
 *                          [--runs N] [--requests N] [--timeout S]
 *
 * Scenarios (docs/performance.md says what each one measures and why):
 *   spread   N jobs x M tasks over S sessions, posted by C concurrent clients;
 *            timed from the first POST to the last job terminal
 *   hot      the same into one session
 *   latency  one job at a time on an idle system: POST -> job.ended received
 *            by an in-process webhook receiver, R times
 *   intake   POST .../bulk throughput (run it with the workers stopped)
 *   reads    makes one finished job for wrk and pgbench to read; prints its ids
 *   growth   one job of M tasks (BULKREG_MAX_TASKS must allow it): intake time,
 *            end-to-end processing rate, GET .../tasks page 0 vs the last page
 *   warmup   8 jobs, each into a session of its own, and wait: warms the
 *            stack's connections up before a measurement; prints nothing
 *
 * It talks to API_URL with BULKREG_TOKEN and watches jobs in DATABASE_URL.
 * Results go to stdout as key=value lines, progress to stderr. It starts no
 * process and leaves its sessions and jobs in the database.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

#define POLL_MS         20
#define EMAIL_DOMAIN    "bench.example"
#define PAGE_SIZE       100
#define LATENCY_IDLE_MS 300

struct opts {
	const char *scenario;
	int jobs, tasks, sessions, clients, runs, requests;
	double timeout_s;
};

struct env {
	const char *api;
	const char *db_url;
	const char *token;
	char tag[48]; /* makes this run's e-mail addresses unique */
};

static struct env env;

static const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		bench_die("%s is not set", name);
	return v;
}

static int parse_int(const char *name, const char *s, int min, int max)
{
	char *end = NULL;
	long v = s ? strtol(s, &end, 10) : 0;
	if (!s || !*s || *end || v < min || v > max)
		bench_die("%s: expected an integer from %d to %d, got \"%s\"", name, min, max,
		          s ? s : "");
	return (int)v;
}

/* ---- API helpers ---- */

static void make_session(struct bclient *c, char out[BENCH_UUID_LEN + 1])
{
	char url[512];
	snprintf(url, sizeof(url), "%s/v1/sessions", env.api);
	json_t *doc = bc_expect(c, "POST", url,
	                        "{\"data\":{\"type\":\"sessions\",\"attributes\":{\"title\":"
	                        "\"bench\",\"capacity\":1000000}}}",
	                        201);
	bench_data_id(doc, out);
	json_decref(doc);
}

/* A bulk body of ntasks people; job makes the addresses unique within a session. */
static char *job_body(int job, int ntasks)
{
	struct bbuf b;
	bb_init(&b);
	bb_printf(&b, "{\"type\":\"jobs\",\"data\":{\"attributes\":{\"tasks\":[");
	for (int i = 0; i < ntasks; i++)
		bb_printf(&b,
		          "%s{\"attributes\":{\"email\":\"%s-%d-%d@" EMAIL_DOMAIN "\","
		          "\"first_name\":\"Bench\",\"last_name\":\"Person %d\","
		          "\"reference\":\"row-%d\"}}",
		          i ? "," : "", env.tag, job, i, i, i);
	bb_printf(&b, "]}}}");
	return b.data;
}

/* A new "{id,id,...}" array literal of n job ids; the caller frees it. */
static char *id_array(char (*ids)[BENCH_UUID_LEN + 1], int n)
{
	struct bbuf b;
	bb_init(&b);
	bb_append(&b, "{", 1);
	for (int i = 0; i < n; i++)
		bb_printf(&b, "%s%s", i ? "," : "", ids[i]);
	bb_append(&b, "}", 1);
	return b.data;
}

/* ---- posting jobs from concurrent clients ---- */

struct post_plan {
	int njobs;
	char **bodies;
	char (*urls)[512];
	char (*job_ids)[BENCH_UUID_LEN + 1];
	double *post_s; /* how long each POST took */
	double last_202;
	int next; /* atomic: the next job to post */
	pthread_mutex_t mu;
};

static void *post_client(void *arg)
{
	struct post_plan *p = arg;
	struct bclient c;
	bc_init(&c, env.token);
	for (;;) {
		int i = __atomic_fetch_add(&p->next, 1, __ATOMIC_SEQ_CST);
		if (i >= p->njobs)
			break;
		double t = bench_now();
		json_t *doc = bc_expect(&c, "POST", p->urls[i], p->bodies[i], 202);
		double done = bench_now();
		bench_data_id(doc, p->job_ids[i]);
		json_decref(doc);
		p->post_s[i] = done - t;
		pthread_mutex_lock(&p->mu);
		if (done > p->last_202)
			p->last_202 = done;
		pthread_mutex_unlock(&p->mu);
	}
	bc_free(&c);
	return NULL;
}

/*
 * Creates the sessions, builds the bodies, then posts njobs jobs (job i into
 * session i % nsessions) from nclients threads. Returns the start time.
 */
static double post_jobs(const struct opts *o, struct post_plan *p)
{
	struct bclient c;
	bc_init(&c, env.token);
	char(*sessions)[BENCH_UUID_LEN + 1] = calloc((size_t)o->sessions, sizeof(*sessions));
	p->njobs = o->jobs;
	p->bodies = calloc((size_t)o->jobs, sizeof(*p->bodies));
	p->urls = calloc((size_t)o->jobs, sizeof(*p->urls));
	p->job_ids = calloc((size_t)o->jobs, sizeof(*p->job_ids));
	p->post_s = calloc((size_t)o->jobs, sizeof(*p->post_s));
	pthread_t *threads = calloc((size_t)o->clients, sizeof(*threads));
	if (!sessions || !p->bodies || !p->urls || !p->job_ids || !p->post_s || !threads)
		bench_die("out of memory");
	for (int s = 0; s < o->sessions; s++)
		make_session(&c, sessions[s]);
	bc_free(&c);
	for (int i = 0; i < o->jobs; i++) {
		p->bodies[i] = job_body(i, o->tasks);
		snprintf(p->urls[i], sizeof(p->urls[i]), "%s/v1/sessions/%s/people/bulk", env.api,
		         sessions[i % o->sessions]);
	}
	pthread_mutex_init(&p->mu, NULL);
	p->next = 0;
	p->last_202 = 0;
	double start = bench_now();
	for (int t = 0; t < o->clients; t++) {
		if (pthread_create(&threads[t], NULL, post_client, p) != 0)
			bench_die("pthread_create failed");
	}
	for (int t = 0; t < o->clients; t++)
		pthread_join(threads[t], NULL);
	free(threads);
	free(sessions);
	return start;
}

static void post_plan_free(struct post_plan *p)
{
	for (int i = 0; i < p->njobs; i++)
		free(p->bodies[i]);
	free(p->bodies);
	free(p->urls);
	free(p->job_ids);
	free(p->post_s);
	pthread_mutex_destroy(&p->mu);
}

/* Prints the outcome counts of the jobs; returns how many tasks did not succeed. */
static long report_outcomes(PGconn *db, const char *ids)
{
	const char *params[] = {ids};
	PGresult *res =
	    bench_sql(db,
	              "SELECT coalesce(sum(total_success), 0), coalesce(sum(total_fail),"
	              " 0), count(*) FILTER (WHERE status <> 'ended') FROM jobs"
	              " WHERE id = ANY ($1::uuid[])",
	              1, params);
	long ok = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	long failed = strtol(PQgetvalue(res, 0, 1), NULL, 10);
	long not_ended = strtol(PQgetvalue(res, 0, 2), NULL, 10);
	PQclear(res);
	printf("succeeded=%ld\nfailed=%ld\n", ok, failed);
	if (failed || not_ended)
		bench_log("warning: %ld task(s) failed, %ld job(s) not `ended`", failed, not_ended);
	return failed;
}

/* A run of jobs: posted by post_jobs, then watched until all are terminal. */
struct job_run {
	struct post_plan plan;
	char *ids;    /* "{id,...}" of the jobs, for SQL */
	double start; /* the first POST */
	double end;   /* every job terminal */
};

static void run_jobs(const struct opts *o, PGconn *db, struct job_run *run)
{
	memset(run, 0, sizeof(*run));
	run->start = post_jobs(o, &run->plan);
	run->ids = id_array(run->plan.job_ids, run->plan.njobs);
	run->end = bench_wait_jobs(db, run->ids, POLL_MS, o->timeout_s);
}

static void job_run_free(struct job_run *run)
{
	free(run->ids);
	post_plan_free(&run->plan);
}

/* o, reduced to one job into one session from one client. */
static struct opts one_job(const struct opts *o)
{
	struct opts one = *o;
	one.jobs = 1;
	one.sessions = 1;
	one.clients = 1;
	return one;
}

/* ---- scenarios ---- */

/*
 * warmup: o->jobs jobs through the whole pipeline, each into a session of
 * its own, then wait for them. scripts/bench runs it, untimed and outside
 * its CPU accounting, before a throughput or latency scenario: every
 * consumer's database connection has then compiled the registration
 * functions and planned their statements, as in a deployment that has run
 * for a while (pgbench's connections warm up within its first second).
 */
static void scenario_warmup(const struct opts *o)
{
	PGconn *db = bench_db(env.db_url);
	struct job_run run;
	run_jobs(o, db, &run);
	job_run_free(&run);
	PQfinish(db);
}

/* spread and hot: throughput of the whole pipeline, first POST to last job terminal. */
static void scenario_throughput(const struct opts *o)
{
	PGconn *db = bench_db(env.db_url);
	bench_log("%s: %d jobs x %d tasks over %d session(s), %d clients", o->scenario, o->jobs,
	          o->tasks, o->sessions, o->clients);
	struct job_run run;
	run_jobs(o, db, &run);
	double elapsed = run.end - run.start;
	long tasks = (long)o->jobs * o->tasks;
	printf("tasks=%ld\nelapsed_s=%.3f\nrate=%.1f\n", tasks, elapsed, (double)tasks / elapsed);
	printf("intake_s=%.3f\npost_p50_ms=%.1f\n", run.plan.last_202 - run.start,
	       1000 * bench_median(run.plan.post_s, (size_t)run.plan.njobs));
	report_outcomes(db, run.ids);
	job_run_free(&run);
	PQfinish(db);
}

/* intake: POST throughput alone (the workers are stopped by scripts/bench). */
static void scenario_intake(const struct opts *o)
{
	struct post_plan p;
	memset(&p, 0, sizeof(p));
	bench_log("intake: %d jobs x %d tasks over %d session(s), %d clients", o->jobs, o->tasks,
	          o->sessions, o->clients);
	double start = post_jobs(o, &p);
	double elapsed = p.last_202 - start;
	long tasks = (long)o->jobs * o->tasks;
	printf("tasks=%ld\nelapsed_s=%.3f\nrate=%.1f\njobs_per_s=%.1f\npost_p50_ms=%.1f\n", tasks,
	       elapsed, (double)tasks / elapsed, o->jobs / elapsed,
	       1000 * bench_median(p.post_s, (size_t)p.njobs));
	post_plan_free(&p);
}

/* latency: POST -> job.ended at a local receiver, one job at a time. */
static void scenario_latency(const struct opts *o)
{
	brecv *rc = brecv_start();
	struct bclient c;
	bc_init(&c, env.token);
	char url[512], body[1024], sid[BENCH_UUID_LEN + 1], job_id[BENCH_UUID_LEN + 1];
	char hook_id[BENCH_UUID_LEN + 1];
	snprintf(url, sizeof(url), "%s/v1/webhooks", env.api);
	snprintf(body, sizeof(body),
	         "{\"data\":{\"type\":\"webhooks\",\"attributes\":{\"url\":\"%s\","
	         "\"events\":[\"job.ended\"]}}}",
	         brecv_url(rc));
	json_t *hook = bc_expect(&c, "POST", url, body, 201);
	bench_data_id(hook, hook_id);
	json_decref(hook);
	make_session(&c, sid);
	snprintf(url, sizeof(url), "%s/v1/sessions/%s/people/bulk", env.api, sid);
	double *lat = calloc((size_t)o->runs, sizeof(*lat));
	double *post = calloc((size_t)o->runs, sizeof(*post));
	if (!lat || !post)
		bench_die("out of memory");
	bench_log("latency: %d x one job of %d tasks, POST -> job.ended", o->runs, o->tasks);
	for (int i = 0; i < o->runs; i++) {
		char *jb = job_body(i, o->tasks);
		bench_sleep_ms(LATENCY_IDLE_MS);
		double t0 = bench_now();
		json_t *doc = bc_expect(&c, "POST", url, jb, 202);
		post[i] = bench_now() - t0;
		bench_data_id(doc, job_id);
		json_decref(doc);
		double at = brecv_wait(rc, job_id, o->timeout_s);
		if (at < 0)
			bench_die("no job.ended for job %s within %.0f s", job_id, o->timeout_s);
		lat[i] = 1000 * (at - t0);
		post[i] *= 1000;
		free(jb);
	}
	double mn = lat[0], mx = lat[0];
	for (int i = 1; i < o->runs; i++) {
		mn = lat[i] < mn ? lat[i] : mn;
		mx = lat[i] > mx ? lat[i] : mx;
	}
	printf("runs=%d\nlatency_ms=%.1f\nlatency_min_ms=%.1f\nlatency_max_ms=%.1f\n", o->runs,
	       bench_median(lat, (size_t)o->runs), mn, mx);
	printf("post_p50_ms=%.1f\n", bench_median(post, (size_t)o->runs));
	free(lat);
	free(post);
	/*
	 * The receiver goes away now: an endpoint left behind would make every
	 * later job.ended of this organization a failing delivery, retried
	 * inside the next scenarios' measurements.
	 */
	snprintf(url, sizeof(url), "%s/v1/webhooks/%s", env.api, hook_id);
	json_decref(bc_expect(&c, "DELETE", url, NULL, 200));
	bc_free(&c);
	brecv_stop(rc);
}

/* reads: one finished job for wrk and pgbench to read. */
static void scenario_reads(const struct opts *o)
{
	PGconn *db = bench_db(env.db_url);
	struct opts one = one_job(o);
	struct job_run run;
	run_jobs(&one, db, &run);
	const char *job = run.plan.job_ids[0];
	PGresult *res = bench_sql(db, "SELECT organization_id FROM jobs WHERE id = $1", 1, &job);
	printf("job_id=%s\norg_id=%s\n", job, PQgetvalue(res, 0, 0));
	PQclear(res);
	job_run_free(&run);
	PQfinish(db);
}

/* Median milliseconds of n GETs of url (after one unmeasured warm-up). */
static double get_median_ms(struct bclient *c, const char *url, int n, long expect)
{
	double *v = calloc((size_t)n, sizeof(*v));
	if (!v)
		bench_die("out of memory");
	json_decref(bc_expect(c, "GET", url, NULL, expect));
	for (int i = 0; i < n; i++) {
		double t = bench_now();
		long st = bc_request(c, "GET", url, NULL);
		v[i] = 1000 * (bench_now() - t);
		if (st != expect)
			bench_die("GET %s: HTTP %ld %s", url, st, c->error);
	}
	double m = bench_median(v, (size_t)n);
	free(v);
	return m;
}

/* growth: one large job; intake, end-to-end rate, first vs last page of tasks. */
static void scenario_growth(const struct opts *o)
{
	PGconn *db = bench_db(env.db_url);
	struct opts one = one_job(o);
	bench_log("growth: one job of %d tasks", o->tasks);
	struct job_run run;
	run_jobs(&one, db, &run);
	double elapsed = run.end - run.start;
	printf("tasks=%d\nintake_s=%.3f\nelapsed_s=%.3f\nrate=%.1f\n", o->tasks,
	       run.plan.last_202 - run.start, elapsed, o->tasks / elapsed);
	report_outcomes(db, run.ids);

	struct bclient c;
	bc_init(&c, env.token);
	int last = (o->tasks + PAGE_SIZE - 1) / PAGE_SIZE - 1;
	char url0[512], urln[512];
	snprintf(url0, sizeof(url0), "%s/v1/jobs/%s/tasks?page[number]=0&page[size]=%d", env.api,
	         run.plan.job_ids[0], PAGE_SIZE);
	snprintf(urln, sizeof(urln), "%s/v1/jobs/%s/tasks?page[number]=%d&page[size]=%d", env.api,
	         run.plan.job_ids[0], last, PAGE_SIZE);
	/* Interleaved halves, so drift in machine load hits both pages alike. */
	double a1 = get_median_ms(&c, url0, o->requests / 2, 207);
	double b1 = get_median_ms(&c, urln, o->requests / 2, 207);
	double b2 = get_median_ms(&c, urln, o->requests / 2, 207);
	double a2 = get_median_ms(&c, url0, o->requests / 2, 207);
	double first = (a1 + a2) / 2, lastms = (b1 + b2) / 2;
	printf("page0_ms=%.2f\nlast_page=%d\nlast_page_ms=%.2f\npage_ratio=%.2f\n", first, last,
	       lastms, lastms / first);
	bc_free(&c);
	job_run_free(&run);
	PQfinish(db);
}

/* ---- main ---- */

static void usage(void)
{
	fputs("usage: bulkreg-bench spread|hot|latency|intake|reads|growth|warmup [--jobs N] "
	      "[--tasks N]\n"
	      "       [--sessions N] [--clients N] [--runs N] [--requests N] [--timeout S]\n"
	      "environment: API_URL, DATABASE_URL, BULKREG_TOKEN\n",
	      stderr);
	exit(2);
}

/* Defaults: the sizes of issue 7; options override them. */
static void defaults(struct opts *o)
{
	const char *s = o->scenario;
	o->tasks = 50;
	o->clients = 4;
	o->runs = 11;
	o->requests = 40;
	o->timeout_s = 600;
	if (strcmp(s, "spread") == 0) {
		o->jobs = 100;
		o->sessions = 100;
	} else if (strcmp(s, "hot") == 0) {
		o->jobs = 10;
		o->sessions = 1;
	} else if (strcmp(s, "warmup") == 0) {
		o->jobs = 8;
		o->sessions = 8;
	} else if (strcmp(s, "intake") == 0) {
		o->jobs = 200;
		o->sessions = 100;
		o->clients = 8;
	} else if (strcmp(s, "growth") == 0) {
		o->jobs = 1;
		o->sessions = 1;
		o->tasks = 10000;
	} else if (strcmp(s, "latency") == 0 || strcmp(s, "reads") == 0) {
		o->jobs = 1;
		o->sessions = 1;
	} else {
		usage();
	}
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	struct opts o = {.scenario = argv[1]};
	defaults(&o);
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--jobs") == 0)
			o.jobs = parse_int(a, v, 1, 100000);
		else if (strcmp(a, "--tasks") == 0)
			o.tasks = parse_int(a, v, 1, 1000000);
		else if (strcmp(a, "--sessions") == 0)
			o.sessions = parse_int(a, v, 1, 100000);
		else if (strcmp(a, "--clients") == 0)
			o.clients = parse_int(a, v, 1, 256);
		else if (strcmp(a, "--runs") == 0)
			o.runs = parse_int(a, v, 1, 10000);
		else if (strcmp(a, "--requests") == 0)
			o.requests = parse_int(a, v, 2, 100000);
		else if (strcmp(a, "--timeout") == 0)
			o.timeout_s = parse_int(a, v, 1, 86400);
		else
			usage();
		i++;
	}
	env.api = need_env("API_URL");
	env.db_url = need_env("DATABASE_URL");
	env.token = need_env("BULKREG_TOKEN");
	snprintf(env.tag, sizeof(env.tag), "b%ld-%lld", (long)getpid(),
	         (long long)(bench_now() * 1000));

	const char *s = o.scenario;
	if (strcmp(s, "spread") == 0 || strcmp(s, "hot") == 0)
		scenario_throughput(&o);
	else if (strcmp(s, "warmup") == 0)
		scenario_warmup(&o);
	else if (strcmp(s, "intake") == 0)
		scenario_intake(&o);
	else if (strcmp(s, "latency") == 0)
		scenario_latency(&o);
	else if (strcmp(s, "reads") == 0)
		scenario_reads(&o);
	else
		scenario_growth(&o);
	/* The load generator's own CPU, so scripts/bench can show its share. */
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		printf("client_cpu_ms=%.0f\n",
		       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
		           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000);
	fflush(stdout);
	return 0;
}
