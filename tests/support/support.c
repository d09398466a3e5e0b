/*
 * support.c - environment, database and polling helpers of the test suite
 * (see support.h).
 *
 * Owns one piece of global state: whether this process has migrated the
 * schema (behind a mutex). Everything else works on caller-owned memory and
 * is safe to call from several threads, except where Criterion's assertions
 * are used from a thread that is not the test's (they abort the test).
 */
#include "support.h"

#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "crypto.h"
#include "db.h"
#include "migrate.h"
#include "mq.h"
#include "taskmsg.h"

#define T_MIGRATE_TIMEOUT_MS 600000
#define T_POLL_STEP_MS       20

static pthread_mutex_t migrate_mu = PTHREAD_MUTEX_INITIALIZER;
static bool migrated;

const char *t_database_url(void)
{
	const char *v = getenv("DATABASE_URL");
	if (!v || !*v)
		cr_assert_fail(
		    "DATABASE_URL is not set: run the tests through scripts/test, or export "
		    "the URLs of a running stack (.local/env)");
	return v;
}

const char *t_amqp_url(void)
{
	const char *v = getenv("AMQP_URL");
	if (!v || !*v)
		cr_assert_fail("AMQP_URL is not set: run the tests through scripts/test, or export "
		               "the URLs of a running stack (.local/env)");
	return v;
}

/*
 * Applies the embedded migrations and function files to url: how many ran
 * (the two together) into *applied, an error into why.
 */
static br_status migrate_url(const char *url, int *applied, char why[256])
{
	db_conn *c = NULL;
	static const struct db_opts opts = {.statement_timeout_ms = T_MIGRATE_TIMEOUT_MS};
	struct migrate_counts n = {0};
	why[0] = '\0';
	br_status st = db_open(url, &opts, false, &c);
	if (st == BR_OK)
		st = migrate_run(c, &migrate_embedded_set, &n, why, 256);
	else
		snprintf(why, 256, "cannot connect");
	if (st == BR_OK)
		*applied = n.schema + n.functions;
	db_close(c);
	return st;
}

/* Applies the embedded migrations once per process. */
static void t_migrate_once(const char *url)
{
	pthread_mutex_lock(&migrate_mu);
	if (migrated) {
		pthread_mutex_unlock(&migrate_mu);
		return;
	}
	int applied = 0;
	char why[256];
	br_status st = migrate_url(url, &applied, why);
	migrated = st == BR_OK;
	pthread_mutex_unlock(&migrate_mu);
	cr_assert(st == BR_OK, "migrating %s failed: %s (%s)", url, br_strerror(st), why);
}

int t_migrate(const char *url)
{
	int applied = -1;
	char why[256];
	br_status st = migrate_url(url, &applied, why);
	cr_assert(st == BR_OK, "migrating %s failed: %s (%s)", url, br_strerror(st), why);
	return applied;
}

PGconn *t_db(void)
{
	const char *url = t_database_url();
	t_migrate_once(url);
	PGconn *db = PQconnectdb(url);
	cr_assert(db && PQstatus(db) == CONNECTION_OK, "cannot connect to %s: %s", url,
	          db ? PQerrorMessage(db) : "out of memory");
	PQclear(PQexec(db, "SET client_min_messages = warning"));
	return db;
}

/* ---- throwaway databases ---- */

#define T_SCRATCH_MAX 4

static char scratch_name[T_SCRATCH_MAX][64];

void t_url_with_database(const char *url, const char *name, char *out, size_t cap)
{
	const char *scheme = strstr(url, "://");
	cr_assert_not_null(scheme, "DATABASE_URL is not a URI: %s", url);
	const char *path = strchr(scheme + 3, '/');
	const char *query = strchr(scheme + 3, '?');
	if (path && query && query < path)
		path = NULL;
	size_t head = path ? (size_t)(path - url) : (query ? (size_t)(query - url) : strlen(url));
	const char *tail = query ? query : "";
	int n = snprintf(out, cap, "%.*s/%s%s", (int)head, url, name, tail);
	cr_assert(n > 0 && (size_t)n < cap, "URL too long");
}

static void scratch_sql(PGconn *db, const char *verb, const char *name, const char *suffix)
{
	char *ident = PQescapeIdentifier(db, name, strlen(name));
	cr_assert_not_null(ident, "%s", PQerrorMessage(db));
	char sql[256];
	snprintf(sql, sizeof(sql), "%s %s%s", verb, ident, suffix);
	PQfreemem(ident);
	PQclear(t_sql(db, sql, 0, NULL));
}

