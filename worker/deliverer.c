/*
 * deliverer.c - the worker's webhook deliverer (see deliverer.h).
 *
 * One thread per worker process sends the due rows of the outbox
 * (webhook_deliveries). It owns one PostgreSQL connection, used both for
 * its statements and to LISTEN on bulkreg_webhooks, which emit_event()
 * notifies when it commits an event; and one libcurl multi handle, so
 * attempts run concurrently and a receiver that hangs for the whole
 * timeout never delays the others.
 *
 * The loop: claim due deliveries with a lease (locked_until), so several
 * worker processes never send the same attempt at once; send each as a
 * signed Standard Webhooks POST; record every attempt in webhook_attempts
 * and move the delivery to succeeded, to its next attempt on the retry
 * schedule, or to failed. It claims again at once on a notification and at
 * least every DLV_POLL_MS for retries that became due (or whose lease
 * expired because a worker died). A lost connection is retried with a
 * capped backoff while transfers in flight go on; their results wait in
 * memory until the database is back (a lease that expires meanwhile means
 * another worker may send once more: delivery is at least once, and the
 * webhook-id is stable).
 *
 * Every connection is checked against the target policy at connect time
 * (CURLOPT_OPENSOCKETFUNCTION): a name that now resolves to a private
 * address is refused, not just the one seen when the endpoint was created.
 *
 * Thread-safety: struct deliverer belongs to its thread, except `quit`
 * (atomic) and the multi handle's wakeup, which deliverer_stop uses.
 */
#include "deliverer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netdb.h>
#include <sys/socket.h>
#include <time.h>

#include <curl/curl.h>

#include "backoff.h"
#include "db.h"
#include "log.h"
#include "ops.h"
#include "proc.h"
#include "webhook.h"

#define DLV_MAX_IN_FLIGHT    32
#define DLV_POLL_MS          1000
#define DLV_MIN_POLL_MS      20
#define DLV_RECONNECT_MAX_MS 2000
#define DLV_LEASE_MARGIN_MS  15000
#define DLV_DRAIN_MS         3000
#define DLV_ERROR_MAX        512
#define DLV_UUID_SIZE        37
#define DLV_USER_AGENT       "bulkreg-webhooks/0.1"
#define DLV_CHANNEL          "bulkreg_webhooks"

/* One claimed delivery and its attempt in flight (or finished, to record). */
struct attempt {
	struct attempt *next;
	const struct deliverer *d;
	CURL *easy;
	struct curl_slist *headers;
	char delivery_id[DLV_UUID_SIZE];
	char event_id[DLV_UUID_SIZE];
	char job_id[DLV_UUID_SIZE];
	char endpoint_id[DLV_UUID_SIZE];
	int attempts; /* before this one */
	char *url;
	char *payload;
	long long start_ms;      /* monotonic */
	long long start_unix_ms; /* wall clock, for attempted_at */
	bool done;
	bool ok;          /* a 2xx response */
	long http_status; /* 0 when no response */
	long duration_ms;
	char error[DLV_ERROR_MAX]; /* why it failed */
	char refused[160];         /* set when the connect policy refused an address */
	char errbuf[CURL_ERROR_SIZE];
};

struct deliverer {
	struct worker *w;
	pthread_t thread;
	bool started;
	int quit; /* atomic: set by deliverer_stop */
	bool allow_private;
	CURLM *multi;
	db_conn *db;
	bool db_down;
	long long db_retry_at;
	struct backoff backoff;
	PGconn *listen_pg; /* the connection our LISTEN was issued on */
	int listen_pid;
	bool wake;            /* claim without waiting for next_claim */
	long long next_claim; /* monotonic ms of the next claim */
	struct attempt *list;
	int inflight; /* attempts in list, finished or not */
};

static const db_stmt stmt_claim = {
    "deliverer_claim",
    "WITH due AS ("
    "  SELECT id FROM webhook_deliveries"
    "  WHERE status = 'pending' AND next_attempt_at <= now()"
    "    AND (locked_until IS NULL OR locked_until < now())"
    "  ORDER BY next_attempt_at LIMIT $1::int FOR UPDATE SKIP LOCKED),"
    " claimed AS ("
    "  UPDATE webhook_deliveries w SET locked_until = now() + $2::int * interval '1 millisecond'"
    "  FROM due WHERE w.id = due.id"
    "  RETURNING w.id, w.event_id, w.endpoint_id, w.attempts)"
    " SELECT c.id, c.event_id, c.attempts, ev.job_id, ev.payload, p.url, p.secret, p.id"
    " FROM claimed c JOIN webhook_events ev ON ev.id = c.event_id"
    " JOIN webhook_endpoints p ON p.id = c.endpoint_id",
    2};
