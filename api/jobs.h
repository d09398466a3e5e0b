/*
 * jobs.h - what job routes share: publishing a job's tasks after commit.
 */
#ifndef BULKREG_API_JOBS_H
#define BULKREG_API_JOBS_H

#include "app.h"

/*
 * Publishes one message per task of job_id (task_ids is a PostgreSQL array
 * literal "{id,...}") with confirms, then marks the job published. When the
 * broker is unreachable the job stays unpublished for the workers' sweeper;
 * the caller's answer does not change: the work is committed.
 */
void jobs_publish(struct api_req *r, const char *job_id, const char *task_ids);

#endif
