// SPDX-License-Identifier: GPL-2.0
/*
 * agentloop: a synthetic agent loop, wait -> wake -> compute -> repeat.
 *
 * A "world" thread stands for the model server, tool or I/O device: it waits for the agent
 * to finish a step, sleeps for the step's wait time (a model/tool round trip), then signals
 * the agent through the chosen primitive. The agent wakes, runs optional phases (fresh page
 * faults, a file read, a path lookup) and a fixed amount of compute (loop iterations, not
 * time, so a lower CPU frequency shows up as a longer compute), then tells the world it is
 * done. With wait kinds nanosleep and timerfd there is no world thread: the agent sleeps
 * until an absolute deadline, and the deadline stands for the signal.
 *
 * Per step it records CLOCK_MONOTONIC times of signal, wakeup, end of phases and end of
 * compute, and the CPU it woke on. Output: CSV (one row per step, warm-up included and
 * flagged) written after the loop, so that no I/O disturbs the measurement; a one-line
 * JSON summary on stdout. Deterministic given --seed.
 *
 * Agent-workload options (issue 15), each off by default; with none of them the output is the
 * loop's original format, byte for byte. With any of them the CSV has two more columns (units:
 * the step's compute, missed: it ended past its deadline) and the summary three more keys:
 *   --compute-dist uniform|lognormal|file  per-step compute drawn from a distribution (its own
 *                  PRNG stream per agent, so the waits do not change when it is turned on);
 *   --period-us P  a periodic timerfd (the control loop): one timer, re-armed by the kernel every
 *                  P; a step is released at the oldest expiry it reads (a late wakeup shows as
 *                  wake latency) and missed its deadline when it ends after the next expiry; the
 *                  other expiries one read returns had no step of their own: skipped ticks;
 *   --fanout       one world thread signals every agent at once and waits for all of them before
 *                  the next wait (fan-out / fan-in): one shared signal stamp per step.
 *
 * The meter (--meter GLOB ..., --meter-out PREFIX): counter files (an energy meter, time in state,
 * idle residency) read by the loop itself at the edges of the measured steps, with none of the
 * warm-up, the process's start and exit or the shell's own snapshots in them. Start: every agent
 * ends its last warm-up step and waits; one reads the counters, then the clock; all go on, so the
 * read delays no measured step (with --warmup 0: once every agent has started; a world thread may
 * then be in its first wait). End: the last agent to end its last step reads the clock, then the
 * counters (agents that ended earlier idle until then). One agent: exactly `steps` periods. The
 * files are opened before the loop (idle states' name, latency and disable read then, once) and
 * re-read with pread() from offset 0; after the loop they are written as PREFIX-before.txt and
 * PREFIX-after.txt, "path:line" per non-empty line (grep -H .'s format), after an "uptime:" line of
 * CLOCK_BOOTTIME seconds (/proc/uptime's clock).
 *
 * Static, libc only (io_uring through raw syscalls), so it runs in any guest userland.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <linux/futex.h>
#include <linux/io_uring.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum wait_kind { W_FUTEX, W_EVENTFD, W_PIPE, W_TIMERFD, W_EPOLL, W_IO_URING, W_NANOSLEEP };
static const char *const wait_names[] = { "futex", "eventfd", "pipe", "timerfd", "epoll", "io_uring",
					  "nanosleep" };
enum dist_kind { D_FIXED, D_UNIFORM, D_EXPONENTIAL, D_FILE };
static const char *const dist_names[] = { "fixed", "uniform", "exponential", "file" };
enum cdist_kind { C_FIXED, C_UNIFORM, C_LOGNORMAL, C_FILE };
static const char *const cdist_names[] = { "fixed", "uniform", "lognormal", "file" };
#define UNITS_MAX 2000000000L	/* a step's compute: ~24 s at fmax, ~2 min at the lowest OPP */

struct opts {
	long steps, warmup, agents, compute_units;
	long burst_every, burst_units;	/* every Nth step computes burst_units instead */
	enum wait_kind wait;
	enum dist_kind dist;
	double wait_us, min_us, max_us;
	const char *wait_file, *out, *workdir;
	uint64_t seed;
	long touch_pages, read_kb, drop_cache_every, path_depth;
	int mark_agent, explicit_windows;
	long window_us, target_us, tolerance_us, guard_us;
	long agent_cpu, world_cpu;	/* -1: not pinned */
	int path_miss;
	long inject_delay_us;
	long uclamp_min;
	long slice_us;		/* the agent's custom slice (sched_runtime), 0: the default */
	long adpf_target_us;	/* the user-space ADPF-style controller's step target, 0: off */
	long hogs, hog_cpu;	/* CPU-bound neighbours, pinned to hog_cpu (-1: the agent's CPU) */
	enum cdist_kind cdist;	/* per-step compute: C_FIXED = compute_units (and bursts) */
	long cmin_units, cmax_units;	/* uniform bounds; cmax_units also caps lognormal */
	double cmu, csigma;	/* lognormal: ln(units) ~ N(cmu, csigma^2) */
	const char *compute_file;	/* units per line, cycled */
	long period_us;		/* periodic timerfd (control loop), 0: off */
	int fanout;		/* one world signals all agents and waits for all */
	long noise_busy_us, noise_idle_us;	/* a duty-cycled neighbour thread, 0: none */
	int extended;		/* any of the three above: the extended output */
};

struct record {
	int64_t signal_ns, wake_ns, phases_ns, done_ns;
	int cpu;
	int missed;		/* periodic: done after the next expiry */
};

