/*
 * routes_jobs.c - bulk jobs (docs/openapi.yaml Bulk registration, Jobs):
 * POST /v1/sessions/:id/people/bulk, GET /v1/jobs/:id and
 * GET /v1/jobs/:id/tasks (207 multi-status). Job control lives in
 * routes_jobs_control.c.
 *
 * A bulk request is validated whole before anything is written; then ONE
 * statement, create_job(), writes the job, all its tasks and its job.created
 * event (with an Idempotency-Key, in the key's transaction: idempotency.h).
 * Only once that committed, and the request's connection is back in the
 * pool, are the task messages published, with confirms read as a batch
 * (jobs.h). When the broker confirmed them all the job is marked
 * published; otherwise the 202 still stands (the job is durable) and the
 * job stays findable as unpublished for the workers' sweeper.
 * Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jobs.h"
#include "jsonapi.h"
#include "log.h"
#include "pgarray.h"
#include "taskmsg.h"
#include "validate.h"

static const db_stmt stmt_create = {
    "jobs_create",
    "SELECT job_id, job, task_ids, unknown_tracks"
    " FROM create_job($1, $2, $3, $4::boolean, $5::boolean, $6::boolean, $7::jsonb)",
    7};
static const db_stmt stmt_published = {"jobs_published", "SELECT mark_job_published($1)", 1};
const struct api_read route_jobs_read = {
    {"jobs_read",
     "SELECT r.n, t.organization_id, t.id, CASE WHEN j.id IS NOT NULL THEN job_resource(j) END"
     " FROM unnest((SELECT $1::text[]), (SELECT $2::uuid[])) WITH ORDINALITY AS r(hash, id, n)"
     " JOIN api_tokens t ON t.token_hash = decode(r.hash, 'hex') AND t.revoked_at IS NULL"
     " LEFT JOIN jobs j ON j.id = r.id AND j.organization_id = t.organization_id",
     2},
    "No such job."};
static const db_stmt stmt_task_count = {
    "jobs_task_count",
    "SELECT CASE WHEN $3::text IS NULL THEN j.total_items"
    "            ELSE (SELECT count(*) FROM tasks t WHERE t.job_id = j.id AND t.status = $3)"
    "       END"
    " FROM jobs j WHERE j.id = $1 AND j.organization_id = $2",
    3};
/* Unfiltered: the page is a range of indexes, one index range scan at any depth. */
static const db_stmt stmt_tasks_page = {
    "jobs_tasks_page",
    "SELECT COALESCE(json_agg(task_resource(t, p, $4) ORDER BY t.idx), '[]'::json)"
    " FROM tasks t LEFT JOIN people p ON p.id = t.person_id"
    " WHERE t.job_id = $1 AND t.idx >= $2::int AND t.idx < $2::int + $3::int",
    4};
static const db_stmt stmt_tasks_page_status = {
    "jobs_tasks_page_status",
    "SELECT COALESCE(json_agg(task_resource(x, p, $5) ORDER BY x.idx), '[]'::json)"
    " FROM (SELECT * FROM tasks t WHERE t.job_id = $1 AND t.status = $4"
    "       ORDER BY t.idx OFFSET $2::int LIMIT $3::int) x"
    " LEFT JOIN people p ON p.id = x.person_id",
    5};

/* Publishes one message per task id of a "{id,id,...}" array; true when all confirmed. */
static bool publish_tasks(struct api_req *r, const char *job_id, const char *ids)
{
	int n = pga_count(ids);
	if (n <= 0)
		return n == 0;
	struct taskmsg_batch b;
	struct pga_reader rd;
	if (pga_read_start(&rd, ids) != BR_OK || taskmsg_batch_init(&b, (size_t)n) != BR_OK)
		return false;
	bool ok = true;
	for (int i = 0; i < n && ok; i++) {
		char id[UUID_LEN + 1];
		const char *elem;
		size_t len;
		ok = pga_read_next(&rd, &elem, &len) == BR_OK && len == UUID_LEN;
		if (ok) {
			memcpy(id, elem, UUID_LEN);
			id[UUID_LEN] = '\0';
			ok = taskmsg_batch_add(&b, id, job_id) == BR_OK;
		}
	}
	ok = ok && pub_tasks(r->app->pub, b.msgs, b.n) == BR_OK;
	taskmsg_batch_free(&b);
	return ok;
}

void jobs_defer_publish(struct api_req *r, const char *job_id, const char *task_ids)
{
	jobs_forget_publish(r);
	r->publish_tasks = strdup(task_ids);
	if (!r->publish_tasks) {
		LOG_WARN("job committed but not published (out of memory): the sweeper will "
		         "publish it");
		return;
	}
	snprintf(r->publish_job, sizeof(r->publish_job), "%s", job_id);
}

void jobs_forget_publish(struct api_req *r)
{
	free(r->publish_tasks);
	r->publish_tasks = NULL;
	r->publish_job[0] = '\0';
}

