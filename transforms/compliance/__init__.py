"""Compliance: sanctions lists and screening, exposure hops, AML rules and the policy file."""
