"""The API side of the service: admission, streams and watchers; no torch is imported here."""
