/*
 * test_hostile.c - the API's HTTP layer against hostile clients and
 * blocking handlers (docs/operations.md, "Limits against hostile
 * clients"), through the real bulkreg-api over plain sockets:
 *
 * - handlers blocked on a database lock stall only their own requests:
 *   other connections keep being answered, and a blocked request is
 *   answered (then its job is committed) or not run, never cut;
 * - an early answer (413) reaches a client that sends its whole body
 *   before reading;
 * - the budget of request bodies held at once bounds memory;
 * - slowloris from many addresses and idle keep-alive connections from
 *   one address do not lock a new client out.
 *
 * Clients bind source addresses 127.0.0.2 and up to look like many hosts.
 * Every test starts its own API and makes its own organization.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "support.h"

#define MAX_BODY (1024 * 1024) /* BULKREG_MAX_BODY_BYTES's default */

static struct t_proc api;
static struct t_org org;
static PGconn *db;
static char base[64];

static void setup(void)
{
	memset(&api, 0, sizeof(api));
	db = t_db();
	t_org_new(&org);
	/* Up to ~1,300 sockets at once. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

static void teardown(void)
{
	if (api.pid)
		t_proc_stop(&api, SIGTERM, 20000);
	PQfinish(db);
}

TestSuite(hostile, .init = setup, .fini = teardown, .timeout = 300);

static void start_api(const char *const *env)
{
	t_api_start(&api, env);
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", api.port);
}

static void stop_clean(void)
{
	if (api.pid)
		cr_assert_eq(t_proc_stop(&api, SIGTERM, 20000), 0, "bulkreg-api exit status");
}

/* A connection to the API from 127.0.0.<host> (1: the default); -1 on failure. */
static int connect_from(int host)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	struct sockaddr_in a = {.sin_family = AF_INET};
	if (host != 1) {
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + (uint32_t)(host - 1));
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
			close(fd);
			return -1;
		}
	}
	a.sin_port = htons((uint16_t)api.port);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int must_connect(int host)
{
	int fd = connect_from(host);
	cr_assert(fd >= 0, "connect from 127.0.0.%d: %s", host, strerror(errno));
	return fd;
}

static bool send_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return false;
		p += k;
		n -= (size_t)k;
	}
	return true;
}

/*
 * Reads one response into reply (NUL-terminated) within timeout_ms: its
 * status, 0 when the connection closed or the time ran out first.
 */
static int read_response(int fd, char *reply, size_t cap, int timeout_ms)
{
	size_t len = 0;
	long long deadline = t_now_ms() + timeout_ms;
	reply[0] = '\0';
	for (;;) {
		char *end = strstr(reply, "\r\n\r\n");
		if (end) {
			size_t want = (size_t)(end + 4 - reply);
			*end = '\0';
			const char *cl = strcasestr(reply, "\r\nContent-Length:");
			if (cl)
				want += strtoul(cl + 17, NULL, 10);
			*end = '\r';
			if (len >= want || len + 1 >= cap)
				return (int)strtol(reply + 9, NULL, 10);
		}
		long long left = deadline - t_now_ms();
		if (left <= 0 || len + 1 >= cap)
			return 0;
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		ssize_t n = recv(fd, reply + len, cap - 1 - len, 0);
		if (n <= 0)
			return 0;
		len += (size_t)n;
		reply[len] = '\0';
	}
}

/* Sends a request with an optional JSON body; the response's status (0: none). */
static int exchange(int fd, const char *method, const char *path, const char *body, char *reply,
                    size_t cap, int timeout_ms)
{
	char head[512];
	size_t blen = body ? strlen(body) : 0;
	int hl = snprintf(head, sizeof(head),
	                  "%s %s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
	                  "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
	                  method, path, org.token, blen);
	if (!send_all(fd, head, (size_t)hl) || (blen && !send_all(fd, body, blen)))
		return 0;
	return read_response(fd, reply, cap, timeout_ms);
}

static void make_session(char sid[37])
{
	t_session_new(base, org.token, "{\"title\":\"H\"}", sid);
}

static long jobs_of_session(const char *sid)
{
	const char *p[] = {sid};
	return t_sql_long(db, "SELECT count(*) FROM jobs WHERE session_id = $1", 1, p);
}

/* ---- blocking handlers ---- */

