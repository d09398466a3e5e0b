/*
 * proc.h - process start-up and shutdown shared by bulkreg's programs:
 * configuration with the contract's exit status, logging, and signals.
 */
#ifndef BULKREG_PROC_H
#define BULKREG_PROC_H

#include <pthread.h>
#include <time.h>

#include "config.h"

/*
 * Loads the configuration and starts logging. On a bad value prints
 * "<prog>: <message>" on stderr and exits with status 2.
 */
void proc_init(const char *prog, struct br_config *cfg);

/*
 * Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (threads created
 * afterwards inherit the mask) and ignores SIGPIPE. Call before any thread.
 */
void proc_block_signals(void);

/* Waits for SIGTERM or SIGINT; returns the signal number. */
int proc_wait_signal(void);

/* Monotonic clock in milliseconds. */
long long proc_now_ms(void);

/* Sleeps ms milliseconds, or less if *stop becomes non-zero meanwhile. */
void proc_sleep_ms(long ms, const int *stop);

/* Initialises cv so that its timed waits use the monotonic clock. */
void proc_cond_init(pthread_cond_t *cv);

/* The monotonic clock ms milliseconds from now: a deadline for a proc_cond_init condition. */
struct timespec proc_deadline(long ms);

#endif
