/*
 * metrics.c - Prometheus registry (see metrics.h).
 *
 * Global state: one registry list, appended to before threads start. Each
 * counter guards its series list with its own mutex; histograms use one
 * mutex each (observations are cheap and far apart compared with a lock).
 */
#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define MET_BUCKETS 12

static const double bucket_bounds[MET_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,   0.25,   0.5,   1.0,  2.5,   10.0};

struct series {
	char *labels;
	double value;
	struct series *next;
};

struct met_counter {
	pthread_mutex_t mu;
	struct series *series;
};

struct met_histogram {
	pthread_mutex_t mu;
	unsigned long long buckets[MET_BUCKETS];
	unsigned long long count;
	double sum;
};

enum met_kind {
	MET_COUNTER,
	MET_HISTOGRAM,
	MET_GAUGE
};

struct metric {
	enum met_kind kind;
	const char *name;
	const char *help;
	union {
		met_counter *counter;
		met_histogram *histogram;
		struct {
			met_gauge_fn fn;
			void *ctx;
		} gauge;
	} u;
	struct metric *next;
};

static struct metric *registry;
static struct metric **registry_tail = &registry;

static struct metric *met_register(enum met_kind kind, const char *name, const char *help)
{
	struct metric *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->kind = kind;
	m->name = name;
	m->help = help;
	*registry_tail = m;
	registry_tail = &m->next;
	return m;
}

met_counter *met_counter_new(const char *name, const char *help)
{
	met_counter *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	struct metric *m = met_register(MET_COUNTER, name, help);
	if (!m) {
		free(c);
		return NULL;
	}
	pthread_mutex_init(&c->mu, NULL);
	m->u.counter = c;
	return c;
}

void met_counter_add(met_counter *c, const char *labels, double n)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->mu);
	struct series *s = c->series;
	while (s && strcmp(s->labels, labels) != 0)
		s = s->next;
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (s)
			s->labels = strdup(labels);
		if (!s || !s->labels) {
			/* Losing one sample beats failing the request it measures. */
			free(s);
			pthread_mutex_unlock(&c->mu);
			return;
		}
		s->next = c->series;
		c->series = s;
	}
	s->value += n;
	pthread_mutex_unlock(&c->mu);
}

met_histogram *met_histogram_new(const char *name, const char *help)
{
	met_histogram *h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	struct metric *m = met_register(MET_HISTOGRAM, name, help);
	if (!m) {
		free(h);
		return NULL;
	}
	pthread_mutex_init(&h->mu, NULL);
	m->u.histogram = h;
	return h;
}

void met_histogram_observe(met_histogram *h, double value)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->mu);
	for (int i = 0; i < MET_BUCKETS; i++) {
		if (value <= bucket_bounds[i])
			h->buckets[i]++;
	}
	h->count++;
	h->sum += value;
	pthread_mutex_unlock(&h->mu);
}

br_status met_gauge_register(const char *name, const char *help, met_gauge_fn fn, void *ctx)
{
	struct metric *m = met_register(MET_GAUGE, name, help);
	if (!m)
		return BR_NOMEM;
	m->u.gauge.fn = fn;
	m->u.gauge.ctx = ctx;
	return BR_OK;
}

static br_status render_counter(const struct metric *m, strbuf *out)
{
	br_status st = BR_OK;
	met_counter *c = m->u.counter;
	pthread_mutex_lock(&c->mu);
	for (struct series *s = c->series; s && st == BR_OK; s = s->next) {
		if (s->labels[0])
			st = sb_appendf(out, "%s{%s} %.17g\n", m->name, s->labels, s->value);
		else
			st = sb_appendf(out, "%s %.17g\n", m->name, s->value);
	}
	if (!c->series && st == BR_OK)
		st = sb_appendf(out, "%s 0\n", m->name);
	pthread_mutex_unlock(&c->mu);
	return st;
}

static br_status render_histogram(const struct metric *m, strbuf *out)
{
	met_histogram *h = m->u.histogram;
	br_status st = BR_OK;
	pthread_mutex_lock(&h->mu);
	for (int i = 0; i < MET_BUCKETS && st == BR_OK; i++)
		st = sb_appendf(out, "%s_bucket{le=\"%g\"} %llu\n", m->name, bucket_bounds[i],
		                h->buckets[i]);
	if (st == BR_OK)
		st = sb_appendf(out, "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n%s_count %llu\n",
		                m->name, h->count, m->name, h->sum, m->name, h->count);
	pthread_mutex_unlock(&h->mu);
	return st;
}

br_status met_render(strbuf *out)
{
	static const char *const types[] = {"counter", "histogram", "gauge"};
	br_status st = BR_OK;
	for (const struct metric *m = registry; m && st == BR_OK; m = m->next) {
		st = sb_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name, m->help, m->name,
		                types[m->kind]);
		if (st != BR_OK)
			break;
		switch (m->kind) {
		case MET_COUNTER:
			st = render_counter(m, out);
			break;
		case MET_HISTOGRAM:
			st = render_histogram(m, out);
			break;
		case MET_GAUGE:
			st = m->u.gauge.fn(m->u.gauge.ctx, out);
			break;
		}
	}
	return st;
}

void met_shutdown(void)
{
	while (registry) {
		struct metric *m = registry;
		registry = m->next;
		if (m->kind == MET_COUNTER) {
			struct series *s = m->u.counter->series;
			while (s) {
				struct series *next = s->next;
				free(s->labels);
				free(s);
				s = next;
			}
			pthread_mutex_destroy(&m->u.counter->mu);
			free(m->u.counter);
		} else if (m->kind == MET_HISTOGRAM) {
			pthread_mutex_destroy(&m->u.histogram->mu);
			free(m->u.histogram);
		}
		free(m);
	}
	registry_tail = &registry;
}
