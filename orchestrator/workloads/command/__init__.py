"""The command workload: any command in the guest, its metrics read from its output
(JSON lines or named regular expressions). docs/workloads.md shows an example."""
