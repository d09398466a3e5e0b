/*
 * deliverer.c - the worker's webhook deliverer (see deliverer.h).
 *
 * One thread per worker process sends the due rows of the outbox
 * (webhook_deliveries). It owns one PostgreSQL connection (outbox.c), used both for
 * its statements and to LISTEN on bulkreg_webhooks, which emit_event()
 * notifies when it commits an event; and one libcurl multi handle, so
 * attempts run concurrently and a receiver that hangs for the whole
 * timeout never delays the others.
 *
 * The loop: claim due deliveries with a lease (locked_until), so several
 * worker processes never send the same attempt at once, at most one per
 * endpoint in flight across all workers (outbox.c: the endpoint is leased
 * too), organizations in turn; send each as a signed Standard Webhooks
 * POST; record every attempt in webhook_attempts and move the delivery to
 * succeeded, to its next attempt on the retry schedule (later when the
 * receiver's Retry-After asks, up to the schedule's longest wait), or to
 * failed. A 410 Gone disables the endpoint and fails its pending
 * deliveries. Recording an attempt frees its endpoint, so the loop claims
 * again at once. It claims again at once on a notification and at
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

#include "log.h"
#include "ops.h"
#include "outbox.h"
#include "proc.h"
#include "uuid.h"
#include "webhook.h"

#define DLV_MAX_IN_FLIGHT   32
#define DLV_POLL_MS         1000
#define DLV_MIN_POLL_MS     20
#define DLV_LEASE_MARGIN_MS 15000
#define DLV_DRAIN_MS        3000
#define DLV_ERROR_MAX       512
#define DLV_USER_AGENT      "bulkreg-webhooks/0.1"
/* Retry-After beyond this many seconds is read as this (the schedule caps it anyway). */
#define DLV_RETRY_AFTER_MAX_S (30L * 86400)

/* One claimed delivery and its attempt in flight (or finished, to record). */
struct attempt {
	struct attempt *next;
	const struct deliverer *d;
	CURL *easy;
	struct curl_slist *headers;
	char delivery_id[UUID_LEN + 1];
	char event_id[UUID_LEN + 1];
	char job_id[UUID_LEN + 1];
	char endpoint_id[UUID_LEN + 1];
	int attempts; /* before this one */
	char *url;
	char *payload;
	long long start_ms;      /* monotonic */
	long long start_unix_ms; /* wall clock, for attempted_at */
	bool done;
	bool ok;             /* a 2xx response */
	bool gone;           /* a 410 Gone response */
	long http_status;    /* 0 when no response */
	long retry_after_ms; /* the response's Retry-After, 0 when none */
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
	outbox *ob;
	bool wake;            /* claim without waiting for next_claim */
	long long next_claim; /* monotonic ms of the next claim */
	struct attempt *list;
	int inflight; /* attempts in list, finished or not */
};

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
static struct attempt *attempt_new(struct deliverer *d, const struct outbox_row *row)
{
	struct attempt *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->d = d;
	snprintf(a->delivery_id, sizeof(a->delivery_id), "%s", row->delivery_id);
	snprintf(a->event_id, sizeof(a->event_id), "%s", row->event_id);
	a->attempts = row->attempts;
	snprintf(a->job_id, sizeof(a->job_id), "%s", row->job_id);
	snprintf(a->endpoint_id, sizeof(a->endpoint_id), "%s", row->endpoint_id);
	a->payload = strdup(row->payload);
	a->url = strdup(row->url);
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
	/* Seconds, from either form (delay-seconds or HTTP-date); 0 when absent. */
	curl_off_t ra = 0;
	if (rc == CURLE_OK && curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &ra) == CURLE_OK &&
	    ra > 0)
		a->retry_after_ms =
		    ra > DLV_RETRY_AFTER_MAX_S ? DLV_RETRY_AFTER_MAX_S * 1000L : (long)ra * 1000;
	curl_multi_remove_handle(d->multi, easy);
	curl_easy_cleanup(easy);
	a->easy = NULL;
	a->done = true;
	a->ok = rc == CURLE_OK && a->http_status >= 200 && a->http_status < 300;
	if (a->ok)
		return;
	a->gone = rc == CURLE_OK && a->http_status == 410;
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

/*
 * The delivery's state after attempt a, its number n; *wait_ms is -1 when
 * none follows. A Retry-After longer than the schedule's wait is honoured
 * up to the schedule's longest wait, so a receiver cannot park a delivery
 * for longer than the operator's schedule allows.
 */
static const char *next_state(const struct br_config *cfg, const struct attempt *a, int n,
                              long *wait_ms)
{
	*wait_ms = -1;
	if (a->ok)
		return "succeeded";
	if (a->gone || n > cfg->webhook_retry_count || n < 1)
		return "failed";
	long wait = cfg->webhook_retry_ms[n - 1], longest = 0;
	for (int i = 0; i < cfg->webhook_retry_count; i++)
		longest = cfg->webhook_retry_ms[i] > longest ? cfg->webhook_retry_ms[i] : longest;
	if (a->retry_after_ms > wait)
		wait = a->retry_after_ms < longest ? a->retry_after_ms : longest;
	*wait_ms = wait;
	return "pending";
}

