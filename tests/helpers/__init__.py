"""What only the tests use: API clients, traffic, span generators, assertion helpers."""
