"""Streaming benchmark harness: stamped fake upstream, load client, raw relay baseline, sweep and report."""
