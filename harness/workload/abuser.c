// SPDX-License-Identifier: GPL-2.0
/*
 * abuser: a neighbour that uses the agent latency mark to get more than its share, the
 * abuses the enforcement (kernel.sched_agent_latency, cpu.agent.budget) must bound:
 *
 *   open-loop  CPU-bound threads that reopen a window (PR_AGENT_LATENCY_OPEN) every
 *              --reopen-us and never block: the CPU at its top frequency for ever;
 *   guards     one thread per CPU, pinned, marked with a tight idle tolerance, in sleeps
 *              just under the guard's length: every CPU out of deep idle;
 *   storm      many marked threads in short sleep/compute cycles: a window and a guard at
 *              every wakeup, many at once.
 *
 * It runs until SIGTERM or SIGINT (or --seconds), then writes one JSON line to --out: what it
 * did (its work in loop iterations, so that a throughput can be compared with the same program
 * unmarked) and whether it could mark itself (the errno if not: EPERM under the restrictive
 * policy). --no-mark runs the same threads unmarked: the stock task to compare with. --cpu pins
 * every thread of open-loop or storm to one CPU, so that whether it shares the agent's CPU is
 * chosen, not left to placement (the guards pin one thread to each CPU themselves).
 *
 * Static, libc only, like agentloop.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_AGENT_LATENCY
#define PR_AGENT_LATENCY		0x41474c57
#define PR_AGENT_LATENCY_SET		1
#define PR_AGENT_LATENCY_OPEN		4

struct agent_latency_attr {
	uint32_t flags, window_us, target_us, guard_us, tolerance_us;
};
#endif

enum kind { K_OPEN_LOOP, K_GUARDS, K_STORM };
static const char *const kind_names[] = { "open-loop", "guards", "storm" };

struct opts {
	enum kind kind;
	long threads, window_us, guard_us, tolerance_us, reopen_us, sleep_us, compute_us, cpu;
	double seconds;
	int mark;
	const char *out;
};

static struct opts o;
static atomic_int stop;
static atomic_int mark_errno;		/* the first refusal, 0 if every thread marked */
static atomic_int marked;
static atomic_llong work;		/* loop iterations, all threads */
static atomic_llong reopen_fail;

static void fail(const char *msg)
{
	fprintf(stderr, "abuser: %s\n", msg);
	exit(2);
}

static long parse_long(const char *s, const char *what, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < lo || v > hi) {
		fprintf(stderr, "abuser: --%s must be an integer in %ld..%ld\n", what, lo, hi);
		exit(2);
	}
	return v;
}

static uint64_t now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000ull + t.tv_nsec;
}

static void on_signal(int sig)
{
	(void)sig;
	atomic_store(&stop, 1);
}

/* Mark the calling thread (unless --no-mark); whether it is marked. */
static int mark(void)
{
	struct agent_latency_attr a = {
		.window_us = o.window_us, .guard_us = o.guard_us, .tolerance_us = o.tolerance_us,
	};
	int zero = 0;

	if (!o.mark)
		return 0;
	if (prctl(PR_AGENT_LATENCY, PR_AGENT_LATENCY_SET, &a, sizeof(a), 0)) {
		atomic_compare_exchange_strong(&mark_errno, &zero, errno);
		return 0;
	}
	atomic_fetch_add(&marked, 1);
	return 1;
}

/* Spin for about @us of wall time, counting iterations of a fixed amount of work. */
static long spin(uint64_t us)
{
	uint64_t end = now_ns() + us * 1000;
	volatile uint64_t x = 1;
	long n = 0;

	do {
		for (int i = 0; i < 1000; i++)
			x = x * 6364136223846793005ull + 1442695040888963407ull;
		n++;
	} while (now_ns() < end && !atomic_load_explicit(&stop, memory_order_relaxed));
	return n;
}

static void nap(long us)
{
	struct timespec t = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&t, NULL);
}

static void *thread_main(void *arg)
{
	long idx = (long)arg;
	long n = 0;
	int is_marked;

	if (o.kind == K_GUARDS || o.cpu >= 0) {
		cpu_set_t set;
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		CPU_ZERO(&set);
		CPU_SET(o.cpu >= 0 ? o.cpu : idx % (cpus > 0 ? cpus : 1), &set);
		if (sched_setaffinity(0, sizeof(set), &set) && o.cpu >= 0)
			fail("cannot pin to --cpu");
	}
	is_marked = mark();
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		switch (o.kind) {
		case K_OPEN_LOOP:
			if (is_marked && prctl(PR_AGENT_LATENCY, PR_AGENT_LATENCY_OPEN, o.window_us, 0, 0))
				atomic_fetch_add(&reopen_fail, 1);
			n += spin(o.reopen_us);
			break;
		case K_GUARDS:
			nap(o.sleep_us);
			break;
		case K_STORM:
			nap(o.sleep_us + (idx * 37) % (o.sleep_us + 1));
			n += spin(o.compute_us);
			break;
		}
	}
	atomic_fetch_add(&work, n);
	return NULL;
}

