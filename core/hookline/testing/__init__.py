"""Test kit for hookline and its plugins: scripted in-process providers, loopback fakes
that speak the real wire protocols, a pytest plugin with fixtures, conformance suites."""
