/*
 * support.h - what bulkreg's integration and end-to-end tests share.
 *
 * The services come from scripts/test, which exports DATABASE_URL, AMQP_URL,
 * BULKREG_LOCAL_DIR (the test stack's directory, for scripts/ctl) and
 * BULKREG_ROOT (the repository). Every test makes its own organization and
 * session, so tests never share state. Functions abort the test (Criterion
 * cr_assert/cr_fatal) on failure unless they say otherwise.
 */
#ifndef BULKREG_TEST_SUPPORT_H
#define BULKREG_TEST_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>
#include <libpq-fe.h>

/* ---- environment and database ---- */

/* DATABASE_URL / AMQP_URL from the environment (fatal when unset). */
const char *t_database_url(void);
const char *t_amqp_url(void);

/* A new connection to DATABASE_URL; the schema is migrated once per process. */
PGconn *t_db(void);

/*
 * Applies the embedded migrations and function files to the database at
 * url: how many of them it applied, the two together.
 */
int t_migrate(const char *url);

/*
 * Runs sql with printf-style parameters already substituted by the caller
 * via PQexecParams-style $1..$n text params; returns the result (fatal on
 * error). Free with PQclear.
 */
PGresult *t_sql(PGconn *db, const char *sql, int nparams, const char *const *params);

/* First column of the first row as a long (fatal when absent). */
long t_sql_long(PGconn *db, const char *sql, int nparams, const char *const *params);

/* First column of the first row as a new string (caller frees; fatal when absent). */
char *t_sql_text(PGconn *db, const char *sql, int nparams, const char *const *params);

/* ---- throwaway databases ---- */

/* url with its database name replaced by name, into out. */
void t_url_with_database(const char *url, const char *name, char *out, size_t cap);

/*
 * Creates an empty database (the bulkreg role has CREATEDB) on DATABASE_URL's
 * server: its URL into url. t_scratch_drop_all drops it.
 */
void t_scratch_create(char *url, size_t cap);

/* Drops every database t_scratch_create made in this process (a .fini). */
void t_scratch_drop_all(void);

/* A new session of org titled title, inserted through db: its id into sid. */
void t_session_sql(PGconn *db, const char *org, const char *title, char sid[37]);

/* A job of n tasks (people p1..pn@example.com) into sid through create_job(): its id. */
void t_job_sql(PGconn *db, const char *org, const char *sid, int n, char job[37]);

/* A fresh organization with a unique name and a token for it. */
struct t_org {
	char id[37];
	char name[64];
	char token[64];
};
void t_org_new(struct t_org *org);

/*
 * The invariants every test checks at its end: for every job, the counters
 * equal the counts of its tasks by status and total_processed_items is their
 * sum; no session holds more seats than its capacity; session counters
 * equal the counts of their people by status.
 */
void t_check_invariants(PGconn *db);

/* Polls until `cond` holds or timeout_ms passes; returns whether it held. */
bool t_poll(bool (*cond)(void *ctx), void *ctx, int timeout_ms);

/* A t_poll condition: the backend of the connection ctx (a PGconn *) waits for a lock. */
bool t_waits_for_lock(void *ctx);

/* A free TCP port on 127.0.0.1. */
int t_free_port(void);

/*
 * A port free now, below the kernel's ephemeral range (so no outgoing
 * connection is given it) and the scripts' fixed ports: for a listener on
 * an address other than loopback, or one that must come back on the same
 * port.
 */
int t_quiet_port(void);

/* Monotonic milliseconds. */
long long t_now_ms(void);

/* A random (version 4) UUID in canonical lower-case form. */
void t_uuid(char out[37]);

/* A name unique to this run: "<prefix>-<pid>-<ms>-<counter>-<random>". */
void t_unique_name(char *out, size_t cap, const char *prefix);

/* ---- processes (stack.c) ---- */

/*
 * Extra environment for a started process: "NAME=value" strings, NULL
 * terminated (may be NULL). They are added to the test's own environment.
 */
