/*
 * stack.c - the processes a test starts: bulkreg-api, bulkreg-worker,
 * bulkreg-admin and scripts/ctl (see support.h).
 *
 * Children are started with fork + execve and an environment built before
 * the fork, so the child only calls async-signal-safe functions (the test
 * process may have threads: a webhook receiver, libcurl resolvers). Long
 * running children get PR_SET_PDEATHSIG so a crashed or aborted test never
 * leaves a server behind. No global state except a counter naming log
 * files; call from the thread that runs the test.
 */
#include "support.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

extern char **environ;

#define T_START_TIMEOUT_MS 60000
#define T_ADMIN_TIMEOUT_MS 120000
#define T_CTL_TIMEOUT_MS   300000
#define T_ENV_MAX          512
#define T_ARGV_MAX         64
#define T_LOG_TAIL_LINES   60
#define T_LOG_TAIL_BYTES   65536

const char *t_bin_dir(void)
{
	return BULKREG_BIN_DIR;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* prog as a path: unchanged when it holds a '/', else in the bin directory. */
static void prog_path(const char *prog, char *out, size_t cap)
{
	int n = strchr(prog, '/') ? snprintf(out, cap, "%s", prog)
	                          : snprintf(out, cap, "%s/%s", t_bin_dir(), prog);
	cr_assert(n > 0 && (size_t)n < cap, "path of %s too long", prog);
}

/* Length of the NAME part of "NAME=value" (the whole string if no '='). */
static size_t env_name_len(const char *kv)
{
	const char *eq = strchr(kv, '=');
	return eq ? (size_t)(eq - kv) : strlen(kv);
}

/*
 * The environment of a child: environ, then each list in order, a later
 * NAME= replacing an earlier one. The strings are borrowed; out is an
 * array of T_ENV_MAX pointers, NULL terminated.
 */
static void env_build(const char **out, const char *const *const *lists, int nlists)
{
	int n = 0;
	for (char **e = environ; *e; e++) {
		cr_assert(n < T_ENV_MAX - 1, "environment too large");
		out[n++] = *e;
	}
	for (int l = 0; l < nlists; l++) {
		for (const char *const *kv = lists[l]; kv && *kv; kv++) {
			size_t len = env_name_len(*kv);
			int i;
			for (i = 0; i < n; i++) {
				if (env_name_len(out[i]) == len && strncmp(out[i], *kv, len) == 0)
					break;
			}
			if (i == n) {
				cr_assert(n < T_ENV_MAX - 1, "environment too large");
				n++;
			}
			out[i] = *kv;
		}
	}
	out[n] = NULL;
}

/* argv for execve: path's basename as argv[0], then args. */
static void argv_build(const char **out, const char *path, const char *const *args)
{
	int n = 0;
	const char *slash = strrchr(path, '/');
	out[n++] = slash ? slash + 1 : path;
	for (const char *const *a = args; a && *a; a++) {
		cr_assert(n < T_ARGV_MAX - 1, "too many arguments");
		out[n++] = *a;
	}
	out[n] = NULL;
}

/* In the child, between fork and exec: async-signal-safe calls only. */
static void child_exec(const char *path, const char **argv, const char **envp, int in_fd,
                       int out_fd, int err_fd, bool pdeathsig, pid_t parent)
{
	if (pdeathsig) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
	}
	sigset_t none;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	struct sigaction dfl;
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGPIPE, &dfl, NULL);
	if ((in_fd != 0 && dup2(in_fd, 0) < 0) || (out_fd != 1 && dup2(out_fd, 1) < 0) ||
	    (err_fd != 2 && dup2(err_fd, 2) < 0))
		_exit(127);
	/* Nothing of the test (sockets, listeners, pipes) leaks into the child. */
	if (syscall(SYS_close_range, 3U, ~0U, 0) != 0) {
		for (int fd = 3; fd < 4096; fd++)
			close(fd);
	}
	execve(path, (char *const *)argv, (char *const *)envp);
	static const char msg[] = "test support: execve failed\n";
	ssize_t w = write(2, msg, sizeof(msg) - 1);
	(void)w;
	_exit(127);
}

