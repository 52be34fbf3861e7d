/*
 * maps-mapper: the process whose mmap/munmap latency the maps-contention
 * method measures (see docs/maps-contention.md in the repository).
 *
 * It maps a power-of-two region with MAP_POPULATE, waits for the start gate
 * file to disappear, then until a CLOCK_MONOTONIC deadline maps or unmaps one
 * random page of the region (probability 1/2 each), timing only that syscall,
 * and sleeps 10 us after each operation. The random holes split the region
 * into thousands of VMAs, which makes every /proc/PID/maps read long.
 *
 * At the end it prints one JSON line (schema 1) with counts, sums, maxima and
 * per-operation histograms for map and unmap separately.
 *
 * --selftest reads one latency in ns per line from stdin, records them in a
 * histogram and prints that histogram's JSON: the tests use it to prove that
 * the C and Python bucket layouts agree.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "hist.h"

#define REGION_MB_MAX 65536
#define DURATION_S_MAX 86400.0
#define SLEEP_AFTER_OP_NS 10000u
#define GATE_POLL_NS 1000000u

static struct op_hist map_hist, unmap_hist;

struct options {
	double duration_s;
	long long region_mb;
	const char *gate;
	const char *ready;
	double gate_timeout_s;
	uint64_t seed;
	int seed_given;
	int cpu;
	int nice_value;
	int nice_given;
	int selftest;
};

static const char usage[] =
	"usage: maps-mapper --duration-s S --region-mb M [--gate PATH] [--ready PATH]\n"
	"                   [--gate-timeout-s S] [--seed N] [--cpu N] [--nice N]\n"
	"       maps-mapper --selftest   (latencies in ns on stdin, histogram JSON out)\n"
	"  --duration-s S      measure for S seconds after the gate opens (0 < S <= 86400)\n"
	"  --region-mb M       size of the mapped region in MiB, a power of two (1..65536)\n"
	"  --gate PATH         wait until PATH no longer exists before starting\n"
	"  --ready PATH        create PATH once the region is populated\n"
	"  --gate-timeout-s S  give up if the gate is still there after S seconds (default 120)\n"
	"  --seed N            seed of the offset generator (default: from the clock)\n"
	"  --cpu N             pin to CPU N\n"
	"  --nice N            run at niceness N\n";

/* splitmix64: any seed, including 0, gives a full-period sequence. */
static uint64_t next_random(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

static void parse_options(int argc, char **argv, struct options *o)
{
	enum { DURATION = 1, REGION, GATE, READY, GATE_TIMEOUT, SEED, CPU, NICE, SELFTEST };
	static const struct option longopts[] = {
		{ "duration-s", required_argument, NULL, DURATION },
		{ "region-mb", required_argument, NULL, REGION },
		{ "gate", required_argument, NULL, GATE },
		{ "ready", required_argument, NULL, READY },
		{ "gate-timeout-s", required_argument, NULL, GATE_TIMEOUT },
		{ "seed", required_argument, NULL, SEED },
		{ "cpu", required_argument, NULL, CPU },
		{ "nice", required_argument, NULL, NICE },
		{ "selftest", no_argument, NULL, SELFTEST },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->cpu = -1;
	o->gate_timeout_s = 120.0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case DURATION:
			o->duration_s = parse_seconds(optarg, 0.0, DURATION_S_MAX, "--duration-s");
			break;
		case REGION:
			o->region_mb = parse_int(optarg, 1, REGION_MB_MAX, "--region-mb");
			if (o->region_mb & (o->region_mb - 1))
				usage_error("--region-mb: %lld is not a power of two", o->region_mb);
			break;
		case GATE:
			o->gate = optarg;
			break;
		case READY:
			o->ready = optarg;
			break;
		case GATE_TIMEOUT:
			o->gate_timeout_s =
				parse_seconds(optarg, 0.0, DURATION_S_MAX, "--gate-timeout-s");
			break;
		case SEED:
			/* Seeds are recorded in JSON as numbers; keep them exact in a double. */
			o->seed = (uint64_t)parse_int(optarg, 0, (1LL << 53) - 1, "--seed");
			o->seed_given = 1;
			break;
		case CPU:
			o->cpu = (int)parse_int(optarg, 0, 4095, "--cpu");
			break;
		case NICE:
			o->nice_value = (int)parse_int(optarg, -20, 19, "--nice");
			o->nice_given = 1;
			break;
		case SELFTEST:
			o->selftest = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			exit(0);
		default:
			/* getopt_long has already said what was wrong. */
			fputs(usage, stderr);
			exit(EXIT_USAGE);
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (o->selftest)
		return;
	if (o->duration_s == 0.0)
		usage_error("--duration-s is required");
	if (o->region_mb == 0)
		usage_error("--region-mb is required");
}

static int selftest(void)
{
	char line[64];
	unsigned long lineno = 0;

	while (fgets(line, sizeof(line), stdin)) {
		char *end;
		unsigned long long ns;

		lineno++;
		errno = 0;
		ns = strtoull(line, &end, 10);
		if (end == line || (*end != '\n' && *end != '\0') || errno == ERANGE ||
		    line[0] == '-') {
			fprintf(stderr, "%s: stdin line %lu: not a latency in ns\n", prog_name,
				lineno);
			return EXIT_DATAERR;
		}
		hist_record(&map_hist, ns);
	}
	hist_print_json(stdout, &map_hist);
	fputc('\n', stdout);
	return fflush(stdout) == 0 ? 0 : EXIT_FAILURE_RUN;
}

static void wait_for_gate(const char *gate, double timeout_s)
{
	uint64_t give_up = now_ns() + (uint64_t)(timeout_s * 1e9);
	struct stat st;

	while (stat(gate, &st) == 0) {
		if (now_ns() >= give_up)
			die("start gate %s still exists after %g s", gate, timeout_s);
		sleep_ns(GATE_POLL_NS);
	}
	if (errno != ENOENT)
		die_errno("cannot check start gate %s", gate);
}

static void signal_ready(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0)
		die_errno("cannot create ready file %s", path);
	close(fd);
}

int main(int argc, char **argv)
{
	struct options o;
	uint64_t page, pages, region, rng, start, deadline, end, ops, sum, max;
	char *base;

	prog_name = "maps-mapper";
	usage_text = usage;
	parse_options(argc, argv, &o);
	if (o.selftest)
		return selftest();

	pin_to_cpu(o.cpu);
	if (o.nice_given)
		set_nice(o.nice_value);
	rng = o.seed_given ? o.seed : (now_ns() ^ ((uint64_t)getpid() << 32)) & ((1ULL << 53) - 1);
	o.seed = rng;

	page = (uint64_t)sysconf(_SC_PAGESIZE);
	region = (uint64_t)o.region_mb << 20;
	pages = region / page;
	base = mmap(NULL, region, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
		    -1, 0);
	if (base == MAP_FAILED)
		die_errno("cannot map a %lld MiB region", o.region_mb);
	/* Touch the histograms now so that their first page faults fall outside the timings. */
	memset(&map_hist, 0, sizeof(map_hist));
	memset(&unmap_hist, 0, sizeof(unmap_hist));

	if (o.ready)
		signal_ready(o.ready);
	if (o.gate)
		wait_for_gate(o.gate, o.gate_timeout_s);

	start = now_ns();
	deadline = start + (uint64_t)(o.duration_s * 1e9);
	for (;;) {
		uint64_t r, t0, t1;
		char *addr;

		if (now_ns() >= deadline)
			break;
		r = next_random(&rng);
		/* pages is a power of two, so the low bits pick an offset without bias. */
		addr = base + (r & (pages - 1)) * page;
		if (r >> 63) {
			void *got;

			t0 = now_ns();
			got = mmap(addr, page, PROT_READ | PROT_WRITE,
				   MAP_FIXED | MAP_ANONYMOUS | MAP_PRIVATE | MAP_POPULATE, -1, 0);
			t1 = now_ns();
			if (got == MAP_FAILED)
				die_errno("mmap of one page at %p failed", (void *)addr);
			if (got != addr)
				die("mmap with MAP_FIXED at %p returned %p", (void *)addr, got);
			hist_record(&map_hist, t1 - t0);
		} else {
			int rc;

			t0 = now_ns();
			rc = munmap(addr, page);
			t1 = now_ns();
			if (rc != 0)
				die_errno("munmap of one page at %p failed", (void *)addr);
			hist_record(&unmap_hist, t1 - t0);
		}
		sleep_ns(SLEEP_AFTER_OP_NS);
	}
	end = now_ns();

	ops = map_hist.count + unmap_hist.count;
	sum = map_hist.sum_ns + unmap_hist.sum_ns;
	max = map_hist.max_ns > unmap_hist.max_ns ? map_hist.max_ns : unmap_hist.max_ns;
	printf("{\"schema\":1,\"tool\":\"maps-mapper\",\"maps\":%" PRIu64 ",\"unmaps\":%" PRIu64
	       ",\"max_ms\":%.6f,\"mean_ms\":%.6f,\"map\":",
	       map_hist.count, unmap_hist.count, (double)max / 1e6,
	       ops ? (double)sum / (double)ops / 1e6 : 0.0);
	hist_print_json(stdout, &map_hist);
	fputs(",\"unmap\":", stdout);
	hist_print_json(stdout, &unmap_hist);
	printf(",\"duration_s\":%.9g,\"elapsed_s\":%.6f,\"region_mb\":%lld,\"seed\":%" PRIu64
	       ",\"cpu\":%d}\n",
	       o.duration_s, (double)(end - start) / 1e9, o.region_mb, o.seed, o.cpu);
	if (fflush(stdout) != 0)
		die_errno("cannot write the result");
	return 0;
}
