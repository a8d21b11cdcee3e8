"""Fuzz harnesses for `make fuzz` (not collected by pytest: no test_ files here)."""
