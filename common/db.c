/*
 * db.c - PostgreSQL connections, statement preparation and pooling.
 *
 * A db_conn is not thread-safe. The pool (pool.c) protects its free items
 * with a mutex; a borrowed connection belongs to the borrowing thread until put.
 */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "pool.h"
#include "proc.h"
#include "strbuf.h"

#define DB_MAX_PREPARED 128
#define DB_READ_ONLY    "25006" /* read_only_sql_transaction: a standby refused a write */

struct db_conn {
	PGconn *pg;
	char *url;
	struct db_opts opts;
	char *options; /* the libpq `options` parameter: our bounds, then the URL's own */
	/* Statements prepared on this connection, by address. */
	const db_stmt *prepared[DB_MAX_PREPARED];
	int nprepared;
	char sqlstate[6];
	char errmsg[256];
};

static void db_set_error(db_conn *c, const char *state, const char *msg)
{
	snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");
	snprintf(c->errmsg, sizeof(c->errmsg), "%s", msg ? msg : "");
	/* libpq messages end in a newline; logs want one line. */
	size_t n = strlen(c->errmsg);
	while (n && (c->errmsg[n - 1] == '\n' || c->errmsg[n - 1] == ' '))
		c->errmsg[--n] = '\0';
}

/*
 * The libpq `options` value: our -c settings first, then the options the
 * URL gives (the keyword we pass would otherwise replace them), so an
 * operator's own -c in DATABASE_URL wins. NULL on NOMEM.
 */
static char *db_build_options(const char *url, const struct db_opts *o)
{
	strbuf sb;
	sb_init(&sb, 4096);
	br_status st = sb_appends(&sb, "-c client_min_messages=warning");
	if (st == BR_OK && o->statement_timeout_ms > 0)
		st = sb_appendf(&sb, " -c statement_timeout=%d", o->statement_timeout_ms);
	if (st == BR_OK && o->lock_timeout_ms > 0)
		st = sb_appendf(&sb, " -c lock_timeout=%d", o->lock_timeout_ms);
	if (st == BR_OK && o->idle_in_tx_timeout_ms > 0)
		st = sb_appendf(&sb, " -c idle_in_transaction_session_timeout=%d",
		                o->idle_in_tx_timeout_ms);
	if (st == BR_OK && o->join_url_base) {
		/* libpq splits options at spaces; a backslash keeps one in a value. */
		st = sb_appends(&sb, " -c bulkreg.join_url_base=");
		for (const char *c = o->join_url_base; st == BR_OK && *c; c++)
			st = sb_appendf(&sb, "%s%c", *c == ' ' || *c == '\\' ? "\\" : "", *c);
	}
	/* A URL libpq cannot parse fails at connect, with libpq's own message. */
	PQconninfoOption *info = PQconninfoParse(url, NULL);
	for (PQconninfoOption *i = info; st == BR_OK && i && i->keyword; i++) {
		if (strcmp(i->keyword, "options") == 0 && i->val && i->val[0])
			st = sb_appendf(&sb, " %s", i->val);
	}
	PQconninfoFree(info);
	if (st != BR_OK) {
		sb_free(&sb);
		return NULL;
	}
	return sb_take(&sb);
}

