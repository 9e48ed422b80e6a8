"""Renderers: one Plan, three readers (terminal, pull-request reviewer, CI script)."""