/* Records a finished attempt and moves its delivery on. */
static br_status attempt_record(struct deliverer *d, const struct attempt *a)
{
	bool ok = a->ok;
	long wait_ms;
	const char *state = next_state(d->w->cfg, a, a->attempts + 1, &wait_ms);
	struct outbox_attempt rec = {
	    .delivery_id = a->delivery_id,
	    .attempts = a->attempts,
	    .start_unix_ms = a->start_unix_ms,
	    .http_status = a->http_status,
	    .duration_ms = a->duration_ms,
	    .error = ok ? NULL : a->error,
	    .state = state,
	    .wait_ms = wait_ms,
	    .gone = a->gone,
	    .endpoint_id = a->endpoint_id,
	};
	br_status st = outbox_record(d->ob, &rec);
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
	else if (a->gone)
		LOG_WARN("webhook %s to endpoint %s: 410 Gone; endpoint disabled, its pending "
		         "deliveries failed",
		         a->event_id, a->endpoint_id);
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
			outbox_failed(d->ob, st);
			return;
		}
		if (st != BR_OK) /* dropped: the lease expires and the attempt is retried */
			outbox_failed(d->ob, st);
		*pp = a->next;
		attempt_free(a);
		d->inflight--;
		d->wake = true; /* its endpoint is free: its next delivery may be due */
	}
}

/* Starts the attempt of one claimed row (outbox_claim's callback). */
static void take_row(void *ctx, const struct outbox_row *row)
{
	struct deliverer *d = ctx;
	struct attempt *a = attempt_new(d, row);
	if (!a) {
		/* Its lease expires and it is claimed again. */
		LOG_ERROR("webhook deliverer: out of memory; delivery %s postponed",
		          row->delivery_id);
		return;
	}
	attempt_start(d, a, row->secret);
	a->next = d->list;
	d->list = a;
	d->inflight++;
}

/* Claims up to limit due deliveries and starts them; *got receives how many. */
static br_status claim(struct deliverer *d, int limit, int *got)
{
	int lease = d->w->cfg->webhook_timeout_ms + DLV_LEASE_MARGIN_MS;
	return outbox_claim(d->ob, limit, lease, take_row, d, got);
}

/*
 * When to claim next: when the earliest retry is due, at most DLV_POLL_MS
 * from now (leases expire unannounced), at least DLV_MIN_POLL_MS (a due row
 * another worker is claiming right now must not make us spin).
 */
static long long next_claim_at(struct deliverer *d, long long now)
{
	long wait = DLV_POLL_MS, due = 0;
	bool found = false;
	br_status st = outbox_next_due(d->ob, &found, &due);
	if (st != BR_OK) {
		outbox_failed(d->ob, st);
		return now + wait;
	}
	if (found)
		wait = due < DLV_MIN_POLL_MS ? DLV_MIN_POLL_MS : due < wait ? due : wait;
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
	bool db_ok = outbox_usable(d->ob);
	while (d->list) {
		struct attempt *a = d->list;
		d->list = a->next;
		if (db_ok && a->done) {
			db_ok = attempt_record(d, a) != BR_DB_CONN;
		} else if (db_ok) {
			db_ok = outbox_release(d->ob, a->delivery_id, a->attempts) != BR_DB_CONN;
			LOG_INFO("webhook %s: attempt abandoned at shutdown", a->event_id);
		}
		attempt_free(a);
		d->inflight--;
	}
}

/* How long the loop may sleep before something is due. */
static long wait_budget(const struct deliverer *d, long long now, long long drain_deadline)
{
	bool down = outbox_down(d->ob);
	bool can_claim = !down && !quitting(d) && d->inflight < DLV_MAX_IN_FLIGHT;
	if (d->wake && can_claim)
		return 0;
	long long until = now + DLV_POLL_MS;
	if (can_claim && d->next_claim < until)
		until = d->next_claim;
	if (down && outbox_retry_at(d->ob) < until)
		until = outbox_retry_at(d->ob);
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
		bool db_ok = outbox_ready(d->ob, &d->wake);
		if (db_ok)
			record_finished(d);
		if (db_ok && !outbox_down(d->ob) && !stop && d->inflight < DLV_MAX_IN_FLIGHT &&
		    (d->wake || now >= d->next_claim)) {
			int limit = DLV_MAX_IN_FLIGHT - d->inflight, got = 0;
			d->wake = false;
			d->next_claim = now + DLV_POLL_MS;
			br_status st = claim(d, limit, &got);
			if (st != BR_OK)
				outbox_failed(d->ob, st);
			else if (got == limit)
				d->wake = true; /* more may be due */
			else
				d->next_claim = next_claim_at(d, now);
		}
		int running = 0;
		curl_multi_perform(d->multi, &running);
		if (collect_finished(d))
			continue; /* record them at once */

		if (outbox_notified(d->ob))
			d->wake = true;
		long budget = wait_budget(d, proc_now_ms(), drain_deadline);
		struct curl_waitfd pgfd = {.fd = outbox_fd(d->ob), .events = CURL_WAIT_POLLIN};
		bool with_pg = pgfd.fd >= 0;
		if (budget > 0)
			curl_multi_poll(d->multi, with_pg ? &pgfd : NULL, with_pg ? 1 : 0,
			                (int)budget, NULL);
		if (outbox_notified(d->ob))
			d->wake = true;
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
	outbox_close(d->ob);
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
	d->multi = curl_multi_init();
	if (!d->multi)
		goto fail;
	static const struct db_opts opts = WORKER_DB_OPTS;
	st = outbox_open(w->cfg->database_url, &opts, &d->ob);
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
