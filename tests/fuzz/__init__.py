"""Fuzzers: hostile messages and bytes through the real gRPC server and the daemon, and
hostile files through the config, price-file and journal readers."""