struct agent {
	int id;
	const struct opts *o;
	int64_t *waits_ns;
	long *units;		/* per-step compute, loop iterations */
	struct record *rec;
	long ticks_skipped;	/* periodic: expiries that passed unread */
	/* world -> agent signalling */
	atomic_int seq;
	int efd, pipefd[2], epfd;
	/* agent -> world: step done */
	atomic_int done_seq;
	/* io_uring */
	int ring_fd;
	unsigned *sq_tail, *sq_mask, *sq_array, *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
	uint64_t ring_buf;
	/* phases */
	int data_fd;
	char *path;
	char *read_buf;
	pthread_t world, thread;
	uint64_t sink;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "agentloop: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *msg)
{
	fprintf(stderr, "agentloop: %s\n", msg);
	exit(2);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("malloc");
	return p;
}

/* splitmix64: a small, well-mixed PRNG; one stream per agent from --seed. */
static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
	return (rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static int64_t *make_waits(const struct opts *o, int agent)
{
	long total = o->steps + o->warmup;
	int64_t *w = calloc(total, sizeof(*w));
	uint64_t s = o->seed * 1000003ULL + agent;
	double *file_vals = NULL;
	long nfile = 0;

	if (!w)
		die("calloc");
	if (o->dist == D_FILE) {
		FILE *f = fopen(o->wait_file, "r");
		double v;

		if (!f)
			die(o->wait_file);
		file_vals = xmalloc(sizeof(double) * (total + 1));
		while (nfile < total && fscanf(f, "%lf", &v) == 1)
			file_vals[nfile++] = v;
		fclose(f);
		if (!nfile)
			fail("wait file has no values");
	}
	for (long i = 0; i < total; i++) {
		double us;

		switch (o->dist) {
		case D_UNIFORM:
			us = o->min_us + (o->max_us - o->min_us) * rng_unit(&s);
			break;
		case D_EXPONENTIAL:
			us = -o->wait_us * log(1.0 - rng_unit(&s));
			break;
		case D_FILE:
			us = file_vals[i % nfile];
			break;
		default:
			us = o->wait_us;
		}
		if (!(us >= 0 && us <= 3.6e9))	/* also rejects NaN; an hour at most */
			fail("wait times must be between 0 and 3.6e9 us");
		w[i] = (int64_t)(us * 1000.0);
	}
	free(file_vals);
	return w;
}

/* Per-step compute (loop iterations): fixed (with bursts) or drawn from --compute-dist. */
static long *make_units(const struct opts *o, int agent)
{
	long total = o->steps + o->warmup;
	long *u = xmalloc(sizeof(*u) * total);
	uint64_t s = o->seed * 1000003ULL + agent + 0x51ed270b27f1a3c5ULL;	/* not the waits' stream */
	double *file_vals = NULL;
	long nfile = 0;

	if (o->cdist == C_FILE) {
		FILE *f = fopen(o->compute_file, "r");
		double v;

		if (!f)
			die(o->compute_file);
		file_vals = xmalloc(sizeof(double) * (total + 1));
		while (nfile < total && fscanf(f, "%lf", &v) == 1)
			file_vals[nfile++] = v;
		fclose(f);
		if (!nfile)
			fail("compute file has no values");
	}
	for (long i = 0; i < total; i++) {
		double v;

		switch (o->cdist) {
		case C_UNIFORM:
			v = o->cmin_units + (double)(o->cmax_units - o->cmin_units) * rng_unit(&s);
			break;
		case C_LOGNORMAL: {
			/* Box-Muller from two uniforms in (0, 1] x [0, 1) */
			double u1 = 1.0 - rng_unit(&s), u2 = rng_unit(&s);

			v = exp(o->cmu + o->csigma * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
			if (o->cmax_units && v > o->cmax_units)
				v = o->cmax_units;
			break;
		}
		case C_FILE:
			v = file_vals[i % nfile];
			break;
		default:
			v = o->burst_every && i % o->burst_every == o->burst_every - 1 ? o->burst_units : o->compute_units;
		}
		if (!(v >= 0 && v <= UNITS_MAX))	/* also rejects NaN */
			fail("compute units must be between 0 and 2e9");
		u[i] = lround(v);
	}
	free(file_vals);
	return u;
}

static void sleep_ns(int64_t ns)
{
	struct timespec ts = { ns / 1000000000LL, ns % 1000000000LL };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

static void sleep_until(int64_t abs_ns)
{
	struct timespec ts = { abs_ns / 1000000000LL, abs_ns % 1000000000LL };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static void futex_wait(atomic_int *addr, int val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(atomic_int *addr)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

/* ---- io_uring through raw syscalls: one READ of the eventfd per wait ---- */

static void ring_setup(struct agent *a)
{
	struct io_uring_params p;
	void *sq, *cq;

	memset(&p, 0, sizeof(p));
	a->ring_fd = syscall(__NR_io_uring_setup, 4, &p);
	if (a->ring_fd < 0)
		die("io_uring_setup");
	sq = mmap(NULL, p.sq_off.array + p.sq_entries * sizeof(unsigned), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_POPULATE, a->ring_fd, IORING_OFF_SQ_RING);
	cq = mmap(NULL, p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe),
		  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, a->ring_fd, IORING_OFF_CQ_RING);
	a->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_POPULATE, a->ring_fd, IORING_OFF_SQES);
	if (sq == MAP_FAILED || cq == MAP_FAILED || a->sqes == MAP_FAILED)
		die("io_uring mmap");
	a->sq_tail = (unsigned *)((char *)sq + p.sq_off.tail);
	a->sq_mask = (unsigned *)((char *)sq + p.sq_off.ring_mask);
	a->sq_array = (unsigned *)((char *)sq + p.sq_off.array);
	a->cq_head = (unsigned *)((char *)cq + p.cq_off.head);
	a->cq_tail = (unsigned *)((char *)cq + p.cq_off.tail);
	a->cq_mask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
	a->cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
}

static void ring_wait_eventfd(struct agent *a)
{
	unsigned tail = atomic_load_explicit((_Atomic unsigned *)a->sq_tail, memory_order_acquire);
	unsigned idx = tail & *a->sq_mask;
	struct io_uring_sqe *sqe = &a->sqes[idx];
	unsigned head;

	memset(sqe, 0, sizeof(*sqe));
	sqe->opcode = IORING_OP_READ;
	sqe->fd = a->efd;
	sqe->addr = (uint64_t)(uintptr_t)&a->ring_buf;
	sqe->len = sizeof(a->ring_buf);
	a->sq_array[idx] = idx;
	atomic_store_explicit((_Atomic unsigned *)a->sq_tail, tail + 1, memory_order_release);
	if (syscall(__NR_io_uring_enter, a->ring_fd, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
		die("io_uring_enter");
	head = atomic_load_explicit((_Atomic unsigned *)a->cq_head, memory_order_acquire);
	while (head == atomic_load_explicit((_Atomic unsigned *)a->cq_tail, memory_order_acquire)) {
		if (syscall(__NR_io_uring_enter, a->ring_fd, 0, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0)
			die("io_uring_enter");
	}
	if (a->cqes[head & *a->cq_mask].res < 0) {
		errno = -a->cqes[head & *a->cq_mask].res;
		die("io_uring read");
	}
	atomic_store_explicit((_Atomic unsigned *)a->cq_head, head + 1, memory_order_release);
}

/* ---- signalling ---- */

static void world_signal(struct agent *a)
{
	uint64_t one = 1;
	char c = 1;

	switch (a->o->wait) {
	case W_FUTEX:
		atomic_fetch_add(&a->seq, 1);
		futex_wake(&a->seq);
		break;
	case W_EVENTFD:
	case W_EPOLL:
	case W_IO_URING:
		if (write(a->efd, &one, sizeof(one)) != sizeof(one))
			die("eventfd write");
		break;
	case W_PIPE:
		if (write(a->pipefd[1], &c, 1) != 1)
			die("pipe write");
		break;
	default:
		break;
	}
}

static void agent_wait(struct agent *a, int *last_seq, int64_t deadline_ns)
{
	uint64_t v;
	char c;
	struct epoll_event ev;

	switch (a->o->wait) {
	case W_FUTEX:
		while (atomic_load(&a->seq) == *last_seq)
			futex_wait(&a->seq, *last_seq);
		*last_seq = atomic_load(&a->seq);
		break;
	case W_EVENTFD:
		if (read(a->efd, &v, sizeof(v)) != sizeof(v))
			die("eventfd read");
		break;
	case W_PIPE:
		if (read(a->pipefd[0], &c, 1) != 1)
			die("pipe read");
		break;
	case W_EPOLL:
		while (epoll_wait(a->epfd, &ev, 1, -1) != 1)
			if (errno != EINTR)
				die("epoll_wait");
		if (read(a->efd, &v, sizeof(v)) != sizeof(v))
			die("eventfd read");
		break;
	case W_IO_URING:
		ring_wait_eventfd(a);
		break;
	case W_TIMERFD: {
		struct itimerspec its = { { 0, 0 }, { deadline_ns / 1000000000LL, deadline_ns % 1000000000LL } };

		if (a->o->period_us) {	/* the periodic timer is armed once; its expiries are counted */
			if (read(a->efd, &v, sizeof(v)) != sizeof(v))
				die("timerfd read");
			*last_seq += (int)v;
			break;
		}
		if (timerfd_settime(a->efd, TFD_TIMER_ABSTIME, &its, NULL))
			die("timerfd_settime");
		if (read(a->efd, &v, sizeof(v)) != sizeof(v))
			die("timerfd read");
		break;
	}
	case W_NANOSLEEP:
		sleep_until(deadline_ns);
		break;
	}
}

/* ---- the work of a step ---- */

static uint64_t compute(long units, uint64_t x)
{
	for (long i = 0; i < units; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		__asm__ volatile("" : "+r"(x));
	}
	return x;
}

static void phases(struct agent *a, long step)
{
	const struct opts *o = a->o;

	if (o->touch_pages) {
		size_t len = o->touch_pages * 4096UL;
		char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			die("mmap");
		for (size_t off = 0; off < len; off += 4096)
			p[off] = (char)off;
		a->sink += p[len - 4096];
		munmap(p, len);
	}
	if (o->read_kb) {
		if (o->drop_cache_every && step % o->drop_cache_every == 0)
			posix_fadvise(a->data_fd, 0, 0, POSIX_FADV_DONTNEED);
		if (pread(a->data_fd, a->read_buf, o->read_kb * 1024, 0) < 0)
			die("pread");
		a->sink += a->read_buf[0];
	}
	if (o->path_depth) {
		struct stat st;
		int fd;

		if (stat(a->path, &st))
			die("stat");
		fd = open(a->path, O_RDONLY);
		if (fd < 0)
			die("open");
		close(fd);
		if (o->path_miss) {
			/* a name never looked up before: a dentry cache miss and a filesystem lookup */
			char miss[4096];

			/* the pid too: a name an earlier run looked up is a cached negative dentry */
			snprintf(miss, sizeof(miss), "%s-missing-%d-%ld", a->path, (int)getpid(), step);
			if (!stat(miss, &st) || errno != ENOENT)
				die("stat of a missing name");
		}
	}
}

static void prepare_phases(struct agent *a)
{
	const struct opts *o = a->o;
	char buf[4096];

	if (o->read_kb) {
		snprintf(buf, sizeof(buf), "%s/agentloop-data-%d", o->workdir, a->id);
		a->data_fd = open(buf, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (a->data_fd < 0)
			die(buf);
		a->read_buf = xmalloc(o->read_kb * 1024);
		memset(a->read_buf, 'x', o->read_kb * 1024);
		if (write(a->data_fd, a->read_buf, o->read_kb * 1024) < 0)
			die("write data file");
		fsync(a->data_fd);
	}
	if (o->path_depth) {
		int n = snprintf(buf, sizeof(buf), "%s/agentloop-tree-%d", o->workdir, a->id);

		mkdir(buf, 0755);
		for (long d = 0; d < o->path_depth && n < (int)sizeof(buf) - 16; d++) {
			n += snprintf(buf + n, sizeof(buf) - n, "/d%ld", d);
			if (mkdir(buf, 0755) && errno != EEXIST)
				die(buf);
		}
		snprintf(buf + n, sizeof(buf) - n, "/leaf");
		close(open(buf, O_CREAT | O_WRONLY, 0644));
		a->path = strdup(buf);
	}
}

/* sched_setattr(2)'s struct, version 1 (with uclamp): the stock kernel's knobs for a slice and a floor. */
struct sched_attr_v1 {
	uint32_t size, sched_policy;
	uint64_t sched_flags;
	int32_t sched_nice;
	uint32_t sched_priority;
	uint64_t sched_runtime, sched_deadline, sched_period;
	uint32_t sched_util_min, sched_util_max;
};

#ifndef SCHED_FLAG_KEEP_POLICY
#define SCHED_FLAG_KEEP_POLICY		0x08
#endif
#ifndef SCHED_FLAG_KEEP_ALL
#define SCHED_FLAG_KEEP_ALL		0x18	/* KEEP_POLICY | KEEP_PARAMS */
#endif
#ifndef SCHED_FLAG_UTIL_CLAMP_MIN
#define SCHED_FLAG_UTIL_CLAMP_MIN	0x20
#endif

/*
 * The calling thread's EEVDF request size (sched_runtime, 0 = leave it) and uclamp.min (< 0 =
 * leave it), in one sched_setattr(). The policy is always kept (a SCHED_BATCH agent stays one).
 * Setting a slice sets the fair params, so the thread's nice level is passed back as it is;
 * without one, KEEP_ALL keeps them. A slice needs a fair policy: SCHED_IDLE would ignore it.
 */
static void set_sched_attr(long slice_us, long uclamp_min)
{
	struct sched_attr_v1 attr = { .size = sizeof(attr), .sched_policy = SCHED_OTHER };

	if (slice_us) {
		int policy = sched_getscheduler(0);

		if (policy != SCHED_OTHER && policy != SCHED_BATCH)
			fail("--slice-us needs SCHED_OTHER or SCHED_BATCH");
		attr.sched_flags = SCHED_FLAG_KEEP_POLICY;
		errno = 0;
		attr.sched_nice = getpriority(PRIO_PROCESS, 0);	/* this thread's nice */
		if (errno)
			die("getpriority");
		attr.sched_runtime = (uint64_t)slice_us * 1000;
	} else {
		attr.sched_flags = SCHED_FLAG_KEEP_ALL;
	}
	if (uclamp_min >= 0) {
		attr.sched_flags |= SCHED_FLAG_UTIL_CLAMP_MIN;
		attr.sched_util_min = (uint32_t)uclamp_min;
	}
	if (syscall(SYS_sched_setattr, 0, &attr, 0))
		die(slice_us && uclamp_min >= 0 ? "sched_setattr(sched_runtime, uclamp.min)" :
		    slice_us ? "sched_setattr(sched_runtime)" : "sched_setattr(uclamp.min)");
}

/*
 * An ADPF-style performance hint session, in user space: after each step, the step's latency
 * against its target moves the thread's uclamp.min, as Android's power HAL turns the actual work
 * durations a hint session reports into uclamp.min. This is an integral controller: the error
 * (latency / target - 1) adds ADPF_GAIN x 1024 per step, within 0..1024.
 */
#define ADPF_GAIN 0.5

static double adpf_update(double util, int64_t latency_ns, long target_us)
{
	double err = (double)latency_ns / ((double)target_us * 1000.0) - 1.0;

	util += ADPF_GAIN * 1024.0 * err;
	return util < 0 ? 0 : util > 1024 ? 1024 : util;
}


/* ---- threads ---- */

static void pin_thread(long cpu, const char *role)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set)) {
		fprintf(stderr, "agentloop: --%s-cpu %ld: %s\n", role, cpu, strerror(errno));
		exit(2);
	}
}

static void name_thread(const char *role, int id)
{
	char name[16];

	/* probes tell agents from worlds by comm: "agent-N" / "world-N" */
	snprintf(name, sizeof(name), "%s-%d", role, id);
	prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* A CPU-bound neighbour: spins until the agents are done. */
static atomic_int hogs_stop;

static void *hog_main(void *arg)
{
	const struct opts *o = arg;
	volatile uint64_t x = 0;

	name_thread("hog", 0);
	pin_thread(o->hog_cpu >= 0 ? o->hog_cpu : o->agent_cpu, "hog");
	while (!atomic_load_explicit(&hogs_stop, memory_order_relaxed))
		x++;
	return NULL;
}

static struct agent *all_agents;	/* --fanout: the world signals every one of them */

/* --fanout: one world for every agent. Each step waits for all of them (fan-in), then signals
 * them one after the other with one stamp (fan-out). Agent 0's wait times are everyone's. */
static void *fanout_world_main(void *arg)
{
	const struct opts *o = arg;
	long total = o->steps + o->warmup;

	name_thread("world", 0);
	pin_thread(o->world_cpu, "world");
	for (long i = 0; i < total; i++) {
		int64_t t;

		for (int k = 0; k < o->agents; k++)
			while (atomic_load(&all_agents[k].done_seq) < i)
				futex_wait(&all_agents[k].done_seq, (int)i - 1);
		sleep_ns(all_agents[0].waits_ns[i]);
		t = now_ns();
		for (int k = 0; k < o->agents; k++)
			all_agents[k].rec[i].signal_ns = t;
		for (int k = 0; k < o->agents; k++)
			world_signal(&all_agents[k]);
	}
	return NULL;
}

/* A noisy neighbour: busy for noise_busy_us, asleep for noise_idle_us, until the agents are done.
 * Unpinned: it moves the load, the utilisation and the idle periods the governors predict from. */
static void *noise_main(void *arg)
{
	const struct opts *o = arg;
	volatile uint64_t x = 0;

	name_thread("noise", 0);
	while (!atomic_load_explicit(&hogs_stop, memory_order_relaxed)) {
		int64_t until = now_ns() + o->noise_busy_us * 1000LL;

		while (now_ns() < until)
			x++;
		sleep_ns(o->noise_idle_us * 1000LL);
	}
	return NULL;
}

static void *world_main(void *arg)
{
	struct agent *a = arg;
	long total = a->o->steps + a->o->warmup;

	name_thread("world", a->id);
	pin_thread(a->o->world_cpu, "world");
	for (long i = 0; i < total; i++) {
		/* the agent's previous step is done: the next request is "in flight" */
		while (atomic_load(&a->done_seq) < i)
			futex_wait(&a->done_seq, (int)i - 1);
		sleep_ns(a->waits_ns[i]);
		a->rec[i].signal_ns = now_ns();
		/* a known delay between the recorded signal and the real one: a sanity check
		 * that the measured latency sees what happens on the wake path */
		if (a->o->inject_delay_us)
			sleep_ns(a->o->inject_delay_us * 1000LL);
		world_signal(a);
	}
	return NULL;
}

/* The agent latency window prctl (CONFIG_AGENT_LATENCY; include/uapi/linux/prctl.h of the series). */
#ifndef PR_AGENT_LATENCY
#define PR_AGENT_LATENCY		0x41474c57
#define PR_AGENT_LATENCY_SET		1
#define PR_AGENT_LATENCY_CLEAR		2
#define PR_AGENT_LATENCY_GET		3
#define PR_AGENT_LATENCY_OPEN		4
#define PR_AGENT_LATENCY_CLOSE		5

struct agent_latency_attr {
	uint32_t flags, window_us, target_us, guard_us, tolerance_us;
};
#endif

static atomic_int agents_marked;

static void mark_agent(const struct opts *o)
{
	struct agent_latency_attr attr = {
		.window_us = o->window_us, .target_us = o->target_us,
		.guard_us = o->guard_us, .tolerance_us = o->tolerance_us,
	};

	if (prctl(PR_AGENT_LATENCY, PR_AGENT_LATENCY_SET, &attr, sizeof(attr), 0)) {
		fprintf(stderr, "agentloop: --mark-agent: prctl(PR_AGENT_LATENCY): %s "
			"(a kernel without CONFIG_AGENT_LATENCY, or a value out of bounds)\n", strerror(errno));
		exit(2);
	}
	atomic_fetch_add(&agents_marked, 1);
}

static void window(const struct opts *o, int open)
{
	if (o->explicit_windows &&
	    prctl(PR_AGENT_LATENCY, open ? PR_AGENT_LATENCY_OPEN : PR_AGENT_LATENCY_CLOSE,
		  open ? o->window_us : 0, 0, 0)) {
		fprintf(stderr, "agentloop: prctl(PR_AGENT_LATENCY, %s): %s\n", open ? "OPEN" : "CLOSE",
			strerror(errno));
		exit(1);
	}
}

/* -- the meter ---------------------------------------------------------------------------- */
#define METER_GLOBS_MAX 32
#define METER_FILES_MAX 65536
#define METER_FILE_MAX (1 << 20)	/* a counter file's bytes (sysfs shows a page; /proc is unbounded) */
#define METER_TEXT_MIN (1 << 16)

static const char *meter_globs[METER_GLOBS_MAX];
static int meter_nglobs;
static const char *meter_out;
static struct meter_file {
	char *path;
	int fd;			/* -1: read once when opened (a fixed fact: an idle state's name) */
} *meter_files;
static int meter_n;
struct textbuf {
	char *buf;
	size_t len, cap;
};
static struct textbuf meter_fixed, meter_text[2], meter_scratch;
static struct timespec meter_at[2];
static atomic_long meter_done;		/* agents past their last step; the last one reads */
static pthread_barrier_t meter_warm;	/* every agent ends its warm-up, one reads, all go on */

static void buf_need(struct textbuf *b, size_t n)
{
	if (b->len + n <= b->cap)
		return;
	while (b->len + n > b->cap)
		b->cap = b->cap ? b->cap * 2 : METER_TEXT_MIN;
	b->buf = realloc(b->buf, b->cap);
	if (!b->buf)
		die("realloc");
}

static void buf_put(struct textbuf *b, const char *s, size_t n)
{
	buf_need(b, n);
	memcpy(b->buf + b->len, s, n);
	b->len += n;
}

/* The whole file from offset 0 (sysfs and /proc show it afresh) into meter_scratch. */
static void meter_slurp(const struct meter_file *f, int fd)
{
	meter_scratch.len = 0;
	for (;;) {
		ssize_t got;

		buf_need(&meter_scratch, 4096);
		got = pread(fd, meter_scratch.buf + meter_scratch.len, 4096, meter_scratch.len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			fprintf(stderr, "agentloop: --meter: %s: %s\n", f->path, strerror(errno));
			exit(2);
		}
		if (!got)
			return;
		meter_scratch.len += got;
		if (meter_scratch.len > METER_FILE_MAX) {
			fprintf(stderr, "agentloop: --meter: %s: more than 1 MiB\n", f->path);
			exit(2);
		}
	}
}

/* grep -H . of what meter_slurp read: "path:line" per non-empty line. */
static void meter_emit(struct textbuf *to, const struct meter_file *f)
{
	size_t plen = strlen(f->path);

	for (size_t a = 0, b; a < meter_scratch.len; a = b + 1) {
		for (b = a; b < meter_scratch.len && meter_scratch.buf[b] != '\n'; b++)
			;
		if (b == a)
			continue;
		buf_put(to, f->path, plen);
		buf_put(to, ":", 1);
		buf_put(to, meter_scratch.buf + a, b - a);
		buf_put(to, "\n", 1);
	}
}

static int meter_is_fixed(const char *path)
{
	static const char *const leaves[] = { "/name", "/latency", "/disable" };
	size_t n = strlen(path);

	for (size_t i = 0; i < sizeof(leaves) / sizeof(leaves[0]); i++) {
		size_t l = strlen(leaves[i]);

		if (n > l && !strcmp(path + n - l, leaves[i]))
			return 1;
	}
	return 0;
}

/* Before the loop: expand the globs, open the regular files among them (an unreadable one is left
 * out, as grep leaves it out), read the fixed ones once, and touch the buffers the edges write. */
static void meter_open(void)
{
	glob_t g = { 0 };
	struct rlimit rl;

	for (int i = 0; i < meter_nglobs; i++) {
		int rc = glob(meter_globs[i], i ? GLOB_APPEND : 0, NULL, &g);

		if (rc && rc != GLOB_NOMATCH)
			fail("--meter: glob failed");
	}
	if (!getrlimit(RLIMIT_NOFILE, &rl) && rl.rlim_cur < rl.rlim_max) {	/* a big machine's files */
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	meter_files = xmalloc(sizeof(*meter_files) * (g.gl_pathc + 1));
	for (size_t i = 0; i < g.gl_pathc; i++) {
		int fd = open(g.gl_pathv[i], O_RDONLY | O_CLOEXEC | O_NONBLOCK);
		struct meter_file *f = &meter_files[meter_n];
		struct stat st;

		if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
			fprintf(stderr, "agentloop: --meter: %s: %s (%d files open)\n", g.gl_pathv[i], strerror(errno),
				meter_n);
			exit(2);
		}
		if (fd < 0)
			continue;
		if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
			close(fd);
			continue;
		}
		if (meter_n == METER_FILES_MAX)
			fail("--meter: more than 65536 files");
		f->path = strdup(g.gl_pathv[i]);
		if (!f->path)
			die("strdup");
		f->fd = fd;
		meter_n++;
		if (meter_is_fixed(f->path)) {
			meter_slurp(f, fd);
			meter_emit(&meter_fixed, f);
			close(fd);
			f->fd = -1;
		}
	}
	globfree(&g);
	for (int k = 0; k < 2; k++) {	/* no page faults inside the window */
		buf_need(&meter_text[k], METER_TEXT_MIN + 2 * meter_fixed.len);
		memset(meter_text[k].buf, 0, meter_text[k].cap);
	}
	buf_need(&meter_scratch, 2 * 4096);
	memset(meter_scratch.buf, 0, meter_scratch.cap);
}

static void meter_read(int k)
{
	buf_put(&meter_text[k], meter_fixed.buf ? meter_fixed.buf : "", meter_fixed.len);
	for (int i = 0; i < meter_n; i++) {
		if (meter_files[i].fd < 0)
			continue;
		meter_slurp(&meter_files[i], meter_files[i].fd);
		meter_emit(&meter_text[k], &meter_files[i]);
	}
}

/* The window's start: called by every agent once its last warm-up step has ended and before it
 * lets the world know, so no measured step has begun: all wait, one reads, then the clock is read
 * and all go on (each agent's first measured step starts after the read, not during it). */
static void meter_start(void)
{
	if (!meter_out)
		return;
	if (pthread_barrier_wait(&meter_warm) == PTHREAD_BARRIER_SERIAL_THREAD) {
		meter_read(0);
		clock_gettime(CLOCK_BOOTTIME, &meter_at[0]);
	}
	pthread_barrier_wait(&meter_warm);
}

/* The window's end: the last agent to end its last step reads the clock, then the counters (the
 * ones that ended before idle until then: the window's end is the last agent's). */
static void meter_end(const struct opts *o)
{
	if (!meter_out || atomic_fetch_add(&meter_done, 1) + 1 != o->agents)
		return;
	clock_gettime(CLOCK_BOOTTIME, &meter_at[1]);
	meter_read(1);
}

static void meter_write(void)
{
	static const char *const edge[2] = { "before", "after" };

	for (int k = 0; k < 2; k++) {
		char path[4096], up[64];
		FILE *f;

		snprintf(path, sizeof(path), "%s-%s.txt", meter_out, edge[k]);
		f = fopen(path, "w");
		if (!f)
			die(path);
		snprintf(up, sizeof(up), "uptime:%lld.%09ld\n", (long long)meter_at[k].tv_sec, meter_at[k].tv_nsec);
		if (fputs(up, f) < 0 || fwrite(meter_text[k].buf, 1, meter_text[k].len, f) != meter_text[k].len ||
		    fclose(f))
			die(path);
	}
}

static void *agent_main(void *arg)
{
	struct agent *a = arg;
	const struct opts *o = a->o;
	long total = o->steps + o->warmup;
	int last_seq = 0;
	uint64_t x = 0x2545f4914f6cdd1dULL + a->id;

	name_thread("agent", a->id);
	pin_thread(o->agent_cpu, "agent");
	if (o->slice_us || o->uclamp_min >= 0)
		set_sched_attr(o->slice_us, o->uclamp_min);
	if (o->mark_agent)
		mark_agent(o);
	double adpf_util = 0;
	int64_t period_ns = o->period_us * 1000LL, t0 = 0, prev_done = 0;

	if (o->period_us) {	/* one periodic timer for the whole run: the first expiry one period on */
		struct itimerspec its;

		t0 = prev_done = now_ns();
		its.it_interval = (struct timespec){ period_ns / 1000000000LL, period_ns % 1000000000LL };
		its.it_value = (struct timespec){ (t0 + period_ns) / 1000000000LL, (t0 + period_ns) % 1000000000LL };
		if (timerfd_settime(a->efd, TFD_TIMER_ABSTIME, &its, NULL))
			die("timerfd_settime");
	}
	if (!o->warmup)
		meter_start();
	for (long i = 0; i < total; i++) {
		int64_t deadline = 0;
		struct record *r = &a->rec[i];

		if (!o->period_us && (o->wait == W_NANOSLEEP || o->wait == W_TIMERFD)) {
			deadline = now_ns() + a->waits_ns[i];
			r->signal_ns = deadline;
		}
		{
			int before = last_seq;

			agent_wait(a, &last_seq, deadline);
			if (o->period_us) {	/* released at the oldest unread expiry; the rest are skipped */
				r->signal_ns = t0 + (int64_t)(before + 1) * period_ns;
				a->ticks_skipped += last_seq - before - 1;
				a->waits_ns[i] = r->signal_ns > prev_done ? r->signal_ns - prev_done : 0;
			}
		}
		r->wake_ns = now_ns();
		r->cpu = sched_getcpu();
		window(o, 1);
		phases(a, i);
		r->phases_ns = now_ns();
		x = compute(a->units[i], x);
		r->done_ns = now_ns();
		prev_done = r->done_ns;
		r->missed = o->period_us && r->done_ns > r->signal_ns + period_ns;
		window(o, 0);
		if (o->adpf_target_us) {
			long before = lround(adpf_util);

			adpf_util = adpf_update(adpf_util, r->done_ns - r->signal_ns, o->adpf_target_us);
			if (lround(adpf_util) != before)
				set_sched_attr(0, lround(adpf_util));
		}
		if (i + 1 == o->warmup)		/* before the world starts the first measured wait */
			meter_start();
		atomic_store(&a->done_seq, (int)i + 1);
		futex_wake(&a->done_seq);
	}
	meter_end(o);
	a->sink += x;
	return NULL;
}

static long parse_long(const char *s, const char *name)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*end || v < 0) {
		fprintf(stderr, "agentloop: --%s needs a non-negative integer, got '%s'\n", name, s);
		exit(2);
	}
	return v;
}

static int lookup(const char *const *names, int n, const char *s, const char *what)
{
	for (int i = 0; i < n; i++)
		if (!strcmp(names[i], s))
			return i;
	fprintf(stderr, "agentloop: unknown %s '%s'\n", what, s);
	exit(2);
}

static void usage(void)
{
	fputs("usage: agentloop [--steps N] [--warmup N] [--agents N] [--compute-units N]\n"
	      "  [--burst-every N --burst-units N]\n"
	      "  [--wait futex|eventfd|pipe|timerfd|epoll|io_uring|nanosleep]\n"
	      "  [--dist fixed|uniform|exponential|file] [--wait-us US] [--min-us US] [--max-us US]\n"
	      "  [--wait-file F] [--seed S] [--touch-pages N] [--read-kb N] [--drop-cache-every N]\n"
	      "  [--path-depth N] [--workdir DIR] [--mark-agent] [--window-us US] [--out FILE.csv]\n"
	      "  [--target-us US] [--tolerance-us US] [--guard-us US] [--explicit-windows]\n"
	      "  [--agent-cpu N] [--world-cpu N]\n"
	      "  [--inject-delay-us US] [--uclamp-min 0..1024] [--path-miss]\n"
	      "  [--slice-us US] [--hogs N] [--hog-cpu N] [--adpf-target-us US]\n"
	      "  [--compute-dist fixed|uniform|lognormal|file] [--compute-min-units N]\n"
	      "  [--compute-max-units N] [--compute-mu MU --compute-sigma S] [--compute-file F]\n"
	      "  [--period-us US (with --wait timerfd)] [--fanout]\n"
	      "  [--noise-busy-us US --noise-idle-us US]\n"
	      "  [--meter GLOB ... --meter-out PREFIX]\n",
	      stderr);
	exit(2);
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	struct opts o = { .steps = 1000, .warmup = 100, .agents = 1, .compute_units = 200000,
			  .wait = W_FUTEX, .dist = D_FIXED, .wait_us = 2000, .seed = 1,
			  .out = "agentloop.csv", .workdir = "/tmp", .uclamp_min = -1,
			  .agent_cpu = -1, .world_cpu = -1, .hog_cpu = -1,
			  /* the window's settings, all explicit (the kernel has no defaults) */
			  .window_us = 2000, .target_us = 0, .tolerance_us = 20, .guard_us = 10000 };
	static const struct option lopts[] = {
		{ "steps", 1, 0, 's' }, { "warmup", 1, 0, 'w' }, { "agents", 1, 0, 'a' },
		{ "compute-units", 1, 0, 'c' }, { "wait", 1, 0, 'W' }, { "dist", 1, 0, 'd' },
		{ "wait-us", 1, 0, 'u' }, { "min-us", 1, 0, 'm' }, { "max-us", 1, 0, 'M' },
		{ "wait-file", 1, 0, 'f' }, { "seed", 1, 0, 'S' }, { "touch-pages", 1, 0, 'p' },
		{ "read-kb", 1, 0, 'r' }, { "drop-cache-every", 1, 0, 'D' }, { "path-depth", 1, 0, 'P' },
		{ "workdir", 1, 0, 'k' }, { "mark-agent", 0, 0, 'A' }, { "window-us", 1, 0, 'N' },
		{ "agent-cpu", 1, 0, 'C' }, { "world-cpu", 1, 0, 'V' },
		{ "target-us", 1, 0, 'R' }, { "tolerance-us", 1, 0, 'T' }, { "guard-us", 1, 0, 'G' }, { "explicit-windows", 0, 0, 'X' },
		{ "out", 1, 0, 'o' }, { "inject-delay-us", 1, 0, 'I' }, { "uclamp-min", 1, 0, 'U' },
		{ "slice-us", 1, 0, 'L' }, { "adpf-target-us", 1, 0, 'F' }, { "hogs", 1, 0, 'H' }, { "hog-cpu", 1, 0, 'Y' },
		{ "path-miss", 0, 0, 'Z' }, { "burst-every", 1, 0, 'b' }, { "burst-units", 1, 0, 'B' },
		{ "compute-dist", 1, 0, 'g' }, { "compute-min-units", 1, 0, 'i' }, { "compute-max-units", 1, 0, 'j' },
		{ "compute-mu", 1, 0, 'x' }, { "compute-sigma", 1, 0, 'y' }, { "compute-file", 1, 0, 'z' },
		{ "period-us", 1, 0, 'e' }, { "fanout", 0, 0, 'O' },
		{ "noise-busy-us", 1, 0, 'q' }, { "noise-idle-us", 1, 0, 'Q' },
		{ "meter", 1, 0, 'n' }, { "meter-out", 1, 0, 'K' },
		{ "help", 0, 0, 'h' },
		{ 0, 0, 0, 0 }
	};
	struct agent *agents;
	pthread_t *hogs;
	long total;
	int c;
	FILE *out;

	while ((c = getopt_long(argc, argv, "", lopts, NULL)) != -1) {
		switch (c) {
		case 's': o.steps = parse_long(optarg, "steps"); break;
		case 'w': o.warmup = parse_long(optarg, "warmup"); break;
		case 'a': o.agents = parse_long(optarg, "agents"); break;
		case 'c': o.compute_units = parse_long(optarg, "compute-units"); break;
		case 'b': o.burst_every = parse_long(optarg, "burst-every"); break;
		case 'B': o.burst_units = parse_long(optarg, "burst-units"); break;
		case 'W': o.wait = lookup(wait_names, 7, optarg, "wait kind"); break;
		case 'd': o.dist = lookup(dist_names, 4, optarg, "distribution"); break;
		case 'u': o.wait_us = atof(optarg); break;
		case 'm': o.min_us = atof(optarg); break;
		case 'M': o.max_us = atof(optarg); break;
		case 'f': o.wait_file = optarg; break;
		case 'S': o.seed = strtoull(optarg, NULL, 10); break;
		case 'p': o.touch_pages = parse_long(optarg, "touch-pages"); break;
		case 'r': o.read_kb = parse_long(optarg, "read-kb"); break;
		case 'D': o.drop_cache_every = parse_long(optarg, "drop-cache-every"); break;
		case 'P': o.path_depth = parse_long(optarg, "path-depth"); break;
		case 'k': o.workdir = optarg; break;
		case 'A': o.mark_agent = 1; break;
		case 'Z': o.path_miss = 1; break;
		case 'N': o.window_us = parse_long(optarg, "window-us"); break;
		case 'R': o.target_us = parse_long(optarg, "target-us"); break;
		case 'T': o.tolerance_us = parse_long(optarg, "tolerance-us"); break;
		case 'G': o.guard_us = parse_long(optarg, "guard-us"); break;
		case 'X': o.explicit_windows = 1; break;
		case 'C': o.agent_cpu = parse_long(optarg, "agent-cpu"); break;
		case 'V': o.world_cpu = parse_long(optarg, "world-cpu"); break;
		case 'o': o.out = optarg; break;
		case 'I': o.inject_delay_us = parse_long(optarg, "inject-delay-us"); break;
		case 'U': o.uclamp_min = parse_long(optarg, "uclamp-min"); break;
		case 'L': o.slice_us = parse_long(optarg, "slice-us"); break;
		case 'F': o.adpf_target_us = parse_long(optarg, "adpf-target-us"); break;
		case 'H': o.hogs = parse_long(optarg, "hogs"); break;
		case 'Y': o.hog_cpu = parse_long(optarg, "hog-cpu"); break;
		case 'g': o.cdist = lookup(cdist_names, 4, optarg, "compute distribution"); break;
		case 'i': o.cmin_units = parse_long(optarg, "compute-min-units"); break;
		case 'j': o.cmax_units = parse_long(optarg, "compute-max-units"); break;
		case 'x': o.cmu = atof(optarg); break;
		case 'y': o.csigma = atof(optarg); break;
		case 'z': o.compute_file = optarg; break;
		case 'e': o.period_us = parse_long(optarg, "period-us"); break;
		case 'O': o.fanout = 1; break;
		case 'q': o.noise_busy_us = parse_long(optarg, "noise-busy-us"); break;
		case 'Q': o.noise_idle_us = parse_long(optarg, "noise-idle-us"); break;
		case 'n':
			if (meter_nglobs == METER_GLOBS_MAX)
				fail("--meter: at most 32 patterns");
			meter_globs[meter_nglobs++] = optarg;
			break;
		case 'K': meter_out = optarg; break;
		default: usage();
		}
	}
	if (o.explicit_windows && !o.mark_agent) {
		fprintf(stderr, "agentloop: --explicit-windows needs --mark-agent\n");
		return 2;
	}
	if (o.uclamp_min > 1024)
		fail("--uclamp-min must be in 0..1024");
	if (o.slice_us < 0 || o.slice_us > 100000 || (o.slice_us && o.slice_us < 100))
		fail("--slice-us must be 0 or in 100..100000 (the kernel's bounds)");
	if (o.hogs < 0 || o.hogs > 64)
		fail("--hogs must be in 0..64");
	if (o.adpf_target_us < 0 || o.adpf_target_us > 10000000)
		fail("--adpf-target-us must be in 0..1e7");
	if (o.adpf_target_us && o.uclamp_min >= 0)
		fail("--adpf-target-us sets uclamp.min itself: not with --uclamp-min");
	if (o.steps < 1 || o.steps + o.warmup > 100000000 || o.agents < 1 || o.agents > 64)
		fail("--steps must be >= 1, steps + warmup <= 1e8, --agents in 1..64");
	if (o.dist == D_FILE && !o.wait_file)
		fail("--dist file needs --wait-file");
	if (o.inject_delay_us && (o.wait == W_NANOSLEEP || o.wait == W_TIMERFD))
		fail("--inject-delay-us needs a world thread (not nanosleep/timerfd)");
	if (o.cdist == C_UNIFORM && (o.cmax_units < o.cmin_units || o.cmax_units > UNITS_MAX))
		fail("--compute-dist uniform needs --compute-min-units <= --compute-max-units <= 2e9");
	if (o.cdist == C_LOGNORMAL && (!isfinite(o.cmu) || !(o.csigma >= 0 && o.csigma <= 10) ||
				       o.cmu > log((double)UNITS_MAX)))
		fail("--compute-dist lognormal needs a finite --compute-mu <= ln(2e9) and --compute-sigma in 0..10");
	if (o.cdist == C_FILE && !o.compute_file)
		fail("--compute-dist file needs --compute-file");
	if (o.cdist != C_FIXED && o.burst_every)
		fail("--compute-dist and --burst-every both set the step's compute: pick one");
	if (o.period_us && (o.wait != W_TIMERFD || o.period_us > 10000000))
		fail("--period-us needs --wait timerfd and at most 1e7 us");
	if (o.fanout && (o.agents < 2 || o.wait == W_NANOSLEEP || o.wait == W_TIMERFD || o.inject_delay_us))
		fail("--fanout needs --agents >= 2, a world thread (not nanosleep/timerfd) and no --inject-delay-us");
	if (!o.noise_busy_us != !o.noise_idle_us || o.noise_busy_us > 1000000 || o.noise_idle_us > 1000000)
		fail("--noise-busy-us and --noise-idle-us go together, each at most 1e6");
	if (!meter_out != !meter_nglobs)
		fail("--meter and --meter-out go together");
	if (meter_out && strlen(meter_out) > 4000)
		fail("--meter-out: path too long");
	o.extended = o.cdist != C_FIXED || o.period_us || o.fanout;
	total = o.steps + o.warmup;
	if (meter_out) {
		meter_open();
		if (pthread_barrier_init(&meter_warm, NULL, o.agents))
			die("pthread_barrier_init");
	}
	agents = calloc(o.agents, sizeof(*agents));
	if (!agents)
		die("calloc");
	for (int i = 0; i < o.agents; i++) {
		struct agent *a = &agents[i];
		struct epoll_event ev = { .events = EPOLLIN };

		a->id = i;
		a->o = &o;
		a->waits_ns = make_waits(&o, i);
		a->units = make_units(&o, i);
		a->rec = calloc(total, sizeof(*a->rec));
		if (!a->rec)
			die("calloc");
		if (o.wait == W_TIMERFD)
			a->efd = timerfd_create(CLOCK_MONOTONIC, 0);
		else
			a->efd = eventfd(0, 0);
		if (a->efd < 0)
			die("eventfd/timerfd");
		if (o.wait == W_PIPE && pipe(a->pipefd))
			die("pipe");
		if (o.wait == W_EPOLL) {
			a->epfd = epoll_create1(0);
			ev.data.fd = a->efd;
			if (a->epfd < 0 || epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->efd, &ev))
				die("epoll");
		}
		if (o.wait == W_IO_URING)
			ring_setup(a);
		prepare_phases(a);
		/* touch the record pages now: no page faults inside the measured loop */
		memset(a->rec, 0, total * sizeof(*a->rec));
	}
	hogs = calloc(o.hogs + 1, sizeof(*hogs));	/* the last one: the noisy neighbour */
	if (!hogs)
		die("calloc");
	for (long i = 0; i < o.hogs; i++)
		if (pthread_create(&hogs[i], NULL, hog_main, &o))
			die("pthread_create");
	if (o.noise_busy_us && pthread_create(&hogs[o.hogs], NULL, noise_main, &o))
		die("pthread_create");
	all_agents = agents;
	if (o.fanout)	/* one wait stream for all: agent 0's */
		for (int i = 1; i < o.agents; i++)
			memcpy(agents[i].waits_ns, agents[0].waits_ns, total * sizeof(int64_t));
	for (int i = 0; i < o.agents; i++) {
		struct agent *a = &agents[i];

		if (pthread_create(&a->thread, NULL, agent_main, a))
			die("pthread_create");
		if (o.wait != W_NANOSLEEP && o.wait != W_TIMERFD && (!o.fanout || i == 0) &&
		    pthread_create(&a->world, NULL, o.fanout ? fanout_world_main : world_main,
				   o.fanout ? (void *)&o : (void *)a))
			die("pthread_create");
	}
	for (int i = 0; i < o.agents; i++) {
		pthread_join(agents[i].thread, NULL);
		if (o.wait != W_NANOSLEEP && o.wait != W_TIMERFD && (!o.fanout || i == 0))
			pthread_join(agents[i].world, NULL);
	}
	atomic_store(&hogs_stop, 1);
	for (long i = 0; i < o.hogs; i++)
		pthread_join(hogs[i], NULL);
	if (o.noise_busy_us)
		pthread_join(hogs[o.hogs], NULL);

	if (meter_out)
		meter_write();
	out = fopen(o.out, "w");
	if (!out)
		die(o.out);
	fprintf(out, "agent,step,warmup,wait_ns,signal_ns,wake_ns,phases_ns,done_ns,cpu%s\n",
		o.extended ? ",units,missed" : "");
	{
		int64_t *wake = xmalloc(sizeof(int64_t) * o.steps * o.agents);
		long n = 0, misses = 0, skipped = 0;

		for (int i = 0; i < o.agents; i++) {
			skipped += agents[i].ticks_skipped;
			for (long s = 0; s < total; s++) {
				struct record *r = &agents[i].rec[s];

				fprintf(out, "%d,%ld,%d,%lld,%lld,%lld,%lld,%lld,%d", i, s, s < o.warmup,
					(long long)agents[i].waits_ns[s], (long long)r->signal_ns,
					(long long)r->wake_ns, (long long)r->phases_ns, (long long)r->done_ns, r->cpu);
				if (o.extended)
					fprintf(out, ",%ld,%d", agents[i].units[s], r->missed);
				fputc('\n', out);
				if (s >= o.warmup) {
					wake[n++] = r->wake_ns - r->signal_ns;
					misses += r->missed;
				}
			}
		}
		if (fclose(out))
			die(o.out);
		qsort(wake, n, sizeof(*wake), cmp_i64);
		printf("{\"steps\": %ld, \"agents\": %ld, \"wait\": \"%s\", \"wake_p50_us\": %.1f, "
		       "\"wake_p99_us\": %.1f, \"agent_marked\": %d, \"uclamp_min\": %ld, ",
		       o.steps, o.agents, wait_names[o.wait], wake[n / 2] / 1000.0,
		       wake[(long)(n * 0.99)] / 1000.0, atomic_load(&agents_marked), o.uclamp_min);
		if (o.extended)	/* measured steps; skipped ticks over the whole run */
			printf("\"deadline_misses\": %ld, \"ticks_skipped\": %ld, \"fanout\": %d, ", misses, skipped,
			       o.fanout);
		printf("\"out\": \"%s\"}\n", o.out);
	}
	return 0;
}
