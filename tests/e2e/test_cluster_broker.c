/*
 * test_cluster_broker.c - a RabbitMQ cluster losing one node at a time
 * (docs/guarantees.md §5, docs/operations.md "Running on a RabbitMQ
 * cluster").
 *
 * A 3-node cluster is started beside the test stack (scripts/ctl cluster,
 * scripts/lib_mq_cluster.sh), its topology declared by bulkreg-admin
 * migrate once it formed (so bulkreg.tasks has 3 members), and the API and
 * two workers are given all three nodes in AMQP_URL. While jobs are
 * posted, the node of the API, the node of a worker and the queue's leader
 * are in turn stopped, killed (SIGKILL) and frozen (SIGSTOP): for each
 * fault the stall (from the fault until a job posted right after it has
 * completed) is printed and must stay far below a node's outage, and every
 * /readyz asked meanwhile answers within 2 s. The node then comes back
 * (restarted; a frozen one thawed, then restarted), a job posted at once
 * must not stall either, and the next fault waits until the cluster has
 * been whole (every node running, no partition, 3 members online) for 5 s.
 * Afterwards: 0 lost, 0 doubled, one job.ended per job, 3 members.
 *
 * The cluster is the test's own: .init starts it, .fini stops it, and it
 * does not touch the test stack's single broker.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "fleet.h"

#define NODES 3
/* A node's outage in this test lasts 15-40 s; a failover must cost far less. */
#define STALL_BOUND_MS  30000
#define READYZ_BOUND_MS 2000
/*
 * A node frozen at least this long: past every heartbeat and RPC timeout of
 * the clients and past the cluster's net_ticktime (10 s, lib_mq_cluster.sh),
 * so the others declare it down, as they would a hung host.
 */
#define FREEZE_MS       20000
#define RECOVER_MS      180000
#define PROBE_TASKS     50
#define LOAD_JOBS       22
#define LOAD_PACE_MS    10000
#define MGMT_TIMEOUT_MS 3000
#define TARGET_WAIT_MS  15000
#define STABLE_MS       5000

struct node {
	char name[128];
	int amqp_port, mgmt_port;
	long pid;
};

static struct node nodes[NODES];
static char amqp_urls[1024], mgmt_urls[512];

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* True while something accepts TCP connections on 127.0.0.1:port. */
static bool port_open(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cr_assert(fd >= 0, "socket: %s", strerror(errno));
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool open = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return open;
}

/* Runs scripts/ctl cluster ARGS; fatal unless it succeeds. */
static void cluster_ctl(const char *a, const char *b, char *out, size_t cap)
{
	const char *args[] = {"cluster", a, b, NULL};
	int rc = t_ctl_capture(args, out, cap);
	cr_assert_eq(rc, 0, "scripts/ctl cluster %s %s failed (%d): %s", a, b ? b : "", rc,
	             out ? out : "");
}

/* Reads the nodes' names, ports and pids (scripts/ctl cluster status). */
static void nodes_read(void)
{
	char out[2048] = "";
	cluster_ctl("status", NULL, out, sizeof(out));
	const char *p = out;
	for (int i = 0; i < NODES; i++) {
		int n = 0, used = 0;
		char pid[32];
		struct node *nd = &nodes[i];
		int got = sscanf(p, "%d %127s %d %d %31s%n", &n, nd->name, &nd->amqp_port,
		                 &nd->mgmt_port, pid, &used);
		cr_assert(got == 5 && n == i + 1, "unexpected cluster status: %s", out);
		nd->pid = strcmp(pid, "-") == 0 ? 0 : strtol(pid, NULL, 10);
		p += used;
	}
}

static void cluster_up(void)
{
	char out[4096] = "";
	cluster_ctl("start", NULL, NULL, 0);
	cluster_ctl("urls", NULL, out, sizeof(out));
	cr_assert_eq(sscanf(out, "%1023s %511s", amqp_urls, mgmt_urls), 2, "urls: %s", out);
	nodes_read();
	/* Every process of this test, and the fleet's own checks, use the cluster. */
	setenv("AMQP_URL", amqp_urls, 1);
	setenv("BULKREG_MQ_MANAGEMENT_URL", mgmt_urls, 1);
	const char *migrate[] = {"migrate", NULL};
	cr_assert_eq(t_admin(out, sizeof(out), migrate), 0, "migrate on the cluster: %s", out);
}

static void cluster_down(void)
{
	cluster_ctl("stop", NULL, NULL, 0);
}

