/*
 * http_conns.c - connection limits, deadlines, body budget and lingering
 * closes of the HTTP server (see http_conns.h).
 *
 * Owns the list of tracked connections, the reaper thread, an eventfd that
 * wakes it, and the duplicated descriptors of lingering closes. The mutex
 * guards the list, every hc_conn, the admitted count and the lingering
 * array; the budget is one atomic counter. The reaper only shuts down
 * descriptors of connections still on the list, and MHD reports a
 * connection closed (hc_close) before it closes the descriptor, so a
 * reused descriptor is never shut down.
 *
 * Limits are counted here, not by MHD: MHD closes a connection over its
 * limits without a word, where this module can make room by cutting an
 * idle connection or let the server answer 503. MHD's own connection limit
 * is set above max_conns (http.c) so that the refused ones reach us.
 */
#include "http_conns.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define HC_REAPER_PERIOD_MS 250
#define HC_LINGER_MAX_MS    10000
/* A lingering close ends after this long without a byte from the client. */
#define HC_LINGER_IDLE_MS 1000
#define HC_DRAIN_BUF      65536

enum hc_state {
	HC_HEAD, /* waiting for a request's head (new or kept alive) */
	HC_BODY, /* head in, body arriving */
	HC_BUSY  /* body complete: handled, answered; no deadline */
};

struct hc_conn {
	struct hc_conn *prev, *next;
	hc_table *table; /* the table it belongs to */
	int fd;
	enum hc_state state;
	long long since_ns;    /* when it entered state */
	long long deadline_ns; /* 0: none */
	bool cut;              /* shut down by us */
	bool refused;          /* over a limit at hc_open */
	bool counted;          /* holds a slot of the limits */
	int family;
	unsigned char ip[16];
};

struct hc_linger {
	int fd;
	long long deadline_ns; /* the end, however busy the client */
	long long idle_ns;     /* the end unless it sends more */
	size_t read;
};

struct hc_table {
	struct hc_limits lim;
	pthread_mutex_t mu;
	struct hc_conn *conns;
	unsigned admitted;
	size_t budget_used; /* atomic */
	struct hc_linger lingers[HC_LINGER_MAX];
	int nlinger;
	bool stopping;
	bool reaper_started;
	pthread_t reaper;
	int wake_fd;
};

static long long mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void addr_key(hc_conn *c, const struct sockaddr *addr)
{
	c->family = addr ? addr->sa_family : AF_UNSPEC;
	if (c->family == AF_INET)
		memcpy(c->ip, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, 4);
	else if (c->family == AF_INET6)
		memcpy(c->ip, &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr, 16);
}

static bool same_addr(const hc_conn *a, const hc_conn *b)
{
	if (a->family != b->family || a->family == AF_UNSPEC)
		return false;
	return memcmp(a->ip, b->ip, a->family == AF_INET ? 4 : 16) == 0;
}

/* Under mu: shuts c down and gives its slot back. */
static void cut_locked(hc_table *t, hc_conn *c)
{
	shutdown(c->fd, SHUT_RDWR);
	c->cut = true;
	if (c->counted) {
		c->counted = false;
		t->admitted--;
	}
}