/*
 * The attempt is kept even when another worker recorded this attempt
 * number first (its lease had expired): it did happen. The delivery moves
 * on only when its attempt count is still the one claimed.
 */
static const db_stmt stmt_record = {
    "deliverer_record",
    "WITH a AS ("
    "  INSERT INTO webhook_attempts (delivery_id, attempted_at, http_status, duration_ms, error)"
    "  SELECT $1::uuid, to_timestamp($2::double precision / 1000), $3::int, $4::int, $5::text"
    "  WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1::uuid))"
    " UPDATE webhook_deliveries SET attempts = attempts + 1, status = $7::text,"
    "  next_attempt_at = CASE WHEN $8::bigint IS NULL THEN next_attempt_at"
    "                    ELSE now() + $8::bigint * interval '1 millisecond' END,"
    "  locked_until = NULL, updated_at = now()"
    " WHERE id = $1::uuid AND attempts = $6::int AND status = 'pending'",
    8};
/* Milliseconds until the next delivery not leased by anyone becomes due. */
static const db_stmt stmt_next_due = {
    "deliverer_next_due",
    "SELECT ceil(extract(epoch FROM next_attempt_at - clock_timestamp()) * 1000)::bigint"
    " FROM webhook_deliveries"
    " WHERE status = 'pending' AND (locked_until IS NULL OR locked_until < now())"
    " ORDER BY next_attempt_at LIMIT 1",
    0};
static const db_stmt stmt_release = {
    "deliverer_release",
    "UPDATE webhook_deliveries SET locked_until = NULL"
    " WHERE id = $1::uuid AND attempts = $2::int AND status = 'pending'",
    2};

static bool quitting(const struct deliverer *d)
{
	return __atomic_load_n(&d->quit, __ATOMIC_SEQ_CST) != 0;
}

static long long unix_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- database ---- */

static void db_failed(struct deliverer *d, br_status st)
{
	if (st != BR_DB_CONN) {
		LOG_ERROR("webhook deliverer: database error %s: %s", db_sqlstate(d->db),
		          db_errmsg(d->db));
		return;
	}
	if (!d->db_down)
		LOG_WARN("webhook deliverer: database unavailable: %s", db_errmsg(d->db));
	d->db_down = true;
	d->listen_pg = NULL;
	d->db_retry_at = proc_now_ms() + backoff_next(&d->backoff);
}

/* Connects when down (not before the backoff allows) and LISTENs on a new connection. */
static bool db_ready(struct deliverer *d)
{
	if (d->db_down && proc_now_ms() < d->db_retry_at)
		return false;
	br_status st = db_ensure(d->db);
	PGconn *pg = st == BR_OK ? db_pg(d->db) : NULL;
	if (pg && (pg != d->listen_pg || PQbackendPID(pg) != d->listen_pid)) {
		st = db_cmd(d->db, "LISTEN " DLV_CHANNEL);
		if (st == BR_OK) {
			d->listen_pg = pg;
			d->listen_pid = PQbackendPID(pg);
			d->wake = true; /* whatever was notified before we listened */
		}
	}
	if (st != BR_OK) {
		db_failed(d, st);
		return false;
	}
	if (d->db_down)
		LOG_INFO("webhook deliverer: database reachable again");
	d->db_down = false;
	backoff_reset(&d->backoff);
	return true;
}

/* Reads what the server sent; any notification means "claim now". */
static void db_take_notifications(struct deliverer *d)
{
	PGconn *pg = d->listen_pg ? db_pg(d->db) : NULL;
	if (!pg)
		return;
	if (!PQconsumeInput(pg)) {
		db_reset(d->db);
		db_failed(d, BR_DB_CONN);
		return;
	}
	PGnotify *n;
	while ((n = PQnotifies(pg)) != NULL) {
		d->wake = true;
		PQfreemem(n);
	}
}