struct blocked_post {
	int fd;
	char path[128];
	char body[512];
	int status;
	char reply[4096];
};

static void *post_one(void *arg)
{
	struct blocked_post *b = arg;
	b->status = exchange(b->fd, "POST", b->path, b->body, b->reply, sizeof(b->reply), 30000);
	return NULL;
}

Test(hostile, blocked_handlers_stall_only_their_own_requests)
{
	/* Deadlines far shorter than the handlers' wait: none may cut them. */
	const char *env[] = {"BULKREG_RATE_LIMIT=0", "BULKREG_HTTP_HEADER_TIMEOUT_MS=1000",
	                     "BULKREG_HTTP_BODY_TIMEOUT_MS=1000", NULL};
	start_api(env);
	enum {
		KEPT = 40,   /* kept-alive connections, spread over MHD's threads */
		BLOCKED = 12 /* posts waiting for the lock: more than the DB pool */
	};
	char sid[37], reply[4096];
	make_session(sid);
	int kept[KEPT];
	for (int i = 0; i < KEPT; i++) {
		kept[i] = must_connect(1);
		cr_assert_eq(exchange(kept[i], "GET", "/healthz", NULL, reply, sizeof(reply), 5000),
		             200, "%s", reply);
	}
	/* A transaction holding jobs in SHARE mode: every job insert waits for it. */
	PGconn *locker = t_db();
	PQclear(t_sql(locker, "BEGIN", 0, NULL));
	PQclear(t_sql(locker, "LOCK TABLE jobs IN SHARE MODE", 0, NULL));
	struct blocked_post posts[BLOCKED];
	pthread_t th[BLOCKED];
	for (int i = 0; i < BLOCKED; i++) {
		posts[i].fd = must_connect(1);
		snprintf(posts[i].path, sizeof(posts[i].path), "/v1/sessions/%s/people/bulk", sid);
		snprintf(posts[i].body, sizeof(posts[i].body),
		         "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":["
		         "{\"attributes\":{\"email\":\"b%d@example.com\"}}]}}}",
		         i);
		cr_assert_eq(pthread_create(&th[i], NULL, post_one, &posts[i]), 0);
	}
	/* Wait until the database sees them waiting for the lock. */
	long long deadline = t_now_ms() + 10000;
	long waiting = 0;
	while (t_now_ms() < deadline) {
		waiting = t_sql_long(db,
		                     "SELECT count(*) FROM pg_locks WHERE NOT granted "
		                     "AND relation = 'jobs'::regclass",
		                     0, NULL);
		if (waiting >= 4)
			break;
		usleep(20000);
	}
	cr_assert_geq(waiting, 4, "the posts never waited for the lock");
	/* Every other connection is answered at once, whichever MHD thread it has. */
	long long t0 = t_now_ms(), slowest = 0;
	for (int i = 0; i < KEPT; i++) {
		long long t1 = t_now_ms();
		int st = exchange(kept[i], "GET", "/healthz", NULL, reply, sizeof(reply), 3000);
		cr_assert_eq(st, 200,
		             "kept-alive connection %d not served while handlers block: %s", i,
		             reply);
		if (t_now_ms() - t1 > slowest)
			slowest = t_now_ms() - t1;
	}
	cr_log_info("%d connections served in %lld ms (slowest %lld ms) while %ld handlers waited",
	            KEPT, t_now_ms() - t0, slowest, waiting);
	cr_assert_lt(slowest, 1000);
	/* Held past both deadlines, then released. */
	usleep(2500 * 1000);
	PQclear(t_sql(locker, "COMMIT", 0, NULL));
	PQfinish(locker);
	int accepted = 0;
	for (int i = 0; i < BLOCKED; i++) {
		pthread_join(th[i], NULL);
		cr_assert(posts[i].status == 202 || posts[i].status == 503,
		          "post %d: answered %d (0: cut unanswered): %s", i, posts[i].status,
		          posts[i].reply);
		accepted += posts[i].status == 202;
		close(posts[i].fd);
	}
	cr_log_info("%d of %d blocked posts accepted, the rest 503", accepted, BLOCKED);
	/* Answered or not run: exactly the accepted jobs exist. */
	cr_assert_eq(jobs_of_session(sid), accepted);
	cr_assert_gt(accepted, 0);
	for (int i = 0; i < KEPT; i++)
		close(kept[i]);
	stop_clean();
}

/* ---- early answers ---- */

Test(hostile, early_413_reaches_a_client_that_sends_its_whole_body_first)
{
	start_api(NULL);
	char sid[37], head[512];
	make_session(sid);
	size_t n = 2u << 20;
	char *body = malloc(n);
	cr_assert_not_null(body);
	memset(body, ' ', n);
	body[0] = '{';
	int hl = snprintf(head, sizeof(head),
	                  "POST /v1/sessions/%s/people/bulk HTTP/1.1\r\nHost: a\r\n"
	                  "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
	                  "Content-Length: %zu\r\n\r\n",
	                  sid, org.token, n);
	for (int i = 0; i < 10; i++) {
		int fd = must_connect(1);
		/* Blocking writes of everything, then the first read. */
		bool sent = send_all(fd, head, (size_t)hl) && send_all(fd, body, n);
		char reply[4096];
		int st = read_response(fd, reply, sizeof(reply), 10000);
		close(fd);
		cr_assert(sent, "try %d: sending failed (%s) before the answer could be read", i,
		          strerror(errno));
		cr_assert_eq(st, 413, "try %d: %s", i, reply);
		cr_assert_not_null(strstr(reply, "\"code\":\"payload_too_large\""), "%s", reply);
	}
	free(body);
	cr_assert_eq(jobs_of_session(sid), 0);
	stop_clean();
}

/* ---- the body budget ---- */

Test(hostile, stalled_bodies_stay_within_the_budget)
{
	const char *env[] = {"BULKREG_RATE_LIMIT=0", "BULKREG_HTTP_BODY_BUDGET_BYTES=16777216",
	                     NULL};
	start_api(env);
	enum {
		N = 512,
		HOSTS = 8 /* 64 connections each, under the per-address limit */
	};
	char sid[37], path[128], reply[4096];
	make_session(sid);
	snprintf(path, sizeof(path), "/v1/sessions/%s/people/bulk", sid);
	long before = t_rss_kib(api.pid);
	static int fds[N];
	char head[512];
	int hl = snprintf(head, sizeof(head),
	                  "POST %s HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer %s\r\n"
	                  "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
	                  path, org.token, MAX_BODY);
	size_t part = MAX_BODY - 1;
	char *body = malloc(part);
	cr_assert_not_null(body);
	memset(body, ' ', part);
	int sent_all = 0, refused = 0;
	for (int i = 0; i < N; i++) {
		fds[i] = must_connect(2 + i % HOSTS);
		struct timeval tv = {2, 0};
		setsockopt(fds[i], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		/* Everything but the last byte, then nothing. */
		if (send_all(fds[i], head, (size_t)hl) && send_all(fds[i], body, part))
			sent_all++;
	}
	free(body);
	/*
	 * The kernel takes a body whole before the server reads its head: wait
	 * for each connection's early answer (the admitted ones never answer).
	 */
	for (int i = 0; i < N; i++) {
		int st = read_response(fds[i], reply, sizeof(reply), 300);
		if (st == 503 && strstr(reply, "\"code\":\"unavailable\"") &&
		    strcasestr(reply, "Retry-After: 1"))
			refused++;
		else
			cr_assert_eq(st, 0, "connection %d: %s", i, reply);
	}
	long peak = t_rss_kib(api.pid);
	/* A well-behaved client is still served: a read, and a small write. */
	int fd = must_connect(40);
	int st = exchange(fd, "GET", "/healthz", NULL, reply, sizeof(reply), 5000);
	cr_assert_eq(st, 200, "%s", reply);
	st = exchange(fd, "POST", path,
	              "{\"data\":{\"type\":\"jobs\",\"attributes\":{\"tasks\":["
	              "{\"attributes\":{\"email\":\"w@example.com\"}}]}}}",
	              reply, sizeof(reply), 10000);
	cr_assert_eq(st, 202, "a small post during the flood: %s", reply);
	close(fd);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	cr_log_info("%d stalled bodies sent, %d answered 503 early; RSS %ld KiB before, %ld KiB "
	            "with them",
	            sent_all, refused, before, peak);
	cr_assert_geq(refused, N / 2, "too few bodies were refused: the budget did not apply");
	cr_assert_lt(peak - before, 96 * 1024, "RSS grew by %ld KiB", peak - before);
	stop_clean();
}

/* ---- slow and idle connections ---- */

Test(hostile, slowloris_from_many_addresses_does_not_lock_out_a_new_client)
{
	start_api(NULL);
	enum {
		N = 1200,
		HOSTS = 20
	};
	static int fds[N];
	const char *head = "GET /healthz HTTP/1.1\r\nHost: a\r\n";
	int open = 0;
	for (int i = 0; i < N; i++) {
		fds[i] = connect_from(2 + i % HOSTS);
		if (fds[i] >= 0 && send(fds[i], head, strlen(head), MSG_NOSIGNAL) > 0)
			open++;
	}
	cr_log_info("%d of %d slow connections opened", open, N);
	cr_assert_gt(open, 1024, "the attack did not reach the connection limit");
	/* The attack goes on (a header line per connection every second) while a client tries. */
	long long t0 = t_now_ms(), last_trickle = 0, worst = 0;
	int probes = 0;
	char reply[4096];
	while (t_now_ms() - t0 < 8000) {
		if (t_now_ms() - last_trickle >= 1000) {
			last_trickle = t_now_ms();
			for (int i = 0; i < N; i++) {
				if (fds[i] >= 0 &&
				    send(fds[i], "X-A: b\r\n", 8, MSG_NOSIGNAL) < 0) {
					close(fds[i]);
					fds[i] = connect_from(
					    2 + i % HOSTS); /* the attacker comes back */
					if (fds[i] >= 0)
						(void)!send(fds[i], head, strlen(head),
						            MSG_NOSIGNAL);
				}
			}
		}
		if (t_now_ms() - t0 < 1500)
			continue; /* every slow connection is older than the eviction age */
		long long t1 = t_now_ms();
		int st = 0;
		while (st != 200 && t_now_ms() - t1 < 10000) {
			int fd = connect_from(100);
			if (fd >= 0) {
				st = exchange(fd, "GET", "/healthz", NULL, reply, sizeof(reply),
				              3000);
				close(fd);
			}
		}
		long long took = t_now_ms() - t1;
		worst = took > worst ? took : worst;
		probes++;
		cr_assert_eq(st, 200, "a new client was locked out for %lld ms", took);
		usleep(200 * 1000);
	}
	for (int i = 0; i < N; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	cr_log_info("%d probes during the attack, the slowest served after %lld ms", probes, worst);
	cr_assert_gt(probes, 3);
	cr_assert_lt(worst, 2000, "a new client waited %lld ms", worst);
	stop_clean();
}

Test(hostile, idle_keepalive_connections_make_room_for_a_new_client)
{
	start_api(NULL);
	enum {
		PER_IP = 128 /* BULKREG_HTTP_MAX_CONNECTIONS_PER_IP's default */
	};
	static int fds[PER_IP];
	char reply[4096];
	for (int i = 0; i < PER_IP; i++) {
		fds[i] = must_connect(3);
		cr_assert_eq(exchange(fds[i], "GET", "/healthz", NULL, reply, sizeof(reply), 5000),
		             200, "connection %d: %s", i, reply);
	}
	usleep(1200 * 1000); /* older than the eviction age (HC_EVICT_AGE_MS) */
	int fresh[5];
	for (int i = 0; i < 5; i++) {
		/* Each stays open, so each one needs a slot of its own. */
		long long t1 = t_now_ms();
		fresh[i] = must_connect(3);
		int st = exchange(fresh[i], "GET", "/healthz", NULL, reply, sizeof(reply), 5000);
		cr_assert_eq(st, 200, "new connection %d from a full address: %s", i, reply);
		cr_assert_lt(t_now_ms() - t1, 1000);
	}
	for (int i = 0; i < 5; i++)
		close(fresh[i]);
	/* The oldest idle ones were closed to make room; the others still work. */
	int closed = 0, alive = 0;
	for (int i = 0; i < PER_IP; i++) {
		int st = exchange(fds[i], "GET", "/healthz", NULL, reply, sizeof(reply), 2000);
		st == 200 ? alive++ : closed++;
		close(fds[i]);
	}
	cr_log_info("%d idle connections closed to make room, %d still served", closed, alive);
	cr_assert_geq(closed, 5);
	cr_assert_geq(alive, PER_IP - 10);
	stop_clean();
}