static br_status db_connect(db_conn *c)
{
	char timeout[16];
	snprintf(timeout, sizeof(timeout), "%d",
	         c->opts.connect_timeout_s > 0 ? c->opts.connect_timeout_s : DB_CONNECT_TIMEOUT_S);
	const char *keys[] = {
	    "dbname",          "connect_timeout",     "options",          "application_name",
	    "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
	const char *vals[] = {c->url, timeout, c->options, "bulkreg", "10", "5", "3", NULL};
	PQfinish(c->pg);
	c->nprepared = 0;
	c->pg = PQconnectdbParams(keys, vals, 1);
	if (!c->pg)
		return BR_NOMEM;
	if (PQstatus(c->pg) != CONNECTION_OK) {
		db_set_error(c, "08006", PQerrorMessage(c->pg));
		PQfinish(c->pg);
		c->pg = NULL;
		return BR_DB_CONN;
	}
	return BR_OK;
}

br_status db_open(const char *url, const struct db_opts *opts, bool lazy, db_conn **out)
{
	db_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return BR_NOMEM;
	c->opts = *opts;
	c->url = strdup(url);
	c->options = c->url ? db_build_options(url, opts) : NULL;
	if (!c->url || !c->options) {
		db_close(c);
		return BR_NOMEM;
	}
	br_status st = db_connect(c);
	if (st != BR_OK && !(lazy && st == BR_DB_CONN)) {
		db_close(c);
		return st;
	}
	*out = c;
	return BR_OK;
}

void db_close(db_conn *c)
{
	if (!c)
		return;
	PQfinish(c->pg);
	free(c->url);
	free(c->options);
	free(c);
}

br_status db_ensure(db_conn *c)
{
	if (c->pg && PQstatus(c->pg) == CONNECTION_OK) {
		/*
		 * Inside a transaction a replaced connection would lose it
		 * silently: the next statement finds out instead.
		 */
		if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
			return BR_OK;
		/*
		 * A PostgreSQL restart (or pg_terminate_backend, or
		 * idle_in_transaction_session_timeout) ends a session with a
		 * FATAL message and a closed socket, which libpq reads only on
		 * the connection's next use: a pooled connection would fail the
		 * request that takes it. Reading what already arrived costs one
		 * recv() and never blocks (libpq keeps its socket non-blocking);
		 * a closed socket turns the status to CONNECTION_BAD.
		 */
		if (PQconsumeInput(c->pg) && PQstatus(c->pg) == CONNECTION_OK)
			return BR_OK;
		db_set_error(c, "08006", PQerrorMessage(c->pg));
		LOG_INFO("database connection found closed while idle (%s): reconnecting",
		         c->errmsg);
	}
	return db_connect(c);
}

void db_reset(db_conn *c)
{
	PQfinish(c->pg);
	c->pg = NULL;
	c->nprepared = 0;
}

PGconn *db_pg(db_conn *c)
{
	return c->pg;
}

const char *db_sqlstate(const db_conn *c)
{
	return c->sqlstate;
}

const char *db_errmsg(const db_conn *c)
{
	return c->errmsg;
}

bool db_failed_busy(const db_conn *c)
{
	return strcmp(c->sqlstate, "55P03") == 0 || strcmp(c->sqlstate, "57014") == 0;
}

/* Classifies a failed result and records its error. */
static br_status db_classify(db_conn *c, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
	db_set_error(c, state, msg);
	/*
	 * Connection trouble or an administrator shutdown: start over. So too
	 * for a write refused as read-only (25006): this connection reached a
	 * standby (a DATABASE_URL without target_session_attrs=read-write, or
	 * a server that stopped being the primary), and only a new connection,
	 * which libpq steers to the writable host, can succeed; nothing ran.
	 */
	if (!c->pg || PQstatus(c->pg) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
	    strncmp(state, "57P", 3) == 0 || strcmp(state, DB_READ_ONLY) == 0) {
		db_reset(c);
		return BR_DB_CONN;
	}
	/*
	 * lock_timeout (55P03) rolled the transaction back like a deadlock
	 * would: running it again later may well succeed.
	 */
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
	    strcmp(state, "55P03") == 0)
		return BR_DB_RETRY;
	return BR_DB;
}

static bool db_is_prepared(const db_conn *c, const db_stmt *stmt)
{
	for (int i = 0; i < c->nprepared; i++) {
		if (c->prepared[i] == stmt)
			return true;
	}
	return false;
}

static bool db_res_ok(const PGresult *r)
{
	ExecStatusType es = PQresultStatus(r);
	return es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK;
}

/*
 * Reads every result of the command just sent: the first failure if there
 * was one, else the last result (NULL when libpq returned none). *completed
 * tells whether the server reported the command done before any failure.
 */
static PGresult *db_collect(db_conn *c, bool *completed)
{
	PGresult *keep = NULL, *r;
	*completed = false;
	while ((r = PQgetResult(c->pg)) != NULL) {
		bool ok = db_res_ok(r);
		*completed = *completed || (ok && (!keep || db_res_ok(keep)));
		if (keep && !db_res_ok(keep)) {
			PQclear(r); /* the first failure is the one that counts */
			continue;
		}
		PQclear(keep);
		keep = r;
	}
	return keep;
}

/*
 * One attempt of db_run. On failure *harmless tells whether the attempt
 * cannot have had any effect on the database (see db_run).
 */
static br_status db_run_once(db_conn *c, const db_stmt *stmt, bool read_only,
                             const char *const *params, PGresult **res, bool *harmless)
{
	bool completed;
	br_status st;
	/* A Parse has no effect, so any failure to prepare is harmless. */
	*harmless = true;
	if (!db_is_prepared(c, stmt)) {
		PGresult *r = NULL;
		if (PQsendPrepare(c->pg, stmt->name, stmt->sql, stmt->nparams, NULL))
			r = db_collect(c, &completed);
		if (!r || !db_res_ok(r)) {
			st = db_classify(c, r);
			PQclear(r);
			LOG_ERROR("preparing %s failed: %s", stmt->name, c->errmsg);
			return st;
		}
		PQclear(r);
		if (c->nprepared < DB_MAX_PREPARED)
			c->prepared[c->nprepared++] = stmt;
	}
	/* Not sent at all (the socket was found closed): it cannot have run. */
	if (!PQsendQueryPrepared(c->pg, stmt->name, stmt->nparams, params, NULL, NULL, 0))
		return db_classify(c, NULL);
	PGresult *r = db_collect(c, &completed);
	if (r && db_res_ok(r)) {
		if (res)
			*res = r;
		else
			PQclear(r);
		return BR_OK;
	}
	st = db_classify(c, r);
	PQclear(r);
	/*
	 * Sent, and the connection died: the statement may have run, and in
	 * autocommit even committed (its CommandComplete lost with the
	 * backend). Three cases are certain. A read-only statement may run
	 * twice. 57P01 (admin_shutdown: a fast shutdown or restart, or
	 * pg_terminate_backend) with no completion before it: the backend
	 * raised it itself, before Execute finished (commit interrupts are
	 * held off, and the backend's output is one ordered stream, so a
	 * completed statement's CommandComplete would have come first), so the
	 * implicit transaction rolled back. A write refused by a standby
	 * (25006) ran nothing either. A closed socket without 57P01 (a
	 * crashed or killed backend, a network failure) proves nothing.
	 */
	*harmless = st == BR_DB_CONN && !completed &&
	            (read_only || strcmp(c->sqlstate, "57P01") == 0 ||
	             strcmp(c->sqlstate, DB_READ_ONLY) == 0);
	return st;
}

