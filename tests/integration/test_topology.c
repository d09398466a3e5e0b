/*
 * test_topology.c - the broker topology (docs/operations.md) against the real broker:
 * mq_declare_topology creates exchange bulkreg (direct, durable), exchange bulkreg.dlx, quorum
 * queue bulkreg.tasks (x-delivery-limit 5, dead-lettered to bulkreg.dlx)
 * and bulkreg.tasks.dead; declaring again is harmless; a persistent
 * message published with mq_publish is confirmed and arrives with the
 * contract's properties.
 *
 * The broker is inspected with a raw rabbitmq-c connection (passive
 * declares, re-declares whose arguments the broker checks for equivalence)
 * and, when the test stack is known, with rabbitmqctl through scripts/ctl.
 * Connections check the topology passively and never declare it: only
 * bulkreg-admin migrate does (mq_opts.declares).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <criterion/criterion.h>
#include <jansson.h>

#include "mq.h"
#include "support.h"

#define AMQP_PRECONDITION_FAILED_CODE 406
#define AMQP_NOT_FOUND_CODE           404

/* A plain rabbitmq-c connection; ch is the open channel (renumbered after errors). */
struct raw {
	amqp_connection_state_t c;
	int ch;
};

static void raw_open(struct raw *r)
{
	char *url = strdup(t_amqp_url());
	cr_assert_not_null(url);
	struct amqp_connection_info info;
	cr_assert_eq(amqp_parse_url(url, &info), AMQP_STATUS_OK, "bad AMQP_URL");
	if (info.vhost[0] == '\0')
		info.vhost = (char *)"/"; /* "amqp://host/" means the default vhost, as in mq.c */
	r->c = amqp_new_connection();
	amqp_socket_t *s = amqp_tcp_socket_new(r->c);
	cr_assert_not_null(s);
	struct timeval tv = {5, 0};
	int rc = amqp_socket_open_noblock(s, info.host, info.port, &tv);
	cr_assert_eq(rc, AMQP_STATUS_OK, "connect %s:%d: %s", info.host, info.port,
	             amqp_error_string2(rc));
	amqp_rpc_reply_t rep = amqp_login(r->c, info.vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
	                                  info.user, info.password);
	cr_assert_eq(rep.reply_type, AMQP_RESPONSE_NORMAL, "login failed");
	r->ch = 1;
	amqp_channel_open(r->c, (amqp_channel_t)r->ch);
	cr_assert_eq(amqp_get_rpc_reply(r->c).reply_type, AMQP_RESPONSE_NORMAL);
	free(url);
}

static void raw_close(struct raw *r)
{
	amqp_channel_close(r->c, (amqp_channel_t)r->ch, AMQP_REPLY_SUCCESS);
	amqp_connection_close(r->c, AMQP_REPLY_SUCCESS);
	amqp_destroy_connection(r->c);
}

/*
 * 0 when the last RPC succeeded, else the broker's reply code; the channel
 * the broker closed is replaced by a new one.
 */