hc_conn *hc_open(hc_table *t, int fd, const struct sockaddr *addr)
{
	hc_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->table = t;
	c->fd = fd;
	addr_key(c, addr);
	long long now = mono_ns(), min_age = (long long)HC_EVICT_AGE_MS * 1000000LL;
	int evicted = 0;
	pthread_mutex_lock(&t->mu);
	unsigned from_ip = 0;
	hc_conn *oldest = NULL, *oldest_ip = NULL;
	for (hc_conn *o = t->conns; o; o = o->next) {
		if (!o->counted)
			continue;
		bool same = same_addr(o, c);
		from_ip += same;
		if (o->state != HC_HEAD || now - o->since_ns < min_age)
			continue;
		if (!oldest || o->since_ns < oldest->since_ns)
			oldest = o;
		if (same && (!oldest_ip || o->since_ns < oldest_ip->since_ns))
			oldest_ip = o;
	}
	bool refuse = false;
	if (t->lim.max_per_ip && from_ip >= t->lim.max_per_ip) {
		if (oldest_ip) {
			cut_locked(t, oldest_ip);
			evicted++;
		} else {
			refuse = true;
		}
	}
	if (!refuse && t->admitted >= t->lim.max_conns) {
		if (oldest && !oldest->cut) {
			cut_locked(t, oldest);
			evicted++;
		} else {
			refuse = true;
		}
	}
	long long head_ns = t->lim.header_timeout_ns;
	if (refuse && head_ns > (long long)HC_REFUSED_HEAD_MS * 1000000LL)
		head_ns = (long long)HC_REFUSED_HEAD_MS * 1000000LL;
	c->state = HC_HEAD;
	c->since_ns = now;
	c->deadline_ns = now + head_ns;
	c->refused = refuse;
	c->counted = !refuse;
	t->admitted += !refuse;
	c->next = t->conns;
	if (t->conns)
		t->conns->prev = c;
	t->conns = c;
	pthread_mutex_unlock(&t->mu);
	if (evicted)
		LOG_DEBUG("http: closed %d idle connection(s) to admit a new one", evicted);
	if (refuse)
		LOG_INFO("http: connection over the limits (%u per address, %u in all): "
		         "answering 503",
		         t->lim.max_per_ip, t->lim.max_conns);
	return c;
}

void hc_close(hc_table *t, hc_conn *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&t->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		t->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	if (c->counted)
		t->admitted--;
	pthread_mutex_unlock(&t->mu);
	free(c);
}

bool hc_refused(hc_table *t, const hc_conn *c)
{
	(void)t; /* set once by hc_open, on the thread that serves the connection */
	return c && c->refused;
}

/* Moves c to state with a deadline in_ns from now (0: none); false if it was cut. */
static bool enter(hc_table *t, hc_conn *c, enum hc_state state, long long in_ns)
{
	if (!c)
		return true;
	long long now = mono_ns();
	bool ok;
	pthread_mutex_lock(&t->mu);
	ok = !c->cut;
	c->state = state;
	c->since_ns = now;
	if (!c->refused || state != HC_HEAD)
		c->deadline_ns = in_ns ? now + in_ns : 0;
	pthread_mutex_unlock(&t->mu);
	return ok;
}

bool hc_head_done(hc_table *t, hc_conn *c)
{
	return enter(t, c, HC_BODY, t->lim.body_timeout_ns);
}

bool hc_body_done(hc_table *t, hc_conn *c)
{
	return enter(t, c, HC_BUSY, 0);
}

void hc_request_done(hc_table *t, hc_conn *c)
{
	(void)enter(t, c, HC_HEAD, t->lim.header_timeout_ns);
}

void hc_linger(hc_conn *c)
{
	if (!c)
		return;
	hc_table *t = c->table;
	long long span = t->lim.body_timeout_ns;
	if (span > (long long)HC_LINGER_MAX_MS * 1000000LL)
		span = (long long)HC_LINGER_MAX_MS * 1000000LL;
	bool added = false;
	pthread_mutex_lock(&t->mu);
	if (t->nlinger < HC_LINGER_MAX && !c->cut) {
		int fd = fcntl(c->fd, F_DUPFD_CLOEXEC, 0);
		if (fd >= 0) {
			long long now = mono_ns();
			t->lingers[t->nlinger++] = (struct hc_linger){
			    fd, now + span, now + (long long)HC_LINGER_IDLE_MS * 1000000LL, 0};
			added = true;
		}
	}
	pthread_mutex_unlock(&t->mu);
	if (added) {
		uint64_t one = 1;
		(void)!write(t->wake_fd, &one, sizeof(one));
	}
}

