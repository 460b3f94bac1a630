"""Vandamme: a self-hosted LLM gateway for Anthropic-API clients.

``vandamme.kernel`` is the stage kernel (Context, Stage, Middleware, response types) that
transforms and plugins build on; ``vandamme.sources`` holds spec positions and spec errors.
"""
