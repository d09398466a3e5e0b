/*
 * routes_jobs_control.c - job control (docs/openapi.yaml Jobs): GET /v1/jobs,
 * PUT /v1/jobs/:id {"action":"retry_failed"} and DELETE /v1/jobs/:id.
 * Each state change is one SQL function in one transaction
 * (sql/functions/jobs.sql); a retry publishes its tasks after the commit,
 * like a new job. Stateless; thread-safe.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "jobs.h"
#include "jsonapi.h"
#include "log.h"
#include "uuid.h"
#include "validate.h"

/* Newest first, by one of the (organization[, status|session], created_at) indexes. */
#define JOBS_LIST(name, where)                                                                     \
	{                                                                                          \
		name,                                                                              \
		    "SELECT (SELECT count(*) FROM jobs j WHERE " where "),"                        \
		    " (SELECT COALESCE(json_agg(job_resource(x) ORDER BY x.created_at DESC, x.id " \
		    "DESC),"                                                                       \
		    "  '[]'::json) FROM (SELECT * FROM jobs j WHERE " where                        \
		    "  ORDER BY j.created_at DESC, j.id DESC OFFSET $4::bigint LIMIT $5::int) x)", \
		    5                                                                              \
	}

static const db_stmt stmt_list[4] = {
    JOBS_LIST("jobs_list", "j.organization_id = $1 AND $2::text IS NULL AND $3::uuid IS NULL"),
    JOBS_LIST("jobs_list_status", "j.organization_id = $1 AND j.status = $2 AND $3::uuid IS NULL"),
    JOBS_LIST("jobs_list_session",
              "j.organization_id = $1 AND $2::text IS NULL AND j.session_id = $3"),
    JOBS_LIST("jobs_list_both", "j.organization_id = $1 AND j.status = $2 AND j.session_id = $3"),
};
static const db_stmt stmt_retry = {
    "jobs_retry", "SELECT outcome, job, task_ids FROM retry_failed($1, $2, $3::boolean)", 3};
static const db_stmt stmt_cancel = {"jobs_cancel",
                                    "SELECT outcome, job FROM cancel_or_delete_job($1, $2)", 2};

static bool job_status_ok(const char *s)
{
	return strcmp(s, "processing") == 0 || strcmp(s, "ended") == 0 ||
	       strcmp(s, "failed") == 0 || strcmp(s, "cancelled") == 0;
}

void route_jobs_list(struct api_req *r)
{
	static const char *const allowed[] = {"page[number]", "page[size]", "filter[status]",
	                                      "filter[session_id]", NULL};
	struct ja_page page;
	if (!ja_check_params(r, allowed) || !ja_page_params(r, &page))
		return;
	const char *status = http_req_query(r->http, "filter[status]");
	const char *session = http_req_query(r->http, "filter[session_id]");
	if ((status && !job_status_ok(status)) ||
	    (session && !uuid_valid(session, strlen(session), UUID_ANY_CASE))) {
		ja_fail(r, 400, "invalid_parameter", "Invalid parameter",
		        "filter[status] is processing, ended, failed or cancelled; "
		        "filter[session_id] is a session id.");
		return;
	}
	char from[24], size[24];
	snprintf(from, sizeof(from), "%ld", page.number * page.size);
	snprintf(size, sizeof(size), "%ld", page.size);
	const char *params[] = {r->org_id, status, session, from, size};
	PGresult *res = NULL;
	res = ja_query(r, &stmt_list[(status ? 1 : 0) + (session ? 2 : 0)], params);
	if (!res)
		return;
	long count = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	if (ja_page_check(r, &page, count))
		ja_send_page(r, 200, PQgetvalue(res, 0, 1), &page, count);
	PQclear(res);
}

void route_jobs_update(struct api_req *r)
{
	PGresult *res = NULL;
	struct ja_errors e;
	ja_errors_init(&e);
	bool override = false;
	json_t *doc = ja_parse_body(r);
	if (!doc)
		goto out;
	const json_t *action = json_object_get(doc, "action");
	if (!json_is_string(action) || strcmp(json_string_value(action), "retry_failed") != 0)
		ja_error_add(&e, 422, "validation_failed", "Validation failed",
		             "action must be retry_failed.", "/action");
	val_optional_bool(doc, "override_duplicates", "", &e, &override);
	const char *key;
	json_t *v;
	json_object_foreach(doc, key, v)
	{
		if (strcmp(key, "action") != 0 && strcmp(key, "override_duplicates") != 0)
			val_unknown(&e, "", key, "member");
	}
	if (e.count) {
		ja_errors_send(&e, r->resp);
		goto out;
	}
	/* Absent, the job keeps the override_duplicates it had. */
	const char *given = !json_object_get(doc, "override_duplicates") ? NULL
	                    : override                                   ? "true"
	                                                                 : "false";
	const char *params[] = {r->org_id, r->id, given};
	res = ja_query(r, &stmt_retry, params);
	if (!res)
		goto out;
	const char *outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "not_found") == 0) {
		ja_fail(r, 404, "not_found", "Not found", "No such job.");
	} else if (strcmp(outcome, "job_in_progress") == 0) {
		ja_fail(r, 409, "job_in_progress", "Job in progress",
		        "The job is still processing; retry it once it has finished.");
	} else if (strcmp(outcome, "nothing_to_retry") == 0) {
		ja_fail(r, 409, "nothing_to_retry", "Nothing to retry",
		        "The job has no failed task.");
	} else {
		log_set_job_id(r->id);
		jobs_defer_publish(r, r->id, PQgetvalue(res, 0, 2));
		ja_send_data(r, 202, PQgetvalue(res, 0, 1));
	}
out:
	ja_errors_free(&e);
	PQclear(res);
	json_decref(doc);
}

void route_jobs_delete(struct api_req *r)
{
	const char *params[] = {r->org_id, r->id};
	PGresult *res = NULL;
	res = ja_query(r, &stmt_cancel, params);
	if (!res)
		return;
	const char *outcome = PQgetvalue(res, 0, 0);
	if (strcmp(outcome, "not_found") == 0) {
		ja_fail(r, 404, "not_found", "Not found", "No such job.");
	} else if (strcmp(outcome, "deleted") == 0) {
		char body[160];
		snprintf(body, sizeof(body),
		         "{\"meta\":{\"message\":\"Bulk registration job %s deleted\"}}", r->id);
		http_resp_json(r->resp, 200, body);
		r->resp->content_type = "application/vnd.api+json";
	} else {
		ja_send_data(r, 202, PQgetvalue(res, 0, 1));
	}
	PQclear(res);
}
