"""Test support code: a real HTTP server with scriptable faults (``fault_server``) and fixtures."""
