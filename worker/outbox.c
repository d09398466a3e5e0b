/*
 * outbox.c - the webhook outbox's PostgreSQL side (see outbox.h).
 *
 * One connection, used both for the statements and to LISTEN on
 * bulkreg_webhooks, which emit_event() notifies when it commits an event.
 * A lost connection is retried with a capped backoff; the LISTEN is issued
 * again on every new connection. The claim is where fairness lives: at most
 * one attempt per endpoint in flight, organizations served in turn.
 *
 * Owns its db_conn. Thread-safety: one thread (the deliverer's).
 */
#include "outbox.h"

#include <stdio.h>
#include <stdlib.h>

#include "backoff.h"
#include "log.h"
#include "proc.h"

#define OUTBOX_RECONNECT_MAX_MS 2000
#define OUTBOX_CHANNEL          "bulkreg_webhooks"

struct outbox {
	db_conn *db;
	bool down;
	long long retry_at;
	struct backoff backoff;
	PGconn *listen_pg; /* the connection our LISTEN was issued on */
	int listen_pid;
};

/*
 * Fair claiming (docs/architecture.md, "Webhooks"). cand: each endpoint that
 * is neither disabled nor leased, with its earliest due delivery that nobody
 * leases; turn numbers an organization's endpoints by due time, so the
 * picks go round the organizations (every organization's first endpoint,
 * then every second one, ...) rather than strictly by due time. pick locks
 * the endpoints, skipping those another claim is taking, and checks their
 * lease again on the row it locked. One delivery per endpoint and the
 * endpoint's lease make at most one attempt in flight per endpoint across
 * all workers: a receiver that hangs holds one slot, never all of them.
 */
static const db_stmt stmt_claim = {
    "deliverer_claim",
    "WITH cand AS ("
    "  SELECT p.id AS endpoint_id, d.id, d.next_attempt_at,"
    "   row_number() OVER (PARTITION BY p.organization_id ORDER BY d.next_attempt_at, d.id)"
    "    AS turn"
    "  FROM webhook_endpoints p CROSS JOIN LATERAL ("
    "   SELECT x.id, x.next_attempt_at FROM webhook_deliveries x"
    "   WHERE x.endpoint_id = p.id AND x.status = 'pending' AND x.next_attempt_at <= now()"
    "     AND (x.locked_until IS NULL OR x.locked_until < now())"
    "   ORDER BY x.next_attempt_at LIMIT 1) d"
    "  WHERE p.disabled_at IS NULL AND (p.leased_until IS NULL OR p.leased_until < now())),"
    " pick AS ("
    "  SELECT p.id AS endpoint_id, c.id FROM webhook_endpoints p"
    "  JOIN (SELECT endpoint_id, id FROM cand ORDER BY turn, next_attempt_at LIMIT $1::int) c"
    "   ON c.endpoint_id = p.id"
    "  WHERE p.disabled_at IS NULL AND (p.leased_until IS NULL OR p.leased_until < now())"
    "  FOR UPDATE OF p SKIP LOCKED),"
    " leased AS ("
    "  UPDATE webhook_endpoints p SET leased_until = now() + $2::int * interval '1 millisecond'"
    "  FROM pick WHERE p.id = pick.endpoint_id RETURNING p.id),"
    " claimed AS ("
    "  UPDATE webhook_deliveries w SET locked_until = now() + $2::int * interval '1 millisecond'"
    "  FROM pick WHERE w.id = pick.id AND w.endpoint_id IN (SELECT id FROM leased)"
    "   AND w.status = 'pending' AND (w.locked_until IS NULL OR w.locked_until < now())"
    "  RETURNING w.id, w.event_id, w.endpoint_id, w.attempts)"
    " SELECT c.id, c.event_id, c.attempts, ev.job_id, ev.payload, p.url, p.secret, p.id"
    " FROM claimed c JOIN webhook_events ev ON ev.id = c.event_id"
    " JOIN webhook_endpoints p ON p.id = c.endpoint_id",
    2};
/*
 * The attempt is kept even when another worker recorded this attempt
 * number first (its lease had expired): it did happen. The delivery moves
 * on only when its attempt count is still the one claimed. The endpoint's
 * lease is given back either way, except after a 410 ($9): stmt_disable
 * clears it, so no claim slips in between the two statements.
 */
