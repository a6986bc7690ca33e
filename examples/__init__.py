"""Examples of pgcast in use: the live-search and orders demo, a worker, a React hook."""
