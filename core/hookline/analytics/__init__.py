"""Call analytics in DuckDB: the built-in observer plugin (`plugin`), its schema and
migrations (`schema`), the writer thread (`writer`), row shaping with privacy and cost
(`rows`), the `hookline calls` / `hookline analytics` commands (`cli`) and simulated
calls for tests and benchmarks (`simulate`). See docs/analytics.md.
"""
