"""The money-path benchmark (`make bench`)."""