TestSuite(cluster_broker, .init = cluster_up, .fini = cluster_down, .timeout = 1200);

/* GET path from the management API of the first node that answers; JSON (caller decrefs). */
static json_t *mgmt_get(const char *path)
{
	for (int i = 0; i < NODES; i++) {
		char url[256], err[256];
		struct t_resp r;
		snprintf(url, sizeof(url), "http://guest:guest@127.0.0.1:%d%s", nodes[i].mgmt_port,
		         path);
		bool ok = t_http_try(&r, "GET", url, NULL, NULL, NULL, MGMT_TIMEOUT_MS, err,
		                     sizeof(err)) &&
		          r.status == 200 && r.json;
		json_t *j = ok ? json_incref(r.json) : NULL;
		t_resp_free(&r);
		if (j)
			return j;
	}
	return NULL;
}

/* Index of the node named name, or -1. */
static int node_index(const char *name)
{
	for (int i = 0; name && i < NODES; i++) {
		if (strcmp(nodes[i].name, name) == 0)
			return i;
	}
	return -1;
}

/* The node most of process pid's connections are on, or -1 when it has none. */
static int node_of(long pid)
{
	json_t *conns = mgmt_get("/api/connections");
	int count[NODES] = {0};
	char tag[32];
	snprintf(tag, sizeof(tag), "[%ld]", pid);
	size_t i;
	json_t *c;
	json_array_foreach(conns, i, c)
	{
		const char *name = json_string_value(
		    json_object_get(json_object_get(c, "client_properties"), "connection_name"));
		int k = node_index(json_string_value(json_object_get(c, "node")));
		if (name && strstr(name, tag) && k >= 0)
			count[k]++;
	}
	json_decref(conns);
	int best = -1;
	for (int k = 0; k < NODES; k++) {
		if (count[k] > 0 && (best < 0 || count[k] > count[best]))
			best = k;
	}
	return best;
}

/* The queue's leader and members online, from the management API. */
static int queue_state(int *online, int *members)
{
	json_t *q = mgmt_get("/api/queues/%2F/bulkreg.tasks");
	*online = (int)json_array_size(json_object_get(q, "online"));
	*members = (int)json_array_size(json_object_get(q, "members"));
	int leader = node_index(json_string_value(json_object_get(q, "leader")));
	json_decref(q);
	return leader;
}

/* Every node runs and sees no partition, and the queue has all its members online. */
static bool cluster_whole(void)
{
	json_t *list = mgmt_get("/api/nodes");
	int fine = 0;
	size_t i;
	json_t *n;
	json_array_foreach(list, i, n)
	{
		json_t *parts = json_object_get(n, "partitions");
		fine += json_is_true(json_object_get(n, "running")) && json_is_array(parts) &&
		        json_array_size(parts) == 0;
	}
	json_decref(list);
	int online = 0, members = 0;
	return fine == NODES && queue_state(&online, &members) >= 0 && online == NODES &&
	       members == NODES;
}

/*
 * Waits until the cluster has been whole for STABLE_MS on end: a thawed
 * node may look well for a moment and then find itself partitioned
 * (pause_minority pauses it, or, in a partial partition, others) for a while.
 */
static bool cluster_settled(void *ctx)
{
	long long *since = ctx;
	if (!cluster_whole()) {
		*since = 0;
		return false;
	}
	if (*since == 0)
		*since = t_now_ms();
	return t_now_ms() - *since >= STABLE_MS;
}

enum fault_kind {
	FAULT_STOP,
	FAULT_KILL,
	FAULT_FREEZE
};

static const char *const kind_names[] = {"stop", "kill", "freeze"};

struct probe {
	struct t_fleet *f;
	char job[37];
};

static bool probe_done(void *ctx)
{
	struct probe *p = ctx;
	const char *params[] = {p->job};
	return t_sql_long(p->f->db,
	                  "SELECT count(*) FROM jobs WHERE id = $1 AND status <> 'processing'", 1,
	                  params) == 1;
}

/* The slowest /readyz of the API and the workers, asked once each, in ms. */
static long long readyz_slowest(struct t_fleet *f)
{
	const struct t_proc *procs[] = {&f->api, &f->workers[0], &f->workers[1]};
	long long slowest = 0;
	for (int i = 0; i < 3; i++) {
		char url[128];
		snprintf(url, sizeof(url), "%s/readyz", procs[i]->url);
		long long t0 = t_now_ms();
		long status = t_http_status(url, 10000);
		long long ms = t_now_ms() - t0;
		cr_expect(status == 200 || status == 503, "%s answered %ld", url, status);
		if (ms > slowest)
			slowest = ms;
	}
	return slowest;
}

