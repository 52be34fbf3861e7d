/*
 * Helpers shared by the maps-contention guest programs: argument checks,
 * CPU pinning, niceness, monotonic time and sleeping.
 *
 * The guest has only busybox, whose build lacks `nice`, so every program pins
 * and renices itself from its own flags (--cpu, --nice).
 */
#ifndef KORCH_MC_COMMON_H
#define KORCH_MC_COMMON_H

#include <stdint.h>
#include <time.h>

/* sysexits.h values, so the driver can tell a bad command line from a failure. */
#define EXIT_USAGE 64
#define EXIT_DATAERR 65
#define EXIT_FAILURE_RUN 70

/* Set once by main() so that messages name the program. */
extern const char *prog_name;
extern const char *usage_text;

/* Print "prog: message", the usage text, and exit 64. */
void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Print "prog: message" and exit 70. */
void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
/* Like die(), followed by ": strerror(errno)". */
void die_errno(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Parse a whole decimal integer in [min, max]; anything else is a usage error naming flag. */
long long parse_int(const char *text, long long min, long long max, const char *flag);
/* Parse a whole decimal number in (min, max]; anything else is a usage error naming flag. */
double parse_seconds(const char *text, double min, double max, const char *flag);

/* Pin the calling process to one CPU (cpu < 0: leave as is). */
void pin_to_cpu(int cpu);
/* Set the niceness of the calling process. */
void set_nice(int nice_value);

/* True when errno says the /proc entry is gone because the process exited. */
int proc_entry_gone(int err);

static inline uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Sleep for ns nanoseconds, resuming after signals. */
void sleep_ns(uint64_t ns);

#endif
