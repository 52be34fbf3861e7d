/*
 * maps-scanner: the monitoring tool of the maps-contention method. It reads
 * /proc/PID/maps (or smaps) from start to end, over and over, until the file
 * disappears because the target exited; each read holds the target's locks
 * that the series under test changes. At exit it prints the number of
 * complete passes, so the driver can tell that contention really happened.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

static const char usage[] =
	"usage: maps-scanner --pid PID [--file maps|smaps] [--cpu N] [--nice N]\n"
	"  --pid PID       process whose /proc entry is read until it disappears\n"
	"  --file NAME     maps (default) or smaps\n"
	"  --cpu N         pin to CPU N\n"
	"  --nice N        run at niceness N\n";

/* Static so that the loop never allocates; the size only sets the read() count per pass. */
static char buffer[1 << 16];

int main(int argc, char **argv)
{
	enum { PID = 1, FILE_NAME, CPU, NICE };
	static const struct option longopts[] = {
		{ "pid", required_argument, NULL, PID },
		{ "file", required_argument, NULL, FILE_NAME },
		{ "cpu", required_argument, NULL, CPU },
		{ "nice", required_argument, NULL, NICE },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	long long pid = 0;
	const char *file = "maps";
	int cpu = -1, nice_value = 0, nice_given = 0, c;
	unsigned long long passes = 0;
	char path[64];

	prog_name = "maps-scanner";
	usage_text = usage;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case PID:
			pid = parse_int(optarg, 1, 0x7fffffff, "--pid");
			break;
		case FILE_NAME:
			if (strcmp(optarg, "maps") != 0 && strcmp(optarg, "smaps") != 0)
				usage_error("--file: '%s' is neither maps nor smaps", optarg);
			file = optarg;
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
	snprintf(path, sizeof(path), "/proc/%lld/%s", pid, file);

	for (;;) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		int complete = 1;

		if (fd < 0) {
			if (proc_entry_gone(errno))
				break;
			die_errno("cannot open %s", path);
		}
		for (;;) {
			ssize_t n = read(fd, buffer, sizeof(buffer));

			if (n > 0)
				continue;
			if (n == 0)
				break;
			if (errno == EINTR)
				continue;
			/* The target exiting mid-read ends this pass; the next open() notices. */
			if (!proc_entry_gone(errno))
				die_errno("cannot read %s", path);
			complete = 0;
			break;
		}
		close(fd);
		passes += (unsigned long long)complete;
	}
	printf("%llu\n", passes);
	return fflush(stdout) == 0 ? 0 : EXIT_FAILURE_RUN;
}
