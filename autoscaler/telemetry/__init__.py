"""Telemetry: collectors → one `Snapshot` per tick → windowed per-model figures."""