void t_scratch_create(char *url, size_t cap)
{
	int i = 0;
	while (i < T_SCRATCH_MAX && scratch_name[i][0])
		i++;
	cr_assert_lt(i, T_SCRATCH_MAX, "more than %d throwaway databases", T_SCRATCH_MAX);
	PGconn *db = t_db();
	snprintf(scratch_name[i], sizeof(scratch_name[i]), "bulkreg_t_scratch_%ld_%lld_%d",
	         (long)getpid(), t_now_ms(), i);
	scratch_sql(db, "CREATE DATABASE", scratch_name[i], "");
	PQfinish(db);
	t_url_with_database(t_database_url(), scratch_name[i], url, cap);
}

void t_scratch_drop_all(void)
{
	PGconn *db = t_db();
	for (int i = 0; i < T_SCRATCH_MAX; i++) {
		if (scratch_name[i][0])
			scratch_sql(db, "DROP DATABASE IF EXISTS", scratch_name[i],
			            " WITH (FORCE)");
		scratch_name[i][0] = '\0';
	}
	PQfinish(db);
}

PGresult *t_sql(PGconn *db, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = PQexecParams(db, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
		char msg[512];
		snprintf(msg, sizeof(msg), "%s",
		         res ? PQresultErrorMessage(res) : PQerrorMessage(db));
		PQclear(res);
		cr_assert_fail("SQL failed: %s\n  statement: %s", msg, sql);
	}
	return res;
}

long t_sql_long(PGconn *db, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = t_sql(db, sql, nparams, params);
	bool present = PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0);
	char text[64] = "";
	if (present)
		snprintf(text, sizeof(text), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	cr_assert(present, "no value from: %s", sql);
	errno = 0;
	char *end = NULL;
	long v = strtol(text, &end, 10);
	cr_assert(errno == 0 && end != text && *end == '\0', "not an integer (%s) from: %s", text,
	          sql);
	return v;
}

char *t_sql_text(PGconn *db, const char *sql, int nparams, const char *const *params)
{
	PGresult *res = t_sql(db, sql, nparams, params);
	bool present = PQntuples(res) > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0);
	char *s = present ? strdup(PQgetvalue(res, 0, 0)) : NULL;
	PQclear(res);
	cr_assert(present, "no value from: %s", sql);
	cr_assert_not_null(s, "out of memory");
	return s;
}

void t_uuid(char out[37])
{
	unsigned char b[16];
	cr_assert(cr_random(b, sizeof(b)) == BR_OK, "no random bytes");
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	char hex[33];
	cr_hex(b, sizeof(b), hex);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
}

void t_unique_name(char *out, size_t cap, const char *prefix)
{
	static unsigned long counter;
	unsigned long n = __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST);
	unsigned char r[4];
	cr_assert(cr_random(r, sizeof(r)) == BR_OK, "no random bytes");
	char hex[9];
	cr_hex(r, sizeof(r), hex);
	int len =
	    snprintf(out, cap, "%s-%ld-%lld-%lu-%s", prefix, (long)getpid(), t_now_ms(), n, hex);
	cr_assert(len > 0 && (size_t)len < cap, "name buffer too small");
}

/* The last non-empty line of text, copied into out; false when none. */
static bool last_line(const char *text, char *out, size_t cap)
{
	const char *end = text + strlen(text);
	while (end > text && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' '))
		end--;
	const char *start = end;
	while (start > text && start[-1] != '\n')
		start--;
	size_t n = (size_t)(end - start);
	if (n == 0 || n >= cap)
		return false;
	memcpy(out, start, n);
	out[n] = '\0';
	return true;
}