void jobs_publish_deferred(struct api_req *r)
{
	if (!r->publish_tasks)
		return;
	const char *job_id = r->publish_job;
	if (!publish_tasks(r, job_id, r->publish_tasks)) {
		LOG_WARN("job committed but not published: the sweeper will publish it");
	} else {
		db_conn *db = NULL;
		const char *params[] = {job_id};
		br_status st = db_pool_get(r->app->db, API_DB_MARK_WAIT_MS, &db);
		if (st == BR_OK)
			st = db_run(db, &stmt_published, params, NULL);
		if (st != BR_OK)
			LOG_WARN(
			    "job published but not marked so: the sweeper will publish it again");
		if (db)
			db_pool_put(r->app->db, db);
	}
	jobs_forget_publish(r);
}

/* 422 unknown_track for each task index of a "{i,j,...}" array. */
static void unknown_tracks(struct api_req *r, const char *indexes)
{
	struct ja_errors e;
	struct pga_reader rd;
	const char *elem;
	size_t len;
	ja_errors_init(&e);
	if (pga_read_start(&rd, indexes) == BR_OK) {
		while (pga_read_next(&rd, &elem, &len) == BR_OK) {
			char ptr[96];
			snprintf(ptr, sizeof(ptr),
			         "/data/attributes/tasks/%.*s/attributes/track_id",
			         (int)(len < 12 ? len : 12), elem);
			ja_error_add(&e, 422, "unknown_track", "Unknown track",
			             "The session has no such track.", ptr);
		}
	}
	if (!e.count)
		ja_error_add(&e, 422, "unknown_track", "Unknown track",
		             "The session has no such track.", "/data/attributes/tasks");
	ja_errors_send(&e, r->resp);
}

void route_bulk_create(struct api_req *r)
{
	PGresult *res = NULL;
	char *people = NULL;
	struct val_bulk b = {.people = json_array()};
	struct ja_errors e;
	ja_errors_init(&e);
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	val_bulk(doc, r->app->cfg->max_tasks, &b, &e);
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	people = b.people ? json_dumps(b.people, JSON_COMPACT) : NULL;
	if (!people) {
		ja_fail(r, 503, "unavailable", "Service unavailable", "Out of memory.");
		goto out;
	}
	const char *params[] = {r->org_id,
	                        r->id,
	                        b.action,
	                        b.override ? "true" : "false",
	                        b.auto_approve ? "true" : "false",
	                        b.waitlist ? "true" : "false",
	                        people};
	res = ja_query(r, &stmt_create, params);
	if (!res)
		goto out;
	if (PQntuples(res) == 0) {
		ja_fail(r, 404, "not_found", "Not found", "No such session.");
		goto out;
	}
	if (PQgetisnull(res, 0, 0)) {
		unknown_tracks(r, PQgetvalue(res, 0, 3));
		goto out;
	}
	/* Committed: from here on the answer is 202 whatever the broker does. */
	const char *job_id = PQgetvalue(res, 0, 0);
	log_set_job_id(job_id);
	jobs_defer_publish(r, job_id, PQgetvalue(res, 0, 2));
	ja_send_data(r, 202, PQgetvalue(res, 0, 1));
	if (http_resp_header(r->resp, "Location", "/v1/jobs/%s", job_id) != BR_OK)
		LOG_WARN("Location header lost");
out:
	ja_errors_free(&e);
	free(people);
	json_decref(b.people);
	PQclear(res);
	json_decref(doc);
}

static bool task_status_ok(const char *s)
{
	return strcmp(s, "queued") == 0 || strcmp(s, "succeeded") == 0 ||
	       strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0;
}

void route_jobs_tasks(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]", "page[size]", "filter[status]", NULL};
	struct ja_page page;
	PGresult *res = NULL;
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page))
		return;
	const char *status = http_req_query(r->http, "filter[status]");
	if (status && !task_status_ok(status)) {
		ja_fail(r, 400, "invalid_parameter", "Invalid parameter",
		        "filter[status] must be queued, succeeded, failed or cancelled.");
		return;
	}
	const char *cparams[] = {r->id, r->org_id, status};
	res = ja_query(r, &stmt_task_count, cparams);
	if (!res)
		return;
	if (PQntuples(res) == 0) {
		PQclear(res);
		ja_fail(r, 404, "not_found", "Not found", "No such job.");
		return;
	}
	long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	res = NULL;
	if (!ja_page_check(r, &page, count))
		return;
	char from[24], size[24];
	snprintf(from, sizeof(from), "%ld", page.number * page.size);
	snprintf(size, sizeof(size), "%ld", page.size);
	const char *base = r->app->cfg->join_url_base;
	if (status) {
		const char *p[] = {r->id, from, size, status, base};
		res = ja_query(r, &stmt_tasks_page_status, p);
	} else {
		const char *p[] = {r->id, from, size, base};
		res = ja_query(r, &stmt_tasks_page, p);
	}
	if (!res)
		return;
	ja_send_page(r, 207, PQgetvalue(res, 0, 0), &page, count);
	PQclear(res);
}