/* ---- one attempt ---- */

static void attempt_free(struct attempt *a)
{
	if (!a)
		return;
	if (a->easy) {
		curl_multi_remove_handle(a->d->multi, a->easy);
		curl_easy_cleanup(a->easy);
	}
	curl_slist_free_all(a->headers);
	free(a->url);
	free(a->payload);
	free(a);
}

static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	(void)ptr;
	(void)ctx;
	return size * nmemb;
}

/* Connects only to addresses the target policy allows (DNS rebinding). */
static curl_socket_t open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *addr)
{
	struct attempt *a = ctx;
	if (purpose != CURLSOCKTYPE_IPCXN)
		return CURL_SOCKET_BAD;
	const char *cls = a->d->allow_private ? NULL : wh_addr_class(&addr->addr);
	if (cls) {
		char host[64] = "?";
		(void)getnameinfo(&addr->addr, addr->addrlen, host, sizeof(host), NULL, 0,
		                  NI_NUMERICHOST);
		snprintf(a->refused, sizeof(a->refused), "refused to connect to %s, a %s address",
		         host, cls);
		return CURL_SOCKET_BAD;
	}
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
}

/* Appends "name: value" to the header list; false when out of memory. */
static bool add_header(struct curl_slist **list, const char *name, const char *value)
{
	char line[256];
	snprintf(line, sizeof(line), "%s: %s", name, value);
	struct curl_slist *l = curl_slist_append(*list, line);
	if (!l)
		return false;
	*list = l;
	return true;
}

/*
 * Signs and starts the attempt on the multi handle. A failure before
 * anything was sent finishes the attempt with an error, to be recorded
 * like any other.
 */
static void attempt_start(struct deliverer *d, struct attempt *a, const char *secret)
{
	const struct br_config *cfg = d->w->cfg;
	char sig[WH_SIGNATURE_SIZE], ts[24];
	long now = (long)time(NULL);
	size_t len = strlen(a->payload);
	a->start_ms = proc_now_ms();
	a->start_unix_ms = unix_ms();
	snprintf(ts, sizeof(ts), "%ld", now);
	br_status st = wh_sign(secret, a->event_id, now, a->payload, len, sig, sizeof(sig));
	if (st != BR_OK) {
		snprintf(a->error, sizeof(a->error), "cannot sign the payload: %s",
		         br_strerror(st));
		a->done = true;
		return;
	}
	bool ok = add_header(&a->headers, "webhook-id", a->event_id) &&
	          add_header(&a->headers, "webhook-timestamp", ts) &&
	          add_header(&a->headers, "webhook-signature", sig) &&
	          add_header(&a->headers, "content-type", "application/json") &&
	          add_header(&a->headers, "user-agent", DLV_USER_AGENT);
	/* No "Expect: 100-continue" round trip before the body. */
	struct curl_slist *l = ok ? curl_slist_append(a->headers, "Expect:") : NULL;
	if (l)
		a->headers = l;
	ok = ok && l;
	a->easy = ok ? curl_easy_init() : NULL;
	if (!a->easy) {
		snprintf(a->error, sizeof(a->error), "out of memory");
		a->done = true;
		return;
	}
	CURL *e = a->easy;
	long timeout = cfg->webhook_timeout_ms;
	CURLcode rc = CURLE_OK;
	/* Each option can fail only for lack of memory or an unknown option. */
	rc |= curl_easy_setopt(e, CURLOPT_URL, a->url);
	rc |= curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	rc |= curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	rc |= curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	rc |= curl_easy_setopt(e, CURLOPT_PROXY, ""); /* the policy must see the real target */
	rc |= curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, timeout);
	rc |= curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout);
	rc |= curl_easy_setopt(e, CURLOPT_POST, 1L);
	rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDS, a->payload);
	rc |= curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	rc |= curl_easy_setopt(e, CURLOPT_HTTPHEADER, a->headers);
	rc |= curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
	rc |= curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	rc |= curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, a);
	rc |= curl_easy_setopt(e, CURLOPT_ERRORBUFFER, a->errbuf);
	rc |= curl_easy_setopt(e, CURLOPT_PRIVATE, a);
	if (rc != CURLE_OK || curl_multi_add_handle(d->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		a->easy = NULL;
		snprintf(a->error, sizeof(a->error), "cannot set up the request");
		a->done = true;
	}
}

