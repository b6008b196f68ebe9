"""/tf/v1/eval...: being written (placeholder router)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
