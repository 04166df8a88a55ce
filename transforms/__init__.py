"""What the rules are: one package per domain, pure modules plus one Beam face (``transform.py``),
and ``common``. The house rules are in README.md beside this package.
"""
