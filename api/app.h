/*
 * app.h - what every API request handler shares, and the per-request
 * context the router hands to route functions.
 *
 * struct api_app is created by main before the server starts and read-only
 * afterwards (its pools are internally synchronised). struct api_req lives
 * for one request on one pool thread.
 */
#ifndef BULKREG_API_APP_H
#define BULKREG_API_APP_H

#include <jansson.h>

#include "config.h"
#include "db.h"
#include "http.h"
#include "ops.h"
#include "publisher.h"
#include "ratelimit.h"
#include "readbatch.h"

/* How long a request waits for a free database connection. */
#define API_DB_WAIT_MS 5000
/* How long marking a published job waits for one (the sweeper covers a miss). */
#define API_DB_MARK_WAIT_MS      1000
#define API_STATEMENT_TIMEOUT_MS 15000
/*
 * A request waiting for a row lock (a session row another transaction
 * holds: a frozen worker's, say) gives up after API_LOCK_TIMEOUT_MS and
 * answers 503 with Retry-After instead of holding one of the pool's few
 * connections for the statement timeout. No API statement leaves a
 * transaction open; API_IDLE_TX_TIMEOUT_MS only guards against one that
 * would.
 */
#define API_LOCK_TIMEOUT_MS    3000
#define API_IDLE_TX_TIMEOUT_MS 10000

struct api_app {
	const struct br_config *cfg;
	db_pool *db;
	pub_pool *pub;
	ops *ops;
	ratelimit *rl; /* NULL when BULKREG_RATE_LIMIT=0 */
	readbatch *reads;
};

struct api_dialect;

struct api_req {
	struct api_app *app;
	const struct api_dialect *dialect; /* NULL: the native JSON:API (dialect.h) */
	struct http_req *http;
	struct http_resp *resp;
	db_conn *db;                 /* borrowed by the router; NULL for batched reads */
	char org_id[UUID_LEN + 1];   /* the token's organization */
	char token_id[UUID_LEN + 1]; /* the token itself (api_tokens.id) */
	char id[UUID_LEN + 1];       /* the :id path segment, when the route has one */
	char sub[UUID_LEN + 1];      /* the second :id (a session's person), or empty */
	/*
	 * Tasks to publish once the request's writes committed and r->db is
	 * back in the pool (jobs.h): a job id and its task ids as a
	 * PostgreSQL array literal (owned), or NULL.
	 */
	char publish_job[UUID_LEN + 1];
	char *publish_tasks;
};

/*
 * Creates bulkreg_http_requests_total's series of the API's routes at 0
 * (every pattern of the route table with 200, 400, 401, 404, 429 and 503;
 * "unmatched" with 404; "body_limit" with 413; "/console", the operator
 * console, with 200, 303, 401, 403 and 404), so they exist before their
 * first request (docs/operations.md, Metrics). After ops_init.
 */
void api_metrics_zero(void);

/* The server's single handler: routes the request (see routes.c). */
void api_handle(void *ctx, struct http_req *req, struct http_resp *resp);

/*
 * The HTTP server's own failures (413, 503 at a bound) for req, in the
 * shape of its path's API: a compatible API's dialect, else JSON:API
 * (http_error_fn).
 */
void api_http_error(void *ctx, struct http_req *req, struct http_resp *resp, unsigned status,
                    const char *code, const char *title, const char *detail);

/*
 * A GET of one resource by its :id whose statement also authenticates, for
 * a batch of requests at once (readbatch.h): it takes ($1 text[] of token
 * digests in hex, $2 uuid[] of ids) and returns, for each request whose
 * token is known and not revoked, one row (its 1-based position,
 * organization id, token id, the resource or NULL when the organization
 * has no such resource). One statement instead of two per request, and
 * one for many requests under load (routes.c).
 *
 * The arrays are unnested from sub-selects so that PostgreSQL sees no
 * array length when it plans: a custom plan for a known length would look
 * cheaper than the generic one, and the statement would be planned again
 * on every execution.
 */
struct api_read {
	db_stmt stmt;
	const char *missing; /* detail of the 404 */
};

extern const struct api_read route_sessions_read;
extern const struct api_read route_jobs_read;

/* Route functions, one file per resource. */
void route_sessions_create(struct api_req *r);
void route_sessions_list(struct api_req *r);
void route_sessions_patch(struct api_req *r);
void route_sessions_delete(struct api_req *r);
void route_people_list(struct api_req *r);
void route_people_read(struct api_req *r);
void route_people_create(struct api_req *r);
void route_people_patch(struct api_req *r);
void route_people_delete(struct api_req *r);
void route_bulk_create(struct api_req *r);
void route_jobs_list(struct api_req *r);
void route_jobs_update(struct api_req *r);
void route_jobs_delete(struct api_req *r);
void route_jobs_tasks(struct api_req *r);
void route_webhooks_create(struct api_req *r);
void route_webhooks_list(struct api_req *r);
void route_webhooks_delete(struct api_req *r);
void route_webhooks_deliveries(struct api_req *r);
void route_webhooks_delivery_retry(struct api_req *r);

#endif