void t_session_sql(PGconn *db, const char *org, const char *title, char sid[37])
{
	const char *p[] = {org, title};
	PGresult *res = t_sql(
	    db, "INSERT INTO sessions (organization_id, title) VALUES ($1, $2) RETURNING id", 2, p);
	snprintf(sid, 37, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
}

void t_job_sql(PGconn *db, const char *org, const char *sid, int n, char job[37])
{
	char count[16];
	snprintf(count, sizeof(count), "%d", n);
	const char *p[] = {org, sid, count};
	PGresult *res =
	    t_sql(db,
	          "SELECT job_id FROM create_job($1, $2, 'register', false, false, false,"
	          " (SELECT jsonb_agg(jsonb_build_object('email', 'p' || g || '@example.com',"
	          "   'first_name', 'P', 'last_name', 'L'))"
	          "  FROM generate_series(1, $3::int) g))",
	          3, p);
	cr_assert_eq(PQntuples(res), 1, "create_job made no job (session %s of %s?)", sid, org);
	snprintf(job, 37, "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
}

void t_org_new(struct t_org *org)
{
	memset(org, 0, sizeof(*org));
	t_unique_name(org->name, sizeof(org->name), "t-org");
	char out[4096];
	const char *args[] = {"token", "create", "--org", org->name, NULL};
	int rc = t_admin(out, sizeof(out), args);
	cr_assert_eq(rc, 0, "bulkreg-admin token create --org %s exited %d:\n%s", org->name, rc,
	             out);
	cr_assert(last_line(out, org->token, sizeof(org->token)),
	          "no token on the last line of bulkreg-admin's output:\n%s", out);

	PGconn *db = t_db();
	const char *params[] = {org->name};
	PGresult *res = t_sql(db, "SELECT id FROM organizations WHERE name = $1", 1, params);
	bool found = PQntuples(res) == 1;
	if (found)
		snprintf(org->id, sizeof(org->id), "%s", PQgetvalue(res, 0, 0));
	PQclear(res);
	PQfinish(db);
	cr_assert(found, "organization %s was not created", org->name);
}

/*
 * One violation per row: the job's (or session's) id followed by what it
 * holds and what its tasks (people) say. All statements read one snapshot
 * each, so work committed concurrently cannot make a consistent job look
 * inconsistent.
 */
static const char sql_job_counters[] =
    "SELECT j.id, j.status, j.total_success, j.total_fail, j.total_cancelled,"
    "       j.total_processed_items,"
    "       count(t.id) FILTER (WHERE t.status = 'succeeded'),"
    "       count(t.id) FILTER (WHERE t.status = 'failed'),"
    "       count(t.id) FILTER (WHERE t.status = 'cancelled')"
    "  FROM jobs j LEFT JOIN tasks t ON t.job_id = j.id"
    " GROUP BY j.id"
    " HAVING j.total_success <> count(t.id) FILTER (WHERE t.status = 'succeeded')"
    "     OR j.total_fail <> count(t.id) FILTER (WHERE t.status = 'failed')"
    "     OR j.total_cancelled <> count(t.id) FILTER (WHERE t.status = 'cancelled')"
    "     OR j.total_processed_items <> j.total_success + j.total_fail + j.total_cancelled"
    " ORDER BY j.id LIMIT 20";

static const char sql_session_counters[] =
    "SELECT s.id, s.capacity, s.registrants_count, s.waitlist_count, s.pending_count,"
    "       count(p.id) FILTER (WHERE p.registration_status = 'registered'),"
    "       count(p.id) FILTER (WHERE p.registration_status = 'waitlisted'),"
    "       count(p.id) FILTER (WHERE p.registration_status = 'pending_approval')"
    "  FROM sessions s LEFT JOIN people p ON p.session_id = s.id"
    " GROUP BY s.id"
    " HAVING s.registrants_count <> count(p.id) FILTER (WHERE p.registration_status ="
    "        'registered')"
    "     OR s.waitlist_count <> count(p.id) FILTER (WHERE p.registration_status ="
    "        'waitlisted')"
    "     OR s.pending_count <> count(p.id) FILTER (WHERE p.registration_status ="
    "        'pending_approval')"
    "     OR (s.capacity IS NOT NULL AND count(p.id) FILTER (WHERE p.registration_status IN"
    "         ('registered', 'pending_approval')) > s.capacity)"
    "     OR s.people_count <> count(p.id)"
    "     OR count(DISTINCT p.waitlist_seq) <> count(p.id) FILTER (WHERE"
    "        p.registration_status = 'waitlisted')"
    "     OR max(p.waitlist_seq) > s.waitlist_seq"
    " ORDER BY s.id LIMIT 20";

void t_check_invariants(PGconn *db)
{
	PGresult *res = t_sql(db, sql_job_counters, 0, NULL);
	int bad_jobs = PQntuples(res);
	for (int i = 0; i < bad_jobs; i++) {
		cr_expect(false,
		          "job %s (%s) breaks its counters: total_success %s, total_fail %s, "
		          "total_cancelled %s, total_processed_items %s; its tasks: %s "
		          "succeeded, %s failed, %s cancelled",
		          PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), PQgetvalue(res, i, 2),
		          PQgetvalue(res, i, 3), PQgetvalue(res, i, 4), PQgetvalue(res, i, 5),
		          PQgetvalue(res, i, 6), PQgetvalue(res, i, 7), PQgetvalue(res, i, 8));
	}
	PQclear(res);

	res = t_sql(db, sql_session_counters, 0, NULL);
	int bad_sessions = PQntuples(res);
	for (int i = 0; i < bad_sessions; i++) {
		const char *cap = PQgetisnull(res, i, 1) ? "unlimited" : PQgetvalue(res, i, 1);
		cr_expect(false,
		          "session %s (capacity %s) breaks its counters or capacity: "
		          "registrants_count %s, waitlist_count %s, pending_count %s; its people: "
		          "%s registered, %s waitlisted, %s pending_approval",
		          PQgetvalue(res, i, 0), cap, PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
		          PQgetvalue(res, i, 4), PQgetvalue(res, i, 5), PQgetvalue(res, i, 6),
		          PQgetvalue(res, i, 7));
	}
	PQclear(res);
	cr_assert(bad_jobs == 0 && bad_sessions == 0,
	          "invariants broken: %d job(s), %d session(s) (listed above; at most 20 each)",
	          bad_jobs, bad_sessions);
}

bool t_waits_for_lock(void *ctx)
{
	char pid[16];
	snprintf(pid, sizeof(pid), "%d", PQbackendPID(ctx));
	const char *p[] = {pid};
	PGconn *probe = t_db();
	long n = t_sql_long(probe,
	                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int"
	                    " AND wait_event_type = 'Lock'",
	                    1, p);
	PQfinish(probe);
	return n == 1;
}

bool t_poll(bool (*cond)(void *ctx), void *ctx, int timeout_ms)
{
	long long deadline = t_now_ms() + timeout_ms;
	for (;;) {
		if (cond(ctx))
			return true;
		long long left = deadline - t_now_ms();
		if (left <= 0)
			return false;
		long step = left < T_POLL_STEP_MS ? (long)left : T_POLL_STEP_MS;
		struct timespec ts = {0, step * 1000000L};
		nanosleep(&ts, NULL);
	}
}

int t_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	struct sockaddr_in a;
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = 0;
	socklen_t len = sizeof(a);
	int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	         getsockname(fd, (struct sockaddr *)&a, &len) == 0;
	int err = errno;
	close(fd);
	cr_assert(ok, "no free port: %s", strerror(err));
	return ntohs(a.sin_port);
}

