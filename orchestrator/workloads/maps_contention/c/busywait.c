/*
 * maps-busywait: the CPU hog of the maps-contention method. It spins calling
 * stat() on /proc/PID/smaps for --busy-ms, sleeps --sleep-ms, and repeats until
 * the file is gone. Running at normal priority on the scanners' CPUs, it
 * preempts the nice-15 scanners while they hold the target's locks; that
 * priority inversion is what stretches the mapper's waits.
 * At exit it prints the number of spin periods it completed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static const char usage[] =
	"usage: maps-busywait --pid PID [--busy-ms N] [--sleep-ms N] [--cpu N] [--nice N]\n"
	"  --pid PID       process whose /proc/PID/smaps is stat()ed until it disappears\n"
	"  --busy-ms N     spin for N ms per period (default 2, 1..10000)\n"
	"  --sleep-ms N    sleep N ms between periods (default 1, 0..10000)\n"
	"  --cpu N         pin to CPU N\n"
	"  --nice N        run at niceness N\n";

int main(int argc, char **argv)
{
	enum { PID = 1, BUSY, SLEEP, CPU, NICE };
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, PID },
		{ "busy-ms", required_argument, NULL, BUSY },
		{ "sleep-ms", required_argument, NULL, SLEEP },
		{ "cpu", required_argument, NULL, CPU },
		{ "nice", required_argument, NULL, NICE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long pid = 0, busy_ms = 2, sleep_ms = 1;
	int cpu = -1, nice_value = 0, nice_given = 0, c;
	unsigned long long periods = 0;
	char path[64];
	struct stat st;

	prog_name = "maps-busywait";
	usage_text = usage;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case PID:
			pid = parse_int(optarg, 1, 0x7fffffff, "--pid");
			break;
		case BUSY:
			busy_ms = parse_int(optarg, 1, 10000, "--busy-ms");
			break;
		case SLEEP:
			sleep_ms = parse_int(optarg, 0, 10000, "--sleep-ms");
			break;
		case CPU:
			cpu = (int)parse_int(optarg, 0, 4095, "--cpu");
			break;
		case NICE:
			nice_value = (int)parse_int(optarg, -20, 19, "--nice");
			nice_given = 1;
			break;
		case 'h':
			fputs(usage, stdout);
			return 0;
		default:
			fputs(usage, stderr);
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		usage_error("unexpected argument '%s'", argv[optind]);
	if (pid == 0)
		usage_error("--pid is required");

	pin_to_cpu(cpu);
	if (nice_given)
		set_nice(nice_value);
	snprintf(path, sizeof(path), "/proc/%lld/smaps", pid);

	for (;;) {
		uint64_t until = now_ns() + (uint64_t)busy_ms * 1000000u;

		do {
			if (stat(path, &st) != 0) {
				if (!proc_entry_gone(errno))
					die_errno("cannot stat %s", path);
				printf("%llu\n", periods);
				return fflush(stdout) == 0 ? 0 : EXIT_FAILURE_RUN;
			}
		} while (now_ns() < until);
		periods++;
		sleep_ns((uint64_t)sleep_ms * 1000000u);
	}
}
