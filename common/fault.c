/*
 * fault.c - test-only crash points (see fault.h). Compiled only into builds
 * configured with -DBULKREG_FAULT_HOOKS=ON. The hit counter is atomic; the
 * armed point is read from the environment once.
 */
#include "fault.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char armed[64];
static long target = 1;
static long hits;

static void fault_load(void)
{
	const char *v = getenv("BULKREG_FAULT");
	if (!v || !*v)
		return;
	size_t n = strcspn(v, ":");
	if (n >= sizeof(armed))
		return;
	memcpy(armed, v, n);
	armed[n] = '\0';
	if (v[n] == ':') {
		char *end = NULL;
		long t = strtol(v + n + 1, &end, 10);
		if (end && *end == '\0' && t > 0)
			target = t;
	}
}

void fault_point(const char *name)
{
	pthread_once(&once, fault_load);
	if (!armed[0] || strcmp(armed, name) != 0)
		return;
	if (__atomic_add_fetch(&hits, 1, __ATOMIC_SEQ_CST) != target)
		return;
	LOG_WARN("fault point %s reached: killing the process", name);
	kill(getpid(), SIGKILL);
	pause();
}
