/*
 * routes_webhooks.c - webhook endpoints of an organization (docs/openapi.yaml
 * Webhooks): POST /v1/webhooks, GET /v1/webhooks, DELETE /v1/webhooks/:id
 * GET /v1/webhooks/:id/deliveries (one entry per delivery attempt) and
 * POST /v1/webhooks/:id/deliveries/:delivery_id/retry (send it again now).
 *
 * An endpoint's secret is generated here and shown only in the response to
 * its creation. The target policy (http(s), public addresses unless
 * BULKREG_WEBHOOK_ALLOW_PRIVATE) is common/webhook.c's, which also gives the
 * URL to store (an internationalized host in punycode); the deliverer
 * checks the address again when it connects. An organization has at most
 * BULKREG_WEBHOOK_MAX_ENDPOINTS endpoints. Resources are built in SQL.
 *
 * Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jsonapi.h"
#include "log.h"
#include "pgarray.h"
#include "validate.h"
#include "webhook.h"

/*
 * The webhook resource of endpoint row e, in two halves so the creation
 * response can add the secret between them.
 */
#define WH_RESOURCE_HEAD                                                                     \
	"json_build_object('type', 'webhooks', 'id', e.id, 'attributes', json_build_object(" \
	"'url', e.url, 'events', to_json(e.events)"
#define WH_RESOURCE_TAIL                                               \
	", 'created_at', rfc3339(e.created_at),"                       \
	" 'disabled_at', rfc3339(e.disabled_at)),"                     \
	" 'links', json_build_object('self', '/v1/webhooks/' || e.id," \
	" 'deliveries', '/v1/webhooks/' || e.id || '/deliveries'))"

/* No row when the organization has BULKREG_WEBHOOK_MAX_ENDPOINTS already
 * (sql/functions/webhooks.sql). */
static const db_stmt stmt_insert = {
    "webhooks_insert",
    "SELECT " WH_RESOURCE_HEAD ", 'secret', e.secret" WH_RESOURCE_TAIL
    " FROM webhook_endpoint_create($1, $2, $3::text[], $4, $5::int) e",
    5};
static const db_stmt stmt_list = {
    "webhooks_list",
    "SELECT (SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1),"
    " (SELECT COALESCE(json_agg(x.r ORDER BY x.created_at, x.id), '[]'::json) FROM ("
    "   SELECT e.created_at, e.id, " WH_RESOURCE_HEAD WH_RESOURCE_TAIL " AS r"
    "   FROM webhook_endpoints e WHERE e.organization_id = $1"
    "   ORDER BY e.created_at, e.id LIMIT $2::int OFFSET $3::bigint) x)",
    3};
static const db_stmt stmt_delete = {
    "webhooks_delete", "DELETE FROM webhook_endpoints WHERE id = $1 AND organization_id = $2", 2};
/* Newest first; an attempt is named by its UUID. */
static const db_stmt stmt_attempts = {
    "webhooks_attempts",
    "SELECT EXISTS (SELECT 1 FROM webhook_endpoints WHERE id = $1 AND organization_id = $2),"
    " (SELECT count(*) FROM webhook_attempts a"
    "   JOIN webhook_deliveries d ON d.id = a.delivery_id"
    "   JOIN webhook_endpoints p ON p.id = d.endpoint_id AND p.organization_id = $2"
    "   WHERE d.endpoint_id = $1),"
    " (SELECT COALESCE(json_agg(x.r ORDER BY x.attempted_at DESC, x.id DESC), '[]'::json)"
    "  FROM (SELECT a.attempted_at, a.id, json_build_object("
    "     'type', 'webhook_attempts', 'id', a.id::text, 'attributes', json_build_object("
    "       'event_id', d.event_id, 'event_type', ev.type, 'delivery_id', d.id,"
    "       'delivery_status', d.status, 'attempted_at', rfc3339(a.attempted_at),"
    "       'http_status', a.http_status, 'duration_ms', a.duration_ms, 'error', a.error)) AS r"
    "   FROM webhook_attempts a"
    "   JOIN webhook_deliveries d ON d.id = a.delivery_id"
    "   JOIN webhook_endpoints p ON p.id = d.endpoint_id AND p.organization_id = $2"
    "   JOIN webhook_events ev ON ev.id = d.event_id"
    "   WHERE d.endpoint_id = $1"
    "   ORDER BY a.attempted_at DESC, a.id DESC LIMIT $3::int OFFSET $4::bigint) x)",
    4};