static pid_t spawn(const char *path, const char *const *args, const char *const *const *envs,
                   int nenvs, int in_fd, int out_fd, int err_fd, bool pdeathsig)
{
	const char *envp[T_ENV_MAX];
	const char *argv[T_ARGV_MAX];
	env_build(envp, envs, nenvs);
	argv_build(argv, path, args);
	cr_assert(access(path, X_OK) == 0, "%s is not executable (%s): build it first", path,
	          strerror(errno));
	fflush(NULL);
	pid_t parent = getpid();
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0)
		child_exec(path, argv, envp, in_fd, out_fd, err_fd, pdeathsig, parent);
	return pid;
}

static int exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/* The log file for a child named prog: under $BULKREG_LOCAL_DIR/logs, else /tmp. */
static void log_path_for(const char *prog, char *out, size_t cap)
{
	static unsigned counter;
	unsigned n = __atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST);
	const char *local = getenv("BULKREG_LOCAL_DIR");
	char dir[200];
	int len = -1;
	if (local && *local) {
		len = snprintf(dir, sizeof(dir), "%s/logs", local);
		if (len > 0 && (size_t)len < sizeof(dir))
			mkdir(dir, 0755);
		if (len <= 0 || (size_t)len >= sizeof(dir) || access(dir, W_OK) != 0)
			len = -1;
	}
	if (len < 0) {
		snprintf(dir, sizeof(dir), "/tmp/bulkreg-tests");
		mkdir(dir, 0755);
	}
	const char *base = strrchr(prog, '/');
	base = base ? base + 1 : prog;
	/* Criterion runs tests in "boxfort-worker" processes: name the test binary instead. */
	char exe[256];
	ssize_t elen = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[elen > 0 ? elen : 0] = '\0';
	const char *test = strrchr(exe, '/');
	test = test ? test + 1 : (exe[0] ? exe : program_invocation_short_name);
	len = snprintf(out, cap, "%s/%s-%s-%ld-%u.log", dir, test, base, (long)getpid(), n);
	cr_assert(len > 0 && (size_t)len < cap, "log path too long");
}

void t_proc_spawn(struct t_proc *p, const char *prog, const char *const *args,
                  const char *const *env)
{
	char path[512];
	memset(p, 0, sizeof(*p));
	prog_path(prog, path, sizeof(path));
	log_path_for(prog, p->log_path, sizeof(p->log_path));
	int log_fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	cr_assert(log_fd >= 0, "cannot open %s: %s", p->log_path, strerror(errno));
	int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert(null_fd >= 0, "cannot open /dev/null: %s", strerror(errno));
	const char *const *envs[] = {env};
	p->pid = spawn(path, args, envs, 1, null_fd, log_fd, log_fd, true);
	close(log_fd);
	close(null_fd);
}

bool t_proc_alive(struct t_proc *p)
{
	if (p->pid <= 0)
		return false;
	int status = 0;
	pid_t r = waitpid(p->pid, &status, WNOHANG);
	if (r == 0)
		return true;
	p->exit_status = r == p->pid ? exit_code(status) : -1;
	p->pid = 0;
	return false;
}

void t_proc_print_log(const struct t_proc *p, int lines)
{
	FILE *f = fopen(p->log_path, "r");
	if (!f) {
		fprintf(stderr, "(no log at %s)\n", p->log_path);
		return;
	}
	static char buf[T_LOG_TAIL_BYTES + 1];
	long start = 0;
	if (fseek(f, 0, SEEK_END) == 0) {
		long size = ftell(f);
		start = size > T_LOG_TAIL_BYTES ? size - T_LOG_TAIL_BYTES : 0;
	}
	fseek(f, start, SEEK_SET);
	size_t n = fread(buf, 1, T_LOG_TAIL_BYTES, f);
	fclose(f);
	buf[n] = '\0';
	const char *from = buf + n;
	if (from > buf && from[-1] == '\n')
		from--; /* the last line's own newline */
	int seen = 0;
	while (from > buf && !(from[-1] == '\n' && ++seen >= lines))
		from--;
	fprintf(stderr, "----- last %d lines of %s -----\n%s%s-----\n", lines, p->log_path, from,
	        n && buf[n - 1] != '\n' ? "\n" : "");
}

