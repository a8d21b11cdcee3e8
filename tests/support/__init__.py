"""Test helpers that run real servers (scripted stand-ins) on localhost."""
