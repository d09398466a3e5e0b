/*
 * mq_mgmt.h - what AMQP cannot tell about a quorum queue: its members
 * (replicas) and which of them are online, read from the RabbitMQ
 * management HTTP API (GET /api/queues/<vhost>/<queue>, fields `members`
 * and `online`). BULKREG_MQ_MANAGEMENT_URL names the API's base URLs, one
 * per node; by default they are derived from AMQP_URL (each node's host,
 * port 15672, the same user and password); "off" turns it off.
 *
 * An mq_mgmt is immutable once made but for the index of the node that
 * answered last (atomic): share it between threads.
 */
#ifndef BULKREG_MQ_MGMT_H
#define BULKREG_MQ_MGMT_H

#include <stddef.h>

#include "status.h"

typedef struct mq_mgmt mq_mgmt;

struct mq_members {
	int members; /* nodes holding a replica */
	int online;  /* of them, those the cluster sees running */
};

/*
 * Makes the reader for mgmt_urls ("" derives them from amqp_urls, an
 * AMQP_URL whose first node also gives the vhost). *out is NULL when
 * mgmt_urls is "off". BR_INVAL (a bad URL) or BR_NOMEM. Free with
 * mq_mgmt_free.
 */
br_status mq_mgmt_new(const char *mgmt_urls, const char *amqp_urls, mq_mgmt **out) BR_MUST_USE;
void mq_mgmt_free(mq_mgmt *m);

/*
 * Reads queue's members, asking the nodes in turn (the one that answered
 * last first) within timeout_ms in all. BR_OK; BR_NOTFOUND when the queue
 * does not exist or has no members (not a quorum queue); BR_HTTP when no
 * node answered (the API is off on the nodes, or they are down); BR_NOMEM.
 * why (may be NULL) gets the reason of a failure.
 */
br_status mq_mgmt_members(mq_mgmt *m, const char *queue, int timeout_ms, struct mq_members *out,
                          char *why, size_t whycap) BR_MUST_USE;

#endif