struct fault_run {
	enum fault_kind kind;
	const char *whose;
	int node;
	long long stall_ms;  /* from the fault until a job posted after it completed */
	long long readyz_ms; /* the slowest /readyz meanwhile */
	long long back_ms;   /* from the node's restart (or thaw) until the cluster settled */
	long long after_ms;  /* then a job posted right after the restart or thaw */
};

/* Posts a job of PROBE_TASKS and waits for it; its round trip in ms, the slowest /readyz too. */
static long long probe_ms(struct t_fleet *f, const char *sid, const char *prefix, long long t0,
                          long long *readyz_ms)
{
	struct probe p = {.f = f};
	long status = 0;
	bool posted = t_fleet_post(f, sid, prefix, PROBE_TASKS, 0, p.job, &status, NULL);
	cr_assert(posted, "POST %s answered %ld", prefix, status);
	while (!probe_done(&p)) {
		cr_assert_lt(t_now_ms() - t0, RECOVER_MS, "job %s never completed", prefix);
		long long r = readyz_slowest(f);
		if (readyz_ms && r > *readyz_ms)
			*readyz_ms = r;
		sleep_ms(100);
	}
	return t_now_ms() - t0;
}

/* Injects one fault, measures its stall, and brings the node back. */
static void fault_run(struct t_fleet *f, const char *sid, struct fault_run *fr, int seq)
{
	struct node *nd = &nodes[fr->node];
	char num[16], prefix[32];
	snprintf(num, sizeof(num), "%d", fr->node + 1);
	nodes_read();
	cr_assert_gt(nd->pid, 0, "node %d is not running", fr->node + 1);
	struct t_proc stopper = {0};
	long long t0 = t_now_ms();
	if (fr->kind == FAULT_STOP) {
		/*
		 * A graceful stop takes seconds (rabbitmqctl's own start-up
		 * first): the fault begins when the node closes its listener
		 * and its clients' connections.
		 */
		char ctl[512];
		const char *root = getenv("BULKREG_ROOT");
		snprintf(ctl, sizeof(ctl), "%s/scripts/ctl",
		         root && *root ? root : BULKREG_SOURCE_DIR);
		const char *args[] = {"cluster", "stop-node", num, NULL};
		t_proc_spawn(&stopper, ctl, args, NULL);
		while (port_open(nd->amqp_port)) {
			cr_assert_lt(t_now_ms() - t0, RECOVER_MS, "node %s never stopped", num);
			sleep_ms(20);
		}
		t0 = t_now_ms();
	} else {
		cr_assert_eq(kill((pid_t)nd->pid, fr->kind == FAULT_KILL ? SIGKILL : SIGSTOP), 0);
	}
	/* Work posted after the fault: its completion ends the stall. */
	snprintf(prefix, sizeof(prefix), "probe%d", seq);
	fr->readyz_ms = 0;
	fr->stall_ms = probe_ms(f, sid, prefix, t0, &fr->readyz_ms);
	if (fr->kind == FAULT_STOP)
		cr_assert_eq(t_proc_stop(&stopper, 0, RECOVER_MS), 0, "stop-node %s failed", num);
	if (fr->kind == FAULT_FREEZE) {
		long long left = FREEZE_MS - (t_now_ms() - t0);
		if (left > 0)
			sleep_ms(left);
	}
	long long t1 = t_now_ms();
	if (fr->kind == FAULT_FREEZE) {
		/*
		 * Thawed past net_ticktime, the node is partitioned from the
		 * others (pause_minority cannot heal it): restart it, as an
		 * operator would (docs/operations.md).
		 */
		cr_assert_eq(kill((pid_t)nd->pid, SIGCONT), 0);
		cluster_ctl("stop-node", num, NULL, 0);
	}
	cluster_ctl("start-node", num, NULL, 0);
	/* The node's return must not stall anyone either. */
	snprintf(prefix, sizeof(prefix), "back%d", seq);
	fr->after_ms = probe_ms(f, sid, prefix, t_now_ms(), &fr->readyz_ms);
	/* The next fault only once every member is back: two nodes down is no quorum. */
	long long since = 0;
	cr_assert(t_poll(cluster_settled, &since, RECOVER_MS),
	          "the cluster did not settle with %d members after the %s of node %d", NODES,
	          kind_names[fr->kind], fr->node + 1);
	fr->back_ms = t_now_ms() - t1 - STABLE_MS;
	fprintf(stderr,
	        "cluster fault | %-6s node %d (%-6s) | stall %5.1f s | back in %5.1f s, a job"
	        " then %4.2f s | slowest /readyz %lld ms\n",
	        kind_names[fr->kind], fr->node + 1, fr->whose, (double)fr->stall_ms / 1000.0,
	        (double)fr->back_ms / 1000.0, (double)fr->after_ms / 1000.0, fr->readyz_ms);
}

