"""The worker's errors. It cannot import dcp_events, so it has its own root class."""


class WorkerError(Exception):
    """Base of every error the worker raises on purpose."""


class ConfigError(WorkerError):
    """Raised when a flag or environment variable holds a value the worker cannot use."""


class NotReadyError(WorkerError):
    """Raised by a readiness check: Docker does not answer, the disk is full, no GPU runtime."""


class ApiError(WorkerError):
    """Raised when the API answers with a non-2xx status.

    `definite` is true for a 4xx other than 408 and 429: sending the same request again will
    get the same answer, so the caller must not retry it.
    """

    def __init__(
        self, status: int, code: str, message: str, retry_after_s: float | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s  # from a 429's retry_after_seconds

    @property
    def definite(self) -> bool:
        return 400 <= self.status < 500 and self.status not in (408, 425, 429)


class ApiUnavailable(WorkerError):
    """Raised when the API cannot be reached (connection refused, timeout, broken reply)."""


class ApiReplyInvalid(ApiUnavailable):
    """Raised when a 2xx reply is not the shape SPEC section 5 gives (not JSON, a field missing
    or of the wrong type). It is an ApiUnavailable, so every loop retries it: a proxy's page or
    a half-upgraded API is as good as no answer, and every call the worker retries is safe to
    send again."""


class JobRefused(WorkerError):
    """Raised before a container exists: the job cannot run here (image not allowed or absent)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
