"""One router per resource; :data:`api_router` mounts them under ``/api/v1``."""

from fastapi import APIRouter

from api.routes import artifacts, health, jobs, leaderboard

api_router = APIRouter()
api_router.include_router(jobs.router)
api_router.include_router(leaderboard.router)
api_router.include_router(leaderboard.compare_router)
api_router.include_router(artifacts.router)
api_router.include_router(health.router)

__all__ = ["api_router"]
