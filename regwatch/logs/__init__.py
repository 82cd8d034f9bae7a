"""Auth-log sources: file following, positions, line parsers, Elasticsearch."""