bool hc_budget_take(hc_table *t, size_t n, bool large)
{
	size_t cap = t->lim.body_budget;
	if (large)
		cap -= cap / 8;
	size_t used = __atomic_load_n(&t->budget_used, __ATOMIC_RELAXED);
	do {
		if (n > cap || used > cap - n)
			return false;
	} while (!__atomic_compare_exchange_n(&t->budget_used, &used, used + n, true,
	                                      __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
	return true;
}

void hc_budget_give(hc_table *t, size_t n)
{
	if (n)
		__atomic_sub_fetch(&t->budget_used, n, __ATOMIC_ACQ_REL);
}

/* Reads and drops what fd holds; true when the lingering close is over. */
static bool drain(struct hc_linger *l, char *buf, long long now)
{
	for (;;) {
		ssize_t n = recv(l->fd, buf, HC_DRAIN_BUF, MSG_DONTWAIT);
		if (n > 0) {
			l->read += (size_t)n;
			l->idle_ns = now + (long long)HC_LINGER_IDLE_MS * 1000000LL;
			if (l->read > HC_LINGER_MAX_BYTES)
				return true;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return true; /* the client closed: done */
		return now >= l->deadline_ns || now >= l->idle_ns;
	}
}

/* Under mu: shuts down connections past their deadline; how many. */
static int reap_locked(hc_table *t, long long now)
{
	int cut = 0;
	for (hc_conn *c = t->conns; c; c = c->next) {
		if (c->cut || !c->deadline_ns || now < c->deadline_ns)
			continue;
		cut_locked(t, c);
		cut++;
	}
	return cut;
}

/* Cuts late connections and drains lingering closes until hc_free. */
static void *reaper_main(void *arg)
{
	hc_table *t = arg;
	struct pollfd pfd[HC_LINGER_MAX + 1];
	char *buf = malloc(HC_DRAIN_BUF);
	long long next_reap = 0;
	pthread_mutex_lock(&t->mu);
	while (!t->stopping) {
		long long now = mono_ns();
		int cut = 0;
		if (now >= next_reap) {
			cut = reap_locked(t, now);
			next_reap = now + (long long)HC_REAPER_PERIOD_MS * 1000000LL;
		}
		int n = t->nlinger;
		for (int i = 0; i < n; i++)
			pfd[i] = (struct pollfd){.fd = t->lingers[i].fd, .events = POLLIN};
		pfd[n] = (struct pollfd){.fd = t->wake_fd, .events = POLLIN};
		pthread_mutex_unlock(&t->mu);
		if (cut)
			LOG_INFO("http: cut %d connection(s) too slow to send their request", cut);
		int wait_ms = (int)((next_reap - now) / 1000000LL);
		(void)poll(pfd, (nfds_t)n + 1, wait_ms > 0 ? wait_ms : 0);
		if (pfd[n].revents) {
			uint64_t v;
			(void)!read(t->wake_fd, &v, sizeof(v));
		}
		now = mono_ns();
		pthread_mutex_lock(&t->mu);
		/* Entries 0..n-1 are the polled ones; hc_linger only appends. */
		for (int i = n - 1; i >= 0; i--) {
			struct hc_linger *l = &t->lingers[i];
			bool done;
			if (buf && pfd[i].revents)
				done = drain(l, buf,
				             now); /* read first: closing on unread bytes resets */
			else
				done = !buf || now >= l->deadline_ns || now >= l->idle_ns;
			if (!done)
				continue;
			close(l->fd);
			t->lingers[i] = t->lingers[--t->nlinger];
		}
	}
	pthread_mutex_unlock(&t->mu);
	free(buf);
	return NULL;
}

br_status hc_new(const struct hc_limits *l, hc_table **out)
{
	hc_table *t = calloc(1, sizeof(*t));
	if (!t)
		return BR_NOMEM;
	t->lim = *l;
	pthread_mutex_init(&t->mu, NULL);
	t->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (t->wake_fd < 0 || pthread_create(&t->reaper, NULL, reaper_main, t) != 0) {
		LOG_ERROR("http: cannot start the connection reaper");
		hc_free(t);
		return BR_IO;
	}
	t->reaper_started = true;
	*out = t;
	return BR_OK;
}

void hc_free(hc_table *t)
{
	if (!t)
		return;
	if (t->reaper_started) {
		pthread_mutex_lock(&t->mu);
		t->stopping = true;
		pthread_mutex_unlock(&t->mu);
		uint64_t one = 1;
		(void)!write(t->wake_fd, &one, sizeof(one));
		pthread_join(t->reaper, NULL);
	}
	for (int i = 0; i < t->nlinger; i++)
		close(t->lingers[i].fd);
	while (t->conns) {
		hc_conn *c = t->conns;
		t->conns = c->next;
		free(c);
	}
	if (t->wake_fd >= 0)
		close(t->wake_fd);
	pthread_mutex_destroy(&t->mu);
	free(t);
}
