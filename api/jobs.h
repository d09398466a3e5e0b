/*
 * jobs.h - what job routes share: publishing a job's tasks after commit.
 *
 * A route that creates or re-runs a job asks for its tasks to be published
 * (jobs_defer_publish); the router publishes them once the request's
 * transaction committed and its database connection is back in the pool
 * (jobs_publish_deferred), so a slow or blocked broker never holds a
 * database connection, and no message names a task that is not yet
 * committed.
 */
#ifndef BULKREG_API_JOBS_H
#define BULKREG_API_JOBS_H

#include "app.h"

/*
 * Records job_id's task_ids (a PostgreSQL array literal "{id,...}",
 * copied) for publication after the commit. Out of memory only logs: the
 * job is committed, and the workers' sweeper publishes jobs left
 * unpublished.
 */
void jobs_defer_publish(struct api_req *r, const char *job_id, const char *task_ids);

/* Forgets a deferred publication (the transaction did not commit). */
void jobs_forget_publish(struct api_req *r);

/*
 * Publishes the deferred tasks, if any, with confirms, then marks the job
 * published on a connection of its own from the pool. Call without holding
 * r->db. When the broker is unreachable or the mark cannot be written the
 * job stays unpublished for the workers' sweeper; the answer does not
 * change: the work is committed.
 */
void jobs_publish_deferred(struct api_req *r);

#endif