struct t_proc {
	pid_t pid;
	int port; /* API port, or the worker's metrics port */
	char log_path[256];
	char url[64];    /* "http://127.0.0.1:<port>" (t_api_start, t_worker_start) */
	int exit_status; /* once reaped (pid is then 0): as t_proc_stop returns */
};

/*
 * Started processes get the test's environment, then these defaults, then
 * env (a later NAME= wins): BULKREG_API_BIND=127.0.0.1,
 * BULKREG_WEBHOOK_ALLOW_PRIVATE=1 (receivers listen on loopback), and the
 * port (BULKREG_API_PORT or BULKREG_WORKER_METRICS_PORT) of a free port.
 * stdout and stderr go to log_path, under $BULKREG_LOCAL_DIR/logs (else
 * /tmp/bulkreg-tests). A started process is killed (SIGKILL) if the test
 * process dies first, so a failed test never leaves one behind; start and
 * stop processes from the thread that runs the test.
 */

/* Starts build/bin/bulkreg-api on a free port and waits for /healthz. */
void t_api_start(struct t_proc *p, const char *const *env);

/* Starts build/bin/bulkreg-worker (metrics on a free port), waits for /readyz 200. */
void t_worker_start(struct t_proc *p, const char *const *env);

/* Sends sig and waits up to timeout_ms; returns the exit status (-1 on timeout,
 * 128+N for death by signal N). Safe on an already-stopped process (pid 0):
 * returns its recorded exit_status. sig 0 only waits. */
int t_proc_stop(struct t_proc *p, int sig, int timeout_ms);

/*
 * Starts prog (a name in the bin directory, or a path) with args (NULL
 * terminated, may be NULL) in the background, output to p->log_path; does
 * not wait for anything. p->port is 0. Collect it with t_proc_stop.
 */
void t_proc_spawn(struct t_proc *p, const char *prog, const char *const *args,
                  const char *const *env);

/* True while the process runs; reaps it (recording exit_status) once it exited. */
bool t_proc_alive(struct t_proc *p);

/* Prints the last `lines` lines of the process's log on stderr. */
void t_proc_print_log(const struct t_proc *p, int lines);

/* The directory of the binaries under test (BULKREG_BIN_DIR of the build). */
const char *t_bin_dir(void);

/*
 * Runs prog (as t_proc_spawn) with args and extra env, waits up to
 * timeout_ms (then SIGKILL, -1). Captures stdout into out and stderr into
 * err (each may be NULL: then it goes to the test's own stdout/stderr;
 * output beyond a buffer's capacity is dropped). Returns the exit status.
 */
int t_run(const char *prog, const char *const *args, const char *const *env, char *out,
          size_t outcap, char *err, size_t errcap, int timeout_ms);

/* Runs scripts/ctl with the given arguments against the test stack; returns exit status.
 * Fatal when BULKREG_LOCAL_DIR is unset (it would act on the developer's stack). */
int t_ctl(const char *action, const char *what);

/* As t_ctl with any arguments (e.g. "rabbitmqctl", "list_queues", NULL), stdout into out. */
int t_ctl_capture(const char *const *args, char *out, size_t outcap);

/*
 * Runs scripts/standby ACTION (start, url, kill-primary, promote, drop)
 * against the test stack, stdout into out (may be NULL); returns the exit
 * status. Fatal when BULKREG_LOCAL_DIR is unset, as t_ctl.
 */
int t_standby(const char *action, char *out, size_t outcap);

/* Runs build/bin/bulkreg-admin with args (NULL terminated); captures stdout into out
 * (may be NULL) and returns the exit status. */
int t_admin(char *out, size_t outcap, const char *const *args);

/* ---- HTTP client (http_client.c) ---- */

struct t_resp {
	long status;
	char *body;         /* NUL-terminated, owned */
	json_t *json;       /* parsed body or NULL, owned */
	char location[256]; /* Location header, if any */
	char headers[4096]; /* all response headers, raw */
};

