"""Thin entry points, one per pipeline stage: what DVC and the `groundedbert` command call."""
