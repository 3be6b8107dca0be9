"""One-shot mail jobs: send a message, find and probe MX hosts, diagnose refusals."""
