"""Registration: intensity registration presets and backends, landmark fitting. Each returns atlasreg transforms."""