/*
 * Sends method url with an optional body (content-type application/json
 * unless content_type is given) and the bearer token (NULL for none).
 * extra_headers is NULL or a NULL-terminated list of "Name: value".
 */
void t_http(struct t_resp *r, const char *method, const char *url, const char *token,
            const char *body, const char *const *extra_headers);
void t_resp_free(struct t_resp *r);

/*
 * As t_http, but a transport failure (refused, timed out) is not fatal:
 * returns false with r->status 0 and the reason in err. Always t_resp_free r.
 * timeout_ms 0 means the default (30 s).
 */
bool t_http_try(struct t_resp *r, const char *method, const char *url, const char *token,
                const char *body, const char *const *extra_headers, int timeout_ms, char *err,
                size_t errlen);

/* Status of GET url (no token), 0 when it could not be reached within timeout_ms. */
long t_http_status(const char *url, int timeout_ms);

/* A header's value from r->headers (case-insensitive); NULL when absent. Static buffer. */
const char *t_resp_header(const struct t_resp *r, const char *name);

/* ---- API fixtures ---- */

/*
 * POSTs /v1/sessions with the attributes object attrs (a JSON text) to the
 * API at base ("http://127.0.0.1:port") and writes the new id into id.
 */
void t_session_new(const char *base, const char *token, const char *attrs, char id[37]);

/* Publishes the message of every task of job_id again, as a late redelivery would. */
void t_republish_job(PGconn *db, const char *job_id);

/* A t_poll condition: bulkreg.tasks holds no ready message (ctx unused). */
bool t_tasks_queue_empty(void *ctx);

/* ---- webhook receiver (receiver.c) ---- */

struct t_hook {
	char id[128];           /* webhook-id */
	char timestamp[32];     /* webhook-timestamp */
	char signature[256];    /* webhook-signature */
	char *body;             /* owned */
	long long at_ms;        /* when received (t_now_ms) */
	char content_type[128]; /* content-type header */
	int answered;           /* the status the receiver answered */
};

typedef struct t_receiver t_receiver;

/* Starts a receiver on 127.0.0.1:<free port>; its URL is t_receiver_url(). */
t_receiver *t_receiver_start(void);
const char *t_receiver_url(t_receiver *rc);
int t_receiver_port(t_receiver *rc);

/*
 * Starts a receiver on 127.0.0.1:port (0: a free port), e.g. to bring back
 * a stopped receiver at the URL an endpoint already names. Fatal when the
 * port cannot be bound: while it is closed, any outgoing connection may be
 * given a port of the ephemeral range, so choose one below it (see
 * tests/e2e/test_fault_webhook.c).
 */
t_receiver *t_receiver_start_on(int port);
void t_receiver_stop(t_receiver *rc);

/*
 * The statuses to answer, in order, for the next requests (e.g. {500, 500}
 * then 200 forever after); delay_ms > 0 makes every answer wait that long.
 */
void t_receiver_script(t_receiver *rc, const int *statuses, int n, int delay_ms);

/*
 * After t_receiver_script: the Retry-After header of the script's answers,
 * values[i] for statuses[i] (NULL or "" for none). "date+N" sends the
 * HTTP-date N seconds after the answer; anything else is sent as is.
 */
void t_receiver_retry_after(t_receiver *rc, const char *const *values, int n);

/* Number of requests received so far; copy of request i (caller frees body). */
int t_receiver_count(t_receiver *rc);
bool t_receiver_get(t_receiver *rc, int i, struct t_hook *out);

/* Waits until at least n requests were received or timeout_ms passed; returns whether. */
bool t_receiver_wait(t_receiver *rc, int n, int timeout_ms);

/* Verifies a Standard Webhooks signature of hook with secret ("whsec_..."). */
bool t_hook_verify(const struct t_hook *hook, const char *secret);

/* The resident set size of process pid in KiB, from /proc (fatal if unreadable). */
long t_rss_kib(pid_t pid);

#endif
