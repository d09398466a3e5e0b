/*
 * fault.h - test-only crash points.
 *
 * Builds configured with -DBULKREG_FAULT_HOOKS=ON (scripts/test does) let a
 * fault test kill a process at a chosen instant: with BULKREG_FAULT set to
 * "NAME" or "NAME:N" in the environment, the Nth time (default 1st) the
 * process reaches FAULT_POINT("NAME") it dies by SIGKILL, exactly as if an
 * operator or the kernel had killed it there. In other builds FAULT_POINT
 * compiles to nothing.
 *
 * Points: "worker_after_commit" (a batch committed, not yet acked),
 * "worker_mid_transaction" (inside the batch's open transaction),
 * "worker_parked" (a batch committed and left deliveries parked, unacked,
 * because another transaction held their job or session),
 * "publish_before_confirm" (messages sent, the broker's confirms not yet
 * read: in the API, after the job's commit), "api_before_commit" and
 * "api_after_commit" (a request with an Idempotency-Key: its writes and the
 * key's record made, just before and just after their commit).
 */
#ifndef BULKREG_FAULT_H
#define BULKREG_FAULT_H

#ifdef BULKREG_FAULT_HOOKS
/* Kills the process when name is the armed point and its count is reached. */
void fault_point(const char *name);
#define FAULT_POINT(name) fault_point(name)
#else
#define FAULT_POINT(name) ((void)0)
#endif

#endif
