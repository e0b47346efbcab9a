"""Stage two's evaluation: metric arithmetic (metrics), blockwise scoring, the pointing game, and the
`evaluate grounding` driver (grounding_eval)."""