static const db_stmt stmt_record = {
    "deliverer_record",
    "WITH a AS ("
    "  INSERT INTO webhook_attempts (delivery_id, attempted_at, http_status, duration_ms, error)"
    "  SELECT $1::uuid, to_timestamp($2::double precision / 1000), $3::int, $4::int, $5::text"
    "  WHERE EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1::uuid)),"
    " d AS ("
    "  UPDATE webhook_deliveries SET attempts = attempts + 1, status = $7::text,"
    "   next_attempt_at = CASE WHEN $8::bigint IS NULL THEN next_attempt_at"
    "                     ELSE now() + $8::bigint * interval '1 millisecond' END,"
    "   locked_until = NULL, updated_at = now()"
    "  WHERE id = $1::uuid AND attempts = $6::int AND status = 'pending')"
    " UPDATE webhook_endpoints SET leased_until = NULL"
    " WHERE id = (SELECT endpoint_id FROM webhook_deliveries WHERE id = $1::uuid)"
    "  AND leased_until IS NOT NULL AND NOT $9::bool",
    9};
/* 410 Gone: sql/functions/webhooks.sql, webhook_endpoint_disable(). */
static const db_stmt stmt_disable = {"deliverer_disable",
                                     "SELECT webhook_endpoint_disable($1::uuid)", 1};
/*
 * Milliseconds until the next delivery that nobody leases becomes due, at
 * an endpoint that is not disabled, and not before the endpoint's lease ends.
 */
static const db_stmt stmt_next_due = {
    "deliverer_next_due",
    "SELECT ceil(extract(epoch FROM min(greatest(d.next_attempt_at, p.leased_until))"
    "  - clock_timestamp()) * 1000)::bigint"
    " FROM webhook_endpoints p CROSS JOIN LATERAL ("
    "  SELECT x.next_attempt_at FROM webhook_deliveries x"
    "  WHERE x.endpoint_id = p.id AND x.status = 'pending'"
    "    AND (x.locked_until IS NULL OR x.locked_until < now())"
    "  ORDER BY x.next_attempt_at LIMIT 1) d"
    " WHERE p.disabled_at IS NULL",
    0};
/* The lease of a claimed, unsent delivery, and its endpoint's, go back. */
static const db_stmt stmt_release = {
    "deliverer_release",
    "WITH d AS ("
    "  UPDATE webhook_deliveries SET locked_until = NULL"
    "  WHERE id = $1::uuid AND attempts = $2::int AND status = 'pending' RETURNING endpoint_id)"
    " UPDATE webhook_endpoints SET leased_until = NULL WHERE id IN (SELECT endpoint_id FROM d)",
    2};

br_status outbox_open(const char *url, const struct db_opts *opts, outbox **out)
{
	outbox *o = calloc(1, sizeof(*o));
	if (!o)
		return BR_NOMEM;
	backoff_init(&o->backoff, 100, OUTBOX_RECONNECT_MAX_MS);
	br_status st = db_open(url, opts, true, &o->db);
	if (st != BR_OK) {
		free(o);
		return st;
	}
	*out = o;
	return BR_OK;
}

void outbox_close(outbox *o)
{
	if (!o)
		return;
	db_close(o->db);
	free(o);
}

void outbox_failed(outbox *o, br_status st)
{
	if (st != BR_DB_CONN) {
		LOG_ERROR("webhook deliverer: database error %s: %s", db_sqlstate(o->db),
		          db_errmsg(o->db));
		return;
	}
	if (!o->down)
		LOG_WARN("webhook deliverer: database unavailable: %s", db_errmsg(o->db));
	o->down = true;
	o->listen_pg = NULL;
	o->retry_at = proc_now_ms() + backoff_next(&o->backoff);
}

bool outbox_ready(outbox *o, bool *listened)
{
	if (o->down && proc_now_ms() < o->retry_at)
		return false;
	br_status st = db_ensure(o->db);
	PGconn *pg = st == BR_OK ? db_pg(o->db) : NULL;
	if (pg && (pg != o->listen_pg || PQbackendPID(pg) != o->listen_pid)) {
		st = db_cmd(o->db, "LISTEN " OUTBOX_CHANNEL);
		if (st == BR_OK) {
			o->listen_pg = pg;
			o->listen_pid = PQbackendPID(pg);
			*listened = true;
		}
	}
	if (st != BR_OK) {
		outbox_failed(o, st);
		return false;
	}
	if (o->down)
		LOG_INFO("webhook deliverer: database reachable again");
	o->down = false;
	backoff_reset(&o->backoff);
	return true;
}

