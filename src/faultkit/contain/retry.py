"""Retries: :class:`Retry` (attempts, backoff with jitter, a deadline) and
:class:`RetryBudget` (Finagle's cap on retries shared by callers).
The success path is one C-level call (:mod:`faultkit.contain._retry`)."""
from faultkit.contain._retry import Retry, RetryBudget

__all__ = ["Retry", "RetryBudget"]
