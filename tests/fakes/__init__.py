"""Fake upstream servers for tests."""
from .openai_upstream import FakeOpenAI, Reply, ToolCall

__all__ = ["FakeOpenAI", "Reply", "ToolCall"]
