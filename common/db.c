/*
 * db.c - PostgreSQL connections, statement preparation and pooling.
 *
 * A db_conn is not thread-safe. The pool protects its free list with a
 * mutex; a borrowed connection belongs to the borrowing thread until put.
 */
#include "db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "proc.h"

#define DB_MAX_PREPARED    128
#define DB_CONNECT_TIMEOUT "5"

struct db_conn {
	PGconn *pg;
	char *url;
	int statement_timeout_ms;
	/* Statements prepared on this connection, by address. */
	const db_stmt *prepared[DB_MAX_PREPARED];
	int nprepared;
	char sqlstate[6];
	char errmsg[256];
	db_conn *next_free; /* pool link */
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

static br_status db_connect(db_conn *c)
{
	char opts[64];
	snprintf(opts, sizeof(opts), "-c statement_timeout=%d -c client_min_messages=warning",
	         c->statement_timeout_ms);
	const char *keys[] = {
	    "dbname",          "connect_timeout",     "options",          "application_name",
	    "keepalives_idle", "keepalives_interval", "keepalives_count", NULL};
	const char *vals[] = {c->url, DB_CONNECT_TIMEOUT, opts, "bulkreg", "10", "5", "3", NULL};
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

br_status db_open(const char *url, int statement_timeout_ms, bool lazy, db_conn **out)
{
	db_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return BR_NOMEM;
	c->url = strdup(url);
	if (!c->url) {
		free(c);
		return BR_NOMEM;
	}
	c->statement_timeout_ms = statement_timeout_ms;
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
	free(c);
}

br_status db_ensure(db_conn *c)
{
	if (c->pg && PQstatus(c->pg) == CONNECTION_OK)
		return BR_OK;
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

/* Classifies a failed result and records its error. */
static br_status db_classify(db_conn *c, const PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
	db_set_error(c, state, msg);
	if (!c->pg || PQstatus(c->pg) != CONNECTION_OK || !state || strncmp(state, "08", 2) == 0 ||
	    strncmp(state, "57P", 3) == 0) {
		/* Connection trouble or an administrator shutdown: start over. */
		db_reset(c);
		return BR_DB_CONN;
	}
	if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
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

br_status db_run(db_conn *c, const db_stmt *stmt, const char *const *params, PGresult **res)
{
	if (!c->pg)
		return BR_DB_CONN;
	if (!db_is_prepared(c, stmt)) {
		PGresult *r = PQprepare(c->pg, stmt->name, stmt->sql, stmt->nparams, NULL);
		ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
		if (es != PGRES_COMMAND_OK) {
			br_status st = db_classify(c, r);
			PQclear(r);
			LOG_ERROR("preparing %s failed: %s", stmt->name, c->errmsg);
			return st;
		}
		PQclear(r);
		if (c->nprepared < DB_MAX_PREPARED)
			c->prepared[c->nprepared++] = stmt;
	}
	PGresult *r = PQexecPrepared(c->pg, stmt->name, stmt->nparams, params, NULL, NULL, 0);
	ExecStatusType es = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
	if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK) {
		br_status st = db_classify(c, r);
		PQclear(r);
		return st;
	}
	if (res)
		*res = r;
	else
		PQclear(r);
	return BR_OK;
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
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char *url;
	int statement_timeout_ms;
	int size;           /* most connections */
	int open;           /* connections created so far */
	db_conn *free_list; /* idle connections */
};

db_pool *db_pool_new(const char *url, int statement_timeout_ms, int size)
{
	db_pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->url = strdup(url);
	if (!p->url) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->mu, NULL);
	proc_cond_init(&p->cv);
	p->statement_timeout_ms = statement_timeout_ms;
	p->size = size;
	return p;
}

void db_pool_free(db_pool *p)
{
	if (!p)
		return;
	while (p->free_list) {
		db_conn *c = p->free_list;
		p->free_list = c->next_free;
		db_close(c);
	}
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->cv);
	free(p->url);
	free(p);
}

br_status db_pool_get(db_pool *p, int wait_ms, db_conn **out)
{
	struct timespec deadline = proc_deadline(wait_ms);
	db_conn *c = NULL;
	bool create = false;
	pthread_mutex_lock(&p->mu);
	while (!p->free_list && p->open >= p->size) {
		if (pthread_cond_timedwait(&p->cv, &p->mu, &deadline) == ETIMEDOUT)
			break;
	}
	if (p->free_list) {
		c = p->free_list;
		p->free_list = c->next_free;
	} else if (p->open < p->size) {
		p->open++;
		create = true;
	}
	pthread_mutex_unlock(&p->mu);
	if (!c && !create)
		return BR_TIMEOUT;
	if (create) {
		br_status st = db_open(p->url, p->statement_timeout_ms, true, &c);
		if (st != BR_OK) {
			pthread_mutex_lock(&p->mu);
			p->open--;
			pthread_cond_signal(&p->cv);
			pthread_mutex_unlock(&p->mu);
			return st;
		}
	}
	br_status st = db_ensure(c);
	if (st != BR_OK) {
		db_pool_put(p, c);
		return st;
	}
	*out = c;
	return BR_OK;
}

void db_pool_put(db_pool *p, db_conn *c)
{
	if (!c)
		return;
	if (c->pg && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
		/* A borrower left a transaction open: never hand that on. */
		db_rollback(c);
		if (PQtransactionStatus(c->pg) != PQTRANS_IDLE)
			db_reset(c);
	}
	pthread_mutex_lock(&p->mu);
	c->next_free = p->free_list;
	p->free_list = c;
	pthread_cond_signal(&p->cv);
	pthread_mutex_unlock(&p->mu);
}
