/*
 * taskmsg.h - the body of a task message on bulkreg.tasks:
 *   {"task_id":"<uuid>","job_id":"<uuid>"}
 * The message_id property is the task id as well. Bodies come from the
 * broker, so parsing treats them as untrusted. Stateless; thread-safe.
 */
#ifndef BULKREG_TASKMSG_H
#define BULKREG_TASKMSG_H

#include <stdbool.h>
#include <stddef.h>

#include "mq.h"
#include "status.h"
#include "uuid.h"

#define TASKMSG_MAX 128

/* Writes the body for a task into out (TASKMSG_MAX bytes); returns its length. */
size_t taskmsg_encode(const char *task_id, const char *job_id, char out[TASKMSG_MAX]);

/*
 * Extracts the task id (canonical lower-case UUID) from a body. BR_INVAL
 * when the body is not such an object.
 */
br_status taskmsg_parse(const char *body, size_t len, char task_id[UUID_LEN + 1]) BR_MUST_USE;

/*
 * The messages of several tasks, ready for mq_publish: msgs[0..n) point
 * into the batch's own copies of the ids and bodies. One allocation per
 * array; free with taskmsg_batch_free (NULL-safe on a zeroed batch).
 */
struct taskmsg_batch {
	struct mq_msg *msgs;
	size_t n;
	size_t cap;
	char (*ids)[UUID_LEN + 1];
	char (*bodies)[TASKMSG_MAX];
};

/* Room for cap messages. BR_NOMEM leaves b freed. */
br_status taskmsg_batch_init(struct taskmsg_batch *b, size_t cap) BR_MUST_USE;

/* Appends the message of task_id (of job_id). BR_TOOBIG when full, BR_INVAL for a bad id. */
br_status taskmsg_batch_add(struct taskmsg_batch *b, const char *task_id,
                            const char *job_id) BR_MUST_USE;

void taskmsg_batch_free(struct taskmsg_batch *b);

/* True when s is a task id as messages carry it: a lower-case UUID (uuid.h). */
bool taskmsg_is_uuid(const char *s, size_t len);

#endif