/* Takes one claimed row into a new attempt; NULL when out of memory. */
static struct attempt *attempt_new(struct deliverer *d, const PGresult *res, int row)
{
	struct attempt *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->d = d;
	snprintf(a->delivery_id, sizeof(a->delivery_id), "%s", PQgetvalue(res, row, 0));
	snprintf(a->event_id, sizeof(a->event_id), "%s", PQgetvalue(res, row, 1));
	a->attempts = (int)strtol(PQgetvalue(res, row, 2), NULL, 10);
	snprintf(a->job_id, sizeof(a->job_id), "%s", PQgetvalue(res, row, 3));
	snprintf(a->endpoint_id, sizeof(a->endpoint_id), "%s", PQgetvalue(res, row, 7));
	a->payload = strdup(PQgetvalue(res, row, 4));
	a->url = strdup(PQgetvalue(res, row, 5));
	if (!a->payload || !a->url) {
		attempt_free(a);
		return NULL;
	}
	return a;
}

/* Marks the transfer of easy finished and notes its outcome. */
static void attempt_finished(struct deliverer *d, CURL *easy, CURLcode rc)
{
	char *priv = NULL;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
	struct attempt *a = (void *)priv;
	if (!a)
		return;
	a->duration_ms = (long)(proc_now_ms() - a->start_ms);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &a->http_status);
	curl_multi_remove_handle(d->multi, easy);
	curl_easy_cleanup(easy);
	a->easy = NULL;
	a->done = true;
	a->ok = rc == CURLE_OK && a->http_status >= 200 && a->http_status < 300;
	if (a->ok)
		return;
	if (rc == CURLE_COULDNT_CONNECT && a->refused[0])
		snprintf(a->error, sizeof(a->error), "%s", a->refused);
	else if (rc == CURLE_OK)
		snprintf(a->error, sizeof(a->error), "HTTP %ld", a->http_status);
	else
		snprintf(a->error, sizeof(a->error), "%s",
		         a->errbuf[0] ? a->errbuf : curl_easy_strerror(rc));
	/* Stored as text and shown to clients: printable ASCII only. */
	for (char *c = a->error; *c; c++) {
		if (*c < 0x20 || *c > 0x7e)
			*c = '?';
	}
}

/* ---- the outbox ---- */

/* The delivery's state after attempt number n; *wait_ms is -1 when none follows. */
static const char *next_state(const struct br_config *cfg, int n, bool ok, long *wait_ms)
{
	*wait_ms = -1;
	if (ok)
		return "succeeded";
	if (n > cfg->webhook_retry_count || n < 1)
		return "failed";
	*wait_ms = cfg->webhook_retry_ms[n - 1];
	return "pending";
}

/* Records a finished attempt and moves its delivery on. */
static br_status attempt_record(struct deliverer *d, const struct attempt *a)
{
	bool ok = a->ok;
	long wait_ms;
	const char *state = next_state(d->w->cfg, a->attempts + 1, ok, &wait_ms);
	char at[24], http[16], dur[24], before[16], wait[24];
	snprintf(at, sizeof(at), "%lld", a->start_unix_ms);
	snprintf(http, sizeof(http), "%ld", a->http_status);
	snprintf(dur, sizeof(dur), "%ld", a->duration_ms < 0 ? 0 : a->duration_ms);
	snprintf(before, sizeof(before), "%d", a->attempts);
	snprintf(wait, sizeof(wait), "%ld", wait_ms);
	const char *params[] = {
	    a->delivery_id, at,    a->http_status ? http : NULL, dur, ok ? NULL : a->error,
	    before,         state, wait_ms >= 0 ? wait : NULL};
	br_status st = db_run(d->db, &stmt_record, params, NULL);
	if (st != BR_OK)
		return st;
	if (wait_ms >= 0 && proc_now_ms() + wait_ms < d->next_claim)
		d->next_claim = proc_now_ms() + wait_ms;

	const char *outcome = ok ? "success" : wait_ms >= 0 ? "failure" : "failed_permanently";
	char labels[48];
	snprintf(labels, sizeof(labels), "outcome=\"%s\"", outcome);
	met_counter_add(ops_webhook_deliveries, labels, 1);
	/* Endpoint ids, not URLs: a URL may carry credentials. */
	log_set_job_id(a->job_id);
	if (ok)
		LOG_INFO("webhook %s delivered to endpoint %s (attempt %d, HTTP %ld, %ld ms)",
		         a->event_id, a->endpoint_id, a->attempts + 1, a->http_status,
		         a->duration_ms);
	else
		LOG_WARN("webhook %s to endpoint %s: attempt %d failed: %s; %s", a->event_id,
		         a->endpoint_id, a->attempts + 1, a->error,
		         wait_ms >= 0 ? "will retry" : "giving up");
	log_set_job_id(NULL);
	return BR_OK;
}

