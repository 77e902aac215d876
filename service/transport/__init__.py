"""Between the API side and the workers: messages, the in-process queue and Redis."""