int t_proc_stop(struct t_proc *p, int sig, int timeout_ms)
{
	if (p->pid <= 0)
		return p->exit_status;
	if (sig != 0)
		kill(p->pid, sig);
	long long deadline = t_now_ms() + timeout_ms;
	for (;;) {
		int status = 0;
		pid_t r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid || (r < 0 && errno != EINTR)) {
			p->exit_status = r == p->pid ? exit_code(status) : -1;
			p->pid = 0;
			return p->exit_status;
		}
		if (t_now_ms() >= deadline)
			break;
		sleep_ms(10);
	}
	fprintf(stderr, "pid %ld did not exit within %d ms of signal %d\n", (long)p->pid,
	        timeout_ms, sig);
	t_proc_print_log(p, T_LOG_TAIL_LINES);
	return -1;
}

/* Waits until GET url answers 200; on failure shows the log and aborts. */
static void wait_ready(struct t_proc *p, const char *what, const char *path)
{
	char url[128];
	snprintf(url, sizeof(url), "%s%s", p->url, path);
	long long deadline = t_now_ms() + T_START_TIMEOUT_MS;
	long last = 0;
	while (t_now_ms() < deadline) {
		last = t_http_status(url, 2000);
		if (last == 200)
			return;
		if (!t_proc_alive(p)) {
			t_proc_print_log(p, T_LOG_TAIL_LINES);
			cr_assert_fail("%s exited with status %d before %s answered 200", what,
			               p->exit_status, url);
		}
		sleep_ms(50);
	}
	t_proc_print_log(p, T_LOG_TAIL_LINES);
	t_proc_stop(p, SIGKILL, 5000);
	cr_assert_fail("%s: %s did not answer 200 within %d ms (last status %ld)", what, url,
	               T_START_TIMEOUT_MS, last);
}

/* Starts prog with the harness defaults, portvar=<free port>, then env. */
static void start_server(struct t_proc *p, const char *prog, const char *portvar,
                         const char *const *env, const char *ready_path)
{
	int port = t_free_port();
	char port_kv[64];
	snprintf(port_kv, sizeof(port_kv), "%s=%d", portvar, port);
	const char *defaults[] = {"BULKREG_API_BIND=127.0.0.1", "BULKREG_WEBHOOK_ALLOW_PRIVATE=1",
	                          port_kv, NULL};
	/* The defaults first, env after them: an explicit NAME= in env wins. */
	const char *merged[T_ENV_MAX];
	int n = 0;
	for (const char *const *kv = defaults; *kv; kv++)
		merged[n++] = *kv;
	for (const char *const *kv = env; kv && *kv; kv++) {
		cr_assert(n < T_ENV_MAX - 1, "too many environment entries");
		merged[n++] = *kv;
	}
	merged[n] = NULL;
	t_proc_spawn(p, prog, NULL, merged);
	p->port = port;
	snprintf(p->url, sizeof(p->url), "http://127.0.0.1:%d", port);
	wait_ready(p, prog, ready_path);
}

void t_api_start(struct t_proc *p, const char *const *env)
{
	start_server(p, "bulkreg-api", "BULKREG_API_PORT", env, "/healthz");
}

void t_worker_start(struct t_proc *p, const char *const *env)
{
	start_server(p, "bulkreg-worker", "BULKREG_WORKER_METRICS_PORT", env, "/readyz");
}

/* Appends what is readable on fd to buf (dropping what does not fit); false at EOF. */
static bool drain(int fd, char *buf, size_t cap, size_t *len)
{
	char tmp[4096];
	ssize_t n = read(fd, tmp, sizeof(tmp));
	if (n < 0)
		return errno == EINTR || errno == EAGAIN;
	if (n == 0)
		return false;
	if (buf && cap > 0) {
		size_t room = cap - 1 - *len;
		size_t take = (size_t)n < room ? (size_t)n : room;
		memcpy(buf + *len, tmp, take);
		*len += take;
		buf[*len] = '\0';
	}
	return true;
}