/* Records every finished attempt; stops at a lost connection (kept for later). */
static void record_finished(struct deliverer *d)
{
	struct attempt **pp = &d->list;
	while (*pp) {
		struct attempt *a = *pp;
		if (!a->done) {
			pp = &a->next;
			continue;
		}
		br_status st = attempt_record(d, a);
		if (st == BR_DB_CONN) {
			db_failed(d, st);
			return;
		}
		if (st != BR_OK) /* dropped: the lease expires and the attempt is retried */
			db_failed(d, st);
		*pp = a->next;
		attempt_free(a);
		d->inflight--;
	}
}

/* Claims up to limit due deliveries and starts them; *got receives how many. */
static br_status claim(struct deliverer *d, int limit, int *got)
{
	char lim[16], lease[24];
	snprintf(lim, sizeof(lim), "%d", limit);
	snprintf(lease, sizeof(lease), "%d", d->w->cfg->webhook_timeout_ms + DLV_LEASE_MARGIN_MS);
	const char *params[] = {lim, lease};
	PGresult *res = NULL;
	br_status st = db_run(d->db, &stmt_claim, params, &res);
	if (st != BR_OK)
		return st;
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		struct attempt *a = attempt_new(d, res, i);
		if (!a) {
			/* Its lease expires and it is claimed again. */
			LOG_ERROR("webhook deliverer: out of memory; delivery %s postponed",
			          PQgetvalue(res, i, 0));
			continue;
		}
		attempt_start(d, a, PQgetvalue(res, i, 6));
		a->next = d->list;
		d->list = a;
		d->inflight++;
	}
	PQclear(res);
	*got = n;
	return BR_OK;
}

/*
 * When to claim next: when the earliest retry is due, at most DLV_POLL_MS
 * from now (leases expire unannounced), at least DLV_MIN_POLL_MS (a due row
 * another worker is claiming right now must not make us spin).
 */
static long long next_claim_at(struct deliverer *d, long long now)
{
	PGresult *res = NULL;
	long wait = DLV_POLL_MS;
	br_status st = db_run(d->db, &stmt_next_due, NULL, &res);
	if (st != BR_OK) {
		db_failed(d, st);
		return now + wait;
	}
	if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
		long due = strtol(PQgetvalue(res, 0, 0), NULL, 10);
		wait = due < DLV_MIN_POLL_MS ? DLV_MIN_POLL_MS : due < wait ? due : wait;
	}
	PQclear(res);
	return now + wait;
}

/* Notes every transfer libcurl finished; true when there was one. */
static bool collect_finished(struct deliverer *d)
{
	bool any = false;
	int queued;
	CURLMsg *m;
	while ((m = curl_multi_info_read(d->multi, &queued)) != NULL) {
		if (m->msg != CURLMSG_DONE)
			continue;
		attempt_finished(d, m->easy_handle, m->data.result);
		any = true;
	}
	return any;
}

/* Gives up what is still here at shutdown: in-flight leases go back at once. */
static void abandon_all(struct deliverer *d)
{
	bool db_ok = !d->db_down && db_pg(d->db) != NULL;
	while (d->list) {
		struct attempt *a = d->list;
		d->list = a->next;
		if (db_ok && a->done) {
			db_ok = attempt_record(d, a) != BR_DB_CONN;
		} else if (db_ok) {
			char before[16];
			snprintf(before, sizeof(before), "%d", a->attempts);
			const char *params[] = {a->delivery_id, before};
			db_ok = db_run(d->db, &stmt_release, params, NULL) != BR_DB_CONN;
			LOG_INFO("webhook %s: attempt abandoned at shutdown", a->event_id);
		}
		attempt_free(a);
		d->inflight--;
	}
}

