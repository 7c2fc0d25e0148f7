"""Requests per minute per API key: a sliding one-minute window kept in memory."""
import collections
import math
import threading
import time

WINDOW_S = 60.0


class RateLimiter:
    """At most ``per_minute`` requests per key in any 60 s window (0: no limit)."""

    def __init__(self, per_minute, clock=time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._hits = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def hit(self, key_id):
        """Count one request; returns 0 when allowed, else the seconds to wait (Retry-After)."""
        if not self.per_minute:
            return 0
        now = self._clock()
        with self._lock:
            hits = self._hits[key_id]
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return max(1, math.ceil(hits[0] + WINDOW_S - now))
            hits.append(now)
            return 0
