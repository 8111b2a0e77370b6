"""Load generation and the benchmark (`make load`, `make bench`): see loadtest/README.md."""
