"""The GPU runs: each one device command, prepared and checked (SMOKE=1) on a CPU."""