static int raw_result(struct raw *r)
{
	amqp_rpc_reply_t rep = amqp_get_rpc_reply(r->c);
	if (rep.reply_type == AMQP_RESPONSE_NORMAL)
		return 0;
	cr_assert_eq(rep.reply_type, AMQP_RESPONSE_SERVER_EXCEPTION, "library error: %s",
	             amqp_error_string2(rep.library_error));
	cr_assert_eq(rep.reply.id, AMQP_CHANNEL_CLOSE_METHOD, "the broker closed the connection");
	const amqp_channel_close_t *m = rep.reply.decoded;
	int code = m->reply_code;
	amqp_channel_close_ok_t ok = {0};
	amqp_send_method(r->c, (amqp_channel_t)r->ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
	r->ch++;
	amqp_channel_open(r->c, (amqp_channel_t)r->ch);
	cr_assert_eq(amqp_get_rpc_reply(r->c).reply_type, AMQP_RESPONSE_NORMAL);
	return code;
}

static int exchange_declare(struct raw *r, const char *name, const char *type, bool passive,
                            bool durable)
{
	amqp_exchange_declare(r->c, (amqp_channel_t)r->ch, amqp_cstring_bytes(name),
	                      amqp_cstring_bytes(type), passive, durable, 0, 0, amqp_empty_table);
	return raw_result(r);
}

static int queue_declare(struct raw *r, const char *name, bool passive, bool durable,
                         bool exclusive, amqp_table_t args)
{
	amqp_queue_declare(r->c, (amqp_channel_t)r->ch, amqp_cstring_bytes(name), passive, durable,
	                   exclusive, exclusive, args);
	return raw_result(r);
}

static mq_conn *declared(void)
{
	mq_conn *c = NULL;
	cr_assert_eq(mq_open(t_amqp_url(), &(struct mq_opts){0}, &c), BR_OK, "cannot connect to %s",
	             t_amqp_url());
	br_status st = mq_declare_topology(c);
	cr_assert_eq(st, BR_OK, "mq_declare_topology: %s (%s)", br_strerror(st), mq_errmsg(c));
	return c;
}

Test(topology, declared_objects_exist)
{
	mq_conn *c = declared();
	struct raw r;
	raw_open(&r);
	cr_expect_eq(exchange_declare(&r, MQ_EXCHANGE, "direct", true, false), 0);
	cr_expect_eq(exchange_declare(&r, MQ_DLX, "direct", true, false), 0);
	cr_expect_eq(queue_declare(&r, MQ_QUEUE_TASKS, true, false, false, amqp_empty_table), 0);
	cr_expect_eq(queue_declare(&r, MQ_QUEUE_DEAD, true, false, false, amqp_empty_table), 0);

	/* Passive declares do check: an absent exchange or queue is 404. */
	char absent[96], id[37];
	t_uuid(id);
	snprintf(absent, sizeof(absent), "bulkreg.absent.%s", id);
	cr_expect_eq(exchange_declare(&r, absent, "direct", true, false), AMQP_NOT_FOUND_CODE);
	cr_expect_eq(queue_declare(&r, absent, true, false, false, amqp_empty_table),
	             AMQP_NOT_FOUND_CODE);
	raw_close(&r);
	mq_close(c);
}

Test(topology, exchanges_are_direct_and_durable)
{
	mq_conn *c = declared();
	struct raw r;
	raw_open(&r);
	/* The broker refuses a re-declare that differs in type or durability. */
	const char *names[] = {MQ_EXCHANGE, MQ_DLX};
	for (int i = 0; i < 2; i++) {
		cr_expect_eq(exchange_declare(&r, names[i], "direct", false, true), 0,
		             "%s is not a durable direct exchange", names[i]);
		cr_expect_eq(exchange_declare(&r, names[i], "fanout", false, true),
		             AMQP_PRECONDITION_FAILED_CODE, "%s accepted type fanout", names[i]);
		cr_expect_eq(exchange_declare(&r, names[i], "direct", false, false),
		             AMQP_PRECONDITION_FAILED_CODE, "%s is not durable", names[i]);
	}
	raw_close(&r);
	mq_close(c);
}

Test(topology, tasks_queue_is_quorum)
{
	mq_conn *c = declared();
	struct raw r;
	raw_open(&r);
	amqp_table_entry_t classic[] = {{.key = amqp_cstring_bytes("x-queue-type"),
	                                 .value = {.kind = AMQP_FIELD_KIND_UTF8,
	                                           .value.bytes = amqp_cstring_bytes("classic")}}};
	amqp_table_t args = {1, classic};
	cr_expect_eq(queue_declare(&r, MQ_QUEUE_TASKS, false, true, false, args),
	             AMQP_PRECONDITION_FAILED_CODE, "bulkreg.tasks accepted x-queue-type classic");
	raw_close(&r);
	mq_close(c);
}

Test(topology, declaring_again_is_idempotent)
{
	mq_conn *c = declared();
	/* The same connection, then a fresh one: the broker compares every argument. */
	br_status st = mq_declare_topology(c);
	cr_assert_eq(st, BR_OK, "second declare: %s (%s)", br_strerror(st), mq_errmsg(c));
	mq_conn *c2 = declared();
	uint32_t messages = 0, consumers = 0;
	st = mq_queue_stats(c2, MQ_QUEUE_TASKS, &messages, &consumers);
	cr_assert_eq(st, BR_OK, "queue stats: %s (%s)", br_strerror(st), mq_errmsg(c2));
	mq_close(c2);
	mq_close(c);
}

/* The object of array rows whose "name" (or key) equals name; NULL when absent. */
static json_t *find_row(json_t *rows, const char *key, const char *name)
{
	size_t i;
	json_t *row;
	json_array_foreach(rows, i, row)
	{
		const char *v = json_string_value(json_object_get(row, key));
		if (v && strcmp(v, name) == 0)
			return row;
	}
	return NULL;
}

/*
 * Value of an argument in rabbitmqctl's JSON: an object, or (RabbitMQ 3.10)
 * a list of [key, type, value] triples; the value is the last element.
 */
static json_t *queue_argument(json_t *args, const char *key)
{
	if (json_is_object(args))
		return json_object_get(args, key);
	size_t i;
	json_t *pair;
	json_array_foreach(args, i, pair)
	{
		const char *k = json_string_value(json_array_get(pair, 0));
		if (k && strcmp(k, key) == 0)
			return json_array_get(pair, json_array_size(pair) - 1);
	}
	return NULL;
}

static json_t *rabbitmqctl_json(const char *const *args)
{
	static char out[1 << 16];
	int rc = t_ctl_capture(args, out, sizeof(out));
	cr_assert_eq(rc, 0, "scripts/ctl rabbitmqctl %s exited %d: %s", args[1], rc, out);
	/* Skip anything the CLI prints before the document. */
	const char *doc = strchr(out, '[');
	cr_assert_not_null(doc, "no JSON from rabbitmqctl %s: %s", args[1], out);
	json_error_t err;
	json_t *rows = json_loads(doc, 0, &err);
	cr_assert(json_is_array(rows), "rabbitmqctl %s: not a JSON array (%s): %s", args[1],
	          err.text, out);
	return rows;
}

Test(topology, rabbitmqctl_shows_the_contract)
{
	const char *local = getenv("BULKREG_LOCAL_DIR");
	if (!local || !*local)
		cr_skip_test("BULKREG_LOCAL_DIR unset: no stack for scripts/ctl rabbitmqctl");
	mq_close(declared());

	const char *q_args[] = {"rabbitmqctl", "list_queues", "-q",        "--formatter", "json",
	                        "name",        "type",        "arguments", NULL};
	json_t *queues = rabbitmqctl_json(q_args);
	json_t *tasks = find_row(queues, "name", MQ_QUEUE_TASKS);
	cr_assert_not_null(tasks, "no queue bulkreg.tasks in %s", json_dumps(queues, 0));
	cr_expect_str_eq(json_string_value(json_object_get(tasks, "type")), "quorum");
	json_t *args = json_object_get(tasks, "arguments");
	char *dump = json_dumps(args, JSON_ENCODE_ANY);
	json_t *limit = queue_argument(args, "x-delivery-limit");
	cr_expect(json_is_integer(limit) && json_integer_value(limit) == MQ_DELIVERY_LIMIT,
	          "x-delivery-limit is not 5: %s", dump);
	json_t *dlx = queue_argument(args, "x-dead-letter-exchange");
	cr_expect(json_is_string(dlx) && strcmp(json_string_value(dlx), MQ_DLX) == 0,
	          "not dead-lettered to bulkreg.dlx: %s", dump);
	json_t *type = queue_argument(args, "x-queue-type");
	cr_expect(json_is_string(type) && strcmp(json_string_value(type), "quorum") == 0,
	          "x-queue-type is not quorum: %s", dump);
	free(dump);
	cr_expect_not_null(find_row(queues, "name", MQ_QUEUE_DEAD), "no bulkreg.tasks.dead");
	json_decref(queues);

	/* Messages flow bulkreg -> bulkreg.tasks and bulkreg.dlx -> bulkreg.tasks.dead. */
	const char *b_args[] = {"rabbitmqctl",      "list_bindings", "-q",
	                        "--formatter",      "json",          "source_name",
	                        "destination_name", "routing_key",   NULL};
	json_t *bindings = rabbitmqctl_json(b_args);
	bool to_tasks = false, to_dead = false;
	size_t i;
	json_t *b;
	json_array_foreach(bindings, i, b)
	{
		const char *src = json_string_value(json_object_get(b, "source_name"));
		const char *dst = json_string_value(json_object_get(b, "destination_name"));
		if (!src || !dst)
			continue;
		to_tasks |= strcmp(src, MQ_EXCHANGE) == 0 && strcmp(dst, MQ_QUEUE_TASKS) == 0;
		to_dead |= strcmp(src, MQ_DLX) == 0 && strcmp(dst, MQ_QUEUE_DEAD) == 0;
	}
	cr_expect(to_tasks, "bulkreg.tasks is not bound to exchange bulkreg");
	cr_expect(to_dead, "bulkreg.tasks.dead is not bound to exchange bulkreg.dlx");
	json_decref(bindings);
}

Test(topology, persistent_publish_is_confirmed)
{
	mq_conn *c = declared();
	struct raw r;
	raw_open(&r);
	char id[37], qname[80];
	t_uuid(id);
	snprintf(qname, sizeof(qname), "bulkreg.test.%s", id);
	cr_assert_eq(queue_declare(&r, qname, false, false, true, amqp_empty_table), 0);

	/* Three messages through the default exchange into our own queue. */
	char ids[3][37], bodies[3][160];
	struct mq_msg msgs[3];
	for (int i = 0; i < 3; i++) {
		t_uuid(ids[i]);
		snprintf(bodies[i], sizeof(bodies[i]), "{\"task_id\":\"%.36s\",\"n\":%d}", ids[i],
		         i);
		msgs[i] = (struct mq_msg){ids[i], bodies[i], strlen(bodies[i])};
	}
	br_status st = mq_publish(c, "", qname, msgs, 3, 10000);
	cr_assert_eq(st, BR_OK, "publish: %s (%s)", br_strerror(st), mq_errmsg(c));

	for (int i = 0; i < 3; i++) {
		amqp_basic_get(r.c, (amqp_channel_t)r.ch, amqp_cstring_bytes(qname), 1);
		amqp_rpc_reply_t rep = amqp_get_rpc_reply(r.c);
		cr_assert_eq(rep.reply_type, AMQP_RESPONSE_NORMAL);
		cr_assert_eq(rep.reply.id, AMQP_BASIC_GET_OK_METHOD, "message %d is missing", i);
		amqp_message_t m;
		cr_assert_eq(amqp_read_message(r.c, (amqp_channel_t)r.ch, &m, 0).reply_type,
		             AMQP_RESPONSE_NORMAL);
		amqp_basic_properties_t *p = &m.properties;
		cr_expect(p->_flags & AMQP_BASIC_DELIVERY_MODE_FLAG, "no delivery mode");
		cr_expect_eq(p->delivery_mode, AMQP_DELIVERY_PERSISTENT, "not persistent");
		cr_expect(p->_flags & AMQP_BASIC_CONTENT_TYPE_FLAG, "no content type");
		cr_expect(
		    p->content_type.len == strlen("application/json") &&
		        memcmp(p->content_type.bytes, "application/json", p->content_type.len) == 0,
		    "content_type is not application/json");
		cr_expect(p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG, "no message_id");
		cr_expect(p->message_id.len == 36 && memcmp(p->message_id.bytes, ids[i], 36) == 0,
		          "message %d has the wrong message_id", i);
		cr_expect(m.body.len == strlen(bodies[i]) &&
		              memcmp(m.body.bytes, bodies[i], m.body.len) == 0,
		          "message %d has the wrong body", i);
		amqp_destroy_message(&m);
	}

	/* An unroutable (mandatory) publish is refused, and the connection survives it. */
	char key[96];
	snprintf(key, sizeof(key), "bulkreg.nowhere.%s", id);
	st = mq_publish(c, MQ_EXCHANGE, key, msgs, 1, 10000);
	cr_expect_eq(st, BR_MQ_NACK, "unroutable publish: %s", br_strerror(st));
	st = mq_publish(c, "", qname, msgs, 1, 10000);
	cr_expect_eq(st, BR_OK, "publish after a refusal: %s (%s)", br_strerror(st), mq_errmsg(c));
	raw_close(&r);
	mq_close(c);
}

/* Runs scripts/ctl with args ("rabbitmqctl", ..., NULL); fatal unless it succeeds. */
static void ctl_ok(const char *const *args)
{
	char out[2048] = "";
	int rc = t_ctl_capture(args, out, sizeof(out));
	cr_assert_eq(rc, 0, "scripts/ctl %s %s failed (%d): %s", args[0], args[1], rc, out);
}

/*
 * A vhost of its own is what a cluster is before bulkreg-admin migrate: a
 * connection that is not migrate's refuses it, naming migrate, and declares
 * nothing (a second attempt fails the same); migrate's connection declares,
 * and then an ordinary one connects.
 */
Test(topology, connecting_checks_it_and_never_declares)
{
	char vhost[96], url[512];
	t_unique_name(vhost, sizeof(vhost), "bulkreg-empty");
	const char *base = t_amqp_url();
	const char *slash = strrchr(base, '/');
	cr_assert(slash && slash > base + 8, "AMQP_URL without a path: %s", base);
	snprintf(url, sizeof(url), "%.*s/%s", (int)(slash - base), base, vhost);
	ctl_ok((const char *const[]){"rabbitmqctl", "add_vhost", vhost, NULL});
	ctl_ok((const char *const[]){"rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*",
	                             ".*", ".*", NULL});

	mq_conn *c = NULL;
	cr_expect_eq(mq_open(url, &(struct mq_opts){0}, &c), BR_MQ_CONN,
	             "a connection used a vhost without the topology");
	cr_assert_eq(mq_open(url, &(struct mq_opts){.lazy = true}, &c), BR_OK);
	cr_expect_eq(mq_ensure(c), BR_MQ_CONN, "the failed connect declared the topology");
	cr_expect(strstr(mq_errmsg(c), "bulkreg-admin migrate"), "error without the remedy: %s",
	          mq_errmsg(c));
	mq_close(c);

	mq_conn *m = NULL;
	cr_assert_eq(mq_open(url, &(struct mq_opts){.declares = true}, &m), BR_OK);
	br_status st = mq_declare_topology(m);
	cr_assert_eq(st, BR_OK, "declare: %s (%s)", br_strerror(st), mq_errmsg(m));
	mq_close(m);
	cr_assert_eq(mq_open(url, &(struct mq_opts){0}, &c), BR_OK, "after migrate's declare");
	mq_close(c);
	ctl_ok((const char *const[]){"rabbitmqctl", "delete_vhost", vhost, NULL});
}
