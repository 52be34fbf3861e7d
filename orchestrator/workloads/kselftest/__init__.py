"""The kselftest workload: kernel selftests built from each variant's tree, run in the
guest; their TAP results gate the verdict and their run time is the measured figure."""
