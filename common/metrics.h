/*
 * metrics.h - a small Prometheus registry (text exposition format 0.0.4).
 *
 * Counters keyed by a label set, histograms with fixed buckets, and gauges
 * read from callbacks at scrape time. Metrics are registered once at start-up
 * (before threads); updates are thread-safe afterwards.
 */
#ifndef BULKREG_METRICS_H
#define BULKREG_METRICS_H

#include <stddef.h>

#include "status.h"
#include "strbuf.h"

typedef struct met_counter met_counter;
typedef struct met_histogram met_histogram;

/*
 * Registers a counter. name and help are borrowed (string literals).
 * NULL on out of memory.
 */
met_counter *met_counter_new(const char *name, const char *help);

/*
 * Adds n to the series with labels, a preformatted label list such as
 * `route="/v1/jobs/:id",code="200"` ("" for none; copied on first use).
 */
void met_counter_add(met_counter *c, const char *labels, double n);

/* Registers a histogram with the default latency buckets (seconds). */
met_histogram *met_histogram_new(const char *name, const char *help);
void met_histogram_observe(met_histogram *h, double value);

/*
 * A gauge computed at scrape time: fn appends complete sample lines
 * ("name{labels} value\n") to out. Registered name/help are borrowed.
 */
typedef br_status (*met_gauge_fn)(void *ctx, strbuf *out);
br_status met_gauge_register(const char *name, const char *help, met_gauge_fn fn,
                             void *ctx) BR_MUST_USE;

/* Appends every registered metric to out. */
br_status met_render(strbuf *out) BR_MUST_USE;

/* Frees everything registered (at exit, after other threads stopped). */
void met_shutdown(void);

#endif
