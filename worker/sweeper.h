/*
 * sweeper.h - the worker's sweeper (docs/operations.md, stranded work): finds committed work that
 * no message carries and publishes it. One sweeper is active at a time
 * across every worker process (a PostgreSQL advisory lock).
 */
#ifndef BULKREG_WORKER_SWEEPER_H
#define BULKREG_WORKER_SWEEPER_H

#include "status.h"
#include "worker.h"

/* Starts the sweeper thread; sets w->sweeper. */
br_status sweeper_start(struct worker *w) BR_MUST_USE;

/* Joins the thread (it notices w->stop within a second) and frees it. */
void sweeper_stop(struct worker *w);

#endif