static const db_stmt stmt_retry = {
    "webhooks_delivery_retry", "SELECT outcome, delivery FROM webhook_delivery_retry($1, $2, $3)",
    3};

static const char *const wh_event_types[] = {"job.created", "job.ended", "person.updated"};
#define WH_NEVENT_TYPES (sizeof(wh_event_types) / sizeof(wh_event_types[0]))

static void problem(struct ja_errors *e, const char *pointer, const char *detail)
{
	ja_error_add(e, 422, "validation_failed", "Validation failed", detail, pointer);
}

/*
 * Checks the events array and writes it as a PostgreSQL array literal of
 * known event names (at most all of them, so arr never overflows).
 */
static void check_events(const json_t *events, struct ja_errors *e, char *arr, size_t cap)
{
	static const char ptr[] = "/data/attributes/events";
	bool seen[WH_NEVENT_TYPES] = {false};
	struct pga_writer w;
	pga_start(&w, arr, cap);
	if (!events) {
		problem(e, ptr, "events is required.");
		return;
	}
	if (!json_is_array(events) || json_array_size(events) == 0) {
		problem(e, ptr, "events must be a non-empty array of event types.");
		return;
	}
	size_t i;
	const json_t *v;
	json_array_foreach(events, i, v)
	{
		char p[64];
		snprintf(p, sizeof(p), "%s/%zu", ptr, i);
		size_t k = WH_NEVENT_TYPES;
		if (json_is_string(v)) {
			for (k = 0; k < WH_NEVENT_TYPES; k++) {
				if (json_string_length(v) == strlen(wh_event_types[k]) &&
				    strcmp(json_string_value(v), wh_event_types[k]) == 0)
					break;
			}
		}
		if (k == WH_NEVENT_TYPES) {
			problem(e, p, "Event types are job.created, job.ended and person.updated.");
			continue;
		}
		if (seen[k]) {
			problem(e, p, "Each event type may be listed once.");
			continue;
		}
		seen[k] = true;
		pga_add(&w, wh_event_types[k], strlen(wh_event_types[k]));
	}
	if (!pga_finish(&w))
		problem(e, ptr, "events must be a non-empty array of event types.");
}

/*
 * Validates the attributes; *url receives the URL to store when valid
 * (allocated; the caller frees it). Returns BR_NOMEM when the URL could not
 * be checked for lack of memory.
 */
static br_status check_attributes(struct api_req *r, const json_t *attrs, struct ja_errors *e,
                                  char **url, char *events, size_t evcap)
{
	const char *key;
	const json_t *v;
	json_object_foreach((json_t *)attrs, key, v)
	{
		if (strcmp(key, "url") != 0 && strcmp(key, "events") != 0)
			val_unknown(e, "/data/attributes", key, "attribute");
	}
	check_events(json_object_get(attrs, "events"), e, events, evcap);

	static const char ptr[] = "/data/attributes/url";
	const json_t *u = json_object_get(attrs, "url");
	if (!u) {
		problem(e, ptr, "url is required.");
		return BR_OK;
	}
	if (!json_is_string(u)) {
		problem(e, ptr, "url must be a string.");
		return BR_OK;
	}
	if (json_string_length(u) > WH_URL_MAX) {
		problem(e, ptr, "url must be at most 2048 characters.");
		return BR_OK;
	}
	if (strlen(json_string_value(u)) != json_string_length(u)) {
		problem(e, ptr, "url must not contain NUL characters.");
		return BR_OK;
	}
	char why[256] = "";
	br_status st = wh_url_check(json_string_value(u), r->app->cfg->webhook_allow_private, url,
	                            why, sizeof(why));
	if (st == BR_NOMEM)
		return st;
	if (st != BR_OK)
		problem(e, ptr, why[0] ? why : "url is not an acceptable webhook URL.");
	return BR_OK;
}

