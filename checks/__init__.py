"""Checks that real clients apply to a live server: the installed package, Postman (newman),
schemathesis, kill -9 crash and restart, and Swagger UI offline. Each runs as
`python -m checks.<name>` and exits non-zero on any failure; the Makefile has a target each."""
