"""Session files: the format, the runner and the reports of `mailtalk run`."""
