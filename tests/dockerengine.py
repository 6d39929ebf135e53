"""Whether a Docker engine answers here, and whether an image can be had (present, or pulled now).

Why both: an engine may run where no image registry is reachable (these machines); a test that needs a
third-party image is then skipped with that reason instead of failing on the pull.
"""

from __future__ import annotations


def unavailable(image: str | None = None) -> str | None:
    """None when the engine answers (and ``image`` is present or could be pulled), else the reason."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as err:
        return f"no Docker engine: {type(err).__name__}: {err}"[:200]
    if image is None:
        return None
    try:
        client.images.get(image)
    except Exception:
        try:
            client.images.pull(image)
        except Exception as err:
            return f"image {image} is not here and cannot be pulled: {type(err).__name__}: {err}"[:300]
    return None