bool outbox_down(const outbox *o)
{
	return o->down;
}

long long outbox_retry_at(const outbox *o)
{
	return o->retry_at;
}

bool outbox_notified(outbox *o)
{
	PGconn *pg = o->listen_pg ? db_pg(o->db) : NULL;
	if (!pg)
		return false;
	if (!PQconsumeInput(pg)) {
		db_reset(o->db);
		outbox_failed(o, BR_DB_CONN);
		return false;
	}
	bool any = false;
	PGnotify *n;
	while ((n = PQnotifies(pg)) != NULL) {
		any = true;
		PQfreemem(n);
	}
	return any;
}

int outbox_fd(outbox *o)
{
	PGconn *pg = o->listen_pg ? db_pg(o->db) : NULL;
	return pg ? PQsocket(pg) : -1;
}

bool outbox_usable(outbox *o)
{
	return !o->down && db_pg(o->db) != NULL;
}

br_status outbox_claim(outbox *o, int limit, int lease_ms,
                       void (*take)(void *ctx, const struct outbox_row *row), void *ctx, int *got)
{
	char lim[16], lease[24];
	snprintf(lim, sizeof(lim), "%d", limit);
	snprintf(lease, sizeof(lease), "%d", lease_ms);
	const char *params[] = {lim, lease};
	PGresult *res = NULL;
	br_status st = db_run(o->db, &stmt_claim, params, &res);
	if (st != BR_OK)
		return st;
	int n = PQntuples(res);
	for (int i = 0; i < n; i++) {
		struct outbox_row row = {
		    .delivery_id = PQgetvalue(res, i, 0),
		    .event_id = PQgetvalue(res, i, 1),
		    .attempts = (int)strtol(PQgetvalue(res, i, 2), NULL, 10),
		    .job_id = PQgetvalue(res, i, 3),
		    .payload = PQgetvalue(res, i, 4),
		    .url = PQgetvalue(res, i, 5),
		    .secret = PQgetvalue(res, i, 6),
		    .endpoint_id = PQgetvalue(res, i, 7),
		};
		take(ctx, &row);
	}
	PQclear(res);
	*got = n;
	return BR_OK;
}

br_status outbox_record(outbox *o, const struct outbox_attempt *a)
{
	char at[24], http[16], dur[24], before[16], wait[24];
	snprintf(at, sizeof(at), "%lld", a->start_unix_ms);
	snprintf(http, sizeof(http), "%ld", a->http_status);
	snprintf(dur, sizeof(dur), "%ld", a->duration_ms < 0 ? 0 : a->duration_ms);
	snprintf(before, sizeof(before), "%d", a->attempts);
	snprintf(wait, sizeof(wait), "%ld", a->wait_ms);
	const char *params[] = {a->delivery_id,
	                        at,
	                        a->http_status ? http : NULL,
	                        dur,
	                        a->error,
	                        before,
	                        a->state,
	                        a->wait_ms >= 0 ? wait : NULL,
	                        a->gone ? "t" : "f"};
	br_status st = db_run(o->db, &stmt_record, params, NULL);
	if (st != BR_OK || !a->gone)
		return st;
	/* Not atomic with the record: a failure here leaves the endpoint enabled until its next
	 * 410. */
	const char *gone[] = {a->endpoint_id};
	return db_run(o->db, &stmt_disable, gone, NULL);
}

br_status outbox_next_due(outbox *o, bool *found, long *due_ms)
{
	PGresult *res = NULL;
	br_status st = db_run(o->db, &stmt_next_due, NULL, &res);
	if (st != BR_OK)
		return st;
	*found = PQntuples(res) == 1 && !PQgetisnull(res, 0, 0);
	if (*found)
		*due_ms = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return BR_OK;
}

br_status outbox_release(outbox *o, const char *delivery_id, int attempts)
{
	char before[16];
	snprintf(before, sizeof(before), "%d", attempts);
	const char *params[] = {delivery_id, before};
	return db_run(o->db, &stmt_release, params, NULL);
}