static br_status db_run_retrying(db_conn *c, const db_stmt *stmt, bool read_only,
                                 const char *const *params, PGresult **res)
{
	if (!c->pg)
		return BR_DB_CONN;
	/*
	 * Outside a transaction block the statement is its own transaction,
	 * so running it again on a new connection is the same request; inside
	 * one, the transaction died with the connection and only the caller
	 * can start it over.
	 */
	bool own_tx = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
	bool harmless = false;
	br_status st = db_run_once(c, stmt, read_only, params, res, &harmless);
	if (st != BR_DB_CONN || !harmless || !own_tx || !c->opts.stateless)
		return st;
	LOG_INFO("database connection lost before %s ran (%s): running it on a new connection",
	         stmt->name, c->errmsg);
	st = db_connect(c);
	if (st == BR_OK)
		st = db_run_once(c, stmt, read_only, params, res, &harmless);
	return st;
}

br_status db_run(db_conn *c, const db_stmt *stmt, const char *const *params, PGresult **res)
{
	return db_run_retrying(c, stmt, false, params, res);
}

br_status db_run_read(db_conn *c, const db_stmt *stmt, const char *const *params, PGresult **res)
{
	return db_run_retrying(c, stmt, true, params, res);
}

br_status db_cmd(db_conn *c, const char *sql)
{
	if (!c->pg)
		return BR_DB_CONN;
	PGresult *r = PQexec(c->pg, sql);
	ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	br_status st = BR_OK;
	if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK)
		st = db_classify(c, r);
	PQclear(r);
	return st;
}

br_status db_begin(db_conn *c)
{
	bool idle = c->pg && PQtransactionStatus(c->pg) == PQTRANS_IDLE;
	br_status st = db_cmd(c, "BEGIN");
	if (st != BR_DB_CONN || !idle || !c->opts.stateless)
		return st;
	/* A BEGIN outside a transaction changed nothing: on a fresh connection, once more. */
	LOG_INFO("database connection lost before BEGIN (%s): beginning on a new connection",
	         c->errmsg);
	db_reset(c);
	st = db_ensure(c);
	return st == BR_OK ? db_cmd(c, "BEGIN") : st;
}

void db_rollback(db_conn *c)
{
	if (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
		PGresult *r = PQexec(c->pg, "ROLLBACK");
		PQclear(r);
	}
}

const char *db_val(const PGresult *res, int row, int col)
{
	if (PQgetisnull(res, row, col))
		return NULL;
	return PQgetvalue(res, row, col);
}

/* ---- pool ---- */

struct db_pool {
	pool *pool; /* of db_conn */
	char *url;
	struct db_opts opts;
};

static br_status pool_open_conn(void *ctx, void **item)
{
	db_pool *p = ctx;
	db_conn *c = NULL;
	br_status st = db_open(p->url, &p->opts, true, &c);
	if (st == BR_OK)
		*item = c;
	return st;
}

static void pool_close_conn(void *ctx, void *item)
{
	(void)ctx;
	db_close(item);
}

static br_status pool_check_conn(void *ctx, void *item)
{
	(void)ctx;
	return db_ensure(item);
}

static void pool_clean_conn(void *ctx, void *item)
{
	(void)ctx;
	db_conn *c = item;
	if (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
		/* A borrower left a transaction open: never hand that on. */
		db_rollback(c);
		if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
			db_reset(c);
	}
}

static const struct pool_ops db_pool_ops = {
    .open = pool_open_conn,
    .close = pool_close_conn,
    .check = pool_check_conn,
    .clean = pool_clean_conn,
};

db_pool *db_pool_new(const char *url, const struct db_opts *opts, int size)
{
	db_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->url = strdup(url);
	p->opts = *opts;
	/* A pool hands connections to whoever comes: they can carry no session state. */
	p->opts.stateless = true;
	p->pool = p->url ? pool_new(size, &db_pool_ops, p) : NULL;
	if (!p->pool) {
		free(p->url);
		free(p);
		return NULL;
	}
	return p;
}

void db_pool_free(db_pool *p)
{
	if (!p)
		return;
	pool_free(p->pool);
	free(p->url);
	free(p);
}

br_status db_pool_get(db_pool *p, int wait_ms, db_conn **out)
{
	void *item = NULL;
	br_status st = pool_get(p->pool, wait_ms, &item);
	if (st == BR_OK)
		*out = item;
	return st;
}

void db_pool_put(db_pool *p, db_conn *c)
{
	pool_put(p->pool, c);
}