static void usage(void)
{
	fprintf(stderr, "usage: abuser --kind open-loop|guards|storm --out FILE [--threads N]\n"
		"  [--seconds S] [--window-us US] [--guard-us US] [--tolerance-us US] [--reopen-us US]\n"
		"  [--sleep-us US] [--compute-us US] [--cpu N] [--no-mark]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{ "kind", 1, 0, 'k' }, { "threads", 1, 0, 't' }, { "seconds", 1, 0, 's' },
		{ "window-us", 1, 0, 'w' }, { "guard-us", 1, 0, 'g' }, { "tolerance-us", 1, 0, 'l' },
		{ "reopen-us", 1, 0, 'r' }, { "sleep-us", 1, 0, 'p' }, { "compute-us", 1, 0, 'c' },
		{ "no-mark", 0, 0, 'n' }, { "out", 1, 0, 'o' }, { "cpu", 1, 0, 'u' }, { 0 },
	};
	struct sigaction sa = { .sa_handler = on_signal };
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int c, kind = -1;
	pthread_t *tids;
	uint64_t t0, t1;
	FILE *f;

	o = (struct opts){ .window_us = 20000, .guard_us = 50000, .tolerance_us = 1,
			   .reopen_us = 19000, .sleep_us = 49000, .compute_us = 100, .mark = 1, .cpu = -1 };
	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			for (int i = 0; i < 3; i++)
				if (!strcmp(optarg, kind_names[i]))
					kind = i;
			if (kind < 0)
				fail("--kind must be open-loop, guards or storm");
			break;
		case 't': o.threads = parse_long(optarg, "threads", 1, 1024); break;
		case 's': o.seconds = parse_long(optarg, "seconds", 1, 86400); break;
		case 'w': o.window_us = parse_long(optarg, "window-us", 1, 20000); break;
		case 'g': o.guard_us = parse_long(optarg, "guard-us", 0, 50000); break;
		case 'l': o.tolerance_us = parse_long(optarg, "tolerance-us", 0, 1000000); break;
		case 'r': o.reopen_us = parse_long(optarg, "reopen-us", 1, 1000000); break;
		case 'p': o.sleep_us = parse_long(optarg, "sleep-us", 1, 10000000); break;
		case 'c': o.compute_us = parse_long(optarg, "compute-us", 1, 1000000); break;
		case 'u': o.cpu = parse_long(optarg, "cpu", 0, CPU_SETSIZE - 1); break;
		case 'n': o.mark = 0; break;
		case 'o': o.out = optarg; break;
		default: usage();
		}
	}
	if (kind < 0 || !o.out || optind != argc)
		usage();
	o.kind = kind;
	if (!o.threads)
		o.threads = o.kind == K_OPEN_LOOP ? 1 : o.kind == K_GUARDS ? (cpus > 0 ? cpus : 1) : 64;
	if (o.kind == K_STORM && !o.sleep_us)
		fail("--sleep-us must be positive");
	if (o.kind == K_GUARDS && o.cpu >= 0)
		fail("--cpu: the guards pin a thread to each CPU");

	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	tids = calloc(o.threads, sizeof(*tids));
	if (!tids)
		fail("out of memory");
	t0 = now_ns();
	for (long i = 0; i < o.threads; i++)
		if (pthread_create(&tids[i], NULL, thread_main, (void *)i))
			fail("pthread_create failed");
	if (o.seconds > 0) {
		while (!atomic_load(&stop) && now_ns() - t0 < (uint64_t)(o.seconds * 1e9))
			nap(10000);
		atomic_store(&stop, 1);
	} else {
		while (!atomic_load(&stop))
			pause();
	}
	for (long i = 0; i < o.threads; i++)
		pthread_join(tids[i], NULL);
	t1 = now_ns();

	f = fopen(o.out, "w");
	if (!f)
		fail("cannot write --out");
	fprintf(f, "{\"kind\": \"%s\", \"threads\": %ld, \"mark\": %s, \"marked\": %d, "
		"\"mark_errno\": %d, \"mark_error\": \"%s\", \"seconds\": %.6f, \"work\": %lld, "
		"\"reopen_failures\": %lld, \"window_us\": %ld, \"guard_us\": %ld, \"tolerance_us\": %ld, "
		"\"cpu\": %ld}\n",
		kind_names[o.kind], o.threads, o.mark ? "true" : "false", atomic_load(&marked),
		atomic_load(&mark_errno), atomic_load(&mark_errno) ? strerror(atomic_load(&mark_errno)) : "",
		(t1 - t0) / 1e9, atomic_load(&work), atomic_load(&reopen_fail), o.window_us, o.guard_us,
		o.tolerance_us, o.cpu);
	return fclose(f) ? 1 : 0;
}
