"""Call analytics in DuckDB: the built-in observer plugin (`plugin`), its schema and
migrations (`schema`), the writer thread (`writer`), row shaping with privacy and cost
(`rows`) and the `hookline calls` / `hookline analytics` commands (`cli`). Simulated
calls for tests and benchmarks are in the test kit (`hookline_testkit.simulate`). See
docs/analytics.md.
"""