/* How long the loop may sleep before something is due. */
static long wait_budget(const struct deliverer *d, long long now, long long drain_deadline)
{
	bool can_claim = !d->db_down && !quitting(d) && d->inflight < DLV_MAX_IN_FLIGHT;
	if (d->wake && can_claim)
		return 0;
	long long until = now + DLV_POLL_MS;
	if (can_claim && d->next_claim < until)
		until = d->next_claim;
	if (d->db_down && d->db_retry_at < until)
		until = d->db_retry_at;
	if (drain_deadline && drain_deadline < until)
		until = drain_deadline;
	return until > now ? (long)(until - now) : 0;
}

static void *deliverer_main(void *arg)
{
	struct deliverer *d = arg;
	long long drain_deadline = 0;
	d->wake = true;
	for (;;) {
		long long now = proc_now_ms();
		bool stop = quitting(d);
		if (stop && !drain_deadline)
			drain_deadline = now + DLV_DRAIN_MS;
		if (stop && (!d->list || now >= drain_deadline))
			break;
		bool db_ok = db_ready(d);
		if (db_ok)
			record_finished(d);
		if (db_ok && !d->db_down && !stop && d->inflight < DLV_MAX_IN_FLIGHT &&
		    (d->wake || now >= d->next_claim)) {
			int limit = DLV_MAX_IN_FLIGHT - d->inflight, got = 0;
			d->wake = false;
			d->next_claim = now + DLV_POLL_MS;
			br_status st = claim(d, limit, &got);
			if (st != BR_OK)
				db_failed(d, st);
			else if (got == limit)
				d->wake = true; /* more may be due */
			else
				d->next_claim = next_claim_at(d, now);
		}
		int running = 0;
		curl_multi_perform(d->multi, &running);
		if (collect_finished(d))
			continue; /* record them at once */

		db_take_notifications(d);
		long budget = wait_budget(d, proc_now_ms(), drain_deadline);
		PGconn *pg = d->listen_pg ? db_pg(d->db) : NULL;
		struct curl_waitfd pgfd = {.fd = pg ? PQsocket(pg) : -1,
		                           .events = CURL_WAIT_POLLIN};
		bool with_pg = pg && pgfd.fd >= 0;
		if (budget > 0)
			curl_multi_poll(d->multi, with_pg ? &pgfd : NULL, with_pg ? 1 : 0,
			                (int)budget, NULL);
		db_take_notifications(d);
	}
	abandon_all(d);
	return NULL;
}

/* ---- life cycle ---- */

static void deliverer_free(struct deliverer *d)
{
	if (!d)
		return;
	curl_multi_cleanup(d->multi);
	db_close(d->db);
	free(d);
}

br_status deliverer_start(struct worker *w)
{
	struct deliverer *d = NULL;
	br_status st = BR_NOMEM;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return BR_HTTP;
	d = calloc(1, sizeof(*d));
	if (!d)
		goto fail;
	d->w = w;
	d->allow_private = w->cfg->webhook_allow_private;
	backoff_init(&d->backoff, 100, DLV_RECONNECT_MAX_MS);
	d->multi = curl_multi_init();
	if (!d->multi)
		goto fail;
	static const struct db_opts opts = WORKER_DB_OPTS;
	st = db_open(w->cfg->database_url, &opts, true, &d->db);
	if (st != BR_OK)
		goto fail;
	if (pthread_create(&d->thread, NULL, deliverer_main, d) != 0) {
		st = BR_NOMEM;
		goto fail;
	}
	d->started = true;
	w->deliverer = d;
	LOG_INFO("webhook deliverer started (up to %d attempts in flight)", DLV_MAX_IN_FLIGHT);
	return BR_OK;
fail:
	deliverer_free(d);
	curl_global_cleanup();
	return st;
}

void deliverer_stop(struct worker *w)
{
	struct deliverer *d = w->deliverer;
	if (!d)
		return;
	__atomic_store_n(&d->quit, 1, __ATOMIC_SEQ_CST);
	curl_multi_wakeup(d->multi);
	if (d->started)
		pthread_join(d->thread, NULL);
	deliverer_free(d);
	w->deliverer = NULL;
	curl_global_cleanup();
}