void route_webhooks_create(struct api_req *r)
{
	PGresult *res = NULL;
	char *url = NULL; /* before the first goto: out frees it */
	struct ja_errors e;
	ja_errors_init(&e);
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	char events[64] = "{}";
	const json_t *attrs = val_data_attributes(doc, "webhooks", &e);
	if (attrs && check_attributes(r, attrs, &e, &url, events, sizeof(events)) == BR_NOMEM) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	char secret[WH_SECRET_SIZE];
	if (wh_secret_new(secret) != BR_OK) {
		LOG_ERROR("cannot generate a webhook secret");
		ja_fail(r, 500, "internal_error", "Internal error",
		        "The request failed unexpectedly; nothing was written.");
		goto out;
	}
	char max[16];
	snprintf(max, sizeof(max), "%d", r->app->cfg->webhook_max_endpoints);
	const char *params[] = {r->org_id, url, events, secret, max};
	res = ja_query(r, &stmt_insert, params);
	memset(secret, 0, sizeof(secret));
	if (!res)
		goto out;
	if (PQntuples(res) == 0) {
		char detail[128];
		snprintf(detail, sizeof(detail),
		         "An organization may have at most %d webhook endpoints; delete one first.",
		         r->app->cfg->webhook_max_endpoints);
		ja_fail(r, 422, "too_many_endpoints", "Too many webhook endpoints", detail);
		goto out;
	}
	ja_send_data(r, 201, PQgetvalue(res, 0, 0));
out:
	free(url);
	ja_errors_free(&e);
	PQclear(res);
	json_decref(doc);
}

void route_webhooks_list(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]", "page[size]", NULL};
	struct ja_page page;
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page))
		return;
	char size[24], offset[24];
	snprintf(size, sizeof(size), "%ld", page.size);
	snprintf(offset, sizeof(offset), "%ld", page.number * page.size);
	const char *params[] = {r->org_id, size, offset};
	PGresult *res = NULL;
	res = ja_query(r, &stmt_list, params);
	if (!res)
		return;
	long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	if (ja_page_check(r, &page, count))
		ja_send_page(r, 200, PQgetvalue(res, 0, 1), &page, count);
	PQclear(res);
}

void route_webhooks_delete(struct api_req *r)
{
	const char *params[] = {r->id, r->org_id};
	PGresult *res = NULL;
	res = ja_query(r, &stmt_delete, params);
	if (!res)
		return;
	bool deleted = strcmp(PQcmdTuples(res), "1") == 0;
	PQclear(res);
	if (!deleted) {
		ja_fail(r, 404, "not_found", "Not found", "No such webhook.");
		return;
	}
	char body[128];
	snprintf(body, sizeof(body), "{\"meta\":{\"message\":\"Webhook %s deleted\"}}", r->id);
	http_resp_json(r->resp, 200, body);
	r->resp->content_type = "application/vnd.api+json";
}

void route_webhooks_deliveries(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]", "page[size]", NULL};
	struct ja_page page;
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page))
		return;
	char size[24], offset[24];
	snprintf(size, sizeof(size), "%ld", page.size);
	snprintf(offset, sizeof(offset), "%ld", page.number * page.size);
	const char *params[] = {r->id, r->org_id, size, offset};
	PGresult *res = NULL;
	res = ja_query(r, &stmt_attempts, params);
	if (!res)
		return;
	if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
		ja_fail(r, 404, "not_found", "Not found", "No such webhook.");
	} else {
		long count = strtol(PQgetvalue(res, 0, 1), NULL, 10);
		if (ja_page_check(r, &page, count))
			ja_send_page(r, 200, PQgetvalue(res, 0, 2), &page, count);
	}
	PQclear(res);
}

void route_webhooks_delivery_retry(struct api_req *r)
{
	const char *params[] = {r->org_id, r->id, r->sub};
	PGresult *res = NULL;
	res = ja_query(r, &stmt_retry, params);
	if (!res)
		return;
	const char *outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "not_found") == 0)
		ja_fail(r, 404, "not_found", "Not found", "No such delivery of this webhook.");
	else if (strcmp(outcome, "disabled") == 0)
		ja_fail(r, 409, "invalid_transition", "Webhook disabled",
		        "The webhook was disabled after its receiver answered 410 Gone; "
		        "create a new one.");
	else
		ja_send_data(r, 202, PQgetvalue(res, 0, 1));
	PQclear(res);
}
