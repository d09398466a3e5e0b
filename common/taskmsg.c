/*
 * taskmsg.c - task message bodies (see taskmsg.h).
 */
#include "taskmsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

size_t taskmsg_encode(const char *task_id, const char *job_id, char out[TASKMSG_MAX])
{
	int n = snprintf(out, TASKMSG_MAX, "{\"task_id\":\"%.36s\",\"job_id\":\"%.36s\"}", task_id,
	                 job_id);
	return n < 0 ? 0 : (size_t)n;
}

bool taskmsg_is_uuid(const char *s, size_t len)
{
	return uuid_valid(s, len, UUID_LOWER_CASE);
}

br_status taskmsg_parse(const char *body, size_t len, char task_id[UUID_LEN + 1])
{
	if (len > 4096)
		return BR_INVAL;
	json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL);
	if (!doc)
		return BR_INVAL;
	br_status st = BR_INVAL;
	json_t *id = json_object_get(doc, "task_id");
	if (json_is_string(id) && taskmsg_is_uuid(json_string_value(id), json_string_length(id))) {
		memcpy(task_id, json_string_value(id), UUID_LEN + 1);
		st = BR_OK;
	}
	json_decref(doc);
	return st;
}

br_status taskmsg_batch_init(struct taskmsg_batch *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->cap = cap;
	if (cap == 0)
		return BR_OK;
	b->msgs = calloc(cap, sizeof(*b->msgs));
	b->ids = calloc(cap, sizeof(*b->ids));
	b->bodies = calloc(cap, sizeof(*b->bodies));
	if (!b->msgs || !b->ids || !b->bodies) {
		taskmsg_batch_free(b);
		return BR_NOMEM;
	}
	return BR_OK;
}

br_status taskmsg_batch_add(struct taskmsg_batch *b, const char *task_id, const char *job_id)
{
	if (b->n >= b->cap)
		return BR_TOOBIG;
	if (!taskmsg_is_uuid(task_id, strlen(task_id)))
		return BR_INVAL;
	size_t i = b->n++;
	memcpy(b->ids[i], task_id, UUID_LEN + 1);
	b->msgs[i].message_id = b->ids[i];
	b->msgs[i].body = b->bodies[i];
	b->msgs[i].len = taskmsg_encode(task_id, job_id, b->bodies[i]);
	return BR_OK;
}

void taskmsg_batch_free(struct taskmsg_batch *b)
{
	free(b->msgs);
	free(b->ids);
	free(b->bodies);
	memset(b, 0, sizeof(*b));
}