/* Below Linux's ephemeral range (32768+), and below the scripts' fixed ports (28080+). */
#define QUIET_PORT_MIN 20000
#define QUIET_PORT_MAX 28000

int t_quiet_port(void)
{
	unsigned seed = (unsigned)t_now_ms() ^ (unsigned)getpid();
	for (int i = 0; i < 200; i++) {
		int port = QUIET_PORT_MIN + rand_r(&seed) % (QUIET_PORT_MAX - QUIET_PORT_MIN);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		cr_assert(fd >= 0, "socket");
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		struct sockaddr_in a;
		memset(&a, 0, sizeof(a));
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a.sin_port = htons((uint16_t)port);
		bool free_now = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (free_now)
			return port;
	}
	cr_assert_fail("no free port in %d-%d", QUIET_PORT_MIN, QUIET_PORT_MAX);
	return 0;
}

long long t_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void t_session_new(const char *base, const char *token, const char *attrs, char id[37])
{
	char url[256], body[2048];
	struct t_resp r;
	snprintf(url, sizeof(url), "%s/v1/sessions", base);
	snprintf(body, sizeof(body), "{\"data\":{\"type\":\"sessions\",\"attributes\":%s}}", attrs);
	t_http(&r, "POST", url, token, body, NULL);
	cr_assert_eq(r.status, 201, "session create: %ld %s", r.status, r.body);
	const char *sid = json_string_value(json_object_get(json_object_get(r.json, "data"), "id"));
	cr_assert_not_null(sid, "session create answered no id");
	snprintf(id, 37, "%s", sid);
	t_resp_free(&r);
}

void t_republish_job(PGconn *db, const char *job_id)
{
	const char *p[] = {job_id};
	PGresult *res = t_sql(db, "SELECT id FROM tasks WHERE job_id = $1 ORDER BY idx", 1, p);
	struct taskmsg_batch b;
	cr_assert_eq(taskmsg_batch_init(&b, (size_t)PQntuples(res)), BR_OK);
	for (int i = 0; i < PQntuples(res); i++)
		cr_assert_eq(taskmsg_batch_add(&b, PQgetvalue(res, i, 0), job_id), BR_OK);
	mq_conn *mq = NULL;
	cr_assert_eq(mq_open(t_amqp_url(), &(struct mq_opts){0}, &mq), BR_OK);
	cr_assert_eq(mq_publish(mq, MQ_EXCHANGE, MQ_ROUTE_TASKS, b.msgs, b.n, 10000), BR_OK);
	mq_close(mq);
	taskmsg_batch_free(&b);
	PQclear(res);
}

bool t_tasks_queue_empty(void *ctx)
{
	(void)ctx;
	mq_conn *mq = NULL;
	uint32_t msgs = 1, consumers = 0;
	if (mq_open(t_amqp_url(), &(struct mq_opts){0}, &mq) != BR_OK)
		return false;
	bool ok = mq_queue_stats(mq, MQ_QUEUE_TASKS, &msgs, &consumers) == BR_OK && msgs == 0;
	mq_close(mq);
	return ok;
}

long t_rss_kib(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	long kib = -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "VmRSS:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	}
	fclose(f);
	cr_assert(kib > 0);
	return kib;
}