static int run_capture(const char *path, const char *const *args, const char *const *env, char *out,
                       size_t outcap, char *err, size_t errcap, int timeout_ms, bool pdeathsig)
{
	int pout[2] = {-1, -1}, perr[2] = {-1, -1};
	size_t outlen = 0, errlen = 0;
	if (out && outcap)
		out[0] = '\0';
	if (err && errcap)
		err[0] = '\0';
	if (out)
		cr_assert(pipe2(pout, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
	if (err)
		cr_assert(pipe2(perr, O_CLOEXEC) == 0, "pipe: %s", strerror(errno));
	int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	cr_assert(null_fd >= 0, "cannot open /dev/null");
	const char *const *envs[] = {env};
	pid_t pid =
	    spawn(path, args, envs, 1, null_fd, out ? pout[1] : 1, err ? perr[1] : 2, pdeathsig);
	close(null_fd);
	if (out)
		close(pout[1]);
	if (err)
		close(perr[1]);

	long long deadline = t_now_ms() + timeout_ms;
	int status = 0;
	bool exited = false, out_open = out != NULL, err_open = err != NULL;
	while (!exited || out_open || err_open) {
		struct pollfd fds[2];
		int nfds = 0;
		if (out_open)
			fds[nfds++] = (struct pollfd){.fd = pout[0], .events = POLLIN};
		if (err_open)
			fds[nfds++] = (struct pollfd){.fd = perr[0], .events = POLLIN};
		if (nfds > 0 && poll(fds, (nfds_t)nfds, 50) > 0) {
			for (int i = 0; i < nfds; i++) {
				if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
					continue;
				bool is_out = out_open && fds[i].fd == pout[0];
				bool more = is_out ? drain(pout[0], out, outcap, &outlen)
				                   : drain(perr[0], err, errcap, &errlen);
				if (!more && is_out)
					out_open = false;
				else if (!more)
					err_open = false;
			}
		} else if (nfds == 0) {
			sleep_ms(10);
		}
		if (!exited && waitpid(pid, &status, WNOHANG) == pid)
			exited = true;
		/* A grandchild may hold the pipes open: do not wait for their EOF. */
		if (exited && nfds > 0 && poll(fds, (nfds_t)nfds, 0) <= 0)
			break;
		if (!exited && t_now_ms() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			fprintf(stderr, "%s did not finish within %d ms: killed\n", path,
			        timeout_ms);
			status = -1;
			break;
		}
	}
	if (out)
		close(pout[0]);
	if (err)
		close(perr[0]);
	return status == -1 ? -1 : exit_code(status);
}

int t_run(const char *prog, const char *const *args, const char *const *env, char *out,
          size_t outcap, char *err, size_t errcap, int timeout_ms)
{
	char path[512];
	prog_path(prog, path, sizeof(path));
	return run_capture(path, args, env, out, outcap, err, errcap, timeout_ms, true);
}

int t_admin(char *out, size_t outcap, const char *const *args)
{
	return t_run("bulkreg-admin", args, NULL, out, outcap, NULL, 0, T_ADMIN_TIMEOUT_MS);
}

/* scripts/<script> of the repository; fatal unless a test stack is named. */
static void script_path(const char *script, char *out, size_t cap)
{
	const char *local = getenv("BULKREG_LOCAL_DIR");
	cr_assert(local && *local,
	          "BULKREG_LOCAL_DIR is not set: refusing to run scripts/%s against the "
	          "developer's stack (run the tests through scripts/test)",
	          script);
	const char *root = getenv("BULKREG_ROOT");
	if (!root || !*root)
		root = BULKREG_SOURCE_DIR;
	int n = snprintf(out, cap, "%s/scripts/%s", root, script);
	cr_assert(n > 0 && (size_t)n < cap, "path too long");
}

int t_ctl_capture(const char *const *args, char *out, size_t outcap)
{
	char path[512];
	script_path("ctl", path, sizeof(path));
	/* No PDEATHSIG: ctl must not die half-way through starting a service. */
	return run_capture(path, args, NULL, out, outcap, NULL, 0, T_CTL_TIMEOUT_MS, false);
}

int t_standby(const char *action, char *out, size_t outcap)
{
	char path[512];
	script_path("standby", path, sizeof(path));
	const char *args[] = {action, NULL};
	/* No PDEATHSIG either: a standby half made or half promoted helps nobody. */
	return run_capture(path, args, NULL, out, outcap, NULL, 0, T_CTL_TIMEOUT_MS, false);
}

int t_ctl(const char *action, const char *what)
{
	const char *args[] = {action, what, NULL};
	return t_ctl_capture(args, NULL, 0);
}
