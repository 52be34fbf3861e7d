/* See common.h. */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

const char *prog_name = "maps-contention";
const char *usage_text = "";

static void vmessage(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", prog_name);
	vfprintf(stderr, fmt, ap);
}

void usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s", usage_text);
	exit(EXIT_USAGE);
}

void die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(EXIT_FAILURE_RUN);
}

void die_errno(const char *fmt, ...)
{
	int err = errno;
	va_list ap;

	va_start(ap, fmt);
	vmessage(fmt, ap);
	va_end(ap);
	fprintf(stderr, ": %s\n", strerror(err));
	exit(EXIT_FAILURE_RUN);
}

long long parse_int(const char *text, long long min, long long max, const char *flag)
{
	char *end;
	long long value;

	errno = 0;
	value = strtoll(text, &end, 10);
	if (end == text || *end != '\0' || errno == ERANGE)
		usage_error("%s: '%s' is not a whole number", flag, text);
	if (value < min || value > max)
		usage_error("%s: %lld is out of range [%lld, %lld]", flag, value, min, max);
	return value;
}

double parse_seconds(const char *text, double min, double max, const char *flag)
{
	char *end;
	double value;

	errno = 0;
	value = strtod(text, &end);
	if (end == text || *end != '\0' || errno == ERANGE || !isfinite(value))
		usage_error("%s: '%s' is not a number", flag, text);
	if (!(value > min) || value > max)
		usage_error("%s: %g is out of range (%g, %g]", flag, value, min, max);
	return value;
}

void pin_to_cpu(int cpu)
{
	cpu_set_t set;

	if (cpu < 0)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0)
		die_errno("cannot pin to CPU %d (does the machine have that many CPUs?)", cpu);
}

void set_nice(int nice_value)
{
	if (setpriority(PRIO_PROCESS, 0, nice_value) != 0)
		die_errno("cannot set niceness %d", nice_value);
}

int proc_entry_gone(int err)
{
	/* ESRCH: the task died between the lookup and the access. */
	return err == ENOENT || err == ESRCH;
}

void sleep_ns(uint64_t ns)
{
	struct timespec left = {
		.tv_sec = (time_t)(ns / 1000000000u),
		.tv_nsec = (long)(ns % 1000000000u),
	};

	while (nanosleep(&left, &left) != 0 && errno == EINTR)
		;
}
