"""Settings of the clinician pages: a section of the one Settings (service.config)."""
from __future__ import annotations

from service.config import WebSettings

__all__ = ["WebSettings"]