/*
 * The node that role's fault hits now: the API's, worker 0's, or the
 * leader. The management API lists a new connection within a second or
 * two (collect_statistics_interval), hence the polling.
 */
static int target(struct t_fleet *f, const char *whose)
{
	int online = 0, members = 0, k = -1;
	long long deadline = t_now_ms() + TARGET_WAIT_MS;
	while (k < 0 && t_now_ms() < deadline) {
		if (strcmp(whose, "API") == 0)
			k = node_of(f->api.pid);
		else if (strcmp(whose, "worker") == 0)
			k = node_of(f->workers[0].pid);
		else
			k = queue_state(&online, &members);
		if (k < 0)
			sleep_ms(250);
	}
	cr_assert(k >= 0, "cannot tell the node of the %s", whose);
	return k;
}

Test(cluster_broker, one_node_stopped_killed_frozen)
{
	char out[2048] = "";
	const char *status_args[] = {"status", NULL};
	cr_assert_eq(t_admin(out, sizeof(out), status_args), 0, "bulkreg-admin status: %s", out);
	cr_assert(strstr(out, "queue bulkreg.tasks members 3 online 3"),
	          "the queue declared after the cluster formed should have 3 members: %s", out);

	struct t_fleet f;
	t_fleet_init(&f, "RabbitMQ cluster node faults", NULL, NULL);
	t_fleet_worker_start(&f, 0, NULL);
	t_fleet_worker_start(&f, 1, NULL);
	struct t_resp r;
	char url[128];
	snprintf(url, sizeof(url), "%s/metrics", f.api.url);
	t_http(&r, "GET", url, NULL, NULL, NULL);
	cr_assert(strstr(r.body, "bulkreg_queue_members{queue=\"bulkreg.tasks\"} 3"),
	          "no member count in the metrics");
	t_resp_free(&r);

	char sid[37];
	t_fleet_session(&f, sid);
	struct t_load load;
	t_load_start(&load, &f, "bg", LOAD_JOBS, PROBE_TASKS, LOAD_PACE_MS);
	cr_assert(t_load_wait_accepted(&load, 1, 60000), "the load did not start");

	static const char *const roles[] = {"API", "worker", "leader"};
	struct fault_run runs[9];
	int n = 0;
	for (int kind = FAULT_STOP; kind <= FAULT_FREEZE; kind++) {
		for (int r0 = 0; r0 < 3; r0++) {
			struct fault_run *fr = &runs[n];
			fr->kind = (enum fault_kind)kind;
			fr->whose = roles[r0];
			fr->node = target(&f, roles[r0]);
			fault_run(&f, sid, fr, n);
			n++;
		}
	}
	t_load_stop(&load, false, false);
	char note[64];
	for (int i = 0; i < n; i++) {
		snprintf(note, sizeof(note), "%s %s's node %lld ms;", kind_names[runs[i].kind],
		         runs[i].whose, runs[i].stall_ms);
		t_fleet_note(&f, "%s", note);
	}
	t_fleet_verify(&f);
	for (int i = 0; i < n; i++) {
		cr_expect_lt(runs[i].stall_ms, STALL_BOUND_MS,
		             "%s of the %s's node stalled %lld ms", kind_names[runs[i].kind],
		             runs[i].whose, runs[i].stall_ms);
		cr_expect_lt(runs[i].after_ms, STALL_BOUND_MS,
		             "a job posted as the %s's node came back after its %s took %lld ms",
		             runs[i].whose, kind_names[runs[i].kind], runs[i].after_ms);
		cr_expect_leq(runs[i].readyz_ms, READYZ_BOUND_MS,
		              "a /readyz took %lld ms during the %s of the %s's node",
		              runs[i].readyz_ms, kind_names[runs[i].kind], runs[i].whose);
	}
	int online = 0, members = 0;
	queue_state(&online, &members);
	cr_expect_eq(members, NODES, "the queue has %d members", members);
	t_fleet_stop(&f);
}
